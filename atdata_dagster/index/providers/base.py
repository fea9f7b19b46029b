"""The index-provider contract: where entries, schemas and labels are kept.

Providers store exactly atdata's tables / keys (see the compat reference, section 5):
``data_urls`` and ``metadata`` as msgpack, schema records as JSON text. Entries are
upserted by CID, schemas by (name, version), labels by (name, version) with
``version == ""`` meaning unversioned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

from ...errors import NotFoundError
from ..entry import LabelRecord, LocalDatasetEntry

__all__ = ["IndexProvider"]


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
