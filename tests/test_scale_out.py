"""The scale-out shape (docs/scale-out.md), end to end on real servers.

Dagster's own instance (runs, event log, schedules) on PostgreSQL through
``dagster-postgres``, the dataset index on PostgreSQL, the shards on S3 (Ceph RGW), and
the example pipeline materialized by the ``dagster`` CLI in a subprocess. It runs twice,
once per executor:

- ``multiprocess``: Dagster's multiprocess executor, every step in a process of its own;
- ``celery``: ``dagster-celery`` with Redis as broker and result backend and two Celery
  worker processes (``dagster-celery worker start``), every step a Celery task.

The example is configured for this purely through the environment
(``ATDATA_INDEX_DSN``, ``ATDATA_S3_*``, ``AWS_*``, and the broker URLs for Celery);
nothing may land on the local disk.

The pipeline runs once per executor (three runs: ``digits_raw``, then ``digits_split``
and ``digits_features`` for each of the partitions ``train`` and ``test``); each test
asserts one property of the result. The first tests (no services) pin down how the
example reads that environment, and that a combination which cannot work fails when
the definitions load, naming the variable, instead of silently writing to the local disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


def services(fn):
    """The end-to-end tests: real PostgreSQL, Redis and S3 (Ceph RGW), grouped with the other S3 tests."""
    for mark in (pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3, pytest.mark.slow,
                 pytest.mark.xdist_group("s3")):
        fn = mark(fn)
    return fn


ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAGSTER = BIN / "dagster"
EXECUTORS = ("multiprocess", "celery")
CELERY_WORKERS = ("worker1", "worker2")
SPLITS = ("train", "test")
NAMES = ["digits_raw"] + [f"{a}/partition={p}" for a in ("digits_split", "digits_features") for p in SPLITS]
# One process per step. forkserver with the definitions preloaded forks each step from a
# warm interpreter (~1 s) instead of spawning a fresh one (5-15 s of imports on 2 busy cores).
MULTIPROCESS = {"execution": {"config": {"multiprocess": {
    "max_concurrent": 2,
    "start_method": {"forkserver": {"preload_modules": ["example_project.definitions"]}},
}}}}
S3_PREFIX = "team/datasets"


def _dagster_yaml() -> str:
    # What docs/scale-out.md tells an operator to write: every storage on PostgreSQL,
    # the URL (which may hold a password) taken from the environment.
    return (
        "storage:\n"
        "  postgres:\n"
        "    postgres_url:\n"
        "      env: DAGSTER_PG_URL\n"
        "telemetry:\n"
        "  enabled: false\n"
    )


# -- the example's environment switches (no services) ----------------------------------
def test_without_scale_out_variables_the_example_keeps_sqlite_and_local_disk():
    from atdata_dagster import LocalDiskStoreConfig
    from example_project.definitions import HOME, _data_store, _index_settings

    assert _index_settings({}) == {"path": str(HOME / "index.db")}
    store = _data_store({"AWS_ACCESS_KEY_ID": "ignored-without-a-bucket", "AWS_SECRET_ACCESS_KEY": "x"})
    assert isinstance(store, LocalDiskStoreConfig) and store.root == str(HOME / "data")


def test_index_dsn_and_s3_credentials_are_env_vars_never_values():
    import dagster as dg

    from atdata_dagster import S3DataStoreConfig
    from example_project.definitions import _data_store, _index_settings

    dsn = _index_settings({"ATDATA_INDEX_DSN": "postgresql://lab:dsn-secret@db:5432/idx"})["dsn"]
    assert isinstance(dsn, dg.EnvVar) and dsn == "ATDATA_INDEX_DSN"
    env = {"ATDATA_S3_BUCKET": "lab-datasets", "ATDATA_S3_ENDPOINT_URL": "http://rgw:7480",
           "ATDATA_S3_PREFIX": "team/datasets", "ATDATA_S3_REGION": "eu-1",
           "AWS_ACCESS_KEY_ID": "AKIDVALUE", "AWS_SECRET_ACCESS_KEY": "s3-secret"}
    store = _data_store(env)
    assert isinstance(store, S3DataStoreConfig)
    assert (store.bucket, store.endpoint_url, store.prefix, store.region_name) == (
        "lab-datasets", "http://rgw:7480", "team/datasets", "eu-1")
    assert isinstance(store.aws_secret_access_key, dg.EnvVar)
    assert store.aws_secret_access_key == "AWS_SECRET_ACCESS_KEY"
    assert store.aws_access_key_id == "AWS_ACCESS_KEY_ID" and store.aws_session_token is None
    assert "s3-secret" not in repr(store.model_dump()) and "AKIDVALUE" not in repr(store.model_dump())
    # no keys in the environment: boto3's default chain (instance role, IRSA) decides
    bare = _data_store({"ATDATA_S3_BUCKET": "lab-datasets"})
    assert bare.aws_access_key_id is None and bare.aws_secret_access_key is None


@pytest.mark.parametrize(
    "env, names",
    [
        pytest.param({"ATDATA_INDEX_DSN": "sqlite:///index.db"}, ["ATDATA_INDEX_DSN", "'sqlite'"], id="dsn-not-postgres"),
        pytest.param({"ATDATA_INDEX_DSN": "db.internal:5432"}, ["ATDATA_INDEX_DSN", "without a scheme"], id="dsn-no-scheme"),
        pytest.param({"ATDATA_S3_ENDPOINT_URL": "http://rgw:7480", "ATDATA_S3_PREFIX": "p"},
                     ["ATDATA_S3_ENDPOINT_URL, ATDATA_S3_PREFIX", "ATDATA_S3_BUCKET"], id="s3-options-without-bucket"),
        pytest.param({"ATDATA_S3_BUCKET": "b", "AWS_ACCESS_KEY_ID": "AKIDVALUE"},
                     ["AWS_SECRET_ACCESS_KEY", "default credential chain"], id="key-id-without-secret"),
        pytest.param({"ATDATA_S3_BUCKET": "b", "AWS_SECRET_ACCESS_KEY": "s3-secret"},
                     ["AWS_ACCESS_KEY_ID"], id="secret-without-key-id"),
    ],
)
def test_a_scale_out_setting_that_cannot_work_fails_at_load_naming_the_variable(env, names):
    from atdata_dagster.errors import ConfigurationError
    from example_project.definitions import _data_store, _index_settings

    with pytest.raises(ConfigurationError) as err:
        _index_settings(env)
        _data_store(env)
    message = str(err.value)
    for name in names:
        assert name in message
    assert "s3-secret" not in message and "AKIDVALUE" not in message


def test_a_rejected_dsn_is_not_echoed_because_it_may_hold_a_password():
    from atdata_dagster.errors import ConfigurationError
    from example_project.definitions import _index_settings

    with pytest.raises(ConfigurationError, match="ATDATA_INDEX_DSN") as err:
        _index_settings({"ATDATA_INDEX_DSN": "mysql://lab:hunter2@db/idx"})
    assert "hunter2" not in str(err.value) and "'mysql'" in str(err.value)


# -- the scale-out run (PostgreSQL + S3) -----------------------------------------------
def _dagster_url(url: str) -> str:
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, on which dagster-postgres
    # 0.29.27 fails ("syntax error at or near $1" in its NOTIFY): name psycopg2, which
    # dagster-postgres installs and is written for.
    assert url.startswith("postgresql://")
    return "postgresql+psycopg2://" + url[len("postgresql://"):]


@pytest.fixture(scope="module", params=EXECUTORS)
def executor(request) -> str:
    """Which executor runs the steps; every end-to-end test runs once per executor."""
    return request.param


@pytest.fixture(scope="module")
def dagster_pg_url(_postgres_admin, executor):
    """A brand-new database for Dagster's instance storage (dagster-postgres migrates it), dropped after."""
    from tests.fixtures.services import _pg_admin_url, service_missing

    conn, reason = _postgres_admin
    if conn is None:
        service_missing("postgres", reason)
    name = f"atd_dagster_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield _pg_admin_url().set(database=name).render_as_string(hide_password=False)
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def index_dsn(_postgres_database, executor):
    """A fresh schema for the dataset index, alone on the DSN's search_path (as ``postgres_dsn``, per module)."""
    from tests.fixtures.services import scratch_schema

    with scratch_schema(_postgres_database, "scale") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def bucket(s3_client, executor):
    name = f"atd-scale-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def broker_url(request, executor):
    """A Redis database of its own (leased like the index tests') as Celery broker and result backend."""
    from tests.fixtures.services import REDIS_BASE_URL, leased_redis_db, service_missing

    if executor != "celery":
        yield None
        return
    with leased_redis_db(request.config) as (db, reason):
        if db is None:
            service_missing("redis", reason)
        yield f"{REDIS_BASE_URL}/{db}"


def _celery_yaml() -> str:
    # What docs/scale-out.md tells an operator to give the workers: the executor's own
    # config block, with the broker URLs (which may hold a password) from the environment.
    return (
        "execution:\n"
        "  config:\n"
        "    broker: {env: DAGSTER_CELERY_BROKER_URL}\n"
        "    backend: {env: DAGSTER_CELERY_BACKEND_URL}\n"
    )


def _start_celery_workers(base: Path, env: dict) -> list[subprocess.Popen]:
    """Start the workers as docs/scale-out.md does and wait until each says it is ready."""
    (base / "celery.yaml").write_text(_celery_yaml())
    workers = []
    for name in CELERY_WORKERS:
        # one task at a time per worker, so two steps at once need both workers
        cmd = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
               "-y", str(base / "celery.yaml"), "-n", name, "--", "--concurrency=1"]
        with open(base / f"{name}.log", "w") as log:
            workers.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
    deadline = time.monotonic() + 180
    for name, proc in zip(CELERY_WORKERS, workers):
        while " ready." not in (base / f"{name}.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(workers)
                raise AssertionError(f"Celery {name} did not start:\n{(base / f'{name}.log').read_text()[-4000:]}")
            time.sleep(0.5)
    return workers


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (Celery's warm shutdown), SIGKILL what is left after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory, executor, dagster_pg_url, index_dsn, bucket, broker_url, s3_server):
    """Materialize the whole example in the scale-out shape; return what the checks need."""
    base = tmp_path_factory.mktemp(f"scale_out_{executor}")
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_dagster_yaml())
    example_home = base / "example_home"  # the local default location: must stay empty
    example_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATDATA_", "AWS_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_URL=_dagster_url(dagster_pg_url),
        ATDATA_EXAMPLE_HOME=str(example_home),
        ATDATA_INDEX_DSN=index_dsn,
        ATDATA_S3_BUCKET=bucket,
        ATDATA_S3_ENDPOINT_URL=s3_server["endpoint_url"],
        ATDATA_S3_REGION=s3_server["region_name"],
        ATDATA_S3_PREFIX=S3_PREFIX,
        AWS_ACCESS_KEY_ID=s3_server["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=s3_server["aws_secret_access_key"],
        PYTHONUNBUFFERED="1",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery` from PATH
    )
    if executor == "celery":
        module, config = "example_project.celery_definitions", []
        env.update(DAGSTER_CELERY_BROKER_URL=broker_url, DAGSTER_CELERY_BACKEND_URL=broker_url)
    else:
        module, config = "example_project.definitions", ["--config-json", json.dumps(MULTIPROCESS)]

    def launch(args: list[str]) -> tuple[list[str], subprocess.Popen, float]:
        cmd = [str(DAGSTER), "asset", "materialize", "-m", module, "-a", "defs", *args, *config]
        with open(base / f"run-{args[-1]}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return args, proc, time.monotonic()

    def wait(launched) -> list[float]:
        took = []
        for args, proc, started in launched:
            rc = proc.wait(timeout=600)
            took.append(round(time.monotonic() - started, 1))
            log = (base / f"run-{args[-1]}.log").read_text()
            assert rc == 0, f"dagster asset materialize {' '.join(args)} failed:\n{log[-4000:]}"
        return took

    workers = _start_celery_workers(base, env) if executor == "celery" else []
    try:
        # the unpartitioned source first, then both partitions at once: two runs writing to
        # the same instance database, index and bucket concurrently, as two workers would
        timings = wait([launch(["--select", "digits_raw"])])
        timings += wait([launch(["--select", "digits_split,digits_features", "--partition", split])
                         for split in SPLITS])
    finally:
        _stop(workers)
    print(f"scale-out runs ({executor}) took {timings} s")  # shown with -s; figures for docs/scale-out.md
    return {"executor": executor, "home": home, "example_home": example_home, "pg_url": dagster_pg_url,
            "index_dsn": index_dsn, "bucket": bucket, "s3": s3_server, "pytest_pid": os.getpid(),
            "worker_pids": [w.pid for w in workers]}


@pytest.fixture(scope="module")
def instance(scale_out):
    """The Dagster instance the CLI runs wrote to, opened from the same DAGSTER_HOME."""
    import dagster as dg

    old = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")}
    os.environ["DAGSTER_HOME"] = str(scale_out["home"])
    os.environ["DAGSTER_PG_URL"] = _dagster_url(scale_out["pg_url"])
    try:
        inst = dg.DagsterInstance.get()
        try:
            yield inst
        finally:
            inst.dispose()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def index(scale_out):
    """The engine's view of the shared index: PostgreSQL, with the same S3 bucket for reads."""
    from atdata_dagster import local
    from atdata_dagster.stores.s3 import S3DataStore

    s3 = scale_out["s3"]
    store = S3DataStore(bucket=scale_out["bucket"], prefix=S3_PREFIX, endpoint_url=s3["endpoint_url"],
                        region_name=s3["region_name"], aws_access_key_id=s3["aws_access_key_id"],
                        aws_secret_access_key=s3["aws_secret_access_key"])
    idx = local.Index(dsn=scale_out["index_dsn"], data_store=store, atmosphere=None)
    try:
        yield idx
    finally:
        idx.close()


def _runs(instance) -> dict:
    """The runs by partition key (None for ``digits_raw``'s)."""
    runs = instance.get_runs()
    by_partition = {r.tags.get("dagster/partition"): r for r in runs}
    assert len(by_partition) == len(runs) == 3, [r.tags for r in runs]
    return by_partition


@services
def test_runs_and_events_are_recorded_in_the_postgres_instance_storage(scale_out, instance):
    import psycopg
    from dagster import DagsterEventType, DagsterRunStatus
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    runs = list(_runs(instance).values())
    assert sorted(_runs(instance), key=str) == [None, "test", "train"]
    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * 3
    for run in runs:
        assert instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_SUCCESS).records
    # ...and it is really the PostgreSQL database holding them, not a file under DAGSTER_HOME
    with psycopg.connect(scale_out["pg_url"]) as conn:
        pg_runs = {r[0] for r in conn.execute("SELECT run_id FROM runs")}
        pg_events = conn.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s)",
                                 ([r.run_id for r in runs],)).fetchone()[0]
    assert pg_runs == {r.run_id for r in runs}
    assert pg_events >= 30
    assert not list(scale_out["home"].rglob("*.db")), "no SQLite storage may appear under DAGSTER_HOME"


def _step_events(instance, run, event_type) -> dict[str, list]:
    records = instance.get_records_for_run(run.run_id, of_type=event_type).records
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.event_log_entry.step_key, []).append(r.event_log_entry)
    return out


@services
def test_every_step_runs_outside_the_orchestrating_process(scale_out, instance):
    from dagster import DagsterEventType

    for run in _runs(instance).values():
        run_start = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_START).records
        orchestrator = run_start[0].event_log_entry.dagster_event.pid
        steps = {k: e[0].dagster_event.pid for k, e in _step_events(instance, run, DagsterEventType.STEP_START).items()}
        # the materialization step and at least one check step per run
        assert len(steps) >= 2, steps
        assert orchestrator not in steps.values(), f"a step ran in the orchestrating process: {steps}"
        assert scale_out["pytest_pid"] not in steps.values()


@services
@pytest.mark.parametrize("executor", ["multiprocess"], indirect=True)
def test_with_multiprocess_each_step_has_a_process_of_its_own(scale_out, instance):
    from dagster import DagsterEventType

    step_pids: dict[tuple[str, str], int] = {}
    for run in _runs(instance).values():
        steps = {k: e[0].dagster_event.pid for k, e in _step_events(instance, run, DagsterEventType.STEP_START).items()}
        step_pids.update({(run.run_id, k): pid for k, pid in steps.items()})
        # the multiprocess executor announced a worker per step
        workers = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_WORKER_STARTING).records
        assert {w.event_log_entry.step_key for w in workers} == set(steps)
    assert len(set(step_pids.values())) == len(step_pids), f"steps shared a process: {step_pids}"


@services
@pytest.mark.parametrize("executor", ["celery"], indirect=True)
def test_with_celery_steps_run_as_tasks_spread_over_both_workers(scale_out, instance):
    from dagster import DagsterEventType

    worker_of: dict[tuple[str, str], str] = {}
    pids_of: dict[str, set[int]] = {}
    for run in _runs(instance).values():
        started = _step_events(instance, run, DagsterEventType.STEP_START)
        # dagster-celery's task reports "Executing steps <key> in celery worker" with the worker's name
        for entry in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            event = entry.event_log_entry.dagster_event
            if "in celery worker" in (event.message or ""):
                name = event.engine_event_data.metadata["Celery worker"].value
                worker_of[(run.run_id, entry.event_log_entry.step_key)] = name
        assert set(started) <= {k for (rid, k) in worker_of if rid == run.run_id}, (
            f"steps without a Celery task: {set(started)} vs {worker_of}")
        for key, entries in started.items():
            pids_of.setdefault(worker_of[(run.run_id, key)], set()).add(entries[0].dagster_event.pid)
    names = {name.split("@")[0] for name in worker_of.values()}
    assert names == set(CELERY_WORKERS), f"steps did not run on both workers: {worker_of}"
    # two workers are two processes (each with its own pool process running the tasks)
    all_pids = [pid for pids in pids_of.values() for pid in pids]
    assert len(all_pids) == len(set(all_pids)), f"two workers reported the same process: {pids_of}"


@services
def test_index_entries_live_in_postgres_with_s3_urls_that_exist_and_verify(scale_out, index, s3_client):
    import psycopg

    entries = {e.name: e for e in index.list_entries()}
    assert sorted(entries) == sorted(NAMES)
    with psycopg.connect(scale_out["index_dsn"]) as conn:  # the rows are in the PostgreSQL schema
        assert conn.execute("SELECT count(*) FROM dataset_entries").fetchone()[0] == len(NAMES)
    prefix = f"s3://{scale_out['bucket']}/{S3_PREFIX}/"
    for name, entry in entries.items():
        assert entry.data_urls and all(u.startswith(prefix) for u in entry.data_urls), (name, entry.data_urls)
        for url in entry.data_urls:
            key = url[len(f"s3://{scale_out['bucket']}/"):]
            head = s3_client.head_object(Bucket=scale_out["bucket"], Key=key)
            assert head["ContentLength"] > 0
        assert index.verify(entry) == {u: "ok" for u in entry.data_urls}, name
    assert len(entries["digits_raw"].data_urls) == 4  # 1,797 samples, atdata/maxcount 500


@services
def test_nothing_is_written_to_the_local_disk(scale_out):
    assert list(scale_out["example_home"].iterdir()) == []


@services
def test_lineage_links_the_datasets_and_the_dagster_runs(scale_out, index, instance):
    runs = _runs(instance)
    raw = index.get_dataset("digits_raw")
    assert raw.metadata["lineage"]["upstream"] == []
    assert raw.metadata["lineage"]["run_id"] == runs[None].run_id
    for split in SPLITS:
        run = runs[split]
        part = index.get_dataset(f"digits_split/partition={split}")
        feats = index.get_dataset(f"digits_features/partition={split}")
        assert [u["cid"] for u in part.metadata["lineage"]["upstream"]] == [raw.cid]
        assert [(u["cid"], u.get("partition")) for u in feats.metadata["lineage"]["upstream"]] == [(part.cid, split)]
        assert part.metadata["lineage"]["run_id"] == feats.metadata["lineage"]["run_id"] == run.run_id
        # Dagster's materialization in the PostgreSQL event log names the same entry and S3 shards
        import dagster as dg

        mat = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("digits_features"), asset_partitions=[split]), limit=1
        ).records[0].asset_materialization
        assert mat.metadata["atdata/cid"].value == feats.cid
        assert str(mat.metadata["dagster/uri"].value).startswith(f"s3://{scale_out['bucket']}/")


@services
def test_downstream_reads_the_features_back_through_s3(index):
    total = 0
    for split in SPLITS:
        entry = index.get_dataset(f"digits_features/partition={split}")
        samples = list(index.dataset_for_entry(entry).ordered())
        assert len(samples) == entry.metadata["stats"]["num_samples"] > 0
        assert all(s.features.shape == (64,) and s.features.dtype.name == "float32" for s in samples)
        assert all(0.0 <= float(s.features.min()) and float(s.features.max()) <= 1.0 for s in samples)
        total += len(samples)
    assert total == 1797


@services
def test_command_line_lists_the_shared_index_from_its_dsn(scale_out):
    out = subprocess.run(
        [str(Path(sys.executable).with_name("atdata-dagster")), "--index", scale_out["index_dsn"], "--json", "list"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert sorted(r["name"] for r in rows) == sorted(NAMES)
    assert all(r["cid"].startswith("bafyrei") for r in rows)
    samples = {r["name"]: r["samples"] for r in rows}
    assert samples["digits_raw"] == 1797
    assert sum(samples[f"digits_split/partition={p}"] for p in SPLITS) == 1797
