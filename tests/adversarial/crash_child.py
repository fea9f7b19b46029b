"""The writer that the crash suite kills: a fork server, run as ``python -m tests.adversarial.crash_child``.

The server imports the engine once (no threads, no connections), prints ``READY`` and
then reads one JSON job per line on stdin. For each job it forks a writer that opens the
index and the store named in the job and runs ``Index.write`` over
:func:`crash_samples.make_samples`, and, once that writer is dead (killed or not),
prints ``EXIT <pid> <wait status>``. Forking keeps a kill point at a few milliseconds
instead of a second of interpreter start-up.

The writer reports where it is on stdout, one line per event, written with one
``os.write`` each (atomic on a pipe), so the last line the parent reads before the
kill is the last thing the writer did::

    EV <pid> PID                 forked
    EV <pid> START               index and store open; Index.write is called
    EV <pid> OPEN <i>            a sink for shard i was opened (bytes go to a temp object)
    EV <pid> COMMIT_BEGIN <i>    sink.commit / start_commit of shard i called
    EV <pid> COMMITTED <i>       shard i is under its final name (commit returned)
    EV <pid> COMMIT_STARTED <i>  shard i is completing in the background (start_commit returned)
    EV <pid> DURABLE <i>         a background commit finished (wait() returned)
    EV <pid> SIDECAR <i> <sfx>   a manifest sidecar of shard i is being stored
    EV <pid> BLOCK <k>           the sample generator (user code) blocks before sample k
    EV <pid> HOLD                the provider commit of the entry is about to run; it blocks
    EV <pid> PUT_BEGIN / PUT_DONE   the provider commit of the entry runs / returned
    EV <pid> IN_TX               SQL: the entry's statements ran, COMMIT is about to be sent; it blocks
    EV <pid> DONE <cid>          Index.write returned
    EV <pid> ERROR <repr>        Index.write raised

The hooks are instrumentation around the real objects (the real store, sinks and
provider do all the work); ``BLOCK``, ``HOLD`` and ``IN_TX`` let the parent kill at an
exact point.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from atdata_dagster.index.index import Index
from atdata_dagster.index.providers import provider_from_url
from atdata_dagster.stores.disk import LocalDiskStore
from atdata_dagster.stores.s3 import S3DataStore

from .crash_samples import Workload, make_samples

MiB = 1024 * 1024
FOREVER = 3600.0


def _emit(*words: object) -> None:
    line = " ".join(["EV", str(os.getpid()), *(str(w) for w in words)]) + "\n"
    os.write(1, line.encode("utf-8", "replace"))


_SHARD_INDEX: dict[str, int] = {}  # shard URL -> shard number, for SIDECAR events


class _SinkProbe:
    """Forwards everything to the real sink and reports commits."""

    def __init__(self, sink, index: int):
        self._sink = sink
        self._index = index

    def write(self, data):
        return self._sink.write(data)

    def commit(self, index, sha256):
        _emit("COMMIT_BEGIN", self._index)
        url = self._sink.commit(index, sha256)
        _SHARD_INDEX[url] = self._index
        _emit("COMMITTED", self._index)
        return url

    def abort(self):
        return self._sink.abort()

    def __getattr__(self, name):
        attr = getattr(self._sink, name)  # AttributeError if the real sink lacks it
        if name == "start_commit":
            def start_commit(index, sha256):
                _emit("COMMIT_BEGIN", self._index)
                url = attr(index, sha256)
                _SHARD_INDEX[url] = self._index
                _emit("COMMIT_STARTED", self._index)
                return url
            return start_commit
        if name == "wait":
            def wait():
                out = attr()
                _emit("DURABLE", self._index)
                return out
            return wait
        return attr


_WARM_STORES: dict[str, S3DataStore] = {}


def _open_store(job: dict):
    if job["store"] == "disk":
        return LocalDiskStore(job["root"])
    s3 = job["s3"]
    warm = _WARM_STORES.get(json.dumps(s3, sort_keys=True))
    if warm is not None:  # made by warm(): a client, but no connection or thread yet
        return warm
    return S3DataStore(
        bucket=s3["bucket"], endpoint_url=s3["endpoint_url"], region_name=s3["region_name"],
        aws_access_key_id=s3["aws_access_key_id"], aws_secret_access_key=s3["aws_secret_access_key"],
        part_size=5 * MiB, max_concurrency=2,
    )


def run_job(job: dict) -> int:
    """One writer: returns the exit code (0 written, 1 raised)."""
    _emit("PID")
    work = Workload(**job["work"])
    store = _open_store(job)
    provider = provider_from_url(job["provider_url"])
    index = Index(provider, data_store=store, atmosphere=None)

    opened = [0]
    real_open = store.open_sink

    def open_sink(prefix):
        sink = real_open(prefix)
        i, opened[0] = opened[0], opened[0] + 1
        _emit("OPEN", i)
        return _SinkProbe(sink, i)

    store.open_sink = open_sink

    real_sidecar = store.put_sidecar

    def put_sidecar(shard_url, suffix, data):
        _emit("SIDECAR", _SHARD_INDEX.get(shard_url, -1), suffix)
        return real_sidecar(shard_url, suffix, data)

    store.put_sidecar = put_sidecar

    real_put = provider.put_entry
    hold = job.get("hold", False)
    in_put = [False]
    if job.get("hold_in_tx"):
        # SQL providers: block inside the entry's transaction, its statements run, just
        # before COMMIT is sent (SQLAlchemy's "commit" event, or SQLite's literal COMMIT).
        from sqlalchemy import event

        def before_commit(*_args):
            if in_put[0]:
                _emit("IN_TX")
                time.sleep(FOREVER)

        def before_statement(_conn, _cursor, statement, *_args):
            if statement.strip().upper() == "COMMIT":  # SQLite's explicit BEGIN IMMEDIATE .. COMMIT
                before_commit()

        event.listen(provider._engine, "commit", before_commit)
        event.listen(provider._engine, "before_cursor_execute", before_statement)

    def put_entry(entry, *, label=None):
        if hold:
            _emit("HOLD")
            time.sleep(FOREVER)
        _emit("PUT_BEGIN")
        in_put[0] = True
        real_put(entry, label=label)
        _emit("PUT_DONE")

    provider.put_entry = put_entry

    block_at = job.get("block_at")
    settle = job.get("settle", 0.0)

    def samples():
        for i, sample in enumerate(make_samples(work.seed, work.n, work.size)):
            if i == block_at:
                time.sleep(settle)  # a slow source: background uploads go on meanwhile
                _emit("BLOCK", i)
                time.sleep(FOREVER)
            yield sample

    _emit("START")
    try:
        entry = index.write_samples(samples(), name=work.name, maxcount=work.maxcount, manifest=work.manifest)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
        _emit("ERROR", repr(exc).replace("\n", " ")[:2000])
        traceback.print_exc(file=sys.stderr)
        return 1
    _emit("DONE", entry.cid)
    return 0


def warm(job: dict) -> None:
    """Open and close the job's provider once in the server (no fork), and make its S3
    store's client: that set-up is then inherited by every writer instead of paid by each."""
    provider = provider_from_url(job["provider_url"])
    try:
        list(provider.iter_entries())
    finally:
        provider.close()
    if job["store"] == "s3":
        # The boto3 client is made here, once (~0.2 s), but sends no request from this
        # process: every writer inherits it with an empty connection pool.
        store = _open_store(job)
        store.client
        _WARM_STORES[json.dumps(job["s3"], sort_keys=True)] = store


def serve() -> None:
    """The fork server loop (see the module docstring)."""
    os.write(1, b"READY\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        if job.get("warm"):
            warm(job)
            os.write(1, b"WARMED\n")
            continue
        pid = os.fork()
        if pid == 0:  # the writer
            code = 1
            try:
                code = run_job(job)
            except BaseException:  # noqa: BLE001 - printed for the parent; the worker goes on with the next job
                traceback.print_exc(file=sys.stderr)
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.write(1, f"EXIT {pid} {status}\n".encode())


if __name__ == "__main__":
    serve()
