"""Many writers, one index: plain processes and concurrent Dagster runs writing the same names.

Specification: with six or more processes writing the same dataset names at the same
moment into one index (SQLite, PostgreSQL, Redis),

- no entry is lost or torn: every CID a writer got back is retrievable, its shards
  verify, and it reads back exactly the samples that writer wrote; the index holds
  exactly the distinct CIDs written;
- labels stay consistent: each name's unversioned label points at one of that name's
  entries and agrees with the newest entry by name; each writer's versioned label
  ``w<i>`` points at what writer i wrote last; the name resolves to its latest label;
- the name's "latest" label ends at the entry committed last. "Committed last" is
  observed, not assumed: each writer times its provider commit (see ``writers_worker``),
  and the label's entry must not be one whose commit returned before another write's
  commit started.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time

import pytest

from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry
from atdata_dagster.index.index import Index
from atdata_dagster.index.providers import provider_from_url
from atdata_dagster.stores.disk import LocalDiskStore

from .writers_worker import Item, items_for, run_writer

WRITERS = 6
ROUNDS = 2
NAMES = ["shared/alpha", "shared/beta"]


def _run_writers(url: str, data: str, *, writers: int = WRITERS, rounds: int = ROUNDS, names=NAMES, shared_round=0) -> list[dict]:
    ctx = mp.get_context("spawn")  # the pytest process may hold threads: no fork
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=run_writer,
            args=({"writer": w, "url": url, "data": data, "rounds": rounds, "names": names, "shared_round": shared_round}, barrier, results),
        )
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    reports = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=240))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {writers} writers reported within 240 s")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [r["error"] for r in reports if "error" in r]
    assert not errors, "a writer failed:\n" + "\n".join(errors)
    return [rec for r in reports for rec in r["records"]], [lab for r in reports for lab in r["labels"]]


def _last_committed_candidates(records: list[dict]) -> set[str]:
    """CIDs that may legitimately be the last committed: no other commit started after theirs returned."""
    latest_start = max(r["t0"] for r in records)
    return {r["cid"] for r in records if r["t1"] >= latest_start}


def _check_index(index: Index, records: list[dict], labels: list[dict], names: list[str]) -> None:
    provider = index.provider
    written = {r["cid"] for r in records}
    assert all(r["returned_cid"] == r["cid"] for r in records), "Index.write returned another entry than it committed"

    # no lost or torn entries
    stored = {e.cid for e in index.list_entries()}
    assert stored == written, f"index holds {len(stored)} entries, writers committed {len(written)} distinct CIDs"
    by_cid = {r["cid"]: r for r in records}
    for cid, rec in by_cid.items():
        entry = provider.get_entry(cid)
        assert entry.name == rec["name"]
        assert set(index.verify(entry).values()) == {"ok"}, f"entry {cid} does not verify"
        got = [(s.key, s.writer, s.round, s.payload) for s in index.dataset_for_entry(entry, Item).ordered()]
        want = [(s.key, s.writer, s.round, s.payload) for s in items_for(rec["content"], rec["round"])]
        assert got == want, f"entry {cid} reads back other samples than were written"

    for name in names:
        mine = [r for r in records if r["name"] == name]
        label = index.get_label(name, "")
        assert label.cid in {r["cid"] for r in mine}, f"label {name!r} points at an entry of another name"
        assert provider.get_entry_by_name(name).cid == label.cid, (
            f"{name!r}: the newest entry by name and the unversioned label disagree"
        )
        assert label.cid in _last_committed_candidates(mine), (
            f"{name!r}: the label points at {label.cid}, whose commit returned before another writer's commit started"
        )
        # every writer's versioned label points at what that writer wrote last under the name
        my_labels = [lab for lab in labels if lab["name"] == name]
        for w in {lab["writer"] for lab in my_labels}:
            last = max((lab for lab in my_labels if lab["writer"] == w), key=lambda lab: lab["round"])
            assert index.get_label(name, f"w{w}").cid == last["cid"], f"{name!r}: label w{w} is torn or stale"
        # "latest" (any version) is the label write committed last, and the name resolves to it
        latest = index.get_label(name)
        all_writes = [{**r, "version": ""} for r in mine] + my_labels
        last_writes = {(w["version"], w["cid"]) for w in all_writes if w["t1"] >= max(x["t0"] for x in all_writes)}
        assert (latest.version, latest.cid) in last_writes, (
            f"{name!r}: the latest label is {latest.version!r} -> {latest.cid}, which was not among the last writes"
        )
        assert index.get_dataset(name).cid == latest.cid


@pytest.mark.slow
@pytest.mark.parametrize(
    "provider_kind",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("redis", marks=pytest.mark.redis)],
)
def test_six_writer_processes_on_the_same_names_lose_nothing_and_label_the_last_commit(provider_url, tmp_path):
    records, labels = _run_writers(provider_url, str(tmp_path / "data"))
    assert len(records) == len(labels) == WRITERS * ROUNDS * len(NAMES)
    index = Index(provider_from_url(provider_url), data_store=LocalDiskStore(str(tmp_path / "data")), atmosphere=None)
    try:
        _check_index(index, records, labels, NAMES)
        # writers 0 and 1 wrote identical samples in round 0: one entry, one set of shards
        same = {r["cid"] for r in records if r["round"] == 0 and r["writer"] in (0, 1)}
        assert len(same) == len(NAMES)
        # every writer published the same schema: exactly one version of it
        assert index.provider.schema_versions("Item") == ["1.0.0"]
    finally:
        index.close()


# -- a writer that stalls inside its transaction (SQLite, PostgreSQL) ----------------------
def _entry(name: str, tag: int) -> LocalDatasetEntry:
    return LocalDatasetEntry(name=name, schema_ref="atdata://local/schema/Item@1.0.0", data_urls=[f"/nowhere/{tag}.tar"])


def _hook_after_statement(provider, table: str, pause) -> None:
    """Call ``pause()`` once, right after this provider's first write into ``table``."""
    from sqlalchemy import event

    fired = []

    def after(conn, cursor, statement, parameters, context, executemany):
        if not fired and statement.lstrip().upper().startswith("INSERT") and f"INTO {table}" in statement:
            fired.append(True)
            pause()

    event.listen(provider.engine, "after_cursor_execute", after)


def _hook_before_commit(provider, pause) -> None:
    """Call ``pause()`` once, just before this provider sends its first COMMIT."""
    from sqlalchemy import event

    fired = []

    def once():
        if not fired:
            fired.append(True)
            pause()

    def before(conn, cursor, statement, parameters, context, executemany):  # SQLite: explicit COMMIT
        if statement.strip().upper() == "COMMIT":
            once()

    event.listen(provider.engine, "before_cursor_execute", before)
    event.listen(provider.engine, "commit", lambda conn: once())  # PostgreSQL: engine.begin()


def _timed(records: list, tag: str, fn, resumed: dict | None = None) -> None:
    """Run one write; its commit starts after ``t0`` (the call, or the end of a stall) and ends before ``t1``."""
    t0 = time.monotonic_ns()
    fn()
    t1 = time.monotonic_ns()
    records.append({"tag": tag, "t0": max(t0, (resumed or {}).get(tag, 0)), "t1": t1})


def _last(records: list) -> set[str]:
    latest_start = max(r["t0"] for r in records)
    return {r["tag"] for r in records if r["t1"] >= latest_start}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_writer_stalled_between_its_entry_and_label_still_leaves_label_and_newest_entry_agreeing(kind, tmp_path, request):
    """B writes its entry row, stalls; A writes and commits a whole entry+label; B goes on.

    Whatever order the provider lets them commit in, the name's label, its resolution
    and the newest entry of that name must all be the entry committed last.
    """
    url = f"sqlite:///{tmp_path / 'i.db'}" if kind == "sqlite" else request.getfixturevalue("postgres_dsn")
    pa, pb = provider_from_url(url), provider_from_url(url)
    a, b = _entry("race/x", 1), _entry("race/x", 2)
    b_in_tx, a_done = threading.Event(), threading.Event()

    resumed: dict = {}

    def b_pause():
        b_in_tx.set()
        a_done.wait(1.5)  # A either finishes meanwhile, or is (correctly) held back until B commits
        resumed[b.cid] = time.monotonic_ns()

    _hook_after_statement(pb, "dataset_entries", b_pause)
    records: list = []
    tb = threading.Thread(target=_timed, args=(records, b.cid, lambda: pb.put_entry(b, label=LabelRecord(name=b.name, cid=b.cid)), resumed))
    tb.start()
    assert b_in_tx.wait(10)

    def run_a():
        _timed(records, a.cid, lambda: pa.put_entry(a, label=LabelRecord(name=a.name, cid=a.cid)))
        a_done.set()

    ta = threading.Thread(target=run_a)
    ta.start()
    ta.join(30)
    tb.join(30)
    try:
        assert len(records) == 2
        label = pa.get_label("race/x")
        assert label.cid in _last(records), "the label does not point at the entry committed last"
        assert pa.resolve_name("race/x").cid == label.cid
        assert pa.get_entry_by_name("race/x").cid == label.cid, "the newest entry by name is not the labelled one"
    finally:
        pa.close()
        pb.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_version_label_stalled_in_commit_is_not_shadowed_by_an_earlier_commit(kind, tmp_path, request):
    """Two versioned labels of one name; A stalls just before COMMIT while B labels.

    The unversioned lookup (``get_label(name)``) means "the label written last": it must
    be the one committed last, not the one whose statement ran last.
    """
    url = f"sqlite:///{tmp_path / 'i.db'}" if kind == "sqlite" else request.getfixturevalue("postgres_dsn")
    pa, pb = provider_from_url(url), provider_from_url(url)
    ea, eb = _entry("race/v", 1), _entry("race/v", 2)
    pa.put_entry(ea)
    pa.put_entry(eb)
    a_in_commit, b_done = threading.Event(), threading.Event()

    resumed: dict = {}

    def a_pause():
        a_in_commit.set()
        b_done.wait(1.5)
        resumed["a"] = time.monotonic_ns()

    _hook_before_commit(pa, a_pause)
    records: list = []
    ta = threading.Thread(target=_timed, args=(records, "a", lambda: pa.put_label(LabelRecord(name="race/v", cid=ea.cid, version="a")), resumed))
    ta.start()
    assert a_in_commit.wait(10)

    def run_b():
        _timed(records, "b", lambda: pb.put_label(LabelRecord(name="race/v", cid=eb.cid, version="b")))
        b_done.set()

    tb = threading.Thread(target=run_b)
    tb.start()
    tb.join(30)
    ta.join(30)
    try:
        assert len(records) == 2
        latest = pb.get_label("race/v")
        assert latest.version in _last(records), f"latest label is {latest.version!r}, but it was not committed last"
        assert pb.resolve_name("race/v").cid == latest.cid
        assert pa.get_label("race/v", "a").cid == ea.cid and pa.get_label("race/v", "b").cid == eb.cid
    finally:
        pa.close()
        pb.close()


# -- concurrent Dagster runs of the same asset keys ---------------------------------------
DAGSTER_RUNS = 3


def _dagster_step_times(instance, run_id: str) -> dict[str, dict[str, float]]:
    """Per step key: when its output was yielded (commit not begun) and materialized (commit done)."""
    out: dict[str, dict[str, float]] = {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        if ev is None or not rec.step_key:
            continue
        if ev.event_type_value == "STEP_OUTPUT":
            out.setdefault(rec.step_key, {})["output"] = rec.timestamp
        elif ev.event_type_value == "ASSET_MATERIALIZATION":
            out.setdefault(rec.step_key, {})["materialized"] = rec.timestamp
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    # Redis orders writes by its own atomic sequence (covered by the process test above);
    # each Dagster variant costs ~40-60 s of run-worker start-up on 2 cores.
    "provider_kind",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def test_concurrent_dagster_runs_materializing_the_same_assets_label_the_last_commit(provider_kind, provider_url, tmp_path):
    """Three runs at once (six step processes) materialize the same two asset keys into one index."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import dagster as dg

    from .writers_dagster_defs import ASSETS

    root = Path(__file__).resolve().parents[2]
    home, barrier, data = tmp_path / "dagster_home", tmp_path / "barrier", tmp_path / "data"
    home.mkdir()
    barrier.mkdir()
    target = provider_url.removeprefix("sqlite:///") if provider_kind == "sqlite" else provider_url
    steps = DAGSTER_RUNS * len(ASSETS)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        env = {
            **os.environ, "DAGSTER_HOME": str(home), "ATDATA_MW_KIND": provider_kind, "ATDATA_MW_TARGET": target,
            "ATDATA_MW_DATA": str(data),
            "PYTHONPATH": os.pathsep.join(p for p in [str(root), os.environ.get("PYTHONPATH", "")] if p),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.adversarial.writers_dagster_defs", str(seed), str(barrier), str(steps)],
                cwd=str(root), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for seed in range(DAGSTER_RUNS)
        ]
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"run failed:\n{out[-2000:]}\n{err[-4000:]}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        assert len(os.listdir(barrier)) == steps, "the steps did not all overlap"
        runs = {r["run_id"]: _dagster_step_times(instance, r["run_id"]) for r in reports}
        mats = {
            asset: [r.asset_materialization for r in instance.fetch_materializations(dg.AssetKey(asset), limit=50).records]
            for asset in ASSETS
        }

    index = Index(provider_from_url(provider_url), data_store=LocalDiskStore(str(data)), atmosphere=None)
    try:
        for i, asset in enumerate(ASSETS):
            assert len(mats[asset]) == DAGSTER_RUNS
            cid_of_run = {}
            for mat in mats[asset]:
                cid = mat.metadata["atdata/cid"].value
                entry = index.provider.get_entry(cid)
                assert set(index.verify(entry).values()) == {"ok"}
                seed = next(s.round for s in index.dataset_for_entry(entry, Item).ordered())
                got = [(s.key, s.writer, s.payload) for s in index.dataset_for_entry(entry, Item).ordered()]
                assert got == [(s.key, s.writer, s.payload) for s in items_for(2000 + 10 * seed + i, seed)]
                cid_of_run[entry.metadata["lineage"]["run_id"]] = cid
            assert set(cid_of_run) == set(runs), "a run's entry is missing or carries another run's lineage"
            assert {e.cid for e in index.list_entries() if e.name == asset} == set(cid_of_run.values())

            label = index.get_label(asset)
            assert index.get_dataset(asset).cid == label.cid == index.provider.get_entry_by_name(asset).cid
            winner = next(run for run, cid in cid_of_run.items() if cid == label.cid)
            done = runs[winner][asset]["materialized"]
            later = [run for run, t in runs.items() if run != winner and t[asset]["output"] > done]
            assert not later, f"{asset}: the label is run {winner}'s entry, but runs {later} committed after it"
    finally:
        index.close()
