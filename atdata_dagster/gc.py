"""Garbage collection: delete what an index provably owns and nothing references.

:func:`collect_garbage` (``atdata-dagster gc``) removes unreferenced shards, their manifest
sidecars and the temporary leftovers of crashed writers from the stores of an index, and
aborts the S3 multipart uploads such writers left. It is safe by construction:

- **Ownership.** Every index records its identity in each store it writes to
  (:mod:`atdata_dagster.index.identity`). gc refuses (:class:`GcRefusedError`, unless
  ``force=True``) an index without entries, a store without an ownership marker, a store
  another (unmounted) index also writes to, and atdata's shared default root
  ``~/.atdata/data`` when atdata's default index, which also writes there, is not mounted.
- **Locations, not strings.** References from every entry of every mounted repository
  (shards, manifests, brace patterns expanded) are compared as the locations they denote
  (:meth:`DataStore.locations`): ``file://``, ``//``, ``/./``, symlinked folders and
  relative paths all keep the shard.
- **Own names only.** Stores list only the names they create themselves
  (``data--<id>--<n>.tar``, its ``.manifest.*`` sidecars, their temporary names); gc never
  touches anything else, nor aborts uploads to other keys.
- **Re-checked before each delete.** The object's age is read again (not from the listing)
  and the references are re-read whenever an entry was written (the entry count; Redis: its
  write sequence), and otherwise every
  second (or every ten load times on an index so big that reading it takes longer), so an entry committed while gc runs keeps its shards, and a write that reuses an
  existing shard (which refreshes its age) keeps it too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import GcRefusedError, InvalidRefError
from .index.identity import index_id
from .shards.patterns import expand_patterns
from .index.providers.redis import SEQ_KEY, RedisProvider
from .index.providers.sql import DEFAULT_SQLITE_PATH, SqlProvider
from .stores.base import OWNER_DIR, DataStore
from .stores.disk import DEFAULT_ROOT, LocalDiskStore

__all__ = ["collect_garbage", "check_ownership", "GcResult", "sqlite_index_path"]

_FORCE = "pass --force (force=True) if you are sure"


class GcResult(list):
    """The URLs gc deleted (or, in a dry run, would delete), with what it kept and why."""

    def __init__(self, deleted: Iterable[str] = (), *, kept_young: Iterable[str] = (),
                 kept_referenced: Iterable[str] = (), aborted_uploads: int = 0):
        super().__init__(deleted)
        #: unreferenced objects younger than the grace period (writes that may still commit)
        self.kept_young: list[str] = list(kept_young)
        #: candidates that became referenced while gc ran (an entry committed meanwhile)
        self.kept_referenced: list[str] = list(kept_referenced)
        #: S3 multipart uploads of crashed writers that were aborted
        self.aborted_uploads = aborted_uploads


def sqlite_index_path(url: str | None) -> Path | None:
    """The SQLite file an ``--index`` URL (``None``: atdata's default index) names, else ``None``.

    Lets the CLI tell whether the index existed *before* opening it (opening creates it).
    """
    if url is None:
        return DEFAULT_SQLITE_PATH.expanduser()
    text = str(url).strip()
    if not text.lower().startswith("sqlite://"):
        return None
    path = text[len("sqlite://"):].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel -> rel, sqlite:////abs -> /abs
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser()


def _stores_of(index: Any) -> list[DataStore]:
    seen: dict[tuple, DataStore] = {}
    for repo in index.repos.values():
        store = repo.data_store
        if store is not None:
            seen.setdefault((type(store).__name__, repr(store)), store)
    return list(seen.values()) or [LocalDiskStore()]


def _has_entries(provider: Any) -> bool:
    count = getattr(provider, "count_entries", None)
    if count is not None:
        return count() > 0
    return next(iter(provider.iter_entries(batch_size=1)), None) is not None


def _is_default_root(store: DataStore) -> bool:
    return isinstance(store, LocalDiskStore) and store.root == Path(DEFAULT_ROOT).expanduser().resolve()


def check_ownership(index: Any, stores: list[DataStore] | None = None) -> None:
    """Raise :class:`GcRefusedError` unless ``index`` provably owns every store gc would clean.

    Refused: an index without entries (gc would delete every shard), a store without an
    ownership marker, a store also written by an index that is not mounted in ``index``,
    and atdata's shared default root while atdata's default index (which writes there
    too) exists and is not mounted.
    """
    stores = _stores_of(index) if stores is None else stores
    repos = index.repos
    where = ", ".join(f"{k}={r.provider.describe()}" for k, r in repos.items())
    if not any(_has_entries(r.provider) for r in repos.values()):
        raise GcRefusedError(
            f"the index ({where}) has no entries, so gc would delete every shard of "
            f"{', '.join(map(repr, stores))}; check --index (a typo opens a new, empty index) or {_FORCE}"
        )
    ids = {i for i in (index_id(r.provider) for r in repos.values()) if i is not None}
    default_index = DEFAULT_SQLITE_PATH.expanduser().resolve()
    for store in stores:
        owners = store.owner_ids()
        if not owners:
            raise GcRefusedError(
                f"{store!r} has no ownership marker ({OWNER_DIR}/<index id>), so gc cannot prove that this "
                "index owns it: no index has written there since markers were introduced, or it belongs to "
                f"another tool. Write one dataset into it with this index (that marks it), or {_FORCE} "
                "that no other index or tool writes there"
            )
        foreign = owners - ids
        if foreign:
            raise GcRefusedError(
                f"{store!r} is also written by {len(foreign)} other index(es) (ids {', '.join(sorted(foreign))}) "
                "that are not mounted here: their entries are invisible to gc, which would delete their shards. "
                f"Mount them as repositories, give each index its own store, or {_FORCE}"
            )
        if _is_default_root(store) and default_index.exists() and not any(
            isinstance(r.provider, SqlProvider) and r.provider.path is not None
            and Path(r.provider.path).resolve() == default_index for r in repos.values()
        ):
            raise GcRefusedError(
                f"{store!r} is the shared default root, where atdata's default index {default_index} (and every "
                "atdata index without a store) also writes, and that index is not part of this one. Use a "
                f"dedicated --data-root / --store for this index, or {_FORCE}"
            )


class _References:
    """Every shard and manifest URL the entries of all mounted repositories reference."""

    def __init__(self, index: Any, interval: float):
        self.providers = [r.provider for r in index.repos.values()]
        self.interval = interval
        self.load()

    def _count(self) -> tuple | None:
        """A cheap signature that changes when entries are written: Redis's write sequence
        (O(1)), else the number of entries; ``None`` if a provider offers neither."""
        out = []
        for p in self.providers:
            if isinstance(p, RedisProvider):
                out.append(p.redis.get(SEQ_KEY))
                continue
            count = getattr(p, "count_entries", None)
            if count is None:
                return None
            out.append(count())
        return tuple(out)

    def load(self) -> None:
        started = time.monotonic()
        urls: set[str] = set()
        for provider in self.providers:
            for entry in provider.iter_entries():
                for url in entry.referenced_urls():
                    urls.add(url)  # also literally: a dataset folder may itself contain braces
                    try:
                        urls.update(expand_patterns([url]))
                    except InvalidRefError as exc:
                        raise GcRefusedError(
                            f"entry {entry.name!r} ({entry.cid}) references {url[:200]!r}, which cannot be "
                            f"expanded ({exc}), so gc cannot tell which shards it keeps alive; fix or delete "
                            "that entry first"
                        ) from None
        self.urls = urls
        self.count = self._count()
        self.loaded_at = time.monotonic()
        # a full re-read at most every `interval` seconds, and at most 10% of gc's time on a big index
        self.period = max(self.interval, 10 * (self.loaded_at - started))
        self._per_store: dict[int, set[str]] = {}

    def refresh(self) -> None:
        """Re-read the references if the number of entries changed, or every ``period`` seconds."""
        if self._count() != self.count or time.monotonic() - self.loaded_at >= self.period:
            self.load()

    def of(self, store: DataStore) -> set[str]:
        """The referenced locations inside ``store``."""
        got = self._per_store.get(id(store))
        if got is None:
            got = set()
            for url in self.urls:
                got |= store.locations(url)
            self._per_store[id(store)] = got
        return got

    def keeps(self, store: DataStore, url: str) -> bool:
        """Whether ``url`` (a shard or sidecar from the store's own listing, hence already in
        its canonical form) is referenced, or is the sidecar of a referenced shard."""
        referenced = self.of(store)
        if url in referenced:
            return True
        return ".manifest." in url and url.split(".manifest.", 1)[0] + ".tar" in referenced


def collect_garbage(
    index: Any,
    *,
    grace: float = 3600.0,
    dry_run: bool = False,
    force: bool = False,
    progress: Callable[[list], Iterable] | None = None,
    recheck_interval: float = 1.0,
) -> GcResult:
    """Delete what no entry of any repository of ``index`` references; return those URLs.

    Removes unreferenced shards, their sidecars and temporary leftovers of crashed writers
    from every store of the index, and aborts S3 multipart uploads such writers left
    unfinished. Objects younger than ``grace`` seconds are kept (``result.kept_young``):
    they may belong to a write that has not committed its entry yet. ``dry_run`` only
    lists. ``force`` skips the ownership checks of :func:`check_ownership` (never the
    reference checks). ``progress`` optionally wraps the list of deletions (a progress bar).
    Before each delete the object's age is read again and the references are re-read when
    the entry count changed or ``recheck_interval`` seconds have passed.
    """
    stores = _stores_of(index)
    if not force:
        check_ownership(index, stores)
    refs = _References(index, recheck_interval)
    now = time.time()
    young: list[str] = []
    # (store, url to delete, url whose age and references decide)
    candidates: list[tuple[DataStore, str, str]] = []
    for store in stores:
        listed: set[str] = set()
        doomed: list[str] = []
        for url in store.iter_shard_urls():
            listed.add(url)
            if refs.keeps(store, url):
                continue
            age = store.age_seconds(url, now)
            if age is not None and age < grace:
                young.append(url)  # could belong to a write that has not committed yet
                continue
            doomed.append(url)
        # Sidecars before their shards (never leave a sidecar without a shard), and
        # sidecars whose shard is gone or never came.
        doomed_set = set(doomed)
        for side in store.iter_sidecar_urls():
            if refs.keeps(store, side):
                continue
            shard = side.split(".manifest.", 1)[0] + ".tar"
            if shard in listed:
                if shard in doomed_set:
                    candidates.append((store, side, shard))
                continue
            age = store.age_seconds(side, now)
            if age is None or age >= grace:
                candidates.append((store, side, side))
            else:
                young.append(side)
        candidates += [(store, url, url) for url in doomed]
    aborted = 0
    if not dry_run:
        for store in stores:
            abort = getattr(store, "abort_stale_uploads", None)
            if abort is not None:  # S3 multipart uploads left by crashed writers (own temp keys only)
                aborted += abort(older_than=grace)
    deleted: list[str] = []
    kept_referenced: list[str] = []
    for store, url, guard in (progress(candidates) if progress is not None else candidates):
        if not store.is_own_name(url):  # listings only yield own names; never delete anything else
            continue
        if dry_run:
            deleted.append(url)
            continue
        refs.refresh()
        if refs.keeps(store, url) or refs.keeps(store, guard):
            kept_referenced.append(url)
            continue
        age = store.age_seconds(guard, fresh=True)
        if age is not None and age < grace:
            young.append(url)  # reused or rewritten since the listing
            continue
        if (age if guard == url else store.age_seconds(url, fresh=True)) is None:
            continue  # already gone
        store.delete(url)
        deleted.append(url)
    return GcResult(deleted, kept_young=young, kept_referenced=kept_referenced, aborted_uploads=aborted)
