"""SQL index providers: one SQLAlchemy Core implementation for SQLite and PostgreSQL.

The tables, columns and blob encodings are exactly atdata's (compat reference 5.1 and
5.3), so an index written here opens in atdata and the other way round. On top of that
layout this module adds what atdata lacks: ordered "latest" lookups, retries on
SQLite lock contention and PostgreSQL disconnects, keyset pagination, safe concurrent
table creation, and errors that say which database failed and how to fix it.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import msgpack
from sqlalchemy import (
    Column,
    bindparam,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from ...errors import ConfigurationError, NotFoundError, ProviderError
from ...redact import is_secret_key, leaks, redact, secrets_in
from ..entry import LabelRecord, LocalDatasetEntry
from .base import IndexProvider, decode_entry_columns

__all__ = ["SqlProvider", "SqliteProvider", "PostgresProvider", "DEFAULT_SQLITE_PATH"]

T = TypeVar("T")

#: Where ``SqliteProvider()`` and atdata's ``Index()`` keep the index by default.
DEFAULT_SQLITE_PATH = Path("~/.atdata/index.db")

# -- DDL ---------------------------------------------------------------------------
# Raw text per dialect so that the declared column types are exactly atdata's (a
# SQLAlchemy-generated DDL would say VARCHAR/BLOB/TIMESTAMP WITH TIME ZONE variants).
# Every statement is IF NOT EXISTS: an index made by atdata 0.3.1b1 (only the first two
# tables) is upgraded in place without touching its rows.

_SQLITE_DDL = (
    """CREATE TABLE IF NOT EXISTS dataset_entries (
    cid         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    schema_ref  TEXT NOT NULL,
    data_urls   BLOB NOT NULL,
    metadata    BLOB,
    legacy_uuid TEXT,
    created_at  TEXT DEFAULT (datetime('now'))
)""",
    "CREATE INDEX IF NOT EXISTS idx_entries_name ON dataset_entries(name)",
    """CREATE TABLE IF NOT EXISTS schemas (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
)""",
    """CREATE TABLE IF NOT EXISTS lenses (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    lens_json   TEXT NOT NULL,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
)""",
    """CREATE TABLE IF NOT EXISTS labels (
    name        TEXT NOT NULL,
    cid         TEXT NOT NULL,
    version     TEXT NOT NULL DEFAULT '',
    description TEXT,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
)""",
    "CREATE INDEX IF NOT EXISTS idx_labels_cid ON labels(cid)",
)

_PG_DDL = tuple(
    s.replace("BLOB", "BYTEA").replace("TEXT DEFAULT (datetime('now'))", "TIMESTAMPTZ DEFAULT now()")
    for s in _SQLITE_DDL
)

_TABLES = ("dataset_entries", "schemas", "lenses", "labels")
_INDEXES = ("idx_entries_name", "idx_labels_cid")

# Arbitrary constant key for pg_advisory_xact_lock: serializes concurrent table creation.
_PG_DDL_LOCK_KEY = 0x61746461_7461_6467  # "atdatadg"
_PG_DDL_LOCK_KEY &= 0x7FFFFFFFFFFFFFFF

# Namespace (first int4 key) of the per-name write locks (second key: hashtext(name)).
# PostgreSQL evaluates created_at (clock_timestamp()) when a statement runs, not at
# COMMIT, and writes of different rows (another CID, another label version) do not
# block each other: without a lock, a write that commits last can carry the older
# created_at, and "latest" (label or entry by name) would miss the last commit. Taking
# this lock first makes every write of a name stamp its rows after the previous one
# committed. (SQLite needs nothing: BEGIN IMMEDIATE already serializes all writers.)
_PG_NAME_LOCK_NS = 0x61746C62  # "atlb"

# -- table objects for query building (types only steer parameter/result handling) --
_md = MetaData()
entries_t = Table(
    "dataset_entries",
    _md,
    Column("cid", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("schema_ref", Text, nullable=False),
    Column("data_urls", LargeBinary, nullable=False),
    Column("metadata", LargeBinary),
    Column("legacy_uuid", Text),
    Column("created_at", Text),
)
schemas_t = Table(
    "schemas",
    _md,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("schema_json", Text, nullable=False),
    Column("created_at", Text),
)
lenses_t = Table(
    "lenses",
    _md,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("lens_json", Text, nullable=False),
    Column("created_at", Text),
)
labels_t = Table(
    "labels",
    _md,
    Column("name", Text, primary_key=True),
    Column("cid", Text, nullable=False),
    Column("version", Text, primary_key=True),
    Column("description", Text),
    Column("created_at", Text),
)

_ENTRY_COLS = (
    entries_t.c.cid,
    entries_t.c.name,
    entries_t.c.schema_ref,
    entries_t.c.data_urls,
    entries_t.c.metadata,
    entries_t.c.legacy_uuid,
    entries_t.c.created_at,
)
_LABEL_COLS = (
    labels_t.c.name,
    labels_t.c.cid,
    labels_t.c.version,
    labels_t.c.description,
    labels_t.c.created_at,
)


# -- value helpers ------------------------------------------------------------------
def pack_urls(urls: Iterable[str]) -> bytes:
    """``data_urls`` as atdata stores it: a msgpack array of str."""
    return msgpack.packb([str(u) for u in urls])


def pack_metadata(metadata: dict | None, *, what: str = "entry") -> bytes | None:
    """``metadata`` as atdata stores it: a msgpack map, or NULL for ``None``."""
    if metadata is None:
        return None
    try:
        return msgpack.packb(metadata)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigurationError(
            f"metadata of {what} is not msgpack-encodable ({e}); use plain str/int/float/"
            "bool/None/list/dict values (convert numpy scalars with .item(), arrays with "
            ".tolist())"
        ) from e


def unpack(blob: Any) -> Any:
    return msgpack.unpackb(bytes(blob), raw=False, strict_map_key=False)


def iso_timestamp(value: Any) -> str | None:
    """Normalize a stored created_at (SQLite text or PostgreSQL datetime) to ISO 8601 UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return text  # written by someone else in a form we don't know: pass it through
    if dt.tzinfo is None:  # SQLite's datetime('now') is UTC without an offset
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat()


def _row_to_entry(row: Any) -> LocalDatasetEntry:
    cid, name, schema_ref, urls, metadata, legacy_uuid, created_at = row
    data_urls, meta = decode_entry_columns(urls, metadata, f"index entry {name!r} ({cid})")
    return LocalDatasetEntry(
        name=name,
        schema_ref=schema_ref,
        data_urls=data_urls,
        metadata=meta,
        _cid=cid,
        _legacy_uuid=legacy_uuid,
        created_at=iso_timestamp(created_at),
    )


def _row_to_label(row: Any) -> LabelRecord:
    name, cid, version, description, created_at = row
    return LabelRecord(
        name=name,
        cid=cid,
        version=version or "",
        description=description,
        created_at=iso_timestamp(created_at),
    )


# -- the provider ---------------------------------------------------------------------
class SqlProvider(IndexProvider):
    """Index provider over a SQLAlchemy engine (SQLite or PostgreSQL).

    Use :class:`SqliteProvider` / :class:`PostgresProvider` (or ``create_provider``);
    this constructor takes an already-normalized SQLAlchemy URL.

    Ordering: ``get_entry_by_name`` and ``get_label(name)`` return the most recently
    written row (``created_at DESC``, then ``rowid DESC`` on SQLite). atdata itself
    returns an arbitrary row (``LIMIT 1`` without ORDER BY) for names; ours is
    deterministic. Every write sets ``created_at`` explicitly to the current time
    (SQLite: millisecond text ``YYYY-MM-DD HH:MM:SS.SSS`` which sorts correctly next to
    atdata's second-resolution ``YYYY-MM-DD HH:MM:SS``; PostgreSQL: ``clock_timestamp()``,
    also on conflict, so a re-written entry or label becomes the newest as with SQLite's
    ``INSERT OR REPLACE``).
    """

    kind = "sql"

    def __init__(
        self,
        url: str | URL,
        *,
        retries: int = 8,
        backoff: float = 0.05,
        engine_kwargs: dict | None = None,
    ) -> None:
        self._url = make_url(url) if isinstance(url, str) else url
        self._retries = max(0, int(retries))
        self._backoff = float(backoff)
        self._closed = False
        self._pid = os.getpid()
        backend = self._url.get_backend_name()
        if backend == "sqlite":
            self.kind = "sqlite"
        elif backend == "postgresql":
            self.kind = "postgres"
        else:
            raise ConfigurationError(
                f"unsupported SQL backend {backend!r} in {self.describe()}: use sqlite:///path "
                "or postgresql://user:password@host:5432/dbname"
            )
        self._engine = self._make_engine(_copy_kwargs(engine_kwargs))
        if self.kind == "postgres":
            # Reads go through a second pool whose connections stay in autocommit:
            # no BEGIN/ROLLBACK round trips and no per-checkout isolation toggling
            # (toggling through execution_options doubled the lookup latency).
            read_kwargs = _copy_kwargs(engine_kwargs)
            read_kwargs["isolation_level"] = "AUTOCOMMIT"
            self._read_engine = self._make_engine(read_kwargs)
        else:
            self._read_engine = self._engine
        self._build_statements()
        try:
            self._retrying(self._ensure_tables, what="create the index tables")
        except BaseException:
            self._dispose()
            raise

    # -- engine and transactions ------------------------------------------------
    def _make_engine(self, kwargs: dict) -> Engine:
        if self.kind == "sqlite":
            database = self._url.database or ""
            connect_args = kwargs.pop("connect_args", {})
            # busy_timeout: let SQLite itself wait for the write lock first; our retry
            # loop with backoff covers what is left (SQLITE_BUSY returned immediately).
            connect_args.setdefault("timeout", getattr(self, "_busy_timeout", 30.0))
            connect_args.setdefault("check_same_thread", False)
            if database in ("", ":memory:"):
                kwargs.setdefault("poolclass", StaticPool)
            # We issue BEGIN IMMEDIATE / COMMIT ourselves: the sqlite3 module must not.
            kwargs.setdefault("isolation_level", "AUTOCOMMIT")
            engine = create_engine(self._url, connect_args=connect_args, **kwargs)

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                try:
                    cur.execute(f"PRAGMA busy_timeout = {int(connect_args['timeout'] * 1000)}")
                finally:
                    cur.close()

            return engine
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("connect_timeout", 10)
        connect_args.setdefault("application_name", "atdata_dagster")
        ping_after = kwargs.pop("ping_idle_after", 1.0)
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        engine = create_engine(self._url, connect_args=connect_args, **kwargs)
        if ping_after is not None and not kwargs.get("pool_pre_ping"):
            _install_idle_ping(engine, float(ping_after))
        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so no lock upgrade deadlocks)."""
        self._check_open()
        if self.kind == "sqlite":
            with self._engine.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.exec_driver_sql("COMMIT")
                except BaseException:
                    dbapi = conn.connection.dbapi_connection
                    if dbapi is not None and dbapi.in_transaction:
                        try:
                            conn.exec_driver_sql("ROLLBACK")
                        except Exception:
                            pass
                    raise
        else:
            with self._engine.begin() as conn:
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._check_open()
        with self._read_engine.connect() as conn:
            yield conn

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderError(f"the index provider for {self.describe()} is closed")
        if self._pid != os.getpid():
            # Forked child: pooled connections belong to the parent. Drop them without
            # closing (closing would end the parent's sessions) and open new ones.
            self._pid = os.getpid()
            self._engine.dispose(close=False)
            if self._read_engine is not self._engine:
                self._read_engine.dispose(close=False)

    def _retrying(self, fn: Callable[[], T], *, what: str) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except sa_exc.DBAPIError as e:
                if attempt < self._retries and self._is_transient(e):
                    attempt += 1
                    delay = min(2.0, self._backoff * (2 ** (attempt - 1)))
                    time.sleep(delay * (0.5 + random.random()))
                    continue
                failure: Exception = e
            except sa_exc.SQLAlchemyError as e:  # URL problems, pool timeouts, ...
                failure = e
            # raised outside the except block: a driver error that quotes the password
            # (e.g. a database named like it) must not ride along as __cause__/__context__
            error = self._translate(failure, what)
            if leaks(failure, *self._secrets()):
                raise error
            raise error from failure

    def _secrets(self) -> list[str]:
        """The DSN's secrets: the password and secret query values (``?password=``, ``sslpassword``)."""
        found = [self._url.password] if isinstance(self._url.password, str) else []
        for key, value in self._url.query.items():
            if is_secret_key(key):
                found += [value] if isinstance(value, str) else list(value)
        return [s for s in found if s]

    def _is_transient(self, e: sa_exc.DBAPIError) -> bool:
        orig = e.orig
        if self.kind == "sqlite":
            code = getattr(orig, "sqlite_errorcode", None)
            if code is not None and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return True
            msg = str(orig).lower()
            return "locked" in msg or "busy" in msg
        if e.connection_invalidated:
            return True
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate is not None:
            # serialization failure, deadlock, admin shutdown, cannot connect now,
            # connection exceptions.
            return sqlstate in {
                "40001", "40P01", "57P01", "57P02", "57P03",
                "08000", "08003", "08006", "08001", "08004",
            }
        if isinstance(e, sa_exc.OperationalError):
            return _pg_connect_problem(str(orig)) == "unreachable"
        return False

    def _translate(self, e: Exception, what: str) -> ProviderError:
        error = self._translate_unmasked(e, what)
        masked = redact(str(error), *self._secrets())
        return error if masked == str(error) else ProviderError(masked)

    def _translate_unmasked(self, e: Exception, what: str) -> ProviderError:
        where = self.describe()
        orig = getattr(e, "orig", None) or e
        detail = redact(" ".join(str(orig).split()), *self._secrets())
        if self.kind == "sqlite":
            msg = f"SQLite index at {self.path} failed to {what}: {detail}."
            low = detail.lower()
            if "locked" in low or "busy" in low:
                msg += (
                    " Another process held the write lock for too long; retry later or "
                    "raise the timeout (SqliteProvider(path, timeout=...))."
                )
            elif "disk is full" in low or "disk i/o error" in low:
                msg += (
                    f" The filesystem holding {self.path} is full, a file-size limit (ulimit -f) "
                    "was reached or the disk failed; nothing was committed. Free space or raise "
                    "the limit, then write again."
                )
            elif "not a database" in low or "malformed" in low:
                msg += " The file is not a valid SQLite database: point the provider at another path."
            elif "unable to open" in low or "readonly" in low or "read-only" in low:
                msg += " Check that the directory exists and is writable by this user."
            return ProviderError(msg)
        problem = _pg_connect_problem(detail)
        hint = {
            "unreachable": (
                f"Is PostgreSQL running and listening on {self._url.host or 'localhost'}:"
                f"{self._url.port or 5432}? Start the server or fix host/port in the DSN."
            ),
            "auth": (
                f"The server rejected user {self._url.username!r}: check the user name and "
                "password in the DSN (and the server's pg_hba.conf)."
            ),
            "database": (
                f"Database {self._url.database!r} does not exist: create it first "
                f"(createdb {self._url.database} / CREATE DATABASE ...) or put an existing "
                "database in the DSN."
            ),
            "dsn": "Expected a DSN like postgresql://user:password@host:5432/dbname.",
        }.get(problem, "")
        return ProviderError(f"PostgreSQL index at {where} failed to {what}: {detail}. {hint}".strip())

    # -- schema creation ----------------------------------------------------------
    def _existing_objects(self, conn: Connection) -> set[str]:
        if self.kind == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
            )
            return {r[0] for r in rows}
        names = _TABLES + _INDEXES
        rows = conn.exec_driver_sql(
            "SELECT " + ", ".join(f"to_regclass('{n}') IS NOT NULL" for n in names)
        ).one()
        return {n for n, present in zip(names, rows) if present}

    def _ensure_tables(self) -> None:
        with self._read() as conn:
            if self.kind == "sqlite":
                # WAL (as atdata): readers never block the writer and vice versa.
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                if str(mode).lower() != "wal" and self._url.database not in ("", ":memory:"):
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            if set(_TABLES + _INDEXES) <= self._existing_objects(conn):
                return  # nothing to create: don't take any lock
        with self._write() as conn:
            if self.kind == "postgres":
                # Two processes racing CREATE TABLE IF NOT EXISTS can still collide on
                # the catalog's unique index; the advisory lock serializes them.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_DDL_LOCK_KEY})")
            for stmt in _SQLITE_DDL if self.kind == "sqlite" else _PG_DDL:
                conn.exec_driver_sql(stmt)

    # -- prebuilt statements ----------------------------------------------------------
    # Built once: constructing a select() per call cost more than running it on SQLite
    # (~300 us of a ~400 us lookup). Bind parameter names carry a ``b_`` prefix because
    # names equal to column names are reserved in INSERT/UPDATE statements.
    def _build_statements(self) -> None:
        sqlite = self.kind == "sqlite"
        now = func.strftime("%Y-%m-%d %H:%M:%f", "now") if sqlite else func.clock_timestamp()

        def newest_first(table: Table) -> list:
            if sqlite:
                return [table.c.created_at.desc(), literal_column(f"{table.name}.rowid").desc()]
            return [table.c.created_at.desc().nulls_last()]

        def upsert(table: Table, keys: tuple[str, ...]):
            """INSERT OR REPLACE (SQLite, as atdata) / INSERT ... ON CONFLICT DO UPDATE."""
            if sqlite:
                return insert(table).prefix_with("OR REPLACE").values(created_at=now)
            # imported here: loading the PostgreSQL dialect costs ~0.25 s SQLite users needn't pay
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(table).values(created_at=now)
            return stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
            )

        e, lb, sc, ln = entries_t.c, labels_t.c, schemas_t.c, lenses_t.c
        self._q = {
            "upsert_entry": upsert(entries_t, ("cid",)),
            "upsert_label": upsert(labels_t, ("name", "version")),
            "upsert_schema": upsert(schemas_t, ("name", "version")),
            "upsert_lens": upsert(lenses_t, ("name", "version")),
            "entry_by_cid": select(*_ENTRY_COLS).where(e.cid == bindparam("b_cid")),
            "entry_by_name": select(*_ENTRY_COLS)
            .where(e.name == bindparam("b_name"))
            .order_by(*newest_first(entries_t))
            .limit(1),
            "entries_first": select(*_ENTRY_COLS).order_by(e.cid).limit(bindparam("b_limit")),
            "entries_after": select(*_ENTRY_COLS)
            .where(e.cid > bindparam("b_after"))
            .order_by(e.cid)
            .limit(bindparam("b_limit")),
            "count_entries": select(func.count()).select_from(entries_t),
            "update_metadata": update(entries_t)
            .where(e.cid == bindparam("b_cid"))
            .values(metadata=bindparam("b_metadata")),
            "delete_labels_of": delete(labels_t).where(lb.cid == bindparam("b_cid")),
            "delete_entry": delete(entries_t).where(e.cid == bindparam("b_cid")),
            "schema": select(sc.schema_json).where(
                sc.name == bindparam("b_name"), sc.version == bindparam("b_version")
            ),
            "schemas": select(sc.name, sc.version, sc.schema_json).order_by(sc.name, sc.version),
            "schema_versions": select(sc.version)
            .where(sc.name == bindparam("b_name"))
            .order_by(sc.version),
            "lens": select(ln.lens_json).where(
                ln.name == bindparam("b_name"), ln.version == bindparam("b_version")
            ),
            "lenses": select(ln.name, ln.version, ln.lens_json).order_by(ln.name, ln.version),
            "label": select(*_LABEL_COLS).where(
                lb.name == bindparam("b_name"), lb.version == bindparam("b_version")
            ),
            # a scalar subquery, not a join: both sides stay primary-key lookups for any planner
            "entry_by_latest_label": select(*_ENTRY_COLS).where(
                e.cid
                == select(lb.cid)
                .where(lb.name == bindparam("b_name"))
                .order_by(*newest_first(labels_t))
                .limit(1)
                .scalar_subquery()
            ),
            "latest_label": select(*_LABEL_COLS)
            .where(lb.name == bindparam("b_name"))
            .order_by(*newest_first(labels_t))
            .limit(1),
            "labels_first": select(*_LABEL_COLS)
            .order_by(lb.name, lb.version)
            .limit(bindparam("b_limit")),
            "labels_after": select(*_LABEL_COLS)
            .where(
                tuple_(lb.name, lb.version)
                > tuple_(bindparam("b_after_name"), bindparam("b_after_version"))
            )
            .order_by(lb.name, lb.version)
            .limit(bindparam("b_limit")),
        }

    def _fetch(self, key: str, params: dict | None, *, what: str, mode: str = "first"):
        """Run one prebuilt read statement with retries; ``mode`` picks the result shape."""

        def run():
            with self._read() as conn:
                res = conn.execute(self._q[key], params or {})
                if mode == "first":
                    return res.first()
                if mode == "scalar":
                    return res.scalar()
                if mode == "scalars":
                    return res.scalars().all()
                return res.all()

        return self._retrying(run, what=what)

    @staticmethod
    def _entry_params(entry: LocalDatasetEntry) -> dict:
        return {
            "cid": entry.cid,
            "name": entry.name,
            "schema_ref": entry.schema_ref,
            "data_urls": pack_urls(entry.data_urls),
            "metadata": pack_metadata(entry.metadata, what=f"dataset {entry.name!r}"),
            "legacy_uuid": entry._legacy_uuid,
        }

    @staticmethod
    def _label_params(label: LabelRecord) -> dict:
        if not label.name or not label.cid:
            raise ConfigurationError(
                f"a label needs a name and a CID (got name={label.name!r}, cid={label.cid!r})"
            )
        return {
            "name": label.name,
            "cid": label.cid,
            "version": label.version or "",
            "description": label.description,
        }

    # -- entries --------------------------------------------------------------------
    def put_entry(self, entry: LocalDatasetEntry, *, label: LabelRecord | None = None) -> None:
        params = self._entry_params(entry)
        label_params = self._label_params(label) if label is not None else None

        names = {entry.name} | ({label_params["name"]} if label_params is not None else set())

        def run() -> None:
            with self._write() as conn:
                self._lock_names(conn, names)
                conn.execute(self._q["upsert_entry"], params)
                if label_params is not None:
                    conn.execute(self._q["upsert_label"], label_params)

        self._retrying(run, what=f"write entry {entry.name!r} ({entry.cid})")

    def _lock_names(self, conn: Connection, names: Iterable[str]) -> None:
        """PostgreSQL: hold the per-name write locks (sorted: no deadlock) until this transaction ends."""
        if self.kind != "postgres":
            return
        for name in sorted(names):
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(%(ns)s, hashtext(%(name)s))", {"ns": _PG_NAME_LOCK_NS, "name": name}
            )

    def put_entries_bulk(
        self,
        entries: Iterable[LocalDatasetEntry],
        *,
        with_labels: bool = False,
        chunk_size: int = 2000,
    ) -> int:
        """Upsert many entries (and, with ``with_labels``, each name's unversioned label).

        One transaction per ``chunk_size`` entries; returns how many were written.
        """
        count = 0
        chunk: list[LocalDatasetEntry] = []

        def flush(items: list[LocalDatasetEntry]) -> None:
            # ON CONFLICT cannot touch a row twice in one statement: last one per key wins.
            params = list({e.cid: self._entry_params(e) for e in items}.values())
            labels = list(
                {e.name: {"name": e.name, "cid": e.cid, "version": "", "description": None} for e in items}.values()
            )

            def run() -> None:
                with self._write() as conn:
                    conn.execute(self._q["upsert_entry"], params)
                    if with_labels:
                        conn.execute(self._q["upsert_label"], labels)

            self._retrying(run, what=f"bulk-write {len(items)} entries")

        for e in entries:
            chunk.append(e)
            if len(chunk) >= chunk_size:
                flush(chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            flush(chunk)
            count += len(chunk)
        return count

    def get_entry(self, cid: str) -> LocalDatasetEntry:
        row = self._fetch("entry_by_cid", {"b_cid": cid}, what=f"read entry {cid}")
        if row is None:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")
        return _row_to_entry(row)

    def get_entry_by_name(self, name: str) -> LocalDatasetEntry:
        """The most recently written entry named ``name``.

        Better than atdata's ``LIMIT 1`` without ORDER BY, which returns an arbitrary
        row when several versions share a name.
        """
        row = self._fetch("entry_by_name", {"b_name": name}, what=f"look up dataset {name!r}")
        if row is None:
            raise NotFoundError(f"no dataset entry named {name!r} in {self.describe()}")
        return _row_to_entry(row)

    def resolve_name(self, name: str) -> LocalDatasetEntry:
        """The entry of ``name``'s latest label, else the latest entry so named: one query each."""
        row = self._fetch("entry_by_latest_label", {"b_name": name}, what=f"resolve dataset {name!r}")
        if row is None:
            row = self._fetch("entry_by_name", {"b_name": name}, what=f"look up dataset {name!r}")
        if row is None:
            raise NotFoundError(f"no dataset named {name!r} in {self.describe()}")
        return _row_to_entry(row)

    def list_entries_page(
        self, *, limit: int = 1000, after: str | None = None
    ) -> list[LocalDatasetEntry]:
        """Keyset page over the CID primary key: O(log n + limit), no OFFSET scans."""
        if after is None:
            rows = self._fetch("entries_first", {"b_limit": int(limit)}, what="list entries", mode="all")
        else:
            rows = self._fetch(
                "entries_after", {"b_limit": int(limit), "b_after": after}, what="list entries", mode="all"
            )
        return [_row_to_entry(r) for r in rows]

    def iter_entries(self, *, batch_size: int = 1000) -> Iterator[LocalDatasetEntry]:
        """Every entry in CID order, one short read per page (no long-lived cursor)."""
        after: str | None = None
        while True:
            page = self.list_entries_page(limit=batch_size, after=after)
            yield from page
            if len(page) < batch_size:
                return
            after = page[-1].cid

    def count_entries(self) -> int:
        return int(self._fetch("count_entries", None, what="count entries", mode="scalar"))

    def update_entry_metadata(self, cid: str, metadata: dict | None) -> None:
        params = {"b_cid": cid, "b_metadata": pack_metadata(metadata, what=f"entry {cid}")}

        def run() -> int:
            with self._write() as conn:
                return conn.execute(self._q["update_metadata"], params).rowcount

        if self._retrying(run, what=f"update metadata of {cid}") == 0:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")

    def delete_entry(self, cid: str) -> None:
        def run() -> None:
            with self._write() as conn:
                conn.execute(self._q["delete_labels_of"], {"b_cid": cid})
                conn.execute(self._q["delete_entry"], {"b_cid": cid})

        self._retrying(run, what=f"delete entry {cid}")

    # -- schemas --------------------------------------------------------------------
    def _put_simple(self, key: str, params: dict, what: str) -> None:
        def run() -> None:
            with self._write() as conn:
                conn.execute(self._q[key], params)

        self._retrying(run, what=what)

    def put_schema(self, name: str, version: str, schema_json: str) -> None:
        self._put_simple(
            "upsert_schema",
            {"name": name, "version": version, "schema_json": schema_json},
            f"write schema {name}@{version}",
        )

    def get_schema_json(self, name: str, version: str) -> str:
        text = self._fetch(
            "schema", {"b_name": name, "b_version": version},
            what=f"read schema {name}@{version}", mode="scalar",
        )
        if text is None:
            raise NotFoundError(f"Schema not found: {name}@{version} in {self.describe()}")
        return text

    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        for name, version, text in self._fetch("schemas", None, what="list schemas", mode="all"):
            yield name, version, text

    def schema_versions(self, name: str) -> list[str]:
        return list(
            self._fetch("schema_versions", {"b_name": name}, what=f"list versions of schema {name}", mode="scalars")
        )

    # -- lenses (atdata 0.4+ table; not part of the abstract contract) ---------------
    def put_lens(self, name: str, version: str, lens_json: str) -> None:
        self._put_simple(
            "upsert_lens",
            {"name": name, "version": version, "lens_json": lens_json},
            f"write lens {name}@{version}",
        )

    def get_lens_json(self, name: str, version: str) -> str:
        text = self._fetch(
            "lens", {"b_name": name, "b_version": version},
            what=f"read lens {name}@{version}", mode="scalar",
        )
        if text is None:
            raise NotFoundError(f"Lens not found: {name}@{version} in {self.describe()}")
        return text

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        for name, version, text in self._fetch("lenses", None, what="list lenses", mode="all"):
            yield name, version, text

    # -- labels ---------------------------------------------------------------------
    def put_label(self, label: LabelRecord) -> None:
        params = self._label_params(label)

        def run() -> None:
            with self._write() as conn:
                self._lock_names(conn, [label.name])
                conn.execute(self._q["upsert_label"], params)

        self._retrying(run, what=f"write label {label.name!r}")

    def get_label(self, name: str, version: str | None = None) -> LabelRecord:
        """Label ``(name, version)``; with ``version=None`` the most recently written one."""
        if version is None:
            row = self._fetch("latest_label", {"b_name": name}, what=f"read label {name!r}")
        else:
            row = self._fetch("label", {"b_name": name, "b_version": version}, what=f"read label {name!r}")
        if row is None:
            which = f"{name!r}" if version is None else f"{name!r} version {version!r}"
            raise NotFoundError(f"no label {which} in {self.describe()}")
        return _row_to_label(row)

    def iter_labels(self, *, batch_size: int = 1000) -> Iterator[LabelRecord]:
        after: tuple[str, str] | None = None
        while True:
            if after is None:
                rows = self._fetch("labels_first", {"b_limit": batch_size}, what="list labels", mode="all")
            else:
                rows = self._fetch(
                    "labels_after",
                    {"b_limit": batch_size, "b_after_name": after[0], "b_after_version": after[1]},
                    what="list labels",
                    mode="all",
                )
            for r in rows:
                yield _row_to_label(r)
            if len(rows) < batch_size:
                return
            after = (rows[-1][0], rows[-1][2])

    # -- lifecycle ------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for advanced use and tests)."""
        return self._engine

    @property
    def url(self) -> URL:
        return self._url

    @property
    def path(self) -> Path | None:
        """The SQLite database file (``None`` for PostgreSQL or in-memory)."""
        if self.kind != "sqlite" or self._url.database in (None, "", ":memory:"):
            return None
        return Path(self._url.database)

    def _dispose(self) -> None:
        self._engine.dispose()
        if self._read_engine is not self._engine:
            self._read_engine.dispose()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dispose()

    def describe(self) -> str:
        # the password masked also where it is not the password field (a database named like it)
        return redact(self._url.render_as_string(hide_password=True), *self._secrets())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


def _copy_kwargs(kwargs: dict | None) -> dict:
    out = dict(kwargs or {})
    if "connect_args" in out:
        out["connect_args"] = dict(out["connect_args"])
    return out


def _install_idle_ping(engine: Engine, idle_after: float) -> None:
    """Pre-ping pooled connections, but only those idle for more than ``idle_after`` s.

    SQLAlchemy's ``pool_pre_ping=True`` pings on *every* checkout, which doubled the
    latency of a lookup here (~0.5 ms per round trip through the driver). Stale
    connections come from idle periods (server restarts, firewalls, idle timeouts), so
    pinging those is enough; a connection that dies while in active use fails its
    statement, is invalidated by SQLAlchemy, and the provider retries the operation.
    Pass ``engine_kwargs={"pool_pre_ping": True}`` for SQLAlchemy's behaviour.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, record):  # pragma: no cover - trivial
        record.info["atdata_last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        last = record.info.get("atdata_last_used")
        if last is None or time.monotonic() - last <= idle_after:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            if not getattr(dbapi_conn, "autocommit", True):
                dbapi_conn.rollback()
        except Exception as e:
            # The pool discards this connection and checks out (or opens) another one.
            raise sa_exc.DisconnectionError(str(e)) from e


def _pg_connect_problem(message: str) -> str | None:
    low = message.lower()
    if "password authentication failed" in low or (
        "role" in low and "does not exist" in low
    ) or "no pg_hba.conf entry" in low or "authentication" in low:
        return "auth"
    if "database" in low and "does not exist" in low:
        return "database"
    if "invalid dsn" in low or "invalid connection option" in low or "invalid uri" in low or "could not parse" in low or "invalid integer value" in low or "invalid port" in low:
        return "dsn"
    if (
        "connection refused" in low
        or "could not connect" in low
        or "connection failed" in low
        or "timeout expired" in low
        or "server closed the connection" in low
        or "could not translate host name" in low
        or "no route to host" in low
        or "network is unreachable" in low
        or "terminating connection" in low
        or "consuming input failed" in low
        or "the database system is starting up" in low
        or "the database system is shutting down" in low
    ):
        return "unreachable"
    return None


class SqliteProvider(SqlProvider):
    """atdata's default index: a SQLite file (``~/.atdata/index.db`` unless ``path``).

    WAL mode, ``busy_timeout`` and ``BEGIN IMMEDIATE`` write transactions with retry and
    backoff: many processes can write at once without "database is locked" errors.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 12,
        backoff: float = 0.02,
        engine_kwargs: dict | None = None,
    ) -> None:
        if path is None:
            path = DEFAULT_SQLITE_PATH
        if str(path) == ":memory:":
            url = URL.create("sqlite", database=":memory:")
        else:
            p = Path(path).expanduser()
            if p.is_dir():
                raise ProviderError(
                    f"SQLite index path {p} is a directory: pass a file path such as {p / 'index.db'}"
                )
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ProviderError(
                    f"cannot create the directory {p.parent} for the SQLite index {p}: {e}. "
                    "Pick a writable location."
                ) from e
            url = URL.create("sqlite", database=str(p.absolute()))
        self._busy_timeout = float(timeout)
        super().__init__(url, retries=retries, backoff=backoff, engine_kwargs=engine_kwargs)

    def describe(self) -> str:
        return f"sqlite:///{self._url.database}"


def normalize_postgres_dsn(dsn: str | URL) -> URL:
    """A SQLAlchemy URL using psycopg 3 from ``postgresql://``, ``postgres://`` or
    ``postgresql+psycopg://`` DSNs or a libpq key/value DSN (``host=... dbname=...``);
    :class:`ProviderError` (secrets masked, no raw cause) if malformed."""
    if isinstance(dsn, URL):
        url = dsn
    else:
        text = str(dsn).strip()
        shown = redact(text)
        failure: Exception | None = None
        try:
            if is_keyword_dsn(text):
                url = _url_from_keyword_dsn(text)
            elif not re.match(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", text, re.I):
                raise ProviderError(
                    f"not a PostgreSQL DSN: {shown!r}. Expected a DSN like "
                    "postgresql://user:password@host:5432/dbname (postgres:// and "
                    "postgresql+psycopg:// work too) or a libpq key/value DSN (host=h port=5432 dbname=d user=u)."
                )
            else:
                url = make_url(text)
                _ = url.port  # SQLAlchemy parses the port lazily
        except (sa_exc.ArgumentError, ValueError) as e:
            failure = e
        if failure is not None:  # raised here: a parser message may quote the DSN
            error = ProviderError(
                f"malformed PostgreSQL DSN {shown!r}: {redact(failure, *secrets_in(text))}. Expected a DSN "
                "like postgresql://user:password@host:5432/dbname or a libpq key/value DSN "
                "(host=h port=5432 dbname=d user=u)."
            )
            if leaks(failure, *secrets_in(text)):
                raise error
            raise error from failure
    driver = url.drivername.lower()
    if driver in ("postgres", "postgresql", "postgresql+psycopg3"):
        url = url.set(drivername="postgresql+psycopg")
    elif driver.startswith("postgres+"):
        url = url.set(drivername="postgresql+" + driver.split("+", 1)[1])
    return url


def is_keyword_dsn(text: str) -> bool:
    """Whether ``text`` is a libpq key/value DSN (``host=h dbname=d``), not a URL."""
    return "://" not in text and re.match(r"^\s*[A-Za-z_]+\s*=", text) is not None


def _url_from_keyword_dsn(text: str) -> URL:
    """A SQLAlchemy URL from a libpq key/value DSN, parsed by libpq's own rules (psycopg)."""
    from psycopg.conninfo import conninfo_to_dict  # optional dependency: only for key/value DSNs

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(text).items()}
    except Exception as e:  # psycopg.ProgrammingError; its message may quote the DSN
        detail = " ".join(redact(e, *secrets_in(text)).split())
        raise ValueError(f"libpq could not parse it ({type(e).__name__}: {detail})") from None
    port = params.pop("port", None)
    return URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=params.pop("host", None) or params.pop("hostaddr", None),
        port=int(port) if port else None,
        database=params.pop("dbname", None),
        query=params,
    )


class PostgresProvider(SqlProvider):
    """The index in PostgreSQL (psycopg 3), with a pooled engine and retries.

    ``dsn`` may be ``postgresql://``, ``postgres://`` or ``postgresql+psycopg://``.
    Connection problems (bad DSN, server down, unknown user/database) raise
    :class:`ProviderError` with the DSN shown password-masked and a hint how to fix it.
    """

    kind = "postgres"

    def __init__(
        self,
        dsn: str | URL,
        *,
        retries: int = 5,
        backoff: float = 0.05,
        connect_timeout: float = 10,
        pool_size: int = 5,
        engine_kwargs: dict | None = None,
    ) -> None:
        if not dsn:
            raise ConfigurationError(
                "the postgres provider needs a DSN such as postgresql://user:password@host:5432/dbname"
            )
        url = normalize_postgres_dsn(dsn)
        kwargs = dict(engine_kwargs or {})
        kwargs.setdefault("pool_size", pool_size)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("connect_timeout", max(1, int(connect_timeout)))
        super().__init__(url, retries=retries, backoff=backoff, engine_kwargs=kwargs)
