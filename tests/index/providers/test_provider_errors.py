"""Bad configuration and broken servers give a ProviderError that says where and what to do.

Note on passwords: the local PostgreSQL uses trust authentication, so a wrong password
is accepted. The credential tests therefore use an unknown user or an unknown
database (both rejected by the server) with a password in the DSN, and check that the
message explains the problem and never shows the password.
"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy.engine import make_url

from atdata_dagster.errors import ConfigurationError, NotFoundError, ProviderError
from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry
from atdata_dagster.index.providers import PostgresProvider, RedisProvider, SqliteProvider

SECRET = "s3cr3t-Pa55word"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_credentials(dsn: str, *, user: str | None = None, database: str | None = None) -> str:
    url = make_url(dsn).set(password=SECRET)
    if user is not None:
        url = url.set(username=user)
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


# -- PostgreSQL ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://user:{SECRET}@127.0.0.1:notaport/db",
        f"mysql://user:{SECRET}@127.0.0.1/db",
        f"host=127.0.0.1 password={SECRET} dbname",  # key/value DSNs are accepted, but this one is malformed
    ],
    ids=["bad-port", "wrong-scheme", "libpq-keywords-malformed"],
)
def test_malformed_postgres_dsn_is_a_provider_error_with_the_expected_form(dsn):
    with pytest.raises(ProviderError) as info:
        PostgresProvider(dsn)
    msg = str(info.value)
    assert "postgresql://user:password@host:5432/dbname" in msg
    assert SECRET not in msg


@pytest.mark.postgres
def test_unreachable_postgres_names_host_and_port_without_the_password():
    port = free_port()
    with pytest.raises(ProviderError) as info:
        PostgresProvider(f"postgres://postgres:{SECRET}@127.0.0.1:{port}/test", retries=2)
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "running" in msg
    assert SECRET not in msg


@pytest.mark.postgres
def test_unknown_postgres_database_says_to_create_it(postgres_dsn):
    with pytest.raises(ProviderError) as info:
        PostgresProvider(_with_credentials(postgres_dsn, database="atd_no_such_db"))
    msg = str(info.value)
    assert "atd_no_such_db" in msg and "does not exist" in msg and "create" in msg.lower()
    assert "***" in msg and SECRET not in msg


@pytest.mark.postgres
def test_unknown_postgres_user_says_to_check_the_credentials(postgres_dsn):
    with pytest.raises(ProviderError) as info:
        PostgresProvider(_with_credentials(postgres_dsn, user="atd_nobody"))
    msg = str(info.value)
    assert "atd_nobody" in msg and "check the user name and password" in msg
    assert SECRET not in msg


@pytest.mark.postgres
def test_postgres_error_messages_mask_the_password_in_describe(postgres_dsn):
    with PostgresProvider(_with_credentials(postgres_dsn)) as p:
        assert SECRET not in p.describe() and SECRET not in repr(p)
        with pytest.raises(NotFoundError) as info:
            p.get_entry("bafyreimissing")
        assert SECRET not in str(info.value)


def test_postgres_without_dsn_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        PostgresProvider("")


# -- SQLite -------------------------------------------------------------------------------
def test_sqlite_path_that_is_a_directory_is_rejected_with_a_fix(tmp_path):
    with pytest.raises(ProviderError, match="is a directory"):
        SqliteProvider(tmp_path)


def test_sqlite_file_that_is_not_a_database_names_the_path(tmp_path):
    bad = tmp_path / "index.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProviderError) as info:
        SqliteProvider(bad)
    assert str(bad) in str(info.value) and "not a valid SQLite database" in str(info.value)


# -- Redis ----------------------------------------------------------------------------------
@pytest.mark.redis
def test_redis_entry_key_of_the_wrong_type_names_the_key_and_server(redis_url, redis_conn):
    e = LocalDatasetEntry("ds", "atdata://local/schema/S@1.0.0", ["/x/data--00000001--000000.tar"])
    key = f"LocalDatasetEntry:{e.cid}"
    redis_conn.set(key, "not a hash")
    p = RedisProvider(url=redis_url)

    with pytest.raises(ProviderError) as info:
        p.get_entry(e.cid)
    assert key in str(info.value) and "127.0.0.1:6379" in str(info.value) and "string" in str(info.value)

    with pytest.raises(ProviderError, match=key):
        p.put_entry(e, label=LabelRecord("ds", e.cid))
    assert redis_conn.exists("Label:ds@") == 0  # nothing half-written
    assert redis_conn.get(key) == b"not a hash"
    with pytest.raises(ProviderError, match=key):
        list(p.iter_entries())


@pytest.mark.redis
def test_redis_label_key_of_the_wrong_type_is_reported_on_lookup(redis_url, redis_conn):
    redis_conn.lpush("Label:ds@", "x")
    p = RedisProvider(url=redis_url)
    with pytest.raises(ProviderError, match="Label:ds@"):
        p.get_label("ds", "")
    with pytest.raises(ProviderError, match="Label:ds@"):
        p.get_label("ds")


@pytest.mark.redis
def test_unreachable_redis_names_host_and_port_without_the_password():
    port = free_port()
    with pytest.raises(ProviderError) as info:
        RedisProvider(url=f"redis://someone:{SECRET}@127.0.0.1:{port}/0", retries=1)
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "redis-server" in msg
    assert SECRET not in msg


@pytest.mark.redis
def test_redis_wrong_credentials_are_reported_without_the_password(redis_url):
    url = redis_url.replace("redis://", f"redis://atd_nobody:{SECRET}@")
    with pytest.raises(ProviderError) as info:
        RedisProvider(url=url)
    msg = str(info.value)
    assert "127.0.0.1:6379" in msg and "credentials" in msg and "atd_nobody" in msg
    assert SECRET not in msg


# -- transient failures are retried ---------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.parametrize("ping_idle_after", [1.0, None], ids=["idle-ping", "retry-only"])
def test_postgres_operations_survive_the_server_killing_their_connections(postgres_dsn, ping_idle_after):
    import psycopg

    e = LocalDatasetEntry("ds", "atdata://local/schema/S@1.0.0", ["/x/data--00000001--000000.tar"])
    with PostgresProvider(postgres_dsn, engine_kwargs={"ping_idle_after": ping_idle_after}) as p:
        p.put_entry(e)
        assert p.get_entry(e.cid).name == "ds"  # both pools now hold a live connection
        admin_dsn = p.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'atdata_dagster' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        assert killed >= 2

        assert p.get_entry(e.cid).name == "ds"  # the dead connection is replaced, not reported
        p.put_entry(LocalDatasetEntry("ds2", e.schema_ref, ["/x/data--00000002--000000.tar"]))
        assert p.get_entry_by_name("ds2").name == "ds2"


@pytest.mark.redis
def test_redis_operations_survive_the_server_closing_the_connection(redis_url, redis_conn):
    e = LocalDatasetEntry("ds", "atdata://local/schema/S@1.0.0", ["/x/data--00000001--000000.tar"])
    with RedisProvider(url=redis_url) as p:
        p.put_entry(e)
        client_id = p.redis.client_id()
        assert redis_conn.client_kill_filter(_id=client_id) == 1

        assert p.get_entry(e.cid).name == "ds"
        p.put_entry(LocalDatasetEntry("ds2", e.schema_ref, ["/x/data--00000002--000000.tar"]))
        assert p.get_entry_by_name("ds2").name == "ds2"


def test_a_password_that_is_a_common_word_is_masked_without_mangling_the_url_scheme(postgres_dsn):
    dsn = make_url(postgres_dsn).set(username="postgres", password="postgres")  # trust auth accepts it
    with PostgresProvider(dsn.render_as_string(hide_password=False)) as p:
        text = p.describe()
    assert text.startswith("postgresql+psycopg://***:***@127.0.0.1")
    assert "postgres" not in text.split("://", 1)[1]


@pytest.mark.parametrize("column", ["metadata", "data_urls"])
def test_a_row_that_is_not_msgpack_is_listed_lazily_and_read_strictly(provider, column):
    from atdata_dagster.errors import CorruptEntryError

    from ._raw import Raw

    good = LocalDatasetEntry("good", "atdata://local/schema/S@1.0.0", ["/d/good.tar"])
    bad = LocalDatasetEntry("bad", "atdata://local/schema/S@1.0.0", ["/d/bad.tar"], metadata={"k": 1})
    provider.put_entry(good)
    provider.put_entry(bad)
    Raw.of(provider).overwrite_entry_column(bad.cid, column, b"\xc1")

    listed = {e.name: e for e in provider.iter_entries()}  # one corrupt row hides no other
    assert listed["good"] == good and listed["bad"].cid == bad.cid
    with pytest.raises(CorruptEntryError, match=column) as caught:
        listed["bad"].checksums
    assert caught.value.cid == bad.cid and caught.value.field == column
    with pytest.raises(ProviderError, match=column):  # a direct read stays strict
        provider.get_entry(bad.cid)
