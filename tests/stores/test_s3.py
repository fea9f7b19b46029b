"""S3DataStore against a real S3 server (Ceph RGW on loopback): layout, streaming, errors."""

from __future__ import annotations

import hashlib
import pickle
import re
import threading
import time

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import ConfigurationError, InvalidNameError, ShardError, StoreError
from atdata_dagster.samples.packable import packable
from atdata_dagster.shards.reader import verify_shards
from atdata_dagster.stores import default_opener
from atdata_dagster.shards.writer import write_samples_to_store
from atdata_dagster.stores import s3 as s3mod
from atdata_dagster.stores.s3 import S3DataStore, S3ObjectNotFoundError, S3Opener

pytestmark = [pytest.mark.s3, pytest.mark.xdist_group("s3")]

MiB = 1024 * 1024
UUIDISH = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@packable
class Emb:
    key: str
    label: int
    embedding: NDArray[np.float32]


@packable
class Blob:
    key: str
    data: bytes


def embs(n: int, seed: int = 0) -> list[Emb]:
    rng = np.random.default_rng(seed)
    return [Emb(key=f"s{i}", label=i % 10, embedding=rng.standard_normal(256).astype(np.float32)) for i in range(n)]


def blobs(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield Blob(key=f"b{i}", data=rng.bytes(size))


def settle() -> None:
    """Wait for the stores' background clean-up (temp objects, unused uploads) to land."""
    import gc  # every live store of the test process (there is no bucket registry to ask)

    for obj in gc.get_objects():
        try:
            is_store = isinstance(obj, S3DataStore)
        except ReferenceError:  # a weak proxy whose object is gone
            continue
        if is_store:
            obj.flush()


def keys_under(client, bucket: str, prefix: str = "") -> list[str]:
    settle()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", ()))


def open_uploads(client, bucket: str) -> list[dict]:
    settle()
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def get_bytes(client, url: str) -> bytes:
    bucket, key = s3mod.parse_s3_url(url)
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def assert_same(a: list[Emb], b: list[Emb]) -> None:
    assert [s.key for s in a] == [s.key for s in b]
    assert [s.label for s in a] == [s.label for s in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.embedding, y.embedding)


# ------------------------------------------------------------------ round trips / layout
def test_roundtrip_layout_and_checksums(s3_store, s3_client, s3_bucket):
    samples = embs(1000)
    result = write_samples_to_store(samples, s3_store, "mnist/train", maxcount=300)

    assert len(result) == 4  # 300 + 300 + 300 + 100
    for i, url in enumerate(result):
        assert re.fullmatch(rf"s3://{s3_bucket}/mnist/train/data--{UUIDISH}--{i:06d}\.tar", url), url
    # checksums always recorded, equal to the stored bytes and to x-amz-meta-sha256
    assert set(result.checksums) == set(result)
    for url, sha in result.checksums.items():
        assert hashlib.sha256(get_bytes(s3_client, url)).hexdigest() == sha
        key = s3mod.parse_s3_url(url)[1]
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["Metadata"]["sha256"] == sha
        assert url.split("data--")[1][:8] == sha[:8]  # the id derives from the content hash
    assert [s.num_samples for s in result.shards] == [300, 300, 300, 100]
    assert keys_under(s3_client, s3_bucket) == sorted(s3mod.parse_s3_url(u)[1] for u in result)  # no .tmp leftovers
    assert open_uploads(s3_client, s3_bucket) == []

    # read back through Dataset with the store's opener, and with an S3Opener (what the Index
    # builds; changed: there is no process-wide bucket registry a bare Dataset could use)
    assert_same(list(Dataset[Emb](list(result), opener=s3_store.open_read)), samples)
    assert_same(list(Dataset[Emb](list(result), opener=S3Opener(s3_store))), samples)
    assert verify_shards(list(result), result.checksums, opener=s3_store.open_read) == {u: "ok" for u in result}


def test_store_key_prefix_owns_and_listing(rgw_server, s3_bucket, s3_client):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="/team/datasets/")
    result = write_samples_to_store(embs(20), store, "ds", maxcount=10)
    assert all(u.startswith(f"s3://{s3_bucket}/team/datasets/ds/data--") for u in result)
    assert all(store.owns(u) for u in result)
    assert store.owns(store.read_url(result[0]))
    assert not store.owns(f"s3://{s3_bucket}/other/ds/x.tar")
    assert not store.owns(f"s3://not-{s3_bucket}/team/datasets/ds/x.tar")
    assert not store.owns("/local/path.tar")
    assert sorted(store.iter_shard_urls()) == sorted(result)
    other = S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="elsewhere")
    assert list(other.iter_shard_urls()) == []


def test_same_content_twice_gives_same_key_and_one_object(rgw_server, s3_bucket, s3_client):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB)
    # one small shard (single PutObject) and one multipart shard (temp key + copy)
    first = write_samples_to_store(embs(50), store, "dup", maxcount=None)
    big = write_samples_to_store(blobs(90, 100_000), store, "dupbig", maxcount=None)
    again = write_samples_to_store(embs(50), store, "dup", maxcount=None)
    big_again = write_samples_to_store(blobs(90, 100_000), store, "dupbig", maxcount=None)
    assert list(first) == list(again) and first.checksums == again.checksums
    assert list(big) == list(big_again)
    assert keys_under(s3_client, s3_bucket) == sorted(s3mod.parse_s3_url(u)[1] for u in [*first, *big])
    assert open_uploads(s3_client, s3_bucket) == []
    changed = write_samples_to_store(embs(50, seed=1), store, "dup", maxcount=None)
    assert list(changed) != list(first)  # any changed byte changes the URL


def test_maxcount_and_maxsize(s3_store, s3_client, s3_bucket):
    by_count = write_samples_to_store(embs(95), s3_store, "bycount", maxcount=20)
    assert [s.num_samples for s in by_count.shards] == [20, 20, 20, 20, 15]
    by_size = write_samples_to_store(embs(200), s3_store, "bysize", maxcount=None, maxsize=40_000)
    assert len(by_size) > 1 and by_size.num_samples == 200
    for info in by_size.shards:
        head = s3_client.head_object(Bucket=s3_bucket, Key=s3mod.parse_s3_url(info.url)[1])
        assert head["ContentLength"] == info.size <= 40_000
    assert_same(list(Dataset[Emb](list(by_size), opener=s3_store.open_read)), embs(200))


def test_large_shard_uploads_parts_in_parallel_with_bounded_memory(rgw_server, s3_bucket, s3_client):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB, max_concurrency=3)
    real = store.client.upload_part
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "parts": 0, "threads": set()}

    def counting_upload_part(**kw):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["parts"] += 1
            state["threads"].add(threading.current_thread().name)
        try:
            return real(**kw)
        finally:
            with lock:
                state["now"] -= 1

    store.client.upload_part = counting_upload_part
    result = write_samples_to_store(blobs(480, 64 * 1024), store, "big", maxcount=None)  # ~31.5 MB, one shard
    info = result.shards[0]
    assert info.size > 30 * MiB
    assert state["parts"] == -(-info.size // (5 * MiB))  # 7 parts of 5 MiB
    assert 1 < state["peak"] <= 3  # overlapped, never more than max_concurrency in flight
    assert all(name.startswith("s3-upload") for name in state["threads"])
    data = get_bytes(s3_client, info.url)
    assert len(data) == info.size and hashlib.sha256(data).hexdigest() == info.sha256
    got = list(Dataset[Blob](list(result), opener=store.open_read))
    assert [b.data for b in got] == [b.data for b in blobs(480, 64 * 1024)]
    assert keys_under(s3_client, s3_bucket) == [s3mod.parse_s3_url(info.url)[1]]
    assert open_uploads(s3_client, s3_bucket) == []


def test_copy_above_copy_limit_uses_upload_part_copy(rgw_server, s3_bucket, s3_client, monkeypatch):
    # The 5 GiB CopyObject limit, scaled down: shards above it are copied in pieces.
    monkeypatch.setattr(s3mod, "COPY_PIECE", 5 * MiB)
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB)
    result = write_samples_to_store(blobs(200, 64 * 1024), store, "copied", maxcount=None)
    info = result.shards[0]
    key = s3mod.parse_s3_url(info.url)[1]
    head = s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # three UploadPartCopy pieces
    assert head["Metadata"]["sha256"] == info.sha256
    assert hashlib.sha256(get_bytes(s3_client, info.url)).hexdigest() == info.sha256
    assert keys_under(s3_client, s3_bucket) == [key]
    assert open_uploads(s3_client, s3_bucket) == []


def test_cache_local_stages_then_uploads(rgw_server, s3_bucket, s3_client, tmp_path):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, cache_local=True, cache_dir=tmp_path, part_size=5 * MiB)
    result = write_samples_to_store(blobs(120, 64 * 1024), store, "cached", maxcount=60)
    assert len(result) == 2
    for url, sha in result.checksums.items():
        assert hashlib.sha256(get_bytes(s3_client, url)).hexdigest() == sha
    assert list(tmp_path.iterdir()) == []  # staged files removed
    assert all("/.tmp/" not in k for k in keys_under(s3_client, s3_bucket))
    direct = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB)
    assert list(write_samples_to_store(blobs(120, 64 * 1024), direct, "cached", maxcount=60)) == list(result)


def test_sidecars_manifest_and_delete(s3_store, s3_client, s3_bucket):
    result = write_samples_to_store(embs(30), s3_store, "withmanifest", maxcount=None, manifest=True)
    info = result.shards[0]
    stem = s3mod.parse_s3_url(info.url)[1][:-4]
    assert info.manifest_url == f"s3://{s3_bucket}/{stem}.manifest.json"
    assert f"{stem}.manifest.json" in keys_under(s3_client, s3_bucket)
    url = s3_store.put_sidecar(info.url, ".extra.json", b'{"a": 1}')
    assert url == f"s3://{s3_bucket}/{stem}.extra.json"
    with s3_store.open_read(url) as f:
        assert f.read() == b'{"a": 1}'
    assert list(s3_store.iter_shard_urls()) == [info.url]  # sidecars are not shards
    s3_store.delete(info.url)
    s3_store.delete(info.url)  # missing objects are ignored
    with pytest.raises(S3ObjectNotFoundError, match="not found") as exc:
        s3_store.open_read(info.url)
    assert isinstance(exc.value, FileNotFoundError) and s3_bucket in str(exc.value)
    assert verify_shards([info.url], result.checksums, opener=s3_store.open_read) == {info.url: "missing"}
    with pytest.raises(ShardError, match="does not exist"):
        list(Dataset[Emb]([info.url], opener=s3_store.open_read))


def test_open_read_streams_in_chunks(rgw_server, s3_bucket, s3_client):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket)
    payload = np.random.default_rng(3).bytes(3 * MiB + 17)
    s3_client.put_object(Bucket=s3_bucket, Key="raw/blob.bin", Body=payload)
    with store.open_read(f"s3://{s3_bucket}/raw/blob.bin") as f:
        parts = []
        while chunk := f.read(256 * 1024):
            parts.append(chunk)
    assert b"".join(parts) == payload and len(parts) == 13
    with store.open_read(store.read_url(f"s3://{s3_bucket}/raw/blob.bin")) as f:
        assert f.read() == payload


def test_leftovers_are_listed_and_gc_aborts_uploads(rgw_server, s3_store, s3_client, s3_bucket):
    # a writer that died mid-shard: an open multipart upload under .tmp/
    sink = s3_store.open_sink("crashed")
    sink.write(b"x" * (9 * MiB))
    sink._parts[0].result()  # the first part has landed
    assert len(open_uploads(s3_client, s3_bucket)) == 1
    del sink
    # a writer that died between completing the temp upload and the copy: a .tmp object
    s3_client.put_object(Bucket=s3_bucket, Key="crashed/.tmp/0f0f.tar", Body=b"partial")
    urls = list(s3_store.iter_shard_urls())
    assert urls == [f"s3://{s3_bucket}/crashed/.tmp/0f0f.tar"]
    assert 0 <= s3_store.age_seconds(urls[0]) < 600  # gc's grace period works on S3 too
    fresh = S3DataStore(rgw_server.credentials, bucket=s3_bucket)
    assert 0 <= fresh.age_seconds(urls[0]) < 600  # by HEAD, without a listing
    assert fresh.age_seconds(f"s3://{s3_bucket}/crashed/none.tar") is None
    assert s3_store.abort_stale_uploads("crashed", older_than=3600) == 0  # too young
    assert s3_store.abort_stale_uploads("crashed") == 1
    assert open_uploads(s3_client, s3_bucket) == []
    s3_store.delete(urls[0])
    assert keys_under(s3_client, s3_bucket) == []


def test_gc_removes_s3_sidecars_whose_shard_is_gone(tmp_path, rgw_server, s3_bucket, s3_client):
    from atdata_dagster import local
    from atdata_dagster.gc import collect_garbage

    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket)
    index = local.Index(path=str(tmp_path / "i.db"), data_store=store, atmosphere=None)
    try:
        entry = index.write_samples(embs(20), name="kept", maxcount=10, manifest=True)
        s3_client.put_object(Bucket=s3_bucket, Key="kept/data--feedface--000007.manifest.json", Body=b"{}")
        assert sorted(store.iter_sidecar_urls())[-1] == f"s3://{s3_bucket}/kept/data--feedface--000007.manifest.json"
        assert collect_garbage(index, grace=0) == [f"s3://{s3_bucket}/kept/data--feedface--000007.manifest.json"]
        left = keys_under(s3_client, s3_bucket)
        assert "kept/data--feedface--000007.manifest.json" not in left
        for url in entry.data_urls:  # referenced shards and their manifests stay
            key = s3mod.parse_s3_url(url)[1]
            assert key in left and key[:-4] + ".manifest.json" in left
    finally:
        index.close()


def test_abort_is_idempotent_and_closes_the_sink(s3_store, s3_client, s3_bucket):
    sink = s3_store.open_sink("aborted")
    sink.write(b"y" * (9 * MiB))
    sink.abort()
    sink.abort()
    assert open_uploads(s3_client, s3_bucket) == []
    with pytest.raises(StoreError, match="closed"):
        sink.write(b"more")
    with pytest.raises(StoreError, match="already"):
        sink.commit(0, "0" * 64)
    bad = s3_store.open_sink("aborted")
    bad.write(b"z" * (9 * MiB))
    with pytest.raises(ShardError, match="sha256"):
        bad.commit(0, "not-a-hash")
    assert open_uploads(s3_client, s3_bucket) == [] and keys_under(s3_client, s3_bucket) == []


def test_writer_failure_mid_shard_leaves_nothing(s3_store, s3_client, s3_bucket):
    def samples():
        yield from blobs(150, 64 * 1024)  # > one 8 MiB part: a multipart upload is open
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        write_samples_to_store(samples(), s3_store, "broken", maxcount=None)
    assert keys_under(s3_client, s3_bucket) == []
    assert open_uploads(s3_client, s3_bucket) == []


def test_prefix_validation(s3_store):
    for bad in ("", "/abs", "a/../b", "a//b", "x/.tmp/y", "bad\\name"):
        with pytest.raises(InvalidNameError):
            s3_store.open_sink(bad)


# ------------------------------------------------------------------ credentials / config
def test_env_file_credentials(rgw_server, s3_bucket, tmp_path):
    env = tmp_path / "s3.env"
    env.write_text(
        "# S3 for tests\n"
        f"export AWS_ENDPOINT={rgw_server.endpoint_url}\n"
        "AWS_ACCESS_KEY_ID='testkey'\n"
        'AWS_SECRET_ACCESS_KEY="testsecret"  \n'
    )
    store = S3DataStore(str(env), bucket=s3_bucket)
    assert store.endpoint_url == rgw_server.endpoint_url
    result = write_samples_to_store(embs(10), store, "fromenv")
    assert_same(list(Dataset[Emb](list(result), opener=store.open_read)), embs(10))

    partial = tmp_path / "partial.env"
    partial.write_text("AWS_ACCESS_KEY_ID=testkey\nAWS_SECRET_ACCESS_KEY=testsecret\n")
    with pytest.raises(ConfigurationError, match="AWS_ENDPOINT") as exc:
        S3DataStore(partial, bucket=s3_bucket)
    assert "testsecret" not in str(exc.value)
    with pytest.raises(ConfigurationError, match="cannot read"):
        S3DataStore(tmp_path / "missing.env", bucket=s3_bucket)


def test_keyword_credentials_and_existing_client(rgw_server, s3_bucket, s3_client):
    kw = S3DataStore(bucket=s3_bucket, **rgw_server.config)
    assert list(write_samples_to_store(embs(5), kw, "kw"))
    reused = S3DataStore(bucket=s3_bucket, client=s3_client, endpoint_url=rgw_server.endpoint_url)
    assert list(write_samples_to_store(embs(5), reused, "kw")) == list(write_samples_to_store(embs(5), kw, "kw"))
    with pytest.raises(TypeError, match="client"):
        pickle.dumps(reused)


def test_read_url_and_http_opener(rgw_server, s3_store, s3_client, s3_bucket):
    result = write_samples_to_store(embs(10), s3_store, "public", maxcount=None)
    url = result[0]
    key = s3mod.parse_s3_url(url)[1]
    http_url = s3_store.read_url(url)
    assert http_url == f"{rgw_server.endpoint_url}/{s3_bucket}/{key}"
    assert S3DataStore(bucket=s3_bucket, aws_access_key_id="a", aws_secret_access_key="b").read_url(url) == url
    with pytest.raises(StoreError, match="HTTP 403"):  # private until published
        default_opener().open(http_url)
    s3_client.put_object_acl(Bucket=s3_bucket, Key=key, ACL="public-read")
    assert_same(list(Dataset[Emb]([http_url])), embs(10))  # plain https?:// streaming, no credentials


def test_store_pickles_for_worker_processes(s3_store):
    result = write_samples_to_store(embs(10), s3_store, "pickled")
    clone = pickle.loads(pickle.dumps(s3_store))
    assert "testsecret" not in repr(clone)
    ds = pickle.loads(pickle.dumps(Dataset[Emb](list(result), opener=s3_store.open_read)))
    assert_same(list(ds), embs(10))


def test_secrets_absent_from_repr_and_errors(rgw_server, s3_bucket):
    secret = "Sup3rS3cretValueThatMustNotLeak"
    creds = {**rgw_server.credentials, "AWS_SECRET_ACCESS_KEY": secret}
    store = S3DataStore(creds, bucket=s3_bucket, max_attempts=1)
    assert secret not in repr(store) and "***" in repr(store)
    with pytest.raises(StoreError) as exc:
        write_samples_to_store(embs(5), store, "leak")
    text = f"{exc.value}|{exc.value!r}|{exc.value.__cause__!r}|{exc.value.__context__!r}"
    assert secret not in text


def test_wrong_credentials(rgw_server, s3_bucket, s3_client):
    for creds in (
        {**rgw_server.credentials, "AWS_SECRET_ACCESS_KEY": "wrong-secret"},
        {**rgw_server.credentials, "AWS_ACCESS_KEY_ID": "nosuchkey"},
    ):
        store = S3DataStore(creds, bucket=s3_bucket, max_attempts=1)
        with pytest.raises(StoreError) as exc:
            write_samples_to_store(embs(5), store, "denied")
        msg = str(exc.value)
        assert s3_bucket in msg and rgw_server.endpoint_url in msg and "AWS_SECRET_ACCESS_KEY" in msg
        assert "wrong-secret" not in msg
        with pytest.raises(StoreError, match="rejected|denied"):
            store.open_read(f"s3://{s3_bucket}/anything.tar")
    assert keys_under(s3_client, s3_bucket) == []


def test_missing_bucket(rgw_server):
    store = S3DataStore(rgw_server.credentials, bucket="atd-no-such-bucket-here", max_attempts=1)
    with pytest.raises(StoreError, match="does not exist") as exc:
        write_samples_to_store(embs(5), store, "x")
    assert "atd-no-such-bucket-here" in str(exc.value) and rgw_server.endpoint_url in str(exc.value)
    with pytest.raises(StoreError, match="does not exist"):
        store.open_read("s3://atd-no-such-bucket-here/x/data.tar")


def test_connection_refused(rgw_server):
    from tests.fixtures.s3 import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3DataStore({**rgw_server.credentials, "AWS_ENDPOINT": endpoint}, bucket="atd-any", max_attempts=1, connect_timeout=2)
    with pytest.raises(StoreError, match="cannot reach") as exc:
        write_samples_to_store(embs(5), store, "x")
    assert endpoint in str(exc.value) and "atd-any" in str(exc.value)


def test_index_write_and_read_back(rgw_server, s3_bucket, tmp_path):
    from atdata_dagster import local

    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="idx")
    index = local.Index(path=str(tmp_path / "index.db"), data_store=store, atmosphere=None)
    entry = index.write_samples(embs(120), name="embeddings", maxcount=50)
    assert len(entry.data_urls) == 3
    assert all(u.startswith(f"s3://{s3_bucket}/idx/embeddings/data--") for u in entry.data_urls)
    assert set(entry.metadata["checksums"]) == set(entry.data_urls)
    again = index.write_samples(embs(120), name="embeddings", maxcount=50)
    assert again.cid == entry.cid  # content-addressed: same samples, same URLs, same CID
    assert_same(list(index.dataset("embeddings", Emb)), embs(120))


def test_writer_encodes_next_shard_while_previous_completes_and_returns_only_durable_shards(
    rgw_server, s3_bucket, s3_client
):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB)
    real_copy = store._server_copy
    events: list[str] = []
    copy_started = threading.Event()
    release = threading.Event()

    def slow_copy(src, dst, size, sha256):
        events.append("copy-start")
        copy_started.set()
        assert release.wait(30)
        real_copy(src, dst, size, sha256)
        events.append("copy-done")

    store._server_copy = slow_copy

    def samples():
        for i, blob in enumerate(blobs(240, 64 * 1024)):  # two shards of ~7.9 MB: multipart each
            if i == 120:
                assert copy_started.wait(30)  # shard 0 is completing in the background...
                events.append("encoding-shard-1")  # ...while the writer goes on
                release.set()
            yield blob

    result = write_samples_to_store(samples(), store, "overlap", maxcount=120)
    assert events.index("copy-start") < events.index("encoding-shard-1") < events.index("copy-done")
    assert events.count("copy-done") == 2  # write returned only after both shards were moved
    for info in result.shards:
        data = get_bytes(s3_client, info.url)
        assert hashlib.sha256(data).hexdigest() == info.sha256
    assert open_uploads(s3_client, s3_bucket) == []


def test_background_commit_failure_fails_the_write_and_leaves_no_final_object(rgw_server, s3_bucket, s3_client):
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB)

    def failing_copy(src, dst, size, sha256):
        raise StoreError(f"CopyObject s3://{s3_bucket}/{dst} failed: injected")

    store._server_copy = failing_copy
    with pytest.raises(StoreError, match="injected"):
        write_samples_to_store(blobs(240, 64 * 1024), store, "failing", maxcount=120)
    # the completed temporary objects were deleted, nothing reached a final key
    assert keys_under(s3_client, s3_bucket) == []
    assert open_uploads(s3_client, s3_bucket) == []


def test_sink_commit_is_synchronous_for_direct_callers(s3_store, s3_client, s3_bucket):
    data = b"x" * (9 * MiB)  # > one 8 MiB part: a multipart upload and a move
    sink = s3_store.open_sink("direct")
    sink.write(data)
    url = sink.commit(0, hashlib.sha256(data).hexdigest())
    assert sink.done()
    assert get_bytes(s3_client, url) == data  # visible the moment commit() returns


# -- gc support: reuse refreshes age, own uploads only, ownership markers, raw keys -----
@pytest.mark.parametrize("size", [1024, 11 * MiB], ids=["put", "multipart"])
def test_reusing_an_existing_shard_refreshes_its_last_modified(size, rgw_server, s3_bucket, s3_client):
    """As the disk store's utime: a concurrent gc sees a young object and keeps it until the
    entry that reuses it is committed."""
    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, part_size=5 * MiB)
    data = np.random.default_rng(size).bytes(size)
    sha = hashlib.sha256(data).hexdigest()
    try:
        urls = []
        for _ in range(2):
            sink = store.open_sink("ds")
            sink.write(data)
            urls.append(sink.commit(0, sha))
            if not urls[1:]:
                key = s3mod.parse_s3_url(urls[0])[1]
                before = s3_client.head_object(Bucket=s3_bucket, Key=key)["LastModified"]
                time.sleep(2.1)  # LastModified has one-second resolution
        after = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert urls[0] == urls[1] and after["LastModified"] > before
        assert after["Metadata"]["sha256"] == sha and after["ContentLength"] == size
        assert store.age_seconds(urls[0], fresh=True) < 2
        store.flush()
        assert keys_under(s3_client, s3_bucket) == [key]
    finally:
        store.close()


def test_abort_stale_uploads_leaves_uploads_to_other_keys(s3_store, s3_client, s3_bucket):
    theirs = {k: s3_client.create_multipart_upload(Bucket=s3_bucket, Key=k)["UploadId"]
              for k in ("backup.tar", "ds/export.tar", "ds/.tmpfoo/x.tar", ".tmp/x.tar")}
    ours = s3_store.open_sink("ds")
    ours.write(b"x" * (9 * MiB))
    ours._parts[0].result()
    try:
        assert s3_store.abort_stale_uploads() == 1
        assert {u["Key"]: u["UploadId"] for u in open_uploads(s3_client, s3_bucket)} == theirs
    finally:
        for key, upload in theirs.items():
            s3_client.abort_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=upload)


def test_ownership_markers_live_under_the_store_prefix_and_are_never_shards(rgw_server, s3_bucket, s3_client):
    team = S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="team")
    other = S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="other")
    try:
        assert team.owner_ids() == set()
        team.claim("a" * 32)
        S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="team").claim("b" * 32)
        assert team.owner_ids() == {"a" * 32, "b" * 32} and other.owner_ids() == set()
        assert f"team/.atdata-dagster/owners/{'a' * 32}" in keys_under(s3_client, s3_bucket)
        write_samples_to_store(({"msgpack": b"\x80"} for _ in range(2)), team, "ds")
        assert not any(".atdata-dagster" in u for u in [*team.iter_shard_urls(), *team.iter_sidecar_urls()])
        with pytest.raises(InvalidNameError, match="reserve"):
            team.open_sink(".atdata-dagster/owners")
    finally:
        team.close()
        other.close()


def test_keys_are_taken_verbatim_from_s3_urls_and_decoded_from_endpoint_urls(s3_store, s3_client, s3_bucket):
    for key, body in (("a", b"neighbour"), ("a#b/x.tar", b"hash"), ("q?x=1/x.tar", b"query"), ("p%41/x.tar", b"percent"),
                      ("with space/x.tar", b"space")):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    for key, body in (("a#b/x.tar", b"hash"), ("q?x=1/x.tar", b"query"), ("p%41/x.tar", b"percent"), ("with space/x.tar", b"space")):
        url = f"s3://{s3_bucket}/{key}"
        with s3_store.open_read(url) as f:
            assert f.read() == body
        with s3_store.open_read(s3_store.read_url(url)) as f:
            assert f.read() == body
    s3_store.delete(f"s3://{s3_bucket}/a#b/x.tar")
    assert keys_under(s3_client, s3_bucket) == ["a", "p%41/x.tar", "q?x=1/x.tar", "with space/x.tar"]


def test_repair_restores_a_damaged_s3_shard_from_a_local_copy_with_the_same_checksum(rgw_server, s3_bucket, s3_client, tmp_path):
    from atdata_dagster import local
    from atdata_dagster.repair import repair_entry

    store = S3DataStore(rgw_server.credentials, bucket=s3_bucket, prefix="rep")
    lab = local.create_repository("sqlite", path=str(tmp_path / "lab.db"), data_store=store)
    index = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"),
                        repos={"lab": lab}, atmosphere=None)
    remote = index.write_samples(embs(60), name="lab/embeddings", maxcount=30)
    copy = index.write_samples(embs(60), name="embeddings", maxcount=30)  # the same content on local disk
    key = remote.data_urls[1].split(f"s3://{s3_bucket}/", 1)[1]
    good = get_bytes(s3_client, remote.data_urls[1])
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=good[:700] + b"\xff" * 8 + good[708:])
    assert index.verify(remote)[remote.data_urls[1]] == "mismatch"

    result = repair_entry(index, remote)
    assert result.ok and result.shards[0].restored_from == copy.data_urls[1]
    assert get_bytes(s3_client, remote.data_urls[1]) == good
    assert set(index.verify(remote).values()) == {"ok"}
