"""Many processes writing to one index at once lose nothing and fail nowhere."""

from __future__ import annotations

import multiprocessing

import pytest

from atdata_dagster.index.providers import provider_from_url

from ._workers import expected_entry, write_entries

WORKERS = 8
PER_WORKER = 50


def _context():
    """Fresh worker processes that inherit nothing from the test process.

    "forkserver" gives spawn's clean state (children fork from a server process that
    was itself started fresh and only imported the provider modules), without paying a
    full interpreter start and package import per child: on the 2-core CI machine,
    8 spawned children importing the package cost ~10 s per test. Falls back to
    "spawn" where there is no forkserver.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tests.index.providers._workers"])
        return ctx
    return multiprocessing.get_context("spawn")


@pytest.mark.slow
def test_eight_processes_writing_fifty_entries_each_store_all_four_hundred_intact(provider_url):
    ctx = _context()
    barrier = ctx.Barrier(WORKERS)
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=write_entries, args=(provider_url, w, PER_WORKER, barrier, errors))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, "\n".join(problems)  # e.g. no "database is locked", no DDL race
    assert [p.exitcode for p in procs] == [0] * WORKERS

    expected = {e.cid: e for e in (expected_entry(w, i) for w in range(WORKERS) for i in range(PER_WORKER))}
    with provider_from_url(provider_url) as provider:
        stored = list(provider.iter_entries(batch_size=64))
        assert len(stored) == WORKERS * PER_WORKER == len(expected)
        assert len({e.cid for e in stored}) == len(stored)  # no duplicates
        for e in stored:  # no corruption: every field as written
            want = expected[e.cid]
            assert (e.name, e.schema_ref, e.data_urls, e.metadata) == (
                want.name, want.schema_ref, want.data_urls, want.metadata)
        labels = {(lab.name, lab.version): lab.cid for lab in provider.iter_labels()}
        assert len(labels) == WORKERS * PER_WORKER + 1
        assert all(labels[(e.name, "")] == cid for cid, e in expected.items())
        assert labels[("shared", "")] in expected
