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

from ..stores.base import DataStore
from .providers.base import IndexProvider

__all__ = ["index_id", "claim_store", "META_TABLE", "REDIS_ID_KEY"]

META_TABLE = IndexProvider.IDENTITY_TABLE
REDIS_ID_KEY = IndexProvider.IDENTITY_KEY

_cache: "weakref.WeakKeyDictionary[IndexProvider, str]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def index_id(provider: IndexProvider, *, create: bool = False, what: str = "read the index identity") -> str | None:
    """The identity of the index ``provider`` stores; ``None`` if it has none yet.

    ``create=True`` gives it one first (race-free: concurrent creators agree on one value).
    Providers that keep no identity return ``None``.
    """
    with _lock:
        cached = _cache.get(provider)
    if cached is not None:
        return cached
    value = provider.index_identity(uuid.uuid4().hex if create else None, what=what)
    if value is not None:
        with _lock:
            _cache[provider] = value
    return value


def claim_store(store: DataStore, provider: IndexProvider, *, what: str = "claim the store") -> None:
    """Record in ``store`` that the index ``provider`` writes there (before its first write).

    ``what`` names the write this is done for, in the error if the index is unreachable.
    """
    owner = index_id(provider, create=True, what=what)
    if owner is not None:
        store.claim(owner)
