"""Datasets written outside Dagster: observed with their content identity as data version, loaded downstream."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver  # Dagster's own staleness helper
from dagster._core.definitions.observe import observe  # Dagster's in-process observation runner (tests only)

from atdata_dagster import build_dataset_observation_sensor, observable_dataset
from atdata_dagster.dataset import Dataset
from atdata_dagster.io_manager import dataset_data_version

from .helpers import Row, materialization, md, rows


def _observation(result: dg.ExecuteInProcessResult, key: str):
    events = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    found = [e.event_specific_data.asset_observation for e in events
             if e.event_specific_data.asset_observation.asset_key == dg.AssetKey.from_user_string(key)]
    assert len(found) == 1, found
    return found[0]


def _stale(instance, assets, resources, key: str) -> StaleStatus:
    return get_stale_status_resolver(instance, assets).get_status(dg.AssetKey.from_user_string(key))


@pytest.fixture
def resources(io_manager, index_resource):
    return {"io_manager": io_manager, "atdata": index_resource}


def test_an_observation_reports_the_content_identity_as_data_version_and_the_entry_as_metadata(
    resources, index_resource, instance
):
    index = index_resource.get_index()
    entry = index.write_samples(rows(7), name="team/items", maxcount=3)  # written outside Dagster (as the CLI would)
    items = observable_dataset("team/items")
    obs = _observation(observe([items], resources=resources, instance=instance), "team/items")
    assert obs.tags["dagster/data_version"] == dataset_data_version(entry) == entry.content_id
    assert obs.metadata["dagster/row_count"].value == 7
    assert obs.metadata["atdata/cid"].value == entry.cid
    assert obs.metadata["dagster/uri"].value
    columns = [c.name for c in obs.metadata["dagster/column_schema"].value.columns]
    assert columns == ["key", "label", "vec"]


def test_downstream_loads_the_observed_dataset_and_goes_stale_only_when_it_changes(resources, index_resource, instance):
    index = index_resource.get_index()
    index.write_samples(rows(5), name="items")
    items = observable_dataset("items")

    @dg.asset
    def doubled(items: Dataset[Row]):
        return [Row(key=r.key, label=r.label * 2, vec=r.vec) for r in items]

    assets = [items, doubled]
    observe([items], resources=resources, instance=instance)
    result = dg.materialize(assets, selection=["doubled"], resources=resources, instance=instance)
    assert md(materialization(result, "doubled"), "dagster/row_count") == 5
    assert _stale(instance, assets, resources, "doubled") == StaleStatus.FRESH

    index.write_samples(rows(5), name="items")  # rewritten with the same content: same identity
    observe([items], resources=resources, instance=instance)
    assert _stale(instance, assets, resources, "doubled") == StaleStatus.FRESH

    index.write_samples(rows(6), name="items")  # new content
    observe([items], resources=resources, instance=instance)
    assert _stale(instance, assets, resources, "doubled") == StaleStatus.STALE


def test_observing_a_name_with_no_entry_fails_saying_which_name_and_repository(resources, instance):
    result = observe([observable_dataset("nothing_here", key="ghost")], resources=resources, instance=instance,
                     raise_on_error=False)
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "dataset 'nothing_here' has no entry in the 'local' repository" in message


def test_the_sensor_reports_each_changed_dataset_once(index_resource, instance):
    index = index_resource.get_index()
    index.write_samples(rows(3), name="raw/a")
    index.write_samples(rows(4), name="raw/b")
    index.write_samples(rows(2), name="other")
    sensor = build_dataset_observation_sensor(prefix="raw/")

    def evaluate(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"atdata": index_resource}) as ctx:
            return sensor(ctx)

    first = evaluate(None)
    assert sorted(e.asset_key.to_user_string() for e in first.asset_events) == ["raw/a", "raw/b"]
    again = evaluate(first.cursor)
    assert again.asset_events == [] and "no change in 2 dataset(s)" in again.skip_reason.skip_message
    index.write_samples(rows(9), name="raw/b")
    third = evaluate(again.cursor)
    assert [e.asset_key.to_user_string() for e in third.asset_events] == ["raw/b"]
    assert third.asset_events[0].metadata["dagster/row_count"].value == 9


def test_the_sensor_takes_a_list_of_names_or_a_prefix_not_both():
    with pytest.raises(ValueError, match="exactly one of names= or prefix="):
        build_dataset_observation_sensor(names=["a"], prefix="b")
