"""The training loader's own costs: verification, projection, workers (needs the ``[torch]`` extra).

    python -m benchmarks.bench_loader [--n 40000] [--repeat 3]

Writes N samples ``{idx: int, x: float32[1024]}`` (4 KiB each) through ``local.Index``
in shards of 2,000, then times one epoch of ``Dataset.torch()`` (best of ``--repeat``,
page cache warm; every run builds a new loader, so every shard is hashed again):

* ``verify=False`` vs ``verify=True`` (SHA-256 of every shard before its samples): the
  cost of never yielding a corrupt sample;
* ``fields=["idx"]``: decoding one field and skipping the array;
* a ``DataLoader`` with 2 workers and ``batch_size=256`` (collated tensors).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np
from numpy.typing import NDArray

from atdata_dagster import local, packable


@packable
class Vec:
    idx: int
    x: NDArray[np.float32]


def _epoch(make, consume) -> float:
    t = time.perf_counter()
    consume(make())
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from torch.utils.data import DataLoader  # the [torch] extra

    root = tempfile.mkdtemp(prefix="bench-loader-")
    try:
        index = local.Index(path=f"{root}/i.db", data_store=local.LocalDiskStore(f"{root}/data"), atmosphere=None)
        x = np.random.default_rng(0).standard_normal(1024).astype(np.float32)
        index.write_samples((Vec(idx=i, x=x) for i in range(args.n)), name="bench", maxcount=2000)
        ds = index.dataset("bench", Vec)
        mib = sum(s.nbytes for s in ds.shard_specs()) / 2**20
        drain = lambda it: sum(1 for _ in it)  # noqa: E731
        cases = {
            "verify=False": lambda: ds.torch(verify=False),
            "verify=True": lambda: ds.torch(),
            "verify=True fields=['idx']": lambda: ds.torch(fields=["idx"]),
        }
        drain(ds.torch(verify=False))  # warm the page cache
        print(f"{args.n} samples, {mib:.0f} MiB in {len(ds.list_shards())} shards; best of {args.repeat}")
        best = {}
        for name, make in cases.items():
            best[name] = min(_epoch(make, drain) for _ in range(args.repeat))
            print(f"  {name:<28} {args.n / best[name]:>10,.0f} samples/s")
        overhead = best["verify=True"] / best["verify=False"] - 1
        print(f"  verification costs {overhead:+.0%} of an epoch ({mib / (best['verify=True'] - best['verify=False']):,.0f} MiB/s of SHA-256)"
              if best["verify=True"] > best["verify=False"] else "  verification cost is within noise")
        loader = lambda: DataLoader(ds.torch(batch_size=256), batch_size=None, num_workers=2)  # noqa: E731
        t = min(_epoch(loader, lambda dl: sum(len(b["idx"]) for b in dl)) for _ in range(args.repeat))
        print(f"  {'DataLoader(2 workers, 256)':<28} {args.n / t:>10,.0f} samples/s (verified, collated tensors)")
        index.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
