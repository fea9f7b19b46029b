"""Typed builders and parsers for the ATProto dataset records (``science.alt.dataset.*``).

Our own dataclasses for the schema, entry and label records that atdata publishes
(compat reference, section 7.2), written from the documented shapes. Readers also
accept the older ``ac.foundation.dataset.{schema,record}`` namespace. A record with an
unexpected ``$type`` or shape raises :class:`RecordError` naming its URI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

import msgpack

from ..errors import DecodeError, InvalidRefError, RecordError, SchemaError
from ..samples.codec import unpack_payload
from ..samples.schema import is_safe_identifier

__all__ = [
    "NSID_SCHEMA",
    "NSID_ENTRY",
    "NSID_LABEL",
    "LEGACY_NSID_SCHEMA",
    "LEGACY_NSID_ENTRY",
    "NDARRAY_REF",
    "AtUri",
    "Checksum",
    "BlobRef",
    "HttpShard",
    "S3Shard",
    "BlobShard",
    "StorageHttp",
    "StorageS3",
    "StorageBlobs",
    "StorageExternal",
    "Storage",
    "DatasetSize",
    "SchemaRecord",
    "EntryRecord",
    "DatasetLabel",
    "blob_cid",
    "blob_url",
    "parse_blob_url",
    "encode_metadata",
    "decode_metadata",
    "local_fields",
    "now_iso",
    "parse_datetime",
]

NS = "science.alt.dataset"
NSID_SCHEMA = f"{NS}.schema"
NSID_ENTRY = f"{NS}.entry"
NSID_LABEL = f"{NS}.label"
LEGACY_NS = "ac.foundation.dataset"
LEGACY_NSID_SCHEMA = f"{LEGACY_NS}.schema"
LEGACY_NSID_ENTRY = f"{LEGACY_NS}.record"

STORAGE_HTTP = f"{NS}.storageHttp"
STORAGE_S3 = f"{NS}.storageS3"
STORAGE_BLOBS = f"{NS}.storageBlobs"
STORAGE_EXTERNAL = f"{NS}.storageExternal"

JSON_SCHEMA_FORMAT = f"{NSID_SCHEMA}#jsonSchemaFormat"
JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
NDARRAY_REF = "https://alt.science/schemas/atdata-ndarray-bytes/1.0.0#/$defs/ndarray"
NDARRAY_FORMAT_VERSION = "1.0.0"
ATDATA_SCHEMA_VERSION = 1
TAR_MIME = "application/x-tar"

# Known keys of the structured entry metadata object (snake_case on our side).
_META_KNOWN = {
    "source_uri": "sourceUri",
    "created_by": "createdBy",
    "version": "version",
    "processing_steps": "processingSteps",
    "split": "split",
}
_META_KNOWN_BACK: dict[str, str] = {v: k for k, v in _META_KNOWN.items()}
# The JSON number range every ATProto implementation round-trips exactly (JS numbers).
_SAFE_INT = 2**53 - 1

_PRIMITIVE_TO_JSON = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_JSON_TO_PRIMITIVE = {v: k for k, v in _PRIMITIVE_TO_JSON.items()}
_BYTES_JSON = {"type": "string", "format": "byte", "contentEncoding": "base64"}
# Kinds whose values are opaque bytes on the wire (0.7-only binary array formats).
_BINARY_KINDS = frozenset({"sparse", "arrow_tensor", "safetensors", "dataframe"})
_NDARRAY_KINDS = frozenset({"ndarray", "structured"})
_MAX_DEPTH = 16


def now_iso() -> str:
    """A ``createdAt`` timestamp as atdata writes it (ISO 8601, ``+00:00``)."""
    return datetime.now(timezone.utc).isoformat()


def parse_datetime(value: Any) -> datetime | None:
    """Parse an ATProto datetime (``Z`` or offset); ``None`` when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.11 accepts at most 6 fractional digits; other writers may send more.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _str_field(value: dict, key: str, default: str = "") -> str:
    """``value[key]`` if it is a str, else ``default`` (records from a PDS are untrusted)."""
    item = value.get(key)
    return item if isinstance(item, str) else default


def _where(uri: str | None) -> str:
    return f"record {uri}" if uri else "record"


def _type_of(value: Any) -> str | None:
    return value.get("$type") if isinstance(value, dict) else None


# --------------------------------------------------------------------------- AT URIs


_AT_URI_RE = re.compile(r"^at://(?P<authority>[^/?#\s]+)(?:/(?P<collection>[^/?#\s]+)(?:/(?P<rkey>[^/?#\s]+))?)?/?$")


@dataclass(frozen=True)
class AtUri:
    """``at://<authority>/<collection>/<rkey>`` (authority: a DID or a handle)."""

    authority: str
    collection: str | None = None
    rkey: str | None = None

    @classmethod
    def parse(cls, uri: str) -> "AtUri":
        m = _AT_URI_RE.match(uri or "") if isinstance(uri, str) else None
        if not m:
            raise InvalidRefError(f"malformed AT URI {uri!r}; expected at://<did or handle>/<collection>/<rkey>")
        return cls(m.group("authority"), m.group("collection"), m.group("rkey"))

    @property
    def is_record(self) -> bool:
        return bool(self.collection and self.rkey)

    def __str__(self) -> str:
        parts = [self.authority] + [p for p in (self.collection, self.rkey) if p]
        return "at://" + "/".join(parts)


# --------------------------------------------------------------------------- blobs


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def blob_cid(sha256_hex: str) -> str:
    """The CID an ATProto PDS gives a blob with this SHA-256 (CIDv1, raw codec, ``bafkrei…``)."""
    digest = bytes.fromhex(sha256_hex)
    if len(digest) != 32:
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return "b" + _b32(bytes([0x01, 0x55, 0x12, 0x20]) + digest)


def blob_url(did: str, cid: str) -> str:
    """The pseudo-URL of a PDS blob as stored in entries: ``at://<did>/blob/<cid>``."""
    return f"at://{did}/blob/{cid}"


def parse_blob_url(url: str) -> tuple[str, str]:
    """``at://<did>/blob/<cid>`` -> ``(did, cid)``; :class:`InvalidRefError` otherwise."""
    try:
        uri = AtUri.parse(url)
    except InvalidRefError:
        uri = None
    if uri is None or uri.collection != "blob" or not uri.rkey or not uri.authority.startswith("did:"):
        raise InvalidRefError(f"{url!r} is not a blob URL; expected at://<did>/blob/<cid>")
    return uri.authority, uri.rkey


# --------------------------------------------------------------------------- schema records


def _norm_kind(field_type: dict, where: str) -> str:
    t = field_type.get("$type")
    if isinstance(t, str) and "#" in t:
        return t.rpartition("#")[2]
    if isinstance(field_type.get("kind"), str):
        return field_type["kind"]
    if isinstance(t, str) and t:
        return t.rpartition(".")[2]
    raise SchemaError(f"{where}: fieldType {field_type!r:.80} has no $type/kind")


def _local_field_type(field_type: Any, where: str, depth: int = 0) -> dict:
    """A fieldType of any namespace (local#, ac.foundation.dataset.schemaType#) in local form."""
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{where}: list fields nested more than {_MAX_DEPTH} deep")
    if not isinstance(field_type, dict):
        raise SchemaError(f"{where}: fieldType {field_type!r:.80} is not an object")
    kind = _norm_kind(field_type, where)
    out: dict[str, Any] = {"$type": f"local#{kind}"}
    for key, value in field_type.items():
        if key in ("$type", "kind"):
            continue
        out[key] = _local_field_type(value, where, depth + 1) if key == "items" else value
    return out


def local_fields(fields: Any, where: str = "schema") -> list[dict]:
    """Validate a local-style ``fields`` list and normalise every fieldType to ``local#<kind>``."""
    if not isinstance(fields, list) or not fields:
        raise SchemaError(f"{where}: 'fields' must be a non-empty list of field objects")
    out = []
    seen: set[str] = set()
    for f in fields:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise SchemaError(f"{where}: field entry {f!r:.80} needs a string 'name'")
        if not is_safe_identifier(f["name"]):
            raise SchemaError(
                f"{where}: invalid field name {f['name']!r:.80}: field names must be Python identifiers "
                "that are not keywords"
            )
        if f["name"] in seen:
            raise SchemaError(f"{where}: duplicate field name {f['name']!r}")
        seen.add(f["name"])
        optional = f.get("optional", False)
        if not isinstance(optional, bool):
            raise SchemaError(f"{where}: field {f['name']!r} has a non-boolean 'optional'")
        item = {"name": f["name"], "fieldType": _local_field_type(f.get("fieldType"), f"{where} field {f['name']!r}"),
                "optional": optional}
        for key, value in f.items():  # e.g. a per-field description
            if key not in item:
                item[key] = value
        out.append(item)
    return out


def _json_property(field_type: dict, where: str) -> tuple[dict, bool]:
    """(JSON-Schema property, uses ndarray bytes) for a local fieldType."""
    kind = _norm_kind(field_type, where)
    if kind == "primitive":
        prim = field_type.get("primitive")
        if prim == "bytes":
            return dict(_BYTES_JSON), False
        if prim in _PRIMITIVE_TO_JSON:
            return {"type": _PRIMITIVE_TO_JSON[prim]}, False
        raise SchemaError(f"{where}: unknown primitive {prim!r:.40}; expected str, int, float, bool or bytes")
    if kind in _NDARRAY_KINDS:
        return {"$ref": NDARRAY_REF}, True
    if kind in _BINARY_KINDS:
        return dict(_BYTES_JSON), False
    if kind == "array":
        items, nd = _json_property(field_type.get("items") or {}, where)
        return {"type": "array", "items": items}, nd
    if kind == "ref":
        raise SchemaError(f"{where}: 'ref' fields cannot be published; inline the referenced type's fields")
    raise SchemaError(f"{where}: unknown field kind {kind!r:.40}")


def _field_type_from_json(prop: Any, where: str, depth: int = 0) -> dict:
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{where}: arrays nested more than {_MAX_DEPTH} deep")
    if not isinstance(prop, dict):
        raise SchemaError(f"{where}: property {prop!r:.80} is not an object")
    ref = prop.get("$ref")
    if isinstance(ref, str):
        if "ndarray" in ref:
            # JSON Schema does not carry the dtype; atdata reads such fields as float32 names.
            return {"$type": "local#ndarray", "dtype": "float32"}
        raise SchemaError(f"{where}: unsupported $ref {ref!r:.100}")
    jtype = prop.get("type")
    if isinstance(jtype, list):
        rest = [t for t in jtype if t != "null"]
        if len(rest) != 1:
            raise SchemaError(f"{where}: multi-type property {jtype!r:.80}")
        jtype = rest[0]
    if jtype == "string" and (prop.get("format") == "byte" or "contentEncoding" in prop):
        return {"$type": "local#primitive", "primitive": "bytes"}
    if isinstance(jtype, str) and jtype in _JSON_TO_PRIMITIVE:
        return {"$type": "local#primitive", "primitive": _JSON_TO_PRIMITIVE[jtype]}
    if jtype == "array":
        return {"$type": "local#array", "items": _field_type_from_json(prop.get("items"), where, depth + 1)}
    raise SchemaError(f"{where}: unsupported JSON-Schema type {jtype!r:.80}")


def _fields_signature(fields: list[dict]) -> str:
    slim = [{"name": f["name"], "fieldType": f["fieldType"], "optional": bool(f.get("optional"))} for f in fields]
    return hashlib.sha256(json.dumps(slim, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class SchemaRecord:
    """A ``science.alt.dataset.schema`` record.

    ``fields`` is the local-style field list (what :func:`type_from_record` decodes);
    ``properties``/``required`` the JSON-Schema body that is published. The record's
    ``metadata.localFields`` carries the local field list as well, because JSON Schema
    loses ndarray dtypes and a PDS returns object keys in canonical (not declaration)
    order; readers use it only when it agrees with ``properties``/``required``.
    """

    name: str
    version: str
    fields: list[dict]
    properties: dict[str, dict]
    required: list[str]
    created_at: str
    description: str | None = None
    array_format_versions: dict[str, str] = field(default_factory=dict)
    atdata_schema_version: int = ATDATA_SCHEMA_VERSION
    metadata: dict | None = None  # record metadata other than our localFields hint
    legacy: bool = False  # read from ac.foundation.dataset.schema

    # -- building ----------------------------------------------------------
    @classmethod
    def from_local(cls, record: dict, *, created_at: str | None = None) -> "SchemaRecord":
        """Build from a local schema record (``{"name","version","fields",...}``)."""
        if not isinstance(record, dict):
            raise SchemaError(f"a local schema record must be a dict, got {type(record).__name__}")
        name, version = record.get("name"), record.get("version")
        if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
            raise SchemaError(f"local schema record needs string 'name' and 'version', got {name!r:.40}/{version!r:.40}")
        where = f"schema {name}@{version}"
        if "fields" not in record and isinstance(record.get("schema"), dict):
            # already an atmosphere-style record (e.g. from get_schema): reuse its fields
            fields = cls.from_record(record).fields
        else:
            fields = local_fields(record.get("fields"), where)
        properties: dict[str, dict] = {}
        required: list[str] = []
        uses_ndarray = False
        for f in fields:
            prop, nd = _json_property(f["fieldType"], f"{where} field {f['name']!r}")
            properties[f["name"]] = prop
            uses_ndarray = uses_ndarray or nd
            if not f["optional"]:
                required.append(f["name"])
        description = record.get("description")
        return cls(
            name=name,
            version=version,
            fields=fields,
            properties=properties,
            required=required,
            created_at=created_at or now_iso(),
            description=description if isinstance(description, str) else None,
            array_format_versions={"ndarrayBytes": NDARRAY_FORMAT_VERSION} if uses_ndarray else {},
        )

    def to_record(self) -> dict:
        """The record value to publish (``science.alt.dataset.schema``)."""
        body: dict[str, Any] = {
            "$type": JSON_SCHEMA_FORMAT,
            "$schema": JSON_SCHEMA_DRAFT,
            "type": "object",
            "properties": self.properties,
        }
        if self.required:
            body["required"] = list(self.required)
        if self.array_format_versions:
            body["arrayFormatVersions"] = dict(self.array_format_versions)
        out: dict[str, Any] = {
            "$type": NSID_SCHEMA,
            "name": self.name,
            "version": self.version,
            "schemaType": "jsonSchema",
            "schema": body,
            "createdAt": self.created_at,
            "atdataSchemaVersion": self.atdata_schema_version,
        }
        if self.description is not None:
            out["description"] = self.description
        meta = dict(self.metadata or {})
        meta["localFields"] = self.fields
        out["metadata"] = meta
        return out

    # -- reading -----------------------------------------------------------
    @classmethod
    def from_record(cls, value: Any, *, uri: str | None = None) -> "SchemaRecord":
        """Parse a schema record value (either namespace); :class:`RecordError` if it is not one."""
        where = _where(uri)
        rtype = _type_of(value)
        if rtype not in (NSID_SCHEMA, LEGACY_NSID_SCHEMA, None) or not isinstance(value, dict):
            raise RecordError(
                f"{where} has $type {rtype!r}, expected {NSID_SCHEMA!r} (or legacy {LEGACY_NSID_SCHEMA!r})"
            )
        name, version = value.get("name"), value.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            raise RecordError(f"{where} is not a schema record: it lacks string 'name' and 'version'")
        sv = value.get("atdataSchemaVersion", value.get("$atdataSchemaVersion", ATDATA_SCHEMA_VERSION))
        if not isinstance(sv, int) or isinstance(sv, bool) or sv > ATDATA_SCHEMA_VERSION:
            raise SchemaError(
                f"{where} ({name}@{version}) has atdataSchemaVersion={sv!r:.20}; this version of "
                "atdata_dagster reads schema format 1 only: upgrade atdata_dagster"
            )
        description = value.get("description") if isinstance(value.get("description"), str) else None
        created_at = _str_field(value, "createdAt")
        metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else None
        try:
            if isinstance(value.get("fields"), list):  # 0.3.x: local-style fields
                fields = local_fields(value["fields"], f"{where} ({name}@{version})")
                rebuilt = cls.from_local({"name": name, "version": version, "fields": fields})
                return cls(name, version, fields, rebuilt.properties, rebuilt.required, created_at,
                           description, rebuilt.array_format_versions, sv, metadata,
                           legacy=rtype == LEGACY_NSID_SCHEMA or rtype is None)
            body = value.get("schema")
            if isinstance(body, dict) and isinstance(body.get("schemaBody"), dict):
                body = body["schemaBody"]
            if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
                raise RecordError(
                    f"{where} ({name}@{version}) has neither a 'fields' list nor a JSON-Schema "
                    "'schema' object with 'properties'"
                )
            properties = body["properties"]
            required = body.get("required", [])
            if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
                raise RecordError(f"{where} ({name}@{version}): 'required' must be a list of names")
            derived = cls._fields_from_json(properties, required, f"{where} ({name}@{version})")
            fields = derived
            hint = (metadata or {}).get("localFields")
            if hint is not None:
                try:
                    hinted = local_fields(hint, where)
                except SchemaError:
                    hinted = None
                if hinted is not None and cls._agrees(hinted, properties, required, where):
                    fields = hinted
            meta_rest = {k: v for k, v in (metadata or {}).items() if k != "localFields"} or None
            afv = body.get("arrayFormatVersions")
            return cls(name, version, fields, dict(properties), list(required), created_at, description,
                       dict(afv) if isinstance(afv, dict) else {}, sv, meta_rest, legacy=rtype != NSID_SCHEMA)
        except SchemaError as exc:
            if isinstance(exc, RecordError):
                raise
            raise RecordError(f"{exc} (in {where})") from exc

    @staticmethod
    def _fields_from_json(properties: dict, required: list[str], where: str) -> list[dict]:
        # A PDS hands keys back in canonical CBOR order, so declaration order is lost:
        # required fields first (in 'required' order), then optional ones.
        order = [r for r in required if r in properties] + [p for p in properties if p not in required]
        fields = []
        for pname in order:
            if not is_safe_identifier(pname):
                raise SchemaError(
                    f"{where}: invalid property name {pname!r:.80}: field names must be Python identifiers "
                    "that are not keywords"
                )
            prop = properties[pname]
            nullable = isinstance(prop, dict) and isinstance(prop.get("type"), list) and "null" in prop["type"]
            fields.append({
                "name": pname,
                "fieldType": _field_type_from_json(prop, f"{where} property {pname!r}"),
                "optional": nullable or pname not in required,
            })
        if not fields:
            raise SchemaError(f"{where}: the JSON schema has no properties")
        return fields

    @staticmethod
    def _agrees(fields: list[dict], properties: dict, required: list[str], where: str) -> bool:
        if {f["name"] for f in fields} != set(properties):
            return False
        if {f["name"] for f in fields if not f["optional"]} != set(required):
            return False
        for f in fields:  # the hint must describe the same wire type as the property
            try:
                prop, _ = _json_property(f["fieldType"], where)
            except SchemaError:
                return False
            if _field_type_from_json(prop, where) != _field_type_from_json(properties[f["name"]], where):
                return False
        return True

    # -- conversions ---------------------------------------------------------
    def signature(self) -> str:
        """SHA-256 over the fields (names, types, optional, order); used for dedup."""
        return _fields_signature(self.fields)

    def to_local(self, uri: str | None = None) -> dict:
        """A local-style record (``type_from_record`` decodes it), ``$ref`` = the AT URI."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "fields": [dict(f) for f in self.fields],
            "description": self.description,
            "createdAt": self.created_at or None,
        }
        if uri:
            out["$ref"] = uri
        return out


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Checksum:
    """A shard checksum; atdata writes ``{"algorithm":"none","digest":""}`` when unknown."""

    algorithm: str = "none"
    digest: str = ""

    @classmethod
    def sha256(cls, digest: str | None) -> "Checksum":
        return cls("sha256", digest.lower()) if digest else cls()

    @classmethod
    def from_record(cls, value: Any) -> "Checksum | None":
        if not isinstance(value, dict):
            return None
        algo, digest = value.get("algorithm"), value.get("digest")
        return cls(str(algo or "none"), str(digest or ""))

    def to_record(self) -> dict:
        return {"algorithm": self.algorithm, "digest": self.digest}

    @property
    def sha256_hex(self) -> str | None:
        """The digest if this is a usable SHA-256 checksum."""
        ok = self.algorithm.lower().replace("-", "") == "sha256" and re.fullmatch(r"[0-9a-fA-F]{64}", self.digest or "")
        return self.digest.lower() if ok else None


@dataclass(frozen=True)
class BlobRef:
    """A reference to a blob in the author's PDS."""

    cid: str
    mime_type: str = TAR_MIME
    size: int = 0

    def to_record(self) -> dict:
        return {"$type": "blob", "ref": {"$link": self.cid}, "mimeType": self.mime_type, "size": self.size}

    @classmethod
    def from_record(cls, value: Any, where: str = "record") -> "BlobRef":
        if isinstance(value, dict):
            ref = value.get("ref")
            cid = ref.get("$link") if isinstance(ref, dict) else (ref if isinstance(ref, str) else value.get("cid"))
            if isinstance(cid, str) and cid:
                size = value.get("size")
                return cls(cid, str(value.get("mimeType") or TAR_MIME), size if isinstance(size, int) else 0)
        raise RecordError(f"{where}: {value!r:.120} is not a blob reference ({{'$type':'blob','ref':{{'$link':cid}}}})")


@dataclass(frozen=True)
class HttpShard:
    url: str
    checksum: Checksum = Checksum()


@dataclass(frozen=True)
class S3Shard:
    key: str
    checksum: Checksum = Checksum()


@dataclass(frozen=True)
class BlobShard:
    blob: BlobRef
    checksum: Checksum | None = None


def _checksums_for(urls: list[str], checks: list[Checksum | None]) -> dict[str, str]:
    return {u: c.sha256_hex for u, c in zip(urls, checks) if c is not None and c.sha256_hex}


@dataclass(frozen=True)
class StorageHttp:
    """Shards at public http(s) URLs."""

    shards: tuple[HttpShard, ...]
    kind = "http"

    def to_record(self) -> dict:
        return {"$type": STORAGE_HTTP,
                "shards": [{"url": s.url, "checksum": s.checksum.to_record()} for s in self.shards]}

    def data_urls(self, did: str | None = None) -> list[str]:
        return [s.url for s in self.shards]

    def checksums(self, did: str | None = None) -> dict[str, str]:
        return _checksums_for(self.data_urls(), [s.checksum for s in self.shards])

    def fingerprint(self) -> tuple:
        return ("http", tuple((s.url, s.checksum.sha256_hex) for s in self.shards))


@dataclass(frozen=True)
class StorageS3:
    """Shards in an S3 bucket (``endpoint`` for S3-compatible servers)."""

    bucket: str
    shards: tuple[S3Shard, ...]
    region: str | None = None
    endpoint: str | None = None
    kind = "s3"

    def to_record(self) -> dict:
        out: dict[str, Any] = {"$type": STORAGE_S3, "bucket": self.bucket}
        if self.region:
            out["region"] = self.region
        if self.endpoint:
            out["endpoint"] = self.endpoint
        out["shards"] = [{"key": s.key, "checksum": s.checksum.to_record()} for s in self.shards]
        return out

    def data_urls(self, did: str | None = None) -> list[str]:
        return [f"s3://{self.bucket}/{s.key}" for s in self.shards]

    def checksums(self, did: str | None = None) -> dict[str, str]:
        return _checksums_for(self.data_urls(), [s.checksum for s in self.shards])

    def fingerprint(self) -> tuple:
        return ("s3", self.bucket, self.endpoint or None, tuple((s.key, s.checksum.sha256_hex) for s in self.shards))


@dataclass(frozen=True)
class StorageBlobs:
    """Shards stored as blobs in the author's PDS; URLs are ``at://<did>/blob/<cid>``."""

    blobs: tuple[BlobShard, ...]
    kind = "blobs"

    def to_record(self) -> dict:
        items = []
        for b in self.blobs:
            item: dict[str, Any] = {"blob": b.blob.to_record()}
            if b.checksum is not None:
                item["checksum"] = b.checksum.to_record()
            items.append(item)
        return {"$type": STORAGE_BLOBS, "blobs": items}

    def data_urls(self, did: str | None = None) -> list[str]:
        if not did:
            raise ValueError("blob URLs need the DID of the record's repository")
        return [blob_url(did, b.blob.cid) for b in self.blobs]

    def checksums(self, did: str | None = None) -> dict[str, str]:
        return _checksums_for(self.data_urls(did), [b.checksum for b in self.blobs])

    def fingerprint(self) -> tuple:
        return ("blobs", tuple(b.blob.cid for b in self.blobs))


@dataclass(frozen=True)
class StorageExternal:
    """Legacy (0.3.x) storage: plain URLs, possibly brace patterns. Read-only in practice."""

    urls: tuple[str, ...]
    kind = "external"

    def to_record(self) -> dict:
        return {"$type": STORAGE_EXTERNAL, "urls": list(self.urls)}

    def data_urls(self, did: str | None = None) -> list[str]:
        return list(self.urls)

    def checksums(self, did: str | None = None) -> dict[str, str]:
        return {}

    def fingerprint(self) -> tuple:
        return ("external", tuple(self.urls))


Storage = Union[StorageHttp, StorageS3, StorageBlobs, StorageExternal]


def _storage_kind(rtype: Any) -> str | None:
    """``science.alt.dataset.storageS3`` / ``ac.foundation.dataset.storageBlobs`` / ``…#storageHttp`` -> suffix."""
    if not isinstance(rtype, str):
        return None
    for prefix in (f"{NS}.", f"{LEGACY_NS}.", f"{NSID_ENTRY}#", f"{LEGACY_NSID_ENTRY}#"):
        if rtype.startswith(prefix):
            return rtype[len(prefix):]
    return None


_REMOTE_SCHEMES = {"storageHttp": ("http://", "https://"), "storageExternal": ("http://", "https://", "s3://")}


def _remote_url(url: Any, kind: str, where: str) -> str:
    """A shard URL from a record, refused unless its scheme is remote: a record from a PDS
    must never make the reader open a local path, a ``file://`` URL or a device."""
    allowed = _REMOTE_SCHEMES[kind]
    if not isinstance(url, str) or not url.lower().startswith(allowed):
        raise RecordError(
            f"{where}: {kind} shard URL {url!r:.120} is not an {'/'.join(a[:-3] for a in allowed)} URL; "
            "records may only reference remote shards (local paths and file:// are refused)"
        )
    return url


def _storage_from_record(value: Any, where: str) -> Storage:
    kind = _storage_kind(_type_of(value))
    try:
        if kind == "storageHttp":
            return StorageHttp(tuple(HttpShard(_remote_url(s["url"], kind, where),
                                               Checksum.from_record(s.get("checksum")) or Checksum())
                                     for s in value["shards"]))
        if kind == "storageS3":
            return StorageS3(str(value["bucket"]),
                             tuple(S3Shard(str(s["key"]), Checksum.from_record(s.get("checksum")) or Checksum())
                                   for s in value["shards"]),
                             region=value.get("region") or None, endpoint=value.get("endpoint") or None)
        if kind == "storageBlobs":
            blobs = []
            for item in value["blobs"]:
                if isinstance(item, dict) and "blob" in item:
                    blobs.append(BlobShard(BlobRef.from_record(item["blob"], where), Checksum.from_record(item.get("checksum"))))
                else:  # 0.3.x: a bare blob ref per shard
                    blobs.append(BlobShard(BlobRef.from_record(item, where)))
            return StorageBlobs(tuple(blobs))
        if kind == "storageExternal":
            return StorageExternal(tuple(_remote_url(u, kind, where) for u in value["urls"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"{where}: malformed {kind} storage ({exc.__class__.__name__}: {exc})") from None
    raise RecordError(
        f"{where}: storage has $type {_type_of(value)!r}, expected one of {STORAGE_HTTP}, {STORAGE_S3}, "
        f"{STORAGE_BLOBS} or {STORAGE_EXTERNAL}"
    )


# --------------------------------------------------------------------------- metadata


def _atproto_safe(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` survives the ATProto data model as JSON (no floats, no '$' keys)."""
    if depth > 32:
        return False
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -_SAFE_INT <= value <= _SAFE_INT
    if isinstance(value, (list, tuple)):
        return all(_atproto_safe(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and not k.startswith("$") and _atproto_safe(v, depth + 1) for k, v in value.items())
    return False


def encode_metadata(metadata: dict) -> dict:
    """Entry metadata as published.

    The structured object 0.7 writes (known keys camelCased, the rest under
    ``custom``) when every value fits the ATProto data model; otherwise (floats,
    bytes, huge ints) ``{"$bytes": base64(msgpack(metadata))}``, which readers accept
    too and which keeps every value exactly.
    """
    out: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in _META_KNOWN:
            out[_META_KNOWN[key]] = value
        elif key in _META_KNOWN_BACK:
            out[key] = value
        elif key == "custom" and isinstance(value, dict):
            custom.update(value)
        else:
            custom[key] = value
    if custom:
        out["custom"] = custom
    if _atproto_safe(out):
        return out
    try:
        packed = msgpack.packb(metadata, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int beyond 64 bits
        raise RecordError(f"entry metadata cannot be encoded (msgpack: {exc}); use str/int/float/bool/list/dict values") from exc
    return {"$bytes": base64.b64encode(packed).decode("ascii")}


def decode_metadata(value: Any, where: str = "record") -> dict | None:
    """Entry metadata in any of its three wire forms, as a plain dict (snake_case known keys)."""
    if value is None:
        return None
    raw: bytes | None = None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, dict) and set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
        text = value["$bytes"]
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4))
        except ValueError as exc:
            raise RecordError(f"{where}: metadata $bytes is not base64 ({exc})") from None
    if raw is not None:
        # untrusted bytes from a PDS: the sample codec's strict decoder bounds every length and
        # allocation by the payload's size (a 16 KiB record cannot make it allocate 64 MiB)
        try:
            return unpack_payload(raw)
        except DecodeError as exc:
            raise RecordError(f"{where}: metadata bytes are not a msgpack map ({exc})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{where}: metadata is {type(value).__name__}, expected an object or bytes")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "custom" and isinstance(item, dict):
            continue
        out[_META_KNOWN_BACK.get(key, key) if isinstance(key, str) else key] = item
    custom = value.get("custom")
    if isinstance(custom, dict):
        for key, item in custom.items():
            out.setdefault(key, item)
    return out


# --------------------------------------------------------------------------- entries and labels


@dataclass(frozen=True)
class DatasetSize:
    samples: int | None = None
    bytes: int | None = None
    shards: int | None = None

    def to_record(self) -> dict:
        return {k: v for k, v in (("samples", self.samples), ("bytes", self.bytes), ("shards", self.shards)) if v is not None}

    @classmethod
    def from_record(cls, value: Any) -> "DatasetSize | None":
        if not isinstance(value, dict):
            return None
        get = lambda k: value.get(k) if isinstance(value.get(k), int) and not isinstance(value.get(k), bool) else None  # noqa: E731
        return cls(get("samples"), get("bytes"), get("shards"))


_ENTRY_KEYS = {"$type", "name", "schemaRef", "storage", "createdAt", "description", "tags", "license", "size",
               "metadata", "metadataSchemaRef", "contentMetadata", "manifests", "urls", "externalUrl"}


@dataclass
class EntryRecord:
    """A ``science.alt.dataset.entry`` record (reads ``ac.foundation.dataset.record`` too)."""

    name: str
    schema_ref: str
    storage: Storage
    created_at: str = field(default_factory=now_iso)
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    size: DatasetSize | None = None
    metadata: dict | None = None  # decoded; encoded on publish
    metadata_schema_ref: str | None = None
    content_metadata: dict | None = None
    extra: dict = field(default_factory=dict)  # unknown keys, kept on round trips
    legacy: bool = False

    def to_record(self) -> dict:
        out: dict[str, Any] = {
            "$type": NSID_ENTRY,
            "name": self.name,
            "schemaRef": self.schema_ref,
            "storage": self.storage.to_record(),
            "createdAt": self.created_at,
        }
        if self.description is not None:
            out["description"] = self.description
        if self.tags:
            out["tags"] = list(self.tags)
        if self.license is not None:
            out["license"] = self.license
        if self.size is not None and self.size.to_record():
            out["size"] = self.size.to_record()
        if self.metadata:
            out["metadata"] = encode_metadata(self.metadata)
        if self.metadata_schema_ref:
            out["metadataSchemaRef"] = self.metadata_schema_ref
        if self.content_metadata:
            out["contentMetadata"] = self.content_metadata
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_record(cls, value: Any, *, uri: str | None = None) -> "EntryRecord":
        where = _where(uri)
        rtype = _type_of(value)
        if rtype not in (NSID_ENTRY, LEGACY_NSID_ENTRY) or not isinstance(value, dict):
            raise RecordError(
                f"{where} has $type {rtype!r}, expected {NSID_ENTRY!r} (or legacy {LEGACY_NSID_ENTRY!r}); "
                "it is not a dataset entry"
            )
        name, schema_ref = value.get("name"), value.get("schemaRef")
        if not isinstance(name, str) or not isinstance(schema_ref, str):
            raise RecordError(f"{where} is not a dataset entry: it lacks string 'name' and 'schemaRef'")
        if "storage" in value:
            storage = _storage_from_record(value["storage"], where)
        elif isinstance(value.get("urls"), list):  # 0.3.x flattened external URLs
            storage = StorageExternal(tuple(_remote_url(u, "storageExternal", where) for u in value["urls"]))
        else:
            raise RecordError(f"{where} ({name}) has no 'storage'")
        tags = value.get("tags")
        return cls(
            name=name,
            schema_ref=schema_ref,
            storage=storage,
            created_at=_str_field(value, "createdAt"),
            description=value.get("description") if isinstance(value.get("description"), str) else None,
            tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
            license=value.get("license") if isinstance(value.get("license"), str) else None,
            size=DatasetSize.from_record(value.get("size")),
            metadata=decode_metadata(value.get("metadata"), where),
            metadata_schema_ref=value.get("metadataSchemaRef") if isinstance(value.get("metadataSchemaRef"), str) else None,
            content_metadata=value.get("contentMetadata") if isinstance(value.get("contentMetadata"), dict) else None,
            extra={k: v for k, v in value.items() if k not in _ENTRY_KEYS},
            legacy=rtype == LEGACY_NSID_ENTRY,
        )


@dataclass
class DatasetLabel:
    """A ``science.alt.dataset.label``: a (name, version) pointing at an entry AT URI."""

    name: str
    dataset_uri: str
    created_at: str = field(default_factory=now_iso)
    version: str | None = None
    description: str | None = None

    def to_record(self) -> dict:
        out: dict[str, Any] = {"$type": NSID_LABEL, "name": self.name, "datasetUri": self.dataset_uri,
                               "createdAt": self.created_at}
        if self.version is not None:
            out["version"] = self.version
        if self.description is not None:
            out["description"] = self.description
        return out

    @classmethod
    def from_record(cls, value: Any, *, uri: str | None = None) -> "DatasetLabel":
        where = _where(uri)
        if _type_of(value) != NSID_LABEL or not isinstance(value, dict):
            raise RecordError(f"{where} has $type {_type_of(value)!r}, expected {NSID_LABEL!r}")
        name, target = value.get("name"), value.get("datasetUri")
        if not isinstance(name, str) or not isinstance(target, str):
            raise RecordError(f"{where} is not a dataset label: it lacks string 'name' and 'datasetUri'")
        version = value.get("version")
        return cls(name, target, _str_field(value, "createdAt"),
                   version if isinstance(version, str) and version else None,
                   value.get("description") if isinstance(value.get("description"), str) else None)
