"""Hostile remote input stays bounded: foreign records, PDS paging, blob / DID reads, endless shards.

A record on somebody else's PDS, the PDS itself, a PLC directory and any HTTP server a
record names are all input from strangers. These tests play each of them against the
real local PDS (tests/fixtures/pds.py), the real RGW S3 (tests/fixtures/s3.py) and small
stdlib HTTP servers on 127.0.0.1 for the bodies no honest server sends (endless,
oversized, redirecting elsewhere):

* a foreign record cannot make a reader fetch from the reader's own buckets with the
  reader's credentials; ``Index(allow_credentials_for=[...])`` opts a bucket in;
* a ``Dataset`` sent to a spawned worker keeps its credentials' route, and says so when
  the route cannot be pickled;
* listing a PDS stops on a page / record / time budget; blob and DID-document reads are
  size-bounded and do not follow redirects to other hosts;
* ``verify`` of an endless HTTP shard stops at its recorded size.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from atdata_dagster.atmosphere import (
    NSID_ENTRY,
    NSID_LABEL,
    AtmosphereBackend,
    AtmosphereClient,
    Checksum,
    EntryRecord,
    ReadLimits,
    StorageS3,
)
from atdata_dagster.atmosphere.records import S3Shard, parse_blob_url
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import AtmosphereLimitError, ConfigurationTypeError, StoreError
from atdata_dagster.index.entry import LocalDatasetEntry
from atdata_dagster.index.index import Index
from atdata_dagster.samples import DictSample, packable
from atdata_dagster.stores import AnonymousS3Opener, HttpOpener, S3Opener
from atdata_dagster.stores.s3 import S3DataStore
from tests.atmosphere.conftest import SCHEMA, tar_bytes
from tests.fixtures.s3 import boto3_client

#: what an "endless" body serves at most before the test server gives up (a reader that
#: does not stop reads all of it; one that stops reads a few MiB including socket buffers)
ENDLESS_CAP = 256 << 20
#: bytes a bounded reader may make the server send (the cap plus kernel socket buffers)
BOUNDED = 32 << 20


@packable
class Cell:
    label: str
    value: int


# --------------------------------------------------------------------------- small hostile servers


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        self.server.hits.append(parts.path)
        self.server.route(self, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, route: Callable[[_Handler, str, dict], None]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.route = route
        self.hits: list[str] = []
        self.sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def serve(route: Callable[[_Handler, str, dict], None]) -> Iterator[_Server]:
    server = _Server(route)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def send_json(h: _Handler, obj: Any, status: int = 200) -> None:
    body = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def send_endless(h: _Handler, prefix: bytes = b"", content_type: str = "application/octet-stream") -> None:
    """A body with no length that never ends (HTTP/1.0: it would end only when the server closes)."""
    h.send_response(200)
    h.send_header("Content-Type", content_type)
    h.end_headers()
    chunk = b"x" * 65536
    try:
        h.wfile.write(prefix)
        while h.server.sent < ENDLESS_CAP:
            h.wfile.write(chunk)
            h.server.sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def redirect(h: _Handler, location: str) -> None:
    h.send_response(302)
    h.send_header("Location", location)
    h.send_header("Content-Length", "0")
    h.end_headers()


DID = "did:plc:hostile0000000000000000"


def did_doc(endpoint: str) -> dict:
    return {"id": DID, "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                    "serviceEndpoint": endpoint}]}


def hostile_client(url: str, **limits: Any) -> AtmosphereClient:
    return AtmosphereClient(url, plc_url=url, timeout=10, limits=ReadLimits(**limits))


# --------------------------------------------------------------------------- foreign records and credentials


def publish_bait(pds: dict, account: dict, bucket: str, key: str, sha: str, endpoint: str) -> str:
    """What an attacker does: an entry record whose shards name somebody else's bucket."""
    client = AtmosphereClient(pds["url"], handle=account["handle"], password=account["password"], plc_url=pds["plc_url"])
    schema_uri = AtmosphereBackend(client).publish_schema(SCHEMA)
    storage = StorageS3(bucket, (S3Shard(key, Checksum.sha256(sha)),), endpoint=endpoint)
    client.create_record(NSID_ENTRY, EntryRecord(name="bait", schema_ref=schema_uri, storage=storage).to_record())
    return f"@{account['handle']}/bait"


def test_a_foreign_record_cannot_make_the_reader_use_its_own_s3_credentials(
        pds, pds_account, rgw_server, s3_client, s3_bucket, tmp_path):
    data = tar_bytes(3, seed="secret")
    key = "private/data--000000.tar"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=data)  # private: only credentials can read it
    ref = publish_bait(pds, pds_account, s3_bucket, key, hashlib.sha256(data).hexdigest(), rgw_server.endpoint_url)

    def victim(**kw: Any) -> Index:
        store = S3DataStore(rgw_server.credentials, bucket=s3_bucket)  # the reader's own credentialed store
        return Index(path=str(tmp_path / f"{uuid.uuid4().hex}.db"), data_store=store,
                     atmosphere=AtmosphereClient(pds["url"], plc_url=pds["plc_url"]), **kw)

    ds = victim().dataset(ref, DictSample)
    url = ds.list_shards()[0]
    assert isinstance(ds.opener.route_for(url), AnonymousS3Opener)
    with pytest.raises(StoreError, match="(?i)access denied") as info:
        list(ds)
    assert "no credentials" in str(info.value)
    assert victim().verify(ref)[url].startswith("error:")  # verify goes through the same route

    # the bucket owner opts the bucket in: its own store (endpoint and credentials) reads it
    trusting = victim(allow_credentials_for=[s3_bucket])
    ds = trusting.dataset(ref, DictSample)
    assert isinstance(ds.opener.route_for(url), S3Opener)
    assert [s["label"] for s in ds] == ["secret0", "secret1", "secret2"]
    assert trusting.verify(ref) == {url: "ok"}

    # what the record's bucket serves to everyone is read anonymously, without any credentials
    s3_client.put_object_acl(Bucket=s3_bucket, Key=key, ACL="public-read")
    assert [s["label"] for s in victim().dataset(ref, DictSample)] == ["secret0", "secret1", "secret2"]


def test_allow_credentials_for_takes_bucket_names_only(tmp_path):
    with pytest.raises(ConfigurationTypeError, match="allow_credentials_for"):
        Index(path=str(tmp_path / "i.db"), atmosphere=None, allow_credentials_for="my-bucket")
    with pytest.raises(ConfigurationTypeError, match="bucket names"):
        Index(path=str(tmp_path / "i.db"), atmosphere=None, allow_credentials_for=["s3://my-bucket/x"])


# --------------------------------------------------------------------------- openers across processes


def _labels_in_worker(ds: Dataset) -> list[str]:
    return [c.label for c in ds]


@pytest.fixture
def no_aws_environment(monkeypatch):
    """Nothing on the default credential chain: only a route the Dataset carries can reach the bucket."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def test_a_dataset_in_a_spawned_worker_keeps_its_credentials_route(rgw_server, tmp_path, no_aws_environment):
    suffix = uuid.uuid4().hex[:8]
    user = rgw_server.create_user(f"worker-{suffix}", f"WORKER{suffix.upper()}", f"worker-secret-{suffix}")
    bucket = f"atd-worker-{suffix}"
    boto3_client(user).create_bucket(Bucket=bucket)
    store = S3DataStore(bucket=bucket, **user)
    index = Index(path=str(tmp_path / "i.db"), data_store=store, atmosphere=None)
    index.write_samples([Cell(label=f"c{i}", value=i) for i in range(5)], name="cells", maxcount=2)
    ds = index.dataset("cells", Cell)
    assert ds.list_shards()[0].startswith(f"s3://{bucket}/") and len(ds.list_shards()) == 3

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_labels_in_worker, (ds,)) == [f"c{i}" for i in range(5)]
    assert f"worker-secret-{suffix}" not in repr(ds.opener)


def test_a_dataset_whose_route_cannot_be_pickled_says_so(rgw_server, s3_client, s3_bucket, tmp_path):
    store = S3DataStore(bucket=s3_bucket, client=s3_client, endpoint_url=rgw_server.endpoint_url)
    index = Index(path=str(tmp_path / "i.db"), data_store=store, atmosphere=None)
    index.write_samples([Cell(label="a", value=1)], name="cells")
    ds = index.dataset("cells", Cell)
    assert [c.label for c in ds] == ["a"]  # usable where it was made
    with pytest.raises(ConfigurationTypeError, match="cannot be pickled.*client="):
        pickle.dumps(ds)
    custom = Dataset[Cell](ds.list_shards(), opener=lambda url: store.open_read(url))
    with pytest.raises(ConfigurationTypeError, match="cannot be pickled: its shard opener"):
        pickle.dumps(custom)


# --------------------------------------------------------------------------- PDS paging budgets


def test_paging_through_a_real_pds_stops_at_the_page_and_record_budgets(pds, pds_account):
    writer = AtmosphereClient(pds["url"], handle=pds_account["handle"], password=pds_account["password"],
                              plc_url=pds["plc_url"])
    for i in range(5):
        writer.create_record(NSID_LABEL, {"$type": NSID_LABEL, "name": f"l{i}", "createdAt": "2026-01-01T00:00:00Z",
                                          "datasetUri": "at://did:plc:x/science.alt.dataset.entry/1"})
    did = pds_account["did"]

    def reader(**limits: Any) -> AtmosphereClient:
        return AtmosphereClient(pds["url"], plc_url=pds["plc_url"], limits=ReadLimits(**limits))

    assert len(list(reader().list_records(did, NSID_LABEL, page_size=2))) == 5
    with pytest.raises(AtmosphereLimitError, match="stopped after 2 pages.*max_pages"):
        list(reader(max_pages=2).list_records(did, NSID_LABEL, page_size=2))
    with pytest.raises(AtmosphereLimitError, match="4 records.*max_records"):
        list(reader(max_records=4).list_records(did, NSID_LABEL, page_size=100))
    # resolution does not silently pick a label from a partial listing
    with pytest.raises(AtmosphereLimitError):
        AtmosphereBackend(reader(max_pages=1), page_size=1).resolve(f"@{pds_account['handle']}/l4")


def _endless_cursor(delay: float = 0.0):
    def route(h: _Handler, path: str, q: dict) -> None:
        if path.endswith("com.atproto.repo.listRecords"):
            n = len(h.server.hits)
            if delay:
                time.sleep(delay)
            records = [] if n > 3000 else [{"uri": f"at://{DID}/{NSID_LABEL}/r{n}", "cid": "bafy", "value": {"n": n}}]
            send_json(h, {"records": records, "cursor": f"c{n}"})
        else:
            send_json(h, {"error": "NotFound", "message": "not here"}, 404)

    return route


def test_an_endless_cursor_stops_at_the_page_budget():
    with serve(_endless_cursor()) as server:
        with pytest.raises(AtmosphereLimitError, match="50 pages"):
            list(hostile_client(server.url, max_pages=50).list_records(DID, NSID_LABEL, page_size=1))
        assert len(server.hits) == 50


def test_a_slow_endless_listing_stops_at_the_time_budget():
    with serve(_endless_cursor(delay=0.05)) as server:
        start = time.monotonic()
        with pytest.raises(AtmosphereLimitError, match="max_list_seconds"):
            list(hostile_client(server.url, max_list_seconds=0.5).list_records(DID, NSID_LABEL, page_size=1))
        assert time.monotonic() - start < 5 and len(server.hits) < 30


def test_xrpc_reads_do_not_follow_redirects_to_other_hosts():
    with serve(lambda h, p, q: send_json(h, {"records": [], "cursor": None})) as elsewhere:
        with serve(lambda h, p, q: redirect(h, f"{elsewhere.url}{p}")) as server:
            with pytest.raises(AtmosphereLimitError, match="redirects .* to another host"):
                list(hostile_client(server.url).list_records(DID, NSID_LABEL))
        assert elsewhere.hits == []


# --------------------------------------------------------------------------- blob and DID-document bounds


def test_blob_reads_on_a_real_pds_are_size_bounded(pds, pds_account, tmp_path):
    writer = AtmosphereClient(pds["url"], handle=pds_account["handle"], password=pds_account["password"],
                              plc_url=pds["plc_url"])
    data = tar_bytes(3, pad=40_000)  # ~120 kB, served once an entry record references it
    shard = tmp_path / "big.tar"
    shard.write_bytes(data)
    entry = LocalDatasetEntry(name="big", schema_ref="atdata://local/schema/Tiny@1.0.0", data_urls=[str(shard)],
                              metadata={"checksums": {str(shard): hashlib.sha256(data).hexdigest()}})
    backend = AtmosphereBackend(writer)
    did, cid = parse_blob_url(backend.resolve(backend.promote(entry, SCHEMA).entry_uri).data_urls[0])
    reader = AtmosphereClient(pds["url"], plc_url=pds["plc_url"], limits=ReadLimits(max_blob_bytes=10_000))
    with pytest.raises(AtmosphereLimitError, match="max_blob_bytes"):
        with reader.get_blob(did, cid) as f:
            f.read()
    with reader.get_blob(did, cid, max_bytes=len(data)) as f:
        assert f.read() == data


def _pds_serving_blob(send_blob: Callable[[_Handler], None]):
    def route(h: _Handler, path: str, q: dict) -> None:
        if path.endswith("com.atproto.repo.describeRepo"):
            send_json(h, {"did": DID, "handle": "h.test", "didDoc": did_doc(f"http://127.0.0.1:{h.server.server_address[1]}")})
        elif path.endswith("com.atproto.sync.getBlob"):
            send_blob(h)
        else:
            send_json(h, {"error": "NotFound", "message": "not here"}, 404)

    return route


def test_an_endless_blob_stops_at_the_blob_budget():
    with serve(_pds_serving_blob(send_endless)) as server:
        client = hostile_client(server.url, max_blob_bytes=1 << 20)
        with pytest.raises(AtmosphereLimitError, match="longer than 1048576 bytes"):
            with client.get_blob(DID, "bafkreiendless") as f:
                while f.read(1 << 16):
                    pass
        assert server.sent < BOUNDED


def test_a_blob_announcing_more_than_the_budget_is_refused_before_reading():
    def huge(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(1 << 40))
        h.end_headers()
        h.wfile.write(b"x" * 1024)

    with serve(_pds_serving_blob(huge)) as server:
        with pytest.raises(AtmosphereLimitError, match=f"announces {1 << 40} bytes"):
            hostile_client(server.url, max_blob_bytes=1 << 20).get_blob(DID, "bafkreihuge")


def test_blob_reads_do_not_follow_redirects_to_other_hosts():
    with serve(lambda h, p, q: send_endless(h)) as elsewhere:
        with serve(_pds_serving_blob(lambda h: redirect(h, f"{elsewhere.url}/blob"))) as server:
            with pytest.raises(AtmosphereLimitError, match="redirects .* to another host"):
                hostile_client(server.url).get_blob(DID, "bafkreiredirect")
        assert elsewhere.hits == []


def _plc_serving(send_doc: Callable[[_Handler], None]):
    def route(h: _Handler, path: str, q: dict) -> None:
        if path.startswith("/xrpc/"):  # the PDS does not know the repo: resolve through the PLC directory
            send_json(h, {"error": "RepoNotFound", "message": "Could not find repo"}, 400)
        elif path == f"/{DID}":
            send_doc(h)
        else:
            send_json(h, {"error": "NotFound"}, 404)

    return route


def test_an_endless_did_document_stops_at_its_budget():
    with serve(_plc_serving(lambda h: send_endless(h, b'{"id": "%s", "pad": "' % DID.encode(), "application/json"))) as server:
        with pytest.raises(AtmosphereLimitError, match="DID document .* longer than 65536 bytes"):
            hostile_client(server.url, max_did_document_bytes=65536).pds_endpoint(DID)
        assert server.sent < BOUNDED


def test_did_document_reads_do_not_follow_redirects_to_other_hosts():
    with serve(lambda h, p, q: send_json(h, did_doc("http://127.0.0.1:9"))) as elsewhere:
        with serve(_plc_serving(lambda h: redirect(h, f"{elsewhere.url}/{DID}"))) as server:
            with pytest.raises(AtmosphereLimitError, match="redirects .* to another host"):
                hostile_client(server.url).pds_endpoint(DID)
        assert elsewhere.hits == []


def test_did_document_same_host_redirects_are_still_followed():
    def route(h: _Handler, path: str, q: dict) -> None:
        if path == f"/{DID}":
            redirect(h, f"/moved/{DID}")
        elif path == f"/moved/{DID}":
            send_json(h, did_doc("http://127.0.0.1:9"))
        else:
            send_json(h, {"error": "RepoNotFound", "message": "Could not find repo"}, 400)

    with serve(route) as server:
        assert hostile_client(server.url).pds_endpoint(DID) == "http://127.0.0.1:9"


# --------------------------------------------------------------------------- HTTP shards


def test_verify_of_an_endless_http_shard_stops_at_its_recorded_size(tmp_path):
    recorded = b"x" * 4096
    with serve(lambda h, p, q: send_endless(h)) as server:
        url = f"{server.url}/shard.tar"
        entry = LocalDatasetEntry(name="endless", schema_ref="atdata://local/schema/Cell@1.0.0", data_urls=[url],
                                  metadata={"checksums": {url: hashlib.sha256(recorded).hexdigest()},
                                            "stats": {"shard_bytes": [len(recorded)]}})
        index = Index(path=str(tmp_path / "i.db"), atmosphere=None)
        start = time.monotonic()
        assert index.verify(entry) == {url: "mismatch"}
        assert time.monotonic() - start < 10
        assert server.sent < BOUNDED


def test_http_shards_do_not_follow_redirects_to_other_hosts(tmp_path):
    data = tar_bytes(2)

    def shard(h: _Handler, path: str, q: dict) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    with serve(shard) as elsewhere:
        def route(h: _Handler, path: str, q: dict) -> None:
            if path == "/same.tar":
                redirect(h, "/real.tar")
            elif path == "/real.tar":
                shard(h, path, q)
            else:
                redirect(h, f"{elsewhere.url}/real.tar")

        with serve(route) as server:
            assert len(list(Dataset(f"{server.url}/same.tar"))) == 2  # same host: followed
            with pytest.raises(StoreError, match="redirects .* to another host"):
                list(Dataset(f"{server.url}/away.tar"))
        assert elsewhere.hits == []


def test_an_http_opener_with_a_byte_limit_refuses_longer_bodies():
    def announced(h: _Handler, path: str, q: dict) -> None:
        if path == "/announced.tar":
            h.send_response(200)
            h.send_header("Content-Length", str(1 << 40))
            h.end_headers()
            h.wfile.write(b"x" * 1024)
        else:
            send_endless(h)

    with serve(announced) as server:
        opener = HttpOpener(max_bytes=1 << 20)
        assert pickle.loads(pickle.dumps(opener)) == opener
        with pytest.raises(StoreError, match=f"announces {1 << 40} bytes, over the limit"):
            opener.open(f"{server.url}/announced.tar")
        with pytest.raises(StoreError, match="longer than the limit of 1048576 bytes"):
            with opener.open(f"{server.url}/endless.tar") as f:
                while f.read(1 << 16):
                    pass
        assert server.sent < BOUNDED


@pytest.mark.parametrize("bad", [{"max_pages": 0}, {"max_records": -1}, {"max_blob_bytes": True},
                                 {"max_list_seconds": 0}, {"max_did_document_bytes": 1.5}])
def test_read_limits_refuse_budgets_that_would_disable_the_bound(bad):
    with pytest.raises(ValueError, match="ReadLimits.max_"):
        ReadLimits(**bad)
