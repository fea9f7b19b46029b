"""Manifest queries: ManifestField markers, ShardManifest, QueryExecutor (pandas functions and
pyarrow expressions, with shard pruning by aggregates) and Dataset.query."""

from __future__ import annotations

from typing import Annotated

import pyarrow.compute as pc
import pytest

from atdata_dagster import Dataset, ManifestField, QueryExecutor, SampleLocation, ShardManifest, packable, write_samples
from atdata_dagster.shards.manifest import read_manifest


@packable
class Detection:
    label: Annotated[str, ManifestField("categorical")]
    confidence: Annotated[float, ManifestField("numeric")]
    tags: Annotated[list[str], ManifestField("set")]
    note: Annotated[str, ManifestField("categorical", exclude=True)]
    frame: int


def _detections(n=12):
    labels = ["cat", "dog", "bird"]
    # shard 0 (0..3): low confidence, shard 1 (4..7): medium, shard 2 (8..11): high
    return [Detection(label=labels[i % 3], confidence=i / 12, tags=[f"t{i % 2}"], note=f"n{i}", frame=i) for i in range(n)]


@pytest.fixture
def ds(tmp_path):
    return Dataset[Detection](write_samples(_detections(), tmp_path / "det.tar", maxcount=4, manifest=True).url)


def test_manifest_field_markers_choose_or_exclude_aggregates(ds):
    aggs = ShardManifest.from_header(read_manifest(ds.list_shards()[0])).aggregates
    assert aggs["label"]["type"] == "categorical" and aggs["confidence"]["type"] == "numeric"
    assert aggs["tags"]["type"] == "set" and "note" not in aggs
    with pytest.raises(ValueError, match="aggregate must be"):
        ManifestField("histogram")


def test_a_pandas_function_selects_samples_as_in_atdata(ds):
    hits = ds.query(lambda df: (df["confidence"] > 0.5) & (df["label"] == "dog"))
    assert all(isinstance(h, SampleLocation) for h in hits)
    assert [ds.get(h.key).frame for h in hits] == [7, 10]
    assert {h.shard for h in hits} == {ds.list_shards()[1], ds.list_shards()[2]}


def test_a_pyarrow_expression_needs_no_pandas_and_skips_shards_its_aggregates_exclude(ds):
    opened = []

    def counting_opener(url):
        opened.append(url)
        return open(url, "rb")

    executor = QueryExecutor.from_shard_urls(ds.list_shards(), opener=counting_opener)
    assert len(executor.manifests) == 3 and isinstance(executor.manifests[0], ShardManifest)
    high = executor.query(pc.field("confidence") >= 0.75)
    assert [ds.get(h.key).frame for h in high] == [9, 10, 11]
    from atdata_dagster.shards.query import _might_match

    aggs = [m.aggregates for m in executor.manifests]
    assert [_might_match(pc.field("confidence") >= 0.75, a) for a in aggs] == [False, False, True]
    assert [_might_match(pc.field("label") == "fish", a) for a in aggs] == [False, False, False]
    assert executor.query(pc.field("label") == "fish") == []


def test_from_directory_and_from_files_read_what_write_samples_wrote(ds, tmp_path):
    executor = QueryExecutor.from_directory(tmp_path)
    assert sum(m.num_samples for m in executor.manifests) == 12
    first = ds.list_shards()[0][: -len(".tar")]
    m = ShardManifest.from_files(first + ".manifest.json", first + ".manifest.parquet")
    assert m.num_samples == 4 and m.samples["frame"].tolist() == [0, 1, 2, 3]
    assert ShardManifest.from_json_only(first + ".manifest.json").table is None


def test_query_without_manifests_says_how_to_write_them(tmp_path):
    plain = Dataset[Detection](write_samples(_detections(3), tmp_path / "plain.tar").url)
    with pytest.raises(FileNotFoundError, match="manifest=True"):
        plain.query(lambda df: df["frame"] > 0)


def test_the_fields_dsl_builds_expressions_as_atdatas_proxy_does(ds):
    Q = ds.fields
    assert sorted(dir(Q)) == ["confidence", "frame", "label", "tags"]  # "note" is excluded by its marker
    hits = ds.query((Q.confidence > 0.5) & (Q.label == "dog"))
    assert [ds.get(h.key).frame for h in hits] == [7, 10]
    assert [ds.get(h.key).frame for h in ds.query(Q.label.isin(["bird"]))] == [2, 5, 8, 11]
    assert [ds.get(h.key).frame for h in ds.query(Q.frame.between(3, 5))] == [3, 4, 5]
    assert [ds.get(h.key).frame for h in ds.query(~(Q.frame < 10))] == [10, 11]
    with pytest.raises(AttributeError, match="not a manifest field"):
        Q.note


def test_a_process_that_queried_manifests_exits_cleanly(tmp_path):
    # pyarrow 26's threaded parquet reader aborted about one exit in three ("terminate called
    # without an active exception", SIGABRT) after reading a manifest; the readers use one thread
    import subprocess
    import sys

    script = (
        "import pyarrow.compute as pc\n"
        "from tests.shards.test_query import Detection, _detections\n"
        "from atdata_dagster import Dataset, write_samples\n"
        f"ds = Dataset[Detection](write_samples(_detections(), {str(tmp_path / 'd.tar')!r}, maxcount=4, manifest=True).url)\n"
        "assert len(ds.query(pc.field('confidence') > 0.5)) == 5\n"
        "assert ds[5].frame == 5\n"  # ds[i] reads the offsets from the manifest parquet too
    )
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    codes = [subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
             for _ in range(8)]
    assert [c.returncode for c in codes] == [0] * 8, [c.stderr[-300:] for c in codes if c.returncode]
