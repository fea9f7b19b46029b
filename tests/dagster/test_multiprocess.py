"""Several step processes write to one SQLite index at once: nothing lost, no "database is locked"."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from atdata_dagster.io_manager import dataset_name
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

from . import mp_defs

ROOT = Path(__file__).resolve().parents[2]


def test_multiprocess_runs_write_partitions_concurrently_into_one_sqlite_index(tmp_path):
    """Two partitions' runs at once, each a run worker process with a multiprocess executor.

    Six step processes (3 assets x 2 partitions) wait on a shared barrier, then stream
    into the same SQLite index file, as concurrent runs launched by ``dagster dev`` do.
    (Dagster's orchestration is not thread-safe, so each run gets its own process.)
    """
    _run_concurrent_partitions(tmp_path, ["p0", "p1"], dsn=None)


@pytest.mark.postgres
@pytest.mark.slow
def test_multiprocess_runs_of_eight_partitions_at_once_into_one_postgres_index(tmp_path, postgres_dsn):
    """Eight partition runs at once (24 step processes) into one PostgreSQL index: nothing lost."""
    _run_concurrent_partitions(tmp_path, [f"p{i}" for i in range(8)], dsn=postgres_dsn)


def _run_concurrent_partitions(tmp_path, partitions: list[str], dsn: str | None) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    writers = mp_defs.WRITERS * len(partitions)
    # the instance (and its storage) exists before the run workers start, as under dagster dev
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ATDATA_MP_INDEX": str(tmp_path / "index.db"),
            "ATDATA_MP_DATA": str(tmp_path / "data"),
            **({"ATDATA_MP_DSN": dsn} if dsn else {}),
            "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.dagster.mp_defs", pk, str(barrier), str(writers)],
                cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for pk in partitions
        ]
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"run failed:\n{out[-2000:]}\n{err[-4000:]}"
            assert "database is locked" not in err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        pids = {pid for r in reports for pid in r["pids"]}
        assert len(pids) == writers, "steps did not run in separate processes"
        assert len(os.listdir(barrier)) == writers, "the writers did not all overlap"
        mats = instance.fetch_materializations(dg.AssetKey("writer_0"), limit=20).records
        assert {r.asset_materialization.partition for r in mats} == set(partitions)

    where = {"dsn": dsn} if dsn else {"path": str(tmp_path / "index.db")}
    index = AtdataIndexResource(
        **where, data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")), atmosphere=False
    ).build_index()
    try:
        entries = index.list_entries()
        expected = {
            dataset_name(dg.AssetKey(f"writer_{i}"), pk) for i in range(mp_defs.WRITERS) for pk in partitions
        }
        assert {e.name for e in entries} == expected
        for e in entries:
            assert e.metadata["stats"]["num_samples"] == 120
            assert set(index.verify(e).values()) == {"ok"}
        assert len({e.metadata["lineage"]["run_id"] for e in entries}) == len(partitions)
    finally:
        index.close()
