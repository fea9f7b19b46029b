"""AtdataIOManager: outputs become index entries, inputs lazy typed datasets."""

import os
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from atdata_dagster import io_manager as iom_module
from atdata_dagster.dataset import Dataset
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig, RepositoryConfig

from atdata_dagster.samples import packable

from .helpers import Row, materialization, md, row_stream, rows


@packable
class WrongRow:
    """Not what `up` was written with: `label` is a str and `score` is not stored."""

    key: str
    label: str
    score: float


@packable
class NarrowRow:
    """Compatible with Row except that it leaves `vec` out."""

    key: str
    label: int


def _shards_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tar"))


def test_generator_output_streams_into_shards_before_it_is_exhausted(tmp_path, io_manager, instance, index):
    seen_committed: list[int] = []
    data_root = tmp_path / "data"

    def watched():
        for i, row in enumerate(row_stream(250)):
            if i == 150:  # after 100 samples (maxcount) the first shard must already be final
                seen_committed.append(len(_shards_on_disk(data_root)))
            yield row

    @dg.asset(metadata={"atdata/maxcount": 100})
    def up():
        return dg.Output(watched())

    result = dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    assert seen_committed == [1], "samples were held in memory instead of streamed into shards"
    entry = index.get_dataset("up")
    assert entry.metadata["stats"]["num_samples"] == 250
    assert len(entry.data_urls) == 3


def test_materialize_result_value_and_plain_lists_are_stored(io_manager, instance, index):
    @dg.asset
    def via_result():
        return dg.MaterializeResult(value=row_stream(7), metadata={"mine": 1})

    @dg.asset
    def via_list():
        return rows(3)

    @dg.asset
    def via_map():
        return map(lambda r: r, rows(4))  # any non-generator iterable

    result = dg.materialize([via_result, via_list, via_map], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    mat = materialization(result, "via_result")
    assert md(mat, "mine") == 1 and md(mat, "dagster/row_count") == 7
    assert index.get_dataset("via_list").metadata["stats"]["num_samples"] == 3
    assert index.get_dataset("via_map").metadata["stats"]["num_samples"] == 4


def test_downstream_reads_the_upstream_lazily_as_a_typed_dataset(io_manager, instance, index):
    got = {}

    @dg.asset
    def up():
        return dg.Output(row_stream(40))

    @dg.asset
    def down(up: Dataset[Row]):
        got["type"] = type(up)
        got["shards"] = up.list_shards()
        labels = [r.label for r in up.ordered()]
        got["labels"] = labels
        return [Row(key="sum", label=sum(labels), vec=np.zeros(1, np.float32))]

    result = dg.materialize([up, down], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    assert got["type"] is Dataset[Row] and issubclass(got["type"], Dataset)
    assert got["shards"] == index.get_dataset("up").data_urls
    assert got["labels"] == list(range(40))


def test_unannotated_input_is_typed_from_the_stored_schema(io_manager, instance):
    got = {}

    @dg.asset
    def up():
        return rows(5)

    @dg.asset(metadata={"atdata/no_dataset": True})
    def down(up):
        got["type"] = up.sample_type
        got["first"] = up.head(1)[0]

    assert dg.materialize([up, down], resources={"io_manager": io_manager}, instance=instance).success
    assert got["type"].__name__ == "Row" and got["type"] is not Row
    assert got["first"].key == "r0" and got["first"].vec.dtype == np.float32


def test_materialization_metadata_has_every_key(io_manager, instance, index):
    @dg.asset(metadata={"atdata/maxcount": 8})
    def up():
        return dg.Output(row_stream(20))

    result = dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    mat = materialization(result, "up")
    entry = index.get_dataset("up")
    stats = entry.metadata["stats"]
    assert md(mat, "dagster/row_count") == 20
    schema = md(mat, "dagster/column_schema")
    assert [(c.name, c.type) for c in schema.columns] == [("key", "str"), ("label", "int"), ("vec", "ndarray[float32]")]
    assert md(mat, "dagster/uri") == os.path.dirname(entry.data_urls[0])
    assert md(mat, "atdata/cid") == entry.cid
    assert md(mat, "atdata/schema_ref") == entry.schema_ref
    assert md(mat, "atdata/shard_count") == 3 == stats["num_shards"]
    assert md(mat, "atdata/bytes") == stats["total_bytes"] > 0
    assert md(mat, "atdata/name") == "up"
    preview = md(mat, "atdata/preview")
    assert "| key | label | vec |" in preview and "| r4 | 4 | float32[4] [4, 4, 4, 4] |" in preview and "r5" not in preview
    assert md(mat, "atdata/size") == f"{stats['total_bytes'] / 1024:.1f} KiB"


def test_the_run_log_carries_the_metadata_once_on_the_materialization(io_manager, instance):
    @dg.asset
    def up():
        return rows(5)

    result = dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    events = [e for e in result.all_events if e.step_key == "up"]
    handled = [e for e in events if e.event_type_value == "HANDLED_OUTPUT"]
    mats = [e for e in events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert len(handled) == 1 and len(mats) == 1
    assert not [k for k in handled[0].event_specific_data.metadata if k.startswith(("atdata/", "dagster/"))]
    assert md(mats[0].event_specific_data.materialization, "dagster/row_count") == 5


def test_a_context_without_a_step_still_gets_the_metadata_as_output_metadata():
    from atdata_dagster.io_manager import add_materialization_metadata

    context = dg.build_output_context(asset_key=dg.AssetKey("x"))
    assert add_materialization_metadata(context, {"atdata/name": "x"}) is False
    assert context.get_logged_metadata() == {"atdata/name": dg.MetadataValue.text("x")}


def test_data_version_is_the_content_id_and_unchanged_data_keeps_it(io_manager, instance, index):
    @dg.asset(code_version="1")
    def up():
        return dg.Output(row_stream(30))

    first = materialization(dg.materialize([up], resources={"io_manager": io_manager}, instance=instance), "up")
    second = materialization(dg.materialize([up], resources={"io_manager": io_manager}, instance=instance), "up")
    assert md(first, "atdata/cid") == md(second, "atdata/cid")
    assert md(first, "atdata/content_id").startswith("sha256:")
    assert first.tags["dagster/data_version"] == md(first, "atdata/content_id")
    assert second.tags["dagster/data_version"] == md(first, "atdata/content_id")
    assert len(index.list_entries()) == 1, "re-materializing unchanged data created a new entry"


def test_changed_data_changes_the_cid(io_manager, instance):
    n = {"value": 10}

    @dg.asset
    def up():
        return rows(n["value"])

    a = materialization(dg.materialize([up], resources={"io_manager": io_manager}, instance=instance), "up")
    n["value"] = 11
    b = materialization(dg.materialize([up], resources={"io_manager": io_manager}, instance=instance), "up")
    assert md(a, "atdata/cid") != md(b, "atdata/cid")
    assert b.tags["dagster/data_version"] == md(b, "atdata/content_id") != a.tags["dagster/data_version"]


def test_the_same_data_under_another_store_root_keeps_its_data_version_but_not_its_cid(tmp_path, instance):
    """The CID is atdata's (computed from URLs); the data version must not depend on where the store is mounted."""
    from atdata_dagster import AtdataIndexResource, AtdataIOManager, LocalDiskStoreConfig

    @dg.asset
    def up():
        return rows(12)

    found = []
    for where in ("site-a", "site-b"):
        resource = AtdataIndexResource(path=str(tmp_path / where / "index.db"), atmosphere=False,
                                       data_store=LocalDiskStoreConfig(root=str(tmp_path / where / "data")))
        result = dg.materialize([up], resources={"io_manager": AtdataIOManager(index=resource)}, instance=instance)
        found.append(materialization(result, "up"))
    a, b = found
    assert md(a, "atdata/cid") != md(b, "atdata/cid")
    assert a.tags["dagster/data_version"] == b.tags["dagster/data_version"] == md(a, "atdata/content_id")


def test_set_data_version_helper_sets_the_tag(tmp_path, instance):
    """Guards conventions §11: if a Dagster upgrade breaks step_context.set_data_version, this fails."""
    calls = []

    class Probe(dg.ConfigurableIOManager):
        def handle_output(self, context, obj):
            calls.append(iom_module.set_data_version(context, "bafy-probe-version"))

        def load_input(self, context):  # pragma: no cover - unused
            return None

    @dg.asset
    def probed():
        return 1

    result = dg.materialize([probed], resources={"io_manager": Probe()}, instance=instance)
    mat = materialization(result, "probed")
    assert calls == [True]
    assert mat.tags["dagster/data_version"] == "bafy-probe-version"
    assert mat.tags["dagster/data_version_is_user_provided"] == "true"
    # and outside a run it declines instead of crashing
    assert iom_module.set_data_version(dg.build_output_context(asset_key=dg.AssetKey("x")), "v") is False


def test_lineage_in_the_index_names_the_upstream_cids_this_step_loaded(io_manager, instance, index):
    @dg.asset(code_version="up-v1")
    def up():
        return rows(6)

    @dg.asset(code_version="down-v3")
    def down(up: Dataset[Row]):
        return [r for r in up.ordered() if r.label % 2 == 0]

    @dg.asset
    def other():
        return rows(2)

    result = dg.materialize([up, down, other], resources={"io_manager": io_manager}, instance=instance)
    up_entry, down_entry = index.get_dataset("up"), index.get_dataset("down")
    lineage = down_entry.metadata["lineage"]
    assert lineage["asset_key"] == ["down"] and lineage["partition"] is None
    assert lineage["run_id"] == result.run_id
    assert lineage["code_version"] == "down-v3"
    assert lineage["upstream"] == [{"asset_key": ["up"], "partition": None, "cid": up_entry.cid}]
    assert up_entry.metadata["lineage"]["upstream"] == []
    assert index.get_dataset("other").metadata["lineage"]["upstream"] == []
    # followable from the index alone
    assert index.get_entry(lineage["upstream"][0]["cid"]).name == "up"
    down_mat = materialization(result, "down")
    assert md(down_mat, "atdata/upstream_cids")[0]["cid"] == up_entry.cid
    table = md(down_mat, "atdata/upstream")  # for people: a table linking the upstream asset's page
    assert "| [up](/assets/up) | – | `" in table and up_entry.cid[:12] in table and up_entry.cid not in table


def test_input_is_the_entry_the_upstream_materialization_recorded_not_the_latest_label(io_manager, instance, index):
    @dg.asset
    def up():
        return rows(5)

    @dg.asset
    def down(up: Dataset[Row]):
        return [Row(key="n", label=sum(1 for _ in up.ordered()), vec=np.zeros(1, np.float32))]

    first = dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    recorded = md(materialization(first, "up"), "atdata/cid")
    # someone writes another version under the same name outside Dagster: the label moves
    other = index.write_samples(rows(9, start=100), name="up")
    assert index.get_dataset("up").cid == other.cid != recorded

    result = dg.materialize([up, down], selection=["down"], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    lineage = index.get_dataset("down").metadata["lineage"]
    assert lineage["upstream"][0]["cid"] == recorded
    assert next(index.dataset("down").ordered()).label == 5


def test_without_a_materialization_event_the_latest_label_is_loaded(io_manager, instance, index):
    entry = index.write_samples(rows(4), name="up")

    @dg.asset
    def up():  # pragma: no cover - never run here
        raise AssertionError

    @dg.asset
    def down(up: Dataset[Row]):
        return [Row(key="n", label=sum(1 for _ in up.ordered()), vec=np.zeros(1, np.float32))]

    result = dg.materialize([up, down], selection=["down"], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    assert index.get_dataset("down").metadata["lineage"]["upstream"][0]["cid"] == entry.cid


def test_missing_upstream_dataset_is_a_clear_error(io_manager, instance):
    @dg.asset
    def up():  # pragma: no cover - never run here
        raise AssertionError

    @dg.asset
    def down(up: Dataset[Row]):  # pragma: no cover
        return None

    result = dg.materialize(
        [up, down], selection=["down"], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False
    )
    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "'up'" in message and "materialize it first" in message


def test_dataset_output_is_registered_with_insert_dataset(io_manager, instance, index):
    source = index.write_samples(rows(12), name="source/raw", maxcount=5)

    @dg.asset(metadata={"atdata/maxcount": 100})
    def copied():
        return index.dataset_for_entry(source, Row)

    result = dg.materialize([copied], resources={"io_manager": io_manager}, instance=instance)
    mat = materialization(result, "copied")
    entry = index.get_dataset("copied")
    assert md(mat, "atdata/cid") == entry.cid != source.cid
    assert md(mat, "dagster/row_count") == 12
    assert len(entry.data_urls) == 1  # re-sharded by the asset's maxcount
    assert "| r0 |" in md(mat, "atdata/preview")
    assert [r.label for r in index.dataset("copied", Row).ordered()] == list(range(12))


def test_an_asset_that_opts_in_may_store_an_empty_dataset_typed_by_its_annotation(io_manager, instance, index):
    @dg.asset(metadata={"atdata/allow_empty": True})
    def maybe_empty() -> list[Row]:
        return []

    @dg.asset
    def down(maybe_empty: Dataset[Row]) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"seen": len(maybe_empty), "decoded": len(list(maybe_empty.ordered()))})

    result = dg.materialize([maybe_empty, down], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    assert md(materialization(result, "maybe_empty"), "dagster/row_count") == 0
    assert md(materialization(result, "down"), "seen") == 0 == md(materialization(result, "down"), "decoded")
    assert index.get_dataset("maybe_empty").stats["num_samples"] == 0


def test_an_empty_output_without_the_opt_in_fails_and_names_it(io_manager, instance):
    @dg.asset
    def nothing() -> list[Row]:
        return []

    with pytest.raises(Exception, match="non-empty") as info:
        dg.materialize([nothing], resources={"io_manager": io_manager}, instance=instance)
    assert "allow_empty" in str(info.value)


def test_allow_empty_must_be_a_boolean(io_manager, instance):
    @dg.asset(metadata={"atdata/allow_empty": "yes"})
    def loose() -> list[Row]:
        return []

    with pytest.raises(Exception, match="'atdata/allow_empty' must be true or false"):
        dg.materialize([loose], resources={"io_manager": io_manager}, instance=instance)


def test_a_none_output_fails_with_a_typed_error_saying_how_to_fix_it(io_manager, instance, index):
    @dg.asset
    def forgot_return():
        rows(3)  # the samples are built but not returned

    result = dg.materialize([forgot_return], resources={"io_manager": io_manager}, instance=instance,
                            raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    text = str(error)
    assert "NoDatasetReturnedError" in text and "returned None" in text
    assert "dg.Output(gen)" in text and "atdata/no_dataset" in text
    assert index.list_entries() == []


def test_an_asset_that_declares_no_dataset_may_return_none(io_manager, instance, index):
    @dg.asset(metadata={"atdata/no_dataset": True})
    def side_effect_only():
        return None

    result = dg.materialize([side_effect_only], resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    assert index.list_entries() == []
    assert "atdata/cid" not in materialization(result, "side_effect_only").metadata


@pytest.mark.parametrize(
    ("value", "needle"),
    [(42, "returned int"), ("text", "returned str"), ({"a": rows(1)}, "only for partitioned assets")],
)
def test_unstorable_outputs_fail_with_a_clear_error(io_manager, instance, index, value, needle):
    @dg.asset
    def bad():
        return value

    result = dg.materialize([bad], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False)
    assert not result.success
    assert needle in str(result.get_step_failure_events()[0].event_specific_data.error)
    assert index.list_entries() == []


def test_definition_metadata_overrides_name_repo_sharding_and_promotion(tmp_path, instance):
    resource = AtdataIndexResource(
        path=str(tmp_path / "index.db"),
        data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")),
        repos={"lab": RepositoryConfig(path=str(tmp_path / "lab.db"), data_store=LocalDiskStoreConfig(root=str(tmp_path / "lab")))},
        atmosphere=False,
    )

    @dg.asset(
        metadata={
            "atdata/name": "team/digits",
            "atdata/repo": "lab",
            "atdata/maxcount": 4,
            "atdata/manifest": True,
            "atdata/promote": True,
        }
    )
    def digits():
        return rows(10)

    result = dg.materialize([digits], resources={"io_manager": AtdataIOManager(index=resource)}, instance=instance)
    mat = materialization(result, "digits")
    assert md(mat, "atdata/name") == "team/digits" and md(mat, "atdata/repo") == "lab"
    assert md(mat, "atdata/promotion").startswith("pending")
    index = resource.build_index()
    try:
        entry = index.get_dataset("lab/team/digits")
        assert len(entry.data_urls) == 3
        assert entry.metadata["promote"] is True
        assert entry.metadata.get("manifests")
        assert all(u.startswith(str(tmp_path / "lab")) for u in entry.data_urls)
        assert index.list_entries() == []  # nothing in the local repository
    finally:
        index.close()


def test_unknown_repository_is_a_clear_error(io_manager, instance):
    @dg.asset(metadata={"atdata/repo": "nowhere"})
    def lost():
        return rows(1)

    result = dg.materialize([lost], resources={"io_manager": io_manager}, instance=instance, raise_on_error=False)
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "'nowhere' is not mounted" in message


def test_long_writes_log_progress(io_manager, instance, monkeypatch):
    monkeypatch.setattr(iom_module, "PROGRESS_AFTER_SECONDS", 0.0)

    @dg.asset
    def logged():
        return rows(50)

    result = dg.materialize([logged], resources={"io_manager": io_manager}, instance=instance)
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("atdata: writing logged: 50 samples" in m and "samples/s" in m for m in messages)
    assert any("atdata: local/logged ->" in m for m in messages)


def test_asset_in_columns_loads_a_dataset_that_decodes_only_those_fields(io_manager, instance):
    got = {}

    @dg.asset(metadata={"atdata/maxcount": 4})
    def up():
        return rows(10)

    @dg.asset(ins={"up": dg.AssetIn(metadata={"columns": ["label"]})})
    def labels_only(up: Dataset[Row]) -> dg.MaterializeResult:
        got["columns"] = up.columns
        got["iter"] = [(r.label, r.key, r.vec) for r in up]
        got["item"] = (up[6].label, up[6].vec)
        got["batch"] = [int(v) for v in next(up.ordered(batch_size=3)).label]
        return dg.MaterializeResult()

    assert dg.materialize([up, labels_only], resources={"io_manager": io_manager}, instance=instance).success
    assert got["columns"] == ("label",)
    assert got["iter"] == [(i, None, None) for i in range(10)] and got["item"] == (6, None)
    assert got["batch"] == [0, 1, 2]


@pytest.mark.parametrize("columns, needle", [(["label", "colour"], "no field"), ("label", "non-empty list"), ([], "non-empty list")])
def test_asset_in_columns_that_are_not_fields_of_the_type_are_a_clear_error(io_manager, instance, columns, needle):
    @dg.asset
    def up():
        return rows(3)

    @dg.asset(ins={"up": dg.AssetIn(metadata={"columns": columns})})
    def down(up: Dataset[Row]) -> None:
        return None

    dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    result = dg.materialize([up, down], selection=["down"], resources={"io_manager": io_manager}, instance=instance,
                            raise_on_error=False)
    assert not result.success
    assert needle in str(result.get_step_failure_events()[0].event_specific_data.error)


def test_an_input_dataset_supports_len_random_access_projection_and_training(io_manager, instance, index):
    got = {}

    @dg.asset(metadata={"atdata/maxcount": 10})
    def up():
        return dg.Output(row_stream(35))

    @dg.asset
    def train(up: Dataset[Row]) -> dg.MaterializeResult:
        got["cid"] = up.cid
        got["len"] = len(up)
        got["item"] = up[17].label
        got["projected"] = next(up.ordered(fields=["label"]))
        try:
            from torch.utils.data import DataLoader

            from atdata_dagster.loader_torch import collate  # noqa: F401 - the import itself is the check
        except ImportError:  # the [torch] extra is optional; make test installs it
            got["torch"] = None
        else:
            batches = DataLoader(up.torch(shuffle=True, batch_size=8), batch_size=None, num_workers=2)
            got["torch"] = sorted(int(i) for b in batches for i in b["label"])
        return dg.MaterializeResult(metadata={"atdata/trained_on": up.cid})

    assert dg.materialize([up, train], resources={"io_manager": io_manager}, instance=instance).success
    assert got["cid"] == index.get_dataset("up").cid
    assert got["len"] == 35 and got["item"] == 17
    assert got["projected"].label == 0 and got["projected"].vec is None
    import importlib.util

    assert got["torch"] == (list(range(35)) if importlib.util.find_spec("torch") else None)


def _load_annotated_as(sample_type: type, io_manager, instance) -> dg.ExecuteInProcessResult:
    """Materialize `up` (rows of Row), then run only `down`, whose input is annotated Dataset[sample_type]."""

    @dg.asset
    def up():
        return rows(4)

    @dg.asset(metadata={"atdata/no_dataset": True}, ins={"up": dg.AssetIn(dagster_type=Dataset[sample_type])})
    def down(up):  # pragma: no cover - never runs: the input must not load
        raise AssertionError("the input must not load")

    dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    return dg.materialize([up, down], selection=["down"], resources={"io_manager": io_manager},
                          instance=instance, raise_on_error=False)


def test_a_wrongly_annotated_input_fails_at_load_naming_the_fields(io_manager, instance):
    result = _load_annotated_as(WrongRow, io_manager, instance)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    text = str(failure.event_specific_data.error)
    assert "SchemaError" in text and "Dataset[WrongRow] does not match the stored schema" in text
    assert "missing ['score']" in text and "not in the annotation ['vec']" in text
    assert "label (int stored, str annotated)" in text
    assert "LOADED_INPUT" not in [e.event_type_value for e in result.all_events if e.step_key == "down"]


def test_an_annotation_that_leaves_a_field_out_is_still_refused(io_manager, instance):
    result = _load_annotated_as(NarrowRow, io_manager, instance)
    assert not result.success
    assert "not in the annotation ['vec']" in str(result.get_step_failure_events()[0].event_specific_data.error)


def test_previews_show_small_arrays_and_statistics_of_large_ones():
    from atdata_dagster.metadata import human_bytes, summarize_value

    assert summarize_value(np.array([1.5, 2.0], np.float32)) == "float32[2] [1.5, 2]"
    big = np.arange(64, dtype=np.float32).reshape(8, 8)
    assert summarize_value(big) == "float32[8×8] min 0 max 63 mean 31.5"
    assert summarize_value(np.zeros(0, np.uint8)) == "uint8[0]"
    assert summarize_value(np.array(["a", "b"])).startswith("<U1[2]")
    assert [human_bytes(n) for n in (512, 2048, 1447936, 3 * 2**30)] == ["512 B", "2.0 KiB", "1.4 MiB", "3.0 GiB"]


def test_promotion_status_says_pending_or_gives_the_at_uri():
    from atdata_dagster.index.entry import LocalDatasetEntry
    from atdata_dagster.metadata import promotion_status

    def entry(meta):
        return LocalDatasetEntry("d", "atdata://local/schema/Row@1.0.0", ["/d/a.tar"], metadata=meta)

    uri = "at://did:plc:x/science.alt.dataset.entry/3k"
    assert promotion_status(entry({"promote": True})).startswith("pending")
    assert promotion_status(entry({"promote": True, "atmosphere": {"uri": uri}})) == f"promoted: {uri}"
    assert promotion_status(entry({})) is None and promotion_status(entry(None)) is None


# --------------------------------------------------------------------------- zero-copy derived datasets


def test_a_subset_of_upstream_shards_is_indexed_with_no_copy(io_manager, instance, index, tmp_path):
    @dg.asset(metadata={"atdata/maxcount": 4})
    def up():
        return rows(10)

    @dg.asset
    def head_shards(up: Dataset[Row]):
        return up.select_shards([0, 1])

    dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    before = _shards_on_disk(tmp_path / "data")
    result = dg.materialize([up, head_shards], selection=["head_shards"],
                            resources={"io_manager": io_manager}, instance=instance)
    assert _shards_on_disk(tmp_path / "data") == before  # no new shard file
    parent = index.get_dataset("up")
    head = index.get_dataset("head_shards")
    assert head.data_urls == parent.data_urls[:2]
    assert head.metadata["lineage"]["parents"] == [parent.cid] == head.metadata["derived_from"]
    assert md(materialization(result, "head_shards"), "dagster/row_count") == 8
    assert set(index.verify(head).values()) == {"ok"}


def test_an_upstream_passed_through_whole_becomes_a_label_on_its_entry_with_no_copy(io_manager, instance, index, tmp_path):
    @dg.asset(metadata={"atdata/maxcount": 4})
    def up():
        return rows(10)

    @dg.asset
    def same(up: Dataset[Row]):
        return up  # atdata's CID is the schema plus the URLs: `same` *is* `up`'s entry

    @dg.asset
    def downstream(same: Dataset[Row]):
        return [r for r in same if r.label % 2 == 0]

    dg.materialize([up], resources={"io_manager": io_manager}, instance=instance)
    before = _shards_on_disk(tmp_path / "data")
    result = dg.materialize([up, same, downstream], selection=["same", "downstream"],
                            resources={"io_manager": io_manager}, instance=instance)
    parent = index.get_dataset("up")
    new = set(_shards_on_disk(tmp_path / "data")) - set(before)
    assert new and {p.parent.name for p in new} == {"downstream"}  # no shard written for `same`
    # the name resolves, through its label, to the upstream's own entry, which is untouched
    assert index.get_label("same").cid == parent.cid
    assert index.get_dataset("same").cid == parent.cid and index.get_entry(parent.cid).name == "up"
    assert [e.name for e in index.list_entries()].count("same") == 0
    mat = materialization(result, "same")
    assert md(mat, "atdata/cid") == parent.cid and md(mat, "atdata/alias_of") == "up"
    assert md(mat, "atdata/name") == "same" and md(mat, "dagster/table_name") == "same"
    assert md(mat, "dagster/row_count") == 10
    # and downstream reads it like any dataset
    assert [r.label for r in index.dataset("downstream", Row)] == [0, 2, 4, 6, 8]
    assert set(index.verify("same").values()) == {"ok"}


def test_a_filtered_upstream_is_written_filtered_not_referenced(io_manager, instance, index, tmp_path):
    @dg.asset(metadata={"atdata/maxcount": 4})
    def up():
        return rows(10)

    @dg.asset
    def evens(up: Dataset[Row]):
        return up.filter(lambda r: r.label % 2 == 0)  # lazy: the IO manager writes what it yields

    result = dg.materialize([up, evens], resources={"io_manager": io_manager}, instance=instance)
    entry = index.get_dataset("evens")
    assert [r.label for r in index.dataset("evens", Row)] == [0, 2, 4, 6, 8]
    assert not set(entry.data_urls) & set(index.get_dataset("up").data_urls)  # its own shards
    assert md(materialization(result, "evens"), "dagster/row_count") == 5


def test_copy_stays_available_as_an_explicit_option(io_manager, instance, index, tmp_path):
    @dg.asset(metadata={"atdata/maxcount": 4})
    def up():
        return rows(10)

    @dg.asset(metadata={"atdata/copy": True})
    def copied(up: Dataset[Row]):
        return up

    dg.materialize([up, copied], resources={"io_manager": io_manager}, instance=instance)
    entry = index.get_dataset("copied")
    assert not set(entry.data_urls) & set(index.get_dataset("up").data_urls)
    assert all(Path(u).parent.name == "copied" for u in entry.data_urls)


def test_a_fan_in_of_partitions_is_one_zero_copy_entry(io_manager, instance, index, tmp_path):
    parts = dg.StaticPartitionsDefinition(["a", "b", "c"])

    @dg.asset(partitions_def=parts)
    def daily(context: dg.AssetExecutionContext):
        return rows(3, start=10 * "abc".index(context.partition_key))

    @dg.asset(ins={"daily": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
    def everything(daily: Dataset[Row]):
        return daily

    for pk in "abc":
        dg.materialize([daily], partition_key=pk, resources={"io_manager": io_manager}, instance=instance)
    before = _shards_on_disk(tmp_path / "data")
    dg.materialize([daily, everything], selection=["everything"], resources={"io_manager": io_manager}, instance=instance)
    assert _shards_on_disk(tmp_path / "data") == before
    entry = index.get_dataset("everything")
    assert entry.stats["num_samples"] == 9 and len(entry.metadata["derived_from"]) == 3
    assert sorted(r.label for r in index.dataset("everything", Row)) == [0, 1, 2, 10, 11, 12, 20, 21, 22]


def test_table_name_and_column_lineage_of_fields_carried_unchanged(io_manager, instance):
    @dg.asset
    def up():
        return rows(3)

    @dg.asset
    def narrowed(up: Dataset[Row]):
        return [WrongRow(key=r.key, label=str(r.label), score=1.0) for r in up]  # key carried, label retyped

    result = dg.materialize([up, narrowed], resources={"io_manager": io_manager}, instance=instance)
    mat = materialization(result, "narrowed")
    assert md(mat, "dagster/table_name") == "narrowed"
    lineage = md(mat, "dagster/column_lineage")
    assert set(lineage.deps_by_column) == {"key"}
    assert lineage.deps_by_column["key"] == [dg.TableColumnDep(asset_key=dg.AssetKey("up"), column_name="key")]
