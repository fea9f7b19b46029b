"""Manifest queries, as atdata's ``atdata.manifest``: find samples by field values without reading shards.

Every shard written with ``manifest=True`` has a ``<shard>.manifest.json`` (counts and
per-field aggregates) and a ``<shard>.manifest.parquet`` (one row per sample: key, tar
offset, size and the manifest fields). :class:`QueryExecutor` filters those rows:

    executor = QueryExecutor.from_shard_urls(ds.list_shards())
    hits = executor.query(where=lambda df: (df["confidence"] > 0.9) & (df["label"] == "dog"))
    # or without pandas, a pyarrow expression:
    hits = executor.query(where=pc.field("confidence") > 0.9)
    [ds.get(h.key) for h in hits]          # read just those samples

Shards whose aggregates rule a pyarrow comparison out (``min``/``max`` of a numeric
field, the value set of a categorical one) are skipped without reading their parquet;
atdata reads every manifest. ``ManifestField`` (in ``Annotated[...]``) chooses a field's
aggregate or excludes it, as in atdata.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

from ..errors import ShardError
from .manifest import ManifestField, declared_kinds, manifest_url_for, read_manifest
from .reader import open_url

__all__ = ["FieldProxy", "ManifestField", "QueryExecutor", "QueryFields", "SampleLocation", "ShardManifest", "query_fields"]

AggregateKind = Literal["categorical", "numeric", "set"]


@dataclass(frozen=True)
class SampleLocation:
    """Where a matching sample is: its shard, its key and its tar offset."""

    shard: str
    key: str
    offset: int


@dataclass
class ShardManifest:
    """One shard's manifest: header fields, per-field ``aggregates`` and (when read) its sample rows.

    ``table`` is the parquet as a ``pyarrow.Table``; ``samples`` the same as a pandas
    DataFrame (atdata's attribute; needs pandas).
    """

    shard_id: str
    schema_type: str
    schema_version: str
    num_samples: int
    size_bytes: int
    created_at: str | None = None
    aggregates: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    table: Any = None
    shard_url: str | None = None

    @property
    def samples(self) -> Any:
        """The sample rows as a pandas DataFrame (empty without a parquet sidecar)."""
        try:
            import pandas as pd  # lazy: pandas is optional, only DataFrame access needs it
        except ImportError:
            raise ImportError("ShardManifest.samples needs pandas: pip install pandas (or use .table, a pyarrow Table)") from None
        return self.table.to_pandas() if self.table is not None else pd.DataFrame()

    def header_dict(self) -> dict[str, Any]:
        """The JSON header fields, as atdata writes them."""
        return {
            "manifest_version": 1, "shard_id": self.shard_id, "schema_type": self.schema_type,
            "schema_version": self.schema_version, "num_samples": self.num_samples, "size_bytes": self.size_bytes,
            "created_at": self.created_at, "aggregates": self.aggregates, "provenance": self.provenance,
        }

    @classmethod
    def from_header(cls, manifest: dict[str, Any], *, table: Any = None, shard_url: str | None = None) -> "ShardManifest":
        raw = manifest.get("header")
        header: dict[str, Any] = raw if isinstance(raw, dict) else manifest
        aggregates: dict[str, Any] = header["aggregates"] if isinstance(header.get("aggregates"), dict) else {}
        provenance: dict[str, Any] = header["provenance"] if isinstance(header.get("provenance"), dict) else {}
        return cls(
            shard_id=str(header.get("shard_id", shard_url or "")),
            schema_type=str(header.get("schema_type", "DictSample")),
            schema_version=str(header.get("schema_version", "1.0.0")),
            num_samples=int(header.get("num_samples") or 0),
            size_bytes=int(header.get("size_bytes") or 0),
            created_at=header.get("created_at"),
            aggregates={k: v for k, v in aggregates.items() if isinstance(v, dict)},
            provenance=provenance,
            table=table,
            shard_url=shard_url,
        )

    @classmethod
    def from_files(cls, json_path: str | os.PathLike, parquet_path: str | os.PathLike | None = None) -> "ShardManifest":
        """The manifest from its JSON file and (optionally) its parquet sidecar (atdata's constructor)."""
        table = _read_table(open(parquet_path, "rb").read()) if parquet_path is not None else None
        return cls.from_header(read_manifest(json_path), table=table)

    @classmethod
    def from_json_only(cls, json_path: str | os.PathLike) -> "ShardManifest":
        """The header only: aggregates and counts, no sample rows."""
        return cls.from_header(read_manifest(json_path))


def _arrow() -> tuple[Any, Any]:
    """(pyarrow.compute, pyarrow.parquet), imported on first use."""
    from pyarrow import compute, parquet  # lazy: pyarrow is heavy to import and only queries need it here

    return compute, parquet


def _read_table(data: bytes) -> Any:
    _, pq = _arrow()
    try:
        # use_threads=False: pyarrow 26's threaded parquet reader aborts the process at exit now and then
        # ("terminate called without an active exception"); manifests are small, one thread is enough
        return pq.read_table(io.BytesIO(data), use_threads=False)
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a corrupt sidecar, reported typed
        raise ShardError(f"manifest parquet does not read ({type(exc).__name__}: {exc})") from None


def _might_match(expr: Any, aggregates: dict[str, dict[str, Any]]) -> bool:
    """False only when a simple ``field <op> literal`` expression cannot hold in a shard with these aggregates."""
    text = str(expr)
    for op in (">=", "<=", "==", ">", "<"):
        left, sep, right = text.partition(f" {op} ")
        if not sep or not (left.startswith("(") and right.endswith(")")):
            continue
        name, literal = left[1:], right[:-1]
        agg = aggregates.get(name)
        if agg is None:
            return True
        try:
            value: Any = float(literal)
        except ValueError:
            value = literal.strip('"')
        if agg.get("type") == "numeric" and isinstance(value, float):
            lo, hi = agg.get("min"), agg.get("max")
            if lo is None or hi is None:
                return True
            return {">": hi > value, ">=": hi >= value, "<": lo < value, "<=": lo <= value,
                    "==": lo <= value <= hi}[op]
        if agg.get("type") == "categorical" and op == "==" and isinstance(agg.get("value_counts"), dict) \
                and not agg.get("truncated"):
            return value in agg["value_counts"] or str(value) in agg["value_counts"]
        return True
    return True


class FieldProxy:
    """One manifest field in atdata's query DSL: comparisons, ``isin`` and ``between`` give
    ``pyarrow.compute`` expressions, which combine with ``&``, ``|`` and ``~``."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _f(self) -> Any:
        return _arrow()[0].field(self._name)

    def __gt__(self, value: Any) -> Any:
        return self._f() > value

    def __ge__(self, value: Any) -> Any:
        return self._f() >= value

    def __lt__(self, value: Any) -> Any:
        return self._f() < value

    def __le__(self, value: Any) -> Any:
        return self._f() <= value

    def __eq__(self, value: Any) -> Any:
        return self._f() == value

    def __ne__(self, value: Any) -> Any:
        return self._f() != value

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[Any]) -> Any:
        return self._f().isin(list(values))

    def between(self, low: Any, high: Any) -> Any:
        """``low <= field <= high``."""
        return (self._f() >= low) & (self._f() <= high)

    def __repr__(self) -> str:
        return f"FieldProxy({self._name!r})"


class QueryFields:
    """``ds.fields``: a :class:`FieldProxy` per manifest field of the sample type (any name when untyped)."""

    def __init__(self, names: Iterable[str] | None) -> None:
        self._names = None if names is None else tuple(names)

    def __getattr__(self, name: str) -> FieldProxy:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._names is not None and name not in self._names:
            raise AttributeError(f"{name!r} is not a manifest field; manifest fields: {list(self._names)}")
        return FieldProxy(name)

    def __dir__(self) -> list[str]:
        return list(self._names or ())


def query_fields(sample_type: type | None) -> QueryFields:
    """The query DSL for ``sample_type``'s manifest fields (``ManifestField`` markers and the schema)."""
    if sample_type is None or not hasattr(sample_type, "__dataclass_fields__"):
        return QueryFields(None)
    kinds = declared_kinds(sample_type)
    return QueryFields(name for name, kind in kinds.items() if kind in ("categorical", "numeric", "set"))


class QueryExecutor:
    """Runs a query over per-shard manifests; returns the matching samples' locations."""

    def __init__(self, manifests: Iterable[ShardManifest]) -> None:
        self._manifests = list(manifests)

    @property
    def manifests(self) -> list[ShardManifest]:
        return list(self._manifests)

    def query(self, where: Callable[[Any], Any] | Any) -> list[SampleLocation]:
        """The samples matching ``where``, in shard order.

        ``where`` is atdata's form, a function of a pandas DataFrame returning a boolean
        Series (needs pandas), or a ``pyarrow.compute`` expression (no pandas; shards
        whose aggregates exclude a simple comparison are skipped).
        """
        out: list[SampleLocation] = []
        callable_where = callable(where) and not hasattr(where, "to_substrait")
        for m in self._manifests:
            if m.table is None or m.table.num_rows == 0:
                continue
            shard = m.shard_url or m.shard_id
            if callable_where:
                df = m.samples
                hit = df[where(df)]
                keys, offsets = hit["__key__"].tolist(), hit["__offset__"].tolist()
            else:
                if not _might_match(where, m.aggregates):
                    continue
                hit = m.table.filter(where)
                keys, offsets = hit.column("__key__").to_pylist(), hit.column("__offset__").to_pylist()
            out.extend(SampleLocation(shard=shard, key=str(k), offset=int(o)) for k, o in zip(keys, offsets))
        return out

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> "QueryExecutor":
        """Every ``*.manifest.json`` in ``directory`` (with its parquet when present)."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no such directory: {directory}")
        manifests = []
        for name in sorted(os.listdir(directory)):
            if name.endswith(".manifest.json"):
                json_path = os.path.join(directory, name)
                parquet = json_path[: -len(".json")] + ".parquet"
                manifests.append(ShardManifest.from_files(json_path, parquet if os.path.exists(parquet) else None))
        return cls(manifests)

    @classmethod
    def from_shard_urls(cls, shard_urls: Iterable[str], *, opener: Callable[[str], Any] | None = None) -> "QueryExecutor":
        """The manifests next to these shards (``.tar`` -> ``.manifest.json`` / ``.parquet``).

        ``opener`` (e.g. a dataset's or ``index.shard_opener(entry)``) reads them from
        wherever the shards are (S3 included); by default local paths and public URLs.
        Shards without a manifest are skipped, as in atdata.
        """
        if opener is None:
            opener = open_url
        manifests = []
        for url in shard_urls:
            json_url = manifest_url_for(url)
            try:
                with opener(json_url) as f:
                    header = read_manifest(f)
            except (FileNotFoundError, KeyError):
                continue
            except ShardError:
                raise
            except Exception:  # noqa: BLE001 - an unreachable or absent sidecar means no manifest for this shard
                continue
            table = None
            try:
                with opener(json_url[: -len(".json")] + ".parquet") as f:
                    table = _read_table(f.read())
            except ShardError:
                raise
            except Exception:  # noqa: BLE001 - a JSON header without parquet still gives counts and aggregates
                table = None
            manifests.append(ShardManifest.from_header(header, table=table, shard_url=url))
        return cls(manifests)
