"""The dataset IO manager: asset outputs become index entries, inputs lazy ``Dataset[T]``.

Output
    An asset that returns an iterable (or generator) of packable samples is streamed
    into shards with ``Index.write``; one that returns a ``Dataset`` of existing shards
    is registered with ``Index.insert_dataset``; ``None`` stores nothing. The entry's
    metadata carries ``lineage`` (asset key, partition, run id, code version and the
    CIDs of the upstream entries this step loaded) so lineage can be followed from the
    index alone. The entry CID becomes the materialization's data version.

    Dagster treats a *generator object* returned by an op as a stream of events, so
    return a generator wrapped: ``return dg.Output(gen())`` or
    ``dg.MaterializeResult(value=gen())`` (a list, ``map(...)`` or any other iterable
    can be returned as is). Samples are consumed once, as they are written.

Input
    ``load_input`` resolves the exact entry the upstream materialization recorded (its
    ``atdata/cid``), falling back to the name's latest label only when no
    materialization recorded one, and returns a lazy ``Dataset[T]``: typed from the
    input annotation (``Dataset[Digit]``) or else from the stored schema. Several
    upstream partitions fan in as one dataset over all their shards.

Naming lives in :mod:`atdata_dagster.naming`, settings and entry resolution in
:mod:`atdata_dagster.resolution`; their public names are re-exported here.
"""

import dataclasses
import itertools
import threading
import typing
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import dagster as dg
from pydantic import ConfigDict, Field

from .dataset import Dataset
from .assets import BARE_GENERATOR_HINT_INSTALLED as BARE_GENERATOR_HINT_INSTALLED  # the yielded-sample hint, on import
from .errors import (
    AtdataError, ConfigurationError, FieldMismatchError, NoDatasetReturnedError, NotFoundError, SameShardsError, SchemaError,
)
from .metadata import column_lineage, entry_metadata, preview_columns, summarize_sample
from .naming import EMPTY_SEGMENT as EMPTY_SEGMENT
from .naming import HASHED_PARTITION_MARK as HASHED_PARTITION_MARK
from .naming import MAX_PARTITION_SEGMENT as MAX_PARTITION_SEGMENT
from .naming import PARTITION_MARK as PARTITION_MARK
from .naming import DatasetNameParts as DatasetNameParts
from .naming import dataset_name as dataset_name
from .naming import escape_segment as escape_segment
from .naming import parse_dataset_name as parse_dataset_name
from .naming import partition_segment as partition_segment
from .naming import unescape_segment as unescape_segment
from .resolution import InputSettings, OutputSettings, WriteDefaults, meta_value, recorded_cids, resolve_entry
from .resolution import asset_settings as asset_settings
from .resources import AtdataIndexResource
from .samples.schema import build_schema_record, field_type_text

if TYPE_CHECKING:  # pragma: no cover
    from .index.entry import LocalDatasetEntry
    from .index.index import Index

# Naming and resolution names above are re-exported (``x as x``) for code that imported
# them from here before the split.
__all__ = [
    "AtdataIOManager",
    "DatasetNameParts",
    "add_materialization_metadata",
    "dataset_name",
    "parse_dataset_name",
    "dataset_data_version",
    "set_data_version",
]

#: writes shorter than this log only their summary, longer ones their progress too
PROGRESS_AFTER_SECONDS = 2.0


# --------------------------------------------------------------------------- Dagster seams
# The step context is reached through OutputContext/InputContext._step_context, which is
# not a documented API (conventions section 11): the public ``step_context`` property
# warns on upstream outputs and raises on contexts built outside a run.
# AttributeError/TypeError are what a Dagster that renamed or re-signed these hooks raises.
_INCOMPATIBLE_DAGSTER = (AttributeError, TypeError)


def dataset_data_version(entry: Any) -> str:
    """The Dagster data version of an entry: its location-independent ``content_id``
    (schema + ordered shard SHA-256s), or its CID when a shard has no recorded checksum."""
    return entry.content_id or entry.cid


def set_data_version(context: dg.OutputContext, cid: str) -> bool:
    """Make ``cid`` (a data version string) the data version of the asset being materialized.

    Uses ``OutputContext.step_context.set_data_version``, which is not a documented
    public API (conventions §11): ``handle_output`` runs before Dagster builds the
    materialization event, which takes its data version from this cache. Returns
    ``False`` (and logs a warning) when the context has no step, e.g. one made with
    ``build_output_context``, or when a Dagster upgrade removed the hook; the test
    ``test_set_data_version_helper_sets_the_tag`` fails loudly in that case.
    """
    step = getattr(context, "_step_context", None)
    if step is None:
        return False
    try:
        step.set_data_version(context.asset_key, dg.DataVersion(cid))
        return True
    except _INCOMPATIBLE_DAGSTER as exc:  # pragma: no cover - only on an incompatible Dagster
        context.log.warning(f"atdata: could not set the data version to the CID ({exc!r}); Dagster's default applies")
        return False


def add_materialization_metadata(
    context: dg.OutputContext, metadata: Mapping[str, Any], partition_key: str | None = None
) -> bool:
    """Attach metadata to the asset's materialization event only (one partition's, if given).

    ``add_output_metadata`` puts its dict on the materialization *and* on the "handled
    output" event, so the run log shows every row twice; it also copies one dict onto
    every partition's event, where a single-run backfill needs per-partition CIDs and
    row counts. Dagster merges the step's asset-scoped metadata into the materialization
    alone (``StepExecutionContext.add_asset_metadata``, not a documented IO-manager API),
    so that is used; ``add_output_metadata`` is the fallback where no step exists (a
    context built with ``build_output_context``). Returns ``False`` on the fallback.
    """
    step = getattr(context, "_step_context", None)
    if step is not None:
        try:
            step.add_asset_metadata(dict(metadata), asset_key=context.asset_key, partition_key=partition_key)
            return True
        except _INCOMPATIBLE_DAGSTER as exc:  # pragma: no cover - only on an incompatible Dagster
            context.log.warning(f"atdata: could not attach metadata to the materialization ({exc!r})")
    if partition_key is None:
        context.add_output_metadata(dict(metadata))
    return False


# Upstream entries loaded per (run id, step key): load_input records, handle_output reads.
# Module level because Dagster may hand load_input and handle_output different copies
# of the IO manager; bounded so a long-lived process never grows without limit.
_LOADED: "OrderedDict[tuple[str, str], list[dict[str, Any]]]" = OrderedDict()
_LOADED_LOCK = threading.Lock()
_LOADED_MAX = 4096


def _step_id(context: dg.InputContext | dg.OutputContext) -> tuple[str, str] | None:
    step = getattr(context, "_step_context", None)
    if step is None:
        return None
    return step.run_id, step.step.key


def _record_loaded(context: dg.InputContext, items: list[dict[str, Any]]) -> None:
    sid = _step_id(context)
    if sid is None or not items:
        return
    with _LOADED_LOCK:
        bucket = _LOADED.setdefault(sid, [])
        for it in items:
            if it not in bucket:
                bucket.append(it)
        _LOADED.move_to_end(sid)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)


def _loaded_for(context: dg.OutputContext) -> list[dict[str, Any]]:
    sid = _step_id(context)
    if sid is None:
        return []
    with _LOADED_LOCK:
        return [dict(x) for x in _LOADED.get(sid, [])]


# --------------------------------------------------------------------------- helpers
class _Tap:
    """Pass samples through unchanged, remembering the type and a few summarized rows."""

    __slots__ = ("_it", "_want", "rows", "columns", "sample_type")

    def __init__(self, samples: Iterable[Any], want: int):
        self._it = iter(samples)
        self._want = max(int(want), 1)
        self.rows: list[dict[str, str]] = []
        self.columns: list[str] = []
        self.sample_type: type | None = None

    def __iter__(self) -> Iterator[Any]:
        # Pull the first few samples (bounded) for the preview, then hand the rest over
        # through itertools.chain: no per-sample Python frame on the hot path.
        it = self._it
        head = list(itertools.islice(it, self._want))
        if head:
            self.sample_type = type(head[0])
            self.columns = preview_columns(self.sample_type, head[0])
            self.rows = [summarize_sample(s, self.columns) for s in head]
        return itertools.chain(head, it)


def _check_iterable(obj: Any, what: str) -> None:
    if isinstance(obj, (str, bytes, bytearray, memoryview)) or not isinstance(obj, Iterable):
        raise ConfigurationError(
            f"{what} returned {type(obj).__name__}; AtdataIOManager stores an iterable (list or generator) "
            "of packable samples, a Dataset of existing shards, or None. Return e.g. [sample] or yield samples"
        )


class _Stored(NamedTuple):
    """One written entry and what its materialization metadata shows."""

    entry: "LocalDatasetEntry"
    sample_type: type | None
    preview: list[dict[str, str]] | None
    columns: list[str]
    #: the name of the existing entry this output is exactly (stored as a label on it), if any
    alias_of: str | None = None
    #: the output's own dataset name in its repository (a label when ``alias_of`` is set)
    name: str | None = None

    def metadata(self, md: dict[str, Any], repo: str) -> dict[str, Any]:
        """``md`` naming this output's own dataset name, and the entry it aliases if any."""
        if self.alias_of is not None and self.name is not None:
            md["atdata/name"] = dg.MetadataValue.text(self.name)
            md["dagster/table_name"] = dg.MetadataValue.text(self.name if repo == "local" else f"{repo}/{self.name}")
            md["atdata/alias_of"] = dg.MetadataValue.text(self.alias_of)
        return md


# --------------------------------------------------------------------------- the IO manager
class AtdataIOManager(dg.ConfigurableIOManager):
    """Store asset outputs as datasets in an atdata index; load inputs as lazy ``Dataset[T]``.

    Per-asset definition metadata overrides the defaults below: ``atdata/name`` (the
    dataset name instead of the asset-key path), ``atdata/repo``, ``atdata/maxcount``,
    ``atdata/maxsize``, ``atdata/manifest``, ``atdata/promote`` (mark the entry for
    the promotion sensor) and ``atdata/allow_empty`` (an output with no samples becomes an
    empty dataset, typed by the asset's return annotation, instead of failing). On an ``AssetIn``, ``allow_missing_partitions: True`` lets a
    fan-in skip upstream partitions that were never materialized.

    Single-run backfills (``BackfillPolicy.single_run()``): an asset run over a range of
    partitions returns a mapping ``partition key -> samples`` (or ``-> Dataset``) with
    exactly the keys of the range; one entry is written per partition, each partition's
    materialization gets its own ``atdata/cid`` and row count. The data version of a range
    run is Dagster's default (Dagster keeps one data version per asset and step).
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt option fails; it is never silently ignored

    index: dg.ResourceDependency[AtdataIndexResource] = Field(
        description="The index to store datasets in and load them from: an AtdataIndexResource.",
    )
    repo: str = Field(
        default="local",
        description="Repository written to unless an asset sets 'atdata/repo': 'local' or a name in the index's repos.",
    )
    maxcount: int = Field(default=10000, description="Maximum samples per shard (asset metadata 'atdata/maxcount' overrides).")
    maxsize: Optional[int] = Field(
        default=None, description="Maximum bytes per shard, None for no limit (asset metadata 'atdata/maxsize' overrides)."
    )
    manifest: bool = Field(
        default=False, description="Write per-shard manifest sidecars (asset metadata 'atdata/manifest' overrides)."
    )
    preview_rows: int = Field(
        default=5, description="How many leading samples are summarized in the 'atdata/preview' metadata table (0 for none)."
    )

    def output_settings(self, metadata: Mapping[str, Any] | None, asset_key: dg.AssetKey) -> OutputSettings:
        """The write settings of ``asset_key``: its ``atdata/*`` metadata over this IO manager's config."""
        defaults = WriteDefaults(repo=self.repo, maxcount=self.maxcount, maxsize=self.maxsize, manifest=self.manifest)
        return OutputSettings.parse(metadata, asset_key, defaults)

    # ------------------------------------------------------------------ output
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write ``obj`` (samples, a ``Dataset`` or, per partition, a mapping of them) as index entries."""
        if obj is None:
            meta = context.definition_metadata or {}
            if meta_value(meta.get("atdata/no_dataset")) is True:
                return  # the asset says it produces no dataset
            what = context.asset_key.to_user_string() if context.has_asset_key else context.name
            raise NoDatasetReturnedError(
                f"asset {what!r} returned None, so nothing was written (a forgotten `return`?). Return the "
                "samples (a list, a generator or a Dataset), `return dg.Output(gen)` from a generator "
                "function, or set metadata={'atdata/no_dataset': True} on an asset that really produces no dataset"
            )
        if not context.has_asset_key:
            raise ConfigurationError(
                f"AtdataIOManager stores asset outputs; output {context.name!r} of op {context.op_def.name!r} "
                "has no asset key. Use it with @asset, or give this op another IO manager"
            )
        index = self.index.get_index()
        settings = self.output_settings(context.definition_metadata, context.asset_key)
        upstream = _loaded_for(context)
        if context.has_asset_partitions and not context.has_partition_key:
            self._handle_range(context, index, obj, settings, upstream)
            return
        partition = context.partition_key if context.has_partition_key else None
        if isinstance(obj, Mapping):
            if partition is None:
                raise ConfigurationError(
                    f"asset {context.asset_key.to_user_string()!r} returned a mapping; mappings of "
                    "partition key -> samples are only for partitioned assets run over a range"
                )
            if set(obj) != {partition}:
                raise ConfigurationError(
                    f"asset {context.asset_key.to_user_string()!r} (partition {partition!r}) returned a mapping "
                    f"with keys {sorted(map(str, obj))[:5]}; it must hold exactly the run's partition"
                )
            obj = obj[partition]
        stored = self._store(context, index, obj, partition, settings, upstream)
        md = stored.metadata(entry_metadata(
            stored.entry, sample_type=stored.sample_type, partitioned=partition is not None,
            preview=stored.preview, preview_cols=stored.columns, repo=settings.repo, upstream=upstream,
        ), settings.repo)
        lineage = column_lineage(stored.sample_type, _upstream_types(index, upstream))
        if lineage is not None:
            md["dagster/column_lineage"] = dg.MetadataValue.column_lineage(lineage)
        add_materialization_metadata(context, md)
        set_data_version(context, dataset_data_version(stored.entry))

    def _handle_range(
        self, context: dg.OutputContext, index: "Index", obj: Any, settings: OutputSettings, upstream: list[dict[str, Any]],
    ) -> None:
        keys = list(context.asset_partition_keys)
        what = f"asset {context.asset_key.to_user_string()!r}"
        if not isinstance(obj, Mapping):
            raise ConfigurationError(
                f"{what} ran over {len(keys)} partitions ({keys[0]!r}..{keys[-1]!r}) in one run and returned "
                f"{type(obj).__name__}; return a mapping partition key -> samples with one item per partition "
                "(e.g. {pk: gen(pk) for pk in context.partition_keys})"
            )
        missing = [k for k in keys if k not in obj]
        extra = [str(k) for k in obj if k not in set(keys)]
        if missing or extra:
            raise ConfigurationError(
                f"{what} returned a mapping whose keys do not match the run's partitions: "
                f"missing {missing[:5]}, unexpected {extra[:5]}"
            )
        cids: dict[str, str] = {}
        total_rows = total_bytes = total_shards = 0
        for pk in keys:
            value = obj[pk]
            if value is None:
                continue
            stored = self._store(context, index, value, pk, settings, upstream)
            md = stored.metadata(entry_metadata(
                stored.entry, sample_type=stored.sample_type, partitioned=True, preview=stored.preview,
                preview_cols=stored.columns, repo=settings.repo, upstream=upstream,
            ), settings.repo)
            add_materialization_metadata(context, md, pk)
            cids[pk] = stored.entry.cid
            stats = stored.entry.stats
            total_rows += int(stats.get("num_samples") or 0)
            total_bytes += int(stats.get("total_bytes") or 0)
            total_shards += int(stats.get("num_shards") or len(stored.entry.data_urls))
        context.log.info(
            f"atdata: wrote {len(cids)} partitions of {what}: {total_rows:,} samples, {total_shards} shards, "
            f"{total_bytes / 1e6:.1f} MB"
        )

    def _store(
        self, context: dg.OutputContext, index: "Index", obj: Any, partition: str | None,
        settings: OutputSettings, upstream: list[dict[str, Any]],
    ) -> _Stored:
        bare, full = settings.dataset_names(index, partition)
        lineage = {
            "asset_key": list(context.asset_key.path),
            "partition": partition,
            "run_id": context.run_id,
            "code_version": _code_version(context),
            "upstream": upstream,
        }
        metadata: dict[str, Any] = {"lineage": lineage}
        if settings.promote:
            metadata["promote"] = True
        write_opts = settings.write_options()
        started = time.monotonic()
        alias_of: str | None = None
        if isinstance(obj, Dataset):
            entry = None
            # zero-copy: the shards are indexed where they are, unless the asset asks for a copy
            # (atdata/copy) or for its own shard size (atdata/maxcount, atdata/maxsize)
            if not (settings.copy or settings.reshard) and _referencable(obj):
                lineage["parents"] = obj.parent_cids()
                try:
                    entry = index.reference_dataset(obj, name=full, metadata=metadata)
                except SameShardsError as same:
                    # exactly another entry's shards (an upstream passed through unchanged): that
                    # entry *is* this dataset, so the name becomes a label on it; nothing is copied
                    existing: LocalDatasetEntry = same.existing
                    entry, alias_of = existing, existing.name
                    index.label(bare, existing.cid, repo=settings.repo)
            if entry is None:
                entry = index.insert_dataset(obj, name=full, metadata=metadata, **write_opts)
            sample_type: type | None = obj.sample_type
            cols = preview_columns(sample_type)
            rows = None
            if self.preview_rows > 0:
                try:
                    rows = [summarize_sample(s, cols) for s in obj.head(self.preview_rows)]
                # The entry is already committed: a preview (a read of arbitrary existing
                # shards, any store) must never fail the materialization; it is logged.
                except Exception as exc:  # noqa: BLE001
                    context.log.warning(f"atdata: no preview for {bare!r}: {exc}")
        else:
            _check_iterable(obj, f"asset {context.asset_key.to_user_string()!r}")
            tap = _Tap(obj, max(self.preview_rows, 1))
            declared = _output_sample_type(context) if settings.allow_empty else None
            entry = index.write_samples(tap, name=full, metadata=metadata, progress=_progress_logger(context, bare, started),
                                allow_empty=settings.allow_empty, sample_type=declared, **write_opts)
            sample_type = tap.sample_type or declared
            rows = tap.rows[: self.preview_rows] if self.preview_rows > 0 else None
            cols = tap.columns
        stats = entry.stats
        elapsed = max(time.monotonic() - started, 1e-9)
        n = stats.get("num_samples")
        size = stats.get("total_bytes") or 0
        context.log.info(
            f"atdata: {full} -> {entry.cid}: {n if n is not None else '?'} samples, "
            f"{stats.get('num_shards', len(entry.data_urls))} shards, {size / 1e6:.1f} MB in {elapsed:.1f}s"
        )
        if alias_of is not None:
            context.log.info(f"atdata: {full} is exactly {alias_of!r}'s shards; labelled {full} -> {entry.cid}, nothing copied")
        return _Stored(entry, sample_type, rows, cols, alias_of, bare)

    # ------------------------------------------------------------------- input
    def load_input(self, context: dg.InputContext) -> Any:
        """A lazy ``Dataset`` over the upstream entries the upstream materializations recorded."""
        if not context.has_asset_key:
            raise ConfigurationError(
                "AtdataIOManager loads asset inputs; this input has no upstream asset key. "
                "Load it with another input manager"
            )
        index = self.index.get_index()
        key = context.asset_key
        upstream_meta = context.upstream_output.definition_metadata if context.upstream_output is not None else None
        settings = self.output_settings(upstream_meta, key)
        inputs = InputSettings.parse(context.definition_metadata, key)
        sample_type = _annotated_sample_type(context)

        partitions: list[str | None]
        if context.has_asset_partitions:
            partitions = list(context.asset_partition_keys)
        else:
            partitions = [None]
        cids = recorded_cids(_instance_of(context), key, partitions)
        found: list[tuple[str | None, "LocalDatasetEntry"]] = []
        missing: list[str | None] = []
        for pk in partitions:
            entry = resolve_entry(index, settings, pk, cids.get(pk), where=self.index.describe())
            if entry is None:
                missing.append(pk)
            else:
                found.append((pk, entry))
        what = f"upstream asset {key.to_user_string()!r}"
        if missing and not (inputs.allow_missing_partitions and found):
            if partitions == [None]:
                raise NotFoundError(
                    f"{what} has no dataset in the index (looked for {settings.dataset_names(index, None)[1]!r}); "
                    "materialize it first"
                )
            shown = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
            hint = (
                "none of its partitions is materialized" if not found
                else "set AssetIn(metadata={'allow_missing_partitions': True}) to skip them"
            )
            raise NotFoundError(
                f"{what}: {len(missing)} of {len(partitions)} partitions are not materialized ({shown}); "
                f"materialize them first or {hint}"
            )
        if missing:
            context.log.warning(
                f"atdata: {what}: skipping {len(missing)} partitions that are not materialized "
                f"(allow_missing_partitions): {missing[:10]}"
            )
        if sample_type is not None:
            for schema_ref in dict.fromkeys(e.schema_ref for _, e in found):
                _check_matches_schema(index, sample_type, schema_ref, what)
        _record_loaded(
            context,
            [{"asset_key": list(key.path), "partition": pk, "cid": e.cid} for pk, e in found],
        )
        dataset = _dataset_over(index, [e for _, e in found], sample_type, [pk for pk, _ in found])
        if inputs.columns is None:
            return dataset
        try:
            return dataset.select_columns(inputs.columns)
        except FieldMismatchError as exc:
            raise ConfigurationError(f"input from {what}: AssetIn metadata 'columns': {exc}") from None


def _upstream_types(index: "Index", upstream: list[dict[str, Any]]) -> list[tuple[dg.AssetKey, type]]:
    """(asset key, sample type) of each upstream entry this step loaded (for column lineage)."""
    out: list[tuple[dg.AssetKey, type]] = []
    seen: set[tuple[tuple[str, ...], str]] = set()
    for u in upstream:
        key = tuple(u.get("asset_key") or ())
        cid = u.get("cid")
        if not key or not isinstance(cid, str):
            continue
        try:
            ref = index.get_entry(cid).schema_ref
            if (key, ref) in seen:
                continue
            seen.add((key, ref))
            out.append((dg.AssetKey(list(key)), index.get_schema_type(ref, register=False)))
        except AtdataError:  # an upstream entry gone or unreadable: no lineage for it, the write stands
            continue
    return out


def _referencable(ds: Dataset[Any]) -> bool:
    """Whether ``ds`` is its shards as they are (not filtered, mapped or seen through a lens) and every
    shard has a recorded checksum and sample count: then it needs no copy."""
    if ds.is_transformed:
        return False
    try:
        return all(spec.sha256 for spec in ds.shard_specs())
    except (TypeError, AtdataError):  # counts unknown (bare URLs without manifests) or malformed metadata
        return False


def _code_version(context: dg.OutputContext) -> str | None:
    try:
        return context.asset_spec.code_version
    except dg.DagsterInvariantViolationError:  # a context built without its asset spec
        return None


def _progress_logger(context: dg.OutputContext, name: str, started: float) -> Callable[[int, int], None]:
    def progress(samples: int, nbytes: int) -> None:
        elapsed = time.monotonic() - started
        if elapsed < PROGRESS_AFTER_SECONDS:  # short writes: the final summary line is enough
            return
        context.log.info(
            f"atdata: writing {name}: {samples:,} samples, {nbytes / 1e6:.1f} MB "
            f"({samples / elapsed:,.0f} samples/s, {nbytes / 1e6 / elapsed:.1f} MB/s)"
        )

    return progress


def _check_matches_schema(index: "Index", sample_type: type, schema_ref: str, what: str) -> None:
    """:class:`SchemaError` when ``Dataset[sample_type]`` cannot read entries of ``schema_ref``.

    Checked when the input is loaded, so a wrong annotation is reported as such, naming the
    fields, instead of failing on the first decode inside the asset. Types without a field
    plan (``DictSample``, duck-typed samples) and entries without a stored schema are not checked.
    """
    if not dataclasses.is_dataclass(sample_type):
        return
    try:
        stored = index.get_schema(schema_ref)
        wanted = build_schema_record(sample_type, version="0.0.0")
    except AtdataError:
        return  # no stored schema, or a type no schema describes: the decode reports it
    def kinds(record: dict) -> dict[str, str]:
        fields = [f for f in record.get("fields", []) if isinstance(f, dict)]
        return {str(f.get("name")): field_type_text(f.get("fieldType"), dtype=False) for f in fields}

    have, need = kinds(stored), kinds(wanted)
    defaults = {
        f.name for f in dataclasses.fields(sample_type)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    missing = sorted(n for n in need if n not in have and n not in defaults)
    extra = sorted(n for n in have if n not in need)
    differ = sorted(f"{n} ({have[n]} stored, {need[n]} annotated)" for n in need.keys() & have.keys() if need[n] != have[n])
    if missing or extra or differ:
        parts = [f"missing {missing}" if missing else "", f"not in the annotation {extra}" if extra else "",
                 f"different types {differ}" if differ else ""]
        raise SchemaError(
            f"{what}: Dataset[{sample_type.__name__}] does not match the stored schema {schema_ref}: "
            f"{'; '.join(p for p in parts if p)}. Annotate the input with the type it was written with "
            "(Index.get_schema_type), or leave it unannotated to use the stored schema"
        )


def _annotated_sample_type(context: dg.InputContext) -> type | None:
    """``T`` of a ``Dataset[T]`` input annotation, else ``None``."""
    try:
        typing_type = context.dagster_type.typing_type
    except dg.DagsterInvariantViolationError:  # a context built without a Dagster type
        return None
    if isinstance(typing_type, type) and issubclass(typing_type, Dataset):
        return typing_type.sample_type
    return None


def _output_sample_type(context: dg.OutputContext) -> type | None:
    """``T`` of an asset's return annotation (``list[T]``, ``Iterator[T]``, ``Dataset[T]``...), else ``None``.

    What an opted-in empty dataset is typed by, since it has no sample to take it from.
    """
    try:
        typing_type = context.dagster_type.typing_type
    except dg.DagsterInvariantViolationError:  # a context built without a Dagster type
        return None
    for _ in range(3):  # Output[list[T]] / Iterator[T] / T, unwrapped outside in
        if isinstance(typing_type, type) and issubclass(typing_type, Dataset):
            return typing_type.sample_type
        if isinstance(typing_type, type) and hasattr(typing_type, "packed"):
            return typing_type
        args = typing.get_args(typing_type)
        if not args:
            return None
        typing_type = args[0]
    return None


def _instance_of(context: dg.InputContext) -> dg.DagsterInstance | None:
    """The run's instance; ``None`` only for a context built without one (nothing was recorded).

    Any other failure propagates: without the instance the recorded CIDs are unknown,
    and loading the name's latest entry instead would silently read other data.
    """
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


def _dataset_over(
    index: "Index", entries: list["LocalDatasetEntry"], sample_type: type | None, partitions: list[str | None],
) -> Dataset[Any]:
    if len(entries) == 1:
        return index.dataset_for_entry(entries[0], sample_type)
    if sample_type is None:
        refs = sorted({e.schema_ref for e in entries})
        if len(refs) > 1:
            raise ConfigurationError(
                f"the upstream partitions were written with different schemas ({refs[:4]}); annotate the "
                "input as Dataset[YourSample] to read them all as one type"
            )
        sample_type = index.get_schema_type(refs[0], register=False)
    # one dataset over every partition's shards, with their checksums, counts and sizes (len(),
    # ds[i] and ds.torch() need them), each opened by its own entry's route; no copy
    dataset = Dataset.concat([index.dataset_for_entry(e, sample_type) for e in entries])
    assert isinstance(dataset.metadata, dict)
    dataset.metadata["entries"] = [{"partition": pk, "cid": e.cid, "name": e.name} for pk, e in zip(partitions, entries)]
    return dataset
