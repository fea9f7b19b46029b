"""Two-way interoperability with atdata 0.7.0b1 for datasets in S3 (a real Ceph RGW on loopback).

Grouped with the other S3 tests (``xdist_group("s3")``) so one worker starts the RGW
once; the atdata subprocess is cheap to start there as well.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from . import wire
from .conftest import AtdataSide, fields_of, our_type

pytestmark = [pytest.mark.s3, pytest.mark.xdist_group("s3"), pytest.mark.atdata]

FIELDS = [n for n, _ in wire.SPECS["AllTypes"].fields]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
N = 12


def _key_re(bucket: str, name: str) -> str:
    """atdata's S3 layout: ``s3://<bucket>/<prefix>/data--<uuid>--<6 digits>.tar`` (reference §2.3)."""
    return rf"s3://{re.escape(bucket)}/{re.escape(name)}/data--{UUID}--\d{{6}}\.tar"


def _our_index(tmp_path: Path, rgw_server: Any, bucket: str):
    from atdata_dagster.local import Index
    from atdata_dagster.stores.s3 import S3DataStore

    store = S3DataStore(rgw_server.credentials, bucket=bucket)
    return Index(path=str(tmp_path / "index.db"), data_store=store, atmosphere=None)


def test_ours_s3_write_atdata_reads(atdata: AtdataSide, rgw_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    values = wire.make_values("AllTypes", N)
    with _our_index(tmp_path, rgw_server, s3_bucket) as index:
        entry = index.write_samples([our_type("AllTypes")(**v) for v in values], name="ours", maxcount=5)
    assert len(entry.data_urls) == 3
    for url in entry.data_urls:
        assert re.fullmatch(_key_re(s3_bucket, "ours"), url), url

    s3 = {"credentials": rgw_server.credentials, "bucket": s3_bucket}
    got = atdata.call("read", provider={"kind": "sqlite", "path": str(tmp_path / "index.db")}, name="ours", s3=s3)
    assert got["entry"]["cid"] == got["cid_recomputed"] == entry.cid
    assert got["entry"]["data_urls"] == entry.data_urls
    assert wire.diff_samples(values, got["samples"]) == []  # through atdata's S3Source
    assert got["verify"] == {u: "skipped" for u in entry.data_urls}  # atdata never hashes remote shards
    assert set(entry.metadata["checksums"]) == set(entry.data_urls)  # we recorded them anyway


def test_atdata_s3_write_ours_reads(atdata: AtdataSide, rgw_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    from atdata_dagster.index.entry import compute_cid

    values = wire.make_values("AllTypes", N, seed=2)
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    s3 = {"credentials": rgw_server.credentials, "bucket": s3_bucket}
    theirs = atdata.call("write", provider=spec, s3=s3, type="AllTypes", samples=values, name="theirs")
    assert len(theirs["data_urls"]) == 1
    assert re.fullmatch(_key_re(s3_bucket, "theirs"), theirs["data_urls"][0]), theirs["data_urls"]

    with _our_index(tmp_path, rgw_server, s3_bucket) as index:
        entry = index.get_dataset("theirs")
        assert entry.cid == theirs["cid"] == compute_cid(theirs["schema_ref"], theirs["data_urls"])
        assert list(entry.data_urls) == theirs["data_urls"]
        got = [fields_of(s, FIELDS) for s in index.dataset("theirs").ordered()]
        assert wire.diff_samples(values, got) == []
        # atdata streams to S3 without hashing, so there is nothing to verify against
        assert set(index.verify(entry).values()) <= {"skipped"}
