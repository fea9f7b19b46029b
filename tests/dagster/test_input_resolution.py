"""Input resolution: a downstream asset reads the exact entry its upstream recorded, or fails.

"Latest by name" is only for an upstream that no materialization recorded a CID for.
When the recorded CID is there but cannot be used (not a CID, a corrupt index row),
the load fails with a typed error naming the asset: never a silent switch to whatever
the name points at now.
"""

import sqlite3

import dagster as dg
import numpy as np
import pytest
from sqlalchemy.engine import make_url

from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import ConfigurationTypeError, InvalidRefError, ProviderError
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig
from tests.tcp_proxy import StoppableProxy

from .helpers import Row, materialization, md, rows


@pytest.fixture
def assets():
    seen: dict[str, list[int]] = {}

    @dg.asset
    def up():
        return rows(5)

    @dg.asset
    def down(up: Dataset[Row]):
        seen["labels"] = [r.label for r in up.ordered()]
        return [Row(key="n", label=len(seen["labels"]), vec=np.zeros(1, np.float32))]

    return up, down, seen


def _materialize_up_then_move_its_label(assets, io_manager, instance, index) -> str:
    """Materialize ``up`` (its CID is recorded), then write another version under its name."""
    up, _, _ = assets
    recorded = md(materialization(dg.materialize([up], resources={"io_manager": io_manager}, instance=instance), "up"), "atdata/cid")
    latest = index.write_samples(rows(9, start=100), name="up")
    assert index.get_dataset("up").cid == latest.cid != recorded
    return recorded


def _load_down(assets, io_manager, instance):
    up, down, _ = assets
    return dg.materialize([up, down], selection=["down"], resources={"io_manager": io_manager}, instance=instance)


@pytest.mark.parametrize(
    "bad_cid",
    [dg.MetadataValue.text(""), dg.MetadataValue.int(0), dg.MetadataValue.json({"cid": None})],
    ids=["empty-text", "int", "json"],
)
def test_a_recorded_cid_that_is_not_a_cid_fails_the_load_instead_of_reading_the_latest(
    assets, io_manager, instance, index, bad_cid,
):
    _materialize_up_then_move_its_label(assets, io_manager, instance, index)
    # the latest materialization event of 'up' carries a corrupt atdata/cid
    instance.report_runless_asset_event(dg.AssetMaterialization("up", metadata={"atdata/cid": bad_cid}))

    with pytest.raises(InvalidRefError, match=r"asset 'up'.*atdata/cid.*re-materialize"):
        _load_down(assets, io_manager, instance)
    assert "labels" not in assets[2], "the downstream asset ran on data its upstream never recorded"
    assert [e.name for e in index.list_entries()] == ["up", "up"]  # no 'down' entry was written


def test_a_corrupt_index_row_for_the_recorded_cid_fails_the_load_with_a_provider_error(
    assets, io_manager, instance, index, tmp_path,
):
    recorded = _materialize_up_then_move_its_label(assets, io_manager, instance, index)
    with sqlite3.connect(tmp_path / "index.db") as db:
        assert db.execute("UPDATE dataset_entries SET data_urls = x'c1' WHERE cid = ?", (recorded,)).rowcount == 1

    with pytest.raises(ProviderError, match="not valid msgpack"):
        _load_down(assets, io_manager, instance)
    assert "labels" not in assets[2]


@pytest.mark.postgres
def test_an_index_that_goes_down_while_the_recorded_cid_is_read_fails_the_load_with_a_provider_error(
    assets, instance, postgres_dsn, tmp_path,
):
    url = make_url(postgres_dsn)
    proxy = StoppableProxy(url.port or 5432)
    try:
        resource = AtdataIndexResource(
            dsn=url.set(port=proxy.port).render_as_string(hide_password=False),
            data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")), atmosphere=False,
        )
        io_manager = AtdataIOManager(index=resource)
        up = assets[0]
        recorded = md(materialization(dg.materialize([up], resources={"io_manager": io_manager}, instance=instance), "up"), "atdata/cid")
        proxy.down_on(recorded.encode(), 1)  # PostgreSQL becomes unreachable as the recorded entry is read

        with pytest.raises(ProviderError, match=f"read entry {recorded}"):
            _load_down(assets, io_manager, instance)
        assert proxy.seen >= 1, "the recorded CID was never looked up"
        assert "labels" not in assets[2]
    finally:
        proxy.close()


def test_the_recorded_entry_is_read_even_when_the_name_points_elsewhere(assets, io_manager, instance, index):
    _materialize_up_then_move_its_label(assets, io_manager, instance, index)
    assert _load_down(assets, io_manager, instance).success
    assert assets[2]["labels"] == list(range(5))


def test_events_of_another_io_manager_leave_the_latest_entry_to_be_read(assets, io_manager, instance, index):
    _materialize_up_then_move_its_label(assets, io_manager, instance, index)
    # a later materialization without atdata/cid (not written by AtdataIOManager) records no entry
    instance.report_runless_asset_event(dg.AssetMaterialization("up", metadata={"rows": 9}))
    assert _load_down(assets, io_manager, instance).success
    assert assets[2]["labels"] == list(range(100, 109))


def test_allow_missing_partitions_must_be_a_bool(io_manager, instance):
    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=parts)
    def up(context: dg.AssetExecutionContext):
        return rows(2)

    @dg.asset(ins={"up": dg.AssetIn(metadata={"allow_missing_partitions": "false"})})
    def down(up: Dataset[Row]):  # pragma: no cover - never runs
        return None

    assert dg.materialize([up], partition_key="a", resources={"io_manager": io_manager}, instance=instance).success
    with pytest.raises(ConfigurationTypeError, match="'allow_missing_partitions' must be true or false, got 'false'"):
        dg.materialize([up, down], selection=["down"], resources={"io_manager": io_manager}, instance=instance)
