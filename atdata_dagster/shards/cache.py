"""A local cache of remote shards, verified on entry, with an LRU byte limit.

``ShardCache(cache_dir, limit_bytes).fetch(url, sha256, open_fn)`` returns a local path
holding the shard. A miss streams the shard through ``open_fn`` into a temp file in
``cache_dir``, hashing it on the way; only a copy whose SHA-256 matches the recorded one
is renamed into place (so a corrupt download never enters the cache, and a cached file
is one that was verified). Files are named by that checksum, so two workers filling the
same shard at once both produce the same file and the rename is atomic. A hit refreshes
the file's mtime; past ``limit_bytes`` the least recently used files are deleted.
Shards without a recorded checksum are cached under a hash of their URL, unverified.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import closing
from typing import BinaryIO, Callable

from ..errors import ChecksumMismatchError, ConfigurationError, StoreError
from .reader import READ_CHUNK, _local_path, url_scheme

__all__ = ["ShardCache", "is_local_url", "local_path"]


def is_local_url(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return url_scheme(url) in ("", "file")


def local_path(url: str) -> str:
    """The filesystem path of a local shard URL (plain path or ``file://``)."""
    return _local_path(url)


class ShardCache:
    """Remote shards on local disk, verified as they enter, least recently used evicted first."""

    def __init__(self, cache_dir: str | os.PathLike, limit_bytes: int | None = None):
        if limit_bytes is not None and (not isinstance(limit_bytes, int) or limit_bytes <= 0):
            raise ConfigurationError(f"cache_limit_bytes must be a positive integer or None, got {limit_bytes!r}")
        self.root = os.path.abspath(os.fspath(cache_dir))
        self.limit_bytes = limit_bytes
        os.makedirs(self.root, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path_for(self, url: str, sha256: str | None) -> str:
        name = sha256.lower() if sha256 else "url-" + hashlib.sha256(url.encode("utf-8")).hexdigest()
        return os.path.join(self.root, name + ".tar")

    def fetch(self, url: str, sha256: str | None, open_fn: Callable[[str], BinaryIO]) -> str:
        """A local path holding the shard at ``url`` (downloaded and verified on a miss)."""
        path = self.path_for(url, sha256)
        try:
            os.utime(path)  # a hit: now the most recently used
            self.hits += 1
            return path
        except FileNotFoundError:
            pass
        self.misses += 1
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".fill-", suffix=".part")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, closing(open_fn(url)) as src:
                while True:
                    chunk = src.read(READ_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
            digest = h.hexdigest()
            if sha256 and digest != sha256.lower():
                raise ChecksumMismatchError(
                    f"shard {url} does not match the checksum recorded in the index (expected sha256 "
                    f"{sha256.lower()}, got {digest}); it was not cached and none of its samples were yielded. "
                    "Restore the shard from its source or re-materialize the dataset"
                )
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self._evict(keep=path)
        return path

    def _evict(self, keep: str) -> None:
        if self.limit_bytes is None:
            return
        files = []
        total = 0
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise StoreError(f"cannot list the shard cache {self.root}: {exc}") from exc
        for name in names:
            if not name.endswith(".tar"):
                continue
            p = os.path.join(self.root, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            files.append((st.st_mtime_ns, p, st.st_size))
            total += st.st_size
        files.sort()
        for _, p, size in files:
            if total <= self.limit_bytes:
                break
            if p == keep:
                continue
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            total -= size

    def size_bytes(self) -> int:
        """Bytes of cached shards."""
        return sum(os.path.getsize(os.path.join(self.root, n)) for n in os.listdir(self.root) if n.endswith(".tar"))
