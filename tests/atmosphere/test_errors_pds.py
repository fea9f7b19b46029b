"""Every atmosphere error path, against real servers (the local PDS, a closed port, a 429 server)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atdata_dagster.atmosphere import (
    NSID_ENTRY,
    NSID_LABEL,
    NSID_SCHEMA,
    AtmosphereBackend,
    AtmosphereClient,
    ShardSource,
)
from atdata_dagster.errors import (
    AtmosphereAuthError,
    AtmosphereConnectionError,
    AtmosphereError,
    AtmosphereNotFoundError,
    AtmosphereRateLimitError,
    AtmosphereUnavailableError,
    BlobTooLargeError,
    NotFoundError,
    PartialPublishError,
    RecordError,
)

from .conftest import SCHEMA, count, local_entry, tar_bytes

# With --dist loadgroup one worker runs every PDS test (one server); each worker can start its own.
pytestmark = [pytest.mark.pds, pytest.mark.xdist_group("pds")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_password(pds, pds_account):
    secret = "not-the-password-123"
    client = AtmosphereClient(pds["url"], handle=pds_account["handle"], password=secret)
    with pytest.raises(AtmosphereAuthError) as info:
        client.create_record(NSID_LABEL, {"$type": NSID_LABEL, "name": "x", "datasetUri": "at://x/y/z",
                                          "createdAt": "2026-01-01T00:00:00Z"})
    msg = str(info.value)
    assert f"authentication failed for {pds_account['handle']} at {pds['url']}" in msg
    assert secret not in msg and secret not in repr(client)
    assert not isinstance(info.value, KeyError)


def test_unknown_handle_and_unknown_dataset(pds, anon, pds_account):
    with pytest.raises(AtmosphereNotFoundError) as info:
        anon.resolve("@nobody-here.test/mnist")
    assert isinstance(info.value, KeyError) and isinstance(info.value, NotFoundError)
    assert "nobody-here.test" in str(info.value)
    with pytest.raises(KeyError) as info2:  # the handle exists, the dataset does not
        anon.resolve(f"@{pds_account['handle']}/no-such-data")
    assert pds_account["handle"] in str(info2.value) and "no-such-data" in str(info2.value)
    with pytest.raises(NotFoundError, match="Schema not found"):
        anon.get_schema(f"@{pds_account['handle']}/Nope@1.0.0")
    with pytest.raises(NotFoundError):
        anon.resolve(f"at://{pds_account['did']}/{NSID_ENTRY}/3zzzzzzzzzzzz")


def test_pds_down_names_the_service():
    url = f"http://127.0.0.1:{_closed_port()}"
    anon = AtmosphereBackend(AtmosphereClient(url))
    with pytest.raises(AtmosphereConnectionError, match=url.replace(".", r"\.")):
        anon.resolve("@someone.test/mnist")
    writer = AtmosphereClient(url, handle="someone.test", password="pw-xyz-123")
    with pytest.raises(AtmosphereConnectionError) as info:
        writer.login()
    assert url in str(info.value) and "pw-xyz-123" not in str(info.value)


class _TooMany(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        body = json.dumps({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_rate_limit_reports_retry_after():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TooMany)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(AtmosphereRateLimitError) as info:
            AtmosphereBackend(AtmosphereClient(url)).resolve("@someone.test/mnist")
        assert info.value.retry_after == 7
        assert url in str(info.value) and "retry after 7 s" in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_record_of_the_wrong_type(writer, anon, pds_account):
    # The PDS refuses a $type that differs from the collection, but stores a record without
    # one (validate=False): a label-shaped record in the entry collection.
    bad = writer.create_record(NSID_ENTRY, {"name": "bad", "datasetUri": "at://x/y/z",
                                            "createdAt": "2026-01-01T00:00:00Z"}).uri
    with pytest.raises(RecordError) as info:
        anon.resolve(bad)
    assert bad in str(info.value) and NSID_ENTRY in str(info.value)
    # The right $type with the wrong shape.
    shapeless = writer.create_record(NSID_ENTRY, {"$type": NSID_ENTRY, "title": "no name or schemaRef"}).uri
    with pytest.raises(RecordError, match=f"{shapeless}.*schemaRef"):
        anon.resolve(shapeless)
    # A label pointing at a schema record: the target is not an entry.
    schema_uri = AtmosphereBackend(writer).publish_schema(SCHEMA)
    AtmosphereBackend(writer).publish_label("pointing-wrong", schema_uri)
    with pytest.raises(RecordError, match=schema_uri):
        anon.resolve(f"@{pds_account['handle']}/pointing-wrong")
    with pytest.raises(RecordError, match="expected 'science.alt.dataset.schema'"):
        anon.get_schema(bad)
    # An entry record with an unknown storage type.
    odd = writer.create_record(NSID_ENTRY, {"$type": NSID_ENTRY, "name": "odd", "schemaRef": schema_uri,
                                            "storage": {"$type": "com.example.storageFtp", "host": "x"},
                                            "createdAt": "2026-01-01T00:00:00Z"}).uri
    with pytest.raises(RecordError, match="com.example.storageFtp"):
        anon.resolve(odd)


def test_blob_over_the_limit_publishes_nothing(tmp_path, writer, pds_account):
    backend = AtmosphereBackend(writer, blob_limit=4096)
    entry = local_entry(tmp_path, "big", [tar_bytes(2), tar_bytes(50, pad=200)])
    with pytest.raises(BlobTooLargeError) as info:
        backend.promote(entry, SCHEMA)
    msg = str(info.value)
    assert "blob_limit=4096" in msg and "S3" in msg and str(tmp_path) not in msg
    assert isinstance(info.value, AtmosphereError)
    did = pds_account["did"]
    assert [count(writer, did, c) for c in (NSID_SCHEMA, NSID_ENTRY, NSID_LABEL)] == [0, 0, 0]

    total = AtmosphereBackend(writer, total_limit=15000)
    with pytest.raises(BlobTooLargeError, match="total_limit"):
        total.promote(local_entry(tmp_path, "many", [tar_bytes(40, seed=str(i), pad=100) for i in range(3)]), SCHEMA)
    assert count(writer, did, NSID_ENTRY) == 0


def test_pds_upload_limit_is_reported(tmp_path, writer, pds_account):
    # The PDS's default upload limit is 5 MiB: our limit is higher, the PDS refuses (413).
    entry = local_entry(tmp_path, "huge", [tar_bytes(1, pad=6 * 1024 * 1024)])
    with pytest.raises(BlobTooLargeError, match="413"):
        AtmosphereBackend(writer).promote(entry, SCHEMA)
    assert count(writer, pds_account["did"], NSID_ENTRY) == 0


def test_anonymous_writes_say_how_to_log_in(pds, anon, tmp_path):
    with pytest.raises(AtmosphereUnavailableError, match="handle=.*password="):
        anon.promote(local_entry(tmp_path), SCHEMA)
    with pytest.raises(AtmosphereUnavailableError):
        anon.list_datasets()
    with pytest.raises(AtmosphereUnavailableError):
        anon.resolve("@mnist")  # no handle and no session
    with pytest.raises(AtmosphereUnavailableError):
        anon.client.upload_blob(b"x")


def test_publishing_under_another_handle_is_refused(backend, pds_account):
    backend.ensure_writable_for(pds_account["handle"])
    backend.ensure_writable_for(None)
    with pytest.raises(AtmosphereUnavailableError, match="logged in as"):
        backend.ensure_writable_for("someone-else.test")


class _FlakyLabels(AtmosphereBackend):
    failures = 0

    def publish_label(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            raise AtmosphereError("injected label failure")
        return super().publish_label(*args, **kwargs)


def test_label_failure_is_retried_then_reported_with_the_entry(tmp_path, writer, pds_account):
    did = pds_account["did"]
    once = _FlakyLabels(writer)
    once.failures = 1  # one failure: the retry succeeds
    ok = once.promote(local_entry(tmp_path, "flaky1"), SCHEMA)
    assert ok.label_uri and count(writer, did, NSID_LABEL) == 1

    twice = _FlakyLabels(writer)
    twice.failures = 2
    entry = local_entry(tmp_path, "flaky2", [tar_bytes(2, seed="z")])
    with pytest.raises(PartialPublishError) as info:
        twice.promote(entry, SCHEMA)
    assert info.value.entry_uri and info.value.entry_uri in str(info.value)
    assert count(writer, did, NSID_ENTRY) == 2 and count(writer, did, NSID_LABEL) == 1
    # Re-running reuses the entry and adds only the missing label.
    again = AtmosphereBackend(writer).promote(entry, SCHEMA)
    assert again.reused and again.entry_uri == info.value.entry_uri
    assert count(writer, did, NSID_ENTRY) == 2 and count(writer, did, NSID_LABEL) == 2


def test_mixed_or_unpublishable_shards_are_refused_before_publishing(tmp_path, backend, writer, pds_account):
    from atdata_dagster.index.entry import LocalDatasetEntry

    mixed = [ShardSource.http("https://x.example/a.tar"), ShardSource.s3("s3://b/k.tar")]
    with pytest.raises(AtmosphereError, match="mixes shard locations"):
        backend.publish_entry(name="mixed", schema_uri="at://did:plc:x/science.alt.dataset.schema/a", shards=mixed)
    relative = LocalDatasetEntry("rel", "atdata://local/schema/Tiny@1.0.0", ["data/shard-{0..3}.tar"])
    with pytest.raises(AtmosphereError, match="cannot be published"):
        backend.promote(relative, SCHEMA)
    assert count(writer, pds_account["did"], NSID_SCHEMA) == 0


def test_a_shard_that_changed_since_indexing_is_not_published(tmp_path, backend, writer, pds_account):
    from atdata_dagster.errors import ChecksumMismatchError

    entry = local_entry(tmp_path, "changed", [tar_bytes(2)])
    with open(entry.data_urls[0], "ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(ChecksumMismatchError, match="changed"):
        backend.promote(entry, SCHEMA)
    assert count(writer, pds_account["did"], NSID_ENTRY) == 0
