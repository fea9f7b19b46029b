"""The index-provider contract: where entries, schemas and labels are kept.

Providers store exactly atdata's tables / keys (see the compat reference, section 5):
``data_urls`` and ``metadata`` as msgpack, schema records as JSON text. Entries are
upserted by CID, schemas by (name, version), labels by (name, version) with
``version == ""`` meaning unversioned.
"""

from __future__ import annotations

import json

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any, ClassVar, Self, overload

import msgpack

from ...errors import ConfigurationError, CorruptEntryError, NotFoundError, ProviderError
from ..entry import LabelRecord, LocalDatasetEntry

__all__ = [
    "IndexProvider",
    "ProviderKind",
    "decode_entry_columns",
    "decode_metadata",
    "merge_metadata",
    "pack_metadata",
    "pack_urls",
]


class ProviderKind(StrEnum):
    """Which storage an index provider uses (a ``str``: ``kind == "sqlite"`` still works)."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"
    REDIS = "redis"


# -- the msgpack columns / hash fields every provider shares ---------------------------
def pack_urls(urls: Iterable[str]) -> bytes:
    """``data_urls`` as atdata stores it: a msgpack array of str."""
    return msgpack.packb([str(u) for u in urls])


@overload
def pack_metadata(metadata: Mapping[str, Any], *, what: str = ...) -> bytes: ...
@overload
def pack_metadata(metadata: None, *, what: str = ...) -> None: ...
@overload
def pack_metadata(metadata: Mapping[str, Any] | None, *, what: str = ...) -> bytes | None: ...


def pack_metadata(metadata: Mapping[str, Any] | None, *, what: str = "entry") -> bytes | None:
    """``metadata`` as atdata stores it: a msgpack map, or NULL / no field for ``None``."""
    if metadata is None:
        return None
    try:
        return msgpack.packb(metadata)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigurationError(
            f"metadata of {what} is not msgpack-encodable ({e}); use plain str/int/float/"
            "bool/None/list/dict values (convert numpy scalars with .item(), arrays with "
            ".tolist())"
        ) from e


def _unpack_strict(blob: Any, column: str, where: str) -> Any:
    """One untrusted msgpack blob: lengths bounded by the blob, errors name the column."""
    try:
        raw = bytes(blob)
        n = len(raw)
        return msgpack.unpackb(raw, raw=False, strict_map_key=False, max_str_len=n, max_bin_len=n,
                               max_array_len=n, max_map_len=n, max_ext_len=n)
    # ValueError covers msgpack's FormatError/StackError/ExtraData and UnicodeDecodeError;
    # UnpackException its OutOfData/BufferFull; TypeError a value that is not bytes at all.
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProviderError(
            f"{where}: column {column} is not valid msgpack ({type(exc).__name__}: {exc}); the row was "
            "written by another tool or is corrupt: repair or delete it"
        ) from None


def _wrong_shape(where: str, column: str, value: Any, expected: str) -> ProviderError:
    return ProviderError(
        f"{where}: column {column} holds {type(value).__name__} {value!r:.80}, expected {expected}; "
        "the row was written by another tool or is corrupt: repair or delete it"
    )


def decode_metadata(blob: Any, where: str) -> dict | None:
    """A stored ``metadata`` column / field, decoded strictly: a map, or ``None`` for NULL / nil.

    Anything else raises :class:`ProviderError` naming ``where`` and the column.
    """
    if blob is None:
        return None
    value = _unpack_strict(blob, "metadata", where)
    if value is None:  # msgpack nil: no metadata
        return None
    if not isinstance(value, dict):
        raise _wrong_shape(where, "metadata", value, "a map")
    return value


def decode_entry_columns(urls: Any, metadata: Any, where: str) -> tuple[list[str], dict | None]:
    """``data_urls`` and ``metadata`` of a stored entry, decoded strictly.

    Rows may have been written by other tools (atdata, a script), so the msgpack is
    untrusted: lengths are bounded by the blob, ``data_urls`` must be a list of str and
    ``metadata`` a map (or NULL). Anything else raises :class:`ProviderError` naming the
    entry and the column.
    """
    data_urls = _unpack_strict(urls, "data_urls", where)
    if not isinstance(data_urls, list) or not all(isinstance(u, str) for u in data_urls):
        raise _wrong_shape(where, "data_urls", data_urls, "an array of str")
    return data_urls, decode_metadata(metadata, where)


#: the metadata key holding an entry's published atmosphere record (its AT URIs)
PUBLISHED_KEY = "atmosphere"


def carry_published(stored_blob: Any, metadata: Mapping[str, Any] | None, where: str) -> dict | None:
    """``metadata`` plus the stored row's published record, when ``metadata`` has none.

    ``None`` when there is nothing to carry over (``metadata`` has its own record, the
    stored row has none, or the stored row is corrupt and is being replaced). Providers
    call it inside the write transaction of :meth:`IndexProvider.put_entry`, so a
    promotion that records the AT URI concurrently is never lost by a re-put.
    """
    if metadata is not None and metadata.get(PUBLISHED_KEY):
        return None
    try:
        stored = decode_metadata(stored_blob, where)
    except ProviderError:
        return None  # the corrupt row is being overwritten: nothing trustworthy to keep
    published = (stored or {}).get(PUBLISHED_KEY)
    if not published:
        return None
    return {**(metadata or {}), PUBLISHED_KEY: published}


def decode_entry_columns_lenient(
    urls: Any, metadata: Any, where: str, *, name: str, cid: str | None
) -> tuple[list[str], dict | None, CorruptEntryError | None]:
    """Like :func:`decode_entry_columns`, for listing: a row that does not decode yields
    the error instead of raising, so one corrupt row cannot hide the others.

    The entry built from it raises that :class:`CorruptEntryError` lazily, whenever its
    metadata or (if ``data_urls`` was the broken column) its shards are needed.
    """
    try:
        data_urls, meta = decode_entry_columns(urls, metadata, where)
        return data_urls, meta, None
    except ProviderError as e:
        column = "data_urls" if "column data_urls" in str(e) else "metadata"
        corrupt = CorruptEntryError(str(e), name=name, cid=cid, field=column)
    if column == "metadata":
        try:
            return decode_entry_columns(urls, None, where)[0], None, corrupt
        except ProviderError:
            pass
    return [], None, CorruptEntryError(corrupt.args[0], name=name, cid=cid, field="data_urls")


def merge_metadata(current: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> dict:
    """``current`` with the top-level keys of ``patch`` set (other keys kept as they are)."""
    return {**(current or {}), **patch}


class IndexProvider(ABC):
    """Abstract storage backend of one index repository."""

    #: which storage this is; also the short name used in messages
    kind: ClassVar[ProviderKind]

    # -- entries -------------------------------------------------------------
    @abstractmethod
    def put_entry(self, entry: LocalDatasetEntry, *, label: LabelRecord | None = None) -> None:
        """Upsert ``entry`` by CID and, in the same transaction, ``label`` if given.

        Re-putting an entry that was published keeps its ``metadata["atmosphere"]``
        record when ``entry`` carries none: read and written in the same transaction
        (see :func:`carry_published`), so a concurrent promotion is never lost.
        """

    @abstractmethod
    def get_entry(self, cid: str) -> LocalDatasetEntry:
        """The entry with this CID; :class:`NotFoundError` if absent."""

    @abstractmethod
    def get_entry_by_name(self, name: str) -> LocalDatasetEntry:
        """The most recently written entry with this name; :class:`NotFoundError` if absent."""

    def resolve_name(self, name: str) -> LocalDatasetEntry:
        """The entry ``name`` resolves to: its latest label's entry, else the latest entry so named."""
        try:
            return self.get_entry(self.get_label(name).cid)
        except NotFoundError:
            return self.get_entry_by_name(name)

    @abstractmethod
    def iter_entries(self, *, batch_size: int = 1000) -> Iterator[LocalDatasetEntry]:
        """Every entry, streamed in pages of ``batch_size``."""

    def list_entries_page(
        self, *, limit: int = 1000, after: str | None = None
    ) -> list[LocalDatasetEntry]:
        """One page of entries ordered by CID, starting after CID ``after``."""
        out = []
        for e in sorted(self.iter_entries(), key=lambda e: e.cid):
            if after is not None and e.cid <= after:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out

    @abstractmethod
    def update_entry_metadata(self, cid: str, metadata: dict | None) -> None:
        """Replace the metadata of an existing entry (name, URLs and CID unchanged).

        The whole map is replaced: of two concurrent read-modify-write updates the
        last one wins. To add or change some keys, use :meth:`merge_entry_metadata`.
        """

    @abstractmethod
    def merge_entry_metadata(self, cid: str, patch: Mapping[str, Any]) -> dict:
        """Set the top-level keys of ``patch`` in an entry's metadata, atomically; return the result.

        The stored metadata is read, merged and written in one write transaction (one
        optimistic transaction on Redis), so a concurrent merge of other keys, e.g. the
        AT URI recorded by a promotion, is never lost. Keys not in ``patch`` are kept;
        an entry without metadata gets ``patch``. :class:`NotFoundError` if no entry
        has this CID; :class:`ConfigurationError` (nothing written) if the result is
        not msgpack-encodable.
        """

    #: where the index identity is kept, outside atdata's tables and keys (atdata never reads it)
    IDENTITY_TABLE: ClassVar[str] = "atdata_dagster_meta"
    IDENTITY_KEY: ClassVar[str] = "atdata_dagster:index_id"

    def index_identity(self, create: str | None = None, *, what: str = "read the index identity") -> str | None:
        """This index's identity (``gc`` ownership marks); ``None`` if it has none yet.

        With ``create`` (a fresh uuid hex), store it first unless one exists: concurrent
        creators agree on one value. Providers that cannot keep one return ``None``.
        """
        return None

    @abstractmethod
    def delete_entry(self, cid: str) -> None:
        """Remove an entry and the labels that point at it (missing is not an error)."""

    # -- schemas -------------------------------------------------------------
    @abstractmethod
    def put_schema(self, name: str, version: str, schema_json: str) -> None:
        """Upsert a schema record (JSON text) by (name, version)."""

    @abstractmethod
    def get_schema_json(self, name: str, version: str) -> str:
        """The stored JSON text; :class:`NotFoundError` if absent."""

    @abstractmethod
    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        """Every schema as (name, version, schema_json)."""

    def schema_versions(self, name: str) -> list[str]:
        """Every stored version string of schema ``name``."""
        return [v for n, v, _ in self.iter_schemas() if n == name]

    # -- lenses (atdata's ``lenses`` table / ``lens:{name}@{version}`` keys) ----
    def put_lens(self, name: str, version: str, lens_json: str) -> None:
        """Upsert a lens record (JSON text) by (name, version)."""
        raise NotImplementedError(f"{type(self).__name__} does not store lenses")

    def get_lens_json(self, name: str, version: str) -> str:
        """The stored lens JSON; :class:`NotFoundError` if absent."""
        raise NotImplementedError(f"{type(self).__name__} does not store lenses")

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        """Every lens as (name, version, lens_json)."""
        raise NotImplementedError(f"{type(self).__name__} does not store lenses")

    def store_lens(self, name: str, version: str, lens_json: str) -> None:
        """atdata's provider name for :meth:`put_lens`."""
        self.put_lens(name, version, lens_json)

    def lens_versions(self, name: str) -> list[str]:
        """Every stored version of lens ``name``."""
        return [v for n, v, _ in self.iter_lenses() if n == name]

    def find_lenses_by_schemas(self, source_schema: str, view_schema: str | None = None) -> list[tuple[str, str, str]]:
        """(name, version, lens_json) of the lenses from ``source_schema`` (to ``view_schema``, if given)."""
        out = []
        for name, version, text in self.iter_lenses():
            try:
                record = json.loads(text)
            except ValueError:
                continue  # a malformed record is skipped here; get_lens reports it
            if not isinstance(record, dict) or record.get("source_schema") != source_schema:
                continue
            if view_schema is None or record.get("view_schema") == view_schema:
                out.append((name, version, text))
        return out

    # -- labels --------------------------------------------------------------
    @abstractmethod
    def put_label(self, label: LabelRecord) -> None:
        """Upsert a label by (name, version)."""

    @abstractmethod
    def get_label(self, name: str, version: str | None = None) -> LabelRecord:
        """The label (name, version); with ``version=None`` the latest one of that name."""

    @abstractmethod
    def iter_labels(self) -> Iterator[LabelRecord]:
        """Every label."""

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        """Release connections (idempotent)."""

    def describe(self) -> str:
        """Where this provider stores data, for messages (passwords masked)."""
        return str(self.kind)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
