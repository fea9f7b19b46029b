"""Resources that fail mid-write: a typed error, nothing half-committed, recovery afterwards.

Each fault below hits a real resource (a file-size limit, a full tmpfs, a PostgreSQL
backend terminated in its commit, a Redis connection killed as the write script goes
out, a SQLite lock held past the busy timeout, an S3 gateway killed mid-read / mid-copy,
a PDS stopped mid-promotion). For every one the specification is the same:

- the caller gets a typed error from ``atdata_dagster.errors`` whose message says what
  failed and what to do;
- nothing is half-committed: no entry and no label for the failed write, and every
  entry that existed before still verifies;
- once the resource is back, the same write succeeds (and verifies).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atdata_dagster.errors import AtdataError, NotFoundError, ProviderError, StoreError
from atdata_dagster.index.index import Index
from atdata_dagster.index.providers import provider_from_url
from atdata_dagster.index.providers.sql import SqliteProvider
from atdata_dagster.stores.disk import LocalDiskStore

from .faults_child import Blob, blobs

ROOT = Path(__file__).resolve().parents[2]
KiB = 1024
MiB = 1024 * KiB


# -- helpers ----------------------------------------------------------------------------
def _child_write(spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.adversarial.faults_child", json.dumps(spec)],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"child crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_nothing_committed(index: Index, name: str, before: dict[str, str]) -> None:
    """No entry or label for ``name``; the entries that existed (CID -> name) are all still there and verify."""
    entries = index.list_entries()
    assert {e.cid: e.name for e in entries} == before, "the failed write left or removed an entry"
    with pytest.raises(NotFoundError):
        index.get_label(name)
    with pytest.raises(NotFoundError):
        index.get_dataset(name)
    for e in entries:
        assert set(index.verify(e).values()) == {"ok"}, f"pre-existing entry {e.name} no longer verifies"
    for label in index.list_labels():
        index.provider.get_entry(label.cid)  # no label points at nothing


def _assert_written(index: Index, name: str, cid: str, sizes: list[int], seed: int = 0) -> None:
    entry = index.get_dataset(name)
    assert entry.cid == cid
    assert set(index.verify(entry).values()) == {"ok"}
    got = [(b.key, b.data) for b in index.dataset_for_entry(entry, Blob).ordered()]
    assert got == [(b.key, b.data) for b in blobs(sizes, seed)]


def _no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".tmp-*")]


def _seed_index(index: Index) -> dict[str, str]:
    """One entry that exists before the fault; returns CID -> name of all entries."""
    index.write_samples(blobs([100, 200, 300]), name="existing/keep", maxcount=2)
    return {e.cid: e.name for e in index.list_entries()}


# -- a full disk: file-size limit (EFBIG) ------------------------------------------------------
def test_shard_store_hitting_the_file_size_limit_fails_typed_and_the_same_write_succeeds_after(tmp_path):
    """RLIMIT_FSIZE below the third shard's size: StoreError naming the shard, no entry; then it succeeds."""
    db, data = tmp_path / "index.db", tmp_path / "data"
    index = Index(SqliteProvider(db), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(index)
    # two small shards get durable, the third (4 x 96 KiB) passes the 256 KiB limit
    sizes = [1000] * 8 + [96 * KiB] * 4
    spec = {"index": str(db), "data": str(data), "name": "faults/efbig", "sizes": sizes, "fsize": 256 * KiB}
    out = _child_write(spec)
    assert out.get("type") == "StoreError", out
    assert "AtdataError" in out["bases"]
    assert "File too large" in out["message"] and "free disk space" in out["message"]
    assert str(data) in out["message"], "the error does not say which store failed"
    _assert_nothing_committed(index, "faults/efbig", before)
    assert _no_temp_files(data) == []

    out = _child_write({**spec, "fsize": None})  # the limit is gone
    assert "cid" in out, out
    _assert_written(index, "faults/efbig", out["cid"], sizes)
    index.close()


def test_sqlite_index_hitting_the_file_size_limit_fails_typed_and_the_same_write_succeeds_after(tmp_path):
    """The shards fit, the commit does not (the WAL would pass the limit): ProviderError, no entry."""
    db, data = tmp_path / "index.db", tmp_path / "data"
    index = Index(SqliteProvider(db), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(index)
    sizes = [500] * 6
    spec = {"index": str(db), "data": str(data), "name": "faults/efbig-index", "sizes": sizes,
            "fsize": 512 * KiB, "pad": 1 * MiB, "retries": 1}
    out = _child_write(spec)
    assert out.get("type") == "ProviderError", out
    assert str(db) in out["message"]
    assert "full" in out["message"] or "size limit" in out["message"], out["message"]
    _assert_nothing_committed(index, "faults/efbig-index", before)

    out = _child_write({**spec, "fsize": None})
    assert "cid" in out, out
    _assert_written(index, "faults/efbig-index", out["cid"], sizes)
    assert index.get_dataset("faults/efbig-index").metadata["padding"] == "p" * MiB
    index.close()


# -- a full disk: a tiny filesystem (ENOSPC) ------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs mounted for this test (skipped where mounting is not permitted)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0777", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): needs root / CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> Path:
    """Fill the filesystem until about ``leave`` bytes are free; returns the filler file."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_shard_store_on_a_full_filesystem_fails_typed_and_succeeds_once_space_is_freed(tiny_fs, tmp_path):
    data = tiny_fs / "data"
    index = Index(SqliteProvider(tmp_path / "index.db"), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(index)
    filler = _fill(tiny_fs, leave=300 * KiB)
    sizes = [40 * KiB] * 16  # 640 KiB in shards of 4
    with pytest.raises(StoreError) as exc:
        index.write_samples(blobs(sizes), name="faults/enospc", maxcount=4)
    msg = str(exc.value)
    assert "No space left on device" in msg and "free disk space" in msg and str(data) in msg
    _assert_nothing_committed(index, "faults/enospc", before)
    assert _no_temp_files(data) == []

    filler.unlink()  # space is back
    entry = index.write_samples(blobs(sizes), name="faults/enospc", maxcount=4)
    _assert_written(index, "faults/enospc", entry.cid, sizes)
    index.close()


def test_sqlite_index_on_a_full_filesystem_fails_typed_and_succeeds_once_space_is_freed(tiny_fs, tmp_path):
    db = tiny_fs / "index.db"
    index = Index(SqliteProvider(db, retries=1), data_store=LocalDiskStore(tmp_path / "data"), atmosphere=None)
    before = _seed_index(index)
    filler = _fill(tiny_fs, leave=200 * KiB)
    sizes = [500] * 6
    with pytest.raises(ProviderError) as exc:
        index.write_samples(blobs(sizes), name="faults/enospc-index", metadata={"padding": "p" * 600 * KiB})
    msg = str(exc.value)
    assert str(db) in msg and "full" in msg, msg
    _assert_nothing_committed(index, "faults/enospc-index", before)

    filler.unlink()
    entry = index.write_samples(blobs(sizes), name="faults/enospc-index", metadata={"padding": "p" * 600 * KiB})
    _assert_written(index, "faults/enospc-index", entry.cid, sizes)
    index.close()


# -- SQLite locked by another process past the busy timeout ------------------------------------------
_LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # hold the write lock until told
con.execute("ROLLBACK")
"""


def test_sqlite_write_lock_held_past_the_busy_timeout_fails_typed_and_succeeds_once_released(tmp_path):
    db, data = tmp_path / "index.db", tmp_path / "data"
    index = Index(SqliteProvider(db, timeout=0.3, retries=2), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(index)
    locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        sizes = [700] * 5
        t0 = time.monotonic()
        with pytest.raises(ProviderError) as exc:
            index.write_samples(blobs(sizes), name="faults/locked")
        assert time.monotonic() - t0 < 20
        msg = str(exc.value)
        assert str(db) in msg and "locked" in msg and "timeout" in msg
        _assert_nothing_committed(index, "faults/locked", before)
    finally:
        locker.stdin.write("\n")
        locker.stdin.flush()
        locker.wait(10)
    entry = index.write_samples(blobs(sizes), name="faults/locked")
    _assert_written(index, "faults/locked", entry.cid, sizes)
    index.close()


# -- a database that goes away mid-transaction ------------------------------------------------
class _TerminateInCommit:
    """From an admin connection, ``pg_terminate_backend`` the writer's backend as it sends COMMIT.

    Hooked on the provider's engine ``commit`` event, which fires after the entry and
    label statements ran and just before the COMMIT goes out. ``times=None``: every commit.
    """

    def __init__(self, provider, admin_dsn: str, times: int | None):
        import psycopg
        from sqlalchemy import event

        self.killed: list[int] = []
        self.times = times
        self.engine = provider.engine
        self.admin = psycopg.connect(admin_dsn, autocommit=True)
        event.listen(self.engine, "commit", self)

    def __call__(self, conn) -> None:
        if self.times is not None and len(self.killed) >= self.times:
            return
        pid = conn.connection.dbapi_connection.info.backend_pid
        self.admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(300):  # until the backend is really gone
            if not self.admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                break
            time.sleep(0.01)
        self.killed.append(pid)

    def remove(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "commit", self)
        self.admin.close()


@pytest.mark.postgres
def test_postgres_backend_terminated_in_every_commit_fails_typed_and_the_same_write_succeeds_after(postgres_dsn, tmp_path):
    data = tmp_path / "data"
    observer = Index(provider_from_url(postgres_dsn), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(observer)
    provider = provider_from_url(postgres_dsn, retries=2)
    index = Index(provider, data_store=LocalDiskStore(data), atmosphere=None)
    fault = _TerminateInCommit(provider, postgres_dsn, times=None)
    sizes = [900] * 7
    try:
        with pytest.raises(ProviderError) as exc:
            index.write_samples(blobs(sizes), name="faults/pg-killed", maxcount=3)
        assert len(fault.killed) >= 3, "the first attempt and both retries should each have been terminated"
        msg = str(exc.value)
        assert "PostgreSQL index" in msg and "faults/pg-killed" in msg, msg
        assert "terminat" in msg or "closed" in msg, msg
        _assert_nothing_committed(observer, "faults/pg-killed", before)
    finally:
        fault.remove()
    entry = index.write_samples(blobs(sizes), name="faults/pg-killed", maxcount=3)  # the server is fine again
    _assert_written(observer, "faults/pg-killed", entry.cid, sizes)
    index.close()
    observer.close()


@pytest.mark.postgres
def test_postgres_backend_terminated_once_in_commit_is_retried_into_exactly_one_entry(postgres_dsn, tmp_path):
    """A single lost connection is transient: the idempotent upsert is retried, one entry, one label."""
    data = tmp_path / "data"
    provider = provider_from_url(postgres_dsn)
    index = Index(provider, data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(index)
    fault = _TerminateInCommit(provider, postgres_dsn, times=1)
    sizes = [900] * 7
    try:
        entry = index.write_samples(blobs(sizes), name="faults/pg-once", maxcount=3)
    finally:
        fault.remove()
    assert len(fault.killed) == 1
    _assert_written(index, "faults/pg-once", entry.cid, sizes)
    assert {e.cid: e.name for e in index.list_entries()} == {**before, entry.cid: "faults/pg-once"}
    assert [lb.cid for lb in index.list_labels() if lb.name == "faults/pg-once"] == [entry.cid]
    index.close()


class _KillInFlight:
    """``CLIENT KILL`` the writer's Redis connection while its write script is in flight.

    Wraps the provider's put script (instrumentation only: the real script is sent on
    the real connection). Before it is sent, an admin connection pauses writes
    (``CLIENT PAUSE ... WRITE``, lifted right after the kill) so the script waits inside the server; a
    thread kills the writer's connection once Redis shows it blocked, then unpauses.
    The killed command is dropped by the server. ``times=None``: every write.
    """

    def __init__(self, provider, admin, client_name: str, times: int | None):
        self.provider, self.admin, self.times, self.name = provider, admin, times, client_name
        self.killed = 0
        self.real = provider._put
        provider._put = self

    def _killer(self) -> None:
        deadline = time.monotonic() + 5  # the script normally arrives within milliseconds
        try:
            while time.monotonic() < deadline:
                mine = [c for c in self.admin.client_list() if c.get("name") == self.name]
                blocked = [c for c in mine if "b" in c.get("flags", "")]
                if blocked:
                    self.killed += 1  # before the kill: the writer raises as soon as it happens
                    for c in mine:
                        self.admin.client_kill_filter(_id=c["id"])
                    return
                time.sleep(0.005)
        finally:
            self.admin.client_unpause()

    def __call__(self, *args, **kwargs):
        if self.times is None or self.killed < self.times:
            self.admin.client_pause(6000, all=False)  # expires by itself should the test die
            threading.Thread(target=self._killer, daemon=True).start()
        return self.real(*args, **kwargs)

    def remove(self) -> None:
        self.provider._put = self.real


@pytest.mark.redis
@pytest.mark.parametrize("retries", [0, 5])
def test_redis_connection_killed_as_the_write_goes_out(redis_url, redis_conn, tmp_path, retries):
    """No retries: ProviderError and nothing written. With retries: exactly one entry (the script is idempotent)."""
    import uuid

    from atdata_dagster.index.providers.redis import RedisProvider

    data = tmp_path / "data"
    observer = Index(provider_from_url(redis_url), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(observer)
    victim = f"atd-victim-{uuid.uuid4().hex[:8]}"
    provider = RedisProvider(url=redis_url, retries=retries, client_name=victim)
    index = Index(provider, data_store=LocalDiskStore(data), atmosphere=None)
    fault = _KillInFlight(provider, redis_conn, victim, times=None if retries == 0 else 1)
    sizes = [800] * 6
    try:
        if retries == 0:
            with pytest.raises(ProviderError) as exc:
                index.write_samples(blobs(sizes), name="faults/redis-killed", maxcount=3)
            assert fault.killed >= 1
            msg = str(exc.value)
            assert "Redis" in msg and "faults/redis-killed" in msg and "running" in msg, msg
            _assert_nothing_committed(observer, "faults/redis-killed", before)
        else:
            entry = index.write_samples(blobs(sizes), name="faults/redis-killed", maxcount=3)
            assert fault.killed == 1
            _assert_written(observer, "faults/redis-killed", entry.cid, sizes)
    finally:
        fault.remove()
    entry = index.write_samples(blobs(sizes), name="faults/redis-killed", maxcount=3)
    _assert_written(observer, "faults/redis-killed", entry.cid, sizes)
    assert {e.cid: e.name for e in observer.list_entries()} == {**before, entry.cid: "faults/redis-killed"}
    assert [lb.cid for lb in observer.list_labels() if lb.name == "faults/redis-killed"] == [entry.cid]
    index.close()
    observer.close()


# -- the S3 server stopping mid-operation (the write side is tests/stores/test_s3_faults.py) ------------
def _s3_index(server, bucket: str, tmp_path) -> Index:
    from atdata_dagster.stores.s3 import S3DataStore

    store = S3DataStore(server.credentials, bucket=bucket, max_attempts=2, connect_timeout=2, read_timeout=10)
    return Index(SqliteProvider(tmp_path / "index.db"), data_store=store, atmosphere=None)


S3_SIZES = [256 * KiB] * 24  # six shards of 1 MiB


def _stop_gateway(server) -> None:
    """Stop radosgw (SIGTERM; the cluster keeps running) and wait until it is gone.

    A clean stop rather than ``stop_gateway()``'s kill -9: after a crash RGW's first
    write waits ~30 s for the dead instance's RADOS watches to expire, which would
    land on the next S3 test. (The crash case of writes is in tests/stores/test_s3_faults.py.)
    """
    import signal

    pid = int((server.root / "run" / "client.rgw.a.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    server.running = False


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.xdist_group("s3")
@pytest.mark.parametrize("where", ["between_shards", "inside_a_shard"])
def test_reading_a_multi_shard_s3_dataset_while_the_gateway_stops_fails_typed_then_reads_after_restart(
    s3_server_control, s3_bucket, tmp_path, where
):
    server = s3_server_control
    index = _s3_index(server, s3_bucket, tmp_path)
    entry = index.write_samples(blobs(S3_SIZES, seed=3), name="faults/s3-read", maxcount=4)
    assert len(entry.data_urls) == 6
    ds = index.dataset("faults/s3-read", Blob)
    kill_at = 4 if where == "between_shards" else 5  # after shard 0 / one sample into shard 1
    seen = 0
    with pytest.raises(AtdataError) as exc:
        for _ in ds.ordered():
            seen += 1
            if seen == kill_at:
                _stop_gateway(server)  # radosgw is gone: connections closed, nothing answers
    assert isinstance(exc.value, StoreError), f"untyped/unexpected error {type(exc.value).__name__}: {exc.value}"
    msg = str(exc.value)
    assert s3_bucket in msg and server.endpoint_url in msg and "testsecret" not in msg, msg
    assert seen < len(S3_SIZES)

    server.start_gateway()
    got = [(b.key, b.data) for b in index.dataset("faults/s3-read", Blob).ordered()]
    assert got == [(b.key, b.data) for b in blobs(S3_SIZES, seed=3)]
    assert set(index.verify(entry).values()) == {"ok"}
    index.close()


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.xdist_group("s3")
def test_insert_dataset_copying_from_s3_while_the_gateway_stops_commits_nothing_and_succeeds_after_restart(
    s3_server_control, s3_bucket, tmp_path
):
    """insert_dataset copies an S3 dataset into a disk store; radosgw stops as the third source shard opens."""
    from atdata_dagster.dataset import Dataset

    server = s3_server_control
    (tmp_path / "src").mkdir()
    source = _s3_index(server, s3_bucket, tmp_path / "src")
    src_entry = source.write_samples(blobs(S3_SIZES, seed=4), name="faults/s3-src", maxcount=4)
    data = tmp_path / "data"
    dest = Index(SqliteProvider(tmp_path / "dest.db"), data_store=LocalDiskStore(data), atmosphere=None)
    before = _seed_index(dest)
    opened = []

    def opener(url):  # instrumentation: the real S3 store opens every shard
        opened.append(url)
        if len(opened) == 3:
            _stop_gateway(server)
        return source.open_url(url)

    with pytest.raises(StoreError) as exc:
        dest.insert_dataset(Dataset[Blob](list(src_entry.data_urls), opener=opener), name="faults/s3-copy", maxcount=4)
    msg = str(exc.value)
    assert s3_bucket in msg and server.endpoint_url in msg and "testsecret" not in msg, msg
    _assert_nothing_committed(dest, "faults/s3-copy", before)
    assert _no_temp_files(data) == []

    server.start_gateway()
    entry = dest.insert_dataset(Dataset[Blob](list(src_entry.data_urls), opener=source.open_url), name="faults/s3-copy", maxcount=4)
    _assert_written(dest, "faults/s3-copy", entry.cid, S3_SIZES, seed=4)
    source.close()
    dest.close()


# -- the PDS stopping in the middle of a multi-shard blob promotion ---------------------------------
_COLLECTIONS = ("science.alt.dataset.schema", "science.alt.dataset.entry", "science.alt.dataset.label")


def _pds_records(pds: dict, did: str) -> dict[str, list[dict]]:
    """Every record of the account per collection, read from the PDS directly (not through the proxy)."""
    import urllib.parse
    import urllib.request

    out = {}
    for coll in _COLLECTIONS:
        q = urllib.parse.urlencode({"repo": did, "collection": coll, "limit": 100})
        with urllib.request.urlopen(f"{pds['host_url']}/xrpc/com.atproto.repo.listRecords?{q}", timeout=30) as r:
            out[coll] = json.load(r)["records"]
    return out


def _blob_cids(record: dict) -> list[str]:
    """The blob CIDs an entry record references (wherever in its storage they sit)."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("$type") == "blob" and isinstance(v.get("ref"), dict):
                found.append(v["ref"]["$link"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(record)
    return found


def _blob_exists(pds: dict, did: str, cid: str) -> bool:
    import urllib.error
    import urllib.parse
    import urllib.request

    q = urllib.parse.urlencode({"did": did, "cid": cid})
    try:
        with urllib.request.urlopen(f"{pds['host_url']}/xrpc/com.atproto.sync.getBlob?{q}", timeout=30) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


@pytest.mark.pds
@pytest.mark.slow
@pytest.mark.xdist_group("pds")  # one PDS per worker: share the worker the other PDS tests use
@pytest.mark.parametrize("how", ["gone", "frozen"])
def test_pds_stopping_mid_blob_promotion_fails_typed_leaves_no_entry_record_and_a_retry_publishes_once(
    pds, pds_account, tmp_path, how
):
    """As shard 2 uploads, the PDS goes away ("gone": connections reset, new ones refused)
    or hangs ("frozen": the server process is SIGSTOPped, requests time out).

    (Not a restart of the PDS process: its PLC directory is in memory, so a restarted
    server would no longer resolve the session's accounts; the proxy / SIGSTOP give the
    client exactly what a stopped or hung server gives it.)
    """
    import signal

    from atdata_dagster.atmosphere import AtmosphereClient
    from atdata_dagster.errors import AtmosphereConnectionError, AtmosphereError

    from tests.tcp_proxy import StoppableProxy

    proxy = StoppableProxy(int(pds["host_url"].rsplit(":", 1)[1]))
    try:
        client = AtmosphereClient(proxy.url, handle=pds_account["handle"], password=pds_account["password"], timeout=3)
        index = Index(SqliteProvider(tmp_path / "index.db"), data_store=LocalDiskStore(tmp_path / "data"), atmosphere=client)
        sizes = [64 * KiB] * 16
        entry = index.write_samples(blobs(sizes, seed=9), name="faults/promote", maxcount=4)
        assert len(entry.data_urls) == 4
        did = pds_account["did"]

        frozen = []

        def freeze():
            os.kill(pds["pid"], signal.SIGSTOP)
            frozen.append(True)

        # the PDS goes away (or hangs) as shard 2 uploads
        proxy.down_on(b"com.atproto.repo.uploadBlob", nth=2, action=freeze if how == "frozen" else None)
        try:
            with pytest.raises(AtmosphereError) as exc:
                index.promote("faults/promote")
        finally:
            if frozen:
                os.kill(pds["pid"], signal.SIGCONT)
        assert how != "frozen" or "did not answer" in str(exc.value), str(exc.value)
        assert isinstance(exc.value, AtmosphereConnectionError), f"{type(exc.value).__name__}: {exc.value}"
        msg = str(exc.value)
        assert proxy.url in msg and pds_account["password"] not in msg, msg
        assert proxy.seen >= 2
        records = _pds_records(pds, did)
        assert records["science.alt.dataset.entry"] == [], "an entry record exists although its blobs were not all uploaded"
        assert records["science.alt.dataset.label"] == []
        assert "atmosphere" not in (index.get_dataset("faults/promote").metadata or {})
        assert set(index.verify(entry).values()) == {"ok"}

        proxy.up()  # the PDS is back (and thawed)
        uri = index.promote("faults/promote")
        records = _pds_records(pds, did)
        assert [len(records[c]) for c in _COLLECTIONS] == [1, 1, 1], "the retry did not publish exactly one set of records"
        (entry_rec,) = records["science.alt.dataset.entry"]
        assert entry_rec["uri"] == uri
        refs = _blob_cids(entry_rec["value"])
        assert len(refs) == 4 and all(_blob_exists(pds, did, c) for c in refs)
        assert records["science.alt.dataset.label"][0]["value"]["datasetUri"] == uri
        assert index.get_dataset("faults/promote").metadata["atmosphere"]["uri"] == uri
        assert index.promote("faults/promote") == uri  # again: reused, nothing new
        assert [len(v) for v in _pds_records(pds, did).values()] == [1, 1, 1]
        index.close()
    finally:
        proxy.close()


# -- the same full disk seen from Dagster ----------------------------------------------------------
def test_materialization_on_a_full_filesystem_fails_the_step_typed_records_nothing_and_rematerializes(tiny_fs, tmp_path):
    import dagster as dg

    from atdata_dagster.io_manager import AtdataIOManager
    from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

    sizes = [40 * KiB] * 16

    @dg.asset(metadata={"atdata/maxcount": 4})
    def big_blobs():
        return blobs(sizes, seed=5)

    resource = AtdataIndexResource(
        path=str(tmp_path / "index.db"), data_store=LocalDiskStoreConfig(root=str(tiny_fs / "data")), atmosphere=False
    )
    filler = _fill(tiny_fs, leave=300 * KiB)
    with dg.instance_for_test() as instance:
        result = dg.materialize([big_blobs], resources={"io_manager": AtdataIOManager(index=resource)},
                                instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        err = failure.event_specific_data.error
        text = "".join(str(e) for e in [err.message, *(c.message for c in [err.cause] if c)])
        assert "StoreError" in text and "No space left on device" in text, text
        assert instance.fetch_materializations(dg.AssetKey("big_blobs"), limit=1).records == []
        index = resource.build_index()
        assert index.list_entries() == []
        assert _no_temp_files(tiny_fs / "data") == []

        filler.unlink()
        result = dg.materialize([big_blobs], resources={"io_manager": AtdataIOManager(index=resource)}, instance=instance)
        assert result.success
        (mat,) = [r.asset_materialization for r in instance.fetch_materializations(dg.AssetKey("big_blobs"), limit=5).records]
        _assert_written(index, "big_blobs", mat.metadata["atdata/cid"].value, sizes, seed=5)
        index.close()
