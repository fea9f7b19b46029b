"""IO-manager overhead benchmark: materialize through AtdataIOManager vs ``Index.write`` directly.

Run: ``python -m benchmarks.bench_dagster [--samples 40000] [--dim 256] [--reps 3]``

Each repetition is ONE Dagster run (``dg.materialize`` on an ephemeral instance, a fresh
SQLite index and data directory under a temp dir) with two assets that write the same
samples ``{key: str, label: int, embedding: float32[dim]}``:

- ``via_io_manager`` returns a generator (``dg.Output(gen())``); AtdataIOManager streams it
  with ``Index.write`` and adds everything it does on top (lineage, preview, column schema,
  metadata, data version). Timed around ``handle_output``.
- ``direct`` calls ``Index.write_samples(gen(), ...)`` in the asset body and returns ``None``.
  Timed around that call.

The two run in alternating order (a ``deps`` edge decides which goes first), so page
cache and allocator warm-up favour neither. Overhead = median over runs of
(IO-manager time / direct time) - 1, a paired ratio that cancels most of the noise of a
shared machine; the target is under 5%. The IO manager's own bookkeeping (time in
``handle_output`` outside its ``Index.write`` call) is printed too. Samples are built on the fly from one pre-generated matrix,
so generating them costs the same in both paths and is small next to writing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import numpy as np
from numpy.typing import NDArray

from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig
from atdata_dagster.samples.packable import packable

TARGET = 0.05


@packable
class Embedded:
    """One benchmark sample."""

    key: str
    label: int
    embedding: NDArray[np.float32]


def samples(matrix: np.ndarray):
    for i in range(matrix.shape[0]):
        yield Embedded(key=f"s{i:07d}", label=i % 1000, embedding=matrix[i])


class TimedIOManager(AtdataIOManager):
    """AtdataIOManager that records how long each ``handle_output`` took."""

    def handle_output(self, context, obj):
        if obj is None:
            return
        start = time.perf_counter()
        super().handle_output(context, obj)
        TIMES["io_manager"].append(time.perf_counter() - start)


TIMES: dict[str, list[float]] = {"io_manager": [], "direct": [], "run": [], "write_in_io_manager": []}


def _instrument_index_write() -> None:
    """Time the ``Index.write`` call the IO manager makes, to separate its own bookkeeping."""
    from atdata_dagster.index.index import Index

    original = Index.write

    def write(self, samples, *, name, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, samples, name=name, **kwargs)
        finally:
            if "via_io_manager" in name:
                TIMES["write_in_io_manager"].append(time.perf_counter() - start)

    Index.write = write  # type: ignore[method-assign]


def one_run(matrix: np.ndarray, root: Path, io_manager_first: bool) -> dict:
    resource = AtdataIndexResource(
        path=str(root / "index.db"), data_store=LocalDiskStoreConfig(root=str(root / "data")), atmosphere=False
    )

    @dg.asset(name="via_io_manager", deps=[] if io_manager_first else ["direct"])
    def via_io_manager():
        return dg.Output(samples(matrix))

    @dg.asset(name="direct", deps=["via_io_manager"] if io_manager_first else [])
    def direct(atdata: AtdataIndexResource):
        index = atdata.get_index()
        start = time.perf_counter()
        entry = index.write_samples(samples(matrix), name="direct_write")
        TIMES["direct"].append(time.perf_counter() - start)
        return dg.Output(None, metadata={"bytes": entry.metadata["stats"]["total_bytes"]})

    start = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
    try:
        result = dg.materialize(
            [via_io_manager, direct],
            resources={"io_manager": TimedIOManager(index=resource), "atdata": resource},
            instance=instance,
        )
    finally:
        instance.dispose()
    TIMES["run"].append(time.perf_counter() - start)
    assert result.success
    mat = next(
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey("via_io_manager")
    )
    return {"rows": mat.metadata["dagster/row_count"].value, "bytes": mat.metadata["atdata/bytes"].value}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3, help="runs per ordering (total runs = 2 x reps)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import logging

    logging.getLogger("dagster").setLevel(logging.WARNING)
    _instrument_index_write()
    matrix = np.random.default_rng(0).standard_normal((args.samples, args.dim), dtype=np.float32)
    info = {}
    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as tmp:
        one_run(matrix[:1000], Path(tmp) / "warmup", True)  # imports, schema publication paths
        for key in TIMES:
            TIMES[key].clear()
        for rep in range(args.reps):
            for first in (True, False):
                info = one_run(matrix, Path(tmp) / f"rep{rep}-{int(first)}", first)

    iom = statistics.median(TIMES["io_manager"])
    direct = statistics.median(TIMES["direct"])
    # per run, both writes saw the same machine state: the ratio is far less noisy than
    # comparing medians across runs on a shared machine
    paired = statistics.median(a / b for a, b in zip(TIMES["io_manager"], TIMES["direct"]))
    own = [h - w for h, w in zip(TIMES["io_manager"], TIMES["write_in_io_manager"])]
    own_share = statistics.median(o / d for o, d in zip(own, TIMES["direct"]))
    mb = info["bytes"] / 1e6
    print(f"bench_dagster: {info['rows']:,} samples {{key: str, label: int, embedding: float32[{args.dim}]}}, "
          f"{mb:.1f} MB per write, {len(TIMES['direct'])} runs")
    print(f"  Index.write directly      median {direct:6.3f} s  ({args.samples / direct:>9,.0f} samples/s, {mb / direct:6.1f} MB/s)"
          f"  all: {', '.join(f'{t:.3f}' for t in TIMES['direct'])}")
    print(f"  through AtdataIOManager   median {iom:6.3f} s  ({args.samples / iom:>9,.0f} samples/s, {mb / iom:6.1f} MB/s)"
          f"  all: {', '.join(f'{t:.3f}' for t in TIMES['io_manager'])}")
    print(f"  IO manager's own work outside Index.write: median {statistics.median(own) * 1000:.1f} ms per materialization")
    print(f"  whole dg.materialize run  median {statistics.median(TIMES['run']):6.3f} s (both assets, instance, resources)")
    overhead = paired - 1
    verdict = "OK" if overhead < TARGET else "OVER TARGET"
    print(f"  overhead, median of per-run ratios: {overhead * 100:+.1f}%   (medians across runs: {(iom / direct - 1) * 100:+.1f}%; "
          f"IO manager bookkeeping alone: {own_share * 100:+.2f}%)  target < {TARGET * 100:.0f}%: {verdict}")
    return 0 if overhead < TARGET else 1

if __name__ == "__main__":
    sys.exit(main())
