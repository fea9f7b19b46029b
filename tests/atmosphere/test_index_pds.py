"""The Index driving the atmosphere backend end to end (local PDS): write, promote, resolve, read."""

from __future__ import annotations

import pytest

from atdata_dagster.atmosphere import NSID_ENTRY, NSID_LABEL, NSID_SCHEMA, AtmosphereClient

from .conftest import count

# With --dist loadgroup one worker runs every PDS test (one server); each worker can start its own.
pytestmark = [pytest.mark.pds, pytest.mark.xdist_group("pds")]

index_mod = pytest.importorskip("atdata_dagster.index.index")
packable_mod = pytest.importorskip("atdata_dagster.samples.packable")


@packable_mod.packable
class Reading:
    """One sensor reading."""

    sensor: str
    value: int


def _index(tmp_path, atmosphere):
    from atdata_dagster.stores.disk import LocalDiskStore

    return index_mod.Index(path=str(tmp_path / "index.db"), provider="sqlite",
                           data_store=LocalDiskStore(tmp_path / "data"), atmosphere=atmosphere)


def test_promote_entry_then_resolve_and_read(tmp_path, pds, pds_account, writer):
    index = _index(tmp_path, writer)
    local = index.write_samples([Reading(f"s{i}", i) for i in range(6)], name="readings", maxcount=4)
    uri = index.promote("readings")
    did = pds_account["did"]
    stored = index.get_dataset("readings").metadata["atmosphere"]
    assert stored["uri"] == uri and stored["schema_uri"].startswith(f"at://{did}/{NSID_SCHEMA}/")

    # Promoting again is a no-op on the PDS.
    assert index.promote("readings") == uri
    assert [count(writer, did, c) for c in (NSID_SCHEMA, NSID_ENTRY, NSID_LABEL)] == [1, 1, 1]

    # Anyone can resolve and read it with an anonymous index on the same PDS.
    reader = _index(tmp_path / "other", AtmosphereClient(pds["url"]))
    entry = reader.get_dataset(f"@{pds_account['handle']}/readings")
    assert entry.uri == uri and len(entry.data_urls) == len(local.data_urls) == 2
    assert sorted(local.checksums.values()) == sorted(entry.checksums.values())
    rows = sorted((r.sensor, r.value) for r in reader.dataset(f"@{pds_account['handle']}/readings").ordered())
    assert rows == [(f"s{i}", i) for i in range(6)]
    assert reader.get_schema(entry.schema_ref)["name"] == "Reading"


def test_write_straight_to_the_atmosphere(tmp_path, pds_account, writer):
    index = _index(tmp_path, writer)
    entry = index.write_samples([Reading("a", 1), Reading("b", 2)], name=f"@{pds_account['handle']}/direct")
    assert entry.uri.startswith(f"at://{pds_account['did']}/{NSID_ENTRY}/")
    assert [d.name for d in index.list_datasets(repo="_atmosphere")] == ["direct"]
    assert sorted(r.value for r in index.dataset(f"@{pds_account['handle']}/direct").ordered()) == [1, 2]
