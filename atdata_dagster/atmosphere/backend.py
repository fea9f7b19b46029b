"""The atmosphere backend of the Index: publish, promote and resolve datasets on ATProto.

Publishing is ordered so that nothing is ever half-visible: every blob is uploaded
(unreferenced blobs are garbage-collected by the PDS) before the entry record is
created, and the label comes last. Schemas and entries are de-duplicated against the
caller's own records, so re-promoting unchanged data creates nothing.
"""

from __future__ import annotations

import functools

import logging
import weakref
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable, Iterable

from ..errors import (
    AtmosphereError,
    AtmosphereNotFoundError,
    AtmosphereUnavailableError,
    BlobTooLargeError,
    ChecksumMismatchError,
    InvalidRefError,
    PartialPublishError,
    RecordError,
    SchemaError,
)
from ..index.entry import LocalDatasetEntry
from .client import AtmosphereClient, ReadLimits
from .records import (
    NSID_ENTRY,
    NSID_LABEL,
    NSID_SCHEMA,
    LEGACY_NSID_ENTRY,
    LEGACY_NSID_SCHEMA,
    TAR_MIME,
    AtUri,
    BlobShard,
    Checksum,
    DatasetLabel,
    DatasetSize,
    EntryRecord,
    HttpShard,
    S3Shard,
    SchemaRecord,
    StorageBlobs,
    StorageHttp,
    StorageS3,
    blob_cid,
    parse_blob_url,
    parse_datetime,
)
from .sources import ShardSource, shard_sources_for

__all__ = ["AtBlobOpener", "AtmosphereBackend", "PromotionResult", "ResolvedDataset", "DatasetRef",
           "parse_dataset_ref", "open_at_url"]

log = logging.getLogger(__name__)

# Local metadata keys that describe local storage or are carried in other record fields.
_PRIVATE_METADATA = frozenset({"checksums", "atmosphere", "stats", "manifests"})
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class PromotionResult:
    """The records a promotion points at; ``reused`` when nothing new was created."""

    entry_uri: str
    schema_uri: str
    label_uri: str | None
    reused: bool


@dataclass(eq=False)
class ResolvedDataset(LocalDatasetEntry):
    """An atmosphere entry as a :class:`LocalDatasetEntry` (``schema_ref`` is the schema's AT URI).

    ``data_urls`` are ``at://<did>/blob/<cid>`` for PDS blobs, ``s3://bucket/key`` or
    ``https://…``; ``metadata`` holds the entry's metadata, ``checksums`` and an
    ``atmosphere`` block (uri, cid, did, label and storage details).
    """

    uri: str = ""
    did: str = ""
    label_uri: str | None = None
    record: EntryRecord | None = field(default=None, repr=False)

    @property
    def schema_uri(self) -> str:
        return self.schema_ref


@dataclass(frozen=True)
class DatasetRef:
    """A parsed atmosphere dataset ref: an AT URI, or (handle, name, version)."""

    uri: AtUri | None = None
    handle: str | None = None  # handle or DID; None = the logged-in account
    name: str | None = None
    version: str | None = None


def _split_version(text: str) -> tuple[str, str | None]:
    if "@" in text:
        name, version = text.rsplit("@", 1)
        if name and version:
            return name, version
    return text, None


def parse_dataset_ref(ref: str) -> DatasetRef:
    """``at://…``, ``@handle/name[@version]``, ``@name[@version]``, ``atdata://handle/…/name`` or ``name``."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRefError(f"dataset ref must be a non-empty string, got {ref!r}")
    ref = ref.strip()
    if ref.startswith("at://"):
        return DatasetRef(uri=AtUri.parse(ref))
    if ref.startswith("atdata://"):
        parts = [p for p in ref[len("atdata://"):].split("/") if p]
        if len(parts) < 2:
            raise InvalidRefError(f"dataset ref {ref!r} needs atdata://<handle>/.../<name>")
        name, version = _split_version(parts[-1])
        return DatasetRef(handle=parts[0], name=name, version=version)
    body = ref[1:] if ref.startswith("@") else ref
    if ref.startswith("@") and "/" in body:
        handle, rest = body.split("/", 1)
        if not handle or not rest:
            raise InvalidRefError(f"dataset ref {ref!r} needs @<handle>/<name>")
        name, version = _split_version(rest)
        return DatasetRef(handle=handle, name=name, version=version)
    if not body:
        raise InvalidRefError(f"dataset ref {ref!r} names nothing; use '@handle/name'")
    name, version = _split_version(body)
    return DatasetRef(name=name, version=version)


def _when(value: str | None) -> datetime:
    return parse_datetime(value) or _EPOCH


def _semver_key(v: str) -> tuple:
    parts = v.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return (1, *map(int, parts))
    return (0, v)


_LAST_BACKEND: "weakref.ReferenceType[AtmosphereBackend] | None" = None


class AtmosphereBackend:
    """Publishing and resolution of datasets on the ATProto atmosphere.

    ``blob_limit`` caps each uploaded shard (keep it at or below your PDS's upload
    limit), ``total_limit`` the bytes uploaded per dataset; ``page_size`` is the
    ``listRecords`` page size (every page is always read).
    """

    def __init__(self, client: AtmosphereClient, *, blob_limit: int = 50_000_000,
                 total_limit: int = 1_000_000_000, page_size: int = 100):
        if not isinstance(client, AtmosphereClient):
            raise AtmosphereUnavailableError(
                f"AtmosphereBackend needs an AtmosphereClient, got {type(client).__name__}; "
                "wrap an atproto.Client with AtmosphereClient.from_client(client)"
            )
        self.client = client
        self.blob_limit = int(blob_limit)
        self.total_limit = int(total_limit)
        self.page_size = int(page_size)
        global _LAST_BACKEND
        _LAST_BACKEND = weakref.ref(self)

    def __repr__(self) -> str:
        return f"AtmosphereBackend({self.client!r})"

    # ------------------------------------------------------------------ helpers
    def _own_did(self, what: str) -> str:
        return self.client._ensure_session(what).did

    def _list(self, did: str, collection: str):
        return self.client.list_records(did, collection, page_size=self.page_size)

    def _did_for(self, handle: str | None, what: str) -> str:
        if handle is None:
            if not self.client.authenticated:
                raise AtmosphereUnavailableError(
                    f"{what} names no account; use '@handle/name', or log in (handle=, password=) "
                    "to mean your own account"
                )
            return self._own_did(what)
        return self.client.resolve_handle(handle)

    def ensure_writable_for(self, handle: str | None) -> None:
        """Check that publishing under ``@handle`` (``None``: the own account) is possible."""
        what = f"publishing to @{handle}" if handle else "publishing to the atmosphere"
        did = self._own_did(what)
        if handle is None:
            return
        own_handle = (self.client.handle or "").lower()
        target = handle.lstrip("@")
        if target.lower() == own_handle or target == did:
            return
        raise AtmosphereUnavailableError(
            f"cannot publish to @{target}: this client is logged in as {self.client.handle or did}; "
            f"log in as {target}, or publish under @{self.client.handle or did}/<name>"
        )

    # ------------------------------------------------------------------ schemas
    def publish_schema(self, local_record: dict) -> str:
        """Publish a local schema record as ``science.alt.dataset.schema``; return its AT URI.

        Reuses the caller's existing record with the same name, version and fields
        (every page is listed); publishes a new record otherwise.
        """
        record = SchemaRecord.from_local(local_record)
        did = self._own_did(f"publishing schema {record.name}@{record.version}")
        existing = self._find_schema(did, record)
        if existing is not None:
            return existing
        return self.client.create_record(NSID_SCHEMA, record.to_record()).uri

    def _find_schema(self, did: str, record: SchemaRecord) -> str | None:
        signature = record.signature()
        for rec in self._list(did, NSID_SCHEMA):
            value = rec.value
            if value.get("name") != record.name or value.get("version") != record.version:
                continue
            try:
                theirs = SchemaRecord.from_record(value, uri=rec.uri)
            except (RecordError, SchemaError):
                continue
            if theirs.signature() == signature:
                return rec.uri
        return None

    def _schema_uri_for(self, schema_record: dict, entry: LocalDatasetEntry | None, did: str) -> str:
        ref = schema_record.get("$ref") or (entry.schema_ref if entry is not None else None)
        if isinstance(ref, str) and ref.startswith("at://"):
            uri = AtUri.parse(ref)
            if uri.authority == did and uri.collection == NSID_SCHEMA and uri.rkey:
                try:
                    self.client.get_record(did, NSID_SCHEMA, uri.rkey)
                    return ref
                except AtmosphereNotFoundError:
                    pass
        return self.publish_schema(schema_record)

    def get_schema(self, ref: str) -> dict:
        """A schema (``at://…`` or ``@handle/Type@version``) as a local-style record with ``$ref`` = its AT URI."""
        if ref.startswith("at://"):
            uri = AtUri.parse(ref)
            if not uri.is_record:
                raise InvalidRefError(f"{ref!r} does not name a schema record")
            try:
                rec = self.client.get_record_uri(ref)
            except AtmosphereNotFoundError:
                raise AtmosphereNotFoundError(f"Schema not found: {ref}") from None
            return SchemaRecord.from_record(rec.value, uri=rec.uri).to_local(rec.uri)
        parsed = parse_dataset_ref(ref)
        if parsed.name is None:
            raise InvalidRefError(f"schema ref {ref!r}: expected at://… or @handle/TypeName@version")
        did = self._did_for(parsed.handle, f"schema ref {ref!r}")
        best: tuple[Any, SchemaRecord, str] | None = None
        for collection in (NSID_SCHEMA, LEGACY_NSID_SCHEMA):
            for rec in self._list(did, collection):
                value = rec.value
                if value.get("name") != parsed.name:
                    continue
                if parsed.version is not None and value.get("version") != parsed.version:
                    continue
                try:
                    schema = SchemaRecord.from_record(value, uri=rec.uri)
                except (RecordError, SchemaError):
                    continue
                key = (_semver_key(schema.version), _when(schema.created_at), rec.rkey)
                if best is None or key > best[0]:
                    best = (key, schema, rec.uri)
            if best is not None:
                break
        if best is None:
            who = parsed.handle or did
            version = f"@{parsed.version}" if parsed.version else ""
            raise AtmosphereNotFoundError(f"Schema not found: {parsed.name}{version} published by {who}")
        return best[1].to_local(best[2])

    # ------------------------------------------------------------------ entries
    def _prepare(self, shards: Iterable[ShardSource], name: str) -> list[ShardSource]:
        """Validate shard sources and measure uploads; raises before anything is published."""
        sources = list(shards)
        if not sources:
            raise AtmosphereError(f"dataset {name!r} has no shards to publish")
        kinds = {("blobs" if s.uploads else s.kind) for s in sources}
        if len(kinds) > 1:
            raise AtmosphereError(
                f"dataset {name!r} mixes shard locations ({', '.join(sorted(kinds))}); an atmosphere entry has "
                "one storage: copy the shards into one store before publishing"
            )
        kind = kinds.pop()
        if kind == "s3":
            places = {(s.bucket, s.endpoint, s.region) for s in sources}
            if len(places) > 1:
                raise AtmosphereError(
                    f"dataset {name!r} has shards in several S3 buckets/endpoints; copy them into one bucket first"
                )
            return sources
        if kind != "blobs":
            return sources
        measured = []
        total = 0
        for s in sources:
            if s.kind == "blob" and s.opener is None:
                s = replace(s, opener=functools.partial(self.open_url, s.url))
            if s.size is not None and s.size > self.blob_limit:
                raise self._too_large(name, s, s.size)
            s = s.measured()
            assert s.size is not None
            if s.size > self.blob_limit:
                raise self._too_large(name, s, s.size)
            total += s.size
            measured.append(s)
        if total > self.total_limit:
            raise BlobTooLargeError(
                f"dataset {name!r} is {total} bytes, over the total_limit of {self.total_limit} bytes for PDS blobs; "
                "publish it from an S3 or HTTP data store, or raise total_limit"
            )
        return measured

    def _too_large(self, name: str, s: ShardSource, size: int) -> BlobTooLargeError:
        return BlobTooLargeError(
            f"shard of dataset {name!r} ({s.url if s.kind != 'file' else 'a local file'}, {size} bytes) is over "
            f"blob_limit={self.blob_limit} bytes; nothing was published. Write smaller shards (maxsize), raise "
            "blob_limit within your PDS's upload limit, or publish from an S3 or HTTP data store"
        )

    @staticmethod
    def _fingerprint(sources: list[ShardSource]) -> tuple:
        """What the storage of these (prepared) sources will look like, to find an identical entry."""
        first = sources[0]
        if first.uploads:
            return ("blobs", tuple(blob_cid(s.sha256 or "") for s in sources))
        if first.kind == "s3":
            return ("s3", first.bucket, first.endpoint or None, tuple((s.key, s.sha256) for s in sources))
        return ("http", tuple((s.url, s.sha256) for s in sources))

    def _storage(self, sources: list[ShardSource], name: str, progress: Callable[[int], None] | None = None):
        first = sources[0]
        if first.kind == "s3":
            return StorageS3(first.bucket or "", tuple(S3Shard(s.key or "", Checksum.sha256(s.sha256)) for s in sources),
                             region=first.region, endpoint=first.endpoint)
        if first.kind == "http":
            return StorageHttp(tuple(HttpShard(s.url, Checksum.sha256(s.sha256)) for s in sources))
        blobs = []
        for s in sources:
            with s.open() as stream:
                up = self.client.upload_blob(stream, TAR_MIME, size=s.size, max_size=self.blob_limit, progress=progress)
            if s.sha256 and up.sha256 != s.sha256.lower():
                raise ChecksumMismatchError(
                    f"shard {s.url if s.kind != 'file' else '(local file)'} of dataset {name!r} changed while "
                    f"publishing (SHA-256 {up.sha256}, expected {s.sha256}); nothing was published"
                )
            blobs.append(BlobShard(up.ref, Checksum.sha256(up.sha256)))
        return StorageBlobs(tuple(blobs))

    @staticmethod
    def _size_for(sources: list[ShardSource], metadata: dict | None) -> DatasetSize:
        stats = (metadata or {}).get("stats")
        stats = stats if isinstance(stats, dict) else {}  # a foreign record: malformed stats are ignored
        total = sum(s.size for s in sources if s.size is not None) if all(s.size is not None for s in sources) else None
        samples = stats.get("num_samples") if isinstance(stats.get("num_samples"), int) else None
        nbytes = stats.get("total_bytes") if isinstance(stats.get("total_bytes"), int) else total
        return DatasetSize(samples=samples, bytes=nbytes, shards=len(sources))

    def publish_entry(self, *, name: str, schema_uri: str, shards: list[ShardSource], description: str | None = None,
                      tags: list[str] | None = None, license: str | None = None, metadata: dict | None = None,
                      size: DatasetSize | dict | None = None) -> str:
        """Publish a dataset entry; return its AT URI.

        Local files are uploaded as blobs first (all of them, checked against
        ``blob_limit``/``total_limit`` before the first upload), then the entry record is
        created. ``s3://`` and ``http(s)://`` shards are referenced where they are.
        """
        self._own_did(f"publishing dataset {name!r}")
        prepared = self._prepare(shards, name)
        return self._publish_prepared(name, schema_uri, prepared, description=description, tags=tags,
                                      license=license, metadata=metadata, size=size)

    def _publish_prepared(self, name: str, schema_uri: str, prepared: list[ShardSource], *, description: str | None,
                          tags: list[str] | None, license: str | None, metadata: dict | None,
                          size: DatasetSize | dict | None, progress: Callable[[int], None] | None = None) -> str:
        storage = self._storage(prepared, name, progress)
        if isinstance(size, dict):
            size = DatasetSize(size.get("samples"), size.get("bytes"), size.get("shards"))
        public_meta = {k: v for k, v in (metadata or {}).items() if k not in _PRIVATE_METADATA}
        record = EntryRecord(
            name=name,
            schema_ref=schema_uri,
            storage=storage,
            description=description,
            tags=list(tags or []),
            license=license,
            size=size or self._size_for(prepared, metadata),
            metadata=public_meta or None,
        )
        return self.client.create_record(NSID_ENTRY, record.to_record()).uri

    def _find_entry(self, did: str, name: str, schema_uri: str, fingerprint: tuple) -> str | None:
        for rec in self._list(did, NSID_ENTRY):
            value = rec.value
            if value.get("name") != name or value.get("schemaRef") != schema_uri:
                continue
            try:
                entry = EntryRecord.from_record(value, uri=rec.uri)
            except RecordError:
                continue
            if entry.storage.fingerprint() == fingerprint:
                return rec.uri
        return None

    # ------------------------------------------------------------------- labels
    def publish_label(self, name: str, dataset_uri: str, version: str | None = None,
                      description: str | None = None) -> str:
        """Publish a label (name, version) pointing at an entry; return its AT URI."""
        self._own_did(f"labelling {name!r}")
        label = DatasetLabel(name=name, dataset_uri=dataset_uri, version=version, description=description)
        return self.client.create_record(NSID_LABEL, label.to_record()).uri

    def _label_with_retry(self, name: str, entry_uri: str, version: str | None, description: str | None) -> str:
        try:
            return self.publish_label(name, entry_uri, version, description)
        except AtmosphereError as first:
            log.warning("label %r for %s failed (%s); retrying once", name, entry_uri, first)
            try:
                return self.publish_label(name, entry_uri, version, description)
            except AtmosphereError as exc:
                raise PartialPublishError(
                    f"dataset {name!r} was published as {entry_uri}, but its label could not be created ({exc}); "
                    "re-run the promotion to finish: it reuses the entry",
                    entry_uri=entry_uri,
                ) from exc

    def _ensure_label(self, did: str, name: str, entry_uri: str, version: str | None, known: str | None,
                      description: str | None) -> str:
        if known:
            try:
                k = AtUri.parse(known)
                if k.authority == did and k.collection == NSID_LABEL and k.rkey:
                    rec = self.client.get_record(did, NSID_LABEL, k.rkey)
                    if rec.value.get("datasetUri") == entry_uri and rec.value.get("name") == name:
                        return known
            except (AtmosphereNotFoundError, InvalidRefError):
                pass
        for rec in self._list(did, NSID_LABEL):
            v = rec.value
            if v.get("name") == name and v.get("datasetUri") == entry_uri and (version is None or v.get("version") == version):
                return rec.uri
        return self._label_with_retry(name, entry_uri, version, description)

    # ---------------------------------------------------------------- promotion
    def promote(self, entry: LocalDatasetEntry, schema_record: dict, *, name: str | None = None,
                description: str | None = None, tags: list[str] | None = None, license: str | None = None,
                shard_sources: list[ShardSource] | None = None, version: str | None = None,
                progress: Callable[[int], None] | None = None) -> PromotionResult:
        """Publish a local entry (schema, entry, label); idempotent.

        ``progress(n)`` is called with the bytes of each chunk of shard data uploaded as a blob.

        Reuses, in order: the record named by ``entry.metadata["atmosphere"]["uri"]`` if
        it still exists in the caller's repository; an existing entry of the caller with
        the same name, schema and shard contents. Otherwise uploads and creates records.
        The caller stores the returned URIs back into the local entry's metadata.
        """
        name = name or entry.name
        did = self._own_did(f"promoting dataset {name!r}")
        prev = (entry.metadata or {}).get("atmosphere") or {}
        prev_uri = prev.get("uri") if isinstance(prev, dict) else None
        if isinstance(prev_uri, str) and prev_uri.startswith("at://"):
            reused = self._reuse(did, prev_uri, name)
            if reused is not None:
                label_uri = self._ensure_label(did, name, prev_uri, version, prev.get("label_uri"), description)
                return PromotionResult(prev_uri, reused.schema_ref, label_uri, reused=True)
        sources = shard_sources if shard_sources is not None else shard_sources_for(entry)
        prepared = self._prepare(sources, name)  # limits checked before anything is written
        schema_uri = self._schema_uri_for(schema_record, entry, did)
        existing = self._find_entry(did, name, schema_uri, self._fingerprint(prepared))
        if existing is not None:
            label_uri = self._ensure_label(did, name, existing, version, None, description)
            return PromotionResult(existing, schema_uri, label_uri, reused=True)
        entry_uri = self._publish_prepared(name, schema_uri, prepared, description=description, tags=tags,
                                           license=license, metadata=entry.metadata, size=None, progress=progress)
        label_uri = self._label_with_retry(name, entry_uri, version, description)
        return PromotionResult(entry_uri, schema_uri, label_uri, reused=False)

    def _reuse(self, did: str, uri: str, name: str) -> EntryRecord | None:
        try:
            parsed = AtUri.parse(uri)
        except InvalidRefError:
            return None
        if parsed.authority != did or parsed.collection != NSID_ENTRY or not parsed.rkey:
            return None
        try:
            rec = self.client.get_record(did, NSID_ENTRY, parsed.rkey)
            entry = EntryRecord.from_record(rec.value, uri=uri)
        except (AtmosphereNotFoundError, RecordError):
            return None
        return entry if entry.name == name else None

    # --------------------------------------------------------------- resolution
    def _latest_label(self, did: str, name: str, version: str | None) -> tuple[str, str] | None:
        best: tuple[Any, str, str] | None = None
        for rec in self._list(did, NSID_LABEL):
            v = rec.value
            if v.get("name") != name or (version is not None and v.get("version") != version):
                continue
            try:
                label = DatasetLabel.from_record(v, uri=rec.uri)
            except RecordError:
                continue
            key = (_when(label.created_at), rec.rkey)
            if best is None or key > best[0]:
                best = (key, label.dataset_uri, rec.uri)
        return (best[1], best[2]) if best else None

    def _latest_entry_named(self, did: str, name: str) -> str | None:
        best: tuple[Any, str] | None = None
        for collection in (NSID_ENTRY, LEGACY_NSID_ENTRY):
            for rec in self._list(did, collection):
                if rec.value.get("name") != name:
                    continue
                key = (_when(rec.value.get("createdAt")), rec.rkey)
                if best is None or key > best[0]:
                    best = (key, rec.uri)
        return best[1] if best else None

    def resolve(self, ref: str) -> ResolvedDataset:
        """Resolve ``@handle/name[@version]``, ``@name`` (own account) or an ``at://`` URI to an entry.

        Labels are read from every page; the newest ``createdAt`` among those with the
        name (and version) wins; without a label the newest entry of that name is used.
        Missing -> :class:`AtmosphereNotFoundError` (a ``KeyError``).
        """
        parsed = parse_dataset_ref(ref)
        label_uri: str | None = None
        uri: str | None
        handle = parsed.handle
        if parsed.uri is not None:
            did = self.client.resolve_handle(parsed.uri.authority)
            if not parsed.uri.is_record:
                raise InvalidRefError(f"{ref!r} does not name a record; expected at://<did>/{NSID_ENTRY}/<rkey>")
            uri = f"at://{did}/{parsed.uri.collection}/{parsed.uri.rkey}"
            if parsed.uri.collection == NSID_LABEL:
                try:
                    label = DatasetLabel.from_record(self.client.get_record_uri(uri).value, uri=uri)
                except AtmosphereNotFoundError:
                    raise AtmosphereNotFoundError(f"label {uri} not found") from None
                label_uri, uri = uri, label.dataset_uri
        else:
            assert parsed.name is not None
            did = self._did_for(handle, f"dataset ref {ref!r}")
            found = self._latest_label(did, parsed.name, parsed.version)
            if found is not None:
                uri, label_uri = found
            else:
                uri = self._latest_entry_named(did, parsed.name) if parsed.version is None else None
                if uri is None:
                    version = f" version {parsed.version!r}" if parsed.version else ""
                    raise AtmosphereNotFoundError(
                        f"no dataset {parsed.name!r}{version} published by {handle or did}: no label or entry with "
                        f"that name in {did}'s repository; check the name (and handle) or publish it first"
                    )
        try:
            rec = self.client.get_record_uri(uri)
        except AtmosphereNotFoundError:
            raise AtmosphereNotFoundError(
                f"dataset entry {uri} not found" + (f" (label {label_uri} points at it)" if label_uri else "")
            ) from None
        entry = EntryRecord.from_record(rec.value, uri=rec.uri)
        return self._to_entry(AtUri.parse(rec.uri).authority, rec.uri, rec.cid, entry, label_uri, handle)

    def _to_entry(self, did: str, uri: str, cid: str | None, entry: EntryRecord, label_uri: str | None,
                  handle: str | None = None) -> ResolvedDataset:
        storage = entry.storage
        data_urls = storage.data_urls(did)
        metadata = dict(entry.metadata or {})
        checksums = storage.checksums(did)
        if checksums:
            metadata["checksums"] = checksums
        info: dict[str, Any] = {"uri": uri, "cid": cid, "did": did, "schema_uri": entry.schema_ref,
                                "label_uri": label_uri, "storage": storage.kind, "created_at": entry.created_at or None}
        if handle and not handle.startswith("did:"):
            info["handle"] = handle
        if isinstance(storage, StorageS3):
            info.update({"bucket": storage.bucket, "endpoint": storage.endpoint, "region": storage.region})
        for key, value in (("description", entry.description), ("tags", entry.tags or None),
                           ("license", entry.license), ("size", entry.size.to_record() if entry.size else None)):
            if value:
                info[key] = value
        metadata["atmosphere"] = info
        return ResolvedDataset(name=entry.name, schema_ref=entry.schema_ref, data_urls=data_urls, metadata=metadata,
                               created_at=entry.created_at or None, uri=uri, did=did, label_uri=label_uri,
                               record=entry)

    def list_datasets(self) -> list[ResolvedDataset]:
        """Every dataset entry of the logged-in account (anonymous: :class:`AtmosphereUnavailableError`)."""
        did = self._own_did("listing your atmosphere datasets")
        out = []
        for rec in self._list(did, NSID_ENTRY):
            try:
                entry = EntryRecord.from_record(rec.value, uri=rec.uri)
            except RecordError as exc:
                log.warning("skipping malformed dataset entry: %s", exc)
                continue
            out.append(self._to_entry(did, rec.uri, rec.cid, entry, None, self.client.handle))
        return out

    # ---------------------------------------------------------------- reading
    def open_url(self, url: str) -> BinaryIO:
        """Stream a shard stored as a PDS blob (``at://<did>/blob/<cid>``)."""
        did, cid = parse_blob_url(url)
        return self.client.get_blob(did, cid)

    def blob_opener(self) -> "AtBlobOpener":
        """A picklable opener for ``at://`` blob URLs on this backend's service (anonymous reads)."""
        return AtBlobOpener.for_client(self.client)


class AtBlobOpener:
    """Opens ``at://<did>/blob/<cid>`` shard URLs (``com.atproto.sync.getBlob``, which needs no login).

    A :class:`~atdata_dagster.shards.reader.ShardOpener` that pickles as its settings
    (service URL, PLC directory, timeout, :class:`ReadLimits`): in the process that made
    it, it reuses the live client it was built from; after unpickling it reads
    anonymously with a new client. Blob reads are size-bounded by the limits.
    """

    def __init__(self, service_url: str, *, plc_url: str, timeout: float = 30.0, limits: ReadLimits | None = None,
                 client: AtmosphereClient | None = None):
        self.service_url = service_url
        self.plc_url = plc_url
        self.timeout = timeout
        self.limits = limits if limits is not None else ReadLimits()
        self._client = client

    @classmethod
    def for_client(cls, client: AtmosphereClient) -> "AtBlobOpener":
        return cls(client.service_url, plc_url=client.plc_url, timeout=client.timeout, limits=client.limits,
                   client=client)

    def _reader(self) -> AtmosphereClient:
        if self._client is None:
            self._client = AtmosphereClient(self.service_url, plc_url=self.plc_url, timeout=self.timeout,
                                            limits=self.limits)
        return self._client

    def open(self, url: str) -> BinaryIO:
        did, cid = parse_blob_url(url)
        return self._reader().get_blob(did, cid)

    __call__ = open

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None  # a live session never crosses a process boundary
        return state

    def __repr__(self) -> str:
        return f"AtBlobOpener({self.service_url!r})"


def open_at_url(url: str) -> BinaryIO:
    """Opener for ``at://`` blob URLs outside an Index: the last backend created, else an anonymous one."""
    backend = _LAST_BACKEND() if _LAST_BACKEND is not None else None
    if backend is None:
        backend = AtmosphereBackend(AtmosphereClient())
    return backend.open_url(url)
