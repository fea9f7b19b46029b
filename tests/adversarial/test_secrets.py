"""Issue #10, the secrets sweep: configured secrets never show up anywhere the package writes.

Three sentinel secrets, random per test and unmistakable (``SENTINEL-PG-<hex>/p+w``,
``SENTINEL-S3-<hex>/s+k``, ``SENTINEL-PDS-<hex>``; the ``/`` and ``+`` make the
URL-encoded form differ from the plain one), are real credentials of real servers: the
PostgreSQL DSN's password (the server trusts loopback, so it accepts any), the secret key
of an S3 user created for the test on Ceph RGW, and the password of a fresh PDS account.
They reach ``AtdataIndexResource`` only through ``dagster.EnvVar``.

The pipeline then does everything a user does (partitioned and plain materializations
through the IO manager, downstream loads, asset checks, the promotion sensor and job,
every CLI command with and without ``--json``) and the failures that carry connection
details (wrong bucket, dead S3 endpoint, a DSN whose database name contains the
password, an unreachable Redis with a password, a bad PDS login, a dead PDS). Every
trace is scanned for every sentinel form (see ``secrets_scan.py``): the Dagster event
log and everything else the instance stored (runs, run config, snapshots, the files of
its home directory), materialization metadata, Python logging at DEBUG (our package,
botocore, urllib3, sqlalchemy, psycopg, httpx), stdout/stderr, every row of every index
table, every record of the PDS repo, the bucket's keys and manifests, the CLI's output
and every exception with its whole cause/context chain. Each scanned place is also
checked to be non-empty, and one test proves the scanner catches a planted leak.
"""

import io
import json
import logging
import socket
import subprocess
import sys
import uuid
from urllib.parse import quote

import dagster as dg
import pytest

from atdata_dagster import cli
from atdata_dagster.checks import build_dataset_checks
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import (
    AtmosphereAuthError,
    AtmosphereConnectionError,
    ProviderError,
    StoreError,
)
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.promotion import PROMOTE_OP, build_promotion_job, build_promotion_sensor
from atdata_dagster.resources import AtdataIndexResource, S3DataStoreConfig
from tests.dagster.helpers import Row, rows
from tests.fixtures.pds import create_pds_account
from tests.fixtures.s3 import boto3_client

from .secrets_scan import (
    JWT_MARKERS,
    LeakScanner,
    Sentinel,
    bucket_texts,
    dagster_texts,
    exception_chain,
    file_texts,
    log_record_texts,
    pds_records,
    postgres_rows,
)

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.pds, pytest.mark.xdist_group("s3")]

KEY = "atdata_index"
ENV_PG, ENV_S3, ENV_PDS = "SECRETS_TEST_PG_DSN", "SECRETS_TEST_S3_SECRET_KEY", "SECRETS_TEST_PDS_PASSWORD"
ENV_REDIS = "SECRETS_TEST_REDIS_URL"
#: every logger whose DEBUG output is captured and scanned
DEBUG_LOGGERS = ("atdata_dagster", "botocore", "boto3", "urllib3", "sqlalchemy", "psycopg", "httpx", "httpcore",
                 "atproto", "redis", "dagster")
PARTS = dg.StaticPartitionsDefinition(["even", "odd"])


# --------------------------------------------------------------------------- the world
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dsn_with_password(dsn: str, password: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(dsn).set(password=password)
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)  # the password URL-encoded, as a user writes it


class World:
    """The sentinels, the real servers' handles and the resource built from EnvVars."""

    def __init__(self, tmp_path, monkeypatch, postgres_dsn, rgw_server, pds, request):
        self.request = request
        self.pg = Sentinel.new("PG", "/p+w")
        self.s3 = Sentinel.new("S3", "/s+k")
        self.pds_secret = Sentinel.new("PDS")
        self.redis = Sentinel.new("REDIS", "/r+d")
        self.s3_wrong = Sentinel.new("S3BAD", "/x+y")  # a wrong secret key is a secret too
        self.scanner = LeakScanner([self.pg, self.s3, self.pds_secret, self.redis, self.s3_wrong], JWT_MARKERS)
        self.tmp_path = tmp_path
        self.pds = pds
        # the S3 secret must be real: a user of its own on the RGW
        uid = f"sentinel-{uuid.uuid4().hex[:8]}"
        self.s3_config = rgw_server.create_user(uid, f"SENTINELAK{uuid.uuid4().hex[:10].upper()}", self.s3.value)
        self.s3_client = boto3_client(self.s3_config)
        self.bucket = f"secrets-{uuid.uuid4().hex[:16]}"
        self.s3_client.create_bucket(Bucket=self.bucket)
        # the PDS password is the account's own password
        self.account = create_pds_account(pds["url"], password=self.pds_secret.value)
        self.dsn = _dsn_with_password(postgres_dsn, self.pg.value)
        assert self.pg.value not in self.dsn and "%2F" in self.dsn  # the DSN carries an encoded form
        monkeypatch.setenv(ENV_PG, self.dsn)
        monkeypatch.setenv(ENV_S3, self.s3.value)
        monkeypatch.setenv(ENV_PDS, self.pds_secret.value)

    def store(self, resolved: bool = False, **overrides) -> S3DataStoreConfig:
        cfg = {
            "bucket": self.bucket,
            "endpoint_url": self.s3_config["endpoint_url"],
            "region_name": self.s3_config["region_name"],
            "aws_access_key_id": self.s3_config["aws_access_key_id"],
            "aws_secret_access_key": dg.EnvVar(ENV_S3),
            **overrides,
        }
        return S3DataStoreConfig(**_resolve(cfg) if resolved else cfg)

    def resource(self, resolved: bool = False, store: dict | None = None, **overrides) -> AtdataIndexResource:
        """The resource as configured in Definitions (EnvVars), or ``resolved`` as a run sees it
        (then ``build_index()`` works outside a run too)."""
        cfg = {
            "dsn": dg.EnvVar(ENV_PG),
            "data_store": self.store(resolved, **(store or {})),
            "atmosphere_service_url": self.pds["url"],
            "atmosphere_handle": self.account["handle"],
            "atmosphere_password": dg.EnvVar(ENV_PDS),
            **overrides,
        }
        return AtdataIndexResource(**_resolve(cfg) if resolved else cfg)


def _resolve(cfg: dict) -> dict:
    return {k: v.get_value() if isinstance(v, dg.EnvVar) else v for k, v in cfg.items()}


@pytest.fixture
def world(tmp_path, monkeypatch, postgres_dsn, rgw_server, pds, caplog, request):
    for name in DEBUG_LOGGERS:  # before any engine, client or session is created
        caplog.set_level(logging.DEBUG, logger=name)
    return World(tmp_path, monkeypatch, postgres_dsn, rgw_server, pds, request)


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


# --------------------------------------------------------------------------- the assets
@dg.asset(code_version="1", metadata={"atdata/promote": True, "atdata/maxcount": 4})
def secrets_raw(context: dg.AssetExecutionContext):
    context.log.info("secrets_raw: writing 10 rows")
    return rows(10)


@dg.asset(code_version="1", partitions_def=PARTS)
def secrets_split(context: dg.AssetExecutionContext, secrets_raw: Dataset[Row]):
    keep = 0 if context.partition_key == "even" else 1
    return dg.Output(r for r in secrets_raw.ordered() if r.label % 2 == keep)


@dg.asset(code_version="1", metadata={"atdata/promote": True})
def secrets_features(secrets_raw: Dataset[Row]):
    return dg.Output(Row(key=r.key, label=r.label, vec=r.vec * 2) for r in secrets_raw.ordered())


@dg.asset(code_version="1")
def secrets_summary(context: dg.AssetExecutionContext, secrets_split: Dataset[Row]):
    got = list(secrets_split.ordered())  # every partition of the upstream
    context.log.info(f"secrets_summary: {len(got)} rows from both partitions")
    return got[:3]


ASSETS = [secrets_raw, secrets_split, secrets_features, secrets_summary]
CHECKS = build_dataset_checks(secrets_raw) + build_dataset_checks(secrets_split) + build_dataset_checks(secrets_features)


def _materialize(world: World, instance, selection, partition=None, resource=None, raise_on_error=True):
    return dg.materialize(
        [*ASSETS, *CHECKS], selection=selection, partition_key=partition, instance=instance,
        resources={"io_manager": AtdataIOManager(index=resource or world.resource())},
        raise_on_error=raise_on_error,
    )


def _run_cli(scanner: LeakScanner, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    try:
        code = cli.main(argv, out=out)
    except SystemExit as exc:  # argparse or a missing setting
        code = exc.code if isinstance(exc.code, int) else 2
        scanner.scan("cli output", str(exc.code))
    text = out.getvalue()
    scanner.scan("cli output", text)
    return code, text


def _scan_capture(scanner: LeakScanner, capfd) -> None:
    captured = capfd.readouterr()
    scanner.scan("stdout/stderr", captured.out + captured.err)


def _scan_logs(scanner: LeakScanner, caplog) -> None:
    for record, text in zip(caplog.records, log_record_texts(caplog.records)):
        scanner.scan(f"python logging ({record.name}, {record.levelname})", text)
        scanner.seen["python logging"] += 1
        scanner.chars["python logging"] += len(text)


# --------------------------------------------------------------------------- the scanner itself
def test_scanner_catches_a_planted_secret_in_every_form_and_in_exception_chains():
    pg, s3 = Sentinel.new("PG", "/p+w"), Sentinel.new("S3", "/s+k")
    scanner = LeakScanner([pg, s3], JWT_MARKERS)
    assert scanner.scan("clean", "postgresql://postgres:***@127.0.0.1/db and s3 secret ***") == []
    assert scanner.scan("plain", f"password={pg.value}")[0].form == "plain"
    assert scanner.scan("encoded dsn", _dsn_with_password("postgresql://u@h/d", pg.value))  # '/' encoded, '+' not
    assert scanner.scan("encoded", f"dsn=postgresql://u:{quote(pg.value, safe='')}@h/d")[0].form == "url-encoded"
    assert scanner.scan("json", json.dumps({"k": s3.value}))
    assert scanner.scan("bytes", b"\x00\x01" + s3.value.encode() + b"\xff")
    assert scanner.scan("cut", f"...{s3.core[:32]}")[0].form == "random core"
    token = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6ImNvbS5hdHByb3RvLmFjY2VzcyJ9.c2ln"
    assert scanner.scan("jwt", f"Authorization: Bearer {token}")[0].secret == "PDS session token"

    try:  # a secret that only the suppressed context of an error still holds
        try:
            raise ConnectionError(f"login failed with {pg.value}")
        except ConnectionError:
            raise ProviderError("cannot reach PostgreSQL at 127.0.0.1 (password masked)") from None
    except ProviderError as exc:
        assert "SENTINEL" not in str(exc) and exc.__cause__ is None
        assert len(list(exception_chain(exc))) == 2
        scanner.scan_exception("chain", exc)
    assert {(leak.place, leak.secret) for leak in scanner.leaks} == {
        ("plain", "PG"), ("encoded dsn", "PG"), ("encoded", "PG"), ("jwt", "PDS session token"), ("json", "S3"), ("bytes", "S3"), ("cut", "S3"), ("chain", "PG")}
    with pytest.raises(AssertionError, match="secrets leaked"):
        scanner.assert_clean()
    with pytest.raises(AssertionError, match="empty"):
        scanner.assert_saw("never scanned")


def test_our_code_never_turns_on_botocore_debug_logging():
    """botocore's own DEBUG output is its business; the package must never enable it
    (no ``boto3.set_stream_logger``, no level or handler on its loggers), checked in a
    fresh interpreter after importing everything and building an S3 client."""
    code = (
        "import logging, atdata_dagster, atdata_dagster.local, atdata_dagster.stores.s3 as s3\n"
        "from atdata_dagster.resources import AtdataIndexResource\n"
        "s = s3.S3DataStore(bucket='b', endpoint_url='http://127.0.0.1:9', aws_access_key_id='a',\n"
        "                   aws_secret_access_key='x', max_attempts=1, connect_timeout=0.2)\n"
        "s.client\n"
        "for n in ('botocore', 'boto3', 'urllib3', 's3transfer', 'sqlalchemy', 'httpx', 'psycopg'):\n"
        "    lg = logging.getLogger(n)\n"
        "    real = [h for h in lg.handlers if not isinstance(h, logging.NullHandler)]\n"
        "    print(n, lg.level, lg.getEffectiveLevel(), len(real))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = dict((line.split()[0], line.split()[1:]) for line in out.splitlines())
    assert set(lines) == {"botocore", "boto3", "urllib3", "s3transfer", "sqlalchemy", "httpx", "psycopg"}
    for name, (level, effective, handlers) in lines.items():
        # NOTSET, or WARNING as sqlalchemy sets its own logger on import: never DEBUG/INFO
        assert int(level) in (logging.NOTSET, logging.WARNING) and int(effective) >= logging.WARNING, (name, level)
        assert int(handlers) == 0, (name, handlers)  # the libraries' own NullHandlers only


def test_reprs_of_configs_resources_stores_and_clients_mask_every_secret():
    """What a user prints or logs while debugging: the objects holding resolved secrets."""
    from atdata_dagster.atmosphere import AtmosphereClient
    from atdata_dagster.resources import RepositoryConfig
    from atdata_dagster.stores.s3 import S3DataStore

    pg, s3, pds, rd = (Sentinel.new("PG", "/p+w"), Sentinel.new("S3", "/s+k"), Sentinel.new("PDS"),
                       Sentinel.new("REDIS", "/r+d"))
    scanner = LeakScanner([pg, s3, pds, rd])
    dsn = _dsn_with_password("postgresql://postgres@127.0.0.1:5432/postgres", pg.value)
    redis_url = f"redis://:{quote(rd.value, safe='')}@127.0.0.1:6379/0"
    store = S3DataStoreConfig(bucket="b", endpoint_url="http://127.0.0.1:9", aws_access_key_id="AK",
                              aws_secret_access_key=s3.value, aws_session_token=s3.value)
    resource = AtdataIndexResource(dsn=dsn, data_store=store, atmosphere_service_url="http://127.0.0.1:9",
                                   atmosphere_handle="h.test", atmosphere_password=pds.value,
                                   repos={"lab": RepositoryConfig(redis_url=redis_url, data_store=store)})
    objects = {
        "resource": resource, "io manager": AtdataIOManager(index=resource), "repository": resource.repos["lab"],
        "store config": store, "describe": resource.describe(), "s3 store": store.build(),
        "atmosphere client": AtmosphereClient("http://127.0.0.1:9", handle="h.test", password=pds.value),
        "atdata-style s3 store": S3DataStore({"AWS_ENDPOINT": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AK",
                                              "AWS_SECRET_ACCESS_KEY": s3.value}, bucket="b"),
    }
    for place, obj in objects.items():
        scanner.scan(place, f"{obj!r}\n{obj!s}")
    scanner.assert_clean()
    assert "postgres:***@127.0.0.1" in repr(resource) and "redis://:***@127.0.0.1" in repr(resource.repos["lab"])
    assert "'b'" in repr(store) and "atmosphere_handle='h.test'" in repr(resource)  # the rest is still shown


@pytest.mark.parametrize("url, shown", [
    ("postgresql://postgres:{pw}@127.0.0.1:notaport/db", "postgres:***@127.0.0.1"),
    ("postgresql://postgres:{pw}@[::1/db", "***"),
    ("redis://:{pw}@127.0.0.1:notaport/0", "redis://:***@127.0.0.1"),
    ("mysql://root:{pw}@127.0.0.1/db", "'mysql'"),
], ids=["pg-bad-port", "pg-bad-host", "redis-bad-port", "unknown-scheme"])
def test_malformed_index_url_with_a_password_fails_typed_without_it(url, shown):
    from atdata_dagster.errors import AtdataError
    from atdata_dagster.index.providers import provider_from_url

    secret = Sentinel.new("PG", "/p+w")
    scanner = LeakScanner([secret])
    with pytest.raises(AtdataError) as caught:
        provider_from_url(url.format(pw=quote(secret.value, safe="")))
    assert shown in str(caught.value), str(caught.value)  # what is wrong, the password masked
    assert scanner.scan_exception("error", caught.value) >= 1
    scanner.assert_clean()


@pytest.fixture
def redis_acl_user(redis_url, redis_conn):
    """A Redis ACL user with a sentinel password (the test server itself has none); deleted after."""
    secret = Sentinel.new("REDIS", "/r+d")
    user = f"sentinel-{uuid.uuid4().hex[:8]}"
    redis_conn.acl_setuser(user, enabled=True, passwords=[f"+{secret.value}"], keys=["*"], channels=["*"],
                           commands=["+@all"])
    head, _, tail = redis_url.partition("://")
    try:
        yield secret, f"{head}://{user}:{quote(secret.value, safe='')}@{tail}"
    finally:
        redis_conn.acl_deluser(user)


def test_redis_index_behind_a_password_keeps_it_out_of_keys_values_reprs_and_logs(
        redis_acl_user, redis_conn, tmp_path, monkeypatch, caplog, capfd):
    from atdata_dagster.resources import LocalDiskStoreConfig

    for name in DEBUG_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    secret, url = redis_acl_user
    scanner = LeakScanner([secret])
    monkeypatch.setenv(ENV_REDIS, url)
    resource = AtdataIndexResource(redis_url=dg.EnvVar(ENV_REDIS), atmosphere=False,
                                   data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")))
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.materialize([secrets_raw], resources={"io_manager": AtdataIOManager(index=resource)},
                                instance=instance)
        assert result.success
        for place, texts in dagster_texts(instance).items():
            scanner.scan_all(f"dagster {place}", texts)
    resolved = AtdataIndexResource(redis_url=url, atmosphere=False,
                                   data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")))
    index = resolved.build_index()
    try:
        entry = index.get_dataset("secrets_raw")
        assert len(list(index.dataset("secrets_raw").ordered())) == 10
        for obj in (resolved, index, index.repos["local"].provider, entry, index.list_datasets()):
            scanner.scan("reprs", f"{obj!r}\n{obj!s}")
        scanner.scan("reprs", resolved.describe())
    finally:
        index.close()
    keys = 0
    for key in redis_conn.scan_iter():
        kind = redis_conn.type(key).decode()
        value = {"string": redis_conn.get, "hash": redis_conn.hgetall, "set": redis_conn.smembers,
                 "list": lambda k: redis_conn.lrange(k, 0, -1),
                 "zset": lambda k: redis_conn.zrange(k, 0, -1, withscores=True)}.get(kind, lambda k: kind)(key)
        scanner.scan("redis keys and values", f"{key!r} {kind} {value!r}")
        keys += 1
    _scan_logs(scanner, caplog)
    _scan_capture(scanner, capfd)
    scanner.assert_clean()
    assert any(k.startswith(b"LocalDatasetEntry:") for k in redis_conn.scan_iter()) and keys >= 3
    scanner.assert_saw("redis keys and values", at_least=3)
    scanner.assert_saw("dagster event_log", at_least=10)
    scanner.assert_saw("reprs", at_least=6)
    assert ":***@127.0.0.1" in repr(resolved), repr(resolved)  # the URL still shown, its password masked


# --------------------------------------------------------------------------- the whole pipeline
@pytest.mark.slow
def test_full_pipeline_leaks_no_secret_into_logs_metadata_index_records_or_cli(world, instance, caplog, capfd):
    scanner = world.scanner

    # -- materialize: plain assets with their checks, then both partitions, then the fan-in
    first = _materialize(world, instance, dg.AssetSelection.assets(secrets_raw, secrets_features)
                         | dg.AssetSelection.checks_for_assets(secrets_raw, secrets_features))
    assert first.success
    evaluations = first.get_asset_check_evaluations()
    assert len(evaluations) == 6 and all(e.passed for e in evaluations)
    for pk in PARTS.get_partition_keys():
        run = _materialize(world, instance, dg.AssetSelection.assets(secrets_split)
                           | dg.AssetSelection.checks_for_assets(secrets_split), partition=pk)
        split_checks = run.get_asset_check_evaluations()
        assert run.success and len(split_checks) == 3 and all(e.passed for e in split_checks)
    summary = _materialize(world, instance, dg.AssetSelection.assets(secrets_summary))
    assert summary.success

    # -- promotion: the sensor's requests, run with the secrets given at launch as {"env": ...}
    job = build_promotion_job(retry_policy=None)
    resource = world.resource()
    with dg.build_sensor_context(instance=instance, resources={KEY: resource}) as ctx:
        data = build_promotion_sensor(job).evaluate_tick(ctx)
    assert sorted(r.tags["atdata/name"] for r in data.run_requests) == ["secrets_features", "secrets_raw"]
    launch_defs = dg.Definitions(jobs=[job], resources={KEY: AtdataIndexResource.configure_at_launch(
        data_store=world.store(), atmosphere_service_url=world.pds["url"],
        atmosphere_handle=world.account["handle"])})
    launch_job = launch_defs.resolve_job_def(job.name)
    launch_config = {"dsn": {"env": ENV_PG}, "atmosphere_password": {"env": ENV_PDS}}
    promotion_runs = []
    for request in data.run_requests:
        run_config = {**request.run_config, "resources": {KEY: {"config": launch_config}}}
        result = launch_job.execute_in_process(run_config=run_config, instance=instance, tags=request.tags)
        assert result.success
        promotion_runs.append(result.run_id)
    # Dagster stores the reference to the variable, never its value
    for run_id in promotion_runs:
        stored = instance.get_run_by_id(run_id).run_config
        assert stored["resources"][KEY]["config"] == launch_config

    # -- the CLI against the same index (S3 credentials from the AWS_* chain, PDS from its variable)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("AWS_ACCESS_KEY_ID", world.s3_config["aws_access_key_id"])
        mp.setenv("AWS_SECRET_ACCESS_KEY", world.s3.value)
        mp.setenv("AWS_ENDPOINT_URL", world.s3_config["endpoint_url"])
        mp.setenv("AWS_REGION", world.s3_config["region_name"])
        mp.setenv("ATDATA_APP_PASSWORD", world.pds_secret.value)
        stray = world.tmp_path / "cli-data" / "orphan"
        stray.mkdir(parents=True)
        (stray / "data--00000000--000000.tar").write_bytes(b"x")
        index = ["--index", world.dsn]
        outputs = {}
        for json_flag in ([], ["--json"]):
            for command in (["list"], ["show", "secrets_raw"], ["verify", "secrets_features"],
                            ["promote", "secrets_summary", "--handle", world.account["handle"],
                             "--service", world.pds["url"]],
                            ["--data-root", str(world.tmp_path / "cli-data"), "gc", "--dry-run", "--grace", "0", "--force"]):
                code, text = _run_cli(scanner, [*index, *json_flag, *command])
                assert code == 0, (command, text)
                outputs[(command[0] if command[0] != "--data-root" else "gc", bool(json_flag))] = text
        code, text = _run_cli(scanner, [*index, "--json", "--data-root", str(world.tmp_path / "cli-data"), "gc",
                                        "--grace", "0", "--force"])  # a scratch root this index never wrote to
        assert code == 0 and not stray.joinpath("data--00000000--000000.tar").exists(), text
        mp.setenv("ATDATA_INDEX", world.dsn)
        code, text = _run_cli(scanner, ["--json", "show", "no_such_dataset"])  # an error, through the env var
        assert code == 2 and text == ""
    finally:
        mp.undo()
    assert "secrets_summary" in outputs[("list", False)] and json.loads(outputs[("list", True)])
    assert json.loads(outputs[("verify", True)])["ok"] is True
    assert json.loads(outputs[("promote", True)])["uri"].startswith(f"at://{world.account['did']}/")
    assert any(u.endswith("orphan/data--00000000--000000.tar") for u in json.loads(outputs[("gc", True)])["would_delete"])

    # -- scan every place --------------------------------------------------------------
    stored = dagster_texts(instance)
    for place, texts in stored.items():
        scanner.scan_all(f"dagster {place}", texts)
    materializations = 0
    for asset in ASSETS:
        for pk in (PARTS.get_partition_keys() if asset is secrets_split else [None]):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[pk] if pk else None), limit=100).records
            for record in records:
                materializations += 1
                meta = record.asset_materialization.metadata
                scanner.scan_all("materialization metadata", (f"{k}={v.value!r}" for k, v in meta.items()))
    scanner.scan_all("dagster home files", (text for _path, text in file_texts(world.tmp_path / "dagster_home")))
    index_rows = postgres_rows(world.dsn)
    for table, texts in index_rows.items():
        scanner.scan_all("index rows", texts)
    records = pds_records(world.pds["url"], world.account["did"])
    for collection, texts in records.items():
        scanner.scan_all("pds records", texts)
    scanner.scan_all("s3 bucket", bucket_texts(world.s3_client, world.bucket))
    _scan_logs(scanner, caplog)
    _scan_capture(scanner, capfd)

    scanner.assert_clean()

    # -- ... and prove the places were not empty
    assert len(instance.get_runs()) == 6  # plain + 2 partitions + summary + 2 promotions (the CLI: none)
    assert len(stored["event_log"]) > 100 and stored["user_messages"]
    assert any("secrets_raw: writing 10 rows" in m for m in stored["user_messages"])
    assert any("secrets_summary: 10 rows from both partitions" in m for m in stored["user_messages"])
    assert materializations == 5  # raw, features, both partitions, summary
    scanner.assert_saw("materialization metadata", at_least=5 * 8)
    scanner.assert_saw("dagster home files", at_least=2, chars=10_000)
    assert len(index_rows["dataset_entries"]) == 5 and index_rows["schemas"] and index_rows["labels"]
    scanner.assert_saw("index rows", at_least=7)
    entries = records.get("science.alt.dataset.entry", [])
    assert len(entries) == 3  # raw, features (job) and summary (CLI)
    assert records.get("science.alt.dataset.schema") and records.get("science.alt.dataset.label")
    scanner.assert_saw("s3 bucket", at_least=5)
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"botocore", "urllib3", "sqlalchemy", "psycopg", "httpx"} <= loggers, loggers
    assert any(r.levelno == logging.DEBUG and r.name.startswith("botocore") for r in caplog.records)
    scanner.assert_saw("python logging", at_least=200)
    scanner.assert_saw("stdout/stderr", chars=1000)  # Dagster's console log of the runs
    scanner.assert_saw("cli output", at_least=12)


# --------------------------------------------------------------------------- failures carrying connection details
FAILURES = ["wrong_bucket", "dead_s3_endpoint", "rejected_s3_secret", "database_named_like_the_password",
            "unreachable_redis_with_password", "redis_rejects_the_password", "bad_pds_login", "dead_pds"]


def _failure_setup(world: World, kind: str, monkeypatch) -> tuple[dict, type, str]:
    """(resource overrides, expected error type, text the message must contain)."""
    if kind == "wrong_bucket":
        missing = f"no-such-{uuid.uuid4().hex[:12]}"
        return {"store": {"bucket": missing}}, StoreError, missing
    if kind == "dead_s3_endpoint":
        port = _free_port()
        return {"store": {"endpoint_url": f"http://127.0.0.1:{port}"}}, StoreError, str(port)
    if kind == "rejected_s3_secret":
        monkeypatch.setenv(ENV_S3, world.s3_wrong.value)
        return {}, StoreError, "rejected"
    if kind == "redis_rejects_the_password":  # a live server, no such ACL user: WRONGPASS
        url = world.request.getfixturevalue("redis_url")
        head, _, tail = url.partition("://")
        monkeypatch.setenv(ENV_REDIS, f"{head}://nobody:{quote(world.redis.value, safe='')}@{tail}")
        return {"dsn": None, "redis_url": dg.EnvVar(ENV_REDIS)}, ProviderError, "credentials"
    if kind == "database_named_like_the_password":
        bad = _dsn_with_password(world.dsn, world.pg.value, database=f"db_{world.pg.value}")
        monkeypatch.setenv(ENV_PG, bad)
        return {}, ProviderError, "does not exist"
    if kind == "unreachable_redis_with_password":
        port = _free_port()
        monkeypatch.setenv(ENV_REDIS, f"redis://:{quote(world.redis.value, safe='')}@127.0.0.1:{port}/0")
        return {"dsn": None, "redis_url": dg.EnvVar(ENV_REDIS)}, ProviderError, str(port)
    if kind == "bad_pds_login":
        return {"atmosphere_handle": f"nobody-{uuid.uuid4().hex[:6]}.test"}, AtmosphereAuthError, "authentication"
    if kind == "dead_pds":
        port = _free_port()
        return {"atmosphere_service_url": f"http://127.0.0.1:{port}"}, AtmosphereConnectionError, str(port)
    raise AssertionError(kind)


def _third_party_debug(place: str) -> bool:
    return place.startswith(("python logging (psycopg", "python logging (sqlalchemy.pool")) and place.endswith(", DEBUG)")


@pytest.mark.slow  # ~5-7 s each: an S3 user, a PDS account and one or two Dagster runs
@pytest.mark.parametrize("kind", FAILURES)
def test_failure_with_connection_details_is_typed_and_names_no_secret(world, instance, kind, monkeypatch, caplog, capfd):
    scanner = world.scanner
    overrides, error_type, expected = _failure_setup(world, kind, monkeypatch)
    resource = world.resource(**overrides)  # EnvVars, for the Dagster runs
    atmosphere = kind in ("bad_pds_login", "dead_pds")

    # 1. the engine: the error, its repr and its whole cause/context chain
    with pytest.raises(error_type) as caught:
        index = world.resource(resolved=True, **overrides).build_index()
        try:
            if atmosphere:
                entry = index.write_samples(rows(3), name="secrets_failure")
                index.promote(entry.name)
            else:
                index.write_samples(rows(3), name="secrets_failure")
        finally:
            index.close()
    assert expected in str(caught.value), str(caught.value)
    assert scanner.scan_exception("engine error", caught.value) >= 1

    # 2. the same failure in a Dagster run: what the event log stores of it
    if atmosphere:
        assert _materialize(world, instance, dg.AssetSelection.assets(secrets_raw), resource=resource).success
        job = build_promotion_job(retry_policy=None)
        result = job.execute_in_process(
            run_config={"ops": {PROMOTE_OP: {"config": {"names": ["secrets_raw"]}}}}, resources={KEY: resource},
            instance=instance, raise_on_error=False)
    else:
        result = _materialize(world, instance, dg.AssetSelection.assets(secrets_raw), resource=resource,
                              raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value in ("STEP_FAILURE", "RESOURCE_INIT_FAILURE")]
    assert failures, "the run failed without a failure event"
    from dagster._serdes import serialize_value

    assert error_type.__name__ in "".join(serialize_value(f.event_specific_data) for f in failures)

    for place, texts in dagster_texts(instance).items():
        scanner.scan_all(f"dagster {place}", texts)
    _scan_logs(scanner, caplog)
    _scan_capture(scanner, capfd)
    if kind == "database_named_like_the_password":
        # The server's own message names the database, and psycopg and SQLAlchemy's pool
        # log it at DEBUG (their behaviour; the package never enables it, see
        # test_our_code_never_turns_on_botocore_debug_logging). Everything else is ours.
        scanner.leaks = [leak for leak in scanner.leaks if not _third_party_debug(leak.place)]
    scanner.assert_clean()
    scanner.assert_saw("dagster event_log", at_least=5)
    scanner.assert_saw("engine error")


@pytest.mark.parametrize("password", [b"hunter2-bytes", b"\xffhunter2\xfe"], ids=["utf8", "not-utf8"])
def test_a_bytes_redis_password_is_masked_like_a_str_one(password):
    from atdata_dagster.index.providers import RedisProvider
    from atdata_dagster.redact import leaks, redact

    text = f"connect failed: password={password!r} ({password.decode('latin-1')})"
    assert "hunter2" not in redact(text, password)
    assert leaks(RuntimeError(text), password)
    provider = RedisProvider(host="127.0.0.1", port=6379, password=password)
    try:
        assert "hunter2" not in provider.describe() and "hunter2" not in repr(provider)
        assert "hunter2" not in provider._clean(text)
    finally:
        provider.close()
