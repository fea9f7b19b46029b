"""An index's identity (gc's proof of store ownership), on every provider, beside atdata's layout."""

from __future__ import annotations

import threading

from atdata_dagster.index.identity import REDIS_ID_KEY, claim_store, index_id
from atdata_dagster.index.providers import provider_from_url
from atdata_dagster.stores.disk import LocalDiskStore


def test_an_index_has_no_identity_until_it_claims_a_store_then_keeps_one(provider_url, tmp_path):
    first = provider_from_url(provider_url)
    try:
        assert index_id(first) is None  # reading never creates it
        store = LocalDiskStore(tmp_path / "data")
        claim_store(store, first)
        ident = index_id(first)
        assert ident is not None and len(ident) == 32 and store.owner_ids() == {ident}
    finally:
        first.close()
    again = provider_from_url(provider_url)  # a new connection (another process) reads the same one
    try:
        assert index_id(again) == ident and index_id(again, create=True) == ident
    finally:
        again.close()


def test_concurrent_creators_agree_on_one_identity(provider_url):
    providers = [provider_from_url(provider_url) for _ in range(4)]
    got: list[str | None] = []
    start = threading.Barrier(len(providers))

    def create(p):
        start.wait()
        got.append(index_id(p, create=True))

    threads = [threading.Thread(target=create, args=(p,)) for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in providers:
        p.close()
    assert len(got) == 4 and len(set(got)) == 1 and got[0] is not None


def test_the_identity_lives_outside_atdatas_tables_and_keys(provider_kind, provider_url):
    p = provider_from_url(provider_url)
    try:
        ident = index_id(p, create=True)
        if provider_kind == "redis":
            assert p.redis.get(REDIS_ID_KEY) == ident.encode()
            assert not [k for k in p.redis.scan_iter() if k.startswith((b"LocalDatasetEntry:", b"LocalSchema:", b"Label:", b"LocalLens:"))]
        else:
            with p.engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT value FROM atdata_dagster_meta WHERE key = 'index_id'").scalar() == ident
        assert list(p.iter_entries()) == [] and list(p.iter_schemas()) == [] and list(p.iter_labels()) == []
    finally:
        p.close()
