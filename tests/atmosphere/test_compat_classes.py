"""atdata's atmosphere classes (Atmosphere, publishers, loaders, PDSBlobStore, AtmosphereIndex)
against the local PDS: publish a schema, a dataset with local shards (uploaded as blobs) and a
label, then read them all back the way atdata users do."""

from __future__ import annotations

import hashlib

import pytest

from atdata_dagster import (
    Atmosphere, AtmosphereIndex, AtUri, Dataset, DatasetLoader, DatasetPublisher, LabelLoader, LabelPublisher,
    PDSBlobStore, SchemaLoader, SchemaPublisher, packable, write_samples,
)
from atdata_dagster.errors import AtmosphereUnavailableError

pytestmark = [pytest.mark.pds, pytest.mark.xdist_group("pds")]


@packable
class Reading:
    """One sensor reading."""

    sensor: str
    value: int


@pytest.fixture
def atmo(pds, pds_account):
    return Atmosphere.login(pds_account["handle"], pds_account["password"], base_url=pds["url"], plc_url=pds["plc_url"])


def test_publishers_and_loaders_round_trip_a_dataset_through_the_pds(atmo, pds_account, tmp_path):
    assert atmo.is_authenticated and atmo.did == pds_account["did"]
    assert atmo.resolve_did(pds_account["handle"]) == atmo.did

    schema_uri = SchemaPublisher(atmo).publish(Reading, version="1.0.0")
    assert isinstance(schema_uri, AtUri) and schema_uri.authority == atmo.did
    assert SchemaLoader(atmo).get(schema_uri)["name"] == "Reading"

    ds = Dataset[Reading](write_samples([Reading(f"s{i}", i) for i in range(5)], tmp_path / "r.tar", maxcount=3).url)
    entry_uri = DatasetPublisher(atmo).publish(ds, name="readings", schema_uri=str(schema_uri), description="five")
    loader = DatasetLoader(atmo)
    assert loader.get(entry_uri)["name"] == "readings" and loader.get_storage_type(entry_uri) == "storageBlobs"
    urls = loader.get_urls(entry_uri)
    assert len(urls) == 2 and all(u.startswith(f"at://{atmo.did}/blob/") for u in urls)
    assert sorted((r.sensor, r.value) for r in loader.to_dataset(entry_uri, Reading)) == [(f"s{i}", i) for i in range(5)]
    assert [d["uri"] for d in loader.list_all()] == [str(entry_uri)]

    label_uri = LabelPublisher(atmo).publish("readings", str(entry_uri), version="1.0.0")
    assert LabelLoader(atmo).get(label_uri)["datasetUri"] == str(entry_uri)
    assert LabelLoader(atmo).resolve(pds_account["handle"], "readings") == str(entry_uri)
    assert atmo.get_record(str(entry_uri))["description"] == "five"
    assert [d["name"] for d in atmo.list_datasets()] == ["readings"]

    index = AtmosphereIndex(atmo)
    assert index.get_dataset("readings").uri == str(entry_uri)
    # load_dataset resolves both atmosphere reference forms with just the client
    from atdata_dagster import load_dataset

    for ref in (str(entry_uri), f"@{pds_account['handle']}/readings"):
        got = load_dataset(ref, Reading, split="train", atmosphere=atmo)
        assert sorted(r.value for r in got) == list(range(5)), ref
    assert index.get_schema(str(schema_uri))["name"] == "Reading"


def test_pds_blob_store_uploads_shards_and_returns_checksummed_blob_urls(atmo, tmp_path):
    ds = Dataset[Reading](write_samples([Reading("a", 1), Reading("b", 2)], tmp_path / "b.tar").url)
    result = PDSBlobStore(atmo).write_shards(ds, prefix="b")
    (url,) = list(result)
    assert url.startswith(f"at://{atmo.did}/blob/bafkrei")
    assert result.checksums[url] == hashlib.sha256(open(ds.list_shards()[0], "rb").read()).hexdigest()


def test_from_env_needs_both_variables(monkeypatch):
    monkeypatch.delenv("ATDATA_HANDLE", raising=False)
    monkeypatch.setenv("ATDATA_PASSWORD", "x")
    with pytest.raises(AtmosphereUnavailableError, match="ATDATA_HANDLE and ATDATA_PASSWORD"):
        Atmosphere.from_env()
