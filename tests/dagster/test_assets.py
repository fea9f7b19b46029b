"""Yield-style dataset assets: samples stream into shards, Dagster events pass through, mistakes are named."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from atdata_dagster import dataset_asset, dataset_multi_asset
from atdata_dagster.assets import BARE_GENERATOR_HINT_INSTALLED
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import ConfigurationError, ConfigurationTypeError

from .helpers import Row, materialization, md


def test_a_dataset_asset_may_yield_samples_that_stream_into_shards(io_manager, instance, index_resource, tmp_path):
    seen_on_disk: list[int] = []

    @dataset_asset(metadata={"atdata/maxcount": 5}, group_name="g")
    def streamed():
        for i in range(12):
            if i == 11:  # the shards before this sample are already on disk: nothing is held back
                seen_on_disk.append(len(list((tmp_path / "data").rglob("*.tar"))))
            yield Row(key=f"r{i}", label=i, vec=np.full(4, i, np.float32))

    result = dg.materialize([streamed], resources={"io_manager": io_manager}, instance=instance)
    assert result.success and seen_on_disk == [2]
    assert md(materialization(result, "streamed"), "dagster/row_count") == 12
    entry = index_resource.get_index().get_dataset("streamed")
    assert entry.stats["num_shards"] == 3
    assert streamed.group_names_by_key[dg.AssetKey("streamed")] == "g"


def test_yielded_dagster_events_are_reported_after_the_dataset_is_stored(io_manager, instance):
    @dataset_asset(check_specs=[dg.AssetCheckSpec("all_labels", asset="checked")])
    def checked():
        labels = []
        for i in range(4):
            labels.append(i)
            yield Row(key=f"r{i}", label=i, vec=np.zeros(2, np.float32))
        yield dg.AssetCheckResult(check_name="all_labels", passed=labels == [0, 1, 2, 3], metadata={"n": len(labels)})

    result = dg.materialize([checked], resources={"io_manager": io_manager}, instance=instance)
    evaluations = result.get_asset_check_evaluations()
    assert [(e.check_name, e.passed, e.metadata["n"].value) for e in evaluations] == [("all_labels", True, 4)]
    assert md(materialization(result, "checked"), "dagster/row_count") == 4


def test_a_dataset_asset_keeps_its_inputs_and_context(io_manager, instance):
    @dataset_asset
    def up():
        yield from (Row(key=f"r{i}", label=i, vec=np.zeros(2, np.float32)) for i in range(6))

    @dataset_asset
    def evens(context: dg.AssetExecutionContext, up: Dataset[Row]):
        context.log.info("filtering")
        for r in up:
            if r.label % 2 == 0:
                yield r

    result = dg.materialize([up, evens], resources={"io_manager": io_manager}, instance=instance)
    assert md(materialization(result, "evens"), "dagster/row_count") == 3
    assert evens.keys_by_input_name == {"up": dg.AssetKey("up")}


def test_a_plain_asset_that_yields_samples_fails_naming_both_fixes(io_manager, instance):
    assert BARE_GENERATOR_HINT_INSTALLED  # Dagster's validation hook still exists where we wrap it

    @dg.asset
    def bare():
        yield Row(key="r0", label=0, vec=np.zeros(2, np.float32))

    result = dg.materialize([bare], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False)
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "yielded a Row sample" in message and "dataset_asset" in message and "dg.Output(gen())" in message


@pytest.mark.parametrize(
    "metadata, needle",
    [
        ({"atdata/maxcount": "ten"}, "'atdata/maxcount'"),
        ({"atdata/maxcont": 10}, "unknown metadata key(s) ['atdata/maxcont']"),
        ({"atdata/allow_empty": "yes"}, "'atdata/allow_empty' must be true or false"),
    ],
)
def test_invalid_atdata_metadata_fails_when_the_definitions_load(metadata, needle):
    with pytest.raises((ConfigurationError, ConfigurationTypeError)) as info:

        @dataset_asset(metadata=metadata)
        def wrong():
            yield Row(key="r0", label=0, vec=np.zeros(2, np.float32))

    assert needle in str(info.value) and "wrong" in str(info.value)


def test_a_multi_asset_writes_one_dataset_per_output(io_manager, instance, index_resource):
    @dataset_multi_asset(outs={"train": dg.AssetOut(metadata={"atdata/maxcount": 3}), "test": dg.AssetOut()})
    def split():
        rows = [Row(key=f"r{i}", label=i, vec=np.zeros(2, np.float32)) for i in range(10)]
        yield {"train": (r for r in rows if r.label % 5), "test": (r for r in rows if not r.label % 5)}
        yield dg.AssetObservation(asset_key="train", metadata={"source_rows": 10})

    result = dg.materialize([split], resources={"io_manager": io_manager}, instance=instance)
    assert md(materialization(result, "train"), "dagster/row_count") == 8
    assert md(materialization(result, "test"), "dagster/row_count") == 2
    index = index_resource.get_index()
    assert index.get_dataset("train").stats["num_shards"] == 3
    observed = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert len(observed) == 1


def test_a_multi_asset_that_returns_something_else_says_what_to_return(io_manager, instance):
    @dataset_multi_asset(outs={"a": dg.AssetOut()})
    def wrong():
        return [Row(key="r0", label=0, vec=np.zeros(2, np.float32))]

    result = dg.materialize([wrong], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False)
    assert "return a mapping output name -> samples" in str(result.get_step_failure_events()[0].event_specific_data.error)


def test_a_dataset_asset_points_its_code_reference_at_the_decorated_function():
    @dataset_asset
    def referenced():
        yield Row(key="r0", label=0, vec=np.zeros(2, np.float32))

    refs = referenced.specs_by_key[dg.AssetKey("referenced")].metadata["dagster/code_references"].code_references
    assert len(refs) == 1 and refs[0].file_path == __file__
    lines = open(__file__).read().splitlines()
    assert lines[refs[0].line_number - 1].strip() == "@dataset_asset"  # the definition, decorator first
    assert lines[refs[0].line_number].strip() == "def referenced():"
