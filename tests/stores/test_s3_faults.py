"""S3DataStore when the server goes away in the middle of a streaming upload (real Ceph RGW).

Whatever happens, nothing may appear under a final shard key, the error must be a
StoreError naming the bucket, the endpoint and what to do, open multipart uploads are
aborted (by the sink, or by ``abort_stale_uploads`` once the server is back), and a
retry after the restart succeeds.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import StoreError
from atdata_dagster.samples.packable import packable
from atdata_dagster.shards.writer import write_samples_to_store
from atdata_dagster.stores.s3 import S3DataStore, parse_s3_url

pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.xdist_group("s3")]

MiB = 1024 * 1024
SAMPLE = 64 * 1024
CAP = 20_000  # 1.3 GB: far more than is written before the server is gone


@packable
class Chunk:
    key: str
    data: bytes


def chunks(n: int, on_sample=None):
    rng = np.random.default_rng(7)
    for i in range(n):
        if on_sample is not None:
            on_sample(i)
        yield Chunk(key=f"c{i}", data=rng.bytes(SAMPLE))


def settle() -> None:
    import gc  # every live store of the test process (there is no bucket registry to ask)

    for store in [o for o in gc.get_objects() if isinstance(o, S3DataStore)]:
        store.flush()


def keys_under(client, bucket: str, prefix: str) -> list[str]:
    settle()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", ()))


def uploads_under(client, bucket: str, prefix: str) -> list[dict]:
    settle()
    return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


def _stream_until_server_goes(store, prefix: str, stop_server) -> StoreError:
    """Stream one huge shard; stop the server from another thread once parts are uploading."""
    uploading = threading.Event()
    done = threading.Event()

    def on_sample(i: int) -> None:
        if i == 250:  # ~16 MB in: three 5 MiB parts sent, more in flight
            uploading.set()
        if i == CAP - 1:
            raise AssertionError("the upload never failed although the server was stopped")

    def stopper() -> None:
        if uploading.wait(60):
            stop_server()
        done.set()

    thread = threading.Thread(target=stopper, name="stop-rgw")
    thread.start()
    try:
        with pytest.raises(StoreError) as exc:
            write_samples_to_store(chunks(CAP, on_sample), store, prefix, maxcount=None)
    finally:
        done.wait(120)
        thread.join(5)
    return exc.value


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_server_gone_mid_upload_then_restart_and_retry(s3_server_control, s3_bucket, s3_client, how):
    server = s3_server_control
    store = S3DataStore(
        server.credentials, bucket=s3_bucket, part_size=5 * MiB, max_concurrency=2,
        max_attempts=2, connect_timeout=2, read_timeout=20,
    )
    prefix = f"fault-{how}"
    stop = server.stop if how == "stop" else server.stop_gateway  # clean shutdown vs kill -9 of radosgw
    err = _stream_until_server_goes(store, prefix, stop)

    msg = str(err)
    assert s3_bucket in msg and server.endpoint_url in msg
    assert "server" in msg and ("running" in msg or "retry" in msg)
    assert "testsecret" not in msg

    if how == "stop":
        server.start()  # the same cluster: data kept
    else:
        server.start_gateway()
    # nothing under a final key; at most the interrupted upload, which gc aborts
    assert [k for k in keys_under(s3_client, s3_bucket, prefix) if "/data--" in k] == []
    if uploads_under(s3_client, s3_bucket, prefix):  # the sink could not abort while the server was down
        assert "abort_stale_uploads" in msg
    store.abort_stale_uploads(prefix)
    assert uploads_under(s3_client, s3_bucket, prefix) == []
    for url in list(store.iter_shard_urls(prefix)):  # a completed temp object, if any
        assert "/.tmp/" in url
        store.delete(url)

    # the retry succeeds with the same store object (its pooled connections are stale)
    result = write_samples_to_store(chunks(300), store, prefix, maxcount=None)
    info = result.shards[0]
    body = s3_client.get_object(Bucket=s3_bucket, Key=parse_s3_url(info.url)[1])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == info.sha256
    assert [c.data for c in Dataset[Chunk](list(result), opener=store.open_read)] == [c.data for c in chunks(300)]
    assert keys_under(s3_client, s3_bucket, prefix) == [parse_s3_url(info.url)[1]]
    assert uploads_under(s3_client, s3_bucket, prefix) == []
