"""Partitions: one index entry per partition, fan-in, missing partitions, single-run backfills."""

import dagster as dg
import numpy as np
import pytest

from atdata_dagster.dataset import Dataset
from atdata_dagster.io_manager import dataset_name

from .helpers import Row, materialization, md, row_stream, rows

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _summing_downstream(**asset_kwargs):
    """An unpartitioned asset that fans in every upstream partition and records what it saw."""
    seen = {}

    @dg.asset(**asset_kwargs)
    def total(up: Dataset[Row]):
        seen["type"] = type(up)
        seen["labels"] = sorted(r.label for r in up.ordered())
        seen["shards"] = up.list_shards()
        return [Row(key="total", label=len(seen["labels"]), vec=np.zeros(1, np.float32))]

    return total, seen


def test_static_partitions_with_hostile_keys_get_one_entry_each_and_fan_in(io_manager, instance, index):
    keys = ["a", "b/c", "..", "日本"]
    parts = dg.StaticPartitionsDefinition(keys)

    @dg.asset(partitions_def=parts)
    def up(context: dg.AssetExecutionContext):
        start = keys.index(context.partition_key) * 10
        return dg.Output(row_stream(3, start=start))

    total, seen = _summing_downstream()
    res = {"io_manager": io_manager}
    cids = {}
    for pk in keys:
        result = dg.materialize([up], partition_key=pk, resources=res, instance=instance)
        mat = materialization(result, "up", pk)
        assert md(mat, "dagster/partition_row_count") == 3
        assert "dagster/row_count" not in mat.metadata
        assert md(mat, "atdata/name") == dataset_name(dg.AssetKey("up"), pk)
        assert mat.tags["dagster/data_version"] == md(mat, "atdata/content_id")
        cids[pk] = md(mat, "atdata/cid")
    assert len(set(cids.values())) == 4
    names = sorted(e.name for e in index.list_entries())
    assert names == sorted(dataset_name(dg.AssetKey("up"), pk) for pk in keys)
    assert all(e.metadata["lineage"]["partition"] in keys for e in index.list_entries())

    assert dg.materialize([up, total], selection=["total"], resources=res, instance=instance).success
    assert seen["type"] is Dataset[Row]
    assert seen["labels"] == [0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]
    upstream = index.get_dataset("total").metadata["lineage"]["upstream"]
    assert {u["partition"]: u["cid"] for u in upstream} == cids


def test_daily_partitions_missing_ones_fail_the_fan_in_unless_allowed(io_manager, instance, index):
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")

    @dg.asset(partitions_def=daily)
    def up(context: dg.AssetExecutionContext):
        day = int(context.partition_key[-2:])
        return rows(2, start=day * 100)

    strict, _ = _summing_downstream(name="strict", ins={"up": dg.AssetIn("up")})
    lenient, seen = _summing_downstream(
        name="lenient", ins={"up": dg.AssetIn("up", metadata={"allow_missing_partitions": True})}
    )
    res = {"io_manager": io_manager}
    for day in ("2024-01-01", "2024-01-03"):  # 2024-01-02 never materialized
        assert dg.materialize([up], partition_key=day, resources=res, instance=instance).success

    failed = dg.materialize([up, strict], selection=["strict"], resources=res, instance=instance, raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "1 of 3 partitions are not materialized" in message and "'2024-01-02'" in message
    assert "allow_missing_partitions" in message

    assert dg.materialize([up, lenient], selection=["lenient"], resources=res, instance=instance).success
    assert seen["labels"] == [100, 101, 300, 301]


def test_dynamic_partitions_fan_in(io_manager, instance, index):
    dyn = dg.DynamicPartitionsDefinition(name="shards")
    instance.add_dynamic_partitions("shards", ["north", "south/east"])

    @dg.asset(partitions_def=dyn)
    def up(context: dg.AssetExecutionContext):
        return rows(4, start=0 if context.partition_key == "north" else 50)

    total, seen = _summing_downstream()
    res = {"io_manager": io_manager}
    for pk in ("north", "south/east"):
        assert dg.materialize([up], partition_key=pk, resources=res, instance=instance).success
    assert dg.materialize([up, total], selection=["total"], resources=res, instance=instance).success
    assert seen["labels"] == [0, 1, 2, 3, 50, 51, 52, 53]
    assert len(seen["shards"]) == 2
    assert index.get_dataset(dataset_name(dg.AssetKey("up"), "south/east")).metadata["stats"]["num_samples"] == 4


def test_partitioned_downstream_reads_its_own_upstream_partition(io_manager, instance, index):
    parts = dg.StaticPartitionsDefinition(["x", "y"])

    @dg.asset(partitions_def=parts)
    def up(context: dg.AssetExecutionContext):
        return rows(2, start=0 if context.partition_key == "x" else 10)

    @dg.asset(partitions_def=parts)
    def down(context: dg.AssetExecutionContext, up: Dataset[Row]):
        return [Row(key=r.key, label=r.label * 2, vec=r.vec) for r in up.ordered()]

    res = {"io_manager": io_manager}
    assert dg.materialize([up, down], partition_key="y", resources=res, instance=instance).success
    entry = index.get_dataset(dataset_name(dg.AssetKey("down"), "y"))
    assert [r.label for r in index.dataset_for_entry(entry, Row).ordered()] == [20, 22]
    assert entry.metadata["lineage"]["upstream"][0]["partition"] == "y"


def test_single_run_backfill_writes_one_entry_per_partition(io_manager, instance, index):
    parts = dg.StaticPartitionsDefinition(["p1", "p2", "p3"])

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def up(context: dg.AssetExecutionContext):
        return {pk: row_stream(i + 1, start=i * 10) for i, pk in enumerate(context.partition_keys)}

    total, seen = _summing_downstream()
    res = {"io_manager": io_manager}
    result = dg.materialize([up], resources=res, instance=instance, tags={RANGE_START: "p1", RANGE_END: "p3"})
    assert result.success
    by_partition = {pk: materialization(result, "up", pk) for pk in ("p1", "p2", "p3")}
    for i, (pk, mat) in enumerate(by_partition.items()):
        entry = index.get_dataset(dataset_name(dg.AssetKey("up"), pk))
        assert md(mat, "atdata/cid") == entry.cid, f"partition {pk} carries another partition's CID"
        assert md(mat, "dagster/partition_row_count") == i + 1
        assert entry.metadata["lineage"]["partition"] == pk
    assert len({md(m, "atdata/cid") for m in by_partition.values()}) == 3

    assert dg.materialize([up, total], selection=["total"], resources=res, instance=instance).success
    assert seen["labels"] == [0, 10, 11, 20, 21, 22]


def test_single_partition_run_of_a_backfill_asset_accepts_its_one_item_mapping(io_manager, instance, index):
    parts = dg.StaticPartitionsDefinition(["p1", "p2"])

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def up(context: dg.AssetExecutionContext):
        return {pk: rows(2) for pk in context.partition_keys}

    result = dg.materialize([up], partition_key="p2", resources={"io_manager": io_manager}, instance=instance)
    assert md(materialization(result, "up", "p2"), "dagster/partition_row_count") == 2


@pytest.mark.parametrize(
    ("returned", "needle"),
    [
        ("list", "return a mapping partition key -> samples"),
        ("wrong-keys", "missing ['p3'], unexpected ['zz']"),
    ],
)
def test_range_run_with_a_non_matching_output_is_a_clear_error(io_manager, instance, index, returned, needle):
    parts = dg.StaticPartitionsDefinition(["p1", "p2", "p3"])

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def up(context: dg.AssetExecutionContext):
        if returned == "list":
            return rows(3)
        return {"p1": rows(1), "p2": rows(1), "zz": rows(1)}

    result = dg.materialize(
        [up], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False,
        tags={RANGE_START: "p1", RANGE_END: "p3"},
    )
    assert not result.success
    assert needle in str(result.get_step_failure_events()[0].event_specific_data.error)
    assert index.list_entries() == []


def test_a_fan_in_input_knows_its_length_and_trains_exactly_once(io_manager, instance, index):
    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=parts, metadata={"atdata/maxcount": 4})
    def up(context: dg.AssetExecutionContext):
        return dg.Output(row_stream(9, start=0 if context.partition_key == "a" else 100))

    got = {}

    @dg.asset
    def total(up: Dataset[Row]):
        got["len"] = len(up)
        got["order"] = [r.label for r in up.ordered()]
        got["indexed"] = [up[i].label for i in range(len(up))]
        got["shuffled"] = sorted(r.label for r in up.shuffled(seed=1, fields=["label"]))
        return [Row(key="t", label=len(up), vec=np.zeros(1, np.float32))]

    res = {"io_manager": io_manager}
    for pk in ("a", "b"):
        assert dg.materialize([up], partition_key=pk, resources=res, instance=instance).success
    assert dg.materialize([up, total], selection=["total"], resources=res, instance=instance).success
    assert got["len"] == 18
    assert got["indexed"] == got["order"]
    assert got["shuffled"] == sorted(got["order"])
