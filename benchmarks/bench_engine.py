"""Shard engine throughput and memory, against raw webdataset in the same run.

    python -m benchmarks.bench_engine [--n 40000] [--repeat 3]

Writes and reads N samples ``{key: str, label: int, embedding: float32[256]}``:

* ours: typed ``@packable`` samples -> ``write_samples_to_store`` -> ``LocalDiskStore``;
  read back with ``Dataset[T]`` (typed samples, arrays decoded), and undecoded with
  ``Dataset.iter_raw``; plus ``local.Index.write_samples`` (schema + shards + SQLite entry).
* baseline: ``msgpack.packb`` of the same dicts (array in atdata's compact format)
  -> ``webdataset.ShardWriter``/``TarWriter``; read back with ``webdataset.WebDataset``
  + ``msgpack.unpackb`` + ``np.frombuffer``.

Both sides shard at 10,000 samples. Throughput is the best of ``--repeat`` runs.
Peak RSS is measured in a fresh subprocess per (side, size) for N and 2N
(``VmHWM``, after writing and reading everything): flat means the 2N figure is
not meaningfully above the N figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import msgpack
import numpy as np
import webdataset as wds
from numpy.typing import NDArray

from atdata_dagster.dataset import Dataset
from atdata_dagster.samples.packable import packable
from atdata_dagster.shards.writer import write_samples_to_store
from atdata_dagster.stores.disk import LocalDiskStore

DIM = 256
MAXCOUNT = 10_000
_POOL = np.random.default_rng(0).standard_normal((512, DIM)).astype(np.float32)


@packable
class Embedding:
    key: str
    label: int
    embedding: NDArray[np.float32]


def our_samples(n: int) -> Iterator[Embedding]:
    pool = _POOL
    for i in range(n):
        yield Embedding(key=f"k{i}", label=i % 10, embedding=pool[i % 512])


def _compact(arr: np.ndarray) -> bytes:
    d = arr.dtype.str.encode()
    return bytes((len(d),)) + d + bytes((arr.ndim,)) + struct.pack(f"<{arr.ndim}q", *arr.shape) + arr.tobytes()


def baseline_samples(n: int) -> Iterator[dict]:
    pool = _POOL
    for i in range(n):
        yield {"key": f"k{i}", "label": i % 10, "embedding": pool[i % 512]}


# ------------------------------------------------------------------ the four operations


def write_ours(n: int, root: str) -> list[str]:
    store = LocalDiskStore(root)
    return list(write_samples_to_store(our_samples(n), store, "bench", maxcount=MAXCOUNT))


def read_ours(urls: list[str]) -> int:
    count = 0
    for s in Dataset[Embedding](urls):
        count += 1
    assert s.embedding.shape == (DIM,)
    return count


def read_ours_raw(urls: list[str]) -> int:
    return sum(1 for _ in Dataset[Embedding](urls).iter_raw())


def write_baseline(n: int, root: str) -> list[str]:
    os.makedirs(root, exist_ok=True)
    pattern = os.path.join(root, "data-%06d.tar")
    # webdataset's ShardWriter prints a line per shard; keep the output readable.
    with open(os.devnull, "w") as devnull:
        old, sys.stdout = sys.stdout, devnull
        try:
            with wds.ShardWriter(pattern, maxcount=MAXCOUNT) as sw:
                for i, d in enumerate(baseline_samples(n)):
                    payload = msgpack.packb(
                        {"key": d["key"], "label": d["label"], "embedding": _compact(d["embedding"])}, use_bin_type=True
                    )
                    sw.write({"__key__": f"{i:010d}", "msgpack": payload})
        finally:
            sys.stdout = old
    return sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".tar"))


def read_baseline(urls: list[str]) -> int:
    count = 0
    for s in wds.WebDataset(urls, shardshuffle=False):
        d = msgpack.unpackb(s["msgpack"])
        b = d["embedding"]
        ln = b[0]
        ndim = b[ln + 1]
        shape = struct.unpack_from(f"<{ndim}q", b, ln + 2)
        d["embedding"] = np.frombuffer(b, np.dtype(b[1 : 1 + ln].decode()), offset=ln + 2 + 8 * ndim).reshape(shape)
        count += 1
    return count


def write_index(n: int, root: str) -> list[str]:
    from atdata_dagster import local

    index = local.Index(provider="sqlite", path=os.path.join(root, "index.db"),
                        data_store=LocalDiskStore(os.path.join(root, "data")), atmosphere=None)
    entry = index.write_samples(our_samples(n), name="bench/emb", maxcount=MAXCOUNT)
    return list(entry.data_urls)


# ------------------------------------------------------------------ harness


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def throughput(n: int, repeat: int, tmp: str) -> dict[str, float]:
    """Best-of-``repeat`` samples/s; the two sides alternate so machine load hits both alike."""
    ours_dir, base_dir, idx_dir = (os.path.join(tmp, x) for x in ("ours", "base", "index"))
    best: dict[str, float] = {}
    urls: list[str] = []
    burls: list[str] = []
    index_ok = True

    def note(name: str, seconds: float) -> None:
        best[name] = max(best.get(name, 0.0), n / seconds)

    for _ in range(repeat):
        for d in (ours_dir, base_dir, idx_dir):
            shutil.rmtree(d, ignore_errors=True)
        t, urls = _timed(lambda: write_ours(n, ours_dir))
        note("write_ours", t)
        t, burls = _timed(lambda: write_baseline(n, base_dir))
        note("write_base", t)
        if index_ok:
            try:
                t, _ = _timed(lambda: write_index(n, idx_dir))
                note("write_index", t)
            except Exception as exc:  # noqa: BLE001 - the Index part is optional for this benchmark; the failure is printed
                print(f"(Index.write_samples skipped: {type(exc).__name__}: {exc})")
                index_ok = False
        t, got = _timed(lambda: read_ours(urls))
        assert got == n
        note("read_ours", t)
        t, got = _timed(lambda: read_baseline(burls))
        assert got == n
        note("read_base", t)
        t, got = _timed(lambda: read_ours_raw(urls))
        assert got == n
        note("read_ours_raw", t)
    best["bytes_ours"] = sum(os.path.getsize(u) for u in urls)
    best["bytes_base"] = sum(os.path.getsize(u) for u in burls)
    return best


def child(side: str, n: int) -> None:
    """Write + read n samples in this fresh process; print peak RSS (KiB)."""
    tmp = tempfile.mkdtemp(prefix="bench-rss-")
    try:
        if side == "ours":
            urls = write_ours(n, tmp)
            assert read_ours(urls) == n
        elif side == "index":
            urls = write_index(n, tmp)
            assert read_ours(urls) == n
        else:
            urls = write_baseline(n, tmp)
            assert read_baseline(urls) == n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"maxrss_kib": _peak_rss_kib()}))


def _peak_rss_kib() -> int:
    """This process's peak RSS. ``VmHWM`` where available: Linux carries the parent's
    peak into ``ru_maxrss`` across fork+exec, which would hide the child's own figure."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss(side: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_engine", "--child", side, "--n", str(n)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["maxrss_kib"] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", choices=["ours", "base", "index"])
    ap.add_argument("--no-rss", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n)
        return
    n = args.n
    tmp = tempfile.mkdtemp(prefix="bench-engine-")
    try:
        r = throughput(n, args.repeat, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"N = {n} samples of {{key: str, label: int, embedding: float32[{DIM}]}}, shards of {MAXCOUNT}, "
          f"best of {args.repeat}")
    print(f"{'':34}{'samples/s':>12}{'vs webdataset':>15}")
    rows = [
        ("write  ours (typed -> LocalDiskStore)", r["write_ours"], r["write_base"]),
        ("write  ours via Index.write_samples", r.get("write_index"), r["write_base"]),
        ("write  webdataset TarWriter+msgpack", r["write_base"], r["write_base"]),
        ("read   ours Dataset[T] (decoded)", r["read_ours"], r["read_base"]),
        ("read   ours iter_raw (undecoded)", r["read_ours_raw"], r["read_base"]),
        ("read   webdataset+msgpack+frombuffer", r["read_base"], r["read_base"]),
    ]
    for label, v, base in rows:
        if v is None:
            continue
        print(f"{label:38}{v:>10,.0f}{v / base:>13.2f}x")
    print(f"shard bytes: ours {r['bytes_ours']:,}  webdataset {r['bytes_base']:,}")
    if not args.no_rss:
        print("peak RSS (MiB), fresh process per run, write + read:")
        for side in ("ours", "index", "base"):
            try:
                a, b = peak_rss(side, n), peak_rss(side, 2 * n)
            except subprocess.CalledProcessError as exc:
                print(f"  {side:6} failed: {exc.stderr.strip().splitlines()[-1:]}")
                continue
            print(f"  {side:6} N={n:>7,}: {a:7.1f}   2N={2 * n:>7,}: {b:7.1f}   growth {b - a:+.1f}")


if __name__ == "__main__":
    main()
