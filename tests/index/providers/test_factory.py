"""create_provider / provider_from_url, and the constructors' input forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from atdata_dagster.errors import ConfigurationError
from atdata_dagster.index.entry import LocalDatasetEntry
from atdata_dagster.index.providers import (
    PostgresProvider,
    ProviderKind,
    RedisProvider,
    SqliteProvider,
    create_provider,
    provider_from_url,
)


@pytest.mark.parametrize("name", ["sqlite", "SQLite", " SQLITE "])
def test_create_provider_sqlite_is_case_insensitive_and_uses_the_path(name, tmp_path):
    with create_provider(name, path=tmp_path / "i.db") as p:
        assert isinstance(p, SqliteProvider) and p.path == tmp_path / "i.db"
    assert (tmp_path / "i.db").exists()


def test_sqlite_default_path_is_under_home_with_parent_created(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with SqliteProvider() as p:
        assert p.path == tmp_path / ".atdata" / "index.db"
    assert (tmp_path / ".atdata" / "index.db").exists()
    with SqliteProvider("~/other/x.db") as p:  # ~ expanded, parents created
        assert p.path == tmp_path / "other" / "x.db"


def test_unknown_provider_name_is_a_configuration_error_and_a_value_error():
    with pytest.raises(ConfigurationError, match="unknown index provider 'mongo'") as info:
        create_provider("mongo")
    assert isinstance(info.value, ValueError)


def test_each_provider_states_its_kind_as_a_provider_kind_equal_to_the_plain_name(provider, provider_kind):
    assert provider.kind is ProviderKind(provider_kind)
    assert provider.kind == provider_kind and f"{provider.kind}" == provider_kind


def test_postgres_provider_refuses_a_sqlalchemy_url_of_another_database(tmp_path):
    with pytest.raises(ConfigurationError, match="'sqlite'.*postgresql://"):
        PostgresProvider(URL.create("sqlite", database=str(tmp_path / "x.db")))
    assert not (tmp_path / "x.db").exists()


def test_postgres_provider_without_a_dsn_is_a_configuration_error():
    for name in ("postgres", "PostgreSQL"):
        with pytest.raises(ValueError, match="dsn"):
            create_provider(name)


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+psycopg://"])
def test_all_postgres_dsn_forms_connect_with_psycopg3(scheme, postgres_dsn):
    dsn = scheme + postgres_dsn.split("://", 1)[1]
    with provider_from_url(dsn) as p:
        assert isinstance(p, PostgresProvider)
        assert p.url.drivername == "postgresql+psycopg"
        e = LocalDatasetEntry("x", "atdata://local/schema/S@1.0.0", ["/a/data--00000001--000000.tar"])
        p.put_entry(e)
        assert p.get_entry(e.cid).name == "x"
    with create_provider("POSTGRESQL", dsn=dsn) as p:
        assert p.get_entry(e.cid).name == "x"


@pytest.mark.redis
def test_redis_provider_from_url_connection_or_kwargs_share_one_layout(redis_url, redis_conn):
    import redis

    e = LocalDatasetEntry("x", "atdata://local/schema/S@1.0.0", ["/a/data--00000001--000000.tar"])
    with provider_from_url(redis_url) as p:
        assert isinstance(p, RedisProvider)
        p.put_entry(e)
    with create_provider("Redis", redis=redis_conn) as p:
        assert p.get_entry(e.cid).name == "x"
    db = int(redis_url.rsplit("/", 1)[1])
    with create_provider("redis", host="127.0.0.1", port=6379, db=db) as p:
        assert p.get_entry(e.cid).name == "x"
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    with RedisProvider(decoding) as p:  # msgpack values need bytes: handled transparently
        assert p.get_entry(e.cid).data_urls == e.data_urls
    assert redis_conn.ping()  # a connection we were given is not closed by us


def test_redis_provider_refuses_a_connection_and_a_url_together():
    import redis

    with pytest.raises(ConfigurationError):
        RedisProvider(redis.Redis(), url="redis://127.0.0.1:6379/0")


def test_provider_from_url_maps_sqlite_urls_like_sqlalchemy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with provider_from_url("sqlite:///rel/index.db") as p:
        assert p.path == (tmp_path / "rel" / "index.db").absolute()
    with provider_from_url(f"sqlite:///{tmp_path}/abs.db") as p:
        assert p.path == Path(f"{tmp_path}/abs.db")
    with provider_from_url("sqlite:///:memory:") as p:
        e = LocalDatasetEntry("m", "atdata://local/schema/S@1.0.0", ["/m/data--00000001--000000.tar"])
        p.put_entry(e)
        assert p.get_entry_by_name("m").cid == e.cid


def test_provider_from_url_rejects_unknown_schemes():
    with pytest.raises(ConfigurationError, match="mongodb"):
        provider_from_url("mongodb://localhost/x")
