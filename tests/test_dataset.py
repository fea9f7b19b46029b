"""Dataset[T]: URL forms, ordered/shuffled/batched reading, typing, pickling, load_dataset."""

from __future__ import annotations

import os
import pickle
from typing import Optional

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster.dataset import Dataset, SampleBatch
from atdata_dagster.errors import ConfigurationTypeError, EmptyDatasetError, NotFoundError, ShardError
from atdata_dagster.samples.packable import DictSample, packable
from atdata_dagster.dataset import write_samples


@packable
class Digit:
    image: NDArray[np.uint8]
    label: int


@packable
class Other:
    name: str


def _digits(n: int):
    return [Digit(image=np.full((2, 3), i, np.uint8), label=i) for i in range(n)]


@pytest.fixture
def sharded(tmp_path):
    """10 digits in 4 shards: out-000000.tar .. out-000003.tar (3, 3, 3, 1)."""
    return write_samples(_digits(10), tmp_path / "out.tar", maxcount=3)


# ------------------------------------------------------------------ typing


def test_class_getitem_is_a_cached_real_subclass(sharded):
    cls = Dataset[Digit]
    assert cls is Dataset[Digit]
    assert isinstance(cls, type) and issubclass(cls, Dataset)
    assert cls.sample_type is Digit
    assert cls.__name__ == "Dataset[Digit]"
    ds = cls(sharded.list_shards())
    assert isinstance(ds, Dataset) and isinstance(ds, Dataset[Digit])
    assert not isinstance(ds, Dataset[Other])
    assert ds.sample_type is Digit


def test_typevar_subscript_stays_a_typing_alias():
    from typing import TypeVar

    T = TypeVar("T")
    alias = Dataset[T]
    assert not isinstance(alias, type)


def test_pickle_instances_and_classes(sharded):
    ds = Dataset[Digit](sharded.url, metadata={"a": 1})
    back = pickle.loads(pickle.dumps(ds))
    assert type(back) is Dataset[Digit]
    assert back.url == ds.url and back.list_shards() == ds.list_shards() and back.metadata == {"a": 1}
    assert [s.label for s in back] == list(range(10))
    assert pickle.loads(pickle.dumps(Dataset[Digit])) is Dataset[Digit]
    assert pickle.loads(pickle.dumps(Dataset)) is Dataset
    untyped = pickle.loads(pickle.dumps(Dataset(sharded.url)))
    assert type(untyped) is Dataset and untyped.sample_type is DictSample


def test_unpicklable_opener_raises_instead_of_falling_back(sharded):
    # Changed: pickling used to drop the opener silently and read with the default one in
    # the worker (without the opener's credentials); now it says so.
    ds = Dataset[Digit](sharded.url, opener=lambda u: open(u, "rb"))
    with pytest.raises(ConfigurationTypeError, match="cannot be pickled: its shard opener"):
        pickle.dumps(ds)
    assert ds.head(1)[0].label == 0  # still readable in this process


# ------------------------------------------------------------------ URL forms


def test_write_samples_returns_typed_dataset(sharded, tmp_path):
    assert type(sharded) is Dataset[Digit]
    root = str(tmp_path.resolve())
    assert sharded.url == f"{root}/out-00000{{0,1,2,3}}.tar"


def test_brace_range_pattern(sharded, tmp_path):
    pattern = str(tmp_path.resolve() / "out-{000000..000003}.tar")
    ds = Dataset[Digit](pattern)
    assert ds.url == pattern
    assert ds.list_shards() == sharded.list_shards()
    assert [s.label for s in ds] == list(range(10))


def test_brace_list_and_list_of_urls(sharded):
    urls = sharded.list_shards()
    ds = Dataset[Digit]([urls[2], urls[0]])
    assert [s.label for s in ds.ordered()] == [6, 7, 8, 0, 1, 2]
    with pytest.warns(DeprecationWarning, match=r"shard_list is deprecated, use list_shards\(\)"):
        assert ds.shard_list == [urls[2], urls[0]]
    assert Dataset[Digit](urls[0]).count() == 3


def test_empty_url_list():
    with pytest.raises(EmptyDatasetError):
        Dataset([])


# ------------------------------------------------------------------ reading


def test_ordered_typed(sharded):
    got = list(sharded.ordered())
    assert [d.label for d in got] == list(range(10))
    assert all(isinstance(d.image, np.ndarray) and d.image.dtype == np.uint8 for d in got)
    assert sharded.count() == 10
    assert [d.label for d in sharded.head(4)] == [0, 1, 2, 3]


def test_batches_stack_arrays(sharded):
    batches = list(sharded.ordered(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert isinstance(b, SampleBatch)
    assert b.image.shape == (4, 2, 3) and b.image.dtype == np.uint8
    assert b.label == [0, 1, 2, 3]
    assert b.image is b.image  # cached
    assert [s.label for s in b] == [0, 1, 2, 3]
    with pytest.raises(AttributeError, match="no field 'nope'"):
        b.nope


def test_ragged_arrays_stay_a_list(tmp_path):
    ds = write_samples([Digit(image=np.zeros((i + 1,), np.uint8), label=i) for i in range(3)], tmp_path / "r.tar")
    (b,) = list(ds.ordered(batch_size=3))
    assert isinstance(b.image, list) and [a.shape for a in b.image] == [(1,), (2,), (3,)]


def test_shuffled_is_seeded_complete_and_bounded(sharded):
    a = [d.label for d in sharded.shuffled(buffer_size=4, seed=1)]
    b = [d.label for d in sharded.shuffled(buffer_size=4, seed=1)]
    c = [d.label for d in sharded.shuffled(buffer_size=4, seed=2)]
    assert a == b and sorted(a) == list(range(10))
    assert a != list(range(10)) and (a != c)
    batches = list(sharded.shuffled(buffer_size=3, batch_size=4, seed=3))
    assert [len(x) for x in batches] == [4, 4, 2]
    assert sorted(v for x in batches for v in x.label) == list(range(10))


def test_shuffle_buffer_is_bounded(tmp_path):
    """With buffer 1, the order is exactly the (shuffled) shard order."""
    ds = write_samples(_digits(9), tmp_path / "o.tar", maxcount=3)
    got = [d.label for d in ds.shuffled(buffer_size=1, seed=0)]
    blocks = [got[i : i + 3] for i in range(0, 9, 3)]
    assert all(blk == sorted(blk) and blk[-1] - blk[0] == 2 for blk in blocks)
    with pytest.raises(ValueError):
        ds.shuffled(buffer_size=0)


def test_untyped_reads_dictsample(sharded):
    ds = Dataset(sharded.url)
    first = next(iter(ds))
    assert isinstance(first, DictSample)
    assert first.label == 0 and isinstance(first["image"], bytes)  # raw ndarray bytes, as atdata
    typed = ds.as_type(Digit)
    assert type(typed) is Dataset[Digit] and typed.url == ds.url
    assert typed.head(1)[0].image.shape == (2, 3)


def test_iter_raw(sharded):
    raw = list(sharded.iter_raw())
    assert [k for k, _ in raw] == [f"{i:010d}" for i in range(10)]
    assert Digit.from_bytes(raw[3][1]).label == 3


def test_wrong_type_names_shard_and_key(sharded):
    ds = Dataset[Other](sharded.url)
    with pytest.raises(ShardError) as ei:
        list(ds)
    msg = str(ei.value)
    assert sharded.list_shards()[0] in msg and "'0000000000'" in msg
    assert "DictSample" in msg and "Other" in msg


def test_missing_shard(tmp_path):
    ds = Dataset[Digit](str(tmp_path / "nope.tar"))
    with pytest.raises(ShardError, match="does not exist"):
        list(ds)


def test_custom_opener(sharded):
    opened = []

    def opener(url):
        opened.append(url)
        return open(url, "rb")

    ds = Dataset[Digit](sharded.list_shards(), opener=opener)
    assert ds.count() == 10 and opened == sharded.list_shards()


def test_optional_fields_and_lists(tmp_path):
    @packable
    class Rec:
        xs: list[int]
        note: Optional[str] = None

    ds = write_samples([Rec(xs=[1, 2]), Rec(xs=[], note="n")], tmp_path / "rec.tar")
    (b,) = list(Dataset[Rec](ds.url).ordered(batch_size=2))
    assert b.xs == [[1, 2], []] and b.note == [None, "n"]


def test_list_elements_are_brace_expanded(sharded):
    """atdata indexes a brace pattern verbatim as an entry URL; reading must expand it."""
    ds = Dataset[Digit]([sharded.url])
    assert ds.list_shards() == sharded.list_shards() and ds.url == sharded.url
    assert ds.count() == 10


# ------------------------------------------------------------------ len, random access, projection


@pytest.fixture
def indexed(tmp_path):
    """23 digits in 5 shards, written through an Index (per-shard counts and checksums recorded)."""
    from atdata_dagster import local

    idx = local.Index(path=str(tmp_path / "i.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    idx.write_samples(_digits(23), name="digits", maxcount=5)
    yield idx.dataset("digits", Digit)
    idx.close()


def test_len_comes_from_the_index_entry_without_reading_shards(indexed, tmp_path):
    for url in indexed.list_shards():
        os.rename(url, url + ".away")  # gone: len() must not need them
    assert len(indexed) == 23


def test_len_of_bare_shards_comes_from_their_manifests(tmp_path):
    ds = write_samples(_digits(10), tmp_path / "m.tar", maxcount=4, manifest=True)
    assert len(Dataset[Digit](ds.list_shards())) == 10


def test_len_and_getitem_without_recorded_counts_scan_the_headers_once_as_atdata_counts(sharded):
    # bare shard URLs, no manifests: atdata's len() iterates every sample; ours reads headers only
    assert len(sharded) == 10 == sharded.count()
    assert [sharded[i].label for i in (0, 4, 9, -1)] == [0, 4, 9, 9]
    with pytest.raises(TypeError, match=r"count\(\)"):  # the loader's planning still needs recorded counts
        sharded.shard_specs()
    assert bool(sharded) and len(list(sharded)) == 10


def test_getitem_matches_ordered_for_every_index(indexed):
    expected = [d.label for d in indexed.ordered()]
    assert [indexed[i].label for i in range(len(indexed))] == expected
    assert indexed[-1].label == expected[-1]
    np.testing.assert_array_equal(indexed[7].image, np.full((2, 3), 7, np.uint8))
    with pytest.raises(IndexError):
        indexed[23]
    with pytest.raises(TypeError):
        indexed["3"]


def test_getitem_uses_manifest_offsets_when_written(tmp_path):
    ds = write_samples(_digits(10), tmp_path / "m.tar", maxcount=4, manifest=True)
    typed = Dataset[Digit](ds.list_shards())
    assert [typed[i].label for i in range(10)] == list(range(10))
    assert typed.shard_offsets(1).end == -1  # from the sidecar (a scan knows the end of the last sample)
    fresh = Dataset[Digit](ds.list_shards())
    for url in fresh.list_shards():
        os.remove(url[:-4] + ".manifest.parquet")
    assert fresh.shard_offsets(1).offsets == typed.shard_offsets(1).offsets  # the scan agrees with the writer


def test_getitem_builds_each_offset_index_once(indexed, monkeypatch):
    import atdata_dagster.dataset as dsmod

    calls = []
    real = dsmod.scan_offsets
    monkeypatch.setattr(dsmod, "scan_offsets", lambda f, url: calls.append(url) or real(f, url))
    real_map = dsmod.open_index  # local shards are indexed in a memory map instead of by offsets
    monkeypatch.setattr(dsmod, "open_index", lambda f, url: calls.append(url) or real_map(f, url))
    for i in range(len(indexed)):
        indexed[i]
    assert sorted(calls) == sorted(indexed.list_shards())


def test_get_by_key_returns_that_sample(indexed):
    from atdata_dagster.shards.reader import iter_samples

    with open(indexed.list_shards()[3], "rb") as f:
        keys = [k for k, _ in iter_samples(f)]
    assert indexed.get(keys[2]).label == 17
    with pytest.raises(NotFoundError):
        indexed.get("no-such-key")


def test_fields_projection_decodes_only_named_fields(indexed):
    first = next(indexed.ordered(fields=["label"]))
    assert first.label == 0 and first.image is None
    shuffled = list(indexed.shuffled(seed=1, fields=["image"]))
    assert all(s.label is None for s in shuffled) and len(shuffled) == 23
    assert sorted(int(s.image[0, 0]) for s in shuffled) == list(range(23))
    batch = next(indexed.ordered(batch_size=4, fields=["label"]))
    assert batch.label == [0, 1, 2, 3]
    from atdata_dagster.errors import FieldMismatchError

    with pytest.raises(FieldMismatchError, match="colour"):
        next(indexed.ordered(fields=["colour"]))


def test_fields_projection_on_dict_samples(indexed):
    plain = Dataset(indexed.list_shards())
    s = next(plain.ordered(fields=["label"]))
    assert s.label == 0 and s.image is None


def test_dataset_from_an_index_names_its_cid_and_pickles_it(indexed):
    assert indexed.cid and indexed.identity() == indexed.cid
    assert pickle.loads(pickle.dumps(indexed)).cid == indexed.cid


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_random_access_on_s3_is_one_ranged_get_per_lookup(s3_store, tmp_path):
    from atdata_dagster import local

    idx = local.Index(path=str(tmp_path / "i.db"), data_store=s3_store, atmosphere=None)
    idx.write_samples(_digits(30), name="digits", maxcount=10, manifest=True)
    ds = idx.dataset("digits", Digit)
    expected = [d.label for d in ds.ordered()]
    requests: list[tuple[str, str | None]] = []
    s3_store.client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **kw: requests.append((request.url, request.headers.get("Range")))
    )
    assert [ds[i].label for i in range(30)] == expected
    shard_gets = [r for r in requests if r[0].split("?")[0].endswith(".tar")]
    sidecar_gets = [r for r in requests if ".manifest.parquet" in r[0]]
    ranges = [rng.decode("ascii") if isinstance(rng, bytes) else rng for _, rng in shard_gets]
    assert len(shard_gets) == 30 and all(rng and rng.startswith("bytes=") for rng in ranges)
    assert len(sidecar_gets) == 3  # the offsets of each shard are read once, from its manifest sidecar
    requests.clear()
    assert ds[12].label == 12 and len(requests) == 1
    idx.close()


def test_malformed_entry_metadata_is_a_typed_error_or_ignored(indexed):
    from atdata_dagster.errors import CorruptEntryError

    bad = Dataset[Digit](indexed.list_shards(), metadata={"checksums": ["not", "a", "map"]})
    with pytest.raises(CorruptEntryError, match="checksums"):
        len(bad)
    wrong_counts = Dataset[Digit](indexed.list_shards(), metadata={"stats": {"shard_samples": ["5", 5, 5, 5, 3]}})
    with pytest.raises(TypeError, match="unknown"):  # not trusted; no manifests either
        wrong_counts.shard_specs()
    assert len(wrong_counts) == len(indexed)  # len() counts the shards themselves instead


# ------------------------------------------------------------------ column projection


def test_select_columns_decodes_only_those_fields_in_every_read(sharded):
    labels = sharded.select_columns(["label"])
    assert [(d.label, d.image) for d in labels] == [(i, None) for i in range(10)]
    assert [d.label for d in labels.ordered()] == list(range(10))
    batch = next(labels.ordered(batch_size=4))
    assert list(batch.label) == [0, 1, 2, 3] and batch.image == [None] * 4
    assert sorted(d.label for d in labels.shuffled(seed=1)) == list(range(10))
    assert next(iter(labels.ordered(fields=["image"]))).image is not None  # an explicit fields= still wins


def test_select_columns_leaves_the_original_whole_and_survives_pickling(sharded):
    labels = sharded.select_columns(["label"])
    assert sharded.columns is None and next(iter(sharded)).image is not None
    again = pickle.loads(pickle.dumps(labels))
    assert again.columns == ("label",) and next(iter(again)).image is None
    assert next(iter(labels.select_columns(None))).image is not None


def test_select_columns_refuses_unknown_fields_at_once(sharded):
    from atdata_dagster.errors import FieldMismatchError

    with pytest.raises(FieldMismatchError, match="no field"):
        sharded.select_columns(["label", "colour"])


def test_batched_global_shuffle_is_the_same_order_as_the_per_sample_one(sharded):
    per_sample = [d.label for d in sharded.shuffled(seed=3, epoch=2)]
    batched = [int(x) for b in sharded.shuffled(batch_size=4, seed=3, epoch=2) for x in b.label]
    assert batched == per_sample and sorted(batched) == list(range(10))
    assert per_sample != [d.label for d in sharded.shuffled(seed=3, epoch=1)]


def test_a_bad_payload_in_a_batched_global_shuffle_names_its_shard_and_key(tmp_path):
    write_samples([Other(name="a"), Other(name="b")], tmp_path / "o.tar")
    ds = Dataset[Digit](str(tmp_path / "o.tar"))
    with pytest.raises(ShardError, match=r"o\.tar: sample '000000000[01]' does not decode as Digit"):
        list(ds.shuffled(batch_size=2, seed=1))


# ------------------------------------------------------------------ atdata's exception types


def _bad_shards(tmp_path):
    """Shards that cannot be read, by what atdata 0.7 raises for each (checked in tests/compat)."""
    import io
    import tarfile

    import msgpack

    good = write_samples(_digits(5), tmp_path / "good.tar").list_shards()[0]
    raw = open(good, "rb").read()
    (tmp_path / "text.tar").write_bytes(b"not a tar at all, just text....")
    (tmp_path / "truncated.tar").write_bytes(raw[:1500])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = msgpack.packb([1, 2, 3])
        info = tarfile.TarInfo("k0.msgpack")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    (tmp_path / "list.tar").write_bytes(buf.getvalue())
    return {
        "missing.tar": FileNotFoundError,
        "text.tar": tarfile.ReadError,
        "truncated.tar": tarfile.ReadError,  # atdata silently stops at the last whole sample; we raise
        "list.tar": TypeError,
    }


READS = {
    "iterate": lambda ds: list(ds),
    "ordered batches": lambda ds: list(ds.ordered(batch_size=2)),
    "shuffled": lambda ds: list(ds.shuffled(seed=1)),
    "shuffled batches": lambda ds: list(ds.shuffled(batch_size=2, seed=1)),
    "ds[i]": lambda ds: ds[0],
}


@pytest.mark.parametrize("read", list(READS))
def test_read_errors_are_also_the_exceptions_atdata_raises(tmp_path, read):
    from atdata_dagster.errors import AtdataError

    for name, atdata_type in _bad_shards(tmp_path).items():
        with pytest.raises(atdata_type) as err:
            READS[read](Dataset[Digit](str(tmp_path / name)))
        assert isinstance(err.value, ShardError) and isinstance(err.value, AtdataError), (name, err.value)
        assert str(tmp_path / name) in str(err.value), name  # and the message still names the shard


# ------------------------------------------------------------------ atdata's conveniences


def test_filter_and_map_are_lazy_chain_in_order_and_apply_to_every_read(sharded):
    calls = []

    def even(d):
        calls.append(d.label)
        return d.label % 2 == 0

    evens = sharded.filter(even)
    assert calls == []  # nothing read yet
    assert [d.label for d in evens] == [0, 2, 4, 6, 8]
    assert len(evens) == 5 == evens.count()
    assert [d.label for d in evens.head(2)] == [0, 2]
    assert sorted(d.label for d in evens.shuffled(seed=3)) == [0, 2, 4, 6, 8]
    labels = evens.map(lambda d: d.label * 10)
    assert list(labels) == [0, 20, 40, 60, 80]
    assert [list(b) for b in labels.ordered(batch_size=2)] == [[0, 20], [40, 60], [80]]
    assert list(sharded.map(lambda d: d.label).filter(lambda x: x > 7)) == [8, 9]
    assert [d.label for d in sharded] == list(range(10))  # the original is untouched


def test_select_returns_samples_at_positions_in_the_order_given(sharded):
    assert [d.label for d in sharded.select([7, 0, 3])] == [7, 0, 3]
    assert sharded.select([]) == []
    with pytest.raises(IndexError, match=r"Indices \[10\] not found in dataset \(dataset has 10 samples\)"):
        sharded.select([1, 10])
    odd = sharded.filter(lambda d: d.label % 2 == 1)
    assert [d.label for d in odd.select([0, 2])] == [1, 5]  # positions in the filtered dataset


def test_schema_column_names_describe_shards_and_batch_type(sharded):
    assert list(sharded.schema) == ["image", "label"] and sharded.schema["label"] is int
    assert sharded.column_names == ["image", "label"]
    assert Dataset(sharded.url).schema == {"_data": dict} and Dataset(sharded.url).column_names == []
    info = sharded.describe()
    assert info["sample_type"] == "Digit" and info["num_shards"] == 4 and info["shards"] == sharded.list_shards()
    assert info["url"] == sharded.url and list(info["fields"]) == ["image", "label"]
    assert list(sharded.shards) == sharded.list_shards() and not isinstance(sharded.shards, list)
    batch = next(sharded.ordered(batch_size=2))
    assert isinstance(batch, SampleBatch) and sharded.batch_type is not None
    assert sharded.batch_type([batch[0]]).sample_type is Digit


def test_wrap_and_wrap_batch_decode_raw_webdataset_dicts(sharded):
    raw = [p for _, p in sharded.iter_raw()]
    assert sharded.wrap({"__key__": "k", "msgpack": raw[3]}).label == 3
    batch = sharded.wrap_batch({"msgpack": raw[:3]})
    assert list(batch.label) == [0, 1, 2] and batch.sample_type is Digit
    with pytest.raises(ValueError, match="missing 'msgpack' key"):
        sharded.wrap({"__key__": "k"})


def test_to_dict_and_to_parquet_stream_and_match_the_samples(sharded, tmp_path):
    import pyarrow.parquet as pq

    cols = sharded.to_dict(limit=3)
    assert list(cols) == ["image", "label"] and cols["label"] == [0, 1, 2]
    files = sharded.to_parquet(tmp_path / "out.parquet", maxcount=4)
    assert [os.path.basename(f) for f in files] == ["out-000000.parquet", "out-000001.parquet", "out-000002.parquet"]
    table = pq.read_table(files[0])
    assert table.column("label").to_pylist() == [0, 1, 2, 3]
    assert table.column("image").to_pylist()[2] == [[2, 2, 2], [2, 2, 2]]
    (whole,) = sharded.filter(lambda d: d.label < 5).to_parquet(tmp_path / "all.parquet")
    assert pq.read_table(whole).column("label").to_pylist() == [0, 1, 2, 3, 4]


def test_to_pandas_needs_pandas_and_says_how_to_get_it(sharded):
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            sharded.to_pandas(limit=2)
    else:
        df = sharded.to_pandas(limit=2)
        assert list(df.columns) == ["image", "label"] and df["label"].tolist() == [0, 1]


def test_metadata_url_is_fetched_once_as_a_msgpack_map(sharded, tmp_path):
    import msgpack

    (tmp_path / "meta.msgpack").write_bytes(msgpack.packb({"source": "scanner", "n": 10}))
    ds = Dataset[Digit](sharded.url, metadata_url=str(tmp_path / "meta.msgpack"))
    assert ds.metadata == {"source": "scanner", "n": 10}
    (tmp_path / "meta.msgpack").unlink()
    assert ds.metadata["n"] == 10  # cached
    again = pickle.loads(pickle.dumps(ds))
    assert again.metadata_url == ds.metadata_url and again.metadata == {"source": "scanner", "n": 10}
    (tmp_path / "list.msgpack").write_bytes(msgpack.packb([1, 2]))
    with pytest.raises(ShardError, match="not a msgpack map"):
        Dataset[Digit](sharded.url, metadata_url=str(tmp_path / "list.msgpack")).metadata


def test_random_access_follows_maps_refuses_filters_and_torch_refuses_steps(sharded):
    from atdata_dagster.errors import ConfigurationError

    doubled = sharded.map(lambda d: d.label * 2)
    assert doubled[3] == 6 and doubled[-1] == 18
    evens = sharded.filter(lambda d: d.label % 2 == 0)
    with pytest.raises(TypeError, match=r"filtered.*select"):
        evens[0]
    with pytest.raises(ConfigurationError, match=r"filter\(\)/map\(\).*write the filtered dataset"):
        evens.torch()


# ------------------------------------------------------------------ process_shards


def test_process_shards_returns_a_result_per_shard(sharded):
    out = sharded.process_shards(lambda samples: [d.label for d in samples])
    assert out == dict(zip(sharded.list_shards(), [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]))
    odd = sharded.filter(lambda d: d.label % 2).process_shards(len)  # filters apply per shard
    assert list(odd.values()) == [1, 2, 1, 1]


def test_process_shards_reports_partial_failure_and_retries_only_the_failed(sharded):
    from atdata_dagster.errors import PartialFailureError

    urls = sharded.list_shards()
    seen_errors = []

    def flaky(samples):
        if samples[0].label in (3, 9):
            raise RuntimeError(f"boom at {samples[0].label}")
        return len(samples)

    with pytest.raises(PartialFailureError, match=r"2 of 4 shard\(s\) failed") as err:
        sharded.process_shards(flaky, on_shard_error=lambda url, exc: seen_errors.append(url))
    e = err.value
    assert e.failed_shards == [urls[1], urls[3]] == seen_errors
    assert e.succeeded_shards == [urls[0], urls[2]] and e.results == {urls[0]: 3, urls[2]: 3}
    assert isinstance(e.errors[urls[1]], RuntimeError)
    assert pickle.loads(pickle.dumps(e)).failed_shards == e.failed_shards
    assert sharded.process_shards(len, shards=e.failed_shards) == {urls[1]: 3, urls[3]: 1}
    with pytest.raises(ValueError, match="not in"):
        sharded.process_shards(len, shards=["/elsewhere.tar"])


def test_process_shards_resumes_from_a_checkpoint_and_removes_it_when_done(sharded, tmp_path):
    from atdata_dagster.errors import PartialFailureError

    urls = sharded.list_shards()
    ckpt = tmp_path / "progress.txt"
    calls = []
    broken = {urls[2]}

    def work(samples):
        calls.append(samples[0].label)
        if any(u in broken for u in urls if samples[0].label == [0, 3, 6, 9][urls.index(u)]):
            raise OSError("disk full")
        return len(samples)

    with pytest.raises(PartialFailureError):
        sharded.process_shards(work, checkpoint=ckpt)
    assert ckpt.read_text().splitlines() == [urls[0], urls[1], urls[3]]
    broken.clear()
    calls.clear()
    assert sharded.process_shards(work, checkpoint=ckpt) == {urls[2]: 3}  # only what had not succeeded
    assert calls == [6] and not ckpt.exists()
