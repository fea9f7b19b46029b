"""Artefacts written once by the real atdata 0.7.0b1 (``golden/``), read by our engine.

Runs in the ordinary suite on Python 3.11 without atdata. ``golden/generate.py``
(run in the atdata venv) regenerates everything; ``golden/golden.json`` holds what
atdata reported while writing (entries, CIDs, records, exact payload bytes).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from . import wire
from .conftest import fields_of, our_type

GOLDEN = Path(__file__).resolve().parent / "golden"
FIELDS = [n for n, _ in wire.SPECS["AllTypes"].fields]
TINY_FIELDS = [n for n, _ in wire.SPECS["Tiny"].fields]
UUID1_KEY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-8000-000000000000$")


def _expand(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"$repeat"}:
        ch, n = v["$repeat"]
        return ch * n
    if isinstance(v, list):
        return [_expand(x) for x in v]
    return v


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    g = wire.from_json(json.loads((GOLDEN / "golden.json").read_text()))
    g["cids"] = [{k: _expand(v) for k, v in c.items()} for c in g["cids"]]
    return g


@pytest.fixture
def golden_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of golden/ as the working directory (entries use relative URLs)."""
    dst = tmp_path / "golden"
    shutil.copytree(GOLDEN, dst, ignore=shutil.ignore_patterns("generate.py", "__pycache__"))
    monkeypatch.chdir(dst)
    return dst


def _main_entry(golden: dict) -> dict:
    return next(e for e in golden["entries"] if e["name"] == "alltypes")


def _tiny_entry(golden: dict) -> dict:
    return next(e for e in golden["entries"] if e["name"] == "tiny")


# ------------------------------------------------------------------ shard bytes


def test_golden_shard_decodes_sample_for_sample(golden: dict) -> None:
    """Our tar reader + our AllTypes class decode atdata's shard to the values atdata wrote."""
    from atdata_dagster.shards.reader import iter_samples

    entry = _main_entry(golden)
    path = GOLDEN / entry["data_urls"][0]
    T = our_type("AllTypes")
    keys, got = [], []
    with open(path, "rb") as fh:
        for key, payload in iter_samples(fh, str(path)):
            keys.append(key)
            got.append(fields_of(T.from_bytes(payload), FIELDS))
    assert wire.diff_samples(golden["main_values"], got) == []
    assert all(UUID1_KEY.match(k) for k in keys), keys  # atdata's uuid1(node=0, clock_seq=0) keys


def test_golden_shard_decodes_with_type_from_schema_record(golden: dict) -> None:
    """The type rebuilt from atdata's schema record decodes *every* ndarray field (atdata leaves
    ``NDArray[dtype]``/``Optional[NDArray]`` as bytes: reference §1.4, Appendix B.3)."""
    from atdata_dagster.samples.schema import type_from_record
    from atdata_dagster.shards.reader import iter_samples

    T = type_from_record(golden["schema_record"])
    path = GOLDEN / _main_entry(golden)["data_urls"][0]
    with open(path, "rb") as fh:
        got = [fields_of(T.from_bytes(p), FIELDS) for _, p in iter_samples(fh, str(path))]
    assert wire.diff_samples(golden["main_values"], got) == []


def test_golden_payloads_byte_identical(golden: dict) -> None:
    """Our msgpack payload for each sample is byte-for-byte the one atdata wrote, and we decode atdata's."""
    T = our_type("AllTypes")
    for item in golden["payloads"]:
        ours = T(**item["values"]).packed
        assert ours.hex() == item["packed_hex"], f"payload differs for {item['values']['s']!r}"
        back = fields_of(T.from_bytes(bytes.fromhex(item["packed_hex"])), FIELDS)
        assert wire.diff_samples([item["values"]], [back]) == []


def test_golden_brace_entry_shards_decode(golden: dict) -> None:
    """atdata's sharded ``write_samples`` output (``part-000000.tar``, ``part-000001.tar``)."""
    from atdata_dagster.shards.reader import iter_samples

    T = our_type("Tiny")
    got = []
    for name in ("part-000000.tar", "part-000001.tar"):
        with open(GOLDEN / "store" / "tiny" / name, "rb") as fh:
            got += [fields_of(T.from_bytes(p), TINY_FIELDS) for _, p in iter_samples(fh, name)]
    assert wire.diff_samples(golden["tiny_values"], got) == []


def test_golden_disk_store_file_name_shape(golden: dict) -> None:
    """atdata's LocalDiskStore names shards ``data--<8 hex>--<6 digits>.tar``; ours must match the shape."""
    url = _main_entry(golden)["data_urls"][0]
    assert re.fullmatch(r"store/alltypes/data--[0-9a-f]{8}--000000\.tar", url), url


# ---------------------------------------------------------------------- CIDs


def test_golden_cids_agree(golden: dict) -> None:
    """compute_cid reproduces libipld (via atdata) on every vector, incl. long and unicode strings."""
    from atdata_dagster.index.entry import compute_cid

    for c in golden["cids"]:
        assert compute_cid(c["schema_ref"], c["data_urls"]) == c["cid"], c["schema_ref"][:60]


def test_golden_checksums_match_files(golden: dict) -> None:
    entry = _main_entry(golden)
    for url, digest in entry["metadata"]["checksums"].items():
        assert hashlib.sha256((GOLDEN / url).read_bytes()).hexdigest() == digest


# -------------------------------------------------------------- index providers


def _check_index_contents(index: Any, golden: dict) -> None:
    """Listing, name resolution (labels), schema decode, every sample, checksums, CIDs."""
    from atdata_dagster.index.entry import compute_cid

    listed = {e.name: e for e in index.list_datasets()}
    assert set(listed) == {"alltypes", "tiny"}
    for g in golden["entries"]:
        e = listed[g["name"]]
        assert (e.cid, e.schema_ref, list(e.data_urls), e.metadata) == (g["cid"], g["schema_ref"], g["data_urls"], g["metadata"])
        assert compute_cid(e.schema_ref, e.data_urls) == g["cid"]
        assert index.get_dataset(g["name"]).cid == g["cid"]

    main = index.get_dataset("alltypes")
    record = index.get_schema(main.schema_ref)
    # createdAt differs between the SQLite and Redis runs of the generator; everything else is exact
    assert {k: v for k, v in record.items() if k != "createdAt"} == {k: v for k, v in golden["schema_record"].items() if k != "createdAt"}
    assert isinstance(record["createdAt"], str)
    T = index.get_schema_type(main.schema_ref)
    got = [fields_of(s, FIELDS) for s in index.dataset_for_entry(main).ordered()]
    assert wire.diff_samples(golden["main_values"], got) == []
    assert T.__name__ == "AllTypes"
    assert index.verify(main) == {main.data_urls[0]: "ok"}

    assert index.get_dataset("tiny").metadata is None


def _check_brace_entry(index: Any, golden: dict) -> None:
    """The entry atdata indexed without a store: one relative brace-list URL over two shards."""
    got = [fields_of(s, TINY_FIELDS) for s in index.dataset("tiny").ordered()]
    assert wire.diff_samples(golden["tiny_values"], got) == []


def _label_tuple(label: Any) -> tuple:
    """atdata lists labels as ``(name, cid, version or None)``; ours are LabelRecord objects."""
    if isinstance(label, tuple):
        return label
    return (label.name, label.cid, label.version or None)


def _check_labels(index: Any, golden: dict) -> None:
    main = _main_entry(golden)
    versioned = index.get_label("alltypes", "1.0.0")
    assert versioned.cid == main["cid"]
    assert index.get_label("alltypes").cid == main["cid"]
    key = lambda t: (t[0], t[1], t[2] or "")  # noqa: E731
    labels = sorted((_label_tuple(x) for x in index.list_labels()), key=key)
    assert labels == sorted((tuple(x) for x in golden["labels"]), key=key)


def test_golden_sqlite_index_read_by_our_provider(golden: dict, golden_copy: Path) -> None:
    from atdata_dagster.local import Index

    index = Index(path=str(golden_copy / "index.db"), atmosphere=None)
    try:
        _check_index_contents(index, golden)
        _check_labels(index, golden)
    finally:
        index.close()


def test_golden_sqlite_brace_url_entry_read_by_ours(golden: dict, golden_copy: Path) -> None:
    from atdata_dagster.local import Index

    with Index(path=str(golden_copy / "index.db"), atmosphere=None) as index:
        _check_brace_entry(index, golden)


def test_golden_sqlite_tables_unchanged_by_our_open(golden_copy: Path) -> None:
    """Opening atdata's database with our provider keeps its tables and columns as they are."""
    from atdata_dagster.local import Index

    def layout(path: Path) -> dict:
        con = sqlite3.connect(path)
        try:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
            return {t: [(r[1], r[2], r[5]) for r in con.execute(f"pragma table_info({t})")] for t in tables}
        finally:
            con.close()

    before = layout(golden_copy / "index.db")
    Index(path=str(golden_copy / "index.db"), atmosphere=None).close()
    after = layout(golden_copy / "index.db")
    for table, cols in before.items():
        assert after.get(table) == cols, table


@pytest.mark.redis
def test_golden_redis_keys_read_by_our_provider(golden: dict, golden_copy: Path, redis_url: str) -> None:
    """atdata's exact Redis keys (restored from the dump) are read by our Redis provider."""
    import redis

    from atdata_dagster.local import Index

    dump = json.loads((golden_copy / "redis_dump.json").read_text())
    conn = redis.Redis.from_url(redis_url)
    for key, item in dump.items():
        if item["type"] == "hash":
            conn.hset(key, mapping={f: base64.b64decode(v["$b64"]) for f, v in item["value"].items()})
        else:
            conn.set(key, base64.b64decode(item["value"]["$b64"]))
    index = Index(redis=conn, atmosphere=None)
    try:
        _check_index_contents(index, golden)
        _check_labels(index, golden)
        _check_brace_entry(index, golden)
    finally:
        index.close()


def test_golden_redis_dump_matches_our_key_layout(golden: dict, tmp_path: Path) -> None:
    """The Redis key names and hash fields atdata wrote are the ones our provider documents/writes."""
    dump = json.loads((GOLDEN / "redis_dump.json").read_text())
    main = _main_entry(golden)
    assert f"LocalDatasetEntry:{main['cid']}" in dump
    assert "LocalSchema:AllTypes@1.0.0" in dump and dump["LocalSchema:AllTypes@1.0.0"]["type"] == "string"
    assert set(dump["LocalDatasetEntry:" + main["cid"]]["value"]) == {"name", "schema_ref", "data_urls", "cid", "metadata"}
    assert set(dump["Label:alltypes@"]["value"]) == {"cid", "name", "version"}
    assert set(dump["Label:alltypes@1.0.0"]["value"]) == {"cid", "name", "version", "description"}


# ------------------------------------------------------------------- schemas


def test_golden_schema_record_same_as_ours(golden: dict) -> None:
    """Our schema record for the same class equals atdata's (except the timestamp), and so does the stored text."""
    from atdata_dagster.samples.schema import build_schema_record, schema_json

    theirs = dict(golden["schema_record"])
    ours = build_schema_record(our_type("AllTypes"), version="1.0.0")
    ours["createdAt"] = theirs["createdAt"]
    theirs.pop("$ref")
    assert ours == theirs
    assert schema_json(ours) == golden["stored_schema_json"]


def test_golden_schema_record_decodes(golden: dict) -> None:
    from atdata_dagster.samples.schema import type_from_record

    T = type_from_record(golden["schema_record"])
    assert T.__name__ == "AllTypes"
    assert [f for f in T.__dataclass_fields__] == FIELDS
    t = type_from_record(golden["tiny_schema_record"])
    assert list(t.__dataclass_fields__) == TINY_FIELDS


def test_golden_stub_layout_and_import_path(golden: dict, tmp_path: Path) -> None:
    """Our stub manager writes the same files and import path as atdata; the class has the same fields."""
    from atdata_dagster.samples.stubs import StubManager

    sm = StubManager(tmp_path / "stubs")
    path = sm.ensure_stub(golden["schema_record"])
    files = sorted(str(p.relative_to(tmp_path / "stubs")) for p in (tmp_path / "stubs").rglob("*.py"))
    assert files == golden["stub"]["files"]
    assert sm.import_path("AllTypes", "1.0.0") == golden["stub"]["import_path"]
    assert str(path.relative_to(tmp_path / "stubs")) == golden["stub"]["import_path"].replace(".", "/") + ".py"

    theirs = _class_fields(GOLDEN / golden["stub"]["file"])
    ours = _class_fields(path)
    assert [(n, opt) for n, _, opt in ours] == [(n, opt) for n, _, opt in theirs]
    # atdata's staleness check looks for "Schema: Name@version" in the docstring: ours carries it too
    assert "Schema: AllTypes@1.0.0" in path.read_text()[:500]
    cls = sm.load_type(golden["schema_record"])
    assert list(cls.__dataclass_fields__) == golden["stub"]["fields"]


def _class_fields(path: Path) -> list[tuple[str, str, bool]]:
    """(name, annotation source, has default) of the sample class in a stub module."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    return [
        (n.target.id, ast.unparse(n.annotation), n.value is not None)
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and not n.target.id.startswith("__")
    ]


# ------------------------------------------------------------------ manifests


def test_golden_manifest_read_by_ours(golden: dict) -> None:
    from atdata_dagster.shards.manifest import read_manifest

    m = read_manifest(str(GOLDEN / golden["manifest"]["json"]))
    assert m == json.loads((GOLDEN / golden["manifest"]["json"]).read_text())
    assert (m["manifest_version"], m["shard_id"], m["schema_type"], m["num_samples"]) == ("1.0.0", "data", "AllTypes", 6)
    assert set(m["aggregates"]) == {"s", "i", "f", "flag", "li", "ls", "nested", "opt_s", "opt_i"}


def test_golden_manifest_parquet_sidecar_shape() -> None:
    """atdata's per-sample parquet sidecar (fastparquet): PAR1 framing and the three fixed columns.

    No parquet reader is a dependency, so the footer's column names are checked as bytes;
    with pandas + pyarrow installed the columns are read properly too.
    """
    data = (GOLDEN / "manifest" / "data.manifest.parquet").read_bytes()
    assert data[:4] == b"PAR1" and data[-4:] == b"PAR1"
    for col in (b"__key__", b"__offset__", b"__size__"):
        assert col in data
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        return
    df = pd.read_parquet(GOLDEN / "manifest" / "data.manifest.parquet")
    assert list(df.columns[:3]) == ["__key__", "__offset__", "__size__"]


# ------------------------------------------------------------------ atmosphere


def _atmo(name: str) -> dict:
    return json.loads((GOLDEN / "atmosphere" / name).read_text())


def test_golden_atmosphere_schema_record_parsed_by_ours(golden: dict) -> None:
    from atdata_dagster.atmosphere.records import SchemaRecord
    from atdata_dagster.samples.schema import type_from_record

    rec = SchemaRecord.from_record(_atmo("schema.json"))
    assert (rec.name, rec.version, rec.description) == ("AllTypes", "1.0.0", "Golden schema.")
    assert set(f["name"] for f in rec.fields) == set(FIELDS)
    assert {f["name"] for f in rec.fields if f["optional"]} == {"opt_s", "opt_i", "opt_arr", "opt_arr2"}
    local = {f["name"]: f["fieldType"] for f in golden["schema_record"]["fields"]}
    for f in rec.fields:  # JSON schema carries no dtype: compare kinds and primitives
        assert _shape(f["fieldType"]) == _shape(local[f["name"]]), f["name"]
    T = type_from_record(_atmo("schema.json"))
    assert set(T.__dataclass_fields__) == set(FIELDS)
    # our builder produces the same JSON-schema body atdata does for the same class
    ours = SchemaRecord.from_local(golden["schema_record"]).to_record()
    theirs = _atmo("schema.json")
    assert ours["schema"] == theirs["schema"]
    for key in ("$type", "name", "version", "schemaType", "atdataSchemaVersion"):
        assert ours[key] == theirs[key], key


def _shape(ft: dict) -> Any:
    kind = ft.get("$type", "").rsplit("#", 1)[-1]
    if kind == "array":
        return ("array", _shape(ft["items"]))
    if kind == "primitive":
        return ("primitive", ft["primitive"])
    return (kind,)


@pytest.mark.parametrize("name,kind", [("entry_http.json", "http"), ("entry_s3.json", "s3"), ("entry_blobs.json", "blobs")])
def test_golden_atmosphere_entry_records_parsed_by_ours(name: str, kind: str, golden: dict) -> None:
    from atdata_dagster.atmosphere.records import EntryRecord

    raw = _atmo(name)
    rec = EntryRecord.from_record(raw)
    assert rec.storage.kind == kind
    assert rec.name == raw["name"] and rec.schema_ref == raw["schemaRef"]
    digest = _main_entry(golden)["metadata"]["checksums"][_main_entry(golden)["data_urls"][0]]
    shard = Path(_main_entry(golden)["data_urls"][0]).name
    if kind == "http":
        assert rec.storage.data_urls() == [f"https://data.example.org/alltypes/{shard}"]
        assert rec.storage.checksums() == {f"https://data.example.org/alltypes/{shard}": digest}
        assert (rec.description, rec.tags, rec.license) == ("Golden dataset.", ["golden", "compat"], "Apache-2.0")
        assert (rec.size.samples, rec.size.shards) == (6, 1)
        assert rec.metadata == {"split": "train", "version": "1.0.0", "custom_key": "x"}
    elif kind == "s3":
        assert rec.storage.data_urls() == [f"s3://golden-bucket/alltypes/{shard}"]
        assert (rec.storage.region, rec.storage.endpoint) == ("us-east-1", "http://127.0.0.1:9000")
    else:
        did = "did:plc:abcdefghijklmnopqrstuvwx"
        urls = rec.storage.data_urls(did)
        assert len(urls) == 1 and "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" in urls[0]
        assert list(rec.storage.checksums(did).values()) == [digest]
    # and the record survives our round trip unchanged
    assert EntryRecord.from_record(rec.to_record()).to_record() == rec.to_record()
    assert rec.to_record() == raw


def test_golden_atmosphere_label_parsed_by_ours() -> None:
    from atdata_dagster.atmosphere.records import DatasetLabel

    raw = _atmo("label.json")
    rec = DatasetLabel.from_record(raw)
    assert (rec.name, rec.version, rec.description) == ("alltypes", "1.0.0", "golden v1")
    assert rec.dataset_uri == raw["datasetUri"]
    assert rec.to_record() == raw


def test_golden_directory_stays_small() -> None:
    """The committed golden artefacts are fixtures, not data: keep them under 200 KB."""
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 200_000, f"tests/compat/golden is {total} bytes"
