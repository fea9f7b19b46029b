"""Manifest sidecars: one per shard (including the last), standard JSON, aggregates."""

from __future__ import annotations

import io
import json
import os
from typing import Optional

import msgpack
import numpy as np
import pytest

from atdata_dagster.shards import manifest as manifest_mod
from atdata_dagster.shards.manifest import ManifestBuilder, read_manifest
from atdata_dagster.shards.writer import ShardWriter, write_samples_to_store


def _strict_json(data: bytes) -> dict:
    def bad(const):
        raise AssertionError(f"non-standard JSON constant {const}")

    return json.loads(data, parse_constant=bad)


def _write_dicts(store, rows, **kw):
    with ShardWriter(store, "m", manifest=True, **kw) as w:
        for r in rows:
            w.write_payload(None, msgpack.packb(r))
        return w.close()


def test_manifest_for_every_shard_including_last(store):
    rows = [{"label": ["a", "b", "c"][i % 3], "score": float(i), "tags": [i % 2, 7]} for i in range(25)]
    result = _write_dicts(store, rows, maxcount=10)
    assert len(result) == 3
    for info, lo in zip(result.shards, (0, 10, 20)):
        assert info.manifest_url == info.url[:-4] + ".manifest.json"
        m = _strict_json(open(info.manifest_url, "rb").read())
        assert m["manifest_version"] == "1.0.0"
        assert m["shard_id"] == os.path.basename(info.url)[:-4]
        assert m["num_samples"] == info.num_samples
        assert m["schema_type"] == "DictSample" and m["schema_version"] == "1.0.0"
        assert m["created_at"].endswith("+00:00")
        chunk = rows[lo : lo + info.num_samples]
        assert m["size_bytes"] == sum(len(msgpack.packb(r)) for r in chunk)
        agg = m["aggregates"]
        assert agg["score"] == {
            "type": "numeric",
            "min": chunk[0]["score"],
            "max": chunk[-1]["score"],
            "mean": sum(r["score"] for r in chunk) / len(chunk),
            "count": len(chunk),
        }
        assert agg["label"]["type"] == "categorical"
        assert sum(agg["label"]["value_counts"].values()) == len(chunk)
        assert agg["tags"] == {"type": "set", "all_values": [0, 1, 7]}
    assert sum(_strict_json(open(s.manifest_url, "rb").read())["num_samples"] for s in result.shards) == 25


def test_manifest_does_not_change_shard_bytes(tmp_path):
    from atdata_dagster.stores.disk import LocalDiskStore

    rows = [{"x": i} for i in range(30)]
    a = _write_dicts(LocalDiskStore(tmp_path / "a"), rows, maxcount=10)
    with ShardWriter(LocalDiskStore(tmp_path / "b"), "m", maxcount=10) as w:
        for r in rows:
            w.write_payload(None, msgpack.packb(r))
        b = w.close()
    assert a.checksums.values() and list(a.checksums.values()) == list(b.checksums.values())


def test_typed_manifest_aggregates(store):
    from atdata_dagster.samples.packable import packable

    @packable
    class Rec:
        name: str
        flag: bool
        n: int
        x: Optional[float]
        emb: np.ndarray
        words: list[str]
        raw: bytes

    samples = [
        Rec(name=f"n{i % 2}", flag=i % 2 == 0, n=i, x=None, emb=np.zeros(3, np.float32), words=["w", f"v{i}"], raw=b"\0")
        for i in range(4)
    ]
    result = write_samples_to_store(samples, store, "typed", manifest=True)
    m = read_manifest(result[0])
    assert m["schema_type"] == "Rec"
    agg = m["aggregates"]
    assert set(agg) == {"name", "flag", "n", "x", "words"}  # ndarray and bytes excluded
    assert agg["name"] == {"type": "categorical", "cardinality": 2, "value_counts": {"n0": 2, "n1": 2}}
    assert agg["flag"]["value_counts"] == {"True": 2, "False": 2}
    assert agg["n"] == {"type": "numeric", "min": 0, "max": 3, "mean": 1.5, "count": 4}
    # a declared numeric field with no values: null, never Infinity
    assert agg["x"] == {"type": "numeric", "min": None, "max": None, "mean": None, "count": 0}
    assert agg["words"] == {"type": "set", "all_values": ["v0", "v1", "v2", "v3", "w"]}
    _strict_json(open(result.shards[0].manifest_url, "rb").read())


def test_non_finite_values_never_reach_json():
    b = ManifestBuilder(rows=False)
    for v in (1.0, float("inf"), float("nan"), -2.0):
        b.add_fields("k", 0, 1, {"v": v})
    out = _strict_json(b.json_bytes("s"))
    assert out["aggregates"]["v"]["min"] == -2.0 and out["aggregates"]["v"]["max"] is None
    assert out["aggregates"]["v"]["count"] == 3


def test_distinct_values_are_capped(monkeypatch):
    monkeypatch.setattr(manifest_mod, "MAX_DISTINCT_VALUES", 5)
    b = ManifestBuilder(rows=False)
    for i in range(20):
        b.add_fields(f"k{i}", 0, 1, {"c": f"v{i}", "s": [i]})
    agg = b.header("s")["aggregates"]
    assert agg["c"]["cardinality"] == 5 and agg["c"]["truncated"] is True
    assert len(agg["s"]["all_values"]) == 5 and agg["s"]["truncated"] is True


def test_rows_have_real_tar_offsets(store):
    import pyarrow.parquet as pq  # a dependency: atdata's manifest queries need the parquet

    rows = [{"label": f"l{i}", "blob": os.urandom(i * 300)} for i in range(6)]
    payloads = [msgpack.packb(r) for r in rows]
    with ShardWriter(store, "rows", manifest=True) as w:
        for p in payloads:
            w.write_payload(None, p)
        r = w.close()
    data = open(r[0], "rb").read()
    cols = pq.read_table(r[0][:-4] + ".manifest.parquet").to_pydict()
    assert cols["__key__"] == [f"{i:010d}" for i in range(6)]
    assert cols["__size__"] == [len(p) for p in payloads]
    assert cols["label"] == [f"l{i}" for i in range(6)]
    assert "blob" not in cols
    for key, off, size, p in zip(cols["__key__"], cols["__offset__"], cols["__size__"], payloads):
        assert data[off : off + 100].rstrip(b"\0") == f"{key}.msgpack".encode()
        assert data[off + 512 : off + 512 + size] == p


def test_parquet_sidecar_has_key_offset_and_size_columns(store):
    import pyarrow.parquet as pq  # a dependency: atdata's manifest queries need the parquet

    result = _write_dicts(store, [{"a": 1}])
    table = pq.read_table(result[0][:-4] + ".manifest.parquet")
    assert table.column_names[:3] == ["__key__", "__offset__", "__size__"]
    assert table.num_rows == 1


def test_read_manifest_is_lenient():
    text = b'{"manifest_version": "1.0.0", "aggregates": {"x": {"type": "numeric", "min": Infinity, "max": -Infinity}}}'
    m = read_manifest(text)
    assert m["aggregates"]["x"]["min"] == float("inf")
    assert read_manifest(io.BytesIO(text)) == m


def test_read_manifest_from_shard_url(store):
    result = _write_dicts(store, [{"a": 1}, {"a": 2}])
    assert read_manifest(result[0])["num_samples"] == 2
    assert read_manifest(result.shards[0].manifest_url)["num_samples"] == 2


def test_provenance(mem_store):
    with ShardWriter(mem_store, "p", manifest=True, provenance={"source_job_id": "run-1"}) as w:
        w.write_payload(None, msgpack.packb({"a": 1}))
        r = w.close()
    m = json.loads(mem_store.objects[r.shards[0].manifest_url])
    assert m["provenance"] == {"source_job_id": "run-1"}


@pytest.mark.parametrize("bad", [b"\xc1", b"\x01"])  # not msgpack / not a map
def test_undecodable_payload_still_counted(bad):
    b = ManifestBuilder(rows=False)
    b.add("k", 0, len(bad), bad)
    assert b.header("s")["num_samples"] == 1 and b.header("s")["aggregates"] == {}
