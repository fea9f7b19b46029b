"""What the shard writer writes into: small protocols that stores implement.

``shards`` sits below ``stores``: the writer knows only these protocols, and each store
(disk, S3, the fixed paths of ``write_samples``) implements them. ``ShardInfo`` and
``ShardWriteResult`` describe what was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

__all__ = ["BackgroundCommitSink", "ShardInfo", "ShardSink", "ShardTarget", "ShardWriteResult"]


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
    """A list of shard URLs (atdata-compatible) that also carries per-shard details.

    Built from :class:`ShardInfo` records, or as atdata 0.7 builds it:
    ``ShardWriteResult(urls, checksums)`` (sizes and counts then unknown: 0).
    """

    def __init__(self, shards: "Sequence[ShardInfo] | Sequence[str]" = (), checksums: Mapping[str, str] | None = None):
        items = list(shards)
        if checksums is not None or any(isinstance(s, str) for s in items):
            sums = dict(checksums or {})
            infos = [ShardInfo(url=str(u), sha256=sums.get(str(u), ""), size=0, num_samples=0) for u in items]
        else:
            infos = items  # type: ignore[assignment]
        super().__init__(s.url for s in infos)
        self.shards: list[ShardInfo] = infos

    @property
    def checksums(self) -> dict[str, str]:
        """Shard URL -> SHA-256 hex (shards whose checksum is known)."""
        return {s.url: s.sha256 for s in self.shards if s.sha256}

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.shards)


@runtime_checkable
class BackgroundCommitSink(ShardSink, Protocol):
    """A :class:`ShardSink` that can finish its commit in the background (S3 uploads).

    :class:`~atdata_dagster.shards.writer.ShardWriter` encodes the next shard while the
    last one completes, and waits for every shard before it returns its URLs.
    """

    def start_commit(self, index: int, sha256: str) -> str:
        """Start committing; return the final URL at once (nothing is visible there yet)."""

    def done(self) -> bool:
        """Whether the commit has finished (successfully or not)."""

    def wait(self) -> None:
        """Block until the shard is durable; raise the commit's error."""


class ShardTarget(Protocol):
    """Where a :class:`~atdata_dagster.shards.writer.ShardWriter` puts shards and sidecars."""

    def open_sink(self, prefix: str) -> ShardSink:
        """A new sink for one shard of the dataset under ``prefix``."""

    def put_sidecar(self, shard_url: str, suffix: str, data: bytes) -> str:
        """Store ``data`` next to the shard as ``<shard stem><suffix>``; return its URL."""
