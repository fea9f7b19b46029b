"""The index-provider contract: where entries, schemas and labels are kept.

Providers store exactly atdata's tables / keys (see the compat reference, section 5):
``data_urls`` and ``metadata`` as msgpack, schema records as JSON text. Entries are
upserted by CID, schemas by (name, version), labels by (name, version) with
``version == ""`` meaning unversioned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

import msgpack

from ...errors import NotFoundError, ProviderError
from ..entry import LabelRecord, LocalDatasetEntry

__all__ = ["IndexProvider", "decode_entry_columns"]


def decode_entry_columns(urls: Any, metadata: Any, where: str) -> tuple[list[str], dict | None]:
    """``data_urls`` and ``metadata`` of a stored entry, decoded strictly.

    Rows may have been written by other tools (atdata, a script), so the msgpack is
    untrusted: lengths are bounded by the blob, ``data_urls`` must be a list of str and
    ``metadata`` a map (or NULL). Anything else raises :class:`ProviderError` naming the
    entry and the column.
    """
    out = []
    for column, blob, want in (("data_urls", urls, list), ("metadata", metadata, dict)):
        if blob is None and want is dict:
            out.append(None)
            continue
        try:
            raw = bytes(blob)
            n = len(raw)
            value = msgpack.unpackb(raw, raw=False, strict_map_key=False, max_str_len=n, max_bin_len=n,
                                    max_array_len=n, max_map_len=n, max_ext_len=n)
        except Exception as exc:  # msgpack's ValueError family, TypeError, UnicodeDecodeError
            raise ProviderError(
                f"{where}: column {column} is not valid msgpack ({type(exc).__name__}: {exc}); the row was "
                "written by another tool or is corrupt: repair or delete it"
            ) from None
        if value is None and want is dict:  # msgpack nil: no metadata
            out.append(None)
            continue
        if not isinstance(value, want) or (want is list and not all(isinstance(u, str) for u in value)):
            expected = "an array of str" if want is list else "a map"
            raise ProviderError(
                f"{where}: column {column} holds {type(value).__name__} {value!r:.80}, expected {expected}; "
                "the row was written by another tool or is corrupt: repair or delete it"
            )
        out.append(value)
    return out[0], out[1]


class IndexProvider(ABC):
    """Abstract storage backend of one index repository."""

    #: short name used in messages: "sqlite", "postgres", "redis"
    kind: str = "abstract"

    # -- entries -------------------------------------------------------------
    @abstractmethod
    def put_entry(self, entry: LocalDatasetEntry, *, label: LabelRecord | None = None) -> None:
        """Upsert ``entry`` by CID and, in the same transaction, ``label`` if given."""

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
        """Replace the metadata of an existing entry (name, URLs and CID unchanged)."""

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
        return self.kind

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
