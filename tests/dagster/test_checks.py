"""Dataset asset checks: checksums, sample counts and schema decoding, streamed from the index."""

import dagster as dg
import pytest

from atdata_dagster.checks import DatasetCheck, ShardStatus, build_dataset_checks
from atdata_dagster.io_manager import AtdataIOManager, dataset_name

from .helpers import row_stream, rows


def _evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _value(ev, key):
    return ev.metadata[key].value


@pytest.fixture
def up_asset():
    @dg.asset(metadata={"atdata/maxcount": 10})
    def up():
        return dg.Output(row_stream(35))

    return up


def test_checks_take_no_data_input_so_nothing_is_loaded_through_the_io_manager(up_asset):
    checks = build_dataset_checks(up_asset)
    assert sorted(c.check_key.name for c in checks) == ["atdata_checksums", "atdata_sample_count", "atdata_schema"]
    for c in checks:
        # only a Nothing-typed ordering dependency: the IO manager's load_input never runs
        assert all(d.dagster_type.is_nothing for d in c.node_def.input_defs), "a check must not load the dataset"
        assert c.check_key.asset_key == dg.AssetKey("up")


def test_checks_pass_on_good_data_with_figures(up_asset, io_manager, instance, monkeypatch):
    def never(self, context):
        raise AssertionError("a dataset check loaded the dataset through the IO manager")

    monkeypatch.setattr(AtdataIOManager, "load_input", never)
    checks = build_dataset_checks(up_asset)
    result = dg.materialize([up_asset, *checks], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    ev = _evaluations(result)
    assert all(e.passed for e in ev.values()), {k: e.description for k, e in ev.items()}
    assert _value(ev["atdata_checksums"], "shards_ok") == 4
    assert _value(ev["atdata_checksums"], "bytes_hashed") > 0
    assert _value(ev["atdata_sample_count"], "samples_counted") == 35
    assert _value(ev["atdata_sample_count"], "samples_expected") == 35
    assert [c.name for c in _value(ev["atdata_schema"], "columns").columns] == ["key", "label", "vec"]


def test_tampered_shard_fails_the_checksum_check(up_asset, io_manager, instance, index):
    checks = build_dataset_checks(up_asset, checks=["checksums"])
    assert dg.materialize([up_asset], resources={"io_manager": io_manager}, instance=instance).success
    shard = index.get_dataset("up").data_urls[1]
    with open(shard, "r+b") as f:  # flip one payload byte, keep the size
        f.seek(700)
        b = f.read(1)
        f.seek(700)
        f.write(bytes([b[0] ^ 0xFF]))

    result = dg.materialize(
        [up_asset, *checks], selection=dg.AssetSelection.checks(*checks), resources={"io_manager": io_manager},
        instance=instance, raise_on_error=False,
    )
    ev = _evaluations(result)["atdata_checksums"]
    assert not ev.passed
    assert ev.severity == dg.AssetCheckSeverity.ERROR
    assert _value(ev, "shards_mismatch") == 1 and _value(ev, "shards_ok") == 3
    assert shard in ev.description


def test_sample_count_check_fails_when_the_recorded_count_is_wrong(up_asset, io_manager, instance, index):
    checks = build_dataset_checks(up_asset, checks=["sample_count"])
    assert dg.materialize([up_asset], resources={"io_manager": io_manager}, instance=instance).success
    entry = index.get_dataset("up")
    meta = dict(entry.metadata)
    meta["stats"] = {**meta["stats"], "num_samples": 36}
    index.provider.update_entry_metadata(entry.cid, meta)

    result = dg.materialize(
        [up_asset, *checks], selection=dg.AssetSelection.checks(*checks), resources={"io_manager": io_manager},
        instance=instance, raise_on_error=False,
    )
    ev = _evaluations(result)["atdata_sample_count"]
    assert not ev.passed
    assert _value(ev, "samples_counted") == 35 and _value(ev, "samples_expected") == 36


def test_schema_check_fails_when_the_stored_schema_does_not_decode(up_asset, io_manager, instance, index):
    checks = build_dataset_checks(up_asset, checks=["schema"])
    assert dg.materialize([up_asset], resources={"io_manager": io_manager}, instance=instance).success
    ref = index.get_dataset("up").schema_ref
    name, version = ref.rsplit("/", 1)[-1].split("@")
    index.provider.put_schema(name, version, '{"name": "Row", "version": "%s", "fields": "broken"}' % version)

    result = dg.materialize(
        [up_asset, *checks], selection=dg.AssetSelection.checks(*checks), resources={"io_manager": io_manager},
        instance=instance, raise_on_error=False,
    )
    ev = _evaluations(result)["atdata_schema"]
    assert not ev.passed
    assert ref in str(_value(ev, "failures"))


def test_checks_on_a_partitioned_asset_verify_the_run_partition(io_manager, instance, index):
    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=parts)
    def up(context: dg.AssetExecutionContext):
        return rows(3 if context.partition_key == "a" else 5)

    checks = build_dataset_checks(up)
    res = {"io_manager": io_manager}
    result = dg.materialize([up, *checks], partition_key="b", resources=res, instance=instance)
    ev = _evaluations(result)
    assert all(e.passed for e in ev.values())
    assert _value(ev["atdata_sample_count"], "samples_counted") == 5
    assert {_value(e, "partitions") for e in ev.values()} == {"b"}  # each result says which partition
    assert all(e.description.startswith("[b] ") for e in ev.values())
    assert dg.materialize([up], partition_key="a", resources=res, instance=instance).success

    # run on their own, the checks cover every materialized partition
    alone = dg.materialize([up, *checks], selection=dg.AssetSelection.checks(*checks), resources=res, instance=instance)
    ev = _evaluations(alone)
    assert _value(ev["atdata_sample_count"], "samples_counted") == 8
    assert _value(ev["atdata_checksums"], "entries_checked") == 2
    assert _value(ev["atdata_checksums"], "partitions") == "a, b"
    assert index.get_dataset(dataset_name(dg.AssetKey("up"), "a")).metadata["stats"]["num_samples"] == 3


def test_checks_before_any_materialization_warn(io_manager, instance):
    checks = build_dataset_checks("never_made", checks=["checksums"])

    @dg.asset(name="never_made")
    def never_made():  # pragma: no cover - not selected
        return rows(1)

    result = dg.materialize(
        [never_made, *checks], selection=dg.AssetSelection.checks(*checks), resources={"io_manager": io_manager},
        instance=instance, raise_on_error=False,
    )
    ev = _evaluations(result)["atdata_checksums"]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
    assert "materialize it first" in ev.description


def test_unknown_check_name_is_rejected(up_asset):
    with pytest.raises(ValueError, match="unknown dataset checks"):
        build_dataset_checks(up_asset, checks=["everything"])


def test_verify_statuses_are_read_by_kind_and_an_unknown_kind_counts_as_an_error():
    assert ShardStatus.of("ok") is ShardStatus.OK
    assert ShardStatus.of("mismatch: expected ab12, got cd34") is ShardStatus.MISMATCH
    assert ShardStatus.of("skipped") is ShardStatus.SKIPPED
    assert ShardStatus.of("error: connection reset") is ShardStatus.ERROR
    assert ShardStatus.of("corrupted") is ShardStatus.ERROR  # never read as passing


def test_check_names_are_accepted_as_enum_members_or_strings(up_asset):
    by_enum = build_dataset_checks(up_asset, checks=[DatasetCheck.SCHEMA])
    by_text = build_dataset_checks(up_asset, checks=["schema"])
    assert [c.check_key.name for c in by_enum] == [c.check_key.name for c in by_text] == ["atdata_schema"]
