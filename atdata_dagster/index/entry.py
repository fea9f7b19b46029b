"""Index entries, schema records, labels and the entry CID.

The CID is computed exactly as atdata computes it: a CIDv1 (dag-cbor, sha2-256) over
the DAG-CBOR map ``{"schema_ref": ..., "data_urls": [...]}``; name and metadata are
not part of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptEntryError
from ..shards.manifest import manifest_url_for

__all__ = [
    "LabelRecord",
    "LocalDatasetEntry",
    "BasicIndexEntry",
    "LocalSchemaRecord",
    "compute_cid",
    "dag_cbor_encode",
    "generate_cid",
    "generate_cid_from_bytes",
    "verify_cid",
]


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 0x100:
        return bytes([(major << 5) | 24, n])
    if n < 0x10000:
        return bytes([(major << 5) | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([(major << 5) | 26]) + n.to_bytes(4, "big")
    return bytes([(major << 5) | 27]) + n.to_bytes(8, "big")


def dag_cbor_encode(value: Any, *, tuples: bool = True) -> bytes:
    """Encode str / int / float / bool / None / bytes / list / dict[str, ...] as canonical DAG-CBOR.

    Definite lengths, minimal heads, map keys sorted length-first then bytewise, floats
    always as 64-bit: the encoding libipld (atdata's encoder) produces for these types.
    Integers outside CBOR's 64-bit range and non-finite floats raise ``ValueError``, as
    libipld does. ``tuples=False`` refuses tuples as libipld does (``TypeError``).
    """
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        if not -(2**64) <= value < 2**64:
            raise ValueError(f"integer {value} is outside DAG-CBOR's 64-bit range")
        return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DAG-CBOR has no encoding for the float {value!r}")
        return b"\xfb" + struct.pack(">d", value or 0.0)  # -0.0 is written as 0.0, as libipld does
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _cbor_head(3, len(raw)) + raw
    if isinstance(value, (bytes, bytearray)):
        return _cbor_head(2, len(value)) + bytes(value)
    if isinstance(value, list) or (tuples and isinstance(value, tuple)):
        return _cbor_head(4, len(value)) + b"".join(dag_cbor_encode(v, tuples=tuples) for v in value)
    if isinstance(value, dict):
        if any(not isinstance(k, str) for k in value):
            raise TypeError("DAG-CBOR map keys must be strings")
        keys = [k.encode("utf-8") for k in value]
        ordered = sorted(zip(keys, value.values()), key=lambda kv: (len(kv[0]), kv[0]))
        out = [_cbor_head(5, len(ordered))]
        for k, v in ordered:
            out.append(_cbor_head(3, len(k)) + k)
            out.append(dag_cbor_encode(v, tuples=tuples))
        return b"".join(out)
    raise TypeError(f"cannot DAG-CBOR encode {type(value).__name__}")


def generate_cid_from_bytes(data_bytes: bytes) -> str:
    """The CIDv1 (dag-cbor, SHA-256, base32 ``bafyrei…``) of already-encoded DAG-CBOR bytes (atdata's name)."""
    cid = bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(data_bytes).digest()
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def generate_cid(data: Any) -> str:
    """The CID atdata's ``generate_cid`` gives ``data``: DAG-CBOR, SHA-256, CIDv1 base32.

    Accepts what libipld encodes (dicts with string keys, lists, str, bytes, int, finite
    float, bool, None); anything else (a tuple, NaN, an int beyond 64 bits, an object)
    raises ``ValueError`` as atdata does.
    """
    try:
        body = dag_cbor_encode(data, tuples=False)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"Failed to encode data as DAG-CBOR: {e}") from e
    return generate_cid_from_bytes(body)


def verify_cid(cid: str, data: Any) -> bool:
    """Whether ``cid`` is :func:`generate_cid` of ``data`` (atdata's name)."""
    return cid == generate_cid(data)


def compute_cid(schema_ref: str, data_urls: list[str]) -> str:
    """The atdata entry CID (``bafyrei…``) of a schema ref and shard URL list."""
    return generate_cid_from_bytes(dag_cbor_encode({"schema_ref": schema_ref, "data_urls": list(data_urls)}))


@dataclass
class LocalDatasetEntry:
    """One dataset version in an index: a name, a schema ref and its shard URLs.

    ``metadata`` holds user metadata plus ``checksums`` (shard URL -> SHA-256) and, when
    written by this package, ``lineage`` and shard statistics. The CID is derived from
    ``schema_ref`` and ``data_urls`` only.
    """

    name: str
    schema_ref: str
    data_urls: list[str]
    metadata: dict | None = None
    _cid: str | None = field(default=None, repr=False)
    _legacy_uuid: str | None = field(default=None, repr=False)
    created_at: str | None = field(default=None, repr=False, compare=False)
    #: set when the stored row did not decode (listing keeps going); raised when the entry is used
    _corrupt: CorruptEntryError | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.data_urls = list(self.data_urls)
        if self._cid is None:
            self._cid = compute_cid(self.schema_ref, self.data_urls)

    @property
    def cid(self) -> str:
        """Content identifier of the entry (over schema ref and shard URLs)."""
        assert self._cid is not None
        return self._cid

    @property
    def wds_url(self) -> str:
        """Legacy accessor: the first shard URL."""
        return self.data_urls[0]

    @property
    def sample_kind(self) -> str:
        """Legacy accessor: the schema ref."""
        return self.schema_ref

    def _meta_field(self, key: str, want: type, what: str) -> Any:
        """``metadata[key]`` if absent/None (-> None) or of type ``want``; else CorruptEntryError."""
        self.ensure_intact()
        meta = self.metadata
        if meta is None:
            return None
        if not isinstance(meta, dict):
            raise CorruptEntryError(
                f"index entry {self.name!r} ({self._cid}) has metadata of type {type(meta).__name__}, expected a "
                "map; it was written by another tool or is corrupt: repair or delete the entry",
                name=self.name, cid=self._cid, field="metadata",
            )
        value = meta.get(key)
        if value is None:
            return None
        ok = isinstance(value, want)
        if ok and want is dict:
            ok = all(isinstance(k, str) for k in value)
        if ok and key == "checksums":
            ok = all(isinstance(v, str) for v in value.values())
        if ok and want is list:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise CorruptEntryError(
                f"index entry {self.name!r} ({self._cid}): metadata[{key!r}] is {type(value).__name__} "
                f"{value!r:.80}, expected {what}; it was written by another tool or is corrupt: repair the "
                "entry's metadata (Index.provider.update_entry_metadata) or delete the entry",
                name=self.name, cid=self._cid, field=key,
            )
        return value

    @property
    def checksums(self) -> dict[str, str]:
        """Shard URL -> SHA-256 hex, as recorded in ``metadata["checksums"]``.

        Raises :class:`~atdata_dagster.errors.CorruptEntryError` if that is not a map of str to str.
        """
        return dict(self._meta_field("checksums", dict, "a map of shard URL -> SHA-256 hex") or {})

    @property
    def stats(self) -> dict[str, Any]:
        """Shard statistics (``num_samples``, ``total_bytes``, ...) from ``metadata["stats"]``, or ``{}``.

        Raises :class:`~atdata_dagster.errors.CorruptEntryError` if that is not a map.
        """
        return dict(self._meta_field("stats", dict, "a map of statistic -> value") or {})

    @property
    def manifest_urls(self) -> list[str]:
        """URLs of the shards' manifest sidecars, from ``metadata["manifests"]``, or ``[]``.

        Raises :class:`~atdata_dagster.errors.CorruptEntryError` if that is not a list of str.
        """
        return list(self._meta_field("manifests", list, "a list of manifest URLs") or [])

    @property
    def content_id(self) -> str | None:
        """A location-independent identity of the data, or ``None`` if a shard has no checksum.

        ``sha256:<hex>`` over the schema ref and the shards' SHA-256s in order: the same
        samples written under another store root, bucket or mount point get the same
        content id, while atdata's CID (computed from the URLs) changes. Dagster uses it
        as the data version, so moving a store does not make everything downstream stale.
        """
        checksums = self.checksums
        shas = [checksums.get(u) for u in self.data_urls]
        if not shas or any(s is None for s in shas):
            return None
        text = "\n".join(["atdata-dagster content v1", self.schema_ref, *[str(s).lower() for s in shas]])
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def ensure_intact(self) -> None:
        """Raise the entry's :class:`~atdata_dagster.errors.CorruptEntryError` if its stored
        row did not decode (it was listed, but its metadata or shard list is unreadable)."""
        if self._corrupt is not None:
            c = self._corrupt
            raise CorruptEntryError(str(c), name=c.name, cid=c.cid, field=c.field)

    def referenced_urls(self) -> list[str]:
        """Every URL this entry may reference: its shards and their manifest sidecars.

        For ``gc``: with a malformed ``manifests`` field (or undecodable metadata) the
        sidecar URLs next to every shard (and any str in the field) are returned instead,
        so nothing this entry might use is taken for garbage. Raises
        :class:`~atdata_dagster.errors.CorruptEntryError` only when the shard list itself
        is unreadable: then nobody can tell which shards it references, and gc must stop.
        """
        if self._corrupt is not None and self._corrupt.field == "data_urls":
            self.ensure_intact()
        if self._corrupt is not None:
            return list(self.data_urls) + [manifest_url_for(u) for u in self.data_urls]
        urls = list(self.data_urls)
        try:
            urls += self.manifest_urls
        except CorruptEntryError:
            urls += [manifest_url_for(u) for u in self.data_urls]
            raw = self.metadata.get("manifests") if isinstance(self.metadata, dict) else None
            if isinstance(raw, (list, tuple)):
                urls += [u for u in raw if isinstance(u, str)]
        return urls

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for JSON output and Dagster metadata)."""
        return {
            "name": self.name,
            "cid": self.cid,
            "schema_ref": self.schema_ref,
            "data_urls": list(self.data_urls),
            "metadata": self.metadata,
            "created_at": self.created_at,
        }


BasicIndexEntry = LocalDatasetEntry


@dataclass
class LabelRecord:
    """A name (and optional version) pointing at an entry CID."""

    name: str
    cid: str
    version: str = ""
    description: str | None = None
    created_at: str | None = None


@dataclass
class LocalSchemaRecord:
    """A stored schema record, with typed accessors over the stored JSON."""

    name: str
    version: str
    fields: list[dict]
    description: str | None = None
    created_at: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        """The ``atdata://local/schema/{name}@{version}`` reference."""
        return f"atdata://local/schema/{self.name}@{self.version}"

    @classmethod
    def from_dict(cls, data: dict) -> "LocalSchemaRecord":
        known = {"name", "version", "fields", "description", "createdAt", "$ref"}
        return cls(
            name=data["name"],
            version=data["version"],
            fields=list(data.get("fields") or []),
            description=data.get("description"),
            created_at=data.get("createdAt"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_json(cls, text: str) -> "LocalSchemaRecord":
        return cls.from_dict(json.loads(text))

    def to_dict(self, *, with_ref: bool = True) -> dict:
        """The record as atdata stores it (plus ``$ref`` unless ``with_ref=False``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "fields": self.fields,
            "description": self.description,
            "createdAt": self.created_at,
        }
        out.update(self.extra)
        if with_ref:
            out["$ref"] = self.ref
        return out
