"""Data sources, as atdata's: where a ``Dataset``'s shards come from, and how to open them.

``Dataset[T](source)`` (or ``Dataset[T](source=...)``) takes any object with
``list_shards()`` and ``open_shard(shard_id)`` (atdata's ``DataSource`` protocol):

- :class:`URLSource` - a URL or brace pattern (local paths, ``file://``, ``http(s)://``,
  ``s3://`` through boto3's default credential chain);
- :class:`S3Source` - objects of one bucket with credentials of their own, no ``Index``
  needed (a bucket on R2, MinIO, Ceph RGW...);
- :class:`BlobSource` - ATProto blobs (``did`` + ``cid``) served by a PDS.

Each source is picklable (no live client), so a dataset built from one goes to
DataLoader workers; reads go through this package's openers (S3 retries and ranged
reads, HTTP without cross-host redirects).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Mapping

from ..shards.patterns import expand_patterns
from .http import HttpOpener
from .openers import default_opener
from .s3 import S3DataStore, S3Opener, parse_s3_url

__all__ = ["BlobSource", "S3Source", "URLSource", "SourceOpener", "is_data_source"]


def is_data_source(obj: Any) -> bool:
    """Whether ``obj`` follows atdata's ``DataSource`` protocol (``list_shards`` and ``open_shard``)."""
    return callable(getattr(obj, "list_shards", None)) and callable(getattr(obj, "open_shard", None))


class SourceOpener:
    """A shard opener (``opener(url)``) that opens through a data source's ``open_shard``; picklable with it."""

    def __init__(self, source: Any):
        self.source = source

    def open(self, url: str) -> BinaryIO:
        return self.source.open_shard(url)

    __call__ = open

    @property
    def read_range(self) -> Any:
        """The source's ranged read (``read_range(url, start, stop)``), or ``None`` (then readers seek)."""
        return getattr(self.source, "read_range", None)

    def __repr__(self) -> str:
        return f"SourceOpener({self.source!r})"


class _Source:
    """What every source shares: ``shards`` and a checked ``open_shard`` (subclasses give ``_open``).

    The shard list is computed once, on the first open: a dataset opens every shard through
    here, and expanding a brace pattern (or rebuilding every URL) per open would make a read
    quadratic in the number of shards. Change a source's fields before first use, not after.
    """

    def _open(self, shard_id: str) -> BinaryIO:
        raise NotImplementedError

    def list_shards(self) -> list[str]:
        raise NotImplementedError

    @property
    def shards(self) -> Iterator[tuple[str, BinaryIO]]:
        """(shard URL, open stream) for each shard, opened lazily."""
        for shard in self.list_shards():
            yield shard, self.open_shard(shard)

    def open_shard(self, shard_id: str) -> BinaryIO:
        """Open one shard; ``KeyError`` if it is not one of this source's."""
        known = self.__dict__.get("_known_ids")
        if known is None:
            known = self.__dict__["_known_ids"] = frozenset(self.list_shards())
        if shard_id not in known:
            raise KeyError(f"Shard not found: {shard_id}")
        return self._open(shard_id)


@dataclass
class URLSource(_Source):
    """Shards named by a URL or brace pattern (``"data/train-{000..009}.tar"``)."""

    url: str

    def list_shards(self) -> list[str]:
        """The shard URLs, braces expanded."""
        return expand_patterns([self.url])

    def _open(self, shard_id: str) -> BinaryIO:
        return default_opener()(shard_id)


@dataclass
class S3Source(_Source):
    """Objects ``keys`` of ``bucket``, read with these credentials (``None``: boto3's default chain).

    ``endpoint`` is an S3-compatible endpoint URL (R2, MinIO, Ceph RGW); the secret never
    appears in ``repr``.
    """

    bucket: str
    keys: list[str]
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    region: str | None = None
    session_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._opener: S3Opener | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_opener"] = None  # rebuilt on first use: no live client crosses a process boundary
        return state

    def _s3(self) -> S3Opener:
        if self._opener is None:
            store = S3DataStore(bucket=self.bucket, endpoint_url=self.endpoint, region_name=self.region,
                                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                                aws_session_token=self.session_token)
            self._opener = S3Opener(store)
        return self._opener

    def list_shards(self) -> list[str]:
        """``s3://bucket/key`` for each key."""
        return [f"s3://{self.bucket}/{k}" for k in self.keys]

    def _open(self, shard_id: str) -> BinaryIO:
        return self._s3().open(shard_id)

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of one object with a ranged GET (random access: ``ds[i]``)."""
        return self._s3().read_range(url, start, stop)

    @classmethod
    def from_urls(cls, urls: list[str], *, endpoint: str | None = None, access_key: str | None = None,
                  secret_key: str | None = None, region: str | None = None) -> "S3Source":
        """A source for ``s3://bucket/key`` URLs, all in one bucket (``ValueError`` otherwise)."""
        if not urls:
            raise ValueError("urls cannot be empty")
        parsed = []
        for url in urls:
            if not url.startswith("s3://"):
                raise ValueError(f"Not an S3 URL: {url}")
            parsed.append(parse_s3_url(url))
        buckets = {b for b, _ in parsed}
        if len(buckets) > 1:
            raise ValueError(f"All URLs must be in the same bucket, got: {sorted(buckets)}")
        return cls(bucket=parsed[0][0], keys=[k for _, k in parsed], endpoint=endpoint, access_key=access_key,
                   secret_key=secret_key, region=region)

    @classmethod
    def from_credentials(cls, credentials: Mapping[str, str], bucket: str, keys: list[str]) -> "S3Source":
        """A source from atdata's credential dict (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT``...)."""
        return cls(bucket=bucket, keys=list(keys), endpoint=credentials.get("AWS_ENDPOINT"),
                   access_key=credentials.get("AWS_ACCESS_KEY_ID"), secret_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
                   region=credentials.get("AWS_REGION"), session_token=credentials.get("AWS_SESSION_TOKEN"))


@dataclass
class BlobSource(_Source):
    """ATProto blobs, each ``{"did": ..., "cid": ...}``, fetched from ``pds_endpoint``'s ``getBlob``."""

    blob_refs: list[dict[str, str]]
    pds_endpoint: str

    def _url(self, ref: Mapping[str, str]) -> str:
        query = urllib.parse.urlencode({"did": ref["did"], "cid": ref["cid"]})
        return f"{self.pds_endpoint.rstrip('/')}/xrpc/com.atproto.sync.getBlob?{query}"

    def list_shards(self) -> list[str]:
        """The ``getBlob`` URL of each blob."""
        return [self._url(r) for r in self.blob_refs]

    def _open(self, shard_id: str) -> BinaryIO:
        return HttpOpener()(shard_id)

    @classmethod
    def from_refs(cls, refs: list[dict[str, str]], *, pds_endpoint: str) -> "BlobSource":
        """A source for blob refs ``[{"did": ..., "cid": ...}]`` on ``pds_endpoint``."""
        return cls(blob_refs=[dict(r) for r in refs], pds_endpoint=pds_endpoint)
