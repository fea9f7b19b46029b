"""Data sources (atdata's URLSource, S3Source, BlobSource) and Dataset(source=...).

S3Source reads a bucket on the real S3 server (Ceph RGW) with its own credentials, no
Index; BlobSource fetches ATProto blobs from a getBlob endpoint over real HTTP.
"""

from __future__ import annotations

import pickle
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import BlobSource, Dataset, S3Source, URLSource, packable, write_samples
from atdata_dagster.errors import ConfigurationTypeError


@packable
class Rec:
    vec: NDArray[np.float32]
    label: int


def _shards(tmp_path, n=7, maxcount=3):
    return write_samples([Rec(vec=np.full(3, i, np.float32), label=i) for i in range(n)],
                         tmp_path / "rec.tar", maxcount=maxcount).list_shards()


def test_url_source_lists_expands_and_opens_its_shards(tmp_path):
    shards = _shards(tmp_path)
    src = URLSource(str(tmp_path / "rec-{000000..000002}.tar"))
    assert src.list_shards() == shards
    assert [sid for sid, f in src.shards if f.close() is None] == shards
    with pytest.raises(KeyError, match="Shard not found"):
        src.open_shard(str(tmp_path / "other.tar"))
    ds = Dataset[Rec](src)  # atdata's positional form
    assert [r.label for r in ds] == list(range(7)) and ds.source is src
    assert [r.label for r in Dataset[Rec](source=src).ordered()] == list(range(7))
    assert isinstance(Dataset[Rec](shards[0]).source, URLSource)  # a URL dataset has one too, as atdata's


def test_dataset_needs_a_url_or_a_real_source():
    with pytest.raises(ConfigurationTypeError, match="list_shards"):
        Dataset[Rec](source=object())
    with pytest.raises(ConfigurationTypeError, match="needs a shard URL"):
        Dataset[Rec]()


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_s3_source_reads_a_bucket_with_its_own_credentials_no_index(tmp_path, s3_server, s3_client):
    bucket = f"atd-src-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    keys = []
    for path in _shards(tmp_path):
        key = f"team/{path.rsplit('/', 1)[1]}"
        s3_client.upload_file(path, bucket, key)
        keys.append(key)
    src = S3Source(bucket=bucket, keys=keys, endpoint=s3_server["endpoint_url"], region=s3_server["region_name"],
                   access_key=s3_server["aws_access_key_id"], secret_key=s3_server["aws_secret_access_key"])
    assert s3_server["aws_secret_access_key"] not in repr(src)
    ds = Dataset[Rec](source=src)
    assert ds.list_shards() == [f"s3://{bucket}/{k}" for k in keys]
    assert [r.label for r in ds] == list(range(7))
    assert ds[5].label == 5 and len(ds) == 7  # random access: a ranged GET of one sample
    again = pickle.loads(pickle.dumps(ds))  # to a DataLoader worker: no live client inside
    assert [r.label for r in again.shuffled(seed=2)] != [] and sorted(r.label for r in again) == list(range(7))
    same = S3Source.from_credentials({"AWS_ACCESS_KEY_ID": s3_server["aws_access_key_id"],
                                      "AWS_SECRET_ACCESS_KEY": s3_server["aws_secret_access_key"],
                                      "AWS_ENDPOINT": s3_server["endpoint_url"],
                                      "AWS_REGION": s3_server["region_name"]}, bucket, keys)
    assert [r.label for r in Dataset[Rec](same)] == list(range(7))
    assert S3Source.from_urls(ds.list_shards()).keys == keys
    with pytest.raises(ValueError, match="same bucket"):
        S3Source.from_urls(["s3://a/x.tar", "s3://b/y.tar"])


class _Blobs(BaseHTTPRequestHandler):
    blobs: dict[tuple[str, str], bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.blobs.get((q.get("did", ""), q.get("cid", "")))
        if url.path != "/xrpc/com.atproto.sync.getBlob" or body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_blob_source_downloads_blobs_from_a_pds_getblob_endpoint(tmp_path):
    refs = []
    for i, path in enumerate(_shards(tmp_path)):
        ref = {"did": "did:plc:lab", "cid": f"bafkrei{i:04d}"}
        _Blobs.blobs[(ref["did"], ref["cid"])] = open(path, "rb").read()
        refs.append(ref)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Blobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = BlobSource.from_refs(refs, pds_endpoint=f"http://127.0.0.1:{server.server_port}")
        assert src.list_shards()[0].endswith("/xrpc/com.atproto.sync.getBlob?did=did%3Aplc%3Alab&cid=bafkrei0000")
        ds = Dataset[Rec](src)
        assert [r.label for r in ds] == list(range(7))
        missing = BlobSource.from_refs([{"did": "did:plc:lab", "cid": "nope"}], pds_endpoint=src.pds_endpoint)
        with pytest.raises(FileNotFoundError, match="does not exist"):  # a missing blob is a missing shard
            list(Dataset[Rec](missing))
    finally:
        server.shutdown()
