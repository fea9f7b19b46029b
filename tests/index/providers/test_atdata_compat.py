"""Byte-level compatibility with atdata's tables and keys (compat reference section 5).

Rows/keys are written by hand exactly as atdata writes them and read through our
providers; our writes are read back raw and checked column by column / field by field.
"""

from __future__ import annotations

import sqlite3
import time

import msgpack
import pytest

from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry
from atdata_dagster.index.providers import SqliteProvider

from ._raw import Raw

REF = "atdata://local/schema/Img@1.0.0"
URLS = ["/data/digits/data--9b1670a3--000000.tar"]
CID = "bafyreigu4mivojuwvjw2rvgt5u2as7no766vactzabkl4bmfbhbucn3rz4"  # reference test vector


def test_reads_an_entry_and_label_written_exactly_as_atdata_writes_them(provider):
    raw = Raw.of(provider)
    raw.insert_atdata_entry(CID, "digits", REF, URLS, metadata={"checksums": {URLS[0]: "ab" * 32}},
                            legacy_uuid="6f1c")
    raw.insert_atdata_label("digits", CID, "")
    raw.insert_atdata_schema("Img", "1.0.0", '{"name": "Img", "version": "1.0.0", "fields": []}')

    e = provider.get_entry(CID)
    assert (e.name, e.schema_ref, e.data_urls, e.cid, e._legacy_uuid) == ("digits", REF, URLS, CID, "6f1c")
    assert e.metadata == {"checksums": {URLS[0]: "ab" * 32}}
    assert provider.get_entry_by_name("digits").cid == CID
    assert provider.get_label("digits").cid == CID
    assert provider.get_label("digits", "").cid == CID
    assert [x.cid for x in provider.iter_entries()] == [CID]
    assert [x.cid for x in provider.list_entries_page(limit=5)] == [CID]
    assert provider.get_schema_json("Img", "1.0.0").startswith('{"name": "Img"')


def test_our_newer_write_wins_over_an_atdata_row_of_the_same_name(provider):
    raw = Raw.of(provider)
    old_created = "2020-01-01 00:00:00" if provider.kind == "sqlite" else (
        "2020-01-01 00:00:00+00" if provider.kind == "postgres" else None)
    raw.insert_atdata_entry(CID, "digits", REF, URLS, created_at=old_created)
    raw.insert_atdata_label("digits", CID, "old")
    ours = LocalDatasetEntry("digits", REF, ["/data/digits/data--00000001--000000.tar"])

    provider.put_entry(ours, label=LabelRecord("digits", ours.cid))

    assert provider.get_entry_by_name("digits").cid == ours.cid
    assert provider.get_label("digits").cid == ours.cid
    assert {e.cid for e in provider.iter_entries()} == {CID, ours.cid}


def test_written_entry_has_exactly_atdatas_fields_and_bytes(provider):
    raw = Raw.of(provider)
    meta = {"checksums": {URLS[0]: "cd" * 32}, "rows": 3}
    e = LocalDatasetEntry("digits", REF, URLS, meta)
    plain = LocalDatasetEntry("plain", REF, ["/x/data--00000002--000000.tar"])
    provider.put_entry(e, label=LabelRecord("digits", e.cid, description="d"))
    provider.put_entry(plain)
    provider.put_schema("Img", "1.0.0", '{"name": "Img"}')
    assert e.cid == CID

    if provider.kind == "redis":
        h = raw.entry_hash(CID)
        assert raw.type(f"LocalDatasetEntry:{CID}") == "hash"
        assert set(h) == {b"name", b"schema_ref", b"data_urls", b"cid", b"metadata", b"created_at"}
        assert h[b"name"] == b"digits" and h[b"schema_ref"] == REF.encode() and h[b"cid"] == CID.encode()
        assert h[b"data_urls"] == msgpack.packb(URLS) == b"\x91\xd9'" + URLS[0].encode()
        assert h[b"metadata"] == msgpack.packb(meta)
        assert set(raw.entry_hash(plain.cid)) == {b"name", b"schema_ref", b"data_urls", b"cid", b"created_at"}
        lab = raw.label_hash("digits", "")
        assert {k: v for k, v in lab.items() if k != b"created_at"} == {
            b"cid": CID.encode(), b"name": b"digits", b"version": b"", b"description": b"d"}
        assert raw.type("LocalSchema:Img@1.0.0") == "string"
        assert raw.r.get("LocalSchema:Img@1.0.0") == b'{"name": "Img"}'
        return

    row = raw.entry_row(CID)
    assert row["data_urls"] == msgpack.packb(URLS)
    assert row["metadata"] == msgpack.packb(meta)
    assert (row["name"], row["schema_ref"], row["legacy_uuid"]) == ("digits", REF, None)
    assert raw.entry_row(plain.cid)["metadata"] is None  # NULL, not a packed None
    assert raw.label_row("digits", "") == {"name": "digits", "cid": CID, "version": "", "description": "d"}
    assert raw.schema_text("Img", "1.0.0") == '{"name": "Img"}'
    if provider.kind == "sqlite":
        assert isinstance(row["created_at"], str) and row["created_at"][:2] == "20"
    else:
        assert row["created_at"].tzinfo is not None


def test_atdatas_own_label_reads_agree_with_ours(provider):
    raw = Raw.of(provider)
    a = LocalDatasetEntry("ds", REF, ["/a/data--00000001--000000.tar"])
    b = LocalDatasetEntry("ds", REF, ["/a/data--00000002--000000.tar"])
    provider.put_entry(a, label=LabelRecord("ds", a.cid, version="1"))
    time.sleep(0.01)
    provider.put_entry(b, label=LabelRecord("ds", b.cid, version="2"))
    assert provider.get_label("ds").cid == b.cid
    if provider.kind == "redis":
        # atdata's Redis get_label(name) picks any label in SCAN order (no time is kept),
        # so only its versioned read (HGETALL Label:{name}@{version} -> cid) can agree.
        assert raw.label_hash("ds", "1")[b"cid"] == a.cid.encode()
        assert raw.label_hash("ds", "2")[b"cid"] == b.cid.encode()
    else:
        assert raw.atdata_latest_label_cid("ds") == b.cid  # its ORDER BY created_at query


def test_tables_and_columns_are_exactly_atdatas(provider):
    if provider.kind == "redis":
        raw = Raw.of(provider)
        e = LocalDatasetEntry("d", REF, URLS)
        provider.put_entry(e, label=LabelRecord("d", e.cid))
        provider.put_lens("L", "1.0.0", "{}")
        provider.put_schema("S", "1.0.0", "{}")
        assert {raw.type(k) for k in (f"LocalDatasetEntry:{e.cid}", "Label:d@")} == {"hash"}
        assert {raw.type(k) for k in ("LocalLens:L@1.0.0", "LocalSchema:S@1.0.0")} == {"string"}
        foreign = {k.decode() for k in raw.r.scan_iter(count=1000)} - {
            f"LocalDatasetEntry:{e.cid}", "Label:d@", "LocalLens:L@1.0.0", "LocalSchema:S@1.0.0"}
        assert foreign and all(k.startswith("atdata_dagster:") for k in foreign)
        return

    raw = Raw.of(provider)
    assert {"idx_entries_name", "idx_labels_cid"} <= raw.indexes()
    if provider.kind == "sqlite":
        assert raw.columns("dataset_entries") == [
            ("cid", "TEXT", 0, None, 1),
            ("name", "TEXT", 1, None, 0),
            ("schema_ref", "TEXT", 1, None, 0),
            ("data_urls", "BLOB", 1, None, 0),
            ("metadata", "BLOB", 0, None, 0),
            ("legacy_uuid", "TEXT", 0, None, 0),
            ("created_at", "TEXT", 0, "datetime('now')", 0),
        ]
        assert raw.columns("schemas") == [
            ("name", "TEXT", 1, None, 1), ("version", "TEXT", 1, None, 2),
            ("schema_json", "TEXT", 1, None, 0), ("created_at", "TEXT", 0, "datetime('now')", 0)]
        assert raw.columns("lenses") == [
            ("name", "TEXT", 1, None, 1), ("version", "TEXT", 1, None, 2),
            ("lens_json", "TEXT", 1, None, 0), ("created_at", "TEXT", 0, "datetime('now')", 0)]
        assert raw.columns("labels") == [
            ("name", "TEXT", 1, None, 1), ("cid", "TEXT", 1, None, 0),
            ("version", "TEXT", 1, "''", 2), ("description", "TEXT", 0, None, 0),
            ("created_at", "TEXT", 0, "datetime('now')", 0)]
        return

    ts = ("created_at", "timestamp with time zone", "YES", "now()")
    assert raw.columns("dataset_entries") == [
        ("cid", "text", "NO", None), ("name", "text", "NO", None), ("schema_ref", "text", "NO", None),
        ("data_urls", "bytea", "NO", None), ("metadata", "bytea", "YES", None),
        ("legacy_uuid", "text", "YES", None), ts]
    assert raw.columns("schemas") == [
        ("name", "text", "NO", None), ("version", "text", "NO", None), ("schema_json", "text", "NO", None), ts]
    assert raw.columns("lenses") == [
        ("name", "text", "NO", None), ("version", "text", "NO", None), ("lens_json", "text", "NO", None), ts]
    assert raw.columns("labels") == [
        ("name", "text", "NO", None), ("cid", "text", "NO", None), ("version", "text", "NO", "''::text"),
        ("description", "text", "YES", None), ts]
    assert raw.primary_key("dataset_entries") == ["cid"]
    assert raw.primary_key("schemas") == raw.primary_key("lenses") == raw.primary_key("labels") == ["name", "version"]


# DDL of an index created by atdata 0.3.1b1 (before labels and lenses), from the compat
# reference: the core tables are unchanged since.
ATDATA_031_DDL = """
CREATE TABLE IF NOT EXISTS dataset_entries (
    cid         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    schema_ref  TEXT NOT NULL,
    data_urls   BLOB NOT NULL,
    metadata    BLOB,
    legacy_uuid TEXT,
    created_at  TEXT DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_entries_name ON dataset_entries(name);
CREATE TABLE IF NOT EXISTS schemas (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
);
"""


def test_sqlite_index_from_atdata_0_3_1_is_upgraded_in_place_without_losing_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(ATDATA_031_DDL)
    conn.execute(
        "INSERT OR REPLACE INTO dataset_entries (cid, name, schema_ref, data_urls, metadata, legacy_uuid) "
        "VALUES (?, ?, ?, ?, ?, ?)", (CID, "digits", REF, msgpack.packb(URLS), None, "uuid-1"))
    conn.execute("INSERT OR REPLACE INTO schemas (name, version, schema_json) VALUES (?, ?, ?)",
                 ("Img", "1.0.0", '{"name": "Img"}'))
    conn.commit()
    conn.close()

    with SqliteProvider(path) as p:
        assert p.get_entry(CID).name == "digits"
        assert p.get_entry_by_name("digits")._legacy_uuid == "uuid-1"
        assert p.get_schema_json("Img", "1.0.0") == '{"name": "Img"}'
        with pytest.raises(KeyError):
            p.get_label("digits")  # no labels yet: the Index falls back to the name
        e2 = LocalDatasetEntry("digits", REF, ["/data/digits/data--00000002--000000.tar"])
        p.put_entry(e2, label=LabelRecord("digits", e2.cid))
        p.put_lens("L", "1.0.0", "{}")

    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"dataset_entries", "schemas", "labels", "lenses"} <= tables
    assert {"idx_entries_name", "idx_labels_cid"} <= indexes
    assert conn.execute("SELECT count(*) FROM dataset_entries").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
