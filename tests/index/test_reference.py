"""Zero-copy derived datasets: entries that reference their parents' shards, verified, with lineage, kept by gc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import local, packable
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import ConfigurationError, SchemaError
from atdata_dagster.gc import collect_garbage


@packable
class Item:
    label: int
    x: NDArray[np.float32]


@packable
class Other:
    name: str


def items(n: int, start: int = 0) -> list[Item]:
    return [Item(label=i, x=np.full(2, i, np.float32)) for i in range(start, start + n)]


@pytest.fixture
def index(tmp_path: Path) -> local.Index:
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    yield idx
    idx.close()


def shard_files(tmp_path: Path) -> set[Path]:
    return set((tmp_path / "data").rglob("*.tar"))


def test_a_subset_of_shards_is_indexed_with_no_copy_and_keeps_checksums_counts_and_lineage(index, tmp_path):
    parent = index.write_samples(items(25), name="all", maxcount=10, manifest=True)
    before = shard_files(tmp_path)
    subset = index.dataset("all").select_shards([2, 0])
    child = index.reference_dataset(subset, name="some")
    assert shard_files(tmp_path) == before  # nothing written
    assert child.data_urls == [parent.data_urls[2], parent.data_urls[0]]
    assert child.checksums == {u: parent.checksums[u] for u in child.data_urls}
    assert child.stats["shard_samples"] == [5, 10] and child.stats["num_samples"] == 15
    assert child.metadata["derived_from"] == [parent.cid]
    assert len(child.manifest_urls) == 2 and set(child.manifest_urls) <= set(parent.manifest_urls)
    assert set(index.verify(child).values()) == {"ok"}
    assert [r.label for r in index.dataset("some")] == list(range(20, 25)) + list(range(10))


def test_a_concatenation_references_every_parent(index, tmp_path):
    a = index.write_samples(items(4), name="a", maxcount=2)
    b = index.write_samples(items(3, start=4), name="b", maxcount=2)
    both = Dataset.concat([index.dataset("a"), index.dataset("b")])
    entry = index.reference_dataset(both, name="ab")
    assert entry.data_urls == a.data_urls + b.data_urls and entry.metadata["derived_from"] == [a.cid, b.cid]
    assert [r.label for r in index.dataset("ab")] == list(range(7)) and len(index.dataset("ab")) == 7


def test_gc_keeps_shards_a_derived_entry_references_after_the_parent_entry_is_gone(index, tmp_path):
    parent = index.write_samples(items(20), name="all", maxcount=10)
    index.reference_dataset(index.dataset("all").select_shards([1]), name="tail")
    index.provider.delete_entry(parent.cid)
    deleted = collect_garbage(index, grace=0)
    assert deleted == [parent.data_urls[0]]  # the shard only the parent used
    assert Path(parent.data_urls[1]).exists() and set(index.verify("tail").values()) == {"ok"}


def test_bare_urls_without_checksums_cannot_be_referenced(index, tmp_path):
    from atdata_dagster.dataset import write_samples

    bare = write_samples(items(3), tmp_path / "loose.tar")
    with pytest.raises((ConfigurationError, TypeError)):
        index.reference_dataset(bare, name="loose")


def test_select_shards_accepts_positions_slices_and_urls_and_refuses_unknown_ones(index):
    entry = index.write_samples(items(30), name="all", maxcount=10)
    ds = index.dataset("all")
    assert ds.select_shards(slice(1, None)).list_shards() == entry.data_urls[1:]
    assert ds.select_shards([entry.data_urls[2], -3]).list_shards() == [entry.data_urls[2], entry.data_urls[0]]
    with pytest.raises(IndexError):
        ds.select_shards([3])
    with pytest.raises(IndexError):
        ds.select_shards(["/nowhere.tar"])


def test_concat_refuses_datasets_of_different_sample_types(index):
    index.write_samples(items(2), name="a")
    index.write_samples([Other(name="x")], name="o")
    with pytest.raises(SchemaError, match="different sample types"):
        Dataset.concat([index.dataset("a"), index.dataset("o")])


def test_referencing_exactly_another_entrys_shards_is_refused_instead_of_renaming_it(index):
    parent = index.write_samples(items(20), name="all", maxcount=10)
    with pytest.raises(ConfigurationError, match="exactly the shards of entry 'all'"):
        index.reference_dataset(index.dataset("all").select_shards([0, 1]), name="alias")
    assert index.get_entry(parent.cid).name == "all"


def test_a_filtered_mapped_or_lens_dataset_is_written_as_it_reads_never_referenced(tmp_path):
    import dataclasses

    from atdata_dagster import local, packable
    from atdata_dagster.errors import ConfigurationError

    @packable
    class Pair:
        a: int
        b: str

    with local.Index(path=str(tmp_path / "i.db"), data_store=local.LocalDiskStore(str(tmp_path / "d")),
                     atmosphere=None) as index:
        index.write_samples([Pair(a=i, b=f"b{i}") for i in range(10)], name="pairs", maxcount=4)
        pairs = index.dataset("pairs")
        odd = pairs.filter(lambda p: p.a % 2)
        with pytest.raises(ConfigurationError, match="filtered, mapped or read through a lens"):
            index.reference_dataset(odd, name="odd")
        entry = index.insert_dataset(odd, name="odd")
        assert [p.a for p in index.dataset("odd")] == [1, 3, 5, 7, 9] and entry.stats["num_samples"] == 5
        bumped = index.insert_dataset(pairs.map(lambda p: dataclasses.replace(p, a=p.a + 100)), name="bumped",
                                      maxcount=100)
        assert [p.a for p in index.dataset("bumped")][:3] == [100, 101, 102] and len(bumped.data_urls) == 1
        with pytest.raises(ConfigurationError, match="map\\(\\) step turned samples into int"):
            index.insert_dataset(pairs.map(lambda p: p.a), name="ints")
