"""Publishing, promotion, dedup and resolution against a real local PDS."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime, timedelta, timezone

import pytest

from atdata_dagster.atmosphere import (
    NSID_ENTRY,
    NSID_LABEL,
    NSID_SCHEMA,
    AtmosphereBackend,
    AtmosphereClient,
    DatasetLabel,
    ShardSource,
    shard_sources_for,
)
from atdata_dagster.atmosphere.records import blob_cid
from atdata_dagster.errors import NotFoundError

from .conftest import SCHEMA, count, local_entry, tar_bytes

# With --dist loadgroup one worker runs every PDS test (one server); each worker can start its own.
pytestmark = [pytest.mark.pds, pytest.mark.xdist_group("pds")]


def _members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_client_is_lazy_and_logs_in_on_first_write(pds, pds_account):
    client = AtmosphereClient(pds["url"], handle=pds_account["handle"], password=pds_account["password"])
    assert client.authenticated
    assert client._session is None  # nothing happened yet
    ref = client.create_record("science.alt.dataset.label",
                               DatasetLabel("x", "at://did:plc:x/science.alt.dataset.entry/a").to_record())
    assert ref.uri.startswith(f"at://{pds_account['did']}/{NSID_LABEL}/")
    assert client.did == pds_account["did"]


def test_promote_blob_dataset_and_resolve_anonymously(tmp_path, backend, writer, anon, pds_account):
    shards = [tar_bytes(3, seed="a"), tar_bytes(2, seed="b")]
    entry = local_entry(tmp_path, "digits", shards,
                        metadata={"split": "train", "lineage": {"run_id": "r1", "asset_key": "digits"},
                                  "stats": {"num_samples": 5, "num_shards": 2, "total_bytes": 99}})
    result = backend.promote(entry, SCHEMA, description="Five tiny samples", tags=["test"], license="CC0-1.0")
    assert not result.reused
    did = pds_account["did"]
    assert result.entry_uri.startswith(f"at://{did}/{NSID_ENTRY}/")
    assert result.schema_uri.startswith(f"at://{did}/{NSID_SCHEMA}/")
    assert result.label_uri.startswith(f"at://{did}/{NSID_LABEL}/")

    # The published entry: blobs with sha256 checksums, no local path anywhere.
    rec = writer.get_record_uri(result.entry_uri)
    text = json.dumps(rec.value)
    assert str(tmp_path) not in text
    storage = rec.value["storage"]
    assert storage["$type"] == "science.alt.dataset.storageBlobs"
    shas = [hashlib.sha256(d).hexdigest() for d in shards]
    assert [b["checksum"] for b in storage["blobs"]] == [{"algorithm": "sha256", "digest": s} for s in shas]
    assert [b["blob"]["ref"]["$link"] for b in storage["blobs"]] == [blob_cid(s) for s in shas]
    assert all(b["blob"]["mimeType"] == "application/x-tar" for b in storage["blobs"])
    assert [b["blob"]["size"] for b in storage["blobs"]] == [len(d) for d in shards]
    assert rec.value["size"] == {"samples": 5, "bytes": 99, "shards": 2}
    assert rec.value["metadata"] == {"split": "train", "custom": {"lineage": {"run_id": "r1", "asset_key": "digits"}}}
    assert rec.value["tags"] == ["test"] and rec.value["license"] == "CC0-1.0"

    # Anonymous resolution of @handle/name, and the blob bytes read back.
    resolved = anon.resolve(f"@{pds_account['handle']}/digits")
    assert resolved.uri == result.entry_uri
    assert resolved.label_uri == result.label_uri
    assert resolved.schema_ref == result.schema_uri
    assert resolved.data_urls == [f"at://{did}/blob/{blob_cid(s)}" for s in shas]
    assert resolved.checksums == dict(zip(resolved.data_urls, shas))
    assert resolved.metadata["split"] == "train"
    assert resolved.metadata["atmosphere"]["uri"] == result.entry_uri
    assert resolved.metadata["atmosphere"]["description"] == "Five tiny samples"
    for url, data in zip(resolved.data_urls, shards):
        with anon.open_url(url) as f:
            assert f.read() == data
    assert _members(shards[0]) == ["k000000.msgpack", "k000001.msgpack", "k000002.msgpack"]
    assert resolved.cid.startswith("bafyrei")

    # The schema comes back as a local record that the sample decoder accepts.
    schema = anon.get_schema(resolved.schema_ref)
    assert schema["$ref"] == result.schema_uri
    assert schema["fields"] == SCHEMA["fields"]
    assert (schema["name"], schema["version"], schema["description"]) == ("Tiny", "1.0.0", "A tiny sample.")
    from atdata_dagster.samples.schema import type_from_record

    cls = type_from_record(schema)
    assert [f for f in cls.__dataclass_fields__] == ["label", "value", "note"]
    assert anon.get_schema(f"@{pds_account['handle']}/Tiny@1.0.0")["$ref"] == result.schema_uri
    assert anon.get_schema(f"@{pds_account['handle']}/Tiny")["$ref"] == result.schema_uri

    # Resolution by AT URI (DID or handle authority) gives the same entry.
    assert anon.resolve(result.entry_uri).data_urls == resolved.data_urls
    handle_uri = result.entry_uri.replace(did, pds_account["handle"])
    assert anon.resolve(handle_uri).uri == result.entry_uri
    assert anon.resolve(result.label_uri).uri == result.entry_uri


def test_blob_urls_open_through_a_picklable_blob_opener(tmp_path, backend, pds_account):
    # Changed: at:// URLs used to open through an import-time opener registry (the last
    # backend created); now the backend hands out an explicit opener that pickles.
    import pickle

    data = tar_bytes(4)
    entry = local_entry(tmp_path, "reader", [data])
    result = backend.promote(entry, SCHEMA)
    url = backend.resolve(result.entry_uri).data_urls[0]
    opener = backend.blob_opener()
    with opener.open(url) as f:
        assert f.read() == data
    clone = pickle.loads(pickle.dumps(opener))  # no live session crosses the boundary
    assert clone._client is None
    with clone.open(url) as f:
        assert f.read() == data


def test_repromotion_creates_nothing(tmp_path, backend, writer, pds_account):
    did = pds_account["did"]
    entry = local_entry(tmp_path, "again", [tar_bytes(2)])
    first = backend.promote(entry, SCHEMA)
    counts = {c: count(writer, did, c) for c in (NSID_SCHEMA, NSID_ENTRY, NSID_LABEL)}
    assert counts == {NSID_SCHEMA: 1, NSID_ENTRY: 1, NSID_LABEL: 1}

    # 1. The Index stored the URIs on the local entry: reused without a new record.
    entry.metadata["atmosphere"] = {"uri": first.entry_uri, "schema_uri": first.schema_uri,
                                    "label_uri": first.label_uri}
    again = backend.promote(entry, SCHEMA)
    assert again.reused and (again.entry_uri, again.schema_uri, again.label_uri) == (
        first.entry_uri, first.schema_uri, first.label_uri)

    # 2. No URIs on the entry (e.g. a crash before they were stored): found by content.
    fresh = local_entry(tmp_path, "again", [tar_bytes(2)])
    third = backend.promote(fresh, SCHEMA)
    assert third.reused and third.entry_uri == first.entry_uri and third.label_uri == first.label_uri
    assert {c: count(writer, did, c) for c in counts} == counts

    # Changed bytes are a new entry (same schema record, new label).
    (tmp_path / "v2").mkdir()
    changed = local_entry(tmp_path / "v2", "again", [tar_bytes(3)])
    fourth = backend.promote(changed, SCHEMA)
    assert not fourth.reused and fourth.entry_uri != first.entry_uri and fourth.schema_uri == first.schema_uri
    assert count(writer, did, NSID_ENTRY) == 2 and count(writer, did, NSID_SCHEMA) == 1
    assert backend.resolve(f"@{pds_account['handle']}/again").uri == fourth.entry_uri

    # A URI of a deleted record is not trusted: the entry is found (or re-created) instead.
    stale = local_entry(tmp_path, "again", [tar_bytes(2)],
                        metadata={"atmosphere": {"uri": f"at://{did}/{NSID_ENTRY}/3zzzzzzzzzzzz"}})
    assert backend.promote(stale, SCHEMA).entry_uri == first.entry_uri


def test_schema_dedup_across_pages(writer, pds_account):
    backend = AtmosphereBackend(writer, page_size=1)
    did = pds_account["did"]
    for i in range(3):  # other schemas first, so the match is on a later page
        backend.publish_schema({**SCHEMA, "name": f"Other{i}"})
    uri = backend.publish_schema(SCHEMA)
    assert backend.publish_schema(dict(SCHEMA, createdAt="2030-01-01T00:00:00+00:00", description="changed")) == uri
    assert count(writer, did, NSID_SCHEMA) == 4

    # Same name and version, different fields: a new record.
    other_fields = dict(SCHEMA, fields=SCHEMA["fields"][:2])
    uri2 = backend.publish_schema(other_fields)
    assert uri2 != uri and count(writer, did, NSID_SCHEMA) == 5
    assert backend.publish_schema(other_fields) == uri2
    # ndarray dtype is part of the signature, even though JSON Schema does not carry it.
    arr = {"name": "Arr", "version": "1.0.0", "fields": [
        {"name": "x", "fieldType": {"$type": "local#ndarray", "dtype": "uint8"}, "optional": False}]}
    a1 = backend.publish_schema(arr)
    a2 = backend.publish_schema({**arr, "fields": [dict(arr["fields"][0], fieldType={"$type": "local#ndarray", "dtype": "float64"})]})
    assert a1 != a2 and backend.publish_schema(arr) == a1
    assert backend.get_schema(a1)["fields"][0]["fieldType"] == {"$type": "local#ndarray", "dtype": "uint8"}


def test_label_resolution_reads_every_page_and_latest_wins(writer, pds_account):
    backend = AtmosphereBackend(writer, page_size=2)
    schema_uri = backend.publish_schema(SCHEMA)
    e = [backend.publish_entry(name="mnist", schema_uri=schema_uri,
                               shards=[ShardSource.http(f"https://data.example.org/mnist-{i}.tar")])
         for i in range(3)]
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def label(name, target, hours, version=None):
        rec = DatasetLabel(name, target, (base + timedelta(hours=hours)).isoformat(), version)
        return writer.create_record(NSID_LABEL, rec.to_record()).uri

    # The newest createdAt points at e[1], but it is neither the first nor the last record.
    label("mnist", e[0], 1, "1.0")
    label("other", e[2], 50)
    newest = label("mnist", e[1], 30, "2.0")
    label("mnist", e[2], 5, "1.0")
    label("mnist", e[0], 2)
    label("other", e[0], 60)
    label("mnist", e[2], 20, "3.0")
    resolved = backend.resolve(f"@{pds_account['handle']}/mnist")
    assert resolved.uri == e[1] and resolved.label_uri == newest
    assert resolved.data_urls == ["https://data.example.org/mnist-1.tar"]
    assert backend.resolve(f"@{pds_account['handle']}/mnist@1.0").uri == e[2]
    assert backend.resolve("@mnist@3.0").uri == e[2]  # no handle: the logged-in account
    with pytest.raises(NotFoundError, match="mnist.*4.0"):
        backend.resolve(f"@{pds_account['handle']}/mnist@4.0")

    # An entry without any label is found by name (newest entry).
    unlabeled = backend.publish_entry(name="raw", schema_uri=schema_uri,
                                      shards=[ShardSource.http("https://data.example.org/raw.tar")])
    assert backend.resolve(f"@{pds_account['handle']}/raw").uri == unlabeled


def test_s3_and_http_storage_records(writer, pds_account):
    backend = AtmosphereBackend(writer)
    schema_uri = backend.publish_schema(SCHEMA)
    sha = "ab" * 32
    uri = backend.publish_entry(
        name="in-s3", schema_uri=schema_uri, description="on S3",
        shards=[ShardSource.s3("s3://bucket-1/ds/data--0000abcd--000000.tar", sha256=sha,
                               endpoint="http://127.0.0.1:7480/", region="us-east-1"),
                ShardSource.s3("s3://bucket-1/ds/data--0000abcd--000001.tar", endpoint="http://127.0.0.1:7480",
                               region="us-east-1")],
    )
    value = writer.get_record_uri(uri).value
    assert value["storage"] == {
        "$type": "science.alt.dataset.storageS3", "bucket": "bucket-1", "region": "us-east-1",
        "endpoint": "http://127.0.0.1:7480",
        "shards": [{"key": "ds/data--0000abcd--000000.tar", "checksum": {"algorithm": "sha256", "digest": sha}},
                   {"key": "ds/data--0000abcd--000001.tar", "checksum": {"algorithm": "none", "digest": ""}}],
    }
    assert value["size"] == {"shards": 2}
    resolved = backend.resolve(uri)
    assert resolved.data_urls == ["s3://bucket-1/ds/data--0000abcd--000000.tar",
                                  "s3://bucket-1/ds/data--0000abcd--000001.tar"]
    assert resolved.checksums == {"s3://bucket-1/ds/data--0000abcd--000000.tar": sha}
    info = resolved.metadata["atmosphere"]
    assert (info["storage"], info["bucket"], info["endpoint"], info["region"]) == (
        "s3", "bucket-1", "http://127.0.0.1:7480", "us-east-1")

    http = backend.publish_entry(name="on-web", schema_uri=schema_uri,
                                 shards=[ShardSource.http("https://data.example.org/a.tar", sha256=sha)])
    assert writer.get_record_uri(http).value["storage"] == {
        "$type": "science.alt.dataset.storageHttp",
        "shards": [{"url": "https://data.example.org/a.tar", "checksum": {"algorithm": "sha256", "digest": sha}}],
    }
    # Promotion of an entry whose shards live on S3 references them (store endpoint from the store).
    from atdata_dagster.index.entry import LocalDatasetEntry

    class Store:  # the two attributes shard_sources_for reads from an S3DataStore
        bucket, endpoint_url, region_name = "bucket-2", "http://127.0.0.1:9000", None

    s3_entry = LocalDatasetEntry("s3ds", "atdata://local/schema/Tiny@1.0.0", ["s3://bucket-2/p/x.tar"],
                                 {"checksums": {"s3://bucket-2/p/x.tar": sha}})
    result = backend.promote(s3_entry, SCHEMA, shard_sources=shard_sources_for(s3_entry, stores=[Store()]))
    storage = writer.get_record_uri(result.entry_uri).value["storage"]
    assert (storage["bucket"], storage["endpoint"], storage["shards"][0]["key"]) == (
        "bucket-2", "http://127.0.0.1:9000", "p/x.tar")
    assert result.schema_uri == schema_uri


def test_list_datasets_of_the_logged_in_account(tmp_path, backend, anon):
    backend.promote(local_entry(tmp_path, "one", [tar_bytes(1, seed="x")]), SCHEMA)
    backend.promote(local_entry(tmp_path, "two", [tar_bytes(1, seed="y")]), SCHEMA)
    names = sorted(e.name for e in backend.list_datasets())
    assert names == ["one", "two"]


def test_from_plain_atproto_clients(pds, pds_account, tmp_path):
    from atproto import Client

    logged_in = Client(base_url=pds["url"])
    logged_in.login(pds_account["handle"], pds_account["password"], fetch_bsky_profile=False)
    client = AtmosphereClient.from_client(logged_in)
    assert client.authenticated and client.did == pds_account["did"] and client.handle == pds_account["handle"]
    result = AtmosphereBackend(client).promote(local_entry(tmp_path, "plain"), SCHEMA)

    anonymous = AtmosphereClient.from_client(Client(base_url=pds["url"]))
    assert not anonymous.authenticated
    resolved = AtmosphereBackend(anonymous).resolve(f"@{pds_account['handle']}/plain")
    assert resolved.uri == result.entry_uri


def test_legacy_records_are_readable(writer, pds_account, anon):
    legacy_schema = {
        "$type": "ac.foundation.dataset.schema", "name": "Old", "version": "1.0.0",
        "fields": [{"name": "a", "fieldType": {"$type": "ac.foundation.dataset.schemaType#primitive",
                                               "primitive": "int"}, "optional": False},
                   {"name": "v", "fieldType": {"$type": "ac.foundation.dataset.schemaType#ndarray",
                                               "dtype": "uint8"}, "optional": True}],
        "createdAt": "2025-01-01T00:00:00Z", "$atdataSchemaVersion": 1,
    }
    suri = writer.create_record("ac.foundation.dataset.schema", legacy_schema).uri
    rec = {"$type": "ac.foundation.dataset.record", "name": "old", "schemaRef": suri,
           "storage": {"$type": "ac.foundation.dataset.storageExternal", "urls": ["https://x.example/{0..1}.tar"]},
           "createdAt": "2025-01-01T00:00:00Z",
           "metadata": {"$bytes": "gaFrpHRlc3Q"}}  # msgpack {"k": "test"}, base64 without padding
    euri = writer.create_record("ac.foundation.dataset.record", rec).uri
    resolved = anon.resolve(euri)
    assert resolved.data_urls == ["https://x.example/{0..1}.tar"] and resolved.metadata["k"] == "test"
    schema = anon.get_schema(resolved.schema_ref)
    assert schema["fields"] == [
        {"name": "a", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": False},
        {"name": "v", "fieldType": {"$type": "local#ndarray", "dtype": "uint8"}, "optional": True}]
    assert anon.resolve(f"@{pds_account['handle']}/old").uri == euri  # by name (no labels in 0.3.x)


def test_write_samples_then_read_back_through_the_shard_writer(tmp_path, backend, anon, pds_account):
    """A shard written by our own writer (when it exists) round-trips through the PDS."""
    writer_mod = pytest.importorskip("atdata_dagster.shards.writer")
    disk = pytest.importorskip("atdata_dagster.stores.disk")
    packable = pytest.importorskip("atdata_dagster.samples.packable")
    from atdata_dagster.samples.schema import build_schema_record, type_from_record

    @packable.packable
    class Point:
        label: str
        value: int

    store = disk.LocalDiskStore(tmp_path / "store")
    with writer_mod.ShardWriter(store, "points", maxcount=2, sample_type=Point) as w:
        for i in range(5):
            w.write_sample(Point(label=f"p{i}", value=i))
        result = w.close()
    from atdata_dagster.index.entry import LocalDatasetEntry

    entry = LocalDatasetEntry("points", "atdata://local/schema/Point@1.0.0", list(result),
                              {"checksums": result.checksums})
    out = backend.promote(entry, build_schema_record(Point, version="1.0.0"),
                          shard_sources=shard_sources_for(entry, stores=[store], opener=store.open_read))
    resolved = anon.resolve(f"@{pds_account['handle']}/points")
    assert resolved.uri == out.entry_uri and len(resolved.data_urls) == 3
    from atdata_dagster.shards.reader import iter_samples

    cls = type_from_record(anon.get_schema(resolved.schema_ref))
    got = []
    for url in resolved.data_urls:
        with anon.open_url(url) as f:
            got += [cls.from_bytes(payload) for _key, payload in iter_samples(f, url)]
    assert sorted((p.label, p.value) for p in got) == [(f"p{i}", i) for i in range(5)]


class _OtherPds:
    """A stand-in for a PDS that does not host the account (answers like one: repo not found)."""

    def __enter__(self):
        import json as _json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                body = _json.dumps({"error": "InvalidRequest", "message": "Could not find repo"}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_records_and_blobs_of_an_account_on_another_pds(tmp_path, pds, backend, pds_account):
    """Reads go to the PDS named in the account's DID document (found through the PLC)."""
    data = tar_bytes(2, seed="far")
    result = backend.promote(local_entry(tmp_path, "far", [data]), SCHEMA)
    with _OtherPds() as other:
        far = AtmosphereBackend(AtmosphereClient(other, plc_url=pds["plc_url"]))
        resolved = far.resolve(f"@{pds_account['did']}/far")
        assert resolved.uri == result.entry_uri
        assert far.client.pds_endpoint(pds_account["did"]) == pds["url"]
        with far.open_url(resolved.data_urls[0]) as f:
            assert f.read() == data
        assert far.get_schema(resolved.schema_ref)["$ref"] == result.schema_uri
