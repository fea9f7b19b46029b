"""Training-read benchmark: our read path against Mosaic Streaming, LitData, HF datasets, WebDataset, Lance.

    python -m benchmarks.bench_training [--quick] [--workloads embeddings,images] [--systems ours,mosaic,...]

Two workloads, written by every system from the same in-memory samples:

* ``embeddings``: 100,000 x {key: str, label: int, embedding: float32[256]}
* ``images``: 5,000 x {key: str, label: int, image: uint8[128,128,3]}

(``--quick``: 10,000 and 1,000.) ``label`` is the sample's position, so every read can
be checked for exactly-once delivery and the shuffle's quality measured. Measured per
system, in one run on this machine:

* write: samples/s from Python objects to the system's on-disk format;
* seq: a sequential epoch in batches of 256 (every field materialized: arrays as numpy,
  strings as str);
* shuffled: an epoch with a global, sample-level shuffle where the system has one
  (ours: ``shuffled()``; LitData/Mosaic: their shuffling datasets; HF: ``shuffle()``;
  WebDataset: its 1,000-sample buffer), with its quality: mean displacement (fraction
  of N; a uniform shuffle gives ~0.33) and adjacent-pair rate (~2/N uniform, 1 unshuffled);
* shuffle memory: how much a shuffled epoch over images raises peak RSS above a
  sequential epoch, each epoch in its own fresh process;
* random access: ``ds[i]`` lookups/s at random positions;
* DataLoader: torch ``DataLoader`` with 2 workers, epochs 1 and 2 (shuffled, batches of
  256), and whether every sample came exactly once per epoch;
* verification (ours): re-hashing every shard against its recorded SHA-256.

Each system runs in its own fresh child process (imports done before timing), given
``--system-timeout`` seconds per workload: one that hangs is killed and reported as
timed out, and the others' figures still print. Peers live in ``.cache/bench-venv`` (``scripts/install-bench-venv.sh``, run on first
use); this module re-executes itself there. Ratios are ours / peer (> 1: ours is faster,
or for memory, < 1: ours uses less). The load average is printed before and after:
this is a shared 2-core machine, so figures move from run to run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from typing import Any, Callable, Iterator

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".cache", "bench-venv")
BATCH = 256
SEED = 1234
SYSTEMS = ["ours", "mosaic", "litdata", "hf", "wds", "lance"]


# ------------------------------------------------------------------ environment


def _in_bench_venv() -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def _reexec_in_venv() -> None:
    script = os.path.join(ROOT, "scripts", "install-bench-venv.sh")
    if subprocess.call(["bash", script]) != 0:
        sys.exit("bench_training: could not create .cache/bench-venv (see the output above)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.execve(os.path.join(VENV, "bin", "python"), [os.path.join(VENV, "bin", "python"), "-m", "benchmarks.bench_training", *sys.argv[1:]], env)


def _stub_torchvision() -> None:
    """Mosaic Streaming imports torchvision for its vision datasets only; the registry's torchvision
    wheel cannot load beside a CPU torch, so the venv has none and this stands in for that import."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # noqa: BLE001, S110 - probing whether torchvision imports at all (it can fail with any error beside a CPU torch)
        pass

    def mod(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return m

    tv, ds, tr, fn = (mod(n) for n in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional"))
    ds.VisionDataset = type("VisionDataset", (), {})
    ds.CIFAR10 = None
    fn.to_tensor = None
    tv.datasets, tv.transforms, tr.functional = ds, tr, fn
    sys.modules.update({m.__name__: m for m in (tv, ds, tr, fn)})


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ workloads


class Workload:
    def __init__(self, name: str, n: int, field: str, shape: tuple[int, ...], dtype: str, maxcount: int):
        self.name, self.n, self.field, self.shape, self.dtype, self.maxcount = name, n, field, shape, np.dtype(dtype), maxcount
        rng = np.random.default_rng(0)
        if self.dtype == np.uint8:
            self.pool = rng.integers(0, 256, (64, *shape), dtype=np.uint8)
        else:
            self.pool = rng.standard_normal((512, *shape)).astype(self.dtype)

    def rows(self) -> Iterator[tuple[str, int, np.ndarray]]:
        pool, m = self.pool, len(self.pool)
        for i in range(self.n):
            yield f"k{i:08d}", i, pool[i % m]

    def check(self, label: int, arr: np.ndarray) -> bool:
        return bool(np.array_equal(np.asarray(arr).reshape(self.shape), self.pool[label % len(self.pool)]))


def workloads(quick: bool) -> dict[str, Workload]:
    return {
        "embeddings": Workload("embeddings", 10_000 if quick else 100_000, "embedding", (256,), "float32", 10_000),
        "images": Workload("images", 1_000 if quick else 5_000, "image", (128, 128, 3), "uint8", 1_000),
    }


# ------------------------------------------------------------------ systems
#
# Each system: write(wl, dir); seq(wl, dir) -> labels; shuffled(wl, dir, seed) -> labels;
# lookup(wl, dir) -> callable(i) -> (label, array); loader(wl, dir, epoch) -> labels.


def _labels(batches: Iterator[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(b, np.int64).reshape(-1) for b in batches]) if batches else np.zeros(0, np.int64)


class Ours:
    name = "ours"

    def _sample_type(self, wl: Workload) -> type:
        from numpy.typing import NDArray

        from atdata_dagster.samples.packable import packable

        cached = getattr(self, "_types", {})
        self._types = cached
        if wl.name not in cached:
            ann = {"key": str, "label": int, wl.field: NDArray[np.uint8] if wl.dtype == np.uint8 else NDArray[np.float32]}
            cls = type(f"Bench{wl.name.title()}", (), {"__annotations__": ann, "__module__": __name__})
            cached[wl.name] = packable(cls)
            globals()[cls.__name__] = cached[wl.name]  # picklable by reference for DataLoader workers
        return cached[wl.name]

    def write(self, wl: Workload, d: str) -> None:
        from atdata_dagster.shards.writer import write_samples_to_store
        from atdata_dagster.stores.disk import LocalDiskStore

        st = self._sample_type(wl)
        field = wl.field
        samples = (st(**{"key": k, "label": i, field: a}) for k, i, a in wl.rows())
        result = write_samples_to_store(samples, LocalDiskStore(d), "bench", maxcount=wl.maxcount)
        meta = {
            "urls": list(result),
            "checksums": result.checksums,
            "stats": {"shard_samples": [s.num_samples for s in result.shards], "shard_bytes": [s.size for s in result.shards]},
        }
        with open(os.path.join(d, "bench.json"), "w") as f:
            json.dump(meta, f)

    def dataset(self, wl: Workload, d: str) -> Any:
        from atdata_dagster.dataset import Dataset

        with open(os.path.join(d, "bench.json")) as f:
            meta = json.load(f)
        st = self._sample_type(wl)
        return Dataset[st](meta["urls"], metadata={"checksums": meta["checksums"], "stats": meta["stats"]})  # type: ignore[valid-type]

    def seq(self, wl: Workload, d: str) -> np.ndarray:
        ds = self.dataset(wl, d)
        out = []
        for b in ds.ordered(batch_size=BATCH):
            getattr(b, wl.field), b.key
            out.append(b.label)
        return _labels(out)

    def shuffled(self, wl: Workload, d: str, seed: int) -> np.ndarray:
        ds = self.dataset(wl, d)
        out = []
        for b in ds.shuffled(batch_size=BATCH, seed=seed):
            getattr(b, wl.field), b.key
            out.append(b.label)
        return _labels(out)

    def shuffled_buffer(self, wl: Workload, d: str, seed: int) -> np.ndarray:
        ds = self.dataset(wl, d)
        out = []
        for b in ds.shuffled(batch_size=BATCH, seed=seed, buffer_bytes=32 << 20):
            getattr(b, wl.field), b.key
            out.append(b.label)
        return _labels(out)

    def lookup(self, wl: Workload, d: str) -> Callable[[int], tuple[int, np.ndarray]]:
        ds = self.dataset(wl, d)
        field = wl.field
        if not hasattr(type(ds), "__getitem__"):
            return None  # type: ignore[return-value]

        def get(i: int) -> tuple[int, np.ndarray]:
            s = ds[i]
            return s.label, getattr(s, field)

        return get

    def loader(self, wl: Workload, d: str) -> Callable[[int], np.ndarray]:
        import torch.utils.data as tud

        ds = self.dataset(wl, d)
        if not hasattr(ds, "torch"):
            return None  # type: ignore[return-value]
        tds = ds.torch(shuffle=True, seed=SEED, batch_size=BATCH, verify=False)
        field = wl.field

        def epoch(e: int) -> np.ndarray:
            tds.set_epoch(e)
            dl = tud.DataLoader(tds, batch_size=None, num_workers=2)
            out = []
            for b in dl:
                b[field]
                out.append(b["label"].numpy())
            return _labels(out)

        return epoch

    def verify_seconds(self, wl: Workload, d: str) -> float:
        from atdata_dagster.shards.reader import verify_shards

        with open(os.path.join(d, "bench.json")) as f:
            meta = json.load(f)
        t = time.perf_counter()
        status = verify_shards(meta["urls"], meta["checksums"])
        dt = time.perf_counter() - t
        assert set(status.values()) == {"ok"}, status
        return dt


class Mosaic:
    name = "mosaic"

    def write(self, wl: Workload, d: str) -> None:
        from streaming import MDSWriter

        shape = ",".join(map(str, wl.shape))
        cols = {"key": "str", "label": "int", wl.field: f"ndarray:{wl.dtype.name}:{shape}"}
        with MDSWriter(out=os.path.join(d, "mds"), columns=cols, size_limit=1 << 26) as w:
            for k, i, a in wl.rows():
                w.write({"key": k, "label": i, wl.field: a})

    def _ds(self, d: str, **kw: Any) -> Any:
        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        return StreamingDataset(local=os.path.join(d, "mds"), batch_size=BATCH, **kw)

    def _epoch(self, wl: Workload, ds: Any) -> np.ndarray:
        import torch.utils.data as tud

        field = wl.field
        out = []
        for b in tud.DataLoader(ds, batch_size=BATCH, num_workers=0, collate_fn=_collate_np(field)):
            out.append(b["label"])
        return _labels(out)

    def seq(self, wl: Workload, d: str) -> np.ndarray:
        return self._epoch(wl, self._ds(d))

    def shuffled(self, wl: Workload, d: str, seed: int) -> np.ndarray:
        return self._epoch(wl, self._ds(d, shuffle=True, shuffle_seed=seed))

    def lookup(self, wl: Workload, d: str) -> Callable[[int], tuple[int, np.ndarray]]:
        ds = self._ds(d)
        field = wl.field

        def get(i: int) -> tuple[int, np.ndarray]:
            s = ds[i]
            return s["label"], s[field]

        return get

    def loader(self, wl: Workload, d: str) -> Callable[[int], np.ndarray]:
        import torch.utils.data as tud

        ds = self._ds(d, shuffle=True, shuffle_seed=SEED)
        field = wl.field

        def epoch(e: int) -> np.ndarray:
            ds.set_epoch(e) if hasattr(ds, "set_epoch") else None
            out = []
            for b in tud.DataLoader(ds, batch_size=BATCH, num_workers=2, collate_fn=_collate_torch(field)):
                out.append(b["label"].numpy())
            return _labels(out)

        return epoch


def _collate_np(field: str) -> Callable[[list[dict]], dict]:
    def collate(items: list[dict]) -> dict:
        return {"key": [x["key"] for x in items], "label": np.array([x["label"] for x in items]), field: np.stack([x[field] for x in items])}

    return collate


def _collate_torch(field: str) -> Callable[[list[dict]], dict]:
    import torch

    def collate(items: list[dict]) -> dict:
        return {
            "key": [x["key"] for x in items],
            "label": torch.as_tensor(np.array([x["label"] for x in items])),
            field: torch.from_numpy(np.stack([x[field] for x in items])),
        }

    return collate


class LitData:
    name = "litdata"

    def write(self, wl: Workload, d: str) -> None:
        from litdata.streaming.writer import BinaryWriter

        w = BinaryWriter(os.path.join(d, "lit"), chunk_bytes="64MB")
        for k, i, a in wl.rows():
            w[i] = {"key": k, "label": i, wl.field: a}
        w.done()
        w.merge()

    def _ds(self, d: str, **kw: Any) -> Any:
        from litdata import StreamingDataset

        return StreamingDataset(input_dir="local:" + os.path.join(d, "lit"), **kw)

    def _epoch(self, wl: Workload, ds: Any, workers: int = 0, torch_out: bool = False) -> np.ndarray:
        from litdata import StreamingDataLoader

        field = wl.field
        out = []
        collate = _collate_torch(field) if torch_out else _collate_np(field)
        for b in StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=collate):
            out.append(np.asarray(b["label"]))
        return _labels(out)

    def seq(self, wl: Workload, d: str) -> np.ndarray:
        return self._epoch(wl, self._ds(d))

    def shuffled(self, wl: Workload, d: str, seed: int) -> np.ndarray:
        return self._epoch(wl, self._ds(d, shuffle=True, seed=seed))

    def lookup(self, wl: Workload, d: str) -> Callable[[int], tuple[int, np.ndarray]]:
        ds = self._ds(d)
        field = wl.field

        def get(i: int) -> tuple[int, np.ndarray]:
            s = ds[i]
            return s["label"], s[field]

        return get

    def loader(self, wl: Workload, d: str) -> Callable[[int], np.ndarray]:
        ds = self._ds(d, shuffle=True, seed=SEED)

        def epoch(e: int) -> np.ndarray:
            ds.set_epoch(e)
            return self._epoch(wl, ds, workers=2, torch_out=True)

        return epoch


class HF:
    name = "hf"

    def _features(self, wl: Workload) -> Any:
        import datasets

        arr = (
            datasets.Array3D(shape=wl.shape, dtype=wl.dtype.name)
            if len(wl.shape) == 3
            else datasets.Sequence(datasets.Value(wl.dtype.name), length=wl.shape[0])
        )
        return datasets.Features({"key": datasets.Value("string"), "label": datasets.Value("int64"), wl.field: arr})

    def write(self, wl: Workload, d: str) -> None:
        import datasets

        field = wl.field

        def gen() -> Iterator[dict]:
            for k, i, a in wl.rows():
                yield {"key": k, "label": i, field: a}

        ds = datasets.Dataset.from_generator(gen, features=self._features(wl), cache_dir=os.path.join(d, "hf-cache"))
        ds.save_to_disk(os.path.join(d, "hf"))

    def _ds(self, d: str) -> Any:
        import datasets

        return datasets.load_from_disk(os.path.join(d, "hf"))

    def _epoch(self, wl: Workload, ds: Any) -> np.ndarray:
        field = wl.field
        out = []
        for b in ds.with_format("numpy").iter(batch_size=BATCH):
            b[field], b["key"]
            out.append(b["label"])
        return _labels(out)

    def seq(self, wl: Workload, d: str) -> np.ndarray:
        return self._epoch(wl, self._ds(d))

    def shuffled(self, wl: Workload, d: str, seed: int) -> np.ndarray:
        return self._epoch(wl, self._ds(d).shuffle(seed=seed))

    def lookup(self, wl: Workload, d: str) -> Callable[[int], tuple[int, np.ndarray]]:
        ds = self._ds(d).with_format("numpy")
        field = wl.field

        def get(i: int) -> tuple[int, np.ndarray]:
            s = ds[i]
            return int(s["label"]), s[field]

        return get

    def loader(self, wl: Workload, d: str) -> Callable[[int], np.ndarray]:
        import torch
        import torch.utils.data as tud

        ds = self._ds(d).with_format("torch")

        def epoch(e: int) -> np.ndarray:
            g = torch.Generator().manual_seed(SEED + e)
            sampler = tud.BatchSampler(tud.RandomSampler(ds, generator=g), BATCH, drop_last=False)
            out = []
            for b in tud.DataLoader(ds, sampler=sampler, batch_size=None, num_workers=2):
                out.append(b["label"].numpy())
            return _labels(out)

        return epoch


class WDS:
    name = "wds"

    def write(self, wl: Workload, d: str) -> None:
        import msgpack
        import webdataset as wds

        field = wl.field
        os.makedirs(os.path.join(d, "wds"), exist_ok=True)
        with wds.ShardWriter(os.path.join(d, "wds", "shard-%06d.tar"), maxcount=wl.maxcount, verbose=0) as w:
            for k, i, a in wl.rows():
                w.write({"__key__": k, "msgpack": msgpack.packb({"key": k, "label": i, field: a.tobytes()})})

    def _urls(self, d: str) -> list[str]:
        return sorted(os.path.join(d, "wds", n) for n in os.listdir(os.path.join(d, "wds")))

    def _pipeline(self, wl: Workload, d: str, shuffle: int, seed: int = SEED) -> Any:
        import webdataset as wds

        dt, shape, field = wl.dtype, wl.shape, wl.field

        def decode(s: dict) -> dict:
            import msgpack

            m = msgpack.unpackb(s["msgpack"])
            return {"key": m["key"], "label": m["label"], field: np.frombuffer(m[field], dt).reshape(shape)}

        p = wds.WebDataset(self._urls(d), shardshuffle=bool(shuffle) and 100, seed=seed if shuffle else None, empty_check=False)
        if shuffle:
            p = p.shuffle(shuffle, seed=seed) if "seed" in wds.WebDataset.shuffle.__code__.co_varnames else p.shuffle(shuffle)
        return p.map(decode).batched(BATCH, collation_fn=_collate_np(field))

    def seq(self, wl: Workload, d: str) -> np.ndarray:
        return _labels(b["label"] for b in self._pipeline(wl, d, 0))

    def shuffled(self, wl: Workload, d: str, seed: int) -> np.ndarray:
        return _labels(b["label"] for b in self._pipeline(wl, d, 1000, seed))

    def lookup(self, wl: Workload, d: str) -> None:
        return None

    def loader(self, wl: Workload, d: str) -> Callable[[int], np.ndarray]:
        import webdataset as wds

        def epoch(e: int) -> np.ndarray:
            p = self._pipeline(wl, d, 1000, SEED + e)
            return _labels(np.asarray(b["label"]) for b in wds.WebLoader(p, batch_size=None, num_workers=2))

        return epoch


class Lance:
    name = "lance"

    def write(self, wl: Workload, d: str) -> None:
        import lance
        import pyarrow as pa

        width = int(np.prod(wl.shape))
        value_type = pa.uint8() if wl.dtype == np.uint8 else pa.float32()

        def batches() -> Iterator[Any]:
            keys, labels, arrs = [], [], []
            for k, i, a in wl.rows():
                keys.append(k)
                labels.append(i)
                arrs.append(a)
                if len(keys) == 1024:
                    yield make(keys, labels, arrs)
                    keys, labels, arrs = [], [], []
            if keys:
                yield make(keys, labels, arrs)

        def make(keys: list, labels: list, arrs: list) -> Any:
            flat = pa.array(np.stack(arrs).reshape(-1))
            return pa.record_batch(
                [pa.array(keys), pa.array(labels, pa.int64()), pa.FixedSizeListArray.from_arrays(flat, width)],
                names=["key", "label", wl.field],
            )

        schema = pa.schema([("key", pa.string()), ("label", pa.int64()), (wl.field, pa.list_(value_type, width))])
        lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), os.path.join(d, "lance"))

    def _ds(self, d: str) -> Any:
        import lance

        return lance.dataset(os.path.join(d, "lance"))

    def seq(self, wl: Workload, d: str) -> np.ndarray:
        out = []
        shape = (-1, *wl.shape)
        for b in self._ds(d).to_batches(batch_size=BATCH):
            b.column(wl.field).values.to_numpy().reshape(shape)
            b.column("key").to_pylist()
            out.append(b.column("label").to_numpy())
        return _labels(out)

    shuffled = None  # Lance appears in the sequential reads and lookups, as in issue #17

    def lookup(self, wl: Workload, d: str) -> Callable[[int], tuple[int, np.ndarray]]:
        ds = self._ds(d)
        field, shape = wl.field, wl.shape

        def get(i: int) -> tuple[int, np.ndarray]:
            t = ds.take([i])
            return t.column("label")[0].as_py(), t.column(field).chunk(0).values.to_numpy().reshape(shape)

        return get

    loader = None


IMPLS = {c.name: c for c in (Ours, Mosaic, LitData, HF, WDS, Lance)}


# ------------------------------------------------------------------ measurements


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _exactly_once(labels: np.ndarray, n: int) -> bool:
    return len(labels) == n and bool(np.array_equal(np.sort(labels), np.arange(n)))


def _quality(labels: np.ndarray) -> tuple[float, float]:
    from atdata_dagster.shuffle import shuffle_quality

    return shuffle_quality(labels)


def _checkpoint(r: dict) -> None:
    """In a child process: print the figures so far, so a system killed later keeps them."""
    if _CHILD:
        print("RESULT " + json.dumps(r, default=str), flush=True)


_CHILD = False  # set in the child processes of measure_isolated


def measure(sys_name: str, wl: Workload, d: str, lookups: int, results: dict) -> None:
    impl = IMPLS[sys_name]()
    r = results.setdefault(wl.name, {}).setdefault(sys_name, {})
    _, dt = _timed(lambda: impl.write(wl, d))
    r["write"] = wl.n / dt
    labels, dt = _timed(lambda: impl.seq(wl, d))
    r["seq"] = wl.n / dt
    r["seq_once"] = _exactly_once(labels, wl.n)
    _checkpoint(r)
    if getattr(impl, "shuffled", None):
        labels, dt = _timed(lambda: impl.shuffled(wl, d, SEED))
        r["shuffled"] = wl.n / dt
        r["shuffled_once"] = _exactly_once(labels, wl.n)
        r["displacement"], r["adjacent"] = _quality(labels)
        _checkpoint(r)
    if sys_name == "ours":
        labels, dt = _timed(lambda: impl.shuffled_buffer(wl, d, SEED))
        r["buffered"] = wl.n / dt
        r["buffered_quality"] = _quality(labels)
        r["verify_s"] = impl.verify_seconds(wl, d)
    get = impl.lookup(wl, d) if getattr(impl, "lookup", None) else None
    if get is not None:
        idx = np.random.default_rng(7).integers(0, wl.n, lookups).tolist()
        label, arr = get(idx[0])
        assert label == idx[0] and wl.check(label, arr), (sys_name, "lookup returned the wrong sample")
        _, dt = _timed(lambda: [get(i) for i in idx])
        r["lookup"] = lookups / dt
        _checkpoint(r)
    epoch_fn = impl.loader(wl, d) if getattr(impl, "loader", None) else None
    if epoch_fn is not None:
        for e in (1, 2):
            labels, dt = _timed(lambda: epoch_fn(e))
            r[f"dl{e}"] = wl.n / dt
            r[f"dl{e}_once"] = _exactly_once(labels, wl.n)
            _checkpoint(r)


def measure_isolated(sys_name: str, wl: Workload, d: str, lookups: int, timeout: float) -> dict:
    """:func:`measure` in a fresh child process, given at most ``timeout`` seconds.

    Each system starts from a clean interpreter (no page cache warmed by, and no memory
    left over from, the system before it), and one that hangs (a stuck worker pool, say)
    is killed and reported as timed out instead of stalling the whole run.
    """
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "benchmarks.bench_training", "--child-measure", sys_name, "--child-workload", wl.name,
           "--child-dir", d, "--lookups", str(lookups)]
    if wl.n < 5000:
        cmd.append("--quick")
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=timeout)
        stdout, status = out.stdout, ({} if out.returncode == 0 else {"failed": True})
    except subprocess.TimeoutExpired as exc:
        print(f"   {wl.name}/{sys_name}: TIMED OUT after {timeout:.0f}s (killed; --system-timeout raises the limit)", flush=True)
        raw = exc.stdout or b""
        stdout, status = (raw.decode() if isinstance(raw, bytes) else raw), {"timed_out": True}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    figures = json.loads(lines[-1][len("RESULT "):]) if lines else {}
    if status.get("failed"):
        print(f"   {wl.name}/{sys_name}: child exited with an error", flush=True)
    return {**figures, **status}  # the figures measured before a kill are kept


#: What each system imports before its first timed step, so no write or read pays for imports.
WARM_IMPORTS = {
    "ours": ["atdata_dagster.dataset", "atdata_dagster.shards.writer", "atdata_dagster.loader_torch", "torch.utils.data"],
    "mosaic": ["streaming", "torch.utils.data"],
    "litdata": ["litdata", "torch.utils.data"],
    "hf": ["datasets", "torch.utils.data"],
    "wds": ["webdataset", "torch.utils.data"],
    "lance": ["lance", "pyarrow"],
}


def _child_measure(sys_name: str, wl: Workload, d: str, lookups: int) -> None:
    import importlib

    global _CHILD
    _CHILD = True

    for module in WARM_IMPORTS.get(sys_name, []):
        importlib.import_module(module)
    results: dict = {}
    try:
        measure(sys_name, wl, d, lookups, results)
    except Exception as exc:  # noqa: BLE001 - one peer failing must not lose the figures measured before it; printed
        print(f"   {wl.name}/{sys_name}: FAILED {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(results.get(wl.name, {}).get(sys_name, {}), default=str), flush=True)


def shuffle_memory(sys_name: str, wl: Workload, d: str) -> float:
    """Peak RSS of a shuffled epoch minus that of a sequential epoch (MiB), each in its own fresh process.

    Separate processes, so neither epoch reuses memory the other one left allocated (run
    in one process, the second epoch would look cheaper than it is).
    """
    peaks = []
    for mode in ("seq", "shuffled"):
        env = dict(os.environ, PYTHONPATH=ROOT)
        cmd = [sys.executable, "-m", "benchmarks.bench_training", "--child-memory", sys_name, "--child-workload", wl.name,
               "--child-dir", d, "--child-mode", mode]
        if wl.n < 5000:
            cmd.append("--quick")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if out.returncode != 0:
            print(f"   shuffle memory {sys_name} ({mode}): failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
            return float("nan")
        peaks.append(float(out.stdout.strip().splitlines()[-1]))
    return peaks[1] - peaks[0]


def _child_memory(sys_name: str, wl: Workload, d: str, mode: str) -> None:
    """Print this fresh process's peak RSS (MiB) after one epoch, sequential or shuffled."""
    impl = IMPLS[sys_name]()
    if mode == "seq":
        impl.seq(wl, d)
    else:
        impl.shuffled(wl, d, SEED)
    print(_rss_kib("VmHWM") / 1024)


# ------------------------------------------------------------------ report


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.0f}{unit}" if v >= 100 else f"{v:.2f}{unit}"
    return f"{v}{unit}"


ROWS = [
    ("write", "write, samples/s"),
    ("seq", "sequential read (batches of 256), samples/s"),
    ("shuffled", "shuffled read, samples/s"),
    ("lookup", "random access ds[i], lookups/s"),
    ("dl1", "DataLoader 2 workers, epoch 1, samples/s"),
    ("dl2", "DataLoader 2 workers, epoch 2, samples/s"),
    ("shufmem", "shuffle memory growth over a sequential epoch, MiB"),
]


def report(results: dict, systems: list[str]) -> None:
    peers = [s for s in systems if s != "ours"]
    for wname, per in results.items():
        print(f"\n### {wname}\n")
        print("| | " + " | ".join(systems) + " | ours / best peer |")
        print("|---" * (len(systems) + 2) + "|")
        for key, label in ROWS:
            vals = [per.get(s, {}).get(key) for s in systems]
            if all(v is None for v in vals):
                continue
            ours = per.get("ours", {}).get(key)
            pv = [per.get(s, {}).get(key) for s in peers if isinstance(per.get(s, {}).get(key), float)]
            pv = [v for v in pv if v == v]
            if key == "shufmem":
                best = min(pv) if pv else None
                ratio = f"{ours:.2f} MiB vs {best:.1f} MiB" if ours is not None and best is not None else "-"
            else:
                best = max(pv) if pv else None
                ratio = f"{ours / best:.2f}x" if ours and best else "-"
            print(f"| {label} | " + " | ".join(_fmt(v) for v in vals) + f" | {ratio} |")
        checks = []
        for s in systems:
            r = per.get(s, {})
            once = [r.get(k) for k in ("seq_once", "shuffled_once", "dl1_once", "dl2_once") if k in r]
            checks.append("yes" if once and all(once) else ("-" if not once else "NO"))
        print("| exactly once (every read) | " + " | ".join(checks) + " | |")
        qual = [
            f"{per[s]['displacement']:.2f} / {per[s]['adjacent']:.4f}" if "displacement" in per.get(s, {}) else "-" for s in systems
        ]
        print("| shuffle displacement / adjacent-pair rate | " + " | ".join(qual) + " | |")
        for s in systems:
            r = per.get(s, {})
            if r.get("timed_out") or r.get("failed"):
                print(f"\n{s}: {'timed out (killed after --system-timeout)' if r.get('timed_out') else 'failed'}; "
                      "the figures it did not reach are '-' above.")
        o = per.get("ours", {})
        if "buffered" in o:
            dq, aq = o["buffered_quality"]
            print(
                f"\nours, shard order + 32 MiB buffer: {o['buffered']:,.0f} samples/s, displacement {dq:.2f}, "
                f"adjacent-pair rate {aq:.4f}. Verification (SHA-256 of every shard): {o['verify_s']:.2f} s "
                f"({o['verify_s'] * o['seq'] / _N[wname]:.0%} of a sequential epoch)."
            )


_N: dict[str, int] = {}  # workload -> sample count, for the report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 embeddings and 1,000 images")
    ap.add_argument("--workloads", default="embeddings,images")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--keep", help="write the data under this directory and keep it")
    ap.add_argument("--system-timeout", type=float, default=900, help="seconds one system may take per workload (default 900)")
    ap.add_argument("--child-measure", help=argparse.SUPPRESS)
    ap.add_argument("--child-memory", help=argparse.SUPPRESS)
    ap.add_argument("--child-workload", help=argparse.SUPPRESS)
    ap.add_argument("--child-dir", help=argparse.SUPPRESS)
    ap.add_argument("--child-mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not _in_bench_venv():
        _reexec_in_venv()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _stub_torchvision()
    wls = workloads(args.quick)
    if args.child_memory:
        _child_memory(args.child_memory, wls[args.child_workload], args.child_dir, args.child_mode)
        return 0
    if args.child_measure:
        _child_measure(args.child_measure, wls[args.child_workload], args.child_dir, args.lookups)
        return 0
    systems = [s for s in args.systems.split(",") if s]
    load0 = os.getloadavg()
    print(f"bench_training: load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, {os.cpu_count()} CPUs", flush=True)
    results: dict = {}
    root = args.keep or tempfile.mkdtemp(prefix="bench-training-")
    try:
        for wname in args.workloads.split(","):
            wl = wls[wname]
            _N[wname] = wl.n
            for s in systems:
                d = os.path.join(root, wname, s)
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
                t = time.perf_counter()
                r = results.setdefault(wname, {})[s] = measure_isolated(s, wl, d, min(args.lookups, wl.n), args.system_timeout)
                if wname == "images" and getattr(IMPLS[s], "shuffled", None) and "shuffled" in r:
                    r["shufmem"] = shuffle_memory(s, wl, d)
                print(f"   {wname}/{s}: {time.perf_counter() - t:.0f}s {json.dumps(results.get(wname, {}).get(s, {}), default=str)[:400]}", flush=True)
                if not args.keep:
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()
    report(results, systems)
    print(f"\nload average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
