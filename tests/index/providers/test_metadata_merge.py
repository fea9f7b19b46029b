"""merge_entry_metadata: keys merged into an entry's metadata atomically, on every provider.

The promotion records the AT URI with this merge. A plain read-modify-write (read the
entry, add the key, write the whole map back) loses whatever another writer merged in
between; the tests below force exactly that interleaving and check nothing is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgpack
import pytest
import redis
from sqlalchemy import event

from atdata_dagster.errors import ConfigurationError, NotFoundError
from atdata_dagster.index.entry import LocalDatasetEntry
from atdata_dagster.index.providers import IndexProvider, ProviderKind, RedisProvider, provider_from_url

from ._raw import Raw

REF = "atdata://local/schema/Img@1.0.0"
URI = {"uri": "at://did:plc:x/science.alt.dataset.entry/1", "schema_uri": "at://s", "label_uri": "at://l"}


def entry(metadata=None) -> LocalDatasetEntry:
    return LocalDatasetEntry("ds", REF, ["/data/ds/data--00000001--000000.tar"], metadata=metadata)


# -- the contract ---------------------------------------------------------------------------
def test_merge_sets_the_given_keys_keeps_the_others_and_returns_the_result(provider):
    e = entry({"checksums": {"a": "0" * 64}, "atmosphere": {"uri": "old"}})
    provider.put_entry(e)

    merged = provider.merge_entry_metadata(e.cid, {"atmosphere": URI, "note": "x"})

    assert merged == {"checksums": {"a": "0" * 64}, "atmosphere": URI, "note": "x"}
    got = provider.get_entry(e.cid)
    assert got.metadata == merged
    assert (got.name, got.data_urls, got.schema_ref) == (e.name, e.data_urls, e.schema_ref)


def test_merge_stores_the_metadata_as_the_msgpack_map_atdata_reads(provider):
    e = entry({"a": 1})
    provider.put_entry(e)

    provider.merge_entry_metadata(e.cid, {"b": [1, 2], "c": b"\x00\xff"})

    stored = Raw.of(provider).stored_metadata(e.cid)
    assert stored == msgpack.packb({"a": 1, "b": [1, 2], "c": b"\x00\xff"})


def test_merge_into_an_entry_without_metadata_gives_it_the_patch(provider):
    e = entry(None)
    provider.put_entry(e)

    assert provider.merge_entry_metadata(e.cid, {"atmosphere": URI}) == {"atmosphere": URI}
    assert provider.get_entry(e.cid).metadata == {"atmosphere": URI}


def test_merge_into_a_missing_entry_is_not_found_and_creates_nothing(provider):
    with pytest.raises(NotFoundError, match="bafyreinothere"):
        provider.merge_entry_metadata("bafyreinothere", {"a": 1})
    assert list(provider.iter_entries()) == []


def test_merge_of_a_value_msgpack_cannot_encode_changes_nothing(provider):
    e = entry({"a": 1})
    provider.put_entry(e)

    with pytest.raises(ConfigurationError, match="msgpack"):
        provider.merge_entry_metadata(e.cid, {"bad": object()})

    assert provider.get_entry(e.cid).metadata == {"a": 1}


# -- concurrency ------------------------------------------------------------------------------
class Pause:
    """Stops ``thread`` the first time it calls it, until the test releases it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        self.thread: threading.Thread | None = None
        self._armed = True

    def __call__(self) -> None:
        if self._armed and threading.current_thread() is self.thread:
            self._armed = False
            self.reached.set()
            assert self.go.wait(60), "the paused writer was never released"


class _PausingPipeline(redis.client.Pipeline):
    pause: Callable[[], None]

    def immediate_execute_command(self, *args, **options):
        result = super().immediate_execute_command(*args, **options)
        if str(args[0]).upper() == "HGET":  # the read of the WATCHed entry's metadata
            self.pause()
        return result


class _PausingRedis(redis.Redis):
    """A real Redis client whose WATCHing pipelines stop after reading a hash."""

    pause: Callable[[], None]

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = _PausingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.pause = self.pause
        return pipe


def provider_pausing_after_its_read(provider_url: str, kind: str, pause: Pause) -> IndexProvider:
    """A second provider on the same storage that stops inside a merge, after reading the
    stored metadata and before writing it back."""
    if kind == ProviderKind.REDIS:
        client = _PausingRedis.from_url(provider_url)
        client.pause = pause
        return RedisProvider(client)
    provider = provider_from_url(provider_url)

    def after_statement(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "dataset_entries" in statement:
            pause()

    event.listen(provider.engine, "after_cursor_execute", after_statement)
    return provider


def run_interleaved(first: Callable[[], object], second: Callable[[], object], pause: Pause) -> bool:
    """``first`` reads, then ``second`` runs (to completion, or until the database makes it
    wait for ``first``), then ``first`` writes; both must finish without an error.

    Returns whether ``second`` had finished before ``first`` was released.
    """
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - handed to the test thread, which raises it
                errors.append(e)
        return run

    a = threading.Thread(target=guarded(first))
    pause.thread = a
    a.start()
    assert pause.reached.wait(60), "the first writer never read the entry"
    b = threading.Thread(target=guarded(second))
    b.start()
    b.join(timeout=1.0)  # Redis: b commits now; SQL: b waits for a's write lock / row lock
    second_finished_first = not b.is_alive()
    pause.go.set()
    a.join(timeout=60)
    b.join(timeout=60)
    assert not a.is_alive() and not b.is_alive()
    if errors:
        raise errors[0]
    return second_finished_first


def interleave_with_a_paused_writer(
    provider_url: str, provider_kind: str, first: Callable[[IndexProvider], object], second: Callable[[], object],
) -> bool:
    """``first(paused)`` runs on a second provider that stops right after its read; ``second``
    runs meanwhile; returns what :func:`run_interleaved` does."""
    pause = Pause()
    paused = provider_pausing_after_its_read(provider_url, provider_kind, pause)
    try:
        return run_interleaved(lambda: first(paused), second, pause)
    finally:
        paused.close()


def test_a_merge_made_while_another_merge_is_between_read_and_write_survives(provider, provider_url, provider_kind):
    e = entry({"checksums": {"a": "0" * 64}})
    provider.put_entry(e)
    second_finished_first = interleave_with_a_paused_writer(
        provider_url, provider_kind,
        lambda paused: paused.merge_entry_metadata(e.cid, {"atmosphere": URI}),
        lambda: provider.merge_entry_metadata(e.cid, {"reviewed": True}),
    )

    # Redis lets the second merge commit in between (the first one's EXEC is refused and it
    # merges again); SQLite and PostgreSQL make it wait for the first one's commit.
    assert second_finished_first == (provider_kind == ProviderKind.REDIS)

    assert provider.get_entry(e.cid).metadata == {"checksums": {"a": "0" * 64}, "atmosphere": URI, "reviewed": True}


def test_the_same_interleaving_loses_a_key_with_read_then_update_entry_metadata(provider):
    """Why merge_entry_metadata exists: update_entry_metadata replaces the whole map."""
    e = entry({"checksums": {"a": "0" * 64}})
    provider.put_entry(e)
    pause = Pause()

    def read_modify_write() -> None:
        current = provider.get_entry(e.cid).metadata or {}
        pause()
        provider.update_entry_metadata(e.cid, {**current, "atmosphere": URI})

    assert run_interleaved(read_modify_write, lambda: provider.merge_entry_metadata(e.cid, {"reviewed": True}), pause)

    assert provider.get_entry(e.cid).metadata == {"checksums": {"a": "0" * 64}, "atmosphere": URI}


def test_many_threads_merging_different_keys_into_one_entry_lose_none(provider_url):
    threads, per_thread = 6, 8
    with provider_from_url(provider_url) as setup:
        e = entry({"base": 0})
        setup.put_entry(e)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            with provider_from_url(provider_url) as p:
                barrier.wait(timeout=60)
                for i in range(per_thread):
                    p.merge_entry_metadata(e.cid, {f"t{t}-{i}": i})
        except BaseException as ex:  # noqa: BLE001 - handed to the test thread, which raises it
            errors.append(ex)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors

    with provider_from_url(provider_url) as p:
        expected = {"base": 0} | {f"t{t}-{i}": i for t in range(threads) for i in range(per_thread)}
        assert p.get_entry(e.cid).metadata == expected


# -- re-putting a published entry ----------------------------------------------------------
def test_a_reput_without_a_record_keeps_the_published_atmosphere_record(provider):
    provider.put_entry(entry({"checksums": {"a": "0" * 64}}))
    cid = entry().cid
    provider.merge_entry_metadata(cid, {"atmosphere": URI})

    provider.put_entry(entry({"checksums": {"a": "1" * 64}}))  # re-materialized, same CID

    assert provider.get_entry(cid).metadata == {"checksums": {"a": "1" * 64}, "atmosphere": URI}


def test_a_reput_with_its_own_record_replaces_the_stored_one(provider):
    provider.put_entry(entry({"atmosphere": URI}))
    newer = {**URI, "uri": "at://did:plc:x/science.alt.dataset.entry/2"}
    provider.put_entry(entry({"atmosphere": newer}))
    assert provider.get_entry(entry().cid).metadata == {"atmosphere": newer}


def test_a_promotion_recorded_while_a_reput_is_between_read_and_write_survives(provider, provider_url, provider_kind):
    e = entry({"checksums": {"a": "0" * 64}})
    provider.put_entry(e)
    interleave_with_a_paused_writer(
        provider_url, provider_kind,
        lambda paused: paused.put_entry(entry({"checksums": {"a": "1" * 64}})),
        lambda: provider.merge_entry_metadata(e.cid, {"atmosphere": URI}),
    )

    assert provider.get_entry(e.cid).metadata == {"checksums": {"a": "1" * 64}, "atmosphere": URI}
