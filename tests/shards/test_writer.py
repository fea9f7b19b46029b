"""The streaming shard writer: layout, determinism, limits, errors, memory."""

from __future__ import annotations

import hashlib
import os
import random
import tarfile
import tracemalloc

import msgpack
import numpy as np
import pytest
import webdataset as wds

from atdata_dagster.errors import EmptyDatasetError, InvalidNameError, NotPackableError, SampleError, StoreError
from atdata_dagster.shards import writer as writer_mod
from atdata_dagster.shards.reader import iter_samples, open_url
from atdata_dagster.dataset import write_samples
from atdata_dagster.shards.patterns import brace_list
from atdata_dagster.shards.writer import (
    ShardWriter,
    copy_dataset_to_store,
    member_header,
    write_samples_to_store,
)
from atdata_dagster.stores.disk import LocalDiskStore

from .helpers import NullStore, payload


def _write(store, payloads, prefix="ds", **kw):
    with ShardWriter(store, prefix, **kw) as w:
        for p in payloads:
            w.write_payload(None, p)
        return w.close()


def _read_all(urls):
    out = []
    for u in urls:
        with open_url(u) as f:
            out.extend(iter_samples(f, u))
    return out


def _leftovers(root) -> list[str]:
    return [os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns if n.endswith(".part")]


# ------------------------------------------------------------------ layout


def test_member_layout_and_headers(store):
    payloads = [payload(i) for i in range(3)]
    result = _write(store, payloads)
    assert len(result) == 1
    url = result[0]
    with tarfile.open(url) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["0000000000.msgpack", "0000000001.msgpack", "0000000002.msgpack"]
        for m, p in zip(members, payloads):
            assert m.isreg() and m.mode == 0o444 and m.uid == 0 and m.gid == 0
            assert m.uname == "bigdata" and m.gname == "bigdata" and m.mtime == 0
            assert tf.extractfile(m).read() == p
    raw = open(url, "rb").read()
    assert raw[257:265] == b"ustar\x0000"
    # header + data padded to 512 per member, then exactly two zero blocks
    expected = sum(512 + -(-len(p) // 512) * 512 for p in payloads) + 1024
    assert len(raw) == expected and raw[-1024:] == bytes(1024)
    assert result.shards[0].size == expected and result.shards[0].num_samples == 3
    assert result.checksums[url] == hashlib.sha256(raw).hexdigest()


def test_header_checksum_matches_tarfile():
    h = member_header(b"abc.msgpack", 12345)
    info = tarfile.TarInfo.frombuf(h, "utf-8", "surrogateescape")  # validates the checksum
    assert info.name == "abc.msgpack" and info.size == 12345


def test_base256_size_for_huge_members():
    h = member_header(b"big.msgpack", 9 * 1024**3)
    assert h[124] == 0x80
    info = tarfile.TarInfo.frombuf(h, "utf-8", "surrogateescape")
    assert info.size == 9 * 1024**3


def test_readable_by_tarfile_and_webdataset(store):
    payloads = [payload(i, v=list(range(i))) for i in range(25)]
    result = _write(store, payloads, maxcount=10)
    assert len(result) == 3
    got = [(s["__key__"], s["msgpack"]) for s in wds.WebDataset(list(result), shardshuffle=False)]
    assert got == [(f"{i:010d}", p) for i, p in enumerate(payloads)]
    for url in result:
        with tarfile.open(url) as tf:
            assert all(m.isreg() for m in tf.getmembers())


def test_large_payload_passes_through(store, monkeypatch):
    big = os.urandom(3 * (1 << 20) + 7)
    result = _write(store, [payload(0), msgpack.packb({"blob": big}), payload(2)])
    got = _read_all(result)
    assert msgpack.unpackb(got[1][1])["blob"] == big
    assert result.checksums[result[0]] == hashlib.sha256(open(result[0], "rb").read()).hexdigest()


def test_explicit_keys_and_wds_dicts(mem_store):
    with ShardWriter(mem_store, "p") as w:
        w.write_payload("alpha", payload(1))
        w.write_sample({"__key__": "beta", "msgpack": payload(2)})
        w.write_sample({"msgpack": payload(3)})  # no key -> global index
        r = w.close()
    got = list(iter_samples(mem_store.open_read(r[0]), r[0]))
    assert [k for k, _ in got] == ["alpha", "beta", "0000000002"]


# ------------------------------------------------------------ determinism


def test_same_payloads_give_identical_shards(tmp_path):
    payloads = [payload(i, x=random.Random(i).random()) for i in range(50)]
    a = _write(LocalDiskStore(tmp_path / "a"), payloads, maxcount=20)
    b = _write(LocalDiskStore(tmp_path / "b"), payloads, maxcount=20)
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    for ua, ub in zip(a, b):
        assert open(ua, "rb").read() == open(ub, "rb").read()
        assert os.path.basename(ua) == os.path.basename(ub)
    # a changed byte changes the name
    c = _write(LocalDiskStore(tmp_path / "c"), payloads[:-1] + [payload(999)], maxcount=20)
    assert os.path.basename(c[-1]) != os.path.basename(a[-1])
    assert os.path.basename(c[0]) == os.path.basename(a[0])


def test_rewrite_into_same_store_reuses_files(store):
    payloads = [payload(i) for i in range(30)]
    a = _write(store, payloads, maxcount=10)
    b = _write(store, payloads, maxcount=10)
    assert list(a) == list(b)
    assert len([u for u in store.iter_shard_urls()]) == 3


# ------------------------------------------------------------------ limits


def test_maxcount_is_honoured(store):
    result = _write(store, [payload(i) for i in range(25)], maxcount=10)
    assert [s.num_samples for s in result.shards] == [10, 10, 5]
    assert [len(_read_all([u])) for u in result] == [10, 10, 5]
    assert [u[-10:-4] for u in result] == ["000000", "000001", "000002"]
    assert result.num_samples == 25


def test_maxcount_exact_multiple_gives_no_empty_shard(store):
    result = _write(store, [payload(i) for i in range(20)], maxcount=10)
    assert [s.num_samples for s in result.shards] == [10, 10]


def test_maxsize_is_a_true_upper_bound(store):
    rng = random.Random(7)
    payloads = [msgpack.packb({"i": i, "b": os.urandom(rng.randrange(1, 1500))}) for i in range(200)]
    maxsize = 6000
    result = _write(store, payloads, maxcount=None, maxsize=maxsize)
    sizes = [os.path.getsize(u) for u in result]
    assert all(s <= maxsize for s in sizes), sizes
    assert [s.size for s in result.shards] == sizes
    # tight: the first member of each following shard would not have fitted
    offset = 0
    member = lambda p: 512 + -(-len(p) // 512) * 512  # noqa: E731
    for info in result.shards[:-1]:
        offset += info.num_samples
        assert info.size + member(payloads[offset]) > maxsize
    assert [p for _, p in _read_all(result)] == payloads


def test_oversized_sample_gets_its_own_shard(store):
    big = msgpack.packb({"b": b"x" * 10_000})
    payloads = [payload(0), payload(1), big, payload(3)]
    result = _write(store, payloads, maxcount=None, maxsize=4096)
    counts = [s.num_samples for s in result.shards]
    assert counts == [2, 1, 1]
    assert result.shards[1].size > 4096
    assert all(s.size <= 4096 for i, s in enumerate(result.shards) if i != 1)


def test_maxcount_and_maxsize_together(store):
    payloads = [msgpack.packb({"b": b"x" * 600}) for _ in range(12)]  # 1536 bytes per member
    result = _write(store, payloads, maxcount=3, maxsize=4 * 1536 + 1024)
    assert [s.num_samples for s in result.shards] == [3, 3, 3, 3]
    result = _write(store, payloads, maxcount=5, maxsize=2 * 1536 + 1024)
    assert [s.num_samples for s in result.shards] == [2] * 6


@pytest.mark.parametrize("kw", [{"maxcount": 0}, {"maxcount": -1}, {"maxsize": 0}, {"maxcount": 1.5}])
def test_invalid_limits(store, kw):
    with pytest.raises(ValueError):
        ShardWriter(store, "x", **kw)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("key", ["", "a.b", "a/b", "a\0b", "é", "k" * 65, 7])
def test_invalid_keys(store, tmp_path, key):
    with pytest.raises(InvalidNameError):
        with ShardWriter(store, "ds") as w:
            w.write_payload("ok", payload(0))
            w.write_payload(key, payload(1))
    assert _leftovers(tmp_path) == []
    assert list(store.iter_shard_urls()) == []


def test_repeated_consecutive_key_rejected(mem_store):
    with pytest.raises(SampleError, match="repeats the key"):
        with ShardWriter(mem_store, "p") as w:
            w.write_payload("a", payload(0))
            w.write_payload("a", payload(1))
    assert mem_store.sinks[0].state == "aborted"


def test_empty_input(store, tmp_path):
    with pytest.raises(EmptyDatasetError, match="samples must be non-empty"):
        write_samples_to_store([], store, "ds")
    assert list(store.iter_shard_urls()) == []
    assert not (tmp_path / "store" / "ds").exists() or not os.listdir(tmp_path / "store" / "ds")


def test_non_packable_names_position(store, tmp_path):
    from atdata_dagster.samples.packable import DictSample

    samples = [DictSample(a=1), DictSample(a=2), object()]
    with pytest.raises(NotPackableError, match="sample 2"):
        write_samples_to_store(samples, store, "ds")
    assert _leftovers(tmp_path) == []


def test_unserializable_sample_names_position(store):
    from atdata_dagster.samples.packable import DictSample

    with pytest.raises(SampleError, match="sample 1"):
        write_samples_to_store([DictSample(a=1), DictSample(a=object())], store, "ds")


def test_failure_midway_aborts_open_shard_and_keeps_committed(store, tmp_path):
    def gen():
        for i in range(15):
            yield {"msgpack": payload(i)}
        raise RuntimeError("upstream failed")

    with pytest.raises(RuntimeError, match="upstream failed"):
        write_samples_to_store(gen(), store, "ds", maxcount=10)
    # the first shard was committed (left for gc); the second was discarded
    assert len(list(store.iter_shard_urls())) == 1
    assert _leftovers(tmp_path) == []


def test_store_write_error_aborts(tmp_path, monkeypatch):
    import errno

    from atdata_dagster.stores import disk

    store = LocalDiskStore(tmp_path / "s")
    calls = {"n": 0}
    real_write = os.write

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(disk.os, "write", failing_write)
    with pytest.raises(StoreError, match="No space left"):
        write_samples_to_store(({"msgpack": os.urandom(300_000)} for _ in range(10)), store, "ds", maxcount=None)
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    assert list(store.iter_shard_urls()) == []


def test_writer_context_aborts_on_exception(mem_store):
    with pytest.raises(KeyError):
        with ShardWriter(mem_store, "p") as w:
            w.write_payload(None, payload(0))
            raise KeyError("boom")
    assert mem_store.sinks[0].state == "aborted"
    assert mem_store.objects == {}
    with pytest.raises(RuntimeError):
        w.write_payload(None, payload(1))


def test_close_is_idempotent_and_empty_close(mem_store):
    w = ShardWriter(mem_store, "p")
    assert list(w.close()) == [] and mem_store.sinks == []
    w2 = ShardWriter(mem_store, "p")
    w2.write_payload(None, payload(0))
    r1 = w2.close()
    assert w2.close() is r1


# ------------------------------------------------------------------ progress


def test_progress_reports(mem_store, monkeypatch):
    calls = []
    monkeypatch.setattr(writer_mod, "PROGRESS_INTERVAL", 0.0)
    monkeypatch.setattr(writer_mod, "CHUNK_SIZE", 4096)
    result = write_samples_to_store(
        ({"msgpack": payload(i, pad="x" * 100)} for i in range(3000)), mem_store, "p", maxcount=1000,
        progress=lambda n, b: calls.append((n, b)),
    )
    assert len(calls) > 3
    assert calls[-1] == (3000, result.total_bytes)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(calls, calls[1:]))


def test_progress_is_throttled(mem_store):
    calls = []
    write_samples_to_store(({"msgpack": payload(i)} for i in range(5000)), mem_store, "p",
                           progress=lambda n, b: calls.append(n))
    assert calls == [5000]  # fast write: only the final report


# ------------------------------------------------------------------ memory


def _peak_writing(n: int) -> int:
    p = payload(1)
    store = NullStore()
    tracemalloc.start()
    try:
        with ShardWriter(store, "p", maxcount=None) as w:
            for _ in range(n):
                w.write_payload(None, p)
            w.close()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_is_flat():
    small = _peak_writing(20_000)
    large = _peak_writing(200_000)
    # tarfile would keep ~400 B per member: 72 MB more for 180k extra samples
    assert large < small + 256 * 1024, (small, large)


# ------------------------------------------------------------------ typed samples


def test_typed_samples_roundtrip(store):
    from atdata_dagster.dataset import Dataset
    from atdata_dagster.samples.packable import packable

    @packable
    class Vec:
        name: str
        v: np.ndarray

    samples = [Vec(name=f"n{i}", v=np.arange(i, i + 4, dtype=np.float32)) for i in range(10)]
    result = write_samples_to_store(samples, store, "vec", maxcount=4)
    back = list(Dataset[Vec](list(result)))
    assert [s.name for s in back] == [s.name for s in samples]
    assert all(np.array_equal(a.v, b.v) and b.v.dtype == np.float32 for a, b in zip(samples, back))


# ------------------------------------------------------------------ write_samples (path API)


def test_write_samples_single_file(tmp_path):
    from atdata_dagster.samples.packable import DictSample

    ds = write_samples([DictSample(a=i) for i in range(5)], tmp_path / "out.tar")
    assert ds.url == str((tmp_path / "out.tar").resolve())
    assert os.listdir(tmp_path) == ["out.tar"]
    assert [s.a for s in ds.ordered()] == list(range(5))


def test_write_samples_sharded_pattern(tmp_path):
    from atdata_dagster.samples.packable import DictSample

    ds = write_samples([DictSample(a=i) for i in range(5)], str(tmp_path / "out.tar"), maxcount=2)
    assert sorted(os.listdir(tmp_path)) == ["out-000000.tar", "out-000001.tar", "out-000002.tar"]
    root = str(tmp_path.resolve())
    assert ds.url == f"{root}/out-00000{{0,1,2}}.tar"
    assert ds.list_shards() == [f"{root}/out-00000{i}.tar" for i in range(3)]
    assert [s.a for s in ds.ordered()] == list(range(5))


def test_write_samples_percent_pattern_and_manifest(tmp_path):
    from atdata_dagster.samples.packable import DictSample
    from atdata_dagster.shards.manifest import read_manifest

    ds = write_samples([DictSample(a=i) for i in range(5)], str(tmp_path / "s-%03d.tar"), maxcount=3, manifest=True)
    assert sorted(os.listdir(tmp_path)) == [
        "s-000.manifest.json", "s-000.manifest.parquet", "s-000.tar",
        "s-001.manifest.json", "s-001.manifest.parquet", "s-001.tar",
    ]
    assert read_manifest(ds.list_shards()[1])["num_samples"] == 2
    assert read_manifest(ds.list_shards()[1])["shard_id"] == "s-001"


def test_write_samples_empty_leaves_nothing(tmp_path):
    with pytest.raises(EmptyDatasetError):
        write_samples([], tmp_path / "out.tar")
    assert os.listdir(tmp_path) == []


def test_brace_list():
    assert brace_list(["/a/x.tar"]) == "/a/x.tar"
    assert brace_list(["/d/a-000000.tar", "/d/a-000001.tar"]) == "/d/a-00000{0,1}.tar"
    assert brace_list(["/d/a.tar", "/d/b.tar"]) == "/d/{a,b}.tar"


# ------------------------------------------------------------------ copying


def test_copy_keeps_keys_payloads_and_boundaries(store, tmp_path):
    from atdata_dagster.dataset import Dataset

    src = LocalDiskStore(tmp_path / "src")
    with ShardWriter(src, "a", maxcount=4) as w:
        for i in range(10):
            w.write_payload(f"key{i}", payload(i))
        r = w.close()
    ds = Dataset(list(r))
    copied = copy_dataset_to_store(ds, store, prefix="b")
    assert [s.num_samples for s in copied.shards] == [4, 4, 2]
    assert _read_all(copied) == _read_all(r)
    assert [s.sha256 for s in copied.shards] == [s.sha256 for s in r.shards]  # canonical bytes
    resharded = copy_dataset_to_store(ds, store, prefix="c", maxcount=5)
    assert [s.num_samples for s in resharded.shards] == [5, 5]
    assert _read_all(resharded) == _read_all(r)
    via_store = store.write_shards(ds, prefix="d", maxcount=3)
    assert [s.num_samples for s in via_store.shards] == [3, 3, 3, 1]


def test_copy_of_webdataset_shard_with_directory_keys(store, tmp_path):
    from atdata_dagster.dataset import Dataset

    src = str(tmp_path / "wds.tar")
    long_dir = "d" * 60 + "/" + "e" * 60
    with wds.TarWriter(src) as tw:
        tw.write({"__key__": "sub/dir/k1", "msgpack": payload(1), "json": b"{}"})
        tw.write({"__key__": f"{long_dir}/k2", "msgpack": payload(2)})
    copied = copy_dataset_to_store(Dataset(src), store, prefix="w")
    assert _read_all(copied) == [("sub/dir/k1", payload(1)), (f"{long_dir}/k2", payload(2))]
    with tarfile.open(copied[0]) as tf:  # the long name uses the ustar prefix field
        assert tf.getnames() == ["sub/dir/k1.msgpack", f"{long_dir}/k2.msgpack"]


def test_copy_empty_dataset(store, tmp_path):
    from atdata_dagster.dataset import Dataset

    src = str(tmp_path / "empty.tar")
    tarfile.open(src, "w").close()
    with pytest.raises(EmptyDatasetError):
        copy_dataset_to_store(Dataset(src), store, prefix="e")
    assert list(store.iter_shard_urls()) == []
