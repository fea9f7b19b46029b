"""Where the shards of a dataset being published come from.

A :class:`ShardSource` says how one shard reaches the atmosphere: a local file is
uploaded as a PDS blob, an ``s3://`` object or an ``http(s)://`` URL is referenced
where it is, and a blob of another record (``at://<did>/blob/<cid>``) is copied.
:func:`shard_sources_for` derives them from an index entry and the stores it uses.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, BinaryIO, Callable, Iterable

from ..errors import AtmosphereError, ChecksumMismatchError
from .records import parse_blob_url

__all__ = ["ShardSource", "ShardSourceKind", "shard_sources_for", "hash_stream"]

CHUNK = 1024 * 1024


def hash_stream(stream: BinaryIO) -> tuple[str, int]:
    """SHA-256 hex and byte count of a stream, read in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return h.hexdigest(), n
        h.update(chunk)
        n += len(chunk)


class ShardSourceKind(StrEnum):
    """Where a shard's bytes come from when it is published (see :class:`ShardSource`)."""

    FILE = "file"
    S3 = "s3"
    HTTP = "http"
    BLOB = "blob"


@dataclass(frozen=True)
class ShardSource:
    """One shard to publish.

    ``kind`` is ``"file"`` (``path``; uploaded as a blob), ``"blob"`` (an existing
    ``at://`` blob URL; copied as a blob), ``"s3"`` (``bucket``/``key``, with the
    store's ``endpoint``/``region``) or ``"http"`` (``url``). ``url`` is the shard URL
    as the local entry lists it; ``sha256``/``size`` are known facts (``None`` when
    not known yet; files are hashed before publishing). ``opener`` opens the bytes
    for upload when ``path`` alone is not enough.
    """

    kind: ShardSourceKind
    url: str
    sha256: str | None = None
    size: int | None = None
    path: str | None = None
    bucket: str | None = None
    key: str | None = None
    endpoint: str | None = None
    region: str | None = None
    opener: Callable[[], BinaryIO] | None = None

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def file(cls, path: str | os.PathLike, *, sha256: str | None = None, size: int | None = None,
             url: str | None = None) -> "ShardSource":
        """A local shard file, uploaded as a blob (its path is never published)."""
        p = os.fspath(path)
        if p.startswith("file://"):
            p = p[len("file://"):]
        return cls(ShardSourceKind.FILE, url or p, sha256=sha256, size=size, path=p)

    @classmethod
    def s3(cls, url: str, *, sha256: str | None = None, size: int | None = None, endpoint: str | None = None,
           region: str | None = None) -> "ShardSource":
        """An object ``s3://bucket/key``, referenced where it is (storageS3)."""
        if not url.startswith("s3://") or "/" not in url[5:]:
            raise AtmosphereError(f"{url!r} is not an s3://bucket/key URL")
        bucket, key = url[5:].split("/", 1)
        if not bucket or not key:
            raise AtmosphereError(f"{url!r} is not an s3://bucket/key URL")
        return cls(ShardSourceKind.S3, url, sha256=sha256, size=size, bucket=bucket, key=key,
                   endpoint=(endpoint or None) and endpoint.rstrip("/"), region=region or None)

    @classmethod
    def http(cls, url: str, *, sha256: str | None = None, size: int | None = None) -> "ShardSource":
        """A public http(s) URL, referenced where it is (storageHttp)."""
        if not url.startswith(("http://", "https://")):
            raise AtmosphereError(f"{url!r} is not an http(s) URL")
        return cls(ShardSourceKind.HTTP, url, sha256=sha256, size=size)

    @classmethod
    def blob(cls, url: str, *, opener: Callable[[], BinaryIO] | None = None, sha256: str | None = None,
             size: int | None = None) -> "ShardSource":
        """A blob of an existing atmosphere record, copied into the publisher's PDS."""
        parse_blob_url(url)
        return cls(ShardSourceKind.BLOB, url, sha256=sha256, size=size, opener=opener)

    # -- helpers --------------------------------------------------------------------
    @property
    def uploads(self) -> bool:
        """Whether publishing uploads this shard as a blob."""
        return self.kind in ("file", "blob")

    def open(self) -> BinaryIO:
        if self.opener is not None:
            return self.opener()
        if self.path is not None:
            return open(self.path, "rb")
        raise AtmosphereError(f"shard {self.url} cannot be opened for upload (no path or opener)")

    def measured(self) -> "ShardSource":
        """This source with ``size`` (and for uploads ``sha256``) filled in from the bytes."""
        if not self.uploads:
            return self
        size = self.size
        if self.path is not None and size is None:
            try:
                size = os.stat(self.path).st_size
            except OSError as exc:
                raise AtmosphereError(f"shard {self.url} cannot be read: {exc.strerror or exc}") from exc
        if self.sha256 is not None and size is not None:
            return replace(self, size=size)
        try:
            with self.open() as f:
                sha, n = hash_stream(f)
        except OSError as exc:
            raise AtmosphereError(f"shard {self.url} cannot be read: {exc.strerror or exc}") from exc
        if self.sha256 is not None and self.sha256.lower() != sha:
            raise ChecksumMismatchError(
                f"shard {self.url} has SHA-256 {sha}, but the index records {self.sha256}; "
                "the file changed since it was indexed: re-write the dataset or run verify"
            )
        return replace(self, sha256=sha, size=n)


def _is_local(url: str) -> bool:
    return url.startswith("file://") or ("://" not in url and os.path.isabs(url))


def shard_sources_for(entry: Any, *, stores: Iterable[Any] = (), opener: Callable[[str], BinaryIO] | None = None
                      ) -> list[ShardSource]:
    """The :class:`ShardSource` of every shard URL of ``entry`` (a ``LocalDatasetEntry``).

    Checksums come from ``entry.metadata["checksums"]``. ``s3://`` URLs take the
    endpoint/region of the store in ``stores`` that holds the bucket; local paths are
    read with ``opener(url)`` when given (else opened directly). Anything else (a
    relative path, a brace pattern) raises :class:`AtmosphereError`.
    """
    checks = dict(((getattr(entry, "metadata", None) or {}).get("checksums")) or {})
    stores = list(stores)
    out: list[ShardSource] = []
    for url in entry.data_urls:
        sha = checks.get(url)
        if url.startswith("s3://"):
            bucket = url[5:].split("/", 1)[0]
            store = next((s for s in stores if getattr(s, "bucket", None) == bucket), None)
            endpoint = getattr(store, "endpoint_url", None) or getattr(store, "endpoint", None)
            region = getattr(store, "region_name", None) or getattr(store, "region", None)
            out.append(ShardSource.s3(url, sha256=sha, endpoint=endpoint, region=region))
        elif url.startswith(("http://", "https://")):
            out.append(ShardSource.http(url, sha256=sha))
        elif url.startswith("at://"):
            out.append(ShardSource.blob(url, sha256=sha, opener=functools.partial(opener, url) if opener else None))
        elif _is_local(url) and not any(c in url for c in "{}"):
            src = ShardSource.file(url, sha256=sha, url=url)
            if opener is not None:
                src = replace(src, opener=functools.partial(opener, url))
            out.append(src)
        else:
            raise AtmosphereError(
                f"shard URL {url!r} of dataset {getattr(entry, 'name', '?')!r} cannot be published: it is not an "
                "absolute local path, s3://, http(s):// or at:// blob URL (brace patterns must be expanded first)"
            )
    return out
