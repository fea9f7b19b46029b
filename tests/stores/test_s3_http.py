"""The http(s):// shard opener against a stdlib HTTP server on loopback: streaming, resume, errors."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atdata_dagster.errors import StoreError
from atdata_dagster.stores import default_opener
from atdata_dagster.stores.http import open_http_url

DATA = os.urandom(3 * 1024 * 1024 + 5)


class _Handler(BaseHTTPRequestHandler):
    cut_first = True  # drop the connection halfway through the first full GET
    ranges = True
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.headers.get("Range") or "full")
        if not self.path.startswith("/shard.tar"):
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and self.ranges:
            start = int(rng.split("=")[1].rstrip("-"))
            if self.headers.get("If-Match") not in (None, '"v1"'):
                self.send_error(412)
                return
            body = DATA[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        else:
            body = DATA
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        if self.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not rng and type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def http_server():
    handler = type("H", (_Handler,), {"cut_first": True, "ranges": True, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_streams_and_resumes_after_a_dropped_connection(http_server):
    base, handler = http_server
    with open_http_url(f"{base}/shard.tar") as f:
        got = b"".join(iter(lambda: f.read(256 * 1024), b""))
    assert got == DATA
    assert handler.requests[0] == "full" and handler.requests[1].startswith("bytes=")
    handler.cut_first = False
    with default_opener().open(f"{base}/shard.tar") as f:  # the default opener reads http://
        assert f.read() == DATA


def test_no_range_support_means_a_clear_error(http_server):
    base, handler = http_server
    handler.ranges = False
    with pytest.raises(StoreError, match="failed at byte"):
        with open_http_url(f"{base}/shard.tar") as f:
            f.read()


def test_http_errors_name_the_url_without_its_query(http_server):
    base, _ = http_server
    with pytest.raises(StoreError, match="HTTP 404") as exc:
        open_http_url(f"{base}/missing.tar?X-Amz-Signature=secretsig")
    assert f"{base}/missing.tar" in str(exc.value) and "secretsig" not in str(exc.value)
    with pytest.raises(StoreError, match="reachable"):
        open_http_url("http://127.0.0.1:9/x.tar", timeout=2)
