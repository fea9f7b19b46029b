"""The data-store contract: where shards are written and how they are read back.

A store hands out :class:`ShardSink` objects. The shard writer streams tar bytes into a
sink and, once the shard is complete, calls :meth:`ShardSink.commit` with the shard's
index and SHA-256; only then does the shard get its final, content-derived name. Until
commit nothing is visible under a final name, so a crash leaves only temporary
leftovers that ``gc`` can remove.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Iterator, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from ..dataset import Dataset

__all__ = ["DataStore", "ShardSink", "ShardInfo", "ShardWriteResult"]


class ShardSink(Protocol):
    """A write-once destination for one shard's bytes.

    A sink may also finish its commit in the background. It then has
    ``start_commit(index, sha256) -> url`` (returns at once; nothing is visible under the
    URL until the shard is complete), ``done() -> bool`` and ``wait()`` (blocks until the
    shard is durable, raising the commit's error). :class:`ShardWriter` uses them to
    encode the next shard while the last one completes, and waits for every shard before
    it returns its URLs, so an index entry is still committed only over durable shards.
    """

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes to the shard."""

    def commit(self, index: int, sha256: str) -> str:
        """Make the shard durable under its final name; return its URL.

        The final name derives from ``sha256`` (and ``index``), so identical content
        gets an identical URL. Committing a shard whose final object already exists with
        the same content is a no-op that returns the same URL.
        """

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""


@dataclass(frozen=True)
class ShardInfo:
    """What the writer knows about one committed shard."""

    url: str
    sha256: str
    size: int
    num_samples: int
    manifest_url: str | None = None


class ShardWriteResult(list):
    """A list of shard URLs (atdata-compatible) that also carries per-shard details."""

    def __init__(self, shards: list[ShardInfo] = ()):  # type: ignore[assignment]
        super().__init__(s.url for s in shards)
        self.shards: list[ShardInfo] = list(shards)

    @property
    def checksums(self) -> dict[str, str]:
        """Shard URL -> SHA-256 hex."""
        return {s.url: s.sha256 for s in self.shards}

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.shards)


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
        """Every shard URL (and leftover temporary object) in the store, for ``gc``."""

    def iter_sidecar_urls(self) -> Iterator[str]:
        """Every sidecar (``<shard stem>.manifest.*``) in the store, for ``gc``'s orphan check."""
        return iter(())

    def age_seconds(self, url: str, now: float | None = None) -> float | None:
        """Seconds since ``url`` was written, ``None`` if unknown; ``gc`` spares young objects."""
        return None

    @abstractmethod
    def delete(self, url: str) -> None:
        """Delete one object of this store (missing objects are ignored)."""

    def write_shards(
        self,
        ds: "Dataset",
        *,
        prefix: str,
        maxcount: int | None = None,
        maxsize: int | None = None,
        manifest: bool = False,
        **kwargs,
    ) -> ShardWriteResult:
        """Copy a dataset's shards into this store (atdata's ``write_shards``).

        Samples are copied as raw payloads (no re-serialization) and re-sharded with
        ``maxcount``/``maxsize`` when given.
        """
        from ..shards.writer import copy_dataset_to_store

        return copy_dataset_to_store(
            ds, self, prefix=prefix, maxcount=maxcount, maxsize=maxsize, manifest=manifest
        )
