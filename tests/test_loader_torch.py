"""Dataset.torch() (loader_torch): exactly-once over ranks and DataLoader workers, epochs, resume, verified reads, S3 cache.

Everything runs on real PyTorch (CPU) and torchdata's StatefulDataLoader; the S3 test
uses the real RGW started by the suite.
"""

from __future__ import annotations

import collections
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

torch = pytest.importorskip("torch")
stateful = pytest.importorskip("torchdata.stateful_dataloader")

from torch.utils.data import DataLoader  # noqa: E402

from atdata_dagster import local, packable  # noqa: E402
from atdata_dagster.dataset import Dataset  # noqa: E402
from atdata_dagster.errors import ChecksumMismatchError, LoaderStateError, ShardError  # noqa: E402
from atdata_dagster.loader_torch import collate  # noqa: E402

StatefulDataLoader = stateful.StatefulDataLoader


@packable
class Item:
    idx: int
    vec: NDArray[np.float32]


N = 103  # not a multiple of any rank or worker count used below


def items(n: int = N):
    return (Item(idx=i, vec=np.full(4, i, np.float32)) for i in range(n))


@pytest.fixture
def index(tmp_path: Path):
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    yield idx
    idx.close()


@pytest.fixture
def ds(index):
    """103 items in 11 shards of at most 10, opened through the index (counts and checksums known)."""
    index.write_samples(items(), name="items", maxcount=10)
    return index.dataset("items", Item)


def ids(batches) -> list[int]:
    out: list[int] = []
    for b in batches:
        out.extend(int(x) for x in b["idx"])
    return out


def exactly_once(seen: list[int], n: int = N) -> None:
    counts = collections.Counter(seen)
    assert sorted(counts) == list(range(n)), f"missing {sorted(set(range(n)) - set(counts))[:10]}"
    assert max(counts.values()) == 1, f"repeated {[k for k, c in counts.items() if c > 1][:10]}"


# ------------------------------------------------------------------ exactly once


@pytest.mark.parametrize("num_workers", [0, 2, 3])
def test_dataloader_workers_yield_every_sample_exactly_once(ds, num_workers):
    tds = ds.torch()
    assert len(tds) == N
    loader = DataLoader(tds, batch_size=8, num_workers=num_workers, collate_fn=collate)
    exactly_once(ids(loader))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shuffled_epoch_is_still_exactly_once_and_batches_collate_to_tensors(ds, num_workers):
    tds = ds.torch(shuffle=True, seed=3, batch_size=5, shuffle_buffer_bytes=2000)
    batches = list(DataLoader(tds, batch_size=None, num_workers=num_workers))
    assert isinstance(batches[0]["vec"], torch.Tensor) and batches[0]["vec"].shape[1:] == (4,)
    assert len(batches) == len(tds)
    seen = ids(batches)
    exactly_once(seen)
    assert seen != sorted(seen)


def test_three_ranks_of_two_workers_split_one_epoch_into_equal_parts(ds):
    per_rank = []
    for rank in range(3):
        tds = ds.torch(rank=rank, world_size=3, drop_last=True, shuffle=True, seed=1)
        got = ids(DataLoader(tds, batch_size=4, num_workers=2, collate_fn=collate))
        assert len(got) == len(tds) == N // 3
        per_rank.append(got)
    seen = [i for got in per_rank for i in got]
    counts = collections.Counter(seen)
    assert len(seen) == 3 * (N // 3) and max(counts.values()) == 1  # the remainder of 1 is dropped


def test_padding_gives_every_rank_the_same_length_and_covers_every_sample(ds):
    per_rank = [ids(DataLoader(ds.torch(rank=r, world_size=3, drop_last=False), batch_size=7, num_workers=2,
                               collate_fn=collate)) for r in range(3)]
    assert [len(p) for p in per_rank] == [35, 35, 35]  # ceil(103 / 3)
    counts = collections.Counter(i for p in per_rank for i in p)
    assert sorted(counts) == list(range(N))
    assert sum(c - 1 for c in counts.values()) == 3 * 35 - N  # only the padding repeats


def test_few_shards_are_split_into_sample_ranges_across_ranks(index):
    index.write_samples(items(40), name="one", maxcount=1000)  # a single shard
    ds1 = index.dataset("one", Item)
    parts = [ids(DataLoader(ds1.torch(rank=r, world_size=4), batch_size=3, num_workers=2, collate_fn=collate))
             for r in range(4)]
    assert [len(p) for p in parts] == [10, 10, 10, 10]
    exactly_once([i for p in parts for i in p], 40)


def _gloo_worker(rank: int, world: int, port: int, db: str, data: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        idx = local.Index(path=db, data_store=local.LocalDiskStore(data), atmosphere=None)
        tds = idx.dataset("items", Item).torch(shuffle=True, seed=7)  # rank/world from torch.distributed
        assert (tds.rank, tds.world_size) == (rank, world)
        got = ids(DataLoader(tds, batch_size=4, num_workers=2, collate_fn=collate))
        n = torch.tensor([len(got)])
        dist.all_reduce(n, op=dist.ReduceOp.MAX)  # would block if a rank had fewer batches to train on
        Path(out, f"rank{rank}.txt").write_text(",".join(map(str, got)))
        idx.close()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torch_distributed_gloo_two_processes_share_one_epoch(ds, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_gloo_worker, args=(2, _free_port(), str(tmp_path / "index.db"), str(tmp_path / "data"), str(out)),
             nprocs=2, join=True)
    parts = [[int(x) for x in (out / f"rank{r}.txt").read_text().split(",")] for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 52  # ceil(103 / 2): one sample repeated as padding
    counts = collections.Counter(parts[0] + parts[1])
    assert sorted(counts) == list(range(N)) and sum(counts.values()) == 104


# ------------------------------------------------------------------ epochs


def test_set_epoch_gives_a_deterministic_new_order(ds):
    def order(epoch: int) -> list[int]:
        tds = ds.torch(shuffle=True, seed=11, shuffle_buffer_bytes=4000)
        tds.set_epoch(epoch)
        return ids(DataLoader(tds, batch_size=10, num_workers=2, collate_fn=collate))

    first, again, second = order(0), order(0), order(1)
    assert first == again
    assert first != second
    exactly_once(second)


# ------------------------------------------------------------------ resume


def _take(it, k: int) -> list[int]:
    got = []
    for _ in range(k):
        got.extend(int(x) for x in next(it)["idx"])
    return got


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("before,after", [(2, 2), (2, 3), (3, 1), (2, 0), (0, 2)])
def test_resume_mid_epoch_onto_the_same_or_another_worker_count_is_exact(ds, shuffle, before, after):
    opts = dict(shuffle=shuffle, seed=5, shuffle_buffer_bytes=3000)
    tds = ds.torch(**opts)
    loader = StatefulDataLoader(tds, batch_size=4, num_workers=before, collate_fn=collate)
    it = iter(loader)
    first = _take(it, 7)  # the workers have prefetched more than this: it must not count
    state = loader.state_dict()
    del it, loader  # "killed"

    fresh = ds.torch(**opts)
    if after == before:
        resumed = StatefulDataLoader(fresh, batch_size=4, num_workers=after, collate_fn=collate)
        resumed.load_state_dict(state)
    else:
        fresh.load_state_dict(state)  # the whole DataLoader state, onto another worker count
        resumed = StatefulDataLoader(fresh, batch_size=4, num_workers=after, collate_fn=collate)
    rest = ids(resumed)
    exactly_once(first + rest)


def test_resume_with_the_same_workers_continues_the_uninterrupted_order(ds):
    opts = dict(shuffle=True, seed=9, shuffle_buffer_bytes=3000)
    whole = ids(StatefulDataLoader(ds.torch(**opts), batch_size=4, num_workers=2, collate_fn=collate))
    loader = StatefulDataLoader(ds.torch(**opts), batch_size=4, num_workers=2, collate_fn=collate)
    it = iter(loader)
    first = _take(it, 5)
    state = loader.state_dict()
    del it, loader
    resumed = StatefulDataLoader(ds.torch(**opts), batch_size=4, num_workers=2, collate_fn=collate)
    resumed.load_state_dict(state)
    assert first + ids(resumed) == whole


def test_resume_twice_across_worker_counts_is_exact(ds):
    opts = dict(shuffle=True, seed=2)
    loader = StatefulDataLoader(ds.torch(**opts), batch_size=3, num_workers=3, collate_fn=collate)
    it = iter(loader)
    seen = _take(it, 4)
    state = loader.state_dict()
    del it, loader
    tds = ds.torch(**opts)
    tds.load_state_dict(state)
    loader = StatefulDataLoader(tds, batch_size=3, num_workers=2, collate_fn=collate)
    it = iter(loader)
    seen += _take(it, 6)
    state = loader.state_dict()
    del it, loader
    tds = ds.torch(**opts)
    tds.load_state_dict(state)
    seen += ids(StatefulDataLoader(tds, batch_size=3, num_workers=0, collate_fn=collate))
    exactly_once(seen)


def test_a_state_of_another_dataset_version_is_refused(index, ds):
    loader = StatefulDataLoader(ds.torch(), batch_size=4, num_workers=0, collate_fn=collate)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    index.write_samples(items(50), name="items", maxcount=10)  # a new version under the same name
    other = index.dataset("items", Item)
    assert other.cid != ds.cid
    with pytest.raises(LoaderStateError, match=ds.cid):
        other.torch().load_state_dict(state)
    with pytest.raises(LoaderStateError, match="seed"):
        ds.torch(seed=1).load_state_dict(state)


def test_state_is_plain_json_and_names_the_cid(ds):
    import json

    tds = ds.torch()
    it = iter(tds)
    [next(it) for _ in range(3)]
    state = tds.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["dataset"] == ds.cid and state["consumed"] == 3


# ------------------------------------------------------------------ verified reads


def _shard_path(ds: Dataset, i: int) -> Path:
    return Path(ds.list_shards()[i])


def _drain(tds) -> tuple[list[int], Exception | None]:
    got: list[int] = []
    try:
        for sample in tds:
            got.append(sample.idx)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return got, exc
    return got, None


def test_a_flipped_byte_stops_the_shard_before_any_of_its_samples(ds):
    path = _shard_path(ds, 4)  # samples 40..49
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01  # inside sample 40's payload: the tar still parses
    path.write_bytes(bytes(data))
    got, exc = _drain(ds.torch())
    assert isinstance(exc, ChecksumMismatchError) and str(path) in str(exc)
    assert got == list(range(40))  # shards 0..3, nothing of shard 4
    # without verification the corrupt sample is read as if it were good
    got, exc = _drain(ds.torch(verify=False))
    assert 40 in got or exc is not None


def test_a_truncated_shard_is_refused_by_its_checksum(ds):
    path = _shard_path(ds, 0)
    path.write_bytes(path.read_bytes()[:1500])
    got, exc = _drain(ds.torch())
    assert isinstance(exc, ChecksumMismatchError) and str(path) in str(exc) and got == []


def test_a_missing_shard_names_the_shard(ds):
    path = _shard_path(ds, 2)
    path.unlink()
    got, exc = _drain(ds.torch())
    assert isinstance(exc, ShardError) and str(path) in str(exc) and "does not exist" in str(exc)
    assert got == list(range(20))


def test_a_corrupt_shard_fails_a_worker_of_a_dataloader_too(ds):
    path = _shard_path(ds, 7)
    data = bytearray(path.read_bytes())
    data[-2000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=str(path)):
        list(DataLoader(ds.torch(), batch_size=4, num_workers=2, collate_fn=collate))


# ------------------------------------------------------------------ projection and S3 cache


def test_torch_fields_decodes_only_the_named_fields(ds):
    batch = next(iter(DataLoader(ds.torch(fields=["idx"]), batch_size=4, collate_fn=collate)))
    assert batch["idx"].tolist() == [0, 1, 2, 3]
    assert batch["vec"] == [None] * 4


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_s3_shards_are_cached_verified_and_not_downloaded_again(s3_store, tmp_path):
    idx = local.Index(path=str(tmp_path / "i.db"), data_store=s3_store, atmosphere=None)
    idx.write_samples(items(), name="items", maxcount=25)
    ds3 = idx.dataset("items", Item)
    gets: list[str] = []
    s3_store.client.meta.events.register("before-send.s3.GetObject", lambda request, **kw: gets.append(request.url))
    tds = ds3.torch(shuffle=True, cache_dir=tmp_path / "cache")
    tds.set_epoch(0)
    exactly_once(ids(DataLoader(tds, batch_size=8, collate_fn=collate)))
    first = len(gets)
    assert first == len(ds3.list_shards()) == 5  # one GET per shard, verified as it entered the cache
    tds.set_epoch(1)
    exactly_once(ids(DataLoader(tds, batch_size=8, collate_fn=collate)))
    assert len(gets) == first  # epoch 2 makes no GET
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(f"{c}.tar" for c in idx.get_dataset("items").checksums.values())
    idx.close()


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_s3_shards_stream_verified_into_dataloader_workers(s3_store, tmp_path):
    idx = local.Index(path=str(tmp_path / "i.db"), data_store=s3_store, atmosphere=None)
    idx.write_samples(items(), name="items", maxcount=25)
    tds = idx.dataset("items", Item).torch(shuffle=True, batch_size=8)  # the opener travels to the workers
    exactly_once(ids(DataLoader(tds, batch_size=None, num_workers=2)))
    idx.close()


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_s3_cache_refuses_a_corrupt_object_and_keeps_its_byte_limit(s3_store, s3_client, tmp_path):
    idx = local.Index(path=str(tmp_path / "i.db"), data_store=s3_store, atmosphere=None)
    idx.write_samples(items(), name="items", maxcount=25)
    ds3 = idx.dataset("items", Item)
    sizes = [len(s3_client.get_object(Bucket=s3_store.bucket, Key=u.split("/", 3)[3])["Body"].read())
             for u in ds3.list_shards()]
    limit = max(sizes) * 2
    exactly_once([s.idx for s in ds3.torch(cache_dir=tmp_path / "c", cache_limit_bytes=limit)])
    assert sum(p.stat().st_size for p in (tmp_path / "c").glob("*.tar")) <= limit
    url = ds3.list_shards()[3]
    key = url.split("/", 3)[3]
    body = bytearray(s3_client.get_object(Bucket=s3_store.bucket, Key=key)["Body"].read())
    body[800] ^= 1
    s3_client.put_object(Bucket=s3_store.bucket, Key=key, Body=bytes(body))
    got, exc = _drain(ds3.torch(cache_dir=tmp_path / "c2"))
    assert isinstance(exc, ChecksumMismatchError) and url in str(exc)
    assert got == list(range(75))
    assert not [p for p in (tmp_path / "c2").iterdir() if p.name.startswith(idx.get_dataset("items").checksums[url])]
    idx.close()


@pytest.mark.slow
def test_the_readme_training_example_runs_and_resumes_exactly(tmp_path):
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Training"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-2000:]
    first, last = out.stdout.split("\n")[:2]
    assert first.startswith("1000 0.1 bafyrei") and last == "1000"


_CHILD = r"""
import json, os, sys, time
from torchdata.stateful_dataloader import StatefulDataLoader
from atdata_dagster import local
from tests.test_loader_torch import Item

db, data, out, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
idx = local.Index(path=db, data_store=local.LocalDiskStore(data), atmosphere=None)
tds = idx.dataset("items", Item).torch(shuffle=True, seed=8, batch_size=4)
loader = StatefulDataLoader(tds, batch_size=None, num_workers=2)
seen = []
for step, batch in enumerate(loader):
    seen += [int(i) for i in batch["idx"]]
    with open(out + ".tmp", "w") as f:  # a checkpoint after every step, as a trainer would
        json.dump({"seen": seen, "state": loader.state_dict()}, f)
    os.replace(out + ".tmp", out)
    if step + 1 == k:
        print("checkpointed", flush=True)
        time.sleep(600)  # killed here, mid-epoch, workers still prefetching
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers_after", [2, 3])
def test_a_killed_training_process_resumes_from_its_checkpoint_exactly(ds, tmp_path, workers_after):
    import json
    import signal
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt.json"
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "index.db"), str(tmp_path / "data"), str(ckpt), "6"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    try:
        assert child.stdout.readline().strip() == "checkpointed", child.stderr.read()[-2000:]
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the trainer and its DataLoader workers
        child.wait(timeout=30)
    saved = json.loads(ckpt.read_text())
    assert len(saved["seen"]) == 24

    tds = ds.torch(shuffle=True, seed=8, batch_size=4)
    if workers_after == 2:
        loader = StatefulDataLoader(tds, batch_size=None, num_workers=2)
        loader.load_state_dict(saved["state"])
    else:
        tds.load_state_dict(saved["state"])
        loader = StatefulDataLoader(tds, batch_size=None, num_workers=workers_after)
    exactly_once(saved["seen"] + ids(loader))
