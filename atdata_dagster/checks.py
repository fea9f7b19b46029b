"""Asset checks for datasets: shard checksums, sample counts and schema decoding.

The checks take no data parameter, so Dagster never loads the dataset through the IO
manager: they look the entry up in the index (the CID the materialization recorded)
and stream over its shards one at a time, in bounded memory.
"""


import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import dagster as dg

from .dataset import Dataset
from .errors import AtdataError
from .io_manager import AtdataIOManager
from .metadata import column_schema
from .resolution import OutputSettings, recorded_cids, resolve_entry
from .resources import AtdataIndexResource
from .shards.reader import iter_samples

if TYPE_CHECKING:  # pragma: no cover
    from .index.entry import LocalDatasetEntry
    from .index.index import Index

__all__ = ["DATASET_CHECKS", "DatasetCheck", "ShardStatus", "build_dataset_checks"]


class DatasetCheck(StrEnum):
    """The checks :func:`build_dataset_checks` can build (plain strings are accepted too)."""

    CHECKSUMS = "checksums"
    SAMPLE_COUNT = "sample_count"
    SCHEMA = "schema"


#: the checks :func:`build_dataset_checks` can build, by name
DATASET_CHECKS: tuple[str, ...] = tuple(c.value for c in DatasetCheck)

#: (partition, entry) pairs a check looks at
Targets = list[tuple[Optional[str], "LocalDatasetEntry"]]


def build_dataset_checks(
    asset: dg.AssetsDefinition | dg.AssetSpec | dg.AssetKey | str | Sequence[str],
    *,
    resource_key: str | None = None,
    checks: Sequence[str | DatasetCheck] = DATASET_CHECKS,
    blocking: bool = False,
    name: str | None = None,
    repo: str | None = None,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks that verify the dataset an asset materialized.

    - ``atdata_checksums``: every shard re-hashed against the SHA-256 recorded in the
      index entry (``Index.verify``); fails (ERROR) on a mismatch or missing shard.
    - ``atdata_sample_count``: samples counted shard by shard (payloads not decoded)
      against the entry's recorded statistics.
    - ``atdata_schema``: the stored schema decodes to a sample type and the first sample
      decodes with it.

    ``resource_key`` names the resource holding the index: an :class:`AtdataIOManager`
    (default: the asset's IO manager key, else ``"io_manager"``) or an
    :class:`AtdataIndexResource`. The entry checked is the one the latest materialization
    recorded (``atdata/cid``); for a partitioned asset, the run's partition(s), or every
    materialized partition when the check runs on its own. ``name`` / ``repo`` override
    the dataset name and repository when the asset's ``atdata/name`` / ``atdata/repo``
    metadata cannot be read (e.g. a bare asset key).
    """
    key, meta, default_resource = _asset_info(asset)
    resource_key = resource_key or default_resource
    unknown = [c for c in checks if c not in DATASET_CHECKS]
    if unknown or not checks:
        raise ValueError(f"unknown dataset checks {unknown}; choose from {list(DATASET_CHECKS)}")
    meta = dict(meta)
    if name is not None:
        meta["atdata/name"] = name
    if repo is not None:
        meta["atdata/repo"] = repo
    return [
        _make_check(key, meta, resource_key, _CHECKS[DatasetCheck(check)], blocking)
        for check in checks
    ]


def _asset_info(asset: Any) -> tuple[dg.AssetKey, Mapping[str, Any], str]:
    if isinstance(asset, dg.AssetsDefinition):
        key = asset.key
        return key, asset.metadata_by_key.get(key, {}), asset.get_io_manager_key_for_asset_key(key)
    if isinstance(asset, dg.AssetSpec):
        return asset.key, asset.metadata or {}, "io_manager"
    return dg.AssetKey.from_coercible(asset), {}, "io_manager"


def _make_check(
    key: dg.AssetKey, meta: Mapping[str, Any], resource_key: str, spec: "_CheckSpec", blocking: bool,
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=spec.name,
        description=spec.description,
        blocking=blocking,
        required_resource_keys={resource_key},
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        index, settings = _index_and_settings(context, resource_key, key, meta)
        try:
            targets = _entries(context, index, settings)
        except AtdataError as exc:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR, description=str(exc),
            )
        if not targets:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"no dataset of asset {key.to_user_string()!r} is in the index yet; materialize it first",
            )
        return _with_partitions(spec.run(index, targets), targets)

    return _check


def _with_partitions(result: dg.AssetCheckResult, targets: Targets) -> dg.AssetCheckResult:
    """Say which partitions a check evaluated: in its metadata and at the start of its description."""
    keys = [pk for pk, _ in targets if pk is not None]
    if not keys:
        return result
    shown = ", ".join(keys[:20]) + (f" … ({len(keys)} in all)" if len(keys) > 20 else "")
    return result._replace(
        metadata={**result.metadata, "partitions": dg.MetadataValue.text(shown)},
        description=f"[{shown}] {result.description or ''}".strip(),
    )


def _index_and_settings(
    context: dg.AssetCheckExecutionContext, resource_key: str, key: dg.AssetKey, meta: Mapping[str, Any],
) -> tuple["Index", OutputSettings]:
    res = getattr(context.resources, resource_key)
    if isinstance(res, AtdataIOManager):
        return res.index.get_index(), res.output_settings(meta, key)
    if isinstance(res, AtdataIndexResource) or callable(getattr(res, "get_index", None)):
        return res.get_index(), OutputSettings.parse(meta, key)
    raise dg.DagsterInvariantViolationError(
        f"resource {resource_key!r} is a {type(res).__name__}; dataset checks need an AtdataIOManager or "
        "AtdataIndexResource (pass build_dataset_checks(..., resource_key=...))"
    )


def _entries(context: dg.AssetCheckExecutionContext, index: "Index", settings: OutputSettings) -> Targets:
    """(partition, entry) pairs to check."""
    instance = context.instance
    key = settings.asset_key
    partitions: list[str | None] | None = None
    if context.has_partition_key or context.has_partition_key_range:
        partitions = list(context.partition_keys)
    if partitions is None:
        cids = recorded_cids(instance, key, [None])
        if not cids:
            cids = recorded_cids(instance, key, None)  # every materialized partition
        partitions = sorted(cids, key=lambda p: (p is not None, p or "")) or [None]
    else:
        cids = recorded_cids(instance, key, partitions)
    out: Targets = []
    for pk in partitions:
        entry = resolve_entry(index, settings, pk, cids.get(pk))
        if entry is not None:
            out.append((pk, entry))
    return out


# --------------------------------------------------------------------------- the checks
class ShardStatus(StrEnum):
    """The kind of one ``Index.verify`` result (the text before any ``:`` detail)."""

    OK = "ok"
    MISMATCH = "mismatch"
    MISSING = "missing"
    SKIPPED = "skipped"  # no recorded checksum: cannot be verified
    ERROR = "error"

    @classmethod
    def of(cls, status: str) -> "ShardStatus":
        """The kind of a verify status text; an unknown kind counts as an error."""
        head = status.split(":", 1)[0]
        return cls(head) if head in cls._value2member_map_ else cls.ERROR


def _check_checksums(index: "Index", targets: Targets) -> dg.AssetCheckResult:
    started = time.monotonic()
    counts = dict.fromkeys(ShardStatus, 0)
    bad: list[dict[str, Any]] = []
    hard: list[dict[str, Any]] = []  # failures other than "no recorded checksum"
    nbytes = 0
    for pk, entry in targets:
        result = index.verify(entry)
        stats = entry.stats  # CorruptEntryError naming the entry if malformed
        nbytes += int(stats.get("total_bytes") or 0)
        for url, status in result.items():
            kind = ShardStatus.of(status)
            counts[kind] += 1
            if kind is not ShardStatus.OK:
                bad.append({"partition": pk, "url": url, "status": status})
                if kind is not ShardStatus.SKIPPED:
                    hard.append(bad[-1])
    seconds = time.monotonic() - started
    total = sum(counts.values())
    ok = counts[ShardStatus.OK]
    passed = total > 0 and not bad
    metadata: dict[str, Any] = {
        "shards_checked": total,
        "shards_ok": ok,
        "shards_mismatch": counts[ShardStatus.MISMATCH],
        "shards_missing": counts[ShardStatus.MISSING],
        "shards_unverifiable": counts[ShardStatus.SKIPPED],
        "entries_checked": len(targets),
        "bytes_hashed": nbytes,
        "seconds": round(seconds, 3),
        "mb_per_s": round(nbytes / 1e6 / seconds, 1) if seconds > 0 else 0.0,
    }
    if bad:
        metadata["failures"] = dg.MetadataValue.json(bad[:50])
    if passed:
        desc = f"{ok} shards in {len(targets)} entries match their recorded SHA-256"
    elif hard:
        desc = f"{len(hard)} of {total} shards fail verification: " + "; ".join(
            f"{b['url']} {b['status']}" for b in hard[:3]
        )
    else:
        desc = f"{len(bad)} of {total} shards have no recorded checksum, so they cannot be verified"
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if hard else dg.AssetCheckSeverity.WARN,
        description=desc,
        metadata=metadata,
    )


def _count_samples(index: "Index", url: str) -> int:
    n = 0
    with closing(index.open_url(url)) as f:
        for _ in iter_samples(f, url):
            n += 1
    return n


def _check_sample_count(index: "Index", targets: Targets) -> dg.AssetCheckResult:
    started = time.monotonic()
    counted = expected_total = 0
    problems: list[dict[str, Any]] = []
    unrecorded = 0
    for pk, entry in targets:
        stats = entry.stats  # CorruptEntryError naming the entry if malformed
        per_shard = list(stats.get("shard_samples") or [])
        expected = stats.get("num_samples")
        n_entry = 0
        for i, url in enumerate(entry.data_urls):
            try:
                n = _count_samples(index, url)
            except (AtdataError, OSError) as exc:  # unreadable shard: report, keep checking the rest
                problems.append({"partition": pk, "url": url, "error": str(exc)[:300]})
                continue
            n_entry += n
            if i < len(per_shard) and per_shard[i] != n:
                problems.append({"partition": pk, "url": url, "expected": per_shard[i], "counted": n})
        counted += n_entry
        if isinstance(expected, int):
            expected_total += expected
            if n_entry != expected:
                problems.append({"partition": pk, "entry": entry.cid, "expected": expected, "counted": n_entry})
        else:
            unrecorded += 1
    seconds = time.monotonic() - started
    metadata: dict[str, Any] = {
        "samples_counted": counted,
        "samples_expected": expected_total,
        "entries_checked": len(targets),
        "entries_without_stats": unrecorded,
        "seconds": round(seconds, 3),
        "samples_per_s": round(counted / seconds) if seconds > 0 else 0,
    }
    if problems:
        metadata["problems"] = dg.MetadataValue.json(problems[:50])
    passed = not problems and unrecorded == 0
    if passed:
        desc = f"{counted:,} samples, as recorded"
    elif problems:
        desc = f"sample counts differ from the recorded statistics in {len(problems)} places (counted {counted:,}, expected {expected_total:,})"
    else:
        desc = f"{unrecorded} entries have no recorded sample count to compare with (counted {counted:,})"
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if problems else dg.AssetCheckSeverity.WARN,
        description=desc,
        metadata=metadata,
    )


def _check_schema(index: "Index", targets: Targets) -> dg.AssetCheckResult:
    failures: list[dict[str, Any]] = []
    refs: dict[str, type] = {}
    for pk, entry in targets:
        ref = entry.schema_ref
        try:
            if ref not in refs:
                refs[ref] = index.get_schema_type(ref, register=False)
            cls = refs[ref]
            ds = Dataset[cls](list(entry.data_urls[:1]), opener=index.open_url)  # type: ignore[valid-type]
            head = ds.head(1)
        except (AtdataError, OSError) as exc:  # a schema or shard that does not decode: the check fails
            failures.append({"partition": pk, "schema_ref": ref, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        if head and not isinstance(head[0], cls):
            error = f"TypeError: decoded {type(head[0]).__name__}, expected {cls.__name__}"
            failures.append({"partition": pk, "schema_ref": ref, "error": error})
    metadata: dict[str, Any] = {"schema_refs": dg.MetadataValue.json(sorted(refs)), "entries_checked": len(targets)}
    if len(refs) == 1:
        schema = column_schema(next(iter(refs.values())))
        if schema is not None:
            metadata["columns"] = dg.MetadataValue.table_schema(schema)
    if failures:
        metadata["failures"] = dg.MetadataValue.json(failures[:50])
        desc = f"{len(failures)} entries do not decode: {failures[0]['error']}"
    else:
        desc = f"schema {', '.join(sorted(refs))} decodes and its first sample reads back"
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description=desc,
        metadata=metadata,
    )


class _CheckSpec(NamedTuple):
    name: str
    description: str
    run: Callable[["Index", Targets], dg.AssetCheckResult]


_CHECKS: dict[DatasetCheck, _CheckSpec] = {
    DatasetCheck.CHECKSUMS: _CheckSpec(
        "atdata_checksums", "Every shard's SHA-256 matches the checksum recorded in the index.", _check_checksums,
    ),
    DatasetCheck.SAMPLE_COUNT: _CheckSpec(
        "atdata_sample_count", "The shards hold exactly the number of samples the index recorded.", _check_sample_count,
    ),
    DatasetCheck.SCHEMA: _CheckSpec(
        "atdata_schema", "The stored schema decodes to a sample type and the first sample decodes with it.", _check_schema,
    ),
}
