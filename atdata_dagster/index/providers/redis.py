"""Redis index provider, with exactly atdata's key layout (compat reference 5.2).

atdata's keys (``LocalDatasetEntry:{cid}``, ``LocalSchema:{name}@{version}``,
``Label:{name}@{version}``, ``LocalLens:{name}@{version}``) are written with exactly
its fields, plus one extra ``created_at`` field on entry and label hashes: atdata reads
those hashes field by field (``name``, ``schema_ref``, ``data_urls``, ``cid``,
``metadata``, ``legacy_uuid``; labels: ``cid``, ``name``, ``version``) and never looks at
other fields, so the extra field is invisible to it.

To make lookups O(1)/O(log n) at any size, this provider also keeps auxiliary keys in
its own namespace ``atdata_dagster:*``, which atdata never scans (its SCAN patterns
are the four prefixes above):

- ``atdata_dagster:seq`` — a counter; every write takes the next value, so "latest"
  is the commit order of the Redis server, not a client clock.
- ``atdata_dagster:names:{name}`` — sorted set of entry CIDs by write sequence.
- ``atdata_dagster:labels:{name}`` — sorted set of label versions by write sequence.
- ``atdata_dagster:cids`` — sorted set of every CID (score 0, lexicographic order):
  keyset pagination in CID order with ZRANGEBYLEX.
- ``atdata_dagster:refs:{cid}`` — set of label keys pointing at that CID (deletes).

All keys of one write change in one Lua script (atomic; keys are type-checked first,
so a wrong-typed key aborts the write before anything is changed). Data written by
atdata itself has no aux entries: name and label lookups then fall back to a SCAN
(and record what they found), and listing starts by adding unseen ``LocalDatasetEntry``
keys to the CID index. ``reindex()`` does the whole catch-up at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

import msgpack
import redis as redis_lib
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ...errors import ConfigurationError, NotFoundError, ProviderError
from ...redact import leaks, redact, secrets_in
from ..entry import LabelRecord, LocalDatasetEntry
from .base import (
    PUBLISHED_KEY,
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

__all__ = ["RedisProvider"]

T = TypeVar("T")

ENTRY_PREFIX = "LocalDatasetEntry:"
SCHEMA_PREFIX = "LocalSchema:"
LABEL_PREFIX = "Label:"
LENS_PREFIX = "LocalLens:"
AUX_PREFIX = "atdata_dagster:"
SEQ_KEY = AUX_PREFIX + "seq"
CIDS_KEY = AUX_PREFIX + "cids"
NAMES_PREFIX = AUX_PREFIX + "names:"
LABELS_PREFIX = AUX_PREFIX + "labels:"
REFS_PREFIX = AUX_PREFIX + "refs:"

SCAN_COUNT = 10_000

# Errors returned by our scripts for a wrong-typed key: "ATDWRONGTYPE\t<key>\t<actual>\t<expected>"
_WRONGTYPE_TAG = "ATDWRONGTYPE"

_LUA_CHECK = """
local function check(key, expected)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= expected then
    return redis.error_reply('ATDWRONGTYPE\\t' .. key .. '\\t' .. t .. '\\t' .. expected)
  end
  return nil
end
"""

# Upsert a batch of entries and/or labels atomically. KEYS[1] = the sequence counter.
# ARGV[1] = msgpack array of ops, each [entry | false, label | false] with
#   entry = [cid, name, [field, value, ...]], label = [name, version, cid, [field, value, ...]];
# ARGV[2..7] = key prefixes: entry, cid index, names, label, labels, refs.
# Every key is type-checked before anything is written, so a wrong-typed key leaves
# the whole batch unwritten. (Keys derived from stored values, e.g. the old name of a
# renamed entry, are computed in the script: standalone Redis, not Redis Cluster.)
_LUA_PUT = _LUA_CHECK + """
local ops = cmsgpack.unpack(ARGV[1])
local EP, CIDS, NP, LP, LSP, RP = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local err = check(KEYS[1], 'string') or check(CIDS, 'zset')
if err then return err end
for _, op in ipairs(ops) do
  local e, l = op[1], op[2]
  if e then
    local key = EP .. e[1]
    err = check(key, 'hash') or check(NP .. e[2], 'zset')
    if err then return err end
    local old = redis.call('HGET', key, 'name')
    if old then
      err = check(NP .. old, 'zset')
      if err then return err end
    end
  end
  if l then
    local key = LP .. l[1] .. '@' .. l[2]
    err = check(key, 'hash') or check(LSP .. l[1], 'zset') or check(RP .. l[3], 'set')
    if err then return err end
    local old = redis.call('HGET', key, 'cid')
    if old then
      err = check(RP .. old, 'set')
      if err then return err end
    end
  end
end
local seq = 0
for _, op in ipairs(ops) do
  local e, l = op[1], op[2]
  seq = redis.call('INCR', KEYS[1])
  if e then
    local cid, name, key = e[1], e[2], EP .. e[1]
    local old = redis.call('HGET', key, 'name')
    if old and old ~= name then redis.call('ZREM', NP .. old, cid) end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(e[3]))
    redis.call('ZADD', NP .. name, seq, cid)
    redis.call('ZADD', CIDS, 0, cid)
  end
  if l then
    local name, version, cid = l[1], l[2], l[3]
    local key = LP .. name .. '@' .. version
    local old = redis.call('HGET', key, 'cid')
    if old and old ~= cid then redis.call('SREM', RP .. old, key) end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(l[4]))
    redis.call('ZADD', LSP .. name, seq, version)
    redis.call('SADD', RP .. cid, key)
  end
end
return seq
"""

# One page of the CID index with every entry hash, as ONE msgpack reply (decoding it is
# ~10x faster than parsing a pipeline of HGETALL replies in redis-py).
# KEYS[1] cid index. ARGV: lower bound ('-' or '(cid'), limit, entry prefix.
# Returns msgpack [[cid, flat hash or false], ...].
_LUA_PAGE = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'zset' then
  return redis.error_reply('ATDWRONGTYPE\t' .. KEYS[1] .. '\t' .. t .. '\tzset')
end
local cids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i, cid in ipairs(cids) do
  local key = ARGV[3] .. cid
  local h = redis.pcall('HGETALL', key)
  if h['err'] then
    local kt = redis.call('TYPE', key)['ok']
    return redis.error_reply('ATDWRONGTYPE\t' .. key .. '\t' .. kt .. '\thash')
  end
  if #h > 0 then out[i] = {cid, h} else out[i] = {cid, false} end
end
return cmsgpack.pack(out)
"""

# One SCAN step that adds entry keys missing from the CID index (written by atdata),
# entirely server-side: only the next cursor and the count travel back.
# KEYS[1] cid index. ARGV: cursor, entry prefix, names prefix, scan count.
_LUA_SYNC_STEP = """
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2] .. '*', 'COUNT', tonumber(ARGV[4]))
local plen = string.len(ARGV[2])
local added = 0
for _, key in ipairs(res[2]) do
  local cid = string.sub(key, plen + 1)
  if not redis.call('ZSCORE', KEYS[1], cid) then
    local t = redis.call('TYPE', key)['ok']
    if t ~= 'hash' then
      return redis.error_reply('ATDWRONGTYPE\t' .. key .. '\t' .. t .. '\thash')
    end
    local name = redis.call('HGET', key, 'name')
    redis.call('ZADD', KEYS[1], 0, cid)
    if name then redis.call('ZADD', ARGV[3] .. name, 'NX', 0, cid) end
    added = added + 1
  end
end
return {res[1], added}
"""

# KEYS[1] entry hash, KEYS[2] cid index. ARGV: cid, names prefix, labels prefix,
# refs prefix, label prefix.
_LUA_DELETE = _LUA_CHECK + """
local cid = ARGV[1]
local err = check(KEYS[1], 'hash') or check(KEYS[2], 'zset') or check(ARGV[4] .. cid, 'set')
if err then return err end
local name = redis.call('HGET', KEYS[1], 'name')
local candidates = {}
if redis.call('EXISTS', ARGV[4] .. cid) == 1 then
  candidates = redis.call('SMEMBERS', ARGV[4] .. cid)
end
if name then
  table.insert(candidates, ARGV[5] .. name .. '@')
  err = check(ARGV[2] .. name, 'zset')
  if err then return err end
end
local removed = 0
for _, lk in ipairs(candidates) do
  if redis.call('TYPE', lk)['ok'] == 'hash' and redis.call('HGET', lk, 'cid') == cid then
    local lname = redis.call('HGET', lk, 'name')
    local lver = redis.call('HGET', lk, 'version') or ''
    redis.call('DEL', lk)
    if lname and redis.call('TYPE', ARGV[3] .. lname)['ok'] == 'zset' then
      redis.call('ZREM', ARGV[3] .. lname, lver)
    end
    removed = removed + 1
  end
end
if name then redis.call('ZREM', ARGV[2] .. name, cid) end
redis.call('DEL', ARGV[4] .. cid)
redis.call('ZREM', KEYS[2], cid)
return redis.call('DEL', KEYS[1])
"""

# KEYS[1] entry hash. ARGV: '1' + metadata bytes, or '0' (remove metadata).
_LUA_SET_METADATA = _LUA_CHECK + """
local err = check(KEYS[1], 'hash')
if err then return err end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'metadata', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'metadata')
end
return 1
"""

# Newest valid member of a by-sequence sorted set. KEYS[1] zset.
# ARGV: target key prefix, suffix, expected 'name' field value.
# Returns {zset_exists, flat hash or false}.
_LUA_NEWEST = _LUA_CHECK + """
local err = check(KEYS[1], 'zset')
if err then return err end
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then return {0, false} end
for i = 0, n - 1 do
  local m = redis.call('ZREVRANGE', KEYS[1], i, i)[1]
  local key = ARGV[1] .. m .. ARGV[2]
  local t = redis.call('TYPE', key)['ok']
  if t == 'hash' then
    local h = redis.call('HGETALL', key)
    for j = 1, #h, 2 do
      if h[j] == 'name' and h[j + 1] == ARGV[3] then return {1, h} end
    end
  elseif t ~= 'none' then
    return redis.error_reply('ATDWRONGTYPE\\t' .. key .. '\\t' .. t .. '\\thash')
  end
end
return {1, false}
"""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _glob_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _pairs(flat: list) -> dict[bytes, bytes]:
    it = iter(flat)
    return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in zip(it, it)}


class RedisProvider(IndexProvider):
    """Index provider on a Redis server (atdata's ``Index(redis=...)`` layout).

    Pass an existing ``redis.Redis`` connection, a ``url`` (``redis://[user:pw@]host:port/db``)
    or keyword arguments for ``redis.Redis(**kwargs)``. Values are binary (msgpack), so
    the provider always talks to Redis with ``decode_responses=False``; a connection
    configured to decode is replaced by a sibling connection on the same server.

    Clients this provider creates retry connection errors ``retries`` times with
    exponential backoff (redis-py's own ``Retry``); a connection you pass keeps its own
    retry policy. Every write is one idempotent Lua script, so a retried write is safe.
    """

    kind = ProviderKind.REDIS

    def __init__(
        self,
        redis: redis_lib.Redis | None = None,
        *,
        url: str | None = None,
        retries: int = 5,
        **redis_kwargs: Any,
    ) -> None:
        if redis is not None and (url is not None or redis_kwargs):
            raise ConfigurationError(
                "RedisProvider takes either an existing connection or a url / connection "
                "keyword arguments, not both"
            )
        if redis is None:
            kwargs = dict(redis_kwargs)
            kwargs["decode_responses"] = False
            kwargs.setdefault(
                "retry", Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), int(retries))
            )
            kwargs.setdefault("socket_connect_timeout", 5)
            kwargs.setdefault("socket_timeout", 30)
            failure: ValueError | None = None
            try:
                if url is not None:
                    redis = redis_lib.Redis.from_url(url, **kwargs)
                else:
                    redis = redis_lib.Redis(**kwargs)
            except ValueError as e:
                failure = e
            if failure is not None:  # raised here: the parser's message may quote the URL
                secrets = secrets_in(url or "") + [str(redis_kwargs.get("password") or "")]
                error = ConfigurationError(
                    f"invalid Redis URL {redact(url, *secrets) if url else 'redis kwargs'!r}: "
                    f"{redact(failure, *secrets)}. Expected redis://[user:password@]host:6379/0"
                )
                if leaks(failure, *secrets):
                    raise error
                raise error from failure
            self._owns_client = True
        else:
            self._owns_client = False
            pool = redis.connection_pool
            if pool.connection_kwargs.get("decode_responses"):
                kwargs = {**pool.connection_kwargs, "decode_responses": False}
                redis = redis_lib.Redis(
                    connection_pool=redis_lib.ConnectionPool(
                        connection_class=pool.connection_class, **kwargs
                    )
                )
                self._owns_client = True
        assert redis is not None  # built above from url / keywords when not given
        self._r: redis_lib.Redis = redis
        self._password = self._r.connection_pool.connection_kwargs.get("password")
        self._put = self._r.register_script(_LUA_PUT)
        self._page_script = self._r.register_script(_LUA_PAGE)
        self._sync_step = self._r.register_script(_LUA_SYNC_STEP)
        self._delete = self._r.register_script(_LUA_DELETE)
        self._set_metadata = self._r.register_script(_LUA_SET_METADATA)
        self._newest = self._r.register_script(_LUA_NEWEST)
        self._closed = False
        self._call(self._r.ping, what="connect")

    # -- plumbing -----------------------------------------------------------------
    @property
    def redis(self) -> redis_lib.Redis:
        """The underlying connection (decode_responses=False)."""
        return self._r

    def describe(self) -> str:
        kw = self._r.connection_pool.connection_kwargs
        db = kw.get("db", 0)
        if kw.get("path"):
            return f"unix://{kw['path']}?db={db}"
        user = kw.get("username")
        auth = f"{user}@" if user else ""
        return f"redis://{auth}{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{db}"

    def _address(self) -> str:
        kw = self._r.connection_pool.connection_kwargs
        if kw.get("path"):
            return str(kw["path"])
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    def _clean(self, text: str) -> str:
        return redact(text, self._password)  # a str or bytes password

    def _call(self, fn: Callable[..., T], *args: Any, what: str, keys: Iterable[tuple[str, str]] = (), **kwargs: Any) -> T:
        """Run one Redis call, translating failures into :class:`ProviderError`.

        ``keys`` lists (key, expected type) pairs touched by the call, so a WRONGTYPE
        reply can name the offending key.
        """
        if self._closed:
            raise ProviderError(f"the index provider for {self.describe()} is closed")
        failure: redis_lib.RedisError
        try:
            return fn(*args, **kwargs)
        except redis_lib.ResponseError as e:
            failure, error = e, self._response_error(e, what, keys)
        except redis_lib.RedisError as e:
            failure, error = e, self._connection_error(e, what)
        # raised outside the except block: a reply that quotes the password must not ride along
        if leaks(failure, self._password):
            raise error
        raise error from failure

    def _response_error(self, e: Exception, what: str, keys: Iterable[tuple[str, str]]) -> ProviderError:
        msg = str(e)
        if _WRONGTYPE_TAG in msg:
            parts = msg[msg.index(_WRONGTYPE_TAG):].split("\t")
            key, actual, expected = (parts + ["?", "?", "?"])[1:4]
            expected = expected.split()[0] if expected.split() else expected
            return self._wrongtype(key, actual, expected, what)
        if "WRONGTYPE" in msg:
            for key, expected in keys:
                try:
                    actual = _s(self._r.type(key))
                except redis_lib.RedisError:
                    continue
                if actual not in ("none", expected):
                    return self._wrongtype(key, actual, expected, what)
            names = ", ".join(repr(k) for k, _ in keys) or "one of its keys"
            return ProviderError(
                f"Redis at {self._address()} failed to {what}: {names} holds the wrong type "
                f"of value ({self._clean(msg)}). Delete or rename the key."
            )
        return ProviderError(f"Redis at {self._address()} failed to {what}: {self._clean(msg)}")

    def _wrongtype(self, key: str, actual: str, expected: str, what: str) -> ProviderError:
        return ProviderError(self._clean(
            f"Redis key {key!r} on {self._address()} (db "
            f"{self._r.connection_pool.connection_kwargs.get('db', 0)}) is a {actual}, but the "
            f"index layout needs a {expected} there (while trying to {what}). It was not "
            "written by atdata or atdata_dagster: rename or delete it (DEL), or use another "
            "Redis database for the index."
        ))

    def _connection_error(self, e: Exception, what: str) -> ProviderError:
        detail = self._clean(" ".join(str(e).split()))
        where = self._address()
        if isinstance(e, redis_lib.AuthenticationError) or "WRONGPASS" in str(e) or "NOAUTH" in str(e):
            user = self._r.connection_pool.connection_kwargs.get("username") or "default"
            return ProviderError(
                f"Redis at {where} rejected the credentials of user {user!r} ({detail}) while "
                f"trying to {what}: check the user name and password in the URL/arguments."
            )
        if isinstance(e, (redis_lib.ConnectionError, redis_lib.TimeoutError)):
            return ProviderError(
                f"cannot reach Redis at {where} to {what}: {detail}. Is redis-server running "
                "there? Start it or fix host/port/db in the URL."
            )
        return ProviderError(f"Redis at {where} failed to {what}: {detail}")

    def _run_script(self, script, keys: list[str], args: list, *, what: str) -> Any:
        return self._call(lambda: script(keys=keys, args=args), what=what)

    # -- encoding -----------------------------------------------------------------
    @staticmethod
    def _entry_fields(entry: LocalDatasetEntry, created_at: str) -> list:
        fields: list = [
            "name", entry.name,
            "schema_ref", entry.schema_ref,
            "data_urls", pack_urls(entry.data_urls),
            "cid", entry.cid,
        ]
        if entry.metadata is not None:
            fields += ["metadata", pack_metadata(entry.metadata, what=f"dataset {entry.name!r}")]
        if entry._legacy_uuid is not None:
            fields += ["legacy_uuid", entry._legacy_uuid]
        fields += ["created_at", created_at]
        return fields

    @staticmethod
    def _label_fields(label: LabelRecord, created_at: str) -> list:
        fields: list = ["cid", label.cid, "name", label.name, "version", label.version or ""]
        if label.description is not None:
            fields += ["description", label.description]
        fields += ["created_at", created_at]
        return fields

    def _entry_from_hash(self, raw: dict, key: str | None = None, *, lenient: bool = False) -> LocalDatasetEntry:
        try:
            cid = _s(raw.get(b"cid", b"")) or (key[len(ENTRY_PREFIX):] if key else None)
            metadata = raw.get(b"metadata")
            legacy = raw.get(b"legacy_uuid")
            created = raw.get(b"created_at")
            where = f"Redis key {key or '?'!r} on {self._address()}"
            corrupt = None
            if lenient:
                data_urls, meta, corrupt = decode_entry_columns_lenient(
                    raw[b"data_urls"], metadata, where, name=_s(raw[b"name"]), cid=cid or None
                )
            else:
                data_urls, meta = decode_entry_columns(raw[b"data_urls"], metadata, where)
            return LocalDatasetEntry(
                _corrupt=corrupt,
                name=_s(raw[b"name"]),
                schema_ref=_s(raw[b"schema_ref"]),
                data_urls=data_urls,
                metadata=meta,
                _cid=cid or None,
                _legacy_uuid=_s(legacy) if legacy else None,
                created_at=_s(created) if created else None,
            )
        except (KeyError, ValueError, msgpack.UnpackException) as e:
            raise ProviderError(
                f"Redis key {key or '?'!r} on {self._address()} is not a valid dataset entry "
                f"hash ({type(e).__name__}: {e}); expected fields name, schema_ref, data_urls, cid"
            ) from e

    @staticmethod
    def _label_from_hash(raw: dict) -> LabelRecord:
        desc = raw.get(b"description")
        created = raw.get(b"created_at")
        return LabelRecord(
            name=_s(raw.get(b"name", b"")),
            cid=_s(raw.get(b"cid", b"")),
            version=_s(raw.get(b"version", b"")),
            description=_s(desc) if desc is not None else None,
            created_at=_s(created) if created else None,
        )

    # -- writes ---------------------------------------------------------------------
    _PREFIXES = [ENTRY_PREFIX, CIDS_KEY, NAMES_PREFIX, LABEL_PREFIX, LABELS_PREFIX, REFS_PREFIX]

    def _op(self, entry: LocalDatasetEntry | None, label: LabelRecord | None, created_at: str) -> list:
        """One write for the put script: [entry or False, label or False]."""
        e: Any = False
        lab: Any = False
        if entry is not None:
            e = [entry.cid, entry.name, self._entry_fields(entry, created_at)]
        if label is not None:
            if not label.name or not label.cid:
                raise ConfigurationError(
                    f"a label needs a name and a CID (got name={label.name!r}, cid={label.cid!r})"
                )
            lab = [label.name, label.version or "", label.cid, self._label_fields(label, created_at)]
        return [e, lab]

    def _write_ops(self, ops: list[list], *, what: str) -> None:
        # raw (str-family) encoding: Redis's Lua cmsgpack predates the msgpack bin types
        payload = msgpack.packb(ops, use_bin_type=False)
        self._run_script(self._put, [SEQ_KEY], [payload, *self._PREFIXES], what=what)

    def put_entry(self, entry: LocalDatasetEntry, *, label: LabelRecord | None = None) -> None:
        """Upsert the entry hash (replacing all its fields) and the label, atomically.

        The stored ``metadata`` is read under WATCH and the write runs in MULTI/EXEC, so a
        published record merged in concurrently (a promotion) is carried over, never lost:
        if the hash changes in between, EXEC is refused and the put runs again.
        """
        what = f"write entry {entry.name!r} ({entry.cid})"
        if (entry.metadata or {}).get(PUBLISHED_KEY):
            self._write_ops([self._op(entry, label, _now_iso())], what=what)
            return
        key = ENTRY_PREFIX + entry.cid
        where = f"Redis key {key!r} on {self._address()}"

        def transaction(pipe: Any) -> None:
            stored = pipe.hget(key, "metadata") if _s(pipe.type(key)) == "hash" else None
            kept = carry_published(stored, entry.metadata, where)
            written = entry if kept is None else dataclasses.replace(entry, metadata=kept)
            payload = msgpack.packb([self._op(written, label, _now_iso())], use_bin_type=False)
            pipe.multi()
            self._put(keys=[SEQ_KEY], args=[payload, *self._PREFIXES], client=pipe)
            pipe.execute()

        self._optimistic(key, transaction, what=what)

    def _optimistic(self, key: str, transaction: Callable[[Any], T], *, what: str) -> T:
        """Run ``transaction(pipe)`` with ``key`` WATCHed, again whenever EXEC is refused
        because the key changed after it was read.

        redis-py does not retry a WATCHing pipeline whose connection drops (it raises
        WatchError); that is retried here by the client's own retry policy, and surfaces
        as :class:`ProviderError` once it is exhausted. ``transaction`` must be safe to run
        again (it re-reads what it depends on).
        """

        def attempt() -> T:
            with self._r.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        return transaction(pipe)
                    except redis_lib.WatchError as e:
                        lost = e.__cause__ or e.__context__  # redis-py chains the connection error either way
                        if isinstance(lost, redis_lib.ConnectionError):
                            raise lost from None  # the connection dropped while watching: not a conflict
                        continue  # the key changed after it was read: read it again

        def with_retries() -> T:
            retry = self._r.get_retry()
            return attempt() if retry is None else retry.call_with_retry(attempt, lambda _error: None)

        return self._call(with_retries, what=what, keys=[(key, "hash")])

    def put_entries_bulk(
        self,
        entries: Iterable[LocalDatasetEntry],
        *,
        with_labels: bool = False,
        chunk_size: int = 1000,
    ) -> int:
        """Upsert many entries (and, with ``with_labels``, each name's unversioned label).

        One atomic script call per ``chunk_size`` entries; returns how many were written.
        """
        count = 0
        ops: list[list] = []
        for entry in entries:
            label = LabelRecord(name=entry.name, cid=entry.cid) if with_labels else None
            ops.append(self._op(entry, label, _now_iso()))
            if len(ops) >= chunk_size:
                self._write_ops(ops, what=f"bulk-write {len(ops)} entries")
                count += len(ops)
                ops = []
        if ops:
            self._write_ops(ops, what=f"bulk-write {len(ops)} entries")
            count += len(ops)
        return count

    def put_label(self, label: LabelRecord) -> None:
        self._write_ops([self._op(None, label, _now_iso())], what=f"write label {label.name!r}")

    def update_entry_metadata(self, cid: str, metadata: dict | None) -> None:
        key = ENTRY_PREFIX + cid
        packed = pack_metadata(metadata, what=f"entry {cid}")
        args = ["1", packed] if packed is not None else ["0"]
        found = self._run_script(self._set_metadata, [key], args, what=f"update metadata of {cid}")
        if not found:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")

    def index_identity(self, create: str | None = None, *, what: str = "read the index identity") -> str | None:
        """Kept in the string key ``atdata_dagster:index_id`` (a namespace atdata's SCANs never match)."""
        key = self.IDENTITY_KEY
        if create is not None:
            self._call(self.redis.set, key, create, nx=True, what=what, keys=[(key, "string")])
        value = self._call(self.redis.get, key, what=what, keys=[(key, "string")])
        return value.decode("ascii", "replace") if isinstance(value, bytes) else value

    def merge_entry_metadata(self, cid: str, patch: Mapping[str, Any]) -> dict:
        """Read, merge and write the ``metadata`` field in one optimistic transaction.

        The entry hash is WATCHed while it is read: if anything writes it before the
        MULTI/EXEC (another merge, a re-put of the entry), EXEC is refused and the merge
        runs again on the new value. (Not a Lua script: Redis's Lua msgpack would
        re-encode the metadata in the old str-only format, not the bytes atdata reads.)
        """
        key = ENTRY_PREFIX + cid
        patch = dict(patch)
        what = f"merge metadata into entry {cid}"

        def transaction(pipe: Any) -> dict:
            key_type = _s(pipe.type(key))
            if key_type == "none":
                raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")
            if key_type != "hash":
                raise self._wrongtype(key, key_type, "hash", what)
            where = f"Redis key {key!r} on {self._address()}"
            current = decode_metadata(pipe.hget(key, "metadata"), where)
            merged = merge_metadata(current, patch)
            packed = pack_metadata(merged, what=f"entry {cid}")
            pipe.multi()
            if merged != current:
                pipe.hset(key, "metadata", packed)
            pipe.execute()
            return merged

        return self._optimistic(key, transaction, what=what)

    def delete_entry(self, cid: str) -> None:
        """Delete the entry and labels pointing at it (those written through this
        provider, and the entry's own unversioned label; run :meth:`reindex` first to
        also catch other labels that atdata itself wrote)."""
        self._run_script(
            self._delete,
            [ENTRY_PREFIX + cid, CIDS_KEY],
            [cid, NAMES_PREFIX, LABELS_PREFIX, REFS_PREFIX, LABEL_PREFIX],
            what=f"delete entry {cid}",
        )

    # -- entry reads ------------------------------------------------------------------
    def get_entry(self, cid: str) -> LocalDatasetEntry:
        key = ENTRY_PREFIX + cid
        raw = self._call(self._r.hgetall, key, what=f"read entry {cid}", keys=[(key, "hash")])
        if not raw:
            raise NotFoundError(f"no dataset entry with CID {cid!r} in {self.describe()}")
        return self._entry_from_hash(raw, key)

    def get_entry_by_name(self, name: str) -> LocalDatasetEntry:
        """The most recently written entry named ``name``.

        One round trip through ``atdata_dagster:names:{name}``. Names known only from
        atdata-written data are found by a SCAN of the entry keys (newest ``created_at``
        wins, entries without it rank oldest), which is then recorded in the name index.
        """
        zkey = NAMES_PREFIX + name
        _, flat = self._run_script(
            self._newest, [zkey], [ENTRY_PREFIX, "", name], what=f"look up dataset {name!r}"
        )
        if flat:
            raw = _pairs(flat)
            return self._entry_from_hash(raw, ENTRY_PREFIX + _s(raw.get(b"cid", b"")))
        found: list[tuple[str, str, bytes]] = []  # (created_at, cid, key)
        for key, (ename, created) in self._scan_hashes(
            ENTRY_PREFIX + "*", fields=("name", "created_at"), what=f"look up dataset {name!r}"
        ):
            if ename is not None and _s(ename) == name:
                found.append((_s(created) if created else "", _s(key)[len(ENTRY_PREFIX):], key))
        if not found:
            raise NotFoundError(f"no dataset entry named {name!r} in {self.describe()}")
        self._call(self._r.zadd, zkey, {cid: 0 for _, cid, _ in found}, nx=True, what="index names")
        return self.get_entry(max(found)[1])

    def _scan_keys(self, pattern: str, *, what: str) -> Iterator[list[bytes]]:
        """SCAN MATCH in batches (large COUNT: one round trip per ~10k keys)."""
        cursor = 0
        while True:
            cursor, keys = self._call(self._r.scan, cursor, match=pattern, count=SCAN_COUNT, what=what)
            if keys:
                yield cast("list[bytes]", keys)  # decode_responses=False: bytes
            if int(cursor) == 0:
                return

    def _scan_hashes(self, pattern: str, *, fields: tuple[str, ...], what: str) -> Iterator[tuple[bytes, list]]:
        for batch in self._scan_keys(pattern, what=what):
            pipe = self._r.pipeline(transaction=False)
            for k in batch:
                pipe.hmget(k, list(fields))
            results = self._call(pipe.execute, raise_on_error=False, what=what)
            for k, res in zip(batch, results):
                if isinstance(res, Exception):
                    raise self._wrongtype(_s(k), _s(self._r.type(k)), "hash", what)
                yield k, res

    def _sync_cid_index(self) -> int:
        """Add entry keys that the CID index lacks (written by atdata); returns how many.

        Runs as server-side SCAN steps, so a listing of a large index that is already
        fully indexed costs a few round trips, not a download of every key name.
        """
        added = 0
        cursor = "0"
        t = _s(self._call(self._r.type, CIDS_KEY, what="list entries"))
        if t not in ("none", "zset"):
            raise self._wrongtype(CIDS_KEY, t, "zset", "list entries")
        while True:
            cursor, n = self._run_script(
                self._sync_step, [CIDS_KEY], [cursor, ENTRY_PREFIX, NAMES_PREFIX, SCAN_COUNT],
                what="index entries written by atdata",
            )
            added += int(n)
            cursor = _s(cursor)
            if cursor == "0":
                return added

    def _page(self, limit: int, after: str | None) -> tuple[list[LocalDatasetEntry], str | None, bool]:
        """Up to ``limit`` entries after CID ``after``; skips (and unindexes) stale CIDs."""
        out: list[LocalDatasetEntry] = []
        while len(out) < limit:
            want = limit - len(out)
            lo = "-" if after is None else "(" + after
            blob = self._run_script(self._page_script, [CIDS_KEY], [lo, want, ENTRY_PREFIX], what="list entries")
            rows = msgpack.unpackb(blob, raw=True) if blob else []
            if not rows:
                return out, after, True
            stale = []
            for cid, flat in rows:
                if flat:
                    out.append(self._entry_from_hash(_pairs(flat), ENTRY_PREFIX + _s(cid), lenient=True))
                else:
                    stale.append(cid)
            if stale:
                self._call(self._r.zrem, CIDS_KEY, *stale, what="list entries")
            after = _s(rows[-1][0])
            if len(rows) < want:
                return out, after, True
        return out, after, False

    def list_entries_page(
        self, *, limit: int = 1000, after: str | None = None
    ) -> list[LocalDatasetEntry]:
        """One page in CID order (ZRANGEBYLEX on the CID index, O(log n + limit)).

        The first page (``after=None``) first adds entries written by atdata itself to
        the CID index, so a listing started after those writes sees them.
        """
        if after is None:
            self._sync_cid_index()
        page, _, _ = self._page(int(limit), after)
        return page

    def iter_entries(self, *, batch_size: int = 1000) -> Iterator[LocalDatasetEntry]:
        self._sync_cid_index()
        after: str | None = None
        while True:
            page, after, done = self._page(batch_size, after)
            yield from page
            if done:
                return

    def count_entries(self) -> int:
        self._sync_cid_index()
        return int(self._call(self._r.zcard, CIDS_KEY, what="count entries"))

    def reindex(self) -> dict[str, int]:
        """Record atdata-written entries and labels in the auxiliary indexes (idempotent).

        Existing aux entries keep their sequence numbers; new ones get score 0 (older
        than anything written here, since atdata records no time).
        """
        entries = self._sync_cid_index()
        labels = 0
        what = "index labels written by atdata"
        for key, (name, version, cid) in self._scan_hashes(LABEL_PREFIX + "*", fields=("name", "version", "cid"), what=what):
            if name is None or cid is None:
                continue
            pipe = self._r.pipeline(transaction=False)
            pipe.zadd(LABELS_PREFIX + _s(name), {_s(version or b""): 0}, nx=True)
            pipe.sadd(REFS_PREFIX + _s(cid), key)
            self._call(pipe.execute, what=what)
            labels += 1
        return {"entries_added": entries, "labels_seen": labels}

    # -- schemas and lenses -----------------------------------------------------------
    def put_schema(self, name: str, version: str, schema_json: str) -> None:
        key = f"{SCHEMA_PREFIX}{name}@{version}"
        self._call(self._r.set, key, schema_json, what=f"write schema {name}@{version}")

    def get_schema_json(self, name: str, version: str) -> str:
        key = f"{SCHEMA_PREFIX}{name}@{version}"
        value = self._call(self._r.get, key, what=f"read schema {name}@{version}", keys=[(key, "string")])
        if value is None:
            raise NotFoundError(f"Schema not found: {name}@{version} in {self.describe()}")
        return _s(value)

    def _iter_strings(self, prefix: str, *, strip_module: bool, what: str) -> Iterator[tuple[str, str, str]]:
        for batch in self._scan_keys(prefix + "*", what=what):
            values = self._call(self._r.mget, batch, what=what)
            for k, v in zip(batch, values):
                ident = _s(k)[len(prefix):]
                if v is None or "@" not in ident:
                    continue
                name, version = ident.rsplit("@", 1)
                if strip_module and "." in name:  # legacy keys "module.Class@ver", as atdata lists them
                    name = name.rsplit(".", 1)[1]
                yield name, version, _s(v)

    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        yield from sorted(self._iter_strings(SCHEMA_PREFIX, strip_module=True, what="list schemas"))

    def schema_versions(self, name: str) -> list[str]:
        pattern = f"{SCHEMA_PREFIX}{_glob_escape(name)}@*"
        out = []
        for batch in self._scan_keys(pattern, what=f"list versions of schema {name}"):
            for k in batch:
                ident = _s(k)[len(SCHEMA_PREFIX):]
                n, _, v = ident.rpartition("@")
                if n == name:
                    out.append(v)
        return sorted(out)

    def put_lens(self, name: str, version: str, lens_json: str) -> None:
        key = f"{LENS_PREFIX}{name}@{version}"
        self._call(self._r.set, key, lens_json, what=f"write lens {name}@{version}")

    def get_lens_json(self, name: str, version: str) -> str:
        key = f"{LENS_PREFIX}{name}@{version}"
        value = self._call(self._r.get, key, what=f"read lens {name}@{version}", keys=[(key, "string")])
        if value is None:
            raise NotFoundError(f"Lens not found: {name}@{version} in {self.describe()}")
        return _s(value)

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        yield from sorted(self._iter_strings(LENS_PREFIX, strip_module=False, what="list lenses"))

    # -- labels -----------------------------------------------------------------------
    def get_label(self, name: str, version: str | None = None) -> LabelRecord:
        """Label ``(name, version)``; with ``version=None`` the most recently written one.

        atdata picks an arbitrary label in SCAN order here; we use the write sequence
        kept in ``atdata_dagster:labels:{name}``, and for labels atdata wrote, the
        newest ``created_at`` (absent = oldest) found by a SCAN.
        """
        if version is not None:
            key = f"{LABEL_PREFIX}{name}@{version}"
            raw = self._call(self._r.hgetall, key, what=f"read label {name!r}", keys=[(key, "hash")])
            if not raw:
                raise NotFoundError(f"no label {name!r} version {version!r} in {self.describe()}")
            return self._label_from_hash(raw)
        zkey = LABELS_PREFIX + name
        _, flat = self._run_script(
            self._newest, [zkey], [f"{LABEL_PREFIX}{name}@", "", name], what=f"read label {name!r}"
        )
        if flat:
            return self._label_from_hash(_pairs(flat))
        found: list[tuple[str, str, bytes]] = []  # (created_at, version, key)
        pattern = f"{LABEL_PREFIX}{_glob_escape(name)}@*"
        for lkey, (lname, lver, created) in self._scan_hashes(
            pattern, fields=("name", "version", "created_at"), what=f"read label {name!r}"
        ):
            if lname is not None and _s(lname) == name:
                found.append((_s(created) if created else "", _s(lver or b""), lkey))
        if not found:
            raise NotFoundError(f"no label {name!r} in {self.describe()}")
        self._call(self._r.zadd, zkey, {v: 0 for _, v, _ in found}, nx=True, what="index labels")
        raw = self._call(self._r.hgetall, max(found)[2], what=f"read label {name!r}")
        return self._label_from_hash(raw)

    def iter_labels(self) -> Iterator[LabelRecord]:
        for batch in self._scan_keys(LABEL_PREFIX + "*", what="list labels"):
            pipe = self._r.pipeline(transaction=False)
            for k in batch:
                pipe.hgetall(k)
            results = self._call(pipe.execute, raise_on_error=False, what="list labels")
            for k, raw in zip(batch, results):
                if isinstance(raw, Exception):
                    raise self._wrongtype(_s(k), _s(self._r.type(k)), "hash", "list labels")
                if raw:
                    yield self._label_from_hash(raw)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._owns_client:
                try:
                    self._r.close()
                except redis_lib.RedisError:
                    pass

    def __repr__(self) -> str:
        return f"RedisProvider({self.describe()!r})"
