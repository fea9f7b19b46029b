"""Per-shard manifest sidecars (``<shard stem>.manifest.json`` / ``.manifest.parquet``).

Same header layout as atdata (compat reference 2.5), with its bugs fixed: every shard
gets a manifest (including the last), ``shard_id`` is the shard's own file stem,
``__offset__`` is the real tar offset of the member header, and the JSON is standard
(numeric aggregates over zero values are ``null``, never ``Infinity``).

Aggregates are computed incrementally. ``value_counts`` (categorical) and
``all_values`` (set) keep one entry per distinct value, capped at
``MAX_DISTINCT_VALUES`` per field; past the cap new values are not counted and the
aggregate carries ``"truncated": true``, as it does when a list value is nested deeper
than ``MAX_VALUE_DEPTH`` (left out, so nothing recurses without bound).

The per-sample ``.manifest.parquet`` (which atdata's manifest queries read) is written
with ``pyarrow``, a dependency; an environment without it gets the JSON header only. Its rows are held until
the shard closes, so they grow with the shard's sample count (bounded by maxcount).

``created_at`` makes manifests differ from run to run; manifests are sidecars, never
part of the shard bytes, so shard checksums, URLs and entry CIDs are unaffected.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO

from ..errors import AtdataError, ShardError
from ..samples.codec import unpack_payload
from ..samples.schema import field_specs
from .reader import open_url

__all__ = ["ManifestBuilder", "read_manifest", "MANIFEST_VERSION", "MAX_DISTINCT_VALUES"]

#: Largest manifest JSON read (a manifest holds per-shard aggregates, not per-sample rows:
#: at most MAX_DISTINCT_VALUES values per field). JSON parses into at most ~25 bytes of
#: Python objects per byte (a run of ``[],`` or ``{}``), so this also bounds the parsed manifest.
MAX_MANIFEST_SIZE = 16 << 20

MANIFEST_VERSION = "1.0.0"
MAX_DISTINCT_VALUES = 10_000

_EXCLUDED = "exclude"


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: Deepest nesting of a list value the ``set`` aggregate records; deeper values (msgpack
#: allows 1024 levels) are left out and mark the aggregate ``truncated``, so neither the
#: aggregate nor the JSON it becomes can recurse without bound.
MAX_VALUE_DEPTH = 32


class _TooDeep(Exception):
    pass


def _hashable(v: Any, depth: int = 0) -> Any:
    if isinstance(v, (list, tuple, dict)):
        if depth >= MAX_VALUE_DEPTH:
            raise _TooDeep
        if isinstance(v, dict):
            return tuple(sorted((str(k), _hashable(x, depth + 1)) for k, x in v.items()))
        return tuple([_hashable(x, depth + 1) for x in v])
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return _finite(v)


class _Categorical:
    __slots__ = ("counts", "truncated")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.truncated = False

    def add(self, v: Any) -> None:
        k = str(v)
        c = self.counts.get(k)
        if c is not None:
            self.counts[k] = c + 1
        elif len(self.counts) < MAX_DISTINCT_VALUES:
            self.counts[k] = 1
        else:
            self.truncated = True

    def result(self) -> dict:
        out: dict[str, Any] = {"type": "categorical", "cardinality": len(self.counts), "value_counts": dict(self.counts)}
        if self.truncated:
            out["truncated"] = True
        return out


class _Numeric:
    __slots__ = ("lo", "hi", "total", "count")

    def __init__(self) -> None:
        self.lo: Any = None
        self.hi: Any = None
        self.total = 0.0
        self.count = 0

    def add(self, v: Any) -> None:
        if isinstance(v, float) and math.isnan(v):
            return
        if self.count == 0:
            self.lo = self.hi = v
        elif v < self.lo:
            self.lo = v
        elif v > self.hi:
            self.hi = v
        self.total += v
        self.count += 1

    def result(self) -> dict:
        mean = self.total / self.count if self.count else None
        return {"type": "numeric", "min": _finite(self.lo), "max": _finite(self.hi), "mean": _finite(mean), "count": self.count}


class _Set:
    __slots__ = ("values", "truncated")

    def __init__(self) -> None:
        self.values: set = set()
        self.truncated = False

    def add(self, v: Any) -> None:
        items = v if isinstance(v, (list, tuple)) else [v]
        for item in items:
            try:
                h = _hashable(item)
            except _TooDeep:
                self.truncated = True
                continue
            if h in self.values:
                continue
            if len(self.values) < MAX_DISTINCT_VALUES:
                self.values.add(h)
            else:
                self.truncated = True

    def result(self) -> dict:
        try:
            ordered = sorted(self.values)
        except TypeError:
            ordered = sorted(self.values, key=lambda x: (type(x).__name__, repr(x)))
        out: dict[str, Any] = {"type": "set", "all_values": [_jsonable(x) for x in ordered]}
        if self.truncated:
            out["truncated"] = True
        return out


_AGGREGATORS: dict[str, type[_Categorical | _Numeric | _Set]] = {"categorical": _Categorical, "numeric": _Numeric, "set": _Set}


def _kind_of_value(v: Any) -> str:
    if isinstance(v, (bool, str)):
        return "categorical"
    if isinstance(v, (int, float)):
        return "numeric"
    if isinstance(v, (list, tuple)):
        return "set"
    return _EXCLUDED  # bytes (ndarrays), maps, ...


@dataclass(frozen=True)
class ManifestField:
    """Marker for a field's manifest aggregate, used in ``Annotated`` (atdata's)::

        label: Annotated[str, ManifestField("categorical")]
        confidence: Annotated[float, ManifestField("numeric")]
        tags: Annotated[list[str], ManifestField("set")]
        note: Annotated[str, ManifestField("categorical", exclude=True)]   # not in the manifest
    """

    aggregate: str
    exclude: bool = False

    def __post_init__(self) -> None:
        if self.aggregate not in ("categorical", "numeric", "set"):
            raise ValueError(f"ManifestField aggregate must be 'categorical', 'numeric' or 'set', got {self.aggregate!r}")


def _annotated_kinds(sample_type: type) -> dict[str, str]:
    """Field name -> kind (or excluded) from ``Annotated[..., ManifestField(...)]`` annotations."""
    try:
        hints = typing.get_type_hints(sample_type, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no declared markers (the schema still applies)
        return {}
    out: dict[str, str] = {}
    for name, hint in hints.items():
        for marker in getattr(hint, "__metadata__", ()):
            if isinstance(marker, ManifestField):
                out[name] = _EXCLUDED if marker.exclude else marker.aggregate
    return out


def declared_kinds(sample_type: type | None) -> dict[str, str]:
    """Field name -> aggregate kind: ``ManifestField`` markers first, else from the sample type's schema."""
    if sample_type is None:
        return {}
    marked = _annotated_kinds(sample_type)
    return {**_schema_kinds(sample_type), **marked}


def _schema_kinds(sample_type: type) -> dict[str, str]:
    try:
        specs = field_specs(sample_type)
    except Exception:  # noqa: BLE001 - a type without field specs gets no declared aggregates; samples still aggregate
        return {}
    kinds: dict[str, str] = {}
    for spec in specs:
        kind = getattr(spec, "kind", None)
        override = getattr(spec, "manifest", None) or getattr(spec, "manifest_kind", None)
        if override in ("categorical", "numeric", "set", _EXCLUDED):
            kinds[spec.name] = override
        elif kind in ("ndarray", "structured"):
            kinds[spec.name] = _EXCLUDED
        elif kind == "array":
            kinds[spec.name] = "set"
        elif kind == "primitive":
            prim = getattr(spec, "primitive", None)
            if prim in ("str", "bool"):
                kinds[spec.name] = "categorical"
            elif prim in ("int", "float"):
                kinds[spec.name] = "numeric"
            elif prim == "bytes":
                kinds[spec.name] = _EXCLUDED
            # unknown primitive name: inferred from the first value
        else:
            kinds[spec.name] = _EXCLUDED
    return kinds


class ManifestBuilder:
    """Accumulates one shard's manifest while its samples are written."""

    def __init__(
        self,
        *,
        schema_type: str = "DictSample",
        schema_version: str = "1.0.0",
        kinds: dict[str, str] | None = None,
        provenance: dict | None = None,
        rows: bool | None = None,
    ):
        self.schema_type = schema_type
        self.schema_version = schema_version
        self.provenance = provenance
        self._kinds: dict[str, str] = dict(kinds or {})
        # Declared fields get an aggregate even if no sample has a value for them.
        self._aggs: dict[str, Any] = {n: _AGGREGATORS[k]() for n, k in self._kinds.items() if k in _AGGREGATORS}
        self.num_samples = 0
        self.size_bytes = 0
        self._rows: dict[str, list] | None = None
        if rows is None:
            rows = importlib.util.find_spec("pyarrow") is not None
        if rows:
            self._rows = {"__key__": [], "__offset__": [], "__size__": []}

    @classmethod
    def for_sample_type(cls, sample_type: type | None, *, provenance: dict | None = None) -> "ManifestBuilder":
        name = getattr(sample_type, "__name__", None) or "DictSample"
        version = getattr(sample_type, "__schema_version__", None) or "1.0.0"
        return cls(schema_type=name, schema_version=str(version), kinds=declared_kinds(sample_type), provenance=provenance)

    def add(self, key: str, offset: int, size: int, payload: bytes | bytearray | memoryview) -> None:
        """Record one sample: its key, tar offset, payload size and field values."""
        try:
            fields = unpack_payload(payload)
        except AtdataError:  # not a sample payload: counted, with no field values
            fields = {}
        self.add_fields(key, offset, size, fields)

    def add_fields(self, key: str, offset: int, size: int, fields: dict) -> None:
        self.num_samples += 1
        self.size_bytes += size
        kinds, aggs = self._kinds, self._aggs
        for name, value in fields.items():
            if value is None or not isinstance(name, str):
                continue
            kind = kinds.get(name)
            if kind is None:
                kind = kinds[name] = _kind_of_value(value)
            if kind == _EXCLUDED:
                continue
            agg = aggs.get(name)
            if agg is None:
                agg = aggs[name] = _AGGREGATORS[kind]()
            if kind == "numeric" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                continue
            if kind == "categorical" and not isinstance(value, (str, bool, int, float)):
                continue
            agg.add(value)
        rows = self._rows
        if rows is not None:
            self._add_row(rows, key, offset, size, fields)

    @property
    def rows(self) -> dict[str, list] | None:
        """Per-sample columns (``__key__``, ``__offset__``, ``__size__``, fields), if collected."""
        return self._rows

    def _add_row(self, rows: dict[str, list], key: str, offset: int, size: int, fields: dict) -> None:
        kinds = self._kinds
        n = len(rows["__key__"])
        rows["__key__"].append(key)
        rows["__offset__"].append(offset)
        rows["__size__"].append(size)
        for name, value in fields.items():
            if not isinstance(name, str) or name.startswith("__") or kinds.get(name, _EXCLUDED) == _EXCLUDED:
                continue
            col = rows.get(name)
            if col is None:
                col = rows[name] = [None] * n
            col.append(value)
        for col in rows.values():
            if len(col) < n + 1:  # field absent from this sample
                col.append(None)

    def header(self, shard_id: str, created_at: str | None = None) -> dict:
        """The manifest JSON header for the shard named ``shard_id``."""
        out: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "shard_id": shard_id,
            "schema_type": self.schema_type,
            "schema_version": self.schema_version,
            "num_samples": self.num_samples,
            "size_bytes": self.size_bytes,
            "created_at": created_at or datetime.now(timezone.utc).isoformat(),
            "aggregates": {name: agg.result() for name, agg in self._aggs.items()},
        }
        if self.provenance:
            out["provenance"] = self.provenance
        return out

    def json_bytes(self, shard_id: str) -> bytes:
        return json.dumps(self.header(shard_id), indent=2, allow_nan=False, default=str).encode("utf-8")

    def parquet_bytes(self) -> bytes | None:
        """Per-sample rows as Parquet, or ``None`` without pyarrow (or if the rows do not fit a table)."""
        if self._rows is None:
            return None
        try:
            import pyarrow as pa  # lazy: pyarrow is heavy; only parquet manifests need it
            import pyarrow.parquet as pq  # lazy: pyarrow is heavy; only parquet manifests need it

            table = pa.Table.from_pydict(self._rows)
            sink = io.BytesIO()
            pq.write_table(table, sink)
            return sink.getvalue()
        except Exception:  # noqa: BLE001 - the parquet sidecar is optional; the JSON manifest is always written
            return None

    def write(self, store: Any, shard_url: str) -> str:
        """Store the sidecars next to ``shard_url``; return the JSON manifest's URL."""
        shard_id = shard_stem(shard_url)
        url = store.put_sidecar(shard_url, ".manifest.json", self.json_bytes(shard_id))
        parquet = self.parquet_bytes()
        if parquet is not None:
            store.put_sidecar(shard_url, ".manifest.parquet", parquet)
        return url


def shard_stem(url: str) -> str:
    """``/d/data--ab12cd34--000000.tar`` -> ``data--ab12cd34--000000``."""
    base = url.rstrip("/").rsplit("/", 1)[-1]
    return base[:-4] if base.endswith(".tar") else os.path.splitext(base)[0]


def manifest_url_for(shard_url: str) -> str:
    """The ``.manifest.json`` URL next to a shard URL."""
    return (shard_url[:-4] if shard_url.endswith(".tar") else shard_url) + ".manifest.json"


def _read_bounded(stream: BinaryIO) -> bytes:
    """Up to MAX_MANIFEST_SIZE + 1 bytes, in chunks (read(n) on a raw file allocates n at once)."""
    parts, have = [], 0
    while have <= MAX_MANIFEST_SIZE:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def read_manifest(url_or_stream: str | os.PathLike | BinaryIO | bytes) -> dict:
    """Parse a manifest JSON (lenient: accepts atdata's ``Infinity``/``NaN``).

    Accepts the manifest's URL, a shard URL (``.tar`` -> its ``.manifest.json``), a
    readable binary stream or the raw bytes.
    """
    where = "manifest"
    if isinstance(url_or_stream, (bytes, bytearray)):
        data = bytes(url_or_stream)
    elif isinstance(url_or_stream, (str, os.PathLike)):
        url = os.fspath(url_or_stream)
        if url.endswith(".tar"):
            url = manifest_url_for(url)
        where = f"manifest {url}"
        with open_url(url) as f:
            data = _read_bounded(f)
    else:
        data = _read_bounded(url_or_stream)
    if len(data) > MAX_MANIFEST_SIZE:
        raise ShardError(f"{where} is larger than {MAX_MANIFEST_SIZE} bytes; it is corrupt or hostile")
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ShardError(
            f"{where} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); rewrite it or ignore it"
        ) from None
    if not isinstance(manifest, dict):
        raise ShardError(f"{where} is JSON {type(manifest).__name__}, expected an object with a 'header'")
    return manifest
