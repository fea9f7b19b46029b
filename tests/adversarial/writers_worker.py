"""A writer process for the many-writers tests (importable by spawned children).

Each writer opens its own provider (from a URL) and disk store, writes every name in
``names`` for ``rounds`` rounds through the public ``Index.write`` (then points its
own versioned label ``w<writer>`` at what it wrote), and times the
provider commit of each write: ``t0`` just before ``put_entry`` is called and ``t1``
just after it returns (``time.monotonic_ns``, one clock for every process on Linux).
The commit happens inside [t0, t1], so if some write's commit *started* after another
write's commit *returned*, the first one committed later: that is what "committed
last" is checked against. A shared barrier makes every writer reach its commit at the
same moment, so the commits really race.
"""

from __future__ import annotations

import time
import traceback

from atdata_dagster.samples.packable import packable


@packable
class Item:
    """A tiny sample that says who wrote it."""

    key: str
    writer: int
    round: int
    payload: bytes


def items_for(content_id: int, rnd: int, n: int = 12) -> list[Item]:
    """The samples one write produces; ``content_id`` decides the bytes (so the CID)."""
    return [Item(key=f"k{j}", writer=content_id, round=rnd, payload=bytes([content_id % 256, rnd % 256, j]) * 64) for j in range(n)]


def content_id(writer: int, rnd: int, shared_round: int | None) -> int:
    """Writers 0 and 1 write identical samples in ``shared_round`` (same shards, same CID)."""
    if shared_round is not None and rnd == shared_round and writer in (0, 1):
        return 0
    return 1000 + 100 * writer + rnd


def run_writer(spec: dict, barrier, results) -> None:
    """Body of one writer process; puts a dict (records or an error) on ``results``."""
    from atdata_dagster.index.index import Index
    from atdata_dagster.index.providers import provider_from_url
    from atdata_dagster.stores.disk import LocalDiskStore

    writer = spec["writer"]
    records: list[dict] = []
    labels: list[dict] = []
    try:
        provider = provider_from_url(spec["url"])
        real_put = provider.put_entry

        def timed_put(entry, *, label=None):
            barrier.wait(timeout=120)
            t0 = time.monotonic_ns()
            real_put(entry, label=label)
            t1 = time.monotonic_ns()
            records.append({"writer": writer, "name": entry.name, "cid": entry.cid, "t0": t0, "t1": t1})

        provider.put_entry = timed_put  # instrumentation only: the real provider commits
        index = Index(provider, data_store=LocalDiskStore(spec["data"]), atmosphere=None)
        for rnd in range(spec["rounds"]):
            for name in spec["names"]:
                cid_src = content_id(writer, rnd, spec.get("shared_round"))
                entry = index.write_samples(items_for(cid_src, rnd), name=name, maxcount=5)
                records[-1]["returned_cid"] = entry.cid
                records[-1]["content"] = cid_src
                records[-1]["round"] = rnd
                # then this writer's own versioned label of the name, timed the same way
                t0 = time.monotonic_ns()
                index.label(name, entry.cid, version=f"w{writer}")
                labels.append({"writer": writer, "name": name, "cid": entry.cid, "version": f"w{writer}",
                               "t0": t0, "t1": time.monotonic_ns(), "round": rnd})
        index.close()
        results.put({"writer": writer, "records": records, "labels": labels})
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        try:
            barrier.abort()
        finally:
            results.put({"writer": writer, "error": traceback.format_exc()})
