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
    ``atdata/cid``), falling back to the name's latest label, and returns a lazy
    ``Dataset[T]``: typed from the input annotation (``Dataset[Digit]``) or else from the
    stored schema. Several upstream partitions fan in as one dataset over all their shards.

Dataset names (see :func:`dataset_name`)
    ``<asset key path joined by '/'>[/partition=<partition key>]``, each segment
    percent-escaped, e.g. ``mnist/train/partition=2024-01-01``.
"""


import hashlib
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Optional, Sequence

import dagster as dg
from pydantic import Field

from .errors import ConfigurationError, InvalidNameError, NotFoundError
from .metadata import entry_metadata, preview_columns, summarize_sample
from .resources import AtdataIndexResource

if TYPE_CHECKING:  # pragma: no cover
    from .index.entry import LocalDatasetEntry
    from .index.index import Index

__all__ = [
    "AtdataIOManager",
    "DatasetNameParts",
    "dataset_name",
    "parse_dataset_name",
    "set_data_version",
    "add_partition_metadata",
]

# --------------------------------------------------------------------------- naming
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_HEX = "0123456789ABCDEF"
PARTITION_MARK = "partition="
HASHED_PARTITION_MARK = "partition~sha256-"
EMPTY_SEGMENT = "~"
#: an escaped partition key longer than this (bytes) is replaced by its SHA-256
MAX_PARTITION_SEGMENT = 200
_MAX_NAME = 512
_MAX_SEGMENT_BYTES = 255
#: writes shorter than this log only their summary, longer ones their progress too
PROGRESS_AFTER_SECONDS = 2.0


def escape_segment(text: str) -> str:
    """Percent-escape one name segment.

    Bytes of the UTF-8 encoding outside ``[A-Za-z0-9_.-]`` become ``%XX``, a leading
    ``.`` becomes ``%2E`` (so ``.``, ``..`` and ``.tmp*`` can never appear), and the
    empty string becomes ``~``. The result never contains ``/``, ``=``, ``~`` (except as
    the whole empty marker), NUL or a control character, and :func:`unescape_segment`
    inverts it exactly.
    """
    if text == "":
        return EMPTY_SEGMENT
    try:
        raw = text.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        raise InvalidNameError(
            f"cannot name a dataset after {text!r:.80}: asset key components and partition keys "
            "must be str without lone surrogates"
        ) from None
    out: list[str] = []
    for i, b in enumerate(raw):
        if b in _SAFE and not (i == 0 and b == 0x2E):
            out.append(chr(b))
        else:
            out.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(out)


def unescape_segment(segment: str) -> str:
    """The inverse of :func:`escape_segment` (:class:`InvalidNameError` if malformed)."""
    if segment == EMPTY_SEGMENT:
        return ""
    raw = bytearray()
    i = 0
    try:
        while i < len(segment):
            c = segment[i]
            if c == "%":
                hx = segment[i + 1 : i + 3]
                if len(hx) != 2 or any(ch not in _HEX for ch in hx):
                    raise ValueError
                raw.append(int(hx, 16))
                i += 3
            else:
                if ord(c) > 127 or ord(c) not in _SAFE:
                    raise ValueError
                raw.append(ord(c))
                i += 1
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise InvalidNameError(f"{segment!r} is not an escaped name segment (see atdata_dagster.io_manager.escape_segment)") from None


def partition_segment(partition_key: str) -> str:
    """The final name segment for a partition key: ``partition=<escaped>``.

    Keys whose escaped form is longer than 200 bytes become
    ``partition~sha256-<hex digest of the UTF-8 key>``: deterministic and
    collision-resistant; the key itself is kept in the entry's ``lineage``.
    """
    escaped = escape_segment(partition_key)
    if len(escaped) > MAX_PARTITION_SEGMENT:
        return HASHED_PARTITION_MARK + hashlib.sha256(partition_key.encode("utf-8")).hexdigest()
    return PARTITION_MARK + escaped


class DatasetNameParts(NamedTuple):
    """What :func:`parse_dataset_name` recovers from a dataset name."""

    asset_key: dg.AssetKey
    partition_key: Optional[str]
    #: hex SHA-256 of the partition key when the key was too long to spell out
    partition_sha256: Optional[str] = None


def dataset_name(
    asset_key: dg.AssetKey | Sequence[str] | str,
    partition_key: str | None = None,
    *,
    base: str | None = None,
) -> str:
    """The dataset name for an asset (and partition).

    The rule: every component of the asset key path is escaped with
    :func:`escape_segment` and joined with ``/``; a partitioned asset appends one final
    segment ``partition=<escaped key>`` (hashed for very long keys, see
    :func:`partition_segment`). ``base`` (the ``atdata/name`` asset metadata) replaces
    the asset-key part and is used as written. Because escaped key segments never
    contain ``=`` or start with ``partition~``, the partition segment is unambiguous and
    :func:`parse_dataset_name` inverts the rule. Any partition key is safe: slashes,
    ``..``, NUL, control characters and unicode are escaped, so a name can never escape
    its store directory.
    """
    if base is not None:
        from .index.names import validate_dataset_name

        head = validate_dataset_name(base)
    else:
        path = _key_path(asset_key)
        if not path:
            raise InvalidNameError("an asset key needs at least one path component")
        head = "/".join(escape_segment(p) for p in path)
    if partition_key is None:
        name = head
    else:
        if not isinstance(partition_key, str):
            raise InvalidNameError(
                f"partition key {partition_key!r:.80} is a {type(partition_key).__name__}; Dagster "
                "partition keys are str"
            )
        try:
            partition_key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidNameError(
                f"partition key {partition_key!r:.80} contains a lone surrogate and is not valid "
                "unicode; use keys that encode as UTF-8"
            ) from None
        segment = partition_segment(partition_key)
        if len(head) + 1 + len(segment) > _MAX_NAME:  # a long key under a long asset path: hash it
            segment = HASHED_PARTITION_MARK + hashlib.sha256(partition_key.encode("utf-8")).hexdigest()
        name = f"{head}/{segment}"
    if len(name) > _MAX_NAME or any(len(s.encode()) > _MAX_SEGMENT_BYTES for s in head.split("/")):
        raise InvalidNameError(
            f"dataset name for asset {_key_path(asset_key)!r} would be {len(name)} characters "
            f"(limit {_MAX_NAME}, {_MAX_SEGMENT_BYTES} bytes per segment); set a shorter "
            "'atdata/name' in the asset's metadata"
        )
    from .index.names import validate_dataset_name

    return validate_dataset_name(name)


def parse_dataset_name(name: str) -> DatasetNameParts:
    """Invert :func:`dataset_name` for a name built from an asset key (no ``base``)."""
    segments = name.split("/")
    partition: str | None = None
    digest: str | None = None
    last = segments[-1]
    if len(segments) > 1 and last.startswith(PARTITION_MARK):
        partition = unescape_segment(last[len(PARTITION_MARK):])
        segments = segments[:-1]
    elif len(segments) > 1 and last.startswith(HASHED_PARTITION_MARK):
        digest = last[len(HASHED_PARTITION_MARK):]
        segments = segments[:-1]
    return DatasetNameParts(dg.AssetKey([unescape_segment(s) for s in segments]), partition, digest)


def _key_path(asset_key: dg.AssetKey | Sequence[str] | str) -> list[str]:
    if isinstance(asset_key, dg.AssetKey):
        return list(asset_key.path)
    if isinstance(asset_key, str):
        return [asset_key]
    return list(asset_key)


# --------------------------------------------------------------------------- Dagster seams
def set_data_version(context: dg.OutputContext, cid: str) -> bool:
    """Make ``cid`` the data version of the asset being materialized.

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
    except Exception as exc:  # pragma: no cover - only on an incompatible Dagster
        context.log.warning(f"atdata: could not set the data version to the CID ({exc!r}); Dagster's default applies")
        return False


def add_partition_metadata(context: dg.OutputContext, partition_key: str, metadata: Mapping[str, Any]) -> bool:
    """Attach metadata to one partition's materialization of a multi-partition output.

    ``add_output_metadata`` copies one dict onto every partition's event; a single-run
    backfill needs per-partition CIDs and row counts, which Dagster merges from the
    step's partition-scoped asset metadata (``StepExecutionContext.add_asset_metadata``,
    not a documented IO-manager API). Returns ``False`` when unavailable.
    """
    step = getattr(context, "_step_context", None)
    if step is None:
        return False
    try:
        step.add_asset_metadata(dict(metadata), asset_key=context.asset_key, partition_key=partition_key)
        return True
    except Exception as exc:  # pragma: no cover - only on an incompatible Dagster
        context.log.warning(f"atdata: could not attach metadata to partition {partition_key!r} ({exc!r})")
        return False


# Upstream entries loaded per (run id, step key): load_input records, handle_output reads.
# Module level because Dagster may hand load_input and handle_output different copies
# of the IO manager; bounded so a long-lived process never grows without limit.
_LOADED: "OrderedDict[tuple[str, str], list[dict[str, Any]]]" = OrderedDict()
_LOADED_LOCK = threading.Lock()
_LOADED_MAX = 4096


def _step_id(context: Any) -> tuple[str, str] | None:
    step = getattr(context, "_step_context", None)
    if step is None:
        return None
    try:
        return step.run_id, step.step.key
    except Exception:  # pragma: no cover
        return None


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


def _meta_value(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def _is_dataset(obj: Any) -> bool:
    from .dataset import Dataset

    return isinstance(obj, Dataset)


def _check_iterable(obj: Any, what: str) -> None:
    if isinstance(obj, (str, bytes, bytearray, memoryview)) or not isinstance(obj, Iterable):
        raise ConfigurationError(
            f"{what} returned {type(obj).__name__}; AtdataIOManager stores an iterable (list or generator) "
            "of packable samples, a Dataset of existing shards, or None. Return e.g. [sample] or yield samples"
        )


def _cid_from_event_metadata(metadata: Mapping[str, Any]) -> str | None:
    cid = _meta_value(metadata.get("atdata/cid"))
    return str(cid) if cid else None


# --------------------------------------------------------------------------- the IO manager
class AtdataIOManager(dg.ConfigurableIOManager):
    """Store asset outputs as datasets in an atdata index; load inputs as lazy ``Dataset[T]``.

    Per-asset definition metadata overrides the defaults below: ``atdata/name`` (the
    dataset name instead of the asset-key path), ``atdata/repo``, ``atdata/maxcount``,
    ``atdata/maxsize``, ``atdata/manifest`` and ``atdata/promote`` (mark the entry for
    the promotion sensor). On an ``AssetIn``, ``allow_missing_partitions: True`` lets a
    fan-in skip upstream partitions that were never materialized.

    Single-run backfills (``BackfillPolicy.single_run()``): an asset run over a range of
    partitions returns a mapping ``partition key -> samples`` (or ``-> Dataset``) with
    exactly the keys of the range; one entry is written per partition, each partition's
    materialization gets its own ``atdata/cid`` and row count. The data version of a range
    run is Dagster's default (Dagster keeps one data version per asset and step).
    """

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

    # ------------------------------------------------------------------ output
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if not context.has_asset_key:
            raise ConfigurationError(
                f"AtdataIOManager stores asset outputs; output {context.name!r} of op {context.op_def.name!r} "
                "has no asset key. Use it with @asset, or give this op another IO manager"
            )
        index = self.index.get_index()
        settings = self._settings(context.definition_metadata or {}, context.asset_key)
        upstream = _loaded_for(context)
        multi = context.has_asset_partitions and not context.has_partition_key
        if multi:
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
        entry, sample_type, rows, cols = self._store(context, index, obj, partition, settings, upstream)
        context.add_output_metadata(
            entry_metadata(
                entry, sample_type=sample_type, partitioned=partition is not None,
                preview=rows, preview_cols=cols, repo=settings["repo"], upstream=upstream,
            )
        )
        set_data_version(context, entry.cid)

    def _handle_range(self, context: dg.OutputContext, index: "Index", obj: Any, settings: dict, upstream: list) -> None:
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
            entry, sample_type, rows, cols = self._store(context, index, value, pk, settings, upstream)
            md = entry_metadata(
                entry, sample_type=sample_type, partitioned=True, preview=rows, preview_cols=cols,
                repo=settings["repo"], upstream=upstream,
            )
            add_partition_metadata(context, pk, md)
            cids[pk] = entry.cid
            stats = (entry.metadata or {}).get("stats") or {}
            total_rows += int(stats.get("num_samples") or 0)
            total_bytes += int(stats.get("total_bytes") or 0)
            total_shards += int(stats.get("num_shards") or len(entry.data_urls))
        context.log.info(
            f"atdata: wrote {len(cids)} partitions of {what}: {total_rows:,} samples, {total_shards} shards, "
            f"{total_bytes / 1e6:.1f} MB"
        )

    def _settings(self, meta: Mapping[str, Any], asset_key: dg.AssetKey) -> dict[str, Any]:
        return asset_settings(
            meta, asset_key,
            defaults={"repo": self.repo, "maxcount": self.maxcount, "maxsize": self.maxsize, "manifest": self.manifest},
        )

    def _full_name(self, index: "Index", settings: dict, asset_key: dg.AssetKey, partition: str | None) -> tuple[str, str]:
        return full_dataset_name(index, settings, asset_key, partition)

    def _store(
        self, context: dg.OutputContext, index: "Index", obj: Any, partition: str | None, settings: dict, upstream: list,
    ) -> tuple["LocalDatasetEntry", type | None, list[dict[str, str]] | None, list[str]]:
        bare, full = self._full_name(index, settings, context.asset_key, partition)
        lineage = {
            "asset_key": list(context.asset_key.path),
            "partition": partition,
            "run_id": context.run_id,
            "code_version": _code_version(context),
            "upstream": upstream,
        }
        metadata: dict[str, Any] = {"lineage": lineage}
        if settings["promote"]:
            metadata["promote"] = True
        write_opts = dict(maxcount=settings["maxcount"], maxsize=settings["maxsize"], manifest=settings["manifest"])
        if write_opts["maxcount"] is None:
            write_opts.pop("maxcount")
        started = time.monotonic()
        if _is_dataset(obj):
            entry = index.insert_dataset(obj, name=full, metadata=metadata, **write_opts)
            sample_type = obj.sample_type
            cols = preview_columns(sample_type)
            rows = None
            if self.preview_rows > 0:
                try:
                    rows = [summarize_sample(s, cols) for s in obj.head(self.preview_rows)]
                except Exception as exc:  # a preview must never fail the materialization
                    context.log.warning(f"atdata: no preview for {bare!r}: {exc}")
        else:
            _check_iterable(obj, f"asset {context.asset_key.to_user_string()!r}")
            tap = _Tap(obj, max(self.preview_rows, 1))
            entry = index.write(tap, name=full, metadata=metadata, progress=_progress_logger(context, bare, started), **write_opts)
            sample_type = tap.sample_type
            rows = tap.rows[: self.preview_rows] if self.preview_rows > 0 else None
            cols = tap.columns
        stats = (entry.metadata or {}).get("stats") or {}
        elapsed = max(time.monotonic() - started, 1e-9)
        n = stats.get("num_samples")
        size = stats.get("total_bytes") or 0
        context.log.info(
            f"atdata: {full} -> {entry.cid}: {n if n is not None else '?'} samples, "
            f"{stats.get('num_shards', len(entry.data_urls))} shards, {size / 1e6:.1f} MB in {elapsed:.1f}s"
        )
        return entry, sample_type, rows, cols

    # ------------------------------------------------------------------- input
    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key:
            raise ConfigurationError(
                "AtdataIOManager loads asset inputs; this input has no upstream asset key. "
                "Load it with another input manager"
            )
        index = self.index.get_index()
        key = context.asset_key
        upstream_meta: Mapping[str, Any] = {}
        if context.upstream_output is not None:
            upstream_meta = context.upstream_output.definition_metadata or {}
        settings = self._settings(upstream_meta, key)
        in_meta = {k: _meta_value(v) for k, v in (context.definition_metadata or {}).items()}
        allow_missing = bool(in_meta.get("allow_missing_partitions", False))
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
            entry = self._resolve(index, settings, key, pk, cids.get(pk))
            if entry is None:
                missing.append(pk)
            else:
                found.append((pk, entry))
        what = f"upstream asset {key.to_user_string()!r}"
        if missing and not (allow_missing and found):
            if partitions == [None]:
                raise NotFoundError(
                    f"{what} has no dataset in the index (looked for {self._full_name(index, settings, key, None)[1]!r}); "
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
        _record_loaded(
            context,
            [{"asset_key": list(key.path), "partition": pk, "cid": e.cid} for pk, e in found],
        )
        return _dataset_over(index, [e for _, e in found], sample_type, [pk for pk, _ in found])

    def _resolve(
        self, index: "Index", settings: dict, key: dg.AssetKey, partition: str | None, cid: str | None,
    ) -> Optional["LocalDatasetEntry"]:
        return resolve_entry(index, settings, key, partition, cid, where=self.index.describe())


def asset_settings(meta: Mapping[str, Any], asset_key: dg.AssetKey, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write settings of an asset: its ``atdata/*`` definition metadata over ``defaults``."""
    d = {"repo": "local", "maxcount": 10000, "maxsize": None, "manifest": False, **(defaults or {})}
    m = {k: _meta_value(v) for k, v in (meta or {}).items()}
    out = {
        "name": m.get("atdata/name"),
        "repo": m.get("atdata/repo") or d["repo"],
        "maxcount": m.get("atdata/maxcount", d["maxcount"]),
        "maxsize": m.get("atdata/maxsize", d["maxsize"]),
        "manifest": bool(m.get("atdata/manifest", d["manifest"])),
        "promote": bool(m.get("atdata/promote", False)),
    }
    where = f"asset {asset_key.to_user_string()!r}"
    if out["name"] is not None and not isinstance(out["name"], str):
        raise ConfigurationError(f"{where}: 'atdata/name' must be a string, got {out['name']!r}")
    for k in ("maxcount", "maxsize"):
        v = out[k]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigurationError(f"{where}: 'atdata/{k}' must be a positive integer, got {v!r}")
    if not isinstance(out["repo"], str) or not out["repo"]:
        raise ConfigurationError(f"{where}: 'atdata/repo' must be a repository name, got {out['repo']!r}")
    return out


def full_dataset_name(index: "Index", settings: Mapping[str, Any], asset_key: dg.AssetKey, partition: str | None) -> tuple[str, str]:
    """(bare name, ``repo/name``) of an asset partition's dataset, checking the repository exists."""
    repo = settings["repo"]
    if repo not in index.repos:
        raise ConfigurationError(
            f"asset {asset_key.to_user_string()!r}: repository {repo!r} is not mounted; "
            f"configured repositories: {sorted(index.repos)} (AtdataIndexResource.repos)"
        )
    bare = dataset_name(asset_key, partition, base=settings["name"])
    return bare, f"{repo}/{bare}"


def resolve_entry(
    index: "Index", settings: Mapping[str, Any], key: dg.AssetKey, partition: str | None, cid: str | None,
    *, where: str = "the index",
) -> Optional["LocalDatasetEntry"]:
    """The entry with ``cid`` (recorded by the materialization), else the latest under the asset's name.

    ``None`` when neither exists; a recorded CID missing from the index is an error, never
    silently replaced by whatever the name points at now.
    """
    if cid:
        try:
            return index.get_entry(cid)
        except NotFoundError:
            raise NotFoundError(
                f"asset {key.to_user_string()!r}"
                + (f" partition {partition!r}" if partition is not None else "")
                + f" was materialized as index entry {cid}, which {where} does not hold; "
                "check the index configuration or re-materialize it"
            ) from None
    _, full = full_dataset_name(index, settings, key, partition)
    try:
        return index.get_dataset(full)
    except NotFoundError:
        return None


def _code_version(context: dg.OutputContext) -> str | None:
    try:
        return context.asset_spec.code_version
    except Exception:
        return None


def _progress_logger(context: dg.OutputContext, name: str, started: float):
    def progress(samples: int, nbytes: int) -> None:
        elapsed = time.monotonic() - started
        if elapsed < PROGRESS_AFTER_SECONDS:  # short writes: the final summary line is enough
            return
        context.log.info(
            f"atdata: writing {name}: {samples:,} samples, {nbytes / 1e6:.1f} MB "
            f"({samples / elapsed:,.0f} samples/s, {nbytes / 1e6 / elapsed:.1f} MB/s)"
        )

    return progress


def _annotated_sample_type(context: dg.InputContext) -> type | None:
    """``T`` of a ``Dataset[T]`` input annotation, else ``None``."""
    from .dataset import Dataset

    try:
        typing_type = context.dagster_type.typing_type
    except Exception:
        return None
    if isinstance(typing_type, type) and issubclass(typing_type, Dataset):
        return typing_type.sample_type
    return None


def recorded_cids(instance: Any, key: dg.AssetKey, partitions: Sequence[str | None] | None) -> dict[str | None, str]:
    """partition -> ``atdata/cid`` of its latest materialization event in ``instance``.

    ``partitions=[None]`` asks for the unpartitioned asset (key ``None``), ``None`` for
    every partition ever materialized. Events without ``atdata/cid`` (another IO
    manager) are left out.
    """
    if instance is None:
        return {}
    out: dict[str | None, str] = {}
    if partitions is not None and list(partitions) == [None]:
        event = instance.get_latest_materialization_event(key)
        mat = event.asset_materialization if event is not None else None
        if mat is not None and mat.partition is None:
            cid = _cid_from_event_metadata(mat.metadata)
            if cid:
                out[None] = cid
        return out
    wanted = None if partitions is None else {p for p in partitions if p is not None}
    storage_ids = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION, wanted)
    ids = sorted(storage_ids.values())
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk)
        )
        for record in result.records:
            mat = record.asset_materialization
            if mat is None or mat.partition is None:
                continue
            cid = _cid_from_event_metadata(mat.metadata)
            if cid:
                out[mat.partition] = cid
    return out


def _instance_of(context: Any) -> Any:
    try:
        return context.instance
    except Exception:  # contexts built without an instance
        return None


def _dataset_over(index: "Index", entries: list["LocalDatasetEntry"], sample_type: type | None, partitions: list) -> Any:
    from .dataset import Dataset

    if len(entries) == 1:
        return index.dataset_for_entry(entries[0], sample_type)
    if sample_type is None:
        refs = sorted({e.schema_ref for e in entries})
        if len(refs) > 1:
            raise ConfigurationError(
                f"the upstream partitions were written with different schemas ({refs[:4]}); annotate the "
                "input as Dataset[YourSample] to read them all as one type"
            )
        sample_type = index.decode_schema(refs[0])
    urls: list[str] = []
    checksums: dict[str, str] = {}
    for e in entries:
        urls.extend(e.data_urls)
        checksums.update(e.checksums)
    meta = {
        "checksums": checksums,
        "entries": [{"partition": pk, "cid": e.cid, "name": e.name} for pk, e in zip(partitions, entries)],
    }
    # per-shard counts and sizes, concatenated like the URLs: len(), ds[i] and ds.torch() need them
    stats = [(e.metadata or {}).get("stats") or {} for e in entries]
    if all(len(st.get("shard_samples") or ()) == len(e.data_urls) for st, e in zip(stats, entries)):
        meta["stats"] = {
            "num_samples": sum(sum(st["shard_samples"]) for st in stats),
            "shard_samples": [n for st in stats for n in st["shard_samples"]],
            "shard_bytes": [b for st in stats for b in (st.get("shard_bytes") or [None] * len(st["shard_samples"]))],
        }
    return Dataset[sample_type](urls, metadata=meta, opener=index.shard_opener())  # type: ignore[valid-type]
