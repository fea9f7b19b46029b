"""SIGKILL crash suite (issue #10): a writer killed anywhere in ``Index.write`` never corrupts the index.

A forked writer (``crash_child``) runs ``Index.write`` against the real provider
(SQLite, PostgreSQL, Redis) and the real store (local disk, or Ceph RGW over S3) and is
killed with SIGKILL at a random point. Kill points come from five methods in turn:

- ``block_mid``: the sample generator (user code) blocks at a random sample inside a
  shard and signals; the parent kills it there (a shard is half written);
- ``block_boundary``: the generator blocks at a random shard boundary (shard i is
  committed, shard i+1 not opened);
- ``hold``: a wrapper around the provider's entry commit signals and blocks, so the kill
  lands exactly between the last shard and the index commit;
- ``in_tx`` (SQLite, PostgreSQL): a SQLAlchemy ``commit`` listener blocks inside the
  entry's transaction, after its statements, just before COMMIT (Redis: ``random``);
- ``random``: a random wall-clock delay after the write starts (any phase, including
  inside the provider commit or after it).

After every kill: every entry in the index verifies (checksums) and its shard sizes
match its stats, every label resolves, and every object under a final shard name holds
exactly the content its name is derived from (no partial shard is ever visible under a
final name). The killed write's entry and its label appear together or not at all, and
never before the index-commit phase. Then the same write is re-run and must succeed
(same CID as an uninterrupted write, same samples read back), and ``gc`` with zero grace
must leave nothing but referenced shards and their sidecars: no temporary files or
objects, no orphan shards or sidecars, no unfinished multipart uploads. Half the kills
collect before the re-run, half after it (the re-run then reuses the killed write's
shards).

The random seed is fixed and printed; reproduce a failure with
``ATDATA_CRASH_SEED=<seed> .venv/bin/pytest tests/adversarial/test_crash.py -k <id>``.
``ATDATA_CRASH_KILLS`` sets the kill points per (store, provider) (default 18: 54 per store).
"""

from __future__ import annotations

import io
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from atdata_dagster.cli import main as cli_main
from atdata_dagster.gc import collect_garbage
from atdata_dagster.errors import NotFoundError
from atdata_dagster.index.index import Index
from atdata_dagster.index.providers import provider_from_url
from atdata_dagster.stores.disk import LocalDiskStore

from .crash_harness import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    BETWEEN_SHARDS,
    IN_COMMIT,
    MID_SHARD,
    DiskView,
    ForkServer,
    Listing,
    S3View,
    classify,
    describe,
    referenced_urls,
)
from .crash_samples import CrashSample, Workload, make_samples

SEED = int(os.environ.get("ATDATA_CRASH_SEED", "20261126"))
KILLS = int(os.environ.get("ATDATA_CRASH_KILLS", "18"))
METHODS = ("block_mid", "block_boundary", "hold", "in_tx", "random")
EXPECTED_PHASE = {"block_mid": MID_SHARD, "block_boundary": BETWEEN_SHARDS, "hold": BEFORE_COMMIT, "in_tx": IN_COMMIT}
MiB = 1024 * 1024
BIG_SIZE = 400 * 1024  # a 16-sample shard is one full 5 MiB part + a last one: a real multipart upload
BIG_MAXCOUNT = 16
BIG_N = 18
BIG_MULTIPART_FROM = 13  # 12 samples (4.9 MB) reach the sink: its multipart upload has been started
BIG_SETTLE = 0.1  # the blocked generator waits this long before signalling: parts upload meanwhile


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("crash") / "crash_child.log")
    try:
        yield server
    finally:
        server.close()


@dataclass
class CrashRun:
    """The state of one (store, provider) crash test."""

    label: str
    server: ForkServer
    index: Index
    view: Any  # DiskView | S3View
    job_base: dict
    gc: Callable[[], list[str]]
    rng: random.Random
    big_every: bool = False  # alternate small and multipart-sized workloads (S3)
    sql: bool = False  # SQL provider: in_tx kills inside the entry's transaction (else random)
    phases: Counter = field(default_factory=Counter)
    by_method: Counter = field(default_factory=Counter)
    leftovers: Counter = field(default_factory=Counter)
    verified: set = field(default_factory=set)
    durations: dict = field(default_factory=dict)
    log: list = field(default_factory=list)
    last_leftovers: dict = field(default_factory=dict)

    def where(self, j: int | str, extra: str = "") -> str:
        return f"[seed={SEED} {self.label} kill #{j}{' ' + extra if extra else ''}]"

    # ------------------------------------------------------------ workloads
    def workload(self, j: int, big: bool) -> Workload:
        rng = self.rng
        name = f"crash/ds{j % 3}" if isinstance(j, int) else f"crash/{j}"
        if big:
            return Workload(name=name, seed=rng.getrandbits(32), n=BIG_N, size=BIG_SIZE,
                            maxcount=BIG_MAXCOUNT, manifest=rng.random() < 0.5)
        maxcount = rng.choice([2, 3, 4, 5])
        return Workload(name=name, seed=rng.getrandbits(32), n=rng.randint(maxcount + 1, 4 * maxcount),
                        size=rng.randint(16, 4096), maxcount=maxcount, manifest=rng.random() < 0.5)

    # ------------------------------------------------------------ one writer
    def calibrate(self, big: bool) -> None:
        """Uninterrupted writes: prove the harness and time a write for ``random`` kills (the
        second one, once connections are warm)."""
        for attempt in range(2):
            work = self.workload(f"calibrate-{'big' if big else 'small'}-{attempt}", big)
            job = self.server.run({**self.job_base, "work": work.to_dict()})
            job.finish()
            assert job.status == 0 and job.cid, f"{self.where('calibrate')} uninterrupted write failed: {job.events}"
            assert classify(job.events, work.num_shards) == AFTER_COMMIT
            self.durations[big] = job.ended_at - job.started_at
            assert self.index.get_dataset(work.name).cid == job.cid
            self.audit(f"calibrate-{big}", work, job=job, phase=AFTER_COMMIT, prev_label=None)

    def wait_for_upload(self, timeout: float = 10.0) -> None:
        """Until the writer's multipart upload is visible on the server (then the kill leaves one)."""
        deadline = time.monotonic() + timeout
        while not self.view.multipart_uploads() and time.monotonic() < deadline:
            time.sleep(0.02)

    def label_cid(self, name: str) -> str | None:
        try:
            return self.index.provider.get_label(name).cid
        except NotFoundError:
            return None

    def kill_point(self, j: int) -> None:
        method = METHODS[j % len(METHODS)]
        if method == "in_tx" and not self.sql:
            method = "random"  # Redis sends MULTI..EXEC in one write: there is no "inside"
        big = self.big_every and (j // len(METHODS)) % 2 == 1
        work = self.workload(j, big)
        job_spec: dict[str, Any] = {**self.job_base, "work": work.to_dict()}
        detail = ""
        if method == "block_mid":
            lo = BIG_MULTIPART_FROM if big else 1
            k = self.rng.choice([k for k in range(1, work.n) if lo <= k % work.maxcount])
            job_spec["block_at"] = k
            job_spec["settle"] = BIG_SETTLE if big else 0.0
            detail = f"k={k}"
        elif method == "block_boundary":
            k = self.rng.choice(range(work.maxcount, work.n, work.maxcount))
            job_spec["block_at"] = k
            detail = f"k={k}"
        elif method == "hold":
            job_spec["hold"] = True
        elif method == "in_tx":
            job_spec["hold_in_tx"] = True
        else:
            delay = self.rng.uniform(0.0, 1.25 * self.durations[big])
            detail = f"delay={delay * 1000:.0f}ms"
        rerun_first = bool((j // 8 + j) % 2)  # every method, small and big, both ways round
        where = self.where(j, f"{method} {detail} {'rerun-then-gc' if rerun_first else 'gc-then-rerun'} {work}")

        prev_label = self.label_cid(work.name)
        t0 = time.monotonic()
        job = self.server.run(job_spec)
        try:
            job.wait_for("START")
            if method in ("block_mid", "block_boundary"):
                job.wait_for("BLOCK")
                if big and method == "block_mid":
                    self.wait_for_upload()
            elif method == "hold":
                job.wait_for("HOLD")
            elif method == "in_tx":
                job.wait_for("IN_TX")
            else:
                time.sleep(max(0.0, job.started_at + delay - time.monotonic()))
            job.kill()
            job.finish()
        except BaseException:
            job.abandon()  # never leave a blocked writer behind
            raise
        assert job.error is None, f"{where} the writer failed instead of being killed: {job.error}"
        phase = classify(job.events, work.num_shards)
        assert job.was_killed or phase == AFTER_COMMIT, f"{where} exit status {job.status}, events {job.events}"
        if method in EXPECTED_PHASE:
            assert phase == EXPECTED_PHASE[method], f"{where} expected {EXPECTED_PHASE[method]}, got {phase}: {job.events}"
        self.phases[phase] += 1
        self.by_method[(method, phase)] += 1
        t1 = time.monotonic()
        self.audit(j, work, job=job, phase=phase, where=where, prev_label=prev_label, rerun_first=rerun_first)
        self.log.append(f"#{j:02d} {method:<14} {phase:<14} {detail:<14} {'R' if rerun_first else 'G'} n={work.n} maxcount={work.maxcount} "
                        f"size={work.size} manifest={work.manifest} start={job.started_at - t0:.2f}s "
                        f"kill={t1 - job.started_at:.2f}s audit={time.monotonic() - t1:.2f}s left={self.last_leftovers}")

    # ------------------------------------------------------------ the checks
    def check_index(self, where: str) -> Listing:
        """Every entry verifies, its shards' sizes match its stats, every label resolves, no
        object under a final name is partial. Returns the store's listing."""
        listing = self.view.listing()
        provider = self.index.provider
        for entry in provider.iter_entries():
            stats = (entry.metadata or {}).get("stats") or {}
            for url, size in zip(entry.data_urls, stats.get("shard_bytes") or []):
                assert url in listing.finals, f"{where} entry {entry.name} {entry.cid} points at missing shard {url}"
                assert listing.finals[url] == size, (
                    f"{where} entry {entry.name}: shard {url} is {listing.finals[url]} bytes, the entry says {size}"
                )
            assert len(entry.data_urls) == stats.get("num_shards"), f"{where} entry {entry.cid} stats: {stats}"
            if entry.cid not in self.verified:
                result = self.index.verify(entry)
                assert set(result.values()) == {"ok"}, f"{where} entry {entry.name} {entry.cid} fails verify: {result}"
                for url in entry.data_urls:  # content == checksum: only the name is left to check
                    self.view.mark_complete(url, entry.checksums[url])
                self.verified.add(entry.cid)
        for url in listing.finals:  # the rest (shards of no entry) are hashed here
            self.view.assert_complete(url)
        for label in provider.iter_labels():
            provider.get_entry(label.cid)  # NotFoundError: a label points at a missing entry
        return listing

    def audit(self, j: int | str, work: Workload, *, job, phase: str, prev_label: str | None, where: str = "",
              rerun_first: bool = False) -> None:
        where = where or self.where(j)
        listing = self.check_index(where + " after the kill")
        label_after_kill = self.label_cid(work.name)
        cids_after_kill = {e.cid for e in self.index.provider.iter_entries()}
        before = describe(listing, self.view.multipart_uploads(), referenced_urls(self.index))
        for kind, items in before.items():
            if items:
                self.leftovers[(phase, kind)] += 1
        self.last_leftovers = {kind: len(items) for kind, items in before.items() if items}
        assert not before["stray_sidecars"], (
            f"{where} sidecars under a final name whose shard does not exist: {before['stray_sidecars']}"
        )

        if rerun_first:  # the re-run meets the killed write's leftovers (reuses its shards)
            entry = self.rerun(where, work)
            self.collect(where)
        else:
            self.collect(where, before)
            entry = self.rerun(where, work)
        if job.cid:
            assert entry.cid == job.cid, f"{where} the re-run's CID differs from the completed write's"
        # the killed write's entry and its label appear together, in its commit, or not at all
        committed = entry.cid in cids_after_kill
        assert label_after_kill in (prev_label, entry.cid), f"{where} label moved to {label_after_kill}"
        assert (label_after_kill == entry.cid) == committed, (
            f"{where} entry committed={committed} but the label points at {label_after_kill}: not atomic"
        )
        if phase not in (IN_COMMIT, AFTER_COMMIT):
            assert not committed, f"{where} an entry was committed before the index-commit phase"
        if phase == AFTER_COMMIT:
            assert committed, f"{where} the write completed but its entry is missing"
        if any(name == "IN_TX" for name, _ in job.events):
            assert not committed, f"{where} killed before COMMIT was sent, yet the entry is in the index"

    def collect(self, where: str, pending: dict | None = None) -> None:
        """gc with zero grace removes every leftover and nothing referenced."""
        referenced = referenced_urls(self.index)
        if pending is None:
            pending = describe(self.view.listing(), self.view.multipart_uploads(), referenced)
        deleted = set(self.gc())
        expected = set(pending["temps"]) | {u for u in pending["orphan_shards"] if u not in referenced}
        assert expected <= deleted, f"{where} gc did not report deleting {sorted(expected - deleted)}"
        assert not deleted & referenced, f"{where} gc deleted referenced shards {sorted(deleted & referenced)}"
        listing = self.view.listing()
        after = describe(listing, self.view.multipart_uploads(), referenced)
        left = {k: v for k, v in after.items() if v}
        assert not left, f"{where} gc --grace 0 left {left}"
        assert referenced <= set(listing.finals), f"{where} gc removed referenced shards: {sorted(referenced - set(listing.finals))}"

    def rerun(self, where: str, work: Workload):
        """The same write again succeeds, with the same samples read back."""
        entry = self.index.write_samples(make_samples(work.seed, work.n, work.size), name=work.name,
                                 maxcount=work.maxcount, manifest=work.manifest)
        flush = getattr(self.index.data_store, "flush", None)
        if flush is not None:  # this process's own background clean-up (S3 temp keys) is done
            flush()
        assert self.index.get_dataset(work.name).cid == entry.cid, f"{where} the label does not point at the re-run"
        stats = entry.metadata["stats"]
        assert (stats["num_samples"], stats["num_shards"]) == (work.n, work.num_shards), f"{where} {stats}"
        if work.size < MiB // 8:
            got = [(s.idx, s.payload) for s in self.index.dataset(work.name, CrashSample).ordered()]
            assert got == [(s.idx, s.payload) for s in make_samples(work.seed, work.n, work.size)], (
                f"{where} the re-run reads back other samples"
            )
        return entry

    def report(self) -> str:
        lines = [f"seed={SEED} {self.label}: phases {dict(self.phases)}",
                 f"  leftovers seen (phase, kind -> kills): {dict(self.leftovers)}",
                 f"  (method, phase) -> kills: {dict(self.by_method)}",
                 f"  write durations: { {('big' if k else 'small'): round(v, 3) for k, v in self.durations.items()} }"]
        return "\n".join(lines + ["  " + line for line in self.log])

    def final_checks(self) -> None:
        where = self.where("end")
        self.verified.clear()  # re-hash every entry once more after all the gc runs
        self.check_index(where)
        for phase in (MID_SHARD, BETWEEN_SHARDS, BEFORE_COMMIT) + ((IN_COMMIT,) if self.sql else ()):
            assert self.phases[phase] >= 3, f"{where} phase {phase} hit only {self.phases[phase]} times: {dict(self.phases)}"
        # the kills left real debris for gc to remove
        orphan_kills = sum(n for (ph, kind), n in self.leftovers.items() if kind == "orphan_shards" and ph in (BETWEEN_SHARDS, BEFORE_COMMIT))
        assert orphan_kills >= 3, f"{where} too few kills left orphan shards: {dict(self.leftovers)}"


def _run(run: CrashRun, kinds: tuple[bool, ...]) -> None:
    print(f"\ncrash suite seed={SEED} ({run.label}); reproduce with ATDATA_CRASH_SEED={SEED}")
    run.server.warm(run.job_base)
    for big in kinds:
        run.calibrate(big)
    try:
        for j in range(KILLS):
            run.kill_point(j)
        run.final_checks()
    finally:
        print(run.report())


# ---------------------------------------------------------------------- local disk
@pytest.mark.slow
def test_sigkill_anywhere_in_write_leaves_disk_store_and_index_consistent(provider_kind, provider_url, tmp_path, fork_server):
    root = tmp_path / "data"
    store = LocalDiskStore(root)
    index = Index(provider_from_url(provider_url), data_store=store, atmosphere=None)

    def gc() -> list[str]:
        out = io.StringIO()
        code = cli_main(["--index", provider_url, "--data-root", str(root), "--json", "gc", "--grace", "0"], out=out)
        assert code == 0, out.getvalue()
        return json.loads(out.getvalue())["deleted"]

    run = CrashRun(
        label=f"disk/{provider_kind}", server=fork_server, index=index, view=DiskView(store.root),
        job_base={"store": "disk", "root": str(store.root), "provider_url": provider_url}, gc=gc,
        rng=random.Random(f"{SEED}-disk-{provider_kind}"), sql=provider_kind != "redis",
    )
    try:
        _run(run, (False,))
        assert run.leftovers.get((MID_SHARD, "temps"), 0) >= 3, (
            f"{run.where('end')} no mid-shard kill left a temp file: {dict(run.leftovers)}"
        )
    finally:
        index.close()


# ---------------------------------------------------------------------- S3 (Ceph RGW)
@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_sigkill_anywhere_in_write_leaves_s3_store_and_index_consistent(provider_kind, provider_url, rgw_server, s3_bucket, fork_server):
    from atdata_dagster.stores.s3 import S3DataStore
    from tests.fixtures.s3 import boto3_client

    cfg = rgw_server.config
    store = S3DataStore(bucket=s3_bucket, part_size=5 * MiB, max_concurrency=2, **cfg)
    index = Index(provider_from_url(provider_url), data_store=store, atmosphere=None)
    run = CrashRun(
        label=f"s3/{provider_kind}", server=fork_server, index=index, view=S3View(boto3_client(cfg), s3_bucket),
        job_base={"store": "s3", "s3": {**cfg, "bucket": s3_bucket}, "provider_url": provider_url},
        gc=lambda: collect_garbage(index, grace=0), rng=random.Random(f"{SEED}-s3-{provider_kind}"), big_every=True,
        sql=provider_kind != "redis",
    )
    try:
        _run(run, (False, True))
        assert run.leftovers.get((MID_SHARD, "uploads"), 0) >= 2, (
            f"{run.where('end')} no mid-shard kill left an unfinished multipart upload: {dict(run.leftovers)}"
        )
    finally:
        index.close()
        store.close()


# ---------------------------------------------------------------------- what the suite found
def test_gc_deletes_the_manifest_sidecars_of_orphan_shards(tmp_path):
    """A writer killed after its shards (with manifests) but before the index commit leaves
    ``.manifest.json``/``.parquet`` sidecars next to its orphan shards; gc removes them with
    the shards (it used to delete the shards only, leaving the sidecars forever)."""
    from atdata_dagster.shards.writer import ShardWriter

    store = LocalDiskStore(tmp_path / "data")
    with Index(provider_from_url(f"sqlite:///{tmp_path / 'index.db'}"), data_store=store, atmosphere=None) as index:
        kept = index.write_samples(make_samples(1, 6, 100), name="crash/kept", maxcount=3, manifest=True)
        with ShardWriter(store, "crash/orphan", maxcount=3, manifest=True, sample_type=CrashSample) as writer:
            for sample in make_samples(2, 6, 100):
                writer.write_sample(sample)
            orphans = writer.close()  # what a writer killed before the index commit leaves
        sidecars = [url[:-4] + suffix for url in orphans for suffix in (".manifest.json", ".manifest.parquet")]
        kept_sidecars = [url[:-4] + ".manifest.json" for url in kept.data_urls]
        assert all(os.path.exists(p) for p in sidecars + kept_sidecars)

        deleted = collect_garbage(index, grace=0)

        assert sorted(deleted) == sorted(list(orphans) + sidecars)
        assert not any(os.path.exists(p) for p in list(orphans) + sidecars)
        assert all(os.path.exists(p) for p in kept_sidecars)
        assert set(index.verify(kept).values()) == {"ok"}


@pytest.mark.parametrize("store_kind", [
    "disk",
    pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.xdist_group("s3")]),
])
def test_manifest_sidecar_is_stored_only_after_its_shard_is_durable(store_kind, tmp_path, request, fork_server):
    """Nothing is visible under a shard's final name before the shard itself: the writer puts a
    shard's manifest sidecar only after the shard's commit has finished (COMMITTED / DURABLE).
    (The S3 writer used to store it right after start_commit(); a kill in between left a
    sidecar whose shard never appeared, which gc never removed. Fixed in 86fe0be.)"""
    url = f"sqlite:///{tmp_path / 'index.db'}"
    if store_kind == "disk":
        job = {"store": "disk", "root": str(tmp_path / "data"), "provider_url": url}
    else:
        cfg = request.getfixturevalue("rgw_server").config
        job = {"store": "s3", "s3": {**cfg, "bucket": request.getfixturevalue("s3_bucket")}, "provider_url": url}
    work = Workload(name="crash/order", seed=7, n=18, size=BIG_SIZE, maxcount=BIG_MAXCOUNT, manifest=True)
    run = fork_server.run({**job, "work": work.to_dict()})
    run.finish()
    assert run.status == 0 and run.cid, run.events
    durable: set[int] = set()
    early = []
    for name, arg in run.events:
        if name in ("COMMITTED", "DURABLE"):
            durable.add(int(arg))
        elif name == "SIDECAR":
            shard = int(arg.split()[0])
            if shard not in durable:
                early.append(arg)
    assert {int(a.split()[0]) for n, a in run.events if n == "SIDECAR"} == set(range(work.num_shards))
    assert not early, f"sidecars stored before their shard was durable: {early}; events {run.events}"
