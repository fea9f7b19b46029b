"""Promotion of index entries to the ATProto atmosphere: a job, a sensor and a schedule.

The job is a single op whose output is ``Nothing``: it publishes entries through the
index resource (``Index.promote_cid`` / ``promote_entry``, which record the AT URIs in
the entry's ``metadata["atmosphere"]``) and logs an ``AssetObservation`` for the asset
that wrote each entry. It never writes an index entry and no IO manager sees its
output, so the sensor watching the index cannot trigger itself (the feedback loop of
the Dagster conventions, section 4).

Which entries are *pending* is decided in one place, :func:`pending_entries`: entries
marked ``metadata["promote"] is True`` (assets with ``atdata/promote: True`` definition
metadata) that carry no ``metadata["atmosphere"]["uri"]`` yet, narrowed by the optional
filters. The sensor launches one run per newly written pending entry (run key = CID);
the schedule sweeps up everything still pending (failed runs, entries older than the
sensor's cursor, re-materializations).
"""


import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

import dagster as dg
from pydantic import Field

from .errors import (
    AtdataError,
    AtmosphereAuthError,
    AtmosphereConnectionError,
    AtmosphereRateLimitError,
    AtmosphereUnavailableError,
    BlobTooLargeError,
    ConfigurationError,
    InvalidRefError,
    NotFoundError,
)
from .resources import AtdataIndexResource

if TYPE_CHECKING:  # pragma: no cover
    from .index.entry import LocalDatasetEntry
    from .index.index import Index

__all__ = [
    "PROMOTE_OP",
    "PromotionConfig",
    "atmosphere_problem",
    "build_promotion_job",
    "build_promotion_schedule",
    "build_promotion_sensor",
    "is_marked_for_promotion",
    "pending_entries",
    "promoted_uri",
]

#: name of the op inside every promotion job (run config: ``{"ops": {PROMOTE_OP: {"config": ...}}}``)
PROMOTE_OP = "promote_datasets"

#: retry policy of the job by default: transient PDS failures get three more attempts (5, 10, 20 s)
DEFAULT_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)

#: entries written up to this long before the newest one already seen are looked at again
#: (writers that committed late or whose clock lags); their CIDs stay in the cursor meanwhile
CURSOR_LOOKBACK = timedelta(minutes=5)

_IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # entries without created_at sort first

AssetKeyLike = Union[dg.AssetKey, str, Sequence[str]]
EntryFilter = Callable[["LocalDatasetEntry"], bool]


# --------------------------------------------------------------------------- selection
def promoted_uri(entry: "LocalDatasetEntry") -> str | None:
    """The entry's AT URI recorded by an earlier promotion, or ``None``."""
    info = (entry.metadata or {}).get("atmosphere")
    uri = info.get("uri") if isinstance(info, Mapping) else None
    return uri if isinstance(uri, str) and uri else None


def is_marked_for_promotion(entry: "LocalDatasetEntry") -> bool:
    """Whether the entry was written by an asset with ``atdata/promote: True``."""
    return (entry.metadata or {}).get("promote") is True


def _asset_key(value: AssetKeyLike) -> dg.AssetKey:
    if isinstance(value, dg.AssetKey):
        return value
    if isinstance(value, str):
        return dg.AssetKey.from_user_string(value)  # "a/b" -> ["a", "b"], as the UI spells keys
    return dg.AssetKey(list(value))


def _lineage_key(entry: "LocalDatasetEntry") -> dg.AssetKey | None:
    lineage = (entry.metadata or {}).get("lineage")
    path = lineage.get("asset_key") if isinstance(lineage, Mapping) else None
    if isinstance(path, (list, tuple)) and path and all(isinstance(p, str) for p in path):
        return dg.AssetKey(list(path))
    return None


def _created(entry: "LocalDatasetEntry") -> datetime:
    """The entry's ``created_at`` as an aware datetime (unknown: the epoch)."""
    return _parse_ts(entry.created_at) or _EPOCH


def _parse_ts(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def pending_entries(
    index: "Index",
    *,
    repos: Optional[Sequence[str]] = None,
    name_prefix: Optional[str] = None,
    asset_keys: Optional[Sequence[AssetKeyLike]] = None,
    entry_filter: Optional[EntryFilter] = None,
    require_mark: bool = True,
) -> list[tuple[str, "LocalDatasetEntry"]]:
    """Entries waiting for promotion, as ``(repository name, entry)``, oldest first.

    An entry is pending when it has no ``metadata["atmosphere"]["uri"]`` and it is
    marked (``metadata["promote"] is True``, written by an asset with ``atdata/promote``)
    unless ``require_mark=False``. Every filter narrows the selection further:
    ``repos`` (default: every mounted repository, ``local`` included), ``name_prefix``
    (on the entry name inside its repository), ``asset_keys`` (the asset that wrote the
    entry, from its lineage; ``"a/b"`` strings are slash-separated keys) and
    ``entry_filter`` (any predicate). With ``require_mark=False`` the filters alone
    decide, so ``require_mark=False`` without filters selects every unpromoted entry.
    """
    mounted = index.repos
    names = list(mounted) if repos is None else list(repos)
    unknown = [r for r in names if r not in mounted]
    if unknown:
        raise ConfigurationError(
            f"promotion filter repos={names!r} names repositories that are not mounted: {unknown}; "
            f"mounted: {sorted(mounted)} (AtdataIndexResource.repos)"
        )
    keys = None if asset_keys is None else {_asset_key(k) for k in asset_keys}
    out: list[tuple[str, "LocalDatasetEntry"]] = []
    for repo in names:
        for entry in mounted[repo].provider.iter_entries():
            if promoted_uri(entry) is not None:
                continue
            if require_mark and not is_marked_for_promotion(entry):
                continue
            if name_prefix is not None and not entry.name.startswith(name_prefix):
                continue
            if keys is not None and _lineage_key(entry) not in keys:
                continue
            if entry_filter is not None and not entry_filter(entry):
                continue
            out.append((repo, entry))
    out.sort(key=lambda item: (_created(item[1]), item[0], item[1].cid))
    return out


# --------------------------------------------------------------------------- configuration checks
def atmosphere_problem(resource: Any, resource_key: str = "atdata_index") -> str | None:
    """Why ``resource`` cannot publish to the atmosphere (no network call), or ``None``."""
    if not isinstance(resource, AtdataIndexResource):
        return (
            f"resource {resource_key!r} is a {type(resource).__name__}, not an AtdataIndexResource; "
            f"bind AtdataIndexResource(...) to the key {resource_key!r}"
        )
    if not resource.atmosphere:
        return (
            f"the atmosphere is disabled on resource {resource_key!r} (atmosphere=False); set atmosphere=True, "
            "atmosphere_service_url, atmosphere_handle and atmosphere_password (as dagster.EnvVar) to promote"
        )
    if not (resource.atmosphere_handle and resource.atmosphere_password):
        return (
            f"the atmosphere of resource {resource_key!r} is anonymous (read-only): set atmosphere_handle and "
            "atmosphere_password (an app password, as dagster.EnvVar('NAME')) and, unless it is "
            "https://bsky.social, atmosphere_service_url"
        )
    return None


def _resource(resources: Any, resource_key: str, where: str) -> Any:
    try:
        return getattr(resources, resource_key)
    except AttributeError:  # pragma: no cover - Dagster validates required keys first
        raise ConfigurationError(f"{where} needs the resource {resource_key!r} (an AtdataIndexResource)") from None


def _op_config(cids: Sequence[str]) -> dict:
    return {"ops": {PROMOTE_OP: {"config": {"cids": list(cids)}}}}


def _check_job(job: Any, resource_key: str, what: str) -> None:
    """Fail at definition time when ``job`` was not built by :func:`build_promotion_job` for ``resource_key``."""
    if not isinstance(job, dg.JobDefinition) or not job.graph.has_node_named(PROMOTE_OP):
        raise ConfigurationError(
            f"{what}: job {getattr(job, 'name', job)!r} has no op {PROMOTE_OP!r}; pass a job made by build_promotion_job()"
        )
    op = job.graph.node_named(PROMOTE_OP).definition
    keys = set(op.required_resource_keys) if isinstance(op, dg.OpDefinition) else set()
    if resource_key not in keys:
        raise ConfigurationError(
            f"{what}: job {job.name!r} promotes through resource {sorted(keys)}, not {resource_key!r}; "
            "pass the same resource_key to build_promotion_job and to the sensor or schedule"
        )


def _in_flight_cids(context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext, job_name: str) -> set[str]:
    """CIDs that queued or running runs of the promotion job are already promoting.

    Two runs promoting one entry at once could both find no record and both publish;
    sensor and schedule leave such CIDs to the run that has them. A failing run storage
    fails the tick (retried on the next one) rather than risking a double publish.
    """
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a context built without an instance: no runs to exclude
        return set()
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=list(_IN_FLIGHT)))
    out: set[str] = set()
    for run in runs:
        tag = (run.tags or {}).get("atdata/cid")
        if tag:
            out.add(tag)
        out.update(_config_cids(run.run_config))
    return out


def _config_cids(run_config: Any) -> list[str]:
    """The ``cids`` of a promotion run's op config (``[]`` when absent or malformed)."""
    node: Any = run_config
    for key in ("ops", PROMOTE_OP, "config", "cids"):
        node = node.get(key) if isinstance(node, Mapping) else None
    return [c for c in node if isinstance(c, str)] if isinstance(node, list) else []


# --------------------------------------------------------------------------- the job
class PromotionConfig(dg.Config):
    """What one promotion run publishes: explicit CIDs and names, and/or everything pending."""

    cids: list[str] = Field(default_factory=list, description="Entry CIDs to promote (any mounted repository).")
    names: list[str] = Field(
        default_factory=list,
        description="Dataset names or refs to promote ('mnist', 'lab/mnist'); each resolves to its latest entry.",
    )
    pending: bool = Field(
        default=False,
        description="Also promote every pending entry (marked, not yet promoted) that matches the filters below.",
    )
    repos: Optional[list[str]] = Field(
        default=None, description="With pending: only these repositories (default: all, 'local' included)."
    )
    name_prefix: Optional[str] = Field(default=None, description="With pending: only entries whose name starts with this.")
    asset_keys: Optional[list[str]] = Field(
        default=None, description="With pending: only entries written by these assets ('a/b' for the key ['a', 'b'])."
    )
    require_mark: bool = Field(
        default=True,
        description="With pending: only entries marked for promotion (asset metadata 'atdata/promote': True).",
    )


# failures that another attempt cannot fix: no retry, and no point in trying further targets
_PERMANENT = (AtmosphereUnavailableError, AtmosphereAuthError)
# failures of one target that another attempt cannot fix: the other targets still run
_PERMANENT_ONE = (NotFoundError, ConfigurationError, BlobTooLargeError, InvalidRefError)
# the PDS is unreachable or throttling us: stop now, the retry policy tries again later
_TRANSIENT_ALL = (AtmosphereConnectionError, AtmosphereRateLimitError)


class TargetKind(Enum):
    """How a promotion target names its entry."""

    CID = "cid"
    NAME = "name"


class _Target(NamedTuple):
    kind: TargetKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.value}"


def _targets(index: "Index", config: PromotionConfig) -> list[_Target]:
    candidates = [
        *(_Target(TargetKind.CID, cid) for cid in config.cids),
        *(_Target(TargetKind.NAME, name) for name in config.names),
    ]
    if config.pending:
        candidates += [
            _Target(TargetKind.CID, entry.cid)
            for _repo, entry in pending_entries(
                index, repos=config.repos, name_prefix=config.name_prefix, asset_keys=config.asset_keys,
                require_mark=config.require_mark,
            )
        ]
    return list(dict.fromkeys(candidates))


def _observe(context: dg.OpExecutionContext, entry: "LocalDatasetEntry", uri: str) -> bool:
    info = (entry.metadata or {}).get("atmosphere") or {}
    key = _lineage_key(entry)
    if key is None:
        context.log.info(f"atdata: {entry.name} ({entry.cid}) has no asset lineage; no asset observation logged")
        return False
    lineage = (entry.metadata or {}).get("lineage") or {}
    partition = lineage.get("partition") if isinstance(lineage.get("partition"), str) else None
    metadata: dict[str, Any] = {
        "atdata/at_uri": uri,
        "atdata/cid": entry.cid,
        "atdata/schema_uri": str(info.get("schema_uri") or ""),
        "atdata/entry_name": entry.name,
    }
    if info.get("label_uri"):
        metadata["atdata/label_uri"] = str(info["label_uri"])
    context.log_event(
        dg.AssetObservation(
            asset_key=key, partition=partition, metadata=metadata,
            description=f"promoted to the atmosphere as {uri}",
        )
    )
    return True


def _promote_one(index: "Index", target: _Target) -> tuple["LocalDatasetEntry", str, bool]:
    """Promote one target; return (entry after promotion, AT URI, whether the entry already recorded that URI)."""
    value = target.value
    if target.kind is TargetKind.CID:
        before = promoted_uri(index.get_entry(value))
        uri = index.promote_cid(value)
        entry = index.get_entry(value)
    else:
        before = promoted_uri(index.get_dataset(value))
        uri = index.promote(value)
        entry = index.get_dataset(value)
    return entry, uri, before == uri


def build_promotion_job(
    name: str = "atdata_promotion",
    *,
    resource_key: str = "atdata_index",
    retry_policy: Optional[dg.RetryPolicy] = DEFAULT_RETRY_POLICY,
    description: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
) -> dg.JobDefinition:
    """A job that promotes index entries to the atmosphere through the ``resource_key`` resource.

    Its op (``promote_datasets``) takes :class:`PromotionConfig`: ``cids``, ``names``
    and/or ``pending: true`` (with the sensor's filters). For each target it calls
    ``Index.promote_cid`` / ``promote_entry`` (idempotent: an entry promoted before
    reuses its records), which stores ``{uri, schema_uri, label_uri}`` in the entry's
    ``metadata["atmosphere"]``, and logs an ``AssetObservation`` (``atdata/at_uri``,
    ``atdata/cid``, ``atdata/schema_uri``) for the asset and partition in the entry's
    lineage. The output is ``Nothing``: no IO manager runs and no index entry is created.

    Failures: an anonymous or disabled atmosphere, bad credentials, or a config
    naming nothing fail at once without retries, naming the resource fields to set.
    A PDS that is down, throttles or rejects a record fails the op with the engine's
    message and ``retry_policy`` applies (the retry re-promotes; records already made
    are reused). Runs that still fail are picked up by the schedule.
    """

    @dg.op(
        name=PROMOTE_OP,
        out=dg.Out(dg.Nothing),
        required_resource_keys={resource_key},
        retry_policy=retry_policy,
        description="Publish index entries (schema, entry, label) to the ATProto atmosphere and record their AT URIs.",
    )
    def promote_datasets(context: dg.OpExecutionContext, config: PromotionConfig) -> None:
        resource = _resource(context.resources, resource_key, f"job {name!r}")
        problem = atmosphere_problem(resource, resource_key)
        if problem:
            raise dg.Failure(description=f"cannot promote: {problem}", allow_retries=False)
        if not (config.cids or config.names or config.pending):
            raise dg.Failure(
                description=(
                    f"nothing to promote: the config of op {PROMOTE_OP!r} needs cids: [...], names: [...] "
                    "or pending: true"
                ),
                allow_retries=False,
            )
        index = resource.get_index()
        try:
            targets = _targets(index, config)
        except AtdataError as exc:
            raise dg.Failure(description=f"cannot select entries to promote: {exc}", allow_retries=False) from exc

        done: list[dict[str, Any]] = []
        failed: list[tuple[_Target, Exception]] = []
        stop: Exception | None = None
        for target in targets:
            try:
                entry, uri, reused = _promote_one(index, target)
            except _PERMANENT + _TRANSIENT_ALL as exc:
                failed.append((target, exc))
                stop = exc
                break
            # Any other failure of one target (a PDS rejecting a record, a store error) is
            # collected and re-raised below, chained, in the run's Failure.
            except Exception as exc:  # noqa: BLE001
                failed.append((target, exc))
                continue
            observed = _observe(context, entry, uri)
            context.log.info(
                f"atdata: {entry.name} ({entry.cid}) {'was already promoted' if reused else 'promoted to the atmosphere'} as {uri}"
            )
            done.append({"name": entry.name, "cid": entry.cid, "at_uri": uri, "reused": reused, "observed": observed})

        if failed:
            permanent = all(isinstance(exc, _PERMANENT + _PERMANENT_ONE) for _, exc in failed)
            lines = [f"{target}: {type(exc).__name__}: {exc}" for target, exc in failed]
            untried = len(targets) - len(done) - len(failed)
            head = f"promotion failed for {len(failed)} of {len(targets)} targets"
            if untried:
                head += f" ({untried} not tried after {type(stop).__name__})"
            raise dg.Failure(
                description=head + ":\n" + "\n".join(lines),
                metadata={
                    "atdata/promoted": len(done),
                    "atdata/failed": len(failed),
                    "atdata/promoted_cids": dg.MetadataValue.json([d["cid"] for d in done]),
                },
                allow_retries=not permanent,
            ) from failed[0][1]

        # "new" counts URIs newly recorded on index entries; the PDS itself may have reused records
        new = sum(1 for d in done if not d["reused"])
        context.log.info(f"atdata: promotion finished: {len(done)} entries ({new} newly recorded)")
        context.add_output_metadata(
            {
                "atdata/promoted": len(done),
                "atdata/newly_recorded": new,
                "atdata/entries": dg.MetadataValue.json(done),
            }
        )

    @dg.job(
        name=name,
        description=description
        or "Promote datasets from the atdata index to the ATProto atmosphere (records their AT URIs; creates no entries).",
        tags=dict(tags or {}),
    )
    def promotion_job() -> None:
        promote_datasets()

    return promotion_job


# --------------------------------------------------------------------------- the sensor cursor
class _RepoCursor:
    __slots__ = ("ts", "cids")

    def __init__(self, ts: datetime | None = None, cids: Iterable[tuple[str, datetime]] = ()):
        self.ts = ts
        self.cids = dict(cids)  # CID -> created_at, for CIDs requested within the lookback window


def _load_cursor(text: Optional[str]) -> dict[str, _RepoCursor]:
    """``{"v": 1, "repos": {repo: {"ts": iso, "cids": {cid: iso}}}}``; garbage starts afresh."""
    if not text:
        return {}
    try:
        data = json.loads(text)
        out: dict[str, _RepoCursor] = {}
        for repo, body in (data.get("repos") or {}).items():
            cids = [(c, t) for c, t in ((c, _parse_ts(t)) for c, t in (body.get("cids") or {}).items()) if t]
            out[repo] = _RepoCursor(_parse_ts(body.get("ts")), cids)
        return out
    except (ValueError, AttributeError, TypeError):
        return {}


def _dump_cursor(cursor: Mapping[str, _RepoCursor]) -> str:
    repos = {}
    for repo, c in sorted(cursor.items()):
        if c.ts is None:
            continue
        repos[repo] = {"ts": c.ts.isoformat(), "cids": {cid: t.isoformat() for cid, t in sorted(c.cids.items())}}
    return json.dumps({"v": 1, "repos": repos}, sort_keys=True, separators=(",", ":"))


def _is_new(c: _RepoCursor | None, entry: "LocalDatasetEntry") -> bool:
    if c is None or c.ts is None:
        return True
    created = _created(entry)
    if created > c.ts:
        return True
    return created >= c.ts - CURSOR_LOOKBACK and entry.cid not in c.cids


def _advance(c: _RepoCursor | None, seen: list["LocalDatasetEntry"]) -> _RepoCursor:
    c = c or _RepoCursor()
    ts = max([t for t in [c.ts, *(_created(e) for e in seen)] if t is not None], default=None)
    cids = dict(c.cids)
    cids.update((e.cid, _created(e)) for e in seen)
    if ts is not None:
        floor = ts - CURSOR_LOOKBACK
        cids = {cid: t for cid, t in cids.items() if t >= floor}
    return _RepoCursor(ts, cids.items())


# --------------------------------------------------------------------------- the sensor
def build_promotion_sensor(
    job: dg.JobDefinition,
    *,
    resource_key: str = "atdata_index",
    name: str = "atdata_promotion_sensor",
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    repos: Optional[Sequence[str]] = None,
    name_prefix: Optional[str] = None,
    asset_keys: Optional[Sequence[AssetKeyLike]] = None,
    entry_filter: Optional[EntryFilter] = None,
    require_mark: bool = True,
    description: Optional[str] = None,
) -> dg.SensorDefinition:
    """A sensor that requests one promotion run per newly written pending entry.

    Each tick reads the index through ``resource_key`` and takes the
    :func:`pending_entries` (same filters) that are newer than its cursor. Each gets a
    ``RunRequest`` of ``job`` with ``run_key`` = the entry CID (the daemon never
    launches a run key twice, so an entry is requested at most once per sensor), the
    CID in the run config, and the tags ``atdata/cid``, ``atdata/name`` and
    ``atdata/repo``.

    The cursor keeps, per repository, the newest ``created_at`` seen and the CIDs
    requested in the :data:`CURSOR_LOOKBACK` window before it (late commits are
    still caught). Entries older than that, runs that failed for good, and
    re-materialized entries whose run key was already used are **not** requested
    again: the schedule (:func:`build_promotion_schedule`) or a cursor reset picks them
    up. CIDs that a queued or running promotion run already holds are left to it. An
    anonymous or disabled atmosphere gives a ``SkipReason`` (no doomed runs) and
    leaves the cursor where it was. Default status is STOPPED.
    """
    _check_job(job, resource_key, f"promotion sensor {name!r}")

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={resource_key},
        description=description
        or "Requests one promotion run per new index entry marked for the atmosphere (run key = CID).",
    )
    def promotion_sensor(context: dg.SensorEvaluationContext):
        resource = _resource(context.resources, resource_key, f"sensor {name!r}")
        problem = atmosphere_problem(resource, resource_key)
        index = resource.get_index() if isinstance(resource, AtdataIndexResource) else None
        pending = pending_entries(
            index, repos=repos, name_prefix=name_prefix, asset_keys=asset_keys,
            entry_filter=entry_filter, require_mark=require_mark,
        ) if index is not None else []
        if problem:
            waiting = f"; {len(pending)} entries are waiting" if pending else ""
            return dg.SkipReason(f"not launching promotion runs: {problem}{waiting}")

        cursor = _load_cursor(context.cursor)
        busy = _in_flight_cids(context, job.name)
        fresh: dict[str, list["LocalDatasetEntry"]] = {}
        requests: list[dg.RunRequest] = []
        requested: set[str] = set()
        for repo, entry in pending:
            if not _is_new(cursor.get(repo), entry):
                continue
            fresh.setdefault(repo, []).append(entry)
            if entry.cid in busy or entry.cid in requested:
                continue
            requested.add(entry.cid)
            requests.append(
                dg.RunRequest(
                    run_key=entry.cid,
                    run_config=_op_config([entry.cid]),
                    tags={"atdata/cid": entry.cid, "atdata/name": entry.name, "atdata/repo": repo},
                )
            )
        for repo, entries in fresh.items():
            cursor[repo] = _advance(cursor.get(repo), entries)
        new_cursor = _dump_cursor(cursor)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=new_cursor)
        if fresh:
            reason = f"{sum(map(len, fresh.values()))} new pending entries are already being promoted by queued or running runs"
        elif pending:
            reason = (
                f"no new entries to promote; {len(pending)} older pending entries are left to the promotion "
                "schedule (or reset this sensor's cursor)"
            )
        else:
            reason = "no entries waiting for promotion"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=new_cursor)

    return promotion_sensor


# --------------------------------------------------------------------------- the schedule
def build_promotion_schedule(
    cron_schedule: str,
    job: dg.JobDefinition,
    *,
    resource_key: str = "atdata_index",
    name: str = "atdata_promotion_schedule",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    execution_timezone: Optional[str] = None,
    repos: Optional[Sequence[str]] = None,
    name_prefix: Optional[str] = None,
    asset_keys: Optional[Sequence[AssetKeyLike]] = None,
    entry_filter: Optional[EntryFilter] = None,
    require_mark: bool = True,
    description: Optional[str] = None,
) -> dg.ScheduleDefinition:
    """A schedule that promotes everything pending (same filters as the sensor) on each tick.

    At tick time it evaluates :func:`pending_entries` and requests one run of ``job``
    with those CIDs in its config (CIDs already held by queued or running promotion
    runs are left out), with ``run_key`` = ``<schedule name>:<scheduled time>`` so a
    re-evaluated tick never launches twice. Nothing pending, or an anonymous or
    disabled atmosphere, gives a ``SkipReason``. Default status is STOPPED.
    """
    _check_job(job, resource_key, f"promotion schedule {name!r}")

    @dg.schedule(
        cron_schedule=cron_schedule,
        job=job,
        name=name,
        default_status=default_status,
        execution_timezone=execution_timezone,
        required_resource_keys={resource_key},
        description=description or "Promotes every index entry still waiting for the atmosphere.",
    )
    def promotion_schedule(context: dg.ScheduleEvaluationContext):
        resource = _resource(context.resources, resource_key, f"schedule {name!r}")
        problem = atmosphere_problem(resource, resource_key)
        if problem:
            return dg.SkipReason(f"not launching a promotion run: {problem}")
        pending = pending_entries(
            resource.get_index(), repos=repos, name_prefix=name_prefix, asset_keys=asset_keys,
            entry_filter=entry_filter, require_mark=require_mark,
        )
        busy = _in_flight_cids(context, job.name)
        cids = list(dict.fromkeys(e.cid for _, e in pending if e.cid not in busy))
        if not cids:
            if pending:
                return dg.SkipReason(f"{len(pending)} pending entries are already being promoted by queued or running runs")
            return dg.SkipReason("no entries waiting for promotion")
        when = context.scheduled_execution_time or datetime.now(timezone.utc)
        return dg.RunRequest(
            run_key=f"{name}:{when.isoformat()}",
            run_config=_op_config(cids),
            tags={"atdata/count": str(len(cids)), "atdata/trigger": name},
        )

    return promotion_schedule
