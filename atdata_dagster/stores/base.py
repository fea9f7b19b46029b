"""The data-store contract: where shards are written and how they are read back.

A store hands out :class:`ShardSink` objects. The shard writer streams tar bytes into a
sink and, once the shard is complete, calls :meth:`ShardSink.commit` with the shard's
index and SHA-256; only then does the shard get its final, content-derived name. Until
commit nothing is visible under a final name, so a crash leaves only temporary
leftovers that ``gc`` can remove.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

from ..errors import StoreError, UnknownOptionError
from ..shards.sinks import ShardInfo, ShardSink, ShardWriteResult  # re-exported: the stores' contract
from ..shards.writer import copy_dataset_to_store

if TYPE_CHECKING:  # pragma: no cover
    from ..dataset import Dataset

__all__ = ["DataStore", "ShardSink", "ShardInfo", "ShardWriteResult", "OWNER_DIR", "valid_owner_id"]

#: Directory (disk) / key prefix (S3) under a store root holding one marker per index that
#: wrote there: ``<root>/.atdata-dagster/owners/<index id>``. Never a shard, never listed by
#: readers (they list ``*.tar`` only); dataset names may not start with it.
OWNER_DIR = ".atdata-dagster/owners"
RESERVED_SEGMENT = OWNER_DIR.split("/", 1)[0]
_OWNER_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def valid_owner_id(owner_id: object) -> bool:
    """Whether ``owner_id`` is an index identity (32 lowercase hex digits, a uuid4)."""
    return isinstance(owner_id, str) and bool(_OWNER_ID_RE.match(owner_id))


def read_span(f: BinaryIO, start: int, stop: int | None) -> bytes:
    """Bytes ``[start, stop)`` of an open stream: a seek when it can, else reading up to ``start``."""
    try:
        seekable = f.seekable()
    except (AttributeError, ValueError):
        seekable = False
    if seekable:
        f.seek(start)
    else:
        left = start
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                return b""
            left -= len(chunk)
    if stop is None:
        return f.read()
    parts, want = [], stop - start
    while want > 0:
        chunk = f.read(want)
        if not chunk:
            break
        parts.append(chunk)
        want -= len(chunk)
    return b"".join(parts)


class DataStore(ABC):
    """Abstract data store. Implementations: LocalDiskStore, S3DataStore."""

    @abstractmethod
    def open_sink(self, prefix: str) -> ShardSink:
        """A new sink for one shard of the dataset stored under ``prefix``."""

    @abstractmethod
    def put_sidecar(self, shard_url: str, suffix: str, data: bytes) -> str:
        """Store a small file next to a shard (``<shard without .tar><suffix>``); return its URL."""

    @abstractmethod
    def open_read(self, url: str) -> BinaryIO:
        """Open a shard (or sidecar) URL of this store as a readable binary stream."""

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of ``url`` (to the end when ``stop`` is ``None``), for random access.

        This default seeks when the stream allows it, else reads up to ``start``; stores
        with ranged reads (S3) override it with one ranged request.
        """
        with self.open_read(url) as f:
            return read_span(f, start, stop)

    def read_url(self, url: str) -> str:
        """The URL a generic reader should use for ``url`` (atdata's ``read_url``)."""
        return url

    def supports_streaming(self) -> bool:
        """Whether shards can be read as a stream without a full download."""
        return True

    @abstractmethod
    def owns(self, url: str) -> bool:
        """Whether ``url`` points into this store."""

    @abstractmethod
    def iter_shard_urls(self) -> Iterator[str]:
        """Every shard (and leftover temporary object) of this store's own naming, for ``gc``.

        Only names the store itself creates are listed (``data--<id>--<n>.tar`` and its
        temporary names): ``backup.tar`` or another application's objects never are.
        """

    def iter_sidecar_urls(self) -> Iterator[str]:
        """Every sidecar (``<own shard stem>.manifest.json|.parquet``), for ``gc``'s orphan check."""
        return iter(())

    def is_own_name(self, url: str) -> bool:
        """Whether ``url`` is a shard, sidecar or temporary object of this store's own naming.

        ``gc`` deletes nothing else. The default (a store without gc support) is False.
        """
        return False

    def age_seconds(self, url: str, now: float | None = None, *, fresh: bool = False) -> float | None:
        """Seconds since ``url`` was written or reused, ``None`` if unknown; ``gc`` spares young
        objects. ``fresh=True`` asks the store itself (no cached listing): gc's last check
        before a delete."""
        return None

    def locations(self, url: str) -> set[str]:
        """The URLs of this store that a reference ``url`` (from an index entry) may denote.

        Empty when ``url`` is not in this store. References are compared as locations:
        ``file://``, ``//``, ``/./``, symlinked folders and relative paths all denote the
        same file, so gc compares these forms rather than strings.
        """
        return {url} if self.owns(url) else set()

    # -- ownership (gc) ------------------------------------------------------------
    def owner_ids(self) -> set[str]:
        """The identities of every index that has written into this store (see :data:`OWNER_DIR`).

        A store that cannot record ownership returns an empty set, and ``gc`` refuses it.
        """
        return set()

    def claim(self, owner_id: str) -> None:
        """Record that the index ``owner_id`` writes into this store (idempotent).

        Called by the Index before its first write into the store, so ``gc`` can tell a
        store that only its own index writes to from one shared with other indexes.
        """

    @abstractmethod
    def delete(self, url: str) -> None:
        """Delete one object of this store (missing objects are ignored)."""

    def restore(self, url: str, data: BinaryIO) -> None:
        """Replace the object at ``url`` (one of this store's) with the bytes of ``data``, atomically.

        Used by ``repair`` after the caller checked the bytes against the recorded SHA-256:
        readers see the damaged object or the whole good one, never a mix.
        """
        raise StoreError(f"{self!r} cannot restore objects in place; re-materialize the dataset instead")

    def write_shards(
        self,
        ds: "Dataset",
        *,
        prefix: str,
        maxcount: int | None = None,
        maxsize: int | None = None,
        manifest: bool = False,
        cache_local: bool = False,
        **unknown: Any,
    ) -> ShardWriteResult:
        """Copy a dataset's shards into this store (atdata's ``write_shards``).

        Samples are copied as raw payloads (no re-serialization) and re-sharded with
        ``maxcount``/``maxsize`` when given; ``manifest`` writes a manifest per shard.
        ``cache_local`` (atdata: stage S3 writes on local disk first) is accepted and has
        no effect: shards always stream and are always hashed. Any other keyword raises
        :class:`UnknownOptionError` (atdata's manifest fields ``schema_version``,
        ``source_job_id``, ``parent_shards``, ``pipeline_version`` are not supported:
        record them in the entry's metadata instead).
        """
        if unknown:
            raise UnknownOptionError.for_call(
                f"{type(self).__name__}.write_shards(prefix={prefix!r})", unknown,
                ("prefix", "maxcount", "maxsize", "manifest", "cache_local"),
            )
        return copy_dataset_to_store(
            ds, self, prefix=prefix, maxcount=maxcount, maxsize=maxsize, manifest=manifest
        )
