"""The identity of an index repository, and the ownership marks it leaves on its stores.

Every index provider gets a random identity (a uuid4, 32 hex digits) the first time it
writes into a store. It is kept outside atdata's tables and keys, so atdata never sees it:

- SQLite / PostgreSQL: table ``atdata_dagster_meta(key TEXT PRIMARY KEY, value TEXT)``,
  row ``key = 'index_id'`` (atdata only touches its four tables);
- Redis: string key ``atdata_dagster:index_id`` (the provider's own namespace, which
  atdata's SCAN patterns never match).

Before the first write into a store, the index records its identity there
(:meth:`DataStore.claim`), so ``gc`` can tell a store only its index writes to from one
shared with other indexes.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from typing import Any

from sqlalchemy import exc as sa_exc, text

from ..errors import ProviderError
from ..stores.base import DataStore
from .providers.base import IndexProvider
from .providers.redis import RedisProvider
from .providers.sql import SqlProvider

__all__ = ["index_id", "claim_store", "META_TABLE", "REDIS_ID_KEY"]

META_TABLE = "atdata_dagster_meta"
REDIS_ID_KEY = "atdata_dagster:index_id"
_PG_META_LOCK = 0x61746D65  # advisory lock serializing concurrent creation of the meta table

_cache: "weakref.WeakKeyDictionary[IndexProvider, str]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def index_id(provider: IndexProvider, *, create: bool = False) -> str | None:
    """The identity of the index ``provider`` stores; ``None`` if it has none yet.

    ``create=True`` gives it one first (race-free: concurrent creators agree on one value).
    Providers other than SQL and Redis have no identity (``None``).
    """
    with _lock:
        cached = _cache.get(provider)
    if cached is not None:
        return cached
    fresh = uuid.uuid4().hex
    if isinstance(provider, SqlProvider):
        value = _sql_id(provider, fresh if create else None)
    elif isinstance(provider, RedisProvider):
        value = _redis_id(provider, fresh if create else None)
    else:
        value = getattr(provider, "index_id", None)
    if value is not None:
        with _lock:
            _cache[provider] = value
    return value


def claim_store(store: DataStore, provider: IndexProvider) -> None:
    """Record in ``store`` that the index ``provider`` writes there (before its first write)."""
    owner = index_id(provider, create=True)
    if owner is not None:
        store.claim(owner)


def _sql_id(provider: SqlProvider, create: str | None) -> str | None:
    select = text(f"SELECT value FROM {META_TABLE} WHERE key = 'index_id'")
    try:
        with provider.engine.begin() as conn:
            exists = (
                conn.exec_driver_sql(f"SELECT 1 FROM sqlite_master WHERE type='table' AND name='{META_TABLE}'").first()
                if provider.kind == "sqlite"
                else conn.exec_driver_sql(f"SELECT to_regclass('{META_TABLE}')").scalar()
            )
            if exists:
                value = conn.execute(select).scalar()
                if value is not None or create is None:
                    return value
            elif create is None:
                return None
            if provider.kind != "sqlite":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_META_LOCK})")
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            verb = "INSERT OR IGNORE INTO" if provider.kind == "sqlite" else "INSERT INTO"
            tail = "" if provider.kind == "sqlite" else " ON CONFLICT (key) DO NOTHING"
            conn.execute(text(f"{verb} {META_TABLE} (key, value) VALUES ('index_id', :v){tail}"), {"v": create})
            return conn.execute(select).scalar()
    except sa_exc.SQLAlchemyError as exc:
        raise ProviderError(
            f"cannot read or create the identity of the index {provider.describe()} ({type(exc).__name__}); "
            "check that the database is reachable and writable"
        ) from None


def _redis_id(provider: RedisProvider, create: str | None) -> str | None:
    r: Any = provider.redis
    try:
        if create is not None:
            r.set(REDIS_ID_KEY, create, nx=True)
        value = r.get(REDIS_ID_KEY)
    except Exception as exc:  # redis.RedisError and connection errors
        raise ProviderError(
            f"cannot read or create the identity of the index {provider.describe()} ({type(exc).__name__}); "
            "check that Redis is reachable and writable"
        ) from None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value
