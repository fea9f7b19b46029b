"""atdata's atmosphere classes, for code that calls them directly: thin layers over this package.

``Atmosphere`` (an :class:`~atdata_dagster.atmosphere.client.AtmosphereClient` with
atdata's constructors and URI-based record calls), ``AtUri``, the schema / dataset /
label publishers and loaders, ``PDSBlobStore`` and ``AtmosphereIndex``. Records are the
ones :class:`~atdata_dagster.atmosphere.backend.AtmosphereBackend` publishes (the same
lexicons atdata reads); publishing a dataset that has local shards uploads them as
blobs; nothing here has its own wire format.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from ..dataset import Dataset
from ..errors import AtmosphereUnavailableError, ChecksumMismatchError, InvalidRefError
from ..index.entry import LocalDatasetEntry
from ..index.index import Index
from ..samples.schema import build_schema_record
from ..stores.base import ShardInfo, ShardWriteResult
from .backend import AtmosphereBackend
from .client import DEFAULT_PLC, DEFAULT_SERVICE, AtmosphereClient
from .records import NSID_ENTRY, NSID_LABEL, NSID_SCHEMA, AtUri, EntryRecord, blob_url
from .sources import ShardSource, shard_sources_for

__all__ = [
    "Atmosphere", "AtmosphereIndex", "AtUri", "DatasetLoader", "DatasetPublisher", "LabelLoader",
    "LabelPublisher", "PDSBlobStore", "SchemaLoader", "SchemaPublisher",
]


class Atmosphere(AtmosphereClient):
    """atdata's ATProto client: ``Atmosphere.login(handle, password)``, ``from_env()``, records by AT URI."""

    @classmethod
    def login(cls, handle: str, password: str, *, base_url: str | None = None,  # type: ignore[override]
              plc_url: str = DEFAULT_PLC, **_: Any) -> "Atmosphere":
        """A client logged in as ``handle`` with an app password (on ``base_url``, default bsky.social)."""
        client = cls(base_url or DEFAULT_SERVICE, handle=handle, password=password, plc_url=plc_url)
        AtmosphereClient.login(client)
        return client

    @classmethod
    def from_env(cls, *, base_url: str | None = None) -> "Atmosphere":
        """Credentials from ``ATDATA_HANDLE`` / ``ATDATA_PASSWORD`` (and ``ATDATA_SERVICE_URL``), as atdata reads them."""
        handle, password = os.environ.get("ATDATA_HANDLE"), os.environ.get("ATDATA_PASSWORD")
        if not handle or not password:
            raise AtmosphereUnavailableError("set ATDATA_HANDLE and ATDATA_PASSWORD (an app password) to log in")
        return cls.login(handle, password, base_url=base_url or os.environ.get("ATDATA_SERVICE_URL"))

    @property
    def is_authenticated(self) -> bool:
        return self.authenticated

    def resolve_did(self, handle_or_did: str) -> str:
        """The DID of a handle (a DID is returned as is)."""
        return _repo_did(self, handle_or_did)

    def get_record(self, uri: str | AtUri, collection: str | None = None, rkey: str | None = None) -> Any:
        """A record's value by AT URI (atdata's form); ``(repo, collection, rkey)`` gives the :class:`Record`."""
        if collection is not None and rkey is not None:
            return AtmosphereClient.get_record(self, str(uri), collection, rkey)
        return self.get_record_uri(str(uri)).value

    def list_records_of(self, collection: str, *, repo: str | None = None, limit: int = 100) -> list[dict]:
        """Record values of ``collection`` in ``repo`` (default: this account), at most ``limit``."""
        out = []
        for rec in self.list_records(_repo_did(self, repo), collection):
            out.append({"uri": rec.uri, "cid": getattr(rec, "cid", None), "value": rec.value})
            if len(out) >= limit:
                break
        return out

    def list_schemas(self, repo: str | None = None, limit: int = 100) -> list[dict]:
        return [r["value"] for r in self.list_records_of(NSID_SCHEMA, repo=repo, limit=limit)]

    def list_datasets(self, repo: str | None = None, limit: int = 100) -> list[dict]:
        return [r["value"] for r in self.list_records_of(NSID_ENTRY, repo=repo, limit=limit)]

    def list_labels(self, repo: str | None = None, limit: int = 100) -> list[dict]:
        return [r["value"] for r in self.list_records_of(NSID_LABEL, repo=repo, limit=limit)]

    def get_blob_url(self, did: str, cid: str) -> str:
        """The ``getBlob`` URL of a blob on its owner's PDS."""
        return f"{self.pds_endpoint(did).rstrip('/')}/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}"


def _repo_did(client: AtmosphereClient, repo: str | None) -> str:
    """The DID of ``repo`` (a handle or DID), or the client's own account."""
    if not repo:
        return client.did
    return repo if repo.startswith("did:") else client.resolve_handle(repo)


def _backend(atmo: AtmosphereClient) -> AtmosphereBackend:
    return AtmosphereBackend(atmo)


class SchemaPublisher:
    """Publish a sample type's schema record (deduplicated by fields, as promotion does)."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def publish(self, sample_type: type, *, name: str | None = None, version: str = "1.0.0",
                description: str | None = None, **_: Any) -> AtUri:
        record = build_schema_record(sample_type, version=version, description=description)
        if name is not None:
            record["name"] = name
        return AtUri.parse(_backend(self.client).publish_schema(record))


class SchemaLoader:
    """Read schema records."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def get(self, uri: str | AtUri) -> dict:
        """The schema record's value (``ValueError`` if the URI is not a schema record)."""
        value = self.client.get_record_uri(str(uri)).value
        if value.get("$type") != NSID_SCHEMA:
            raise InvalidRefError(f"{uri} is not a schema record (its $type is {value.get('$type')!r})")
        return value

    def list_all(self, repo: str | None = None, limit: int = 100) -> list[dict]:
        did = _repo_did(self.client, repo)
        return [r.value for r in self.client.list_records(did, NSID_SCHEMA)][:limit]


class DatasetPublisher:
    """Publish dataset entry records: from a ``Dataset`` (local shards uploaded as blobs) or from URLs."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def publish(self, dataset: Dataset, *, name: str, schema_uri: str | None = None, description: str | None = None,
                tags: list[str] | None = None, license: str | None = None, auto_publish_schema: bool = True,
                schema_version: str = "1.0.0", **_: Any) -> AtUri:
        backend = _backend(self.client)
        if schema_uri is None:
            if not auto_publish_schema:
                raise ValueError("schema_uri is required when auto_publish_schema=False")
            schema_uri = backend.publish_schema(build_schema_record(dataset.sample_type, version=schema_version))
        entry = LocalDatasetEntry(name=name, schema_ref=schema_uri, data_urls=dataset.list_shards(),
                                  metadata=dataset.metadata if isinstance(dataset.metadata, dict) else None)
        shards = shard_sources_for(entry, opener=dataset.opener)
        return AtUri.parse(backend.publish_entry(name=name, schema_uri=schema_uri, shards=shards,
                                                 description=description, tags=tags, license=license))

    def publish_with_urls(self, urls: list[str], schema_uri: str, *, name: str, description: str | None = None,
                          tags: list[str] | None = None, license: str | None = None, metadata: dict | None = None,
                          **_: Any) -> AtUri:
        shards = [ShardSource.s3(u) if u.startswith("s3://") else ShardSource.http(u) for u in urls]
        return AtUri.parse(_backend(self.client).publish_entry(
            name=name, schema_uri=schema_uri, shards=shards, description=description, tags=tags, license=license,
            metadata=metadata))


class DatasetLoader:
    """Read dataset entry records and open them as ``Dataset``."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def _entry(self, uri: str | AtUri) -> EntryRecord:
        return EntryRecord.from_record(self.client.get_record_uri(str(uri)).value, uri=str(uri))

    def get(self, uri: str | AtUri) -> dict:
        return self.client.get_record_uri(str(uri)).value

    def get_storage_type(self, uri: str | AtUri) -> str:
        return str(self.get(uri).get("storage", {}).get("$type", "")).rsplit(".", 1)[-1]

    def get_urls(self, uri: str | AtUri) -> list[str]:
        """Shard URLs (blob URLs for blob storage)."""
        return list(_backend(self.client).resolve(str(uri)).data_urls)

    def get_metadata(self, uri: str | AtUri) -> dict | None:
        return self._entry(uri).metadata

    def list_all(self, repo: str | None = None, limit: int = 100) -> list[dict]:
        did = _repo_did(self.client, repo)
        return [{"uri": r.uri, "value": r.value} for r in self.client.list_records(did, NSID_ENTRY)][:limit]

    def to_dataset(self, uri: str | AtUri, sample_type: type) -> Dataset:
        """The entry as ``Dataset[sample_type]`` (blobs read from their PDS, checksums kept)."""
        backend = _backend(self.client)
        resolved = backend.resolve(str(uri))
        return Dataset[sample_type](list(resolved.data_urls), metadata=resolved.metadata,  # type: ignore[valid-type]
                                    opener=backend.blob_opener())


class LabelPublisher:
    """Publish label records (a name, optionally versioned, pointing at an entry)."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def publish(self, name: str, dataset_uri: str, *, version: str | None = None, description: str | None = None,
                **_: Any) -> AtUri:
        return AtUri.parse(_backend(self.client).publish_label(name, str(dataset_uri), version, description))


class LabelLoader:
    """Read label records and resolve names."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def get(self, uri: str | AtUri) -> dict:
        return self.client.get_record_uri(str(uri)).value

    def list_all(self, repo: str | None = None, limit: int = 100) -> list[dict]:
        did = _repo_did(self.client, repo)
        return [r.value for r in self.client.list_records(did, NSID_LABEL)][:limit]

    def resolve(self, handle_or_did: str, name: str, version: str | None = None) -> str:
        """The entry URI a label names (the latest label of that name without ``version``)."""
        ref = f"@{handle_or_did}/{name}" + (f"@{version}" if version else "")
        return _backend(self.client).resolve(ref).uri


class PDSBlobStore:
    """atdata's store that uploads shards as PDS blobs: ``write_shards(ds, prefix=...)`` returns their blob URLs."""

    def __init__(self, client: AtmosphereClient):
        self.client = client

    def write_shards(self, ds: Dataset, *, prefix: str, **_: Any) -> ShardWriteResult:
        """Upload each shard of ``ds`` as a blob; the result's URLs are ``at://<did>/blob/<cid>``."""
        infos = []
        for source in shard_sources_for(LocalDatasetEntry(name=prefix, schema_ref="", data_urls=ds.list_shards(),
                                                          metadata=ds.metadata if isinstance(ds.metadata, dict) else None),
                                         opener=ds.opener):
            with source.open() as f:  # upload_blob hashes and sizes the stream as it sends it: one read
                blob = self.client.upload_blob(f)
            if source.sha256 and source.sha256.lower() != blob.sha256:
                raise ChecksumMismatchError(
                    f"shard {source.url} has SHA-256 {blob.sha256}, but the index records {source.sha256}; the file "
                    "changed since it was indexed (the blob is not referenced by any record): re-write or verify it"
                )
            infos.append(ShardInfo(url=blob_url(self.client.did, blob.ref.cid), sha256=blob.sha256, size=blob.size,
                                   num_samples=0))
        return ShardWriteResult(infos)

    def read_url(self, url: str) -> str:
        return url

    def supports_streaming(self) -> bool:
        return True


class AtmosphereIndex:
    """atdata's index over one atmosphere account: an ``Index`` with only the atmosphere behind it."""

    def __init__(self, client: AtmosphereClient, **_: Any):
        self.client = client
        self._index = Index(path=":memory:", atmosphere=client)

    def _ref(self, name: str) -> str:
        return name if name.startswith(("@", "at://")) else f"@{self.client.handle or self.client.did}/{name}"

    def get_dataset(self, ref: str) -> Any:
        return self._index.get_dataset(self._ref(ref))

    def list_datasets(self, repo: str | None = None) -> list[Any]:
        return self._index.list_datasets(repo="_atmosphere")

    @property
    def datasets(self) -> Iterator[Any]:
        yield from self.list_datasets()

    def get_schema(self, ref: str) -> dict:
        return self._index.get_schema(ref)

    def publish_schema(self, sample_type: type, *, version: str = "1.0.0", description: str | None = None) -> str:
        return str(SchemaPublisher(self.client).publish(sample_type, version=version, description=description))

    def insert_dataset(self, ds: Dataset, *, name: str, **kwargs: Any) -> Any:
        return self._index.insert_dataset(ds, name=self._ref(name), **kwargs)
