"""Configuration mistakes fail loudly: a typed error naming the keyword, nothing written.

atdata's ``Index(**kwargs)`` passes any unknown keyword to ``redis.Redis`` (a typo such
as ``pth=`` silently picks a Redis index on localhost), and ``insert_dataset`` /
``write_shards`` drop keywords they do not use. Here each of these raises
:class:`UnknownOptionError` (a ``ConfigurationError`` and a ``TypeError``) that names
the keyword and lists the accepted ones; Redis options go in one explicit mapping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis as redis_lib
from numpy.typing import NDArray

from atdata_dagster import local, packable, write_samples
from atdata_dagster.errors import ConfigurationError, ConfigurationTypeError
from atdata_dagster.index.providers import RedisProvider, SqliteProvider


@packable
class Point:
    """A sample of the configuration-mistake tests."""

    key: int
    vec: NDArray[np.float32]


def points(n: int) -> list[Point]:
    return [Point(key=i, vec=np.full(3, i, np.float32)) for i in range(n)]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def index(tmp_path):
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"),
                      atmosphere=None)
    yield idx
    idx.close()


@pytest.fixture
def source(tmp_path):
    return write_samples(points(6), str(tmp_path / "src" / "points.tar"))


# --------------------------------------------------------------------------- Index(...)
@pytest.mark.redis
@pytest.mark.parametrize("kwargs, named", [
    ({"host": "127.0.0.1", "port": 6379}, "host=, port="),  # atdata: a Redis index on localhost
    ({"pth": "index.db"}, "pth="),  # a typo of path=
    ({"data_stor": None}, "data_stor="),
], ids=["redis-kwargs", "typo-path", "typo-data_store"])
def test_index_with_an_unknown_keyword_raises_naming_it_and_listing_the_accepted_ones(kwargs, named, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        local.Index(atmosphere=None, **kwargs)
    error = caught.value
    assert isinstance(error, TypeError)  # what Python raises for an unexpected keyword
    msg = str(error)
    assert named in msg and "path=" in msg and "dsn=" in msg and "redis=" in msg, msg
    assert "redis={" in msg  # how to pass Redis options instead
    assert sorted(error.options) == sorted(kwargs) and "stub_dir" in error.accepted
    assert _files(tmp_path) == []  # nothing created, no connection made


@pytest.mark.redis
def test_redis_options_go_in_an_explicit_mapping_a_url_or_a_connection(redis_url, redis_conn):
    host_port, _, db = redis_url.split("://", 1)[1].partition("/")
    host, port = host_port.split(":")
    forms = {
        "mapping": {"host": host, "port": int(port), "db": int(db or 0)},
        "mapping with url": {"url": redis_url, "socket_timeout": 5},
        "url": redis_url,
        "connection": redis_lib.Redis.from_url(redis_url),
    }
    for form, redis in forms.items():
        with local.Index(redis=redis, atmosphere=None) as idx:
            assert isinstance(idx.provider, RedisProvider), form
            idx.write_samples(points(3), name=f"via-{form.replace(' ', '-')}")
    assert redis_conn.exists("Label:via-mapping@") and redis_conn.exists("Label:via-url@")


@pytest.mark.redis
def test_an_unknown_redis_option_in_the_mapping_is_named():
    with pytest.raises(ConfigurationError, match="hots") as caught:
        local.Index(redis={"hots": "127.0.0.1"}, atmosphere=None)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(ConfigurationTypeError, match="redis= must be"):
        local.Index(redis=6379, atmosphere=None)


@pytest.mark.parametrize("provider, kwargs, named", [
    ("sqlite", {"pth": "index.db"}, "pth="),
    ("postgres", {"dsn": "postgresql://127.0.0.1/test", "pool": 3}, "pool="),
    ("redis", {"hots": "127.0.0.1"}, "hots"),
], ids=["sqlite", "postgres", "redis"])
def test_create_repository_with_an_unknown_keyword_raises_a_configuration_error_naming_it(
        provider, kwargs, named, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=named) as caught:
        local.create_repository(provider, **kwargs)
    assert isinstance(caught.value, TypeError)  # still caught by `except TypeError`
    assert not (tmp_path / "index.db").exists()


def test_location_arguments_the_provider_would_ignore_are_rejected(tmp_path):
    db = str(tmp_path / "a.db")
    with pytest.raises(ConfigurationError, match="only one of"):
        local.Index(path=db, dsn="postgresql://u@127.0.0.1/x", atmosphere=None)
    with pytest.raises(ConfigurationError, match="provider='sqlite'.*dsn="):
        local.Index(provider="sqlite", path=db, dsn="postgresql://u@127.0.0.1/x", atmosphere=None)
    provider = SqliteProvider(db)
    with pytest.raises(ConfigurationError, match="path="):
        local.Index(provider, path=str(tmp_path / "b.db"), atmosphere=None)
    provider.close()
    assert not (tmp_path / "b.db").exists()


# --------------------------------------------------------------------------- insert_dataset
def test_insert_dataset_rejects_an_unknown_keyword_and_writes_nothing(index, source, tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        index.insert_dataset(source, name="pts", maxcont=2)  # a typo of maxcount
    assert isinstance(caught.value, TypeError)
    msg = str(caught.value)
    assert "maxcont=" in msg and "maxcount=" in msg and "metadata=" in msg, msg
    assert _files(tmp_path / "data") == [] and index.list_entries() == []


@pytest.mark.parametrize("kwargs, named", [
    ({"maxcount": 2}, "maxcount="),
    ({"prefix": "elsewhere", "manifest": True}, "manifest=, prefix="),
], ids=["maxcount", "prefix-manifest"])
def test_insert_dataset_without_a_store_rejects_store_options_it_would_ignore(source, tmp_path, kwargs, named):
    with local.Index(path=str(tmp_path / "plain.db"), atmosphere=None) as idx:
        with pytest.raises(ConfigurationError, match=named) as caught:
            idx.insert_dataset(source, name="pts", **kwargs)
        assert "no data store" in str(caught.value)
        assert idx.list_entries() == []
        assert idx.insert_dataset(source, name="pts").data_urls == source.list_shards()  # without them: indexed


def test_insert_dataset_rejects_atmosphere_record_fields_for_a_local_entry(index, source, tmp_path):
    with pytest.raises(ConfigurationError, match="tags=") as caught:
        index.insert_dataset(source, name="pts", tags=["a"], description="d")
    assert "description=" in str(caught.value) and "metadata=" in str(caught.value)
    assert _files(tmp_path / "data") == [] and index.list_entries() == []


def test_insert_dataset_accepts_the_seed_keywords_and_documents_cache_local_as_no_op(index, source):
    entry = index.insert_dataset(source, name="pts", metadata={"m": 1}, prefix="pts-copy", maxcount=4,
                                 cache_local=True)
    assert len(entry.data_urls) == 2 and all("pts-copy" in u for u in entry.data_urls)
    assert entry.metadata["m"] == 1


# --------------------------------------------------------------------------- DataStore.write_shards
@pytest.mark.parametrize("kwargs", [{"maxcuont": 2}, {"schema_version": "1.0.0"}, {"pipeline_version": "v2"}],
                         ids=["typo", "atdata-manifest-field", "atdata-pipeline-version"])
def test_write_shards_rejects_keywords_it_does_not_use_and_writes_nothing(source, tmp_path, kwargs):
    store = local.LocalDiskStore(tmp_path / "store")
    with pytest.raises(ConfigurationError) as caught:
        store.write_shards(source, prefix="pts", **kwargs)
    assert isinstance(caught.value, TypeError)
    (name,) = kwargs
    msg = str(caught.value)
    assert f"{name}=" in msg and "maxcount=" in msg and "LocalDiskStore.write_shards" in msg, msg
    assert _files(tmp_path / "store") == []
    assert len(store.write_shards(source, prefix="pts", maxcount=3, cache_local=True)) == 2  # the known ones work
