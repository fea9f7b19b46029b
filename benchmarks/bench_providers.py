"""Index provider latency and listing benchmark (SQLite, PostgreSQL, Redis).

Run: ``python -m benchmarks.bench_providers [--sizes 1000,100000] [--providers sqlite,postgres,redis]``

For each provider and index size it measures single-entry insert latency (entry plus
label in one transaction, as the Index writes them), lookups by CID, by label (what
``Index.get_dataset`` does: label, then the entry it points at) and by name (newest
entry with that name), one page of a keyset listing, and a full iteration. The bulk
of each index is loaded with ``put_entries_bulk``. Targets: lookups under 1 ms at 100k
entries on every provider; listing time linear in the number of entries.

Servers: PostgreSQL at ``--pg-dsn`` (a scratch database is created and dropped) and
Redis at ``--redis-url`` (a free database number is leased like the test suite does,
flushed, and released). A provider whose server is unreachable is skipped.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry
from atdata_dagster.index.providers import IndexProvider, PostgresProvider, RedisProvider, SqliteProvider

SCHEMA_REF = "atdata://local/schema/BenchSample@1.0.0"
VERSIONS_PER_NAME = 4


def make_entry(i: int) -> LocalDatasetEntry:
    name = f"bench/ds-{i // VERSIONS_PER_NAME:06d}"
    return LocalDatasetEntry(
        name=name,
        schema_ref=SCHEMA_REF,
        data_urls=[f"/data/{name}/data--{i:08x}--{k:06d}.tar" for k in range(4)],
        metadata={"checksums": {f"{k}": f"{i:064x}" for k in range(4)}, "rows": 1000 + i},
    )


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def summary(samples_us: list[float]) -> str:
    s = sorted(samples_us)
    p50 = s[len(s) // 2]
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"{p50:7.0f} / {p99:7.0f}"


# -- storage for each provider ---------------------------------------------------------------
@contextmanager
def sqlite_storage() -> Iterator[Callable[[], IndexProvider]]:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as d:
        counter = iter(range(1_000_000))
        yield lambda: SqliteProvider(os.path.join(d, f"index-{next(counter)}.db"))


@contextmanager
def postgres_storage(admin_dsn: str) -> Iterator[Callable[[], IndexProvider]]:
    import psycopg
    from sqlalchemy.engine import make_url

    admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3)
    created: list[str] = []

    def fresh() -> IndexProvider:
        name = f"atd_bench_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        created.append(name)
        url = make_url(admin_dsn).set(database=name)
        return PostgresProvider(url.render_as_string(hide_password=False))

    try:
        yield fresh
    finally:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def redis_storage(base_url: str) -> Iterator[Callable[[], IndexProvider]]:
    import redis

    base_url = base_url.rstrip("/")
    admin = redis.Redis.from_url(f"{base_url}/0", socket_connect_timeout=3)
    admin.ping()
    owner = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    db = None
    for n in range(15, 0, -1):  # the test suite leases from 1 upwards
        if admin.set(f"atdata_dagster:test-lease:{n}", owner, nx=True, ex=3600):
            db = n
            break
    if db is None:
        raise RuntimeError("no free Redis database to lease (1..15 all in use)")
    url = f"{base_url}/{db}"
    providers: list[RedisProvider] = []

    def fresh() -> IndexProvider:
        redis.Redis.from_url(url).flushdb()
        p = RedisProvider(url=url)
        providers.append(p)
        return p

    try:
        yield fresh
    finally:
        redis.Redis.from_url(url).flushdb()
        if admin.get(f"atdata_dagster:test-lease:{db}") == owner.encode():
            admin.delete(f"atdata_dagster:test-lease:{db}")
        admin.close()


# -- one run -------------------------------------------------------------------------------------
def bench_one(provider: IndexProvider, size: int, samples: int, single_inserts: int) -> dict:
    rng = random.Random(42)
    singles = min(single_inserts, size)

    # single put_entry + label (one transaction), the Index's write path
    it = iter(range(singles))

    def put_one():
        i = next(it)
        e = make_entry(i)
        provider.put_entry(e, label=LabelRecord(name=e.name, cid=e.cid))

    insert_us = timed(put_one, singles)

    t = time.perf_counter()
    bulk = size - singles
    if bulk:
        provider.put_entries_bulk((make_entry(i) for i in range(singles, size)), with_labels=True)
    bulk_s = time.perf_counter() - t

    picks = [rng.randrange(size) for _ in range(samples)]
    cids = [make_entry(i).cid for i in picks]
    names = [make_entry(i).name for i in picks]

    c = iter(cids * 2)
    get_us = timed(lambda: provider.get_entry(next(c)), samples)
    n = iter(names * 2)
    label_only_us = timed(lambda: provider.get_label(next(n)), samples)
    n = iter(names * 2)
    label_us = timed(lambda: provider.get_entry(provider.get_label(next(n)).cid), samples)
    n = iter(names * 2)
    name_us = timed(lambda: provider.get_entry_by_name(next(n)), samples)
    c = iter(cids * 2)
    page_us = timed(lambda: provider.list_entries_page(limit=100, after=next(c)), max(50, samples // 10))

    t = time.perf_counter()
    count = sum(1 for _ in provider.iter_entries(batch_size=1000))
    list_s = time.perf_counter() - t
    assert count == size, f"listed {count} of {size} entries"
    return {
        "insert": summary(insert_us),
        "bulk_rate": (bulk / bulk_s) if bulk else 0.0,
        "get": summary(get_us),
        "get_us_p50": statistics.median(get_us),
        "label_only": summary(label_only_us),
        "label_only_us_p50": statistics.median(label_only_us),
        "label": summary(label_us),
        "label_us_p50": statistics.median(label_us),
        "name": summary(name_us),
        "name_us_p50": statistics.median(name_us),
        "page": summary(page_us),
        "list_s": list_s,
        "list_rate": size / list_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000", help="comma-separated entry counts")
    ap.add_argument("--providers", default="sqlite,postgres,redis")
    ap.add_argument("--samples", type=int, default=2000, help="lookups timed per measure")
    ap.add_argument("--single-inserts", type=int, default=500, help="inserts timed one by one")
    ap.add_argument("--pg-dsn", default=os.environ.get("ATDATA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--redis-url", default=os.environ.get("ATDATA_TEST_REDIS_URL", "redis://127.0.0.1:6379"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    kinds = [k.strip() for k in args.providers.split(",") if k.strip()]

    storages = {
        "sqlite": lambda: sqlite_storage(),
        "postgres": lambda: postgres_storage(args.pg_dsn),
        "redis": lambda: redis_storage(args.redis_url),
    }
    rows = []
    for kind in kinds:
        try:
            cm = storages[kind]()
            fresh = cm.__enter__()
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            print(f"{kind}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        try:
            for size in sizes:
                provider = fresh()
                try:
                    t = time.perf_counter()
                    r = bench_one(provider, size, args.samples, args.single_inserts)
                    r["total_s"] = time.perf_counter() - t
                finally:
                    provider.close()
                rows.append((kind, size, r))
                print(f"  {kind:8} {size:>7}: done in {r['total_s']:.1f} s", file=sys.stderr, flush=True)
        finally:
            cm.__exit__(None, None, None)

    print()
    print("latencies in microseconds, p50 / p99; insert = put_entry + label in one transaction;")
    print("get_label = latest label of a name; label->entry = get_label + get_entry (Index.get_dataset);")
    print("by name = get_entry_by_name (newest of 4 versions); page = list_entries_page(limit=100, after=cid);")
    print("list = iter_entries over every entry; bulk/s = put_entries_bulk with labels (setup)")
    header = (f"{'provider':8} {'entries':>8} | {'insert':>15} | {'bulk/s':>7} | {'get_entry':>15} | "
              f"{'get_label':>15} | {'label->entry':>15} | {'by name':>15} | {'page(100)':>15} | "
              f"{'list s':>6} | {'list/s':>7}")
    print(header)
    print("-" * len(header))
    for kind, size, r in rows:
        print(f"{kind:8} {size:>8} | {r['insert']:>15} | {r['bulk_rate']:>7.0f} | {r['get']:>15} | "
              f"{r['label_only']:>15} | {r['label']:>15} | {r['name']:>15} | {r['page']:>15} | "
              f"{r['list_s']:>6.2f} | {r['list_rate']:>7.0f}")
    slow = [
        (k, s) for k, s, r in rows
        if s >= 100_000 and max(r["get_us_p50"], r["name_us_p50"], r["label_only_us_p50"]) >= 1000
    ]
    if slow:
        print(f"\nabove the 1 ms lookup target (p50) at 100k: {slow}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
