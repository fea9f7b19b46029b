"""A PostgreSQL password, given any way libpq accepts it, never shows in any string we make.

The four forms: URL userinfo (``user:pw@``), the query (``?password=pw``), a libpq
key/value DSN (``password='p w\\'q'``) and the ``PGPASSWORD`` environment variable.
Against the real server (trust authentication, so the server accepts any password): a
role with the sentinel password owns a database *named like the password*, so the
driver and the server echo it back in every message that names the database. Every
string is scanned in every spelling of the secret: ``str``, ``repr``, ``describe()``,
not-found messages, provider errors and the whole ``__cause__`` / ``__context__``
chain, psycopg's own exception text included.

Redis (an ACL user with a password) and S3 (a secret key) go through the same
redaction module (:mod:`atdata_dagster.redact`), tested at the end.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote, quote_plus

import pytest

from atdata_dagster import local
from atdata_dagster.errors import AtdataError, NotFoundError, ProviderError, StoreError
from atdata_dagster.index.providers import PostgresProvider, RedisProvider, provider_from_url
from atdata_dagster.resources import AtdataIndexResource

from .secrets_scan import LeakScanner, Sentinel

FORMS = ["userinfo", "query", "keyword", "pgpassword"]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pg_secret(_postgres_admin):
    """A role whose password is a sentinel, owning a database named exactly like it."""
    import psycopg.sql as sql

    conn, reason = _postgres_admin
    if conn is None:
        pytest.skip(reason)
    secret = Sentinel.new("PG", "-p w'q")  # a space and a quote: libpq quoting, URL encoding
    role = f"atd_sec_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(secret.value)))
    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
        sql.Identifier(secret.value), sql.Identifier(role)))
    try:
        yield role, secret
    finally:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(secret.value)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _dsn(form: str, role: str, password: str, database: str, monkeypatch) -> str:
    """The DSN of ``database`` as a user writes it in ``form`` (PGPASSWORD: set in the environment)."""
    db = quote(database, safe="")
    if form == "userinfo":
        return f"postgresql://{role}:{quote(password, safe='')}@127.0.0.1:5432/{db}"
    if form == "query":
        return f"postgresql://{role}@127.0.0.1:5432/{db}?password={quote_plus(password)}"
    if form == "keyword":
        esc = lambda v: v.replace("\\", "\\\\").replace("'", "\\'")  # noqa: E731 - libpq quoting
        return f"host=127.0.0.1 port=5432 user={role} password='{esc(password)}' dbname='{esc(database)}'"
    assert form == "pgpassword"
    monkeypatch.setenv("PGPASSWORD", password)
    return f"postgresql://{role}@127.0.0.1:5432/{db}"


def _scan_raised(scanner: LeakScanner, place: str, fn) -> BaseException:
    with pytest.raises(AtdataError) as caught:
        fn()
    assert scanner.scan_exception(place, caught.value) >= 1
    return caught.value


# --------------------------------------------------------------------------- PostgreSQL
@pytest.mark.postgres
@pytest.mark.parametrize("form", FORMS)
def test_postgres_password_in_any_libpq_form_never_shows_in_reprs_describe_or_not_found(
        pg_secret, form, monkeypatch, tmp_path):
    role, secret = pg_secret
    scanner = LeakScanner([secret])
    dsn = _dsn(form, role, secret.value, secret.value, monkeypatch)
    provider = provider_from_url(dsn)  # connects and creates the tables in the database named like the password
    try:
        assert provider.count_entries() == 0  # really connected, as the role
        index = local.Index(provider, data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
        resource = AtdataIndexResource(dsn=dsn, atmosphere=False)
        for place, obj in {"provider": provider, "index": index, "resource": resource}.items():
            scanner.scan(place, f"{obj!r}\n{obj!s}")
        scanner.scan("describe", provider.describe())
        scanner.scan("describe", resource.describe())
        for name, call in {
            "get_entry": lambda: provider.get_entry("bafyreimissing"),
            "get_entry_by_name": lambda: provider.get_entry_by_name("missing"),
            "get_label": lambda: provider.get_label("missing"),
            "get_schema_json": lambda: provider.get_schema_json("Missing", "1.0.0"),
            "update_entry_metadata": lambda: provider.update_entry_metadata("bafyreimissing", {}),
            "index.get_dataset": lambda: index.get_dataset("missing"),
        }.items():
            error = _scan_raised(scanner, f"not found ({name})", call)
            assert isinstance(error, NotFoundError)
        assert "127.0.0.1" in provider.describe() and "***" in provider.describe()  # still says where
    finally:
        provider.close()
    scanner.assert_clean()
    scanner.assert_saw("describe", at_least=2)


@pytest.mark.postgres
@pytest.mark.parametrize("form", FORMS)
def test_postgres_password_in_any_libpq_form_never_shows_in_driver_errors_or_their_cause_chain(
        pg_secret, form, monkeypatch):
    import psycopg

    role, secret = pg_secret
    scanner = LeakScanner([secret])
    # the wrong database: the server's "database ... does not exist" quotes the password
    wrong = _dsn(form, role, secret.value, secret.value + "-missing", monkeypatch)
    error = _scan_raised(scanner, "wrong database", lambda: PostgresProvider(wrong, retries=0))
    assert isinstance(error, ProviderError) and "does not exist" in str(error) and "***-missing" in str(error)

    # a missing table (dropped under a running provider): the statement fails on the server
    provider = PostgresProvider(_dsn(form, role, secret.value, secret.value, monkeypatch), retries=0)
    try:
        with psycopg.connect(host="127.0.0.1", port=5432, user=role, password=secret.value, dbname=secret.value,
                             autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS dataset_entries")
        error = _scan_raised(scanner, "missing table", lambda: provider.get_entry("bafyreimissing"))
        assert isinstance(error, ProviderError) and "dataset_entries" in str(error)
    finally:
        provider.close()

    # a malformed DSN with the password in it
    bad = _dsn(form, role, secret.value, secret.value, monkeypatch).replace("5432", "notaport")
    _scan_raised(scanner, "malformed", lambda: PostgresProvider(bad))
    scanner.assert_clean()
    scanner.assert_saw("wrong database", at_least=2)  # the error and at least one chained driver error


@pytest.mark.postgres
def test_driver_error_with_the_password_is_raised_without_the_raw_driver_exception(pg_secret, monkeypatch):
    """The typed error keeps no ``__cause__`` / ``__context__`` that quotes the password, but
    an error that quotes nothing secret keeps its cause for debugging."""
    role, secret = pg_secret
    wrong = _dsn("userinfo", role, secret.value, secret.value + "-missing", monkeypatch)
    with pytest.raises(ProviderError) as caught:
        PostgresProvider(wrong, retries=0)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    with pytest.raises(ProviderError) as caught:
        PostgresProvider(f"postgresql://{role}@127.0.0.1:5432/atd_no_such_db", retries=0)
    assert caught.value.__cause__ is not None  # nothing secret in it: kept


# --------------------------------------------------------------------------- the redaction module
@pytest.mark.parametrize("text, secret, expected", [
    ("postgresql://u:pw%2F1@h/db", None, "postgresql://u:***@h/db"),
    ("postgresql://u@h/db?sslmode=require&password=pw1&application_name=a", None,
     "postgresql://u@h/db?sslmode=require&password=***&application_name=a"),
    ("host=h password='a b\\'c' dbname=d", None, "host=h password='***' dbname=d"),
    ("host=h sslpassword=k1 dbname=d", None, "host=h sslpassword=*** dbname=d"),
    ("{'host': 'h', 'password': 'pw1'}", None, "{'host': 'h', 'password': '***'}"),
    ("postgresql://postgres:postgres@h/postgres", None, "postgresql://***:***@h/***"),
    ('FATAL: database "hunter22-x" does not exist', "hunter22", 'FATAL: database "***-x" does not exist'),
    ("pass both handle= and password= (an app password)", None, "pass both handle= and password= (an app password)"),
], ids=["userinfo", "query", "keyword-quoted", "sslpassword", "mapping-repr", "common-word", "echoed", "prose"])
def test_redact_masks_every_libpq_spelling_and_leaves_schemes_and_prose_alone(text, secret, expected):
    from atdata_dagster.redact import redact  # imported here so the rest of the file also runs on older trees
    assert redact(text, secret) == expected
    assert redact(expected, secret) == expected  # idempotent


def test_redact_masks_secret_environment_variables_wherever_they_appear(monkeypatch):
    from atdata_dagster.redact import redact
    monkeypatch.setenv("PGPASSWORD", "env-pg-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env/aws+secret")
    text = "relation env-pg-secret; key env%2Faws%2Bsecret; postgresql://u@h/env-pg-secret"
    assert redact(text) == "relation ***; key ***; postgresql://u@h/***"


# --------------------------------------------------------------------------- Redis and S3
@pytest.fixture
def redis_acl(redis_url, redis_conn):
    secret = Sentinel.new("REDIS", "/r+d")
    user = f"sentinel-{uuid.uuid4().hex[:8]}"
    redis_conn.acl_setuser(user, enabled=True, passwords=[f"+{secret.value}"], keys=["*"], channels=["*"],
                           commands=["+@all"])
    try:
        yield user, secret
    finally:
        redis_conn.acl_deluser(user)


@pytest.mark.redis
def test_redis_password_never_shows_for_a_url_or_an_options_mapping(redis_acl, redis_url, redis_conn):
    user, secret = redis_acl
    scanner = LeakScanner([secret])
    head, _, tail = redis_url.partition("://")
    url = f"{head}://{user}:{quote(secret.value, safe='')}@{tail}"
    host_port, _, db = tail.partition("/")
    options = {"host": host_port.split(":")[0], "port": int(host_port.split(":")[1]), "db": int(db or 0),
               "username": user, "password": secret.value}
    for place, redis in {"url": url, "mapping": options}.items():
        index = local.Index(redis=redis, atmosphere=None)
        try:
            provider = index.provider
            assert isinstance(provider, RedisProvider) and provider.count_entries() == 0
            scanner.scan(place, f"{index!r}\n{provider!r}\n{provider.describe()}")
            # a key named like the password, of the wrong type: the error names the key
            redis_conn.set(f"Label:{secret.value}@", "not a hash")
            error = _scan_raised(scanner, place, lambda: provider.get_label(secret.value, ""))
            assert isinstance(error, ProviderError) and "Label:***@" in str(error)
            redis_conn.delete(f"Label:{secret.value}@")
        finally:
            index.close()
    wrong = url.replace(quote(secret.value, safe=""), quote(secret.value + "x", safe=""))
    error = _scan_raised(scanner, "wrong password", lambda: RedisProvider(url=wrong, retries=0))
    assert "credentials" in str(error)
    bad = url.replace(tail.split("/")[0], "127.0.0.1:notaport")
    _scan_raised(scanner, "malformed url", lambda: local.Index(redis=bad, atmosphere=None))
    scanner.assert_clean()
    scanner.assert_saw("mapping", at_least=2)


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_s3_secret_key_never_shows_in_reprs_or_errors(rgw_server, monkeypatch):
    from atdata_dagster.stores.s3 import S3DataStore

    secret = Sentinel.new("S3", "/s+k")
    scanner = LeakScanner([secret])
    cfg = rgw_server.create_user(f"sentinel-{uuid.uuid4().hex[:8]}", f"SENTINELAK{uuid.uuid4().hex[:10].upper()}",
                                 secret.value)
    store = S3DataStore(bucket=f"missing-{uuid.uuid4().hex[:12]}", endpoint_url=cfg["endpoint_url"],
                        region_name=cfg["region_name"], aws_access_key_id=cfg["aws_access_key_id"],
                        aws_secret_access_key=secret.value + "-wrong")
    scanner.scan("repr", repr(store))
    error = _scan_raised(scanner, "wrong secret", store.check_bucket)
    assert isinstance(error, StoreError)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret.value)  # from the environment, echoed by a key name
    env_store = S3DataStore(bucket=f"missing-{uuid.uuid4().hex[:12]}", endpoint_url=cfg["endpoint_url"],
                            region_name=cfg["region_name"], aws_access_key_id=cfg["aws_access_key_id"])
    scanner.scan("repr", repr(env_store))
    _scan_raised(scanner, "object named like the secret",  # the error names the URL: the env secret is masked in it
                 lambda: env_store.open_read(f"s3://{env_store.bucket}/{secret.value}").read())
    scanner.assert_clean()
    scanner.assert_saw("wrong secret")
