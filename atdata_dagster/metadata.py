"""Engine results as Dagster metadata: column schema, row counts, URI, CID, preview.

Pure translation, no storage logic: every function here takes an index entry, a
sample type or a few samples and returns Dagster metadata values.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import dagster as dg

from .errors import AtdataError
from .samples.schema import field_specs
from .text import human_bytes

__all__ = [
    "human_bytes",
    "column_lineage",
    "column_schema",
    "column_type",
    "dataset_uri",
    "entry_metadata",
    "preview_markdown",
    "summarize_sample",
    "summarize_value",
]

#: how many characters of a preview cell are shown before it is cut
PREVIEW_CELL_CHARS = 48


def column_type(spec: Any) -> str:
    """A short type name for a field spec: ``int``, ``str``, ``ndarray[float32]``, ``list[int]``."""
    if spec.kind == "primitive":
        name = spec.primitive or "any"
    elif spec.kind == "ndarray":
        name = f"ndarray[{spec.dtype}]" if spec.dtype else "ndarray"
    elif spec.kind == "array":
        name = f"list[{column_type(spec.items)}]" if spec.items is not None else "list"
    else:  # pragma: no cover - future kinds
        name = str(spec.kind)
    return name


def column_schema(sample_type: type | None) -> dg.TableSchema | None:
    """The ``dagster/column_schema`` of a packable sample type (``None`` if it has no fields).

    One column per field, in declaration order; ``Optional`` fields are nullable.
    """
    if sample_type is None:
        return None
    try:
        specs = field_specs(sample_type)
    except AtdataError:  # DictSample and other untyped samples have no schema
        return None
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=spec.name,
                type=column_type(spec),
                constraints=dg.TableColumnConstraints(nullable=bool(spec.optional)),
            )
            for spec in specs
        ]
    )


def _number(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def summarize_value(value: Any, limit: int = PREVIEW_CELL_CHARS) -> str:
    """A short, single-line rendering of one field value.

    Arrays show dtype and shape, then their values when they have at most 6 elements, else
    their min / max / mean (numeric arrays; e.g. ``float32[64] min 0 max 16 mean 4.91``).
    """
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        dims = "×".join(str(d) for d in shape) or "scalar"
        head = f"{dtype}[{dims}]"
        kind = getattr(dtype, "kind", "")
        size = int(getattr(value, "size", 0))
        if kind not in "biuf" or size == 0:
            return head
        if size <= 6:
            return f"{head} [{', '.join(_number(v) for v in value.ravel().tolist())}]"
        return (f"{head} min {_number(value.min().item())} max {_number(value.max().item())} "
                f"mean {float(value.mean()):.4g}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"bytes[{len(value)}]"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"list[{len(value)}]"
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def summarize_sample(sample: Any, columns: Sequence[str]) -> dict[str, str]:
    """One preview row: field name -> :func:`summarize_value` of that field."""
    row: dict[str, str] = {}
    for name in columns:
        try:
            value = getattr(sample, name)
        except AttributeError:
            try:
                value = sample[name]  # DictSample
            except (KeyError, IndexError, TypeError):  # no such field, or not subscriptable
                value = None
        row[name] = summarize_value(value)
    return row


def preview_columns(sample_type: type | None, sample: Any = None) -> list[str]:
    """The field names to show in a preview (from the type, else from a DictSample)."""
    if sample_type is not None:
        try:
            return [s.name for s in field_specs(sample_type)]
        except AtdataError:  # untyped (DictSample): the columns come from the sample itself
            pass
    keys = getattr(sample, "keys", None)
    if callable(keys):
        return [str(k) for k in keys()]
    return []


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def preview_markdown(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    """A markdown table of preview rows (already summarized)."""
    if not columns:
        return "_no fields_"
    head = "| " + " | ".join(_md_cell(c) for c in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_md_cell(str(r.get(c, ""))) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def dataset_uri(data_urls: Sequence[str]) -> str | None:
    """Where the dataset lives: the directory (or key prefix) of its first shard.

    Local shards give a filesystem directory; S3 shards an ``s3://bucket/prefix/``
    location; other URLs their parent URL.
    """
    if not data_urls:
        return None
    first = data_urls[0]
    if "://" in first and not first.startswith("file://"):
        head, _, _ = first.rpartition("/")
        return head + "/" if head and not head.endswith(":/") else first
    path = first[len("file://"):] if first.startswith("file://") else first
    return posixpath.dirname(path) or path


def entry_metadata(
    entry: Any,
    *,
    sample_type: type | None,
    partitioned: bool,
    preview: Sequence[Mapping[str, str]] | None = None,
    preview_cols: Sequence[str] | None = None,
    repo: str | None = None,
    upstream: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Materialization metadata for one index entry.

    ``dagster/row_count`` (``dagster/partition_row_count`` when ``partitioned``),
    ``dagster/column_schema``, ``dagster/uri`` and the ``atdata/*`` keys: ``cid``,
    ``name``, ``schema_ref``, ``shard_count``, ``bytes``, ``repo``, ``preview`` and
    ``upstream`` (the CIDs this dataset was computed from). Never includes
    configuration, so no secret can leak through it.
    """
    stats = entry.stats
    out: dict[str, Any] = {}
    rows = stats.get("num_samples")
    if isinstance(rows, int):
        out["dagster/partition_row_count" if partitioned else "dagster/row_count"] = dg.MetadataValue.int(rows)
    schema = column_schema(sample_type)
    if schema is not None:
        out["dagster/column_schema"] = dg.MetadataValue.table_schema(schema)
    uri = dataset_uri(list(entry.data_urls))
    if uri:
        out["dagster/uri"] = dg.MetadataValue.text(uri)
    out["atdata/cid"] = dg.MetadataValue.text(entry.cid)
    content = entry.content_id
    if content is not None:  # Dagster's data version: the same data at another path keeps it
        out["atdata/content_id"] = dg.MetadataValue.text(content)
    out["atdata/name"] = dg.MetadataValue.text(entry.name)
    out["dagster/table_name"] = dg.MetadataValue.text(entry.name if not repo or repo == "local" else f"{repo}/{entry.name}")
    if repo:
        out["atdata/repo"] = dg.MetadataValue.text(repo)
    out["atdata/schema_ref"] = dg.MetadataValue.text(entry.schema_ref)
    out["atdata/shard_count"] = dg.MetadataValue.int(int(stats.get("num_shards", len(entry.data_urls))))
    total = stats.get("total_bytes")
    if isinstance(total, int):
        out["atdata/bytes"] = dg.MetadataValue.int(total)
        out["atdata/size"] = dg.MetadataValue.text(human_bytes(total))
    if preview is not None:
        cols = list(preview_cols or (list(preview[0]) if preview else []))
        out["atdata/preview"] = dg.MetadataValue.md(preview_markdown(preview, cols))
    status = promotion_status(entry)
    if status is not None:
        out["atdata/promotion"] = dg.MetadataValue.text(status)
    if upstream:
        out["atdata/upstream"] = dg.MetadataValue.md(upstream_markdown(upstream))
        out["atdata/upstream_cids"] = dg.MetadataValue.json([dict(u) for u in upstream])  # for machines
    return out


def column_lineage(
    sample_type: type | None, upstream_types: Sequence[tuple[dg.AssetKey, type]],
) -> dg.TableColumnLineage | None:
    """``dagster/column_lineage``: each field of ``sample_type`` that an upstream sample type
    has too, with the same name and type, depends on that upstream column (``None`` if none does)."""
    if sample_type is None:
        return None
    try:
        ours = {spec.name: column_type(spec) for spec in field_specs(sample_type)}
        theirs = [(key, {spec.name: column_type(spec) for spec in field_specs(t)}) for key, t in upstream_types]
    except AtdataError:  # an untyped side: nothing can be said about its columns
        return None
    deps = {
        name: [dg.TableColumnDep(asset_key=key, column_name=name) for key, cols in theirs if cols.get(name) == kind]
        for name, kind in ours.items()
    }
    deps = {name: found for name, found in deps.items() if found}
    return dg.TableColumnLineage(deps_by_column=deps) if deps else None


def promotion_status(entry: Any) -> str | None:
    """``promoted: at://...`` for a published entry, ``pending (...)`` for one marked with
    ``atdata/promote`` and not yet published, ``None`` otherwise."""
    meta = entry.metadata if isinstance(entry.metadata, dict) else {}
    published = meta.get("atmosphere")
    uri = published.get("uri") if isinstance(published, dict) else None
    if isinstance(uri, str) and uri:
        return f"promoted: {uri}"
    if meta.get("promote") is True:
        return "pending: the promotion sensor or schedule will publish it"
    return None


def short_cid(cid: str) -> str:
    """A CID shortened for display (``bafyreig6sr…hmvsq``); the full one stays in ``atdata/cid``."""
    return cid if len(cid) <= 24 else f"{cid[:12]}…{cid[-6:]}"


def upstream_markdown(upstream: Iterable[Mapping[str, Any]]) -> str:
    """The datasets an asset was computed from: a table linking each upstream asset's page."""
    lines = ["| upstream asset | partition | CID |", "| --- | --- | --- |"]
    for u in upstream:
        path = [str(p) for p in u.get("asset_key") or []]
        label = _md_cell("/".join(path)) or "?"
        link = f"[{label}](/assets/{'/'.join(quote(p, safe='') for p in path)})" if path else label
        part = _md_cell(str(u["partition"])) if u.get("partition") else "–"
        lines.append(f"| {link} | {part} | `{short_cid(str(u.get('cid', '')))}` |")
    return "\n".join(lines)
