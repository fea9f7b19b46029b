"""S3DataStore throughput and memory against plain boto3, on a real S3 server (Ceph RGW).

    python -m benchmarks.bench_s3 [--quick] [--repeat 3] [--json out.json]
                                  [--endpoint URL --access-key K --secret-key S --bucket B]

Without ``--endpoint`` a throwaway Ceph RGW is started on loopback (needs
``scripts/install-rgw.sh``) and stopped at the end. Two workloads, sharded at 10,000
samples as ``Index.write`` does:

* ``emb``: 40,000 samples ``{key: str, label: int, embedding: float32[256]}`` (~45 MB)
* ``blob``: 20,000 samples of 64 KiB (~1.3 GB)

Write, MB/s of shard bytes (best of ``--repeat``, each side in every round):

* ``ours e2e``: samples -> ``write_samples_to_store`` -> ``S3DataStore`` (msgpack
  encoding, tar, SHA-256, multipart upload, server-side move to the content key)
* ``ours store``: the same tar bytes fed to ``open_sink().write`` in 1 MiB chunks + commit
* ``boto3``: ``client.upload_fileobj`` of the same shard files (default TransferConfig)

* ``encode-only``: the same writer into a store that discards the bytes: the ceiling
  for ``ours e2e`` on this machine (encoding is CPU-bound and shares the cores with RGW)

Read: ``Dataset[T]`` over ``store.open_read`` (decoding every sample), the raw
``open_read`` stream, and ``client.download_fileobj`` into a discarding sink.

Peak RSS (``VmHWM``) of writing then reading everything, in a fresh subprocess per
(workload, size) for N and 2N: flat means 2N is not meaningfully above N.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from numpy.typing import NDArray

from atdata_dagster.dataset import Dataset
from atdata_dagster.samples.packable import packable
from atdata_dagster.shards.writer import write_samples_to_store
from atdata_dagster.stores.s3 import S3DataStore, parse_s3_url

ROOT = Path(__file__).resolve().parents[1]
MAXCOUNT = 10_000
MiB = 1024 * 1024
SIZES = {"emb": 40_000, "blob": 20_000}
DIM = 256
BLOB = 64 * 1024
_EMB_POOL = np.random.default_rng(0).standard_normal((512, DIM)).astype(np.float32)
_BLOB_POOL = [np.random.default_rng(i).bytes(BLOB) for i in range(64)]


@packable
class Embedding:
    key: str
    label: int
    embedding: NDArray[np.float32]


@packable
class Blob:
    key: str
    data: bytes


def samples(workload: str, n: int) -> Iterator[Any]:
    if workload == "emb":
        for i in range(n):
            yield Embedding(key=f"k{i}", label=i % 10, embedding=_EMB_POOL[i % 512])
    else:
        for i in range(n):
            yield Blob(key=f"k{i}", data=_BLOB_POOL[i % 64])


SAMPLE_TYPES = {"emb": Embedding, "blob": Blob}


# ------------------------------------------------------------------ server
class _Server:
    """A throwaway RGW (tests/servers/start-rgw.sh), or an external endpoint."""

    def __init__(self, args):
        self.dir: str | None = None
        if args.endpoint:
            self.config = {
                "endpoint_url": args.endpoint, "aws_access_key_id": args.access_key,
                "aws_secret_access_key": args.secret_key, "region_name": args.region,
            }
            return
        if shutil.which("radosgw") is None:
            sys.exit("radosgw is not installed: run `bash scripts/install-rgw.sh` as root, or pass --endpoint")
        self.dir = tempfile.mkdtemp(prefix="rgw-bench-")
        port, mon = _free_port(), _free_port()
        env = {**os.environ, "MON_PORT": str(mon), "RGW_BLOCK_SIZE": str(64 * 1024**3)}
        t = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "tests/servers/start-rgw.sh"), self.dir, str(port)], env=env,
                       check=True, capture_output=True, timeout=240)
        print(f"# started Ceph RGW on 127.0.0.1:{port} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        self.config = {
            "endpoint_url": f"http://127.0.0.1:{port}", "aws_access_key_id": "testkey",
            "aws_secret_access_key": "testsecret", "region_name": "us-east-1",
        }

    def gc(self) -> None:
        """Reclaim deleted objects now (RGW defers it for hours), so big runs fit the OSD."""
        if self.dir:
            env = {**os.environ, "CEPH_CONF": os.path.join(self.dir, "ceph.conf")}
            subprocess.run(["radosgw-admin", "gc", "process", "--include-all"], env=env, capture_output=True, timeout=300)

    def close(self) -> None:
        if self.dir:
            subprocess.run(["bash", str(ROOT / "tests/servers/stop-rgw.sh"), self.dir], capture_output=True, timeout=120)
            shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(config: dict):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", **config, config=Config(s3={"addressing_style": "path"}, max_pool_connections=20))


def _empty(client, bucket: str, prefix: str) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        objs = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if objs:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objs})


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return len(b)


class _NullSink:
    def write(self, data) -> None:
        pass

    def commit(self, index: int, sha256: str) -> str:
        return f"null://{sha256}-{index}"

    def abort(self) -> None:
        pass


class _NullStore:
    """Discards shard bytes: what the writer alone (msgpack, tar, SHA-256) costs."""

    def open_sink(self, prefix: str) -> _NullSink:
        return _NullSink()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# ------------------------------------------------------------------ throughput
def throughput(server: _Server, bucket: str, workload: str, n: int, repeat: int) -> dict:
    config = server.config
    client = _client(config)
    store = S3DataStore(bucket=bucket, **config)
    cls = SAMPLE_TYPES[workload]
    best: dict[str, float] = {}
    nbytes = 0
    tmp = tempfile.mkdtemp(prefix="bench-s3-")
    try:
        for r in range(repeat):
            base = f"bench/{workload}/r{r}"
            # the ceiling for "e2e": encoding alone, bytes discarded
            dt, _ = _timed(lambda: write_samples_to_store(samples(workload, n), _NullStore(), "x", maxcount=MAXCOUNT))
            best["encode_only"] = min(best.get("encode_only", 1e9), dt)
            # ours, end to end from samples
            dt, result = _timed(lambda: write_samples_to_store(samples(workload, n), store, f"{base}/e2e", maxcount=MAXCOUNT))
            nbytes = result.total_bytes
            best["write_ours_e2e"] = min(best.get("write_ours_e2e", 1e9), dt)
            urls = list(result)
            # the same shard bytes as local files
            files = []
            for i, url in enumerate(urls):
                path = os.path.join(tmp, f"{i}.tar")
                if not os.path.exists(path):
                    client.download_file(bucket, parse_s3_url(url)[1], path)
                files.append(path)

            def feed_store():  # as ShardWriter does: shards complete in the background, wait at the end
                sinks = []
                for i, path in enumerate(files):
                    sink = store.open_sink(f"{base}/store")
                    with open(path, "rb", buffering=0) as f:
                        while chunk := f.read(MiB):
                            sink.write(chunk)
                    sink.start_commit(i, result.shards[i].sha256)
                    sinks.append(sink)
                for sink in sinks:
                    sink.wait()

            dt, _ = _timed(feed_store)
            best["write_ours_store"] = min(best.get("write_ours_store", 1e9), dt)

            def boto3_upload():
                for i, path in enumerate(files):
                    with open(path, "rb") as f:
                        client.upload_fileobj(f, bucket, f"{base}/boto3/{i}.tar")

            dt, _ = _timed(boto3_upload)
            best["write_boto3"] = min(best.get("write_boto3", 1e9), dt)

            def read_decoded():
                count = 0
                for _ in Dataset[cls](urls, opener=store.open_read):  # type: ignore[valid-type]
                    count += 1
                assert count == n, count

            def read_raw():
                for url in urls:
                    with store.open_read(url) as f:
                        while f.read(MiB):
                            pass

            def boto3_download():
                for url in urls:
                    client.download_fileobj(bucket, parse_s3_url(url)[1], _Null())

            for name, fn in (("read_ours_decoded", read_decoded), ("read_ours_raw", read_raw), ("read_boto3", boto3_download)):
                dt, _ = _timed(fn)
                best[name] = min(best.get(name, 1e9), dt)
            _empty(client, bucket, base + "/")
            server.gc()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        store.close()
    mb = nbytes / 1e6
    out = {"workload": workload, "n": n, "shards": -(-n // MAXCOUNT), "bytes": nbytes, "repeat": repeat}
    for k, v in best.items():
        out[f"{k}_s"] = round(v, 3)
        out[f"{k}_MBps"] = round(mb / v, 1)
    out["write_ratio_e2e"] = round(best["write_boto3"] / best["write_ours_e2e"], 2)
    out["e2e_vs_encode_only"] = round(best["encode_only"] / best["write_ours_e2e"], 2)
    out["write_ratio_store"] = round(best["write_boto3"] / best["write_ours_store"], 2)
    out["read_ratio_raw"] = round(best["read_boto3"] / best["read_ours_raw"], 2)
    out["read_ratio_decoded"] = round(best["read_boto3"] / best["read_ours_decoded"], 2)
    return out


# ------------------------------------------------------------------ memory (subprocess)
def _peak_kib() -> int:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: on Linux that keeps the high-water
    mark of the parent that forked us, so a child of a big parent would report the parent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover - not Linux


def _rss_child(workload: str, n: int, bucket: str, config: dict) -> None:
    store = S3DataStore(bucket=bucket, **config)
    store.check_bucket()
    before = _peak_kib()
    result = write_samples_to_store(samples(workload, n), store, f"rss/{workload}/{n}", maxcount=MAXCOUNT)
    after_write = _peak_kib()
    count = sum(1 for _ in Dataset[SAMPLE_TYPES[workload]](list(result), opener=store.open_read))  # type: ignore[valid-type]
    assert count == n
    after_read = _peak_kib()
    print(json.dumps({"before_kib": before, "write_kib": after_write, "read_kib": after_read}))


def peak_rss(server: _Server, bucket: str, workload: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_s3", "--rss-child", workload, str(n), bucket, json.dumps(server.config)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=1800).stdout
    res = json.loads(out.strip().splitlines()[-1])
    client = _client(server.config)
    _empty(client, bucket, f"rss/{workload}/{n}/")
    server.gc()
    return {k: round(v / 1024, 1) for k, v in res.items()}


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="use this S3 endpoint instead of starting a local RGW")
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    ap.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    ap.add_argument("--bucket", help="an existing bucket (default: a new one)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1/10 of the sizes, 1 repeat, no RSS runs")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess runs")
    ap.add_argument("--no-throughput", action="store_true", help="only the peak-RSS runs")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--rss-child", nargs=4, metavar=("WORKLOAD", "N", "BUCKET", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        workload, n, bucket, config = args.rss_child
        _rss_child(workload, int(n), bucket, json.loads(config))
        return {}

    sizes = {k: (v // 10 if args.quick else v) for k, v in SIZES.items()}
    repeat = 1 if args.quick else args.repeat
    server = _Server(args)
    results: dict[str, Any] = {"throughput": [], "rss_mib": []}
    try:
        bucket = args.bucket or f"bench-{os.getpid()}-{int(time.time())}"
        client = _client(server.config)
        if not args.bucket:
            client.create_bucket(Bucket=bucket)
        # warm up: RGW creates its data pools on the first put / multipart upload (~2 s each)
        client.upload_fileobj(io.BytesIO(bytes(12 * MiB)), bucket, "warmup/obj")
        client.put_object(Bucket=bucket, Key="warmup/small", Body=b"x")
        _empty(client, bucket, "warmup/")
        for workload, n in ({} if args.no_throughput else sizes).items():
            res = throughput(server, bucket, workload, n, repeat)
            results["throughput"].append(res)
            print(
                f"{workload:5s} n={n:<6d} {res['bytes'] / 1e6:8.1f} MB | write MB/s: ours e2e {res['write_ours_e2e_MBps']:7.1f}"
                f"  ours store {res['write_ours_store_MBps']:7.1f}  boto3 {res['write_boto3_MBps']:7.1f}"
                f"  (ratio e2e {res['write_ratio_e2e']:.2f}, store {res['write_ratio_store']:.2f};"
                f" encode-only {res['encode_only_MBps']:.1f})"
                f" | read MB/s: ours decoded {res['read_ours_decoded_MBps']:7.1f}  ours raw {res['read_ours_raw_MBps']:7.1f}"
                f"  boto3 {res['read_boto3_MBps']:7.1f} (ratio raw {res['read_ratio_raw']:.2f})",
                flush=True,
            )
        if not (args.quick or args.no_rss):
            for workload, n in sizes.items():
                for size in (n, 2 * n):
                    rss = {"workload": workload, "n": size, **peak_rss(server, bucket, workload, size)}
                    results["rss_mib"].append(rss)
                    print(
                        f"{workload:5s} n={size:<6d} peak RSS MiB: start {rss['before_kib']:6.1f}  after write "
                        f"{rss['write_kib']:6.1f}  after read {rss['read_kib']:6.1f}",
                        flush=True,
                    )
    finally:
        server.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
