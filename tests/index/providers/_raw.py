"""Raw access to a provider's storage, bypassing the provider: written as atdata does.

Each helper talks to the database/server through its plain driver (sqlite3, psycopg,
redis-py), never through our provider code, so the tests check the bytes on disk and
on the wire rather than our own round trip.
"""

from __future__ import annotations

import sqlite3

import msgpack

from atdata_dagster.index.providers import IndexProvider


class Raw:
    kind: str

    @staticmethod
    def of(provider: IndexProvider) -> "Raw":
        return {"sqlite": RawSqlite, "postgres": RawPostgres, "redis": RawRedis}[provider.kind](provider)


class _RawSql(Raw):
    ph = "?"

    def _exec(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def insert_atdata_entry(self, cid, name, schema_ref, urls, metadata=None, legacy_uuid=None, created_at=None):
        """atdata's store_entry: INSERT OR REPLACE / ON CONFLICT without created_at."""
        p = self.ph
        cols = "cid, name, schema_ref, data_urls, metadata, legacy_uuid"
        vals = [cid, name, schema_ref, msgpack.packb(urls),
                msgpack.packb(metadata) if metadata is not None else None, legacy_uuid]
        if created_at is not None:  # to simulate an older atdata row
            cols += ", created_at"
            vals.append(created_at)
        marks = ", ".join([p] * len(vals))
        if self.kind == "sqlite":
            sql = f"INSERT OR REPLACE INTO dataset_entries ({cols}) VALUES ({marks})"
        else:
            sql = (f"INSERT INTO dataset_entries ({cols}) VALUES ({marks}) ON CONFLICT (cid) DO UPDATE SET "
                   "name = EXCLUDED.name, schema_ref = EXCLUDED.schema_ref, data_urls = EXCLUDED.data_urls, "
                   "metadata = EXCLUDED.metadata, legacy_uuid = EXCLUDED.legacy_uuid")
        self._exec(sql, tuple(vals))

    def insert_atdata_label(self, name, cid, version="", description=None):
        p = self.ph
        if self.kind == "sqlite":
            sql = f"INSERT OR REPLACE INTO labels (name, cid, version, description) VALUES ({p}, {p}, {p}, {p})"
        else:
            sql = (f"INSERT INTO labels (name, cid, version, description) VALUES ({p}, {p}, {p}, {p}) "
                   "ON CONFLICT (name, version) DO UPDATE SET cid = EXCLUDED.cid, description = EXCLUDED.description")
        self._exec(sql, (name, cid, version, description))

    def insert_atdata_schema(self, name, version, schema_json):
        p = self.ph
        if self.kind == "sqlite":
            sql = f"INSERT OR REPLACE INTO schemas (name, version, schema_json) VALUES ({p}, {p}, {p})"
        else:
            sql = (f"INSERT INTO schemas (name, version, schema_json) VALUES ({p}, {p}, {p}) "
                   "ON CONFLICT (name, version) DO UPDATE SET schema_json = EXCLUDED.schema_json")
        self._exec(sql, (name, version, schema_json))

    def entry_row(self, cid) -> dict | None:
        """The row exactly as atdata selects it (plus created_at)."""
        rows = self._exec(
            "SELECT cid, name, schema_ref, data_urls, metadata, legacy_uuid, created_at "
            f"FROM dataset_entries WHERE cid = {self.ph}", (cid,))
        if not rows:
            return None
        keys = ("cid", "name", "schema_ref", "data_urls", "metadata", "legacy_uuid", "created_at")
        row = dict(zip(keys, rows[0]))
        for k in ("data_urls", "metadata"):
            if row[k] is not None:
                row[k] = bytes(row[k])
        return row

    def stored_metadata(self, cid) -> bytes | None:
        """The entry's metadata column exactly as stored."""
        row = self.entry_row(cid)
        return None if row is None else row["metadata"]

    def label_row(self, name, version="") -> dict | None:
        rows = self._exec(
            f"SELECT name, cid, version, description FROM labels WHERE name = {self.ph} AND version = {self.ph}",
            (name, version))
        return dict(zip(("name", "cid", "version", "description"), rows[0])) if rows else None

    def atdata_latest_label_cid(self, name) -> str:
        """atdata's unversioned get_label query."""
        order = "created_at DESC, rowid DESC" if self.kind == "sqlite" else "created_at DESC"
        return self._exec(f"SELECT cid, version FROM labels WHERE name = {self.ph} ORDER BY {order} LIMIT 1", (name,))[0][0]

    def schema_text(self, name, version) -> str:
        return self._exec(f"SELECT schema_json FROM schemas WHERE name = {self.ph} AND version = {self.ph}",
                          (name, version))[0][0]

    def count(self, table: str) -> int:
        return self._exec(f"SELECT count(*) FROM {table}")[0][0]

    def overwrite_entry_column(self, cid, column, blob: bytes) -> None:
        """Another tool writes raw bytes into one column of an entry row."""
        assert column in ("data_urls", "metadata")
        self._exec(f"UPDATE dataset_entries SET {column} = {self.ph} WHERE cid = {self.ph}", (blob, cid))


class RawSqlite(_RawSql):
    kind = "sqlite"

    def __init__(self, provider):
        self.path = str(provider.path)

    def _exec(self, sql, params=()):
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def columns(self, table) -> list[tuple]:
        """(name, declared type, notnull, default, pk position) per column."""
        return [(r[1], r[2], r[3], r[4], r[5]) for r in self._exec(f"PRAGMA table_info({table})")]

    def indexes(self) -> set[str]:
        return {r[0] for r in self._exec("SELECT name FROM sqlite_master WHERE type = 'index'")}

    def refuse_label_writes(self, name):
        self._exec("CREATE TRIGGER refuse_labels BEFORE INSERT ON labels "
                   "BEGIN SELECT RAISE(ABORT, 'label write refused'); END")


class RawPostgres(_RawSql):
    kind = "postgres"
    ph = "%s"

    def __init__(self, provider):
        self.dsn = provider.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _exec(self, sql, params=()):
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows

    def columns(self, table) -> list[tuple]:
        """(name, data_type, is_nullable, column_default) per column."""
        return self._exec(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position", (table,))

    def primary_key(self, table) -> list[str]:
        return [r[0] for r in self._exec(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)", (table,))]

    def indexes(self) -> set[str]:
        return {r[0] for r in self._exec("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}

    def refuse_label_writes(self, name):
        self._exec("CREATE FUNCTION refuse_labels() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'label write refused'; END $$ LANGUAGE plpgsql")
        self._exec("CREATE TRIGGER refuse_labels BEFORE INSERT ON labels FOR EACH ROW "
                   "EXECUTE FUNCTION refuse_labels()")


class RawRedis(Raw):
    kind = "redis"

    def __init__(self, provider):
        import redis

        kw = provider.redis.connection_pool.connection_kwargs
        self.r = redis.Redis(host=kw.get("host", "localhost"), port=kw.get("port", 6379), db=kw.get("db", 0))

    def insert_atdata_entry(self, cid, name, schema_ref, urls, metadata=None, legacy_uuid=None, created_at=None):
        """atdata's store_entry: one HSET of exactly these fields."""
        data = {"name": name, "schema_ref": schema_ref, "data_urls": msgpack.packb(urls), "cid": cid}
        if metadata is not None:
            data["metadata"] = msgpack.packb(metadata)
        if legacy_uuid is not None:
            data["legacy_uuid"] = legacy_uuid
        self.r.hset(f"LocalDatasetEntry:{cid}", mapping=data)

    def insert_atdata_label(self, name, cid, version="", description=None):
        data = {"cid": cid, "name": name, "version": version}
        if description is not None:
            data["description"] = description
        self.r.hset(f"Label:{name}@{version}", mapping=data)

    def insert_atdata_schema(self, name, version, schema_json):
        self.r.set(f"LocalSchema:{name}@{version}", schema_json)

    def entry_hash(self, cid) -> dict:
        return self.r.hgetall(f"LocalDatasetEntry:{cid}")

    def overwrite_entry_column(self, cid, column, blob: bytes) -> None:
        """Another tool writes raw bytes into one field of an entry hash."""
        self.r.hset(f"LocalDatasetEntry:{cid}", column, blob)

    def stored_metadata(self, cid) -> bytes | None:
        """The entry hash's metadata field exactly as stored."""
        return self.r.hget(f"LocalDatasetEntry:{cid}", "metadata")

    def label_hash(self, name, version="") -> dict:
        return self.r.hgetall(f"Label:{name}@{version}")

    def type(self, key) -> str:
        return self.r.type(key).decode()

    def refuse_label_writes(self, name):
        self.r.set(f"Label:{name}@", "not a hash")
