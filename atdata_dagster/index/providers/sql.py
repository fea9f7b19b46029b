"""SQL index providers: SQLite (the embedded default) and PostgreSQL over SQLAlchemy Core.

The tables, columns and blob encodings are exactly atdata's (compat reference 5.1 and
5.3), so an index written here opens in atdata and the other way round. On top of that
layout this module adds what atdata lacks: ordered "latest" lookups, retries on
SQLite lock contention and PostgreSQL disconnects, keyset pagination, safe concurrent
table creation, and errors that say which database failed and how to fix it.

:class:`SqlProvider` holds the queries and the transaction and retry logic both
databases share; :class:`SqliteProvider` and :class:`PostgresProvider` hold what
differs (engines, write transactions and locks, DDL, "now" and "newest first",
upserts, which errors are transient and what to tell the user).
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Unpack

from sqlalchemy import (
    Column,
    ColumnElement,
    Executable,
    LargeBinary,
    MetaData,
    Row,
    Table,
    Text,
    bindparam,
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
from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from ...errors import ConfigurationError, NotFoundError, ProviderError
from ...redact import is_secret_key, leaks, redact, secrets_in
from ..entry import LabelRecord, LocalDatasetEntry
from .base import (
    IndexProvider,
    ProviderKind,
    carry_published,
    decode_entry_columns,
    decode_entry_columns_lenient,
    decode_metadata,
    merge_metadata,
    pack_metadata,
    pack_urls,
)

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


def _row_to_entry(row: Any, *, lenient: bool = False) -> LocalDatasetEntry:
    """The entry of one row. Strict by default; ``lenient`` (listing) turns an undecodable
    row into an entry that raises its :class:`CorruptEntryError` when used."""
    cid, name, schema_ref, urls, metadata, legacy_uuid, created_at = row
    where = f"index entry {name!r} ({cid})"
    corrupt = None
    if lenient:
        data_urls, meta, corrupt = decode_entry_columns_lenient(urls, metadata, where, name=name, cid=cid)
    else:
        data_urls, meta = decode_entry_columns(urls, metadata, where)
    return LocalDatasetEntry(
        name=name,
        schema_ref=schema_ref,
        data_urls=data_urls,
        metadata=meta,
        _cid=cid,
        _legacy_uuid=legacy_uuid,
        created_at=iso_timestamp(created_at),
        _corrupt=corrupt,
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


# -- prebuilt statements --------------------------------------------------------------
@dataclass(frozen=True)
class _Statements:
    """Every statement a provider runs, built once per provider.

    Constructing a select() per call cost more than running it on SQLite (~300 us of a
    ~400 us lookup). Bind parameter names carry a ``b_`` prefix because names equal to
    column names are reserved in INSERT/UPDATE statements.
    """

    upsert_entry: Executable
    upsert_label: Executable
    upsert_schema: Executable
    upsert_lens: Executable
    entry_by_cid: Executable
    entry_by_name: Executable
    entry_by_latest_label: Executable
    entries_first: Executable
    entries_after: Executable
    count_entries: Executable
    entry_metadata_for_update: Executable
    update_metadata: Executable
    delete_labels_of: Executable
    delete_entry: Executable
    schema: Executable
    schemas: Executable
    schema_versions: Executable
    lens: Executable
    lenses: Executable
    label: Executable
    latest_label: Executable
    labels_first: Executable
    labels_after: Executable

    @classmethod
    def build(cls, dialect: "SqlProvider") -> "_Statements":
        """The statements with ``dialect``'s upserts and "newest first" ordering."""
        e, lb, sc, ln = entries_t.c, labels_t.c, schemas_t.c, lenses_t.c
        newest_first = dialect._newest_first
        return cls(
            upsert_entry=dialect._upsert(entries_t, ("cid",)),
            upsert_label=dialect._upsert(labels_t, ("name", "version")),
            upsert_schema=dialect._upsert(schemas_t, ("name", "version")),
            upsert_lens=dialect._upsert(lenses_t, ("name", "version")),
            entry_by_cid=select(*_ENTRY_COLS).where(e.cid == bindparam("b_cid")),
            entry_by_name=select(*_ENTRY_COLS)
            .where(e.name == bindparam("b_name"))
            .order_by(*newest_first(entries_t))
            .limit(1),
            # a scalar subquery, not a join: both sides stay primary-key lookups for any planner
            entry_by_latest_label=select(*_ENTRY_COLS).where(
                e.cid
                == select(lb.cid)
                .where(lb.name == bindparam("b_name"))
                .order_by(*newest_first(labels_t))
                .limit(1)
                .scalar_subquery()
            ),
            entries_first=select(*_ENTRY_COLS).order_by(e.cid).limit(bindparam("b_limit")),
            entries_after=select(*_ENTRY_COLS)
            .where(e.cid > bindparam("b_after"))
            .order_by(e.cid)
            .limit(bindparam("b_limit")),
            count_entries=select(func.count()).select_from(entries_t),
            # FOR UPDATE on PostgreSQL; SQLite has no row locks (its BEGIN IMMEDIATE
            # already holds the database write lock) and SQLAlchemy leaves the clause out.
            entry_metadata_for_update=select(e.name, e.metadata)
            .where(e.cid == bindparam("b_cid"))
            .with_for_update(),
            update_metadata=update(entries_t)
            .where(e.cid == bindparam("b_cid"))
            .values(metadata=bindparam("b_metadata")),
            delete_labels_of=delete(labels_t).where(lb.cid == bindparam("b_cid")),
            delete_entry=delete(entries_t).where(e.cid == bindparam("b_cid")),
            schema=select(sc.schema_json).where(
                sc.name == bindparam("b_name"), sc.version == bindparam("b_version")
            ),
            schemas=select(sc.name, sc.version, sc.schema_json).order_by(sc.name, sc.version),
            schema_versions=select(sc.version).where(sc.name == bindparam("b_name")).order_by(sc.version),
            lens=select(ln.lens_json).where(ln.name == bindparam("b_name"), ln.version == bindparam("b_version")),
            lenses=select(ln.name, ln.version, ln.lens_json).order_by(ln.name, ln.version),
            label=select(*_LABEL_COLS).where(lb.name == bindparam("b_name"), lb.version == bindparam("b_version")),
            latest_label=select(*_LABEL_COLS)
            .where(lb.name == bindparam("b_name"))
            .order_by(*newest_first(labels_t))
            .limit(1),
            labels_first=select(*_LABEL_COLS).order_by(lb.name, lb.version).limit(bindparam("b_limit")),
            labels_after=select(*_LABEL_COLS)
            .where(
                tuple_(lb.name, lb.version)
                > tuple_(bindparam("b_after_name"), bindparam("b_after_version"))
            )
            .order_by(lb.name, lb.version)
            .limit(bindparam("b_limit")),
        )


# -- the shared provider ----------------------------------------------------------------
class SqlProvider(IndexProvider):
    """Index provider over a SQLAlchemy engine: what SQLite and PostgreSQL share.

    Construct :class:`SqliteProvider` or :class:`PostgresProvider` (or use
    ``create_provider`` / ``provider_from_url``); this class is abstract.

    Ordering: ``get_entry_by_name`` and ``get_label(name)`` return the most recently
    written row (``created_at DESC``, then ``rowid DESC`` on SQLite). atdata itself
    returns an arbitrary row (``LIMIT 1`` without ORDER BY) for names; ours is
    deterministic. Every write sets ``created_at`` explicitly to the current time
    (SQLite: millisecond text ``YYYY-MM-DD HH:MM:SS.SSS`` which sorts correctly next to
    atdata's second-resolution ``YYYY-MM-DD HH:MM:SS``; PostgreSQL: ``clock_timestamp()``,
    also on conflict, so a re-written entry or label becomes the newest as with SQLite's
    ``INSERT OR REPLACE``).
    """

    #: the DDL creating atdata's tables and indexes (every statement IF NOT EXISTS)
    _ddl: ClassVar[tuple[str, ...]]

    def __init__(self, url: URL, *, retries: int, backoff: float, engine_kwargs: dict | None) -> None:
        self._url = url
        self._retries = max(0, int(retries))
        self._backoff = float(backoff)
        self._closed = False
        self._pid = os.getpid()
        self._engine, self._read_engine = self._make_engines(engine_kwargs)
        self._q = _Statements.build(self)
        try:
            self._retrying(self._ensure_tables, what="create the index tables")
        except BaseException:
            self._dispose()
            raise

    # -- what each dialect provides -------------------------------------------------
    @abstractmethod
    def _make_engines(self, engine_kwargs: dict | None) -> tuple[Engine, Engine]:
        """The (write, read) engines; they may be the same engine."""

    @abstractmethod
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction, committed when the block ends without an error."""

    @abstractmethod
    def _is_transient(self, e: sa_exc.DBAPIError) -> bool:
        """Whether retrying the operation can succeed (lock contention, lost connection)."""

    @abstractmethod
    def _failure_message(self, detail: str, what: str) -> str:
        """The message of a failure to do ``what`` (``detail``: the driver's message, masked)."""

    @abstractmethod
    def _existing_objects(self, conn: Connection) -> set[str]:
        """Names of the tables and indexes that exist."""

    @abstractmethod
    def _newest_first(self, table: Table) -> list[ColumnElement[Any]]:
        """ORDER BY clauses putting ``table``'s most recently written row first."""

    @abstractmethod
    def _upsert(self, table: Table, keys: tuple[str, ...]) -> Executable:
        """Insert a row, replacing the one with the same ``keys``; ``created_at`` set to now."""

    def _prepare_storage(self, conn: Connection) -> None:
        """Per-database settings made before the tables are checked (none by default)."""

    def _lock_for_ddl(self, conn: Connection) -> None:
        """Serialize concurrent table creation within ``conn``'s transaction (no-op by default)."""

    def _lock_names(self, conn: Connection, names: Iterable[str]) -> None:
        """Hold the write locks of these dataset / label names until the transaction ends.

        No-op by default: a database whose write transactions are serialized anyway needs none.
        """

    # -- transactions and retries ---------------------------------------------------
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

    def _reading(self, run: Callable[[Connection], T], *, what: str) -> T:
        """``run`` on a read connection, retried on transient errors."""

        def attempt() -> T:
            with self._read() as conn:
                return run(conn)

        return self._retrying(attempt, what=what)

    def _writing(self, run: Callable[[Connection], T], *, what: str) -> T:
        """``run`` in one write transaction, the whole transaction retried on transient errors."""

        def attempt() -> T:
            with self._write() as conn:
                return run(conn)

        return self._retrying(attempt, what=what)

    def _first(self, stmt: Executable, params: Mapping[str, Any], *, what: str) -> Row[Unpack[tuple[Any, ...]]] | None:
        return self._reading(lambda conn: conn.execute(stmt, params).first(), what=what)

    def _scalar(self, stmt: Executable, params: Mapping[str, Any], *, what: str) -> Any:
        return self._reading(lambda conn: conn.execute(stmt, params).scalar(), what=what)

    def _all(self, stmt: Executable, params: Mapping[str, Any], *, what: str) -> Sequence[Row[Unpack[tuple[Any, ...]]]]:
        return self._reading(lambda conn: conn.execute(stmt, params).all(), what=what)

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

    def _translate(self, e: Exception, what: str) -> ProviderError:
        error = self._translate_unmasked(e, what)
        masked = redact(str(error), *self._secrets())
        return error if masked == str(error) else ProviderError(masked)

    def _translate_unmasked(self, e: Exception, what: str) -> ProviderError:
        orig = getattr(e, "orig", None) or e
        detail = redact(" ".join(str(orig).split()), *self._secrets())
        return ProviderError(self._failure_message(detail, what))

    # -- schema creation ----------------------------------------------------------
    def _ensure_tables(self) -> None:
        with self._read() as conn:
            self._prepare_storage(conn)
            if set(_TABLES + _INDEXES) <= self._existing_objects(conn):
                return  # nothing to create: don't take any lock
        with self._write() as conn:
            self._lock_for_ddl(conn)
            for stmt in self._ddl:
                conn.exec_driver_sql(stmt)

    # -- statement parameters ---------------------------------------------------------
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

        def run(conn: Connection) -> None:
            self._lock_names(conn, names)
            row = conn.execute(self._q.entry_metadata_for_update, {"b_cid": entry.cid}).first()
            kept = carry_published(row[1], entry.metadata, f"index entry {entry.name!r} ({entry.cid})") if row else None
            written = params if kept is None else {**params, "metadata": pack_metadata(kept, what=f"dataset {entry.name!r}")}
            conn.execute(self._q.upsert_entry, written)
            if label_params is not None:
                conn.execute(self._q.upsert_label, label_params)

        self._writing(run, what=f"write entry {entry.name!r} ({entry.cid})")

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

            def run(conn: Connection) -> None:
                conn.execute(self._q.upsert_entry, params)
                if with_labels:
                    conn.execute(self._q.upsert_label, labels)

            self._writing(run, what=f"bulk-write {len(items)} entries")

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
        row = self._first(self._q.entry_by_cid, {"b_cid": cid}, what=f"read entry {cid}")
        if row is None:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")
        return _row_to_entry(row)

    def get_entry_by_name(self, name: str) -> LocalDatasetEntry:
        """The most recently written entry named ``name``.

        Better than atdata's ``LIMIT 1`` without ORDER BY, which returns an arbitrary
        row when several versions share a name.
        """
        row = self._first(self._q.entry_by_name, {"b_name": name}, what=f"look up dataset {name!r}")
        if row is None:
            raise NotFoundError(f"no dataset entry named {name!r} in {self.describe()}")
        return _row_to_entry(row)

    def resolve_name(self, name: str) -> LocalDatasetEntry:
        """The entry of ``name``'s latest label, else the latest entry so named: one query each."""
        row = self._first(self._q.entry_by_latest_label, {"b_name": name}, what=f"resolve dataset {name!r}")
        if row is None:
            row = self._first(self._q.entry_by_name, {"b_name": name}, what=f"look up dataset {name!r}")
        if row is None:
            raise NotFoundError(f"no dataset named {name!r} in {self.describe()}")
        return _row_to_entry(row)

    def list_entries_page(
        self, *, limit: int = 1000, after: str | None = None
    ) -> list[LocalDatasetEntry]:
        """Keyset page over the CID primary key: O(log n + limit), no OFFSET scans."""
        if after is None:
            rows = self._all(self._q.entries_first, {"b_limit": int(limit)}, what="list entries")
        else:
            rows = self._all(self._q.entries_after, {"b_limit": int(limit), "b_after": after}, what="list entries")
        return [_row_to_entry(r, lenient=True) for r in rows]

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
        """How many entries the index holds."""
        return int(self._scalar(self._q.count_entries, {}, what="count entries"))

    def update_entry_metadata(self, cid: str, metadata: dict | None) -> None:
        params = {"b_cid": cid, "b_metadata": pack_metadata(metadata, what=f"entry {cid}")}
        updated = self._writing(lambda conn: conn.execute(self._q.update_metadata, params).rowcount,
                                what=f"update metadata of {cid}")
        if updated == 0:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")

    def index_identity(self, create: str | None = None, *, what: str = "read the index identity") -> str | None:
        """Kept in the table ``atdata_dagster_meta`` (row ``key = 'index_id'``); read and
        created in one retried write transaction (a lost connection is retried like any write)."""
        table = self.IDENTITY_TABLE
        select = sql_text(f"SELECT value FROM {table} WHERE key = 'index_id'")

        def read(conn: Connection) -> str | None:
            return conn.execute(select).scalar() if self._has_table(conn, table) else None

        found = self._reading(read, what=what)
        if found is not None or create is None:
            return found

        def run(conn: Connection) -> str | None:
            self._lock_identity(conn)
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(sql_text(f"INSERT INTO {table} (key, value) VALUES ('index_id', :v) "
                              "ON CONFLICT (key) DO NOTHING"), {"v": create})
            return conn.execute(select).scalar()

        return self._writing(run, what=what)

    @abstractmethod
    def _has_table(self, conn: Connection, table: str) -> bool:
        """Whether ``table`` exists (in the provider's schema)."""

    def _lock_identity(self, conn: Connection) -> None:
        """Serialize concurrent creation of the identity table (SQLite's write lock already does)."""

    def merge_entry_metadata(self, cid: str, patch: Mapping[str, Any]) -> dict:
        """Read, merge and write the metadata in one write transaction (SQLite: BEGIN
        IMMEDIATE, so no other writer runs in between; PostgreSQL: the row is read FOR
        UPDATE, so a concurrent merge waits for this one to commit and then reads its result)."""
        patch = dict(patch)

        def run(conn: Connection) -> dict | None:
            row = conn.execute(self._q.entry_metadata_for_update, {"b_cid": cid}).first()
            if row is None:
                return None
            name, blob = row
            current = decode_metadata(blob, f"index entry {name!r} ({cid})")
            merged = merge_metadata(current, patch)
            if merged != current:
                packed = pack_metadata(merged, what=f"dataset {name!r} ({cid})")
                conn.execute(self._q.update_metadata, {"b_cid": cid, "b_metadata": packed})
            return merged

        merged = self._writing(run, what=f"merge metadata into entry {cid}")
        if merged is None:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")
        return merged

    def delete_entry(self, cid: str) -> None:
        def run(conn: Connection) -> None:
            conn.execute(self._q.delete_labels_of, {"b_cid": cid})
            conn.execute(self._q.delete_entry, {"b_cid": cid})

        self._writing(run, what=f"delete entry {cid}")

    # -- schemas --------------------------------------------------------------------
    def _put_simple(self, stmt: Executable, params: dict, what: str) -> None:
        self._writing(lambda conn: conn.execute(stmt, params), what=what)

    def put_schema(self, name: str, version: str, schema_json: str) -> None:
        self._put_simple(
            self._q.upsert_schema,
            {"name": name, "version": version, "schema_json": schema_json},
            f"write schema {name}@{version}",
        )

    def get_schema_json(self, name: str, version: str) -> str:
        text = self._scalar(
            self._q.schema, {"b_name": name, "b_version": version}, what=f"read schema {name}@{version}"
        )
        if text is None:
            raise NotFoundError(f"Schema not found: {name}@{version} in {self.describe()}")
        return text

    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        for name, version, text in self._all(self._q.schemas, {}, what="list schemas"):
            yield name, version, text

    def schema_versions(self, name: str) -> list[str]:
        rows = self._all(self._q.schema_versions, {"b_name": name}, what=f"list versions of schema {name}")
        return [r[0] for r in rows]

    # -- lenses (atdata 0.4+ table; not part of the abstract contract) ---------------
    def put_lens(self, name: str, version: str, lens_json: str) -> None:
        """Upsert a lens record (JSON text) by (name, version) in atdata's ``lenses`` table."""
        self._put_simple(
            self._q.upsert_lens,
            {"name": name, "version": version, "lens_json": lens_json},
            f"write lens {name}@{version}",
        )

    def get_lens_json(self, name: str, version: str) -> str:
        """The stored lens JSON text; :class:`NotFoundError` if absent."""
        text = self._scalar(self._q.lens, {"b_name": name, "b_version": version}, what=f"read lens {name}@{version}")
        if text is None:
            raise NotFoundError(f"Lens not found: {name}@{version} in {self.describe()}")
        return text

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        """Every lens as (name, version, lens_json)."""
        for name, version, text in self._all(self._q.lenses, {}, what="list lenses"):
            yield name, version, text

    # -- labels ---------------------------------------------------------------------
    def put_label(self, label: LabelRecord) -> None:
        params = self._label_params(label)

        def run(conn: Connection) -> None:
            self._lock_names(conn, [label.name])
            conn.execute(self._q.upsert_label, params)

        self._writing(run, what=f"write label {label.name!r}")

    def get_label(self, name: str, version: str | None = None) -> LabelRecord:
        """Label ``(name, version)``; with ``version=None`` the most recently written one."""
        if version is None:
            row = self._first(self._q.latest_label, {"b_name": name}, what=f"read label {name!r}")
        else:
            row = self._first(self._q.label, {"b_name": name, "b_version": version}, what=f"read label {name!r}")
        if row is None:
            which = f"{name!r}" if version is None else f"{name!r} version {version!r}"
            raise NotFoundError(f"no label {which} in {self.describe()}")
        return _row_to_label(row)

    def iter_labels(self, *, batch_size: int = 1000) -> Iterator[LabelRecord]:
        after: tuple[str, str] | None = None
        while True:
            if after is None:
                rows = self._all(self._q.labels_first, {"b_limit": batch_size}, what="list labels")
            else:
                rows = self._all(
                    self._q.labels_after,
                    {"b_limit": batch_size, "b_after_name": after[0], "b_after_version": after[1]},
                    what="list labels",
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
        """The SQLAlchemy URL of the database (password included: don't log it)."""
        return self._url

    @property
    def path(self) -> Path | None:
        """The SQLite database file (``None`` for PostgreSQL or in-memory)."""
        return None

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





# Millisecond UTC text that sorts after atdata's second-resolution datetime('now') values.
_SQLITE_NOW = func.strftime("%Y-%m-%d %H:%M:%f", "now")


#: advisory lock key serializing concurrent creation of the identity table ("atme")
_PG_IDENTITY_LOCK = 0x61746D65


# -- SQLite -------------------------------------------------------------------------------
class SqliteProvider(SqlProvider):
    """atdata's default index: a SQLite file (``~/.atdata/index.db`` unless ``path``).

    WAL mode, ``busy_timeout`` and ``BEGIN IMMEDIATE`` write transactions with retry and
    backoff: many processes can write at once without "database is locked" errors.
    """

    kind = ProviderKind.SQLITE
    _ddl = _SQLITE_DDL

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

    def _in_memory(self) -> bool:
        return self._url.database in (None, "", ":memory:")

    def _make_engines(self, engine_kwargs: dict | None) -> tuple[Engine, Engine]:
        """One engine for reads and writes: in WAL mode readers never block the writer."""
        kwargs = _copy_kwargs(engine_kwargs)
        connect_args = kwargs.pop("connect_args", {})
        # busy_timeout: let SQLite itself wait for the write lock first; our retry
        # loop with backoff covers what is left (SQLITE_BUSY returned immediately).
        connect_args.setdefault("timeout", self._busy_timeout)
        connect_args.setdefault("check_same_thread", False)
        if self._in_memory():
            kwargs.setdefault("poolclass", StaticPool)
        # We issue BEGIN IMMEDIATE / COMMIT ourselves: the sqlite3 module must not.
        kwargs.setdefault("isolation_level", "AUTOCOMMIT")
        engine = create_engine(self._url, connect_args=connect_args, **kwargs)
        busy_timeout_ms = int(connect_args["timeout"] * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            finally:
                cur.close()

        return engine, engine

    def _has_table(self, conn: Connection, table: str) -> bool:
        return conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                    (table,)).first() is not None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """BEGIN IMMEDIATE: the write lock is taken first, so no lock upgrade deadlocks."""
        self._check_open()
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
                    except sa_exc.DBAPIError:
                        # The error that ended the transaction is the one to report; a
                        # connection that cannot even roll back is not reused.
                        conn.invalidate()
                raise

    def _is_transient(self, e: sa_exc.DBAPIError) -> bool:
        orig = e.orig
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return True
        msg = str(orig).lower()
        return "locked" in msg or "busy" in msg

    def _failure_message(self, detail: str, what: str) -> str:
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
        return msg

    def _prepare_storage(self, conn: Connection) -> None:
        # WAL (as atdata): readers never block the writer and vice versa.
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        if str(mode).lower() != "wal" and not self._in_memory():
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    def _existing_objects(self, conn: Connection) -> set[str]:
        rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
        return {r[0] for r in rows}

    def _newest_first(self, table: Table) -> list[ColumnElement[Any]]:
        # created_at ties (atdata writes whole seconds) go to the row inserted last
        return [table.c.created_at.desc(), literal_column(f"{table.name}.rowid").desc()]

    def _upsert(self, table: Table, keys: tuple[str, ...]) -> Executable:
        """INSERT OR REPLACE, as atdata writes."""
        return insert(table).prefix_with("OR REPLACE").values(created_at=_SQLITE_NOW)

    @property
    def path(self) -> Path | None:
        """The SQLite database file (``None`` in memory)."""
        return None if self._in_memory() else Path(str(self._url.database))

    def describe(self) -> str:
        return f"sqlite:///{self._url.database}"



# -- PostgreSQL ---------------------------------------------------------------------------
class _PgProblem(Enum):
    """What a PostgreSQL connection failure means for the user."""

    UNREACHABLE = "unreachable"
    AUTH = "auth"
    DATABASE = "database"
    DSN = "dsn"


_UNREACHABLE_MARKERS = (
    "connection refused",
    "could not connect",
    "connection failed",
    "timeout expired",
    "server closed the connection",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "terminating connection",
    "consuming input failed",
    "the database system is starting up",
    "the database system is shutting down",
)
_DSN_MARKERS = (
    "invalid dsn", "invalid connection option", "invalid uri", "could not parse",
    "invalid integer value", "invalid port",
)

# serialization failure, deadlock, admin shutdown, cannot connect now, connection exceptions
_PG_TRANSIENT_SQLSTATES = frozenset({
    "40001", "40P01", "57P01", "57P02", "57P03",
    "08000", "08003", "08006", "08001", "08004",
})


def _pg_connect_problem(message: str) -> _PgProblem | None:
    low = message.lower()
    if "password authentication failed" in low or (
        "role" in low and "does not exist" in low
    ) or "no pg_hba.conf entry" in low or "authentication" in low:
        return _PgProblem.AUTH
    if "database" in low and "does not exist" in low:
        return _PgProblem.DATABASE
    if any(m in low for m in _DSN_MARKERS):
        return _PgProblem.DSN
    if any(m in low for m in _UNREACHABLE_MARKERS):
        return _PgProblem.UNREACHABLE
    return None


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
    from psycopg.conninfo import conninfo_to_dict  # lazy: psycopg is needed only to parse key/value DSNs

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(text).items()}
    except Exception as e:  # noqa: BLE001 - psycopg's parse errors vary by version; re-raised redacted as ValueError
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

    kind = ProviderKind.POSTGRES
    _ddl = _PG_DDL

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
        if url.get_backend_name() != "postgresql":
            raise ConfigurationError(
                f"unsupported SQL backend {url.get_backend_name()!r} in "
                f"{redact(url.render_as_string(hide_password=True), *secrets_in(str(dsn)))}: use "
                "postgresql://user:password@host:5432/dbname (or SqliteProvider for sqlite:///path)"
            )
        kwargs = dict(engine_kwargs or {})
        kwargs.setdefault("pool_size", pool_size)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("connect_timeout", max(1, int(connect_timeout)))
        super().__init__(url, retries=retries, backoff=backoff, engine_kwargs=kwargs)

    def _make_engines(self, engine_kwargs: dict | None) -> tuple[Engine, Engine]:
        write = self._make_engine(_copy_kwargs(engine_kwargs))
        # Reads go through a second pool whose connections stay in autocommit:
        # no BEGIN/ROLLBACK round trips and no per-checkout isolation toggling
        # (toggling through execution_options doubled the lookup latency).
        read_kwargs = _copy_kwargs(engine_kwargs)
        read_kwargs["isolation_level"] = "AUTOCOMMIT"
        return write, self._make_engine(read_kwargs)

    def _make_engine(self, kwargs: dict) -> Engine:
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
        self._check_open()
        with self._engine.begin() as conn:
            yield conn

    def _has_table(self, conn: Connection, table: str) -> bool:
        return conn.exec_driver_sql("SELECT to_regclass(%(t)s)", {"t": table}).scalar() is not None

    def _lock_identity(self, conn: Connection) -> None:
        # CREATE TABLE IF NOT EXISTS races on PostgreSQL's catalog: one creator at a time
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": _PG_IDENTITY_LOCK})

    def _is_transient(self, e: sa_exc.DBAPIError) -> bool:
        if e.connection_invalidated:
            return True
        sqlstate = getattr(e.orig, "sqlstate", None)
        if sqlstate is not None:
            return sqlstate in _PG_TRANSIENT_SQLSTATES
        if isinstance(e, sa_exc.OperationalError):
            return _pg_connect_problem(str(e.orig)) is _PgProblem.UNREACHABLE
        return False

    def _failure_message(self, detail: str, what: str) -> str:
        problem = _pg_connect_problem(detail)
        hint = ""
        if problem is _PgProblem.UNREACHABLE:
            hint = (
                f"Is PostgreSQL running and listening on {self._url.host or 'localhost'}:"
                f"{self._url.port or 5432}? Start the server or fix host/port in the DSN."
            )
        elif problem is _PgProblem.AUTH:
            hint = (
                f"The server rejected user {self._url.username!r}: check the user name and "
                "password in the DSN (and the server's pg_hba.conf)."
            )
        elif problem is _PgProblem.DATABASE:
            hint = (
                f"Database {self._url.database!r} does not exist: create it first "
                f"(createdb {self._url.database} / CREATE DATABASE ...) or put an existing "
                "database in the DSN."
            )
        elif problem is _PgProblem.DSN:
            hint = "Expected a DSN like postgresql://user:password@host:5432/dbname."
        return f"PostgreSQL index at {self.describe()} failed to {what}: {detail}. {hint}".strip()

    def _existing_objects(self, conn: Connection) -> set[str]:
        names = _TABLES + _INDEXES
        row = conn.exec_driver_sql(
            "SELECT " + ", ".join(f"to_regclass('{n}') IS NOT NULL" for n in names)
        ).one()
        return {n for n, present in zip(names, row) if present}

    def _lock_for_ddl(self, conn: Connection) -> None:
        # Two processes racing CREATE TABLE IF NOT EXISTS can still collide on
        # the catalog's unique index; the advisory lock serializes them.
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_DDL_LOCK_KEY})")

    def _lock_names(self, conn: Connection, names: Iterable[str]) -> None:
        """Hold the per-name write locks (sorted: no deadlock) until this transaction ends."""
        for name in sorted(names):
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(%(ns)s, hashtext(%(name)s))", {"ns": _PG_NAME_LOCK_NS, "name": name}
            )

    def _newest_first(self, table: Table) -> list[ColumnElement[Any]]:
        return [table.c.created_at.desc().nulls_last()]

    def _upsert(self, table: Table, keys: tuple[str, ...]) -> Executable:
        """INSERT ... ON CONFLICT DO UPDATE, stamping ``created_at`` also on conflict."""
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # lazy: 0.25 s SQLite users skip

        stmt = pg_insert(table).values(created_at=func.clock_timestamp())
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
        )
