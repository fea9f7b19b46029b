"""Behaviour particular to one provider: Redis aux indexes, SQLite tie-breaks."""

from __future__ import annotations

import sqlite3

import msgpack
import pytest

from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry
from atdata_dagster.index.providers import RedisProvider, SqliteProvider

from ._raw import RawRedis

REF = "atdata://local/schema/S@1.0.0"


def entry(name: str, n: int) -> LocalDatasetEntry:
    return LocalDatasetEntry(name, REF, [f"/d/{name}/data--{n:08x}--000000.tar"])


# -- Redis ----------------------------------------------------------------------------------
@pytest.mark.redis
def test_redis_name_lookup_of_atdata_data_scans_once_then_uses_the_name_index(redis_url, redis_conn):
    p = RedisProvider(url=redis_url)
    raw = RawRedis(p)
    a, b = entry("ds", 1), entry("ds", 2)
    raw.insert_atdata_entry(a.cid, "ds", REF, a.data_urls)
    raw.insert_atdata_entry(b.cid, "ds", REF, b.data_urls)
    assert not redis_conn.exists("atdata_dagster:names:ds")

    assert p.get_entry_by_name("ds").cid in {a.cid, b.cid}  # atdata kept no time: either

    assert set(redis_conn.zrange("atdata_dagster:names:ds", 0, -1)) == {a.cid.encode(), b.cid.encode()}
    c = entry("ds", 3)
    p.put_entry(c)
    assert p.get_entry_by_name("ds").cid == c.cid  # ours is newer than anything atdata wrote


@pytest.mark.redis
def test_redis_reindex_lets_delete_find_labels_that_atdata_wrote(redis_url, redis_conn):
    p = RedisProvider(url=redis_url)
    raw = RawRedis(p)
    e = entry("ds", 1)
    raw.insert_atdata_entry(e.cid, "ds", REF, e.data_urls)
    raw.insert_atdata_label("alias", e.cid, "v1")

    report = p.reindex()

    assert report == {"entries_added": 1, "labels_seen": 1}
    p.delete_entry(e.cid)
    assert not redis_conn.exists("Label:alias@v1", f"LocalDatasetEntry:{e.cid}")
    assert not redis_conn.zrange("atdata_dagster:cids", 0, -1)


@pytest.mark.redis
def test_redis_listing_skips_and_unindexes_an_entry_deleted_by_hand(redis_url, redis_conn):
    p = RedisProvider(url=redis_url)
    keep, gone = entry("keep", 1), entry("gone", 2)
    p.put_entry(keep)
    p.put_entry(gone)
    redis_conn.delete(f"LocalDatasetEntry:{gone.cid}")

    assert [e.cid for e in p.iter_entries()] == [keep.cid]
    assert [e.cid for e in p.list_entries_page(limit=1)] == [keep.cid]
    assert redis_conn.zrange("atdata_dagster:cids", 0, -1) == [keep.cid.encode()]


@pytest.mark.redis
def test_redis_label_moved_to_another_cid_is_not_deleted_with_the_old_entry(redis_url):
    p = RedisProvider(url=redis_url)
    a, b = entry("a", 1), entry("b", 2)
    p.put_entry(a, label=LabelRecord("latest", a.cid))
    p.put_entry(b)
    p.put_label(LabelRecord("latest", b.cid))

    p.delete_entry(a.cid)

    assert p.get_label("latest").cid == b.cid


@pytest.mark.redis
def test_redis_bulk_write_is_all_or_nothing_when_a_key_has_the_wrong_type(redis_url, redis_conn):
    from atdata_dagster.errors import ProviderError

    p = RedisProvider(url=redis_url)
    entries = [entry(f"n{i}", i) for i in range(10)]
    redis_conn.set("Label:n7@", "in the way")
    with pytest.raises(ProviderError, match="Label:n7@"):
        p.put_entries_bulk(entries, with_labels=True)
    assert not any(redis_conn.exists(f"LocalDatasetEntry:{e.cid}") for e in entries)


# -- SQLite ---------------------------------------------------------------------------------
def test_sqlite_rows_with_the_same_second_resolve_to_the_last_inserted(tmp_path):
    path = tmp_path / "i.db"
    p = SqliteProvider(path)
    first, second = entry("ds", 1), entry("ds", 2)
    conn = sqlite3.connect(path)
    for e in (second, first):  # cids in reverse order, so neither the cid nor chance decides
        conn.execute(
            "INSERT INTO dataset_entries (cid, name, schema_ref, data_urls, created_at) VALUES (?, ?, ?, ?, ?)",
            (e.cid, e.name, e.schema_ref, msgpack.packb(e.data_urls), "2024-05-01 12:00:00"))
    conn.commit()
    conn.close()

    assert p.get_entry_by_name("ds").cid == first.cid
    assert p.get_entry(first.cid).created_at == "2024-05-01T12:00:00+00:00"


def test_sqlite_in_memory_index_works_for_quick_experiments():
    with SqliteProvider(":memory:") as p:
        e = entry("m", 1)
        p.put_entry(e, label=LabelRecord("m", e.cid))
        assert p.get_label("m").cid == e.cid and p.path is None
