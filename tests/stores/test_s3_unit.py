"""Fast unit tests of S3DataStore logic: configuration, URLs, secrets, and (on moto) the
dedupe and gc paths. The adapter itself is proven against a real RGW in test_s3.py."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from atdata_dagster.errors import ConfigurationError, StoreError
from atdata_dagster.stores import s3 as s3mod
from atdata_dagster.stores import HttpOpener, default_opener
from atdata_dagster.stores.s3 import DefaultChainS3Opener, S3DataStore, S3Opener, open_s3_url, parse_s3_url

MiB = 1024 * 1024
CREDS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}


def test_parse_s3_url():
    assert parse_s3_url("s3://b/a/b/c.tar") == ("b", "a/b/c.tar")
    # keys are verbatim: a URL parser would cut them at '#' or '?' (and reach another object)
    assert parse_s3_url("s3://b/a#b/c.tar") == ("b", "a#b/c.tar")
    assert parse_s3_url("s3://b/q?x=1/c.tar") == ("b", "q?x=1/c.tar")
    assert parse_s3_url("s3://b/100%25 done/c.tar") == ("b", "100%25 done/c.tar")
    for bad in ("s3://b", "s3://b/", "http://b/k", "/local/k", "s3:///k"):
        with pytest.raises(StoreError):
            parse_s3_url(bad)


def test_shard_id_is_uuid_shaped_prefix_of_the_hash():
    sha = hashlib.sha256(b"x").hexdigest()
    sid = s3mod._shard_id(sha)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sid)
    assert sid.replace("-", "") == sha[:32]


def test_env_file_parsing(tmp_path):
    p = tmp_path / ".env"
    p.write_text(
        "# comment\n\nexport AWS_ENDPOINT=http://127.0.0.1:9000\n"
        "AWS_ACCESS_KEY_ID = 'abc'\nAWS_SECRET_ACCESS_KEY=\"s e c\"\nAWS_REGION=eu-west-1 # trailing\nnot a line\n"
    )
    assert s3mod._read_env_file(p) == {
        "AWS_ENDPOINT": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "abc",
        "AWS_SECRET_ACCESS_KEY": "s e c",
        "AWS_REGION": "eu-west-1",
    }
    store = S3DataStore(p, bucket="bkt")
    assert store.endpoint_url == "http://127.0.0.1:9000" and store.region_name == "eu-west-1"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bucket": ""}, "bucket"),
        ({"bucket": "a/b"}, "bucket"),
        ({"bucket": "b", "part_size": 4 * MiB}, "part_size"),
        ({"bucket": "b", "part_size": 6 * 1024**3}, "part_size"),
        ({"bucket": "b", "max_concurrency": 0}, "max_concurrency"),
        ({"bucket": "b", "endpoint_url": "127.0.0.1:9000"}, "scheme"),
        ({"bucket": "b", "prefix": "a/../b"}, "prefix"),
    ],
)
def test_invalid_configuration(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        S3DataStore(CREDS, **kwargs)


def test_credentials_dict_needs_keys_and_never_echoes_values():
    with pytest.raises(ConfigurationError, match="AWS_SECRET_ACCESS_KEY") as exc:
        S3DataStore({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY"}, bucket="b")
    assert "AKIAEXAMPLEKEY" not in str(exc.value)
    with pytest.raises(ConfigurationError, match="dict or the path"):
        S3DataStore(42, bucket="b")  # type: ignore[arg-type]


def test_repr_masks_secrets():
    store = S3DataStore({**CREDS, "AWS_SESSION_TOKEN": "tok-123"}, bucket="b", endpoint_url="http://h:1")
    text = repr(store)
    assert "very-secret-value" not in text and "tok-123" not in text and "AKIAEXAMPLEKEY" not in text
    assert "***" in text and "AKIA…" in text
    assert store._sanitize("x very-secret-value y tok-123") == "x *** y ***"


def test_read_url_owns_and_keys():
    store = S3DataStore(CREDS, bucket="b", endpoint_url="http://h:1/", prefix="p")
    assert store.read_url("s3://b/p/x y.tar") == "http://h:1/b/p/x%20y.tar"
    assert store.read_url("/local.tar") == "/local.tar"
    assert store.owns("s3://b/p/d/x.tar") and store.owns("http://h:1/b/p/d/x.tar")
    assert not store.owns("s3://b/q/x.tar") and not store.owns("s3://c/p/x.tar")
    plain = S3DataStore(CREDS, bucket="b")
    assert plain.read_url("s3://b/k.tar") == "s3://b/k.tar"
    with pytest.raises(StoreError, match="not in this store"):
        store.put_sidecar("s3://other/p/x.tar", ".json", b"{}")


def test_default_opener_routes_s3_to_the_default_chain_and_http_to_the_http_opener():
    opener = default_opener()
    assert isinstance(opener.route_for("s3://b/k.tar"), DefaultChainS3Opener)
    assert isinstance(opener.route_for("https://h/k.tar"), HttpOpener)
    assert not hasattr(s3mod, "_STORES_BY_BUCKET")  # creating a store registers nothing globally


# ------------------------------------------------------------------ moto (lenient emulator)
def _store(s3_moto, bucket, **kw):
    return S3DataStore(bucket=bucket, part_size=5 * MiB, **s3_moto, **kw)


def test_moto_multipart_dedupe_and_gc(s3_moto, moto_bucket):
    store = _store(s3_moto, moto_bucket)
    data = os.urandom(11 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    urls = []
    for _ in range(2):
        sink = store.open_sink("ds")
        for i in range(0, len(data), MiB):
            sink.write(data[i : i + MiB])
        urls.append(sink.commit(3, sha))
    assert urls[0] == urls[1] and urls[0].endswith("--000003.tar")
    store.flush()
    client = store.client
    assert [o["Key"] for o in client.list_objects_v2(Bucket=moto_bucket)["Contents"]] == [parse_s3_url(urls[0])[1]]
    assert client.list_multipart_uploads(Bucket=moto_bucket).get("Uploads", []) == []
    with store.open_read(urls[0]) as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha

    left = store.open_sink("ds")
    left.write(data)  # two parts sent, never committed
    for fut in left._parts:  # let the uploads land (gc of a live upload would race them)
        fut.result()
    assert store.abort_stale_uploads() == 1
    assert client.list_multipart_uploads(Bucket=moto_bucket).get("Uploads", []) == []


def test_store_opener_reads_with_the_store_and_the_default_chain_reads_with_the_environment(
        s3_moto, moto_bucket, monkeypatch):
    store = _store(s3_moto, moto_bucket)
    store.client.put_object(Bucket=moto_bucket, Key="k.bin", Body=b"hello")
    with S3Opener(store).open(f"s3://{moto_bucket}/k.bin") as f:
        assert f.read() == b"hello"
    with pytest.raises(StoreError, match="not in bucket"):
        S3Opener(store).open("s3://another-bucket/k.bin")
    # an s3:// URL the user names without a store: boto3's default chain plus AWS_ENDPOINT_URL
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_moto["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with DefaultChainS3Opener().open(f"s3://{moto_bucket}/k.bin") as f:
        assert f.read() == b"hello"
    with pytest.raises(FileNotFoundError):
        open_s3_url(f"s3://{moto_bucket}/missing.bin")


def test_missing_rgw_skips_locally_and_fails_under_ci(monkeypatch):
    import shutil

    from tests.fixtures import s3 as fixtures

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install-rgw.sh"):
        fixtures.require_rgw()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        fixtures.require_rgw()
