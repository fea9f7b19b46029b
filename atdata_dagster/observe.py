"""Datasets written outside Dagster, observed as source assets.

A dataset written with atdata itself, the CLI or a notebook has no materialization in
Dagster. :func:`observable_dataset` declares it as an observable source asset: each
observation reads the name's current index entry and reports

- its location-independent content identity (``content_id``: the schema plus the ordered
  shard SHA-256s) as the **data version**, so downstream assets become stale exactly when
  the data changes, and nothing re-runs when it does not;
- row count, URI, column schema, CID and size as metadata, as a materialization shows.

Downstream assets load it through the IO manager as ``Dataset[T]``, like any upstream
dataset asset. :func:`build_dataset_observation_sensor` observes many datasets (a list of
names, or every name under a prefix) from a sensor, reporting only those that changed.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import dagster as dg

from .errors import AtdataError, NotFoundError
from .io_manager import dataset_data_version
from .metadata import entry_metadata
from .resources import AtdataIndexResource
from .resolution import validate_output_metadata

__all__ = ["build_dataset_observation_sensor", "observable_dataset", "observe_entry"]


def _entry_of(index: Any, repo: str, name: str) -> Any:
    return index.get_dataset(name if repo == "local" else f"{repo}/{name}")


def observe_entry(index: Any, name: str, *, repo: str = "local") -> tuple[dg.DataVersion, dict[str, Any]]:
    """(data version, metadata) of the current entry of ``name`` in ``repo``.

    Raises :class:`~atdata_dagster.errors.NotFoundError` when the name has no entry.
    """
    entry = _entry_of(index, repo, name)
    try:
        sample_type = index.get_schema_type(entry.schema_ref, register=False)
    except AtdataError:  # a schema that cannot be read or rebuilt only loses the column schema
        sample_type = None
    metadata = entry_metadata(entry, sample_type=sample_type, partitioned=False, repo=repo)
    return dg.DataVersion(dataset_data_version(entry)), metadata


def observable_dataset(
    name: str,
    *,
    key: dg.AssetKey | Sequence[str] | str | None = None,
    repo: str = "local",
    resource_key: str = "atdata",
    io_manager_key: str = "io_manager",
    group_name: str | None = None,
    description: str | None = None,
) -> dg.SourceAsset:
    """An observable source asset for the dataset ``name`` (in repository ``repo``).

    ``key`` defaults to the name's path (``"team/items"`` -> ``team/items``). The
    observation needs the index as resource ``resource_key`` (an
    :class:`~atdata_dagster.resources.AtdataIndexResource`); downstream assets load the
    dataset through the IO manager under ``io_manager_key``. Observing a name with no
    entry fails the observation with a message saying which name and repository.
    """
    asset_key = dg.AssetKey.from_coercible(key) if key is not None else dg.AssetKey(name.split("/"))
    metadata = {"atdata/name": name, "atdata/repo": repo}
    validate_output_metadata(metadata, asset_key)

    @dg.observable_source_asset(
        key=asset_key,
        required_resource_keys={resource_key},
        io_manager_key=io_manager_key,
        group_name=group_name,
        description=description or f"The atdata dataset {name!r} ({repo} repository), written outside Dagster.",
        metadata=metadata,
    )
    def _observe(context: Any) -> dg.ObserveResult:
        resource: AtdataIndexResource = getattr(context.resources, resource_key)
        try:
            version, meta = observe_entry(resource.get_index(), name, repo=repo)
        except NotFoundError as exc:
            raise NotFoundError(
                f"observing {asset_key.to_user_string()!r}: dataset {name!r} has no entry in the {repo!r} "
                f"repository of {resource.describe()} ({exc})"
            ) from None
        return dg.ObserveResult(data_version=version, metadata=meta)

    return _observe


def build_dataset_observation_sensor(
    *,
    names: Sequence[str] | None = None,
    prefix: str | None = None,
    repo: str = "local",
    name: str = "atdata_dataset_observations",
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that observes many datasets: ``names``, or every name starting with ``prefix``.

    Each evaluation reads the current entries and reports an ``AssetObservation`` (with
    the content identity as data version, and the metadata of :func:`observe_entry`) for
    each dataset whose content changed since the last report; unchanged datasets report
    nothing, so nothing downstream becomes stale. Asset keys are the dataset names' paths.
    The index is the :class:`~atdata_dagster.resources.AtdataIndexResource` named ``atdata``.
    """
    if (names is None) == (prefix is None):
        raise ValueError("build_dataset_observation_sensor: give exactly one of names= or prefix=")

    @dg.sensor(name=name, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status)
    def _sensor(context: dg.SensorEvaluationContext, atdata: AtdataIndexResource) -> dg.SensorResult:
        index = atdata.get_index()
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        if names is not None:
            wanted = list(names)
        else:
            wanted = sorted({e.name for e in index.list_datasets(repo=repo) if e.name.startswith(prefix or "")})
        events = []
        for dataset in wanted:
            try:
                version, meta = observe_entry(index, dataset, repo=repo)
            except NotFoundError:
                continue  # not written yet: observed once it is
            if seen.get(dataset) == version.value:
                continue
            seen[dataset] = version.value
            events.append(dg.AssetObservation(
                asset_key=dg.AssetKey(dataset.split("/")), metadata=meta,
                tags={"dagster/data_version": version.value},
            ))
        if not events:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"no change in {len(wanted)} dataset(s)"),
                                   cursor=json.dumps(seen, sort_keys=True))
        return dg.SensorResult(asset_events=events, cursor=json.dumps(seen, sort_keys=True))

    return _sensor
