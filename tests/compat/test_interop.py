"""Two-way interoperability with the real atdata 0.7.0b1, live.

Our side runs here (Python 3.11, ``atdata_dagster``); the atdata side runs in the
3.12 venv as a subprocess (``atdata_side.py``) and is driven over JSON. Both sides build
the same sample classes from ``wire.SPECS`` with their own ``@packable``.

Where atdata returns raw bytes for an ndarray field (``NDArray[dtype]`` and
``Optional[NDArray]`` annotations: reference §1.4 / Appendix B.3) the driver decodes
them with atdata's own array codec and reports the field names, so values are always
compared exactly.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from . import wire
from .conftest import AtdataSide, fields_of, open_our_index, our_type

pytestmark = [pytest.mark.xdist_group("atdata"), pytest.mark.atdata]

FIELDS = [n for n, _ in wire.SPECS["AllTypes"].fields]
N = 12
DISK_URL = r"{root}/{name}/data--[0-9a-f]{{8}}--\d{{6}}\.tar"

# atdata leaves these fields as bytes (reference §1.4): its schema decoder turns every
# optional ndarray into typing.Optional[NDArray]; its own class keeps NDArray[np.uint8]
# and typing.Optional[NDArray] as bytes.
QUIRK_DECODED_TYPE = ["opt_arr", "opt_arr2"]
QUIRK_OWN_CLASS = ["img", "opt_arr2"]


def _entry_tuple(e: Any) -> tuple:
    if isinstance(e, dict):
        return (e["name"], e["cid"], e["schema_ref"], list(e["data_urls"]), e["metadata"])
    return (e.name, e.cid, e.schema_ref, list(e.data_urls), e.metadata)


def _read_ours(index: Any, name: str, type_name: str = "AllTypes") -> list[dict]:
    names = [n for n, _ in wire.SPECS[type_name].fields]
    return [fields_of(s, names) for s in index.dataset(name).ordered()]


# ---------------------------------------------------------------- ours -> atdata


def test_ours_write_atdata_reads(atdata: AtdataSide, provider_spec: dict, tmp_path: Path) -> None:
    """We write (3 shards: we honour maxcount); atdata lists, resolves by name, decodes the
    schema, reads every sample equal (also via load_dataset), verifies checksums, agrees on the CID."""
    values = wire.make_values("AllTypes", N)
    store = tmp_path / "store"
    index = open_our_index(provider_spec, store_root=store)
    try:
        entry = index.write_samples([our_type("AllTypes")(**v) for v in values], name="ours", maxcount=5)
    finally:
        index.close()
    assert len(entry.data_urls) == 3
    for url in entry.data_urls:
        assert re.fullmatch(DISK_URL.format(root=re.escape(str(store.resolve())), name="ours"), url), url

    got = atdata.call("read", provider=provider_spec, name="ours", as_type="AllTypes")

    ours = {"name": entry.name, "cid": entry.cid, "schema_ref": entry.schema_ref,
            "data_urls": list(entry.data_urls), "metadata": entry.metadata}
    assert [_entry_tuple(e) for e in got["listed"]] == [_entry_tuple(ours)]
    assert _entry_tuple(got["entry"]) == _entry_tuple(ours)
    assert got["cid_recomputed"] == entry.cid
    assert got["schema"]["name"] == "AllTypes" and got["entry"]["schema_ref"] == entry.schema_ref
    assert [f for f, _ in got["decoded_fields"]] == FIELDS
    assert wire.diff_samples(values, got["samples"]) == []
    assert wire.diff_samples(values, got["as_type"]["samples"]) == []
    assert got["load_dataset_count"] == N
    assert got["verify"] == {u: "ok" for u in entry.data_urls}
    assert [tuple(x) for x in got["labels"]] == [("ours", entry.cid, None)]
    # the documented atdata quirk, observed (our reader has no such gap)
    assert got["left_as_bytes"] == QUIRK_DECODED_TYPE
    assert got["as_type"]["left_as_bytes"] == QUIRK_OWN_CLASS


def test_ours_single_shard_dataset_atdata_reads(atdata: AtdataSide, tmp_path: Path) -> None:
    """One small write (default maxcount): same layout atdata's own Index.write_samples produces."""
    values = wire.make_values("Tiny", 3)
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        entry = index.write_samples([our_type("Tiny")(**v) for v in values], name="tiny")
    assert len(entry.data_urls) == 1
    got = atdata.call("read", provider=spec, name="tiny")
    assert wire.diff_samples(values, got["samples"]) == []
    assert got["verify"] == {entry.data_urls[0]: "ok"}
    assert got["cid_recomputed"] == entry.cid
    # content-derived shard names: the same samples again give the same URL and CID
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        again = index.write_samples([our_type("Tiny")(**v) for v in values], name="tiny")
    assert (again.data_urls, again.cid) == (entry.data_urls, entry.cid)


# ---------------------------------------------------------------- atdata -> ours


@pytest.mark.parametrize("mode", ["index", "store_sharded"])
def test_atdata_writes_ours_reads(atdata: AtdataSide, provider_spec: dict, tmp_path: Path, mode: str) -> None:
    """atdata writes (Index.write_samples, or its LocalDiskStore with maxcount=5); we list,
    resolve, decode the schema, read every sample equal, verify, and compute the same CID."""
    from atdata_dagster.index.entry import compute_cid

    values = wire.make_values("AllTypes", N, seed=3)
    store = tmp_path / "store"
    theirs = atdata.call("write", provider=provider_spec, store_root=str(store), type="AllTypes",
                         samples=values, name="theirs", mode=mode, maxcount=5, metadata={"origin": "atdata"})
    assert len(theirs["data_urls"]) == (1 if mode == "index" else 3)
    for url in theirs["data_urls"]:
        assert re.fullmatch(DISK_URL.format(root=re.escape(str(store.resolve())), name="theirs"), url), url

    index = open_our_index(provider_spec)
    try:
        listed = index.list_datasets()
        assert [_entry_tuple(e) for e in listed] == [_entry_tuple(theirs)]
        entry = index.get_dataset("theirs")
        assert _entry_tuple(entry) == _entry_tuple(theirs)
        assert entry.cid == compute_cid(theirs["schema_ref"], theirs["data_urls"]) == theirs["cid"]
        assert entry.metadata["origin"] == "atdata"
        T = index.get_schema_type(entry.schema_ref)
        assert list(T.__dataclass_fields__) == FIELDS
        assert wire.diff_samples(values, _read_ours(index, "theirs")) == []
        # reading with our own class for the same type agrees too
        got = [fields_of(s, FIELDS) for s in index.dataset_for_entry(entry, our_type("AllTypes")).ordered()]
        assert wire.diff_samples(values, got) == []
        assert index.verify(entry) == {u: "ok" for u in theirs["data_urls"]}
        assert index.get_label("theirs").cid == theirs["cid"]
    finally:
        index.close()


def test_atdata_brace_url_entry_ours_reads(atdata: AtdataSide, tmp_path: Path) -> None:
    """atdata's insert_dataset without a store indexes one brace-list URL; we must read all shards."""
    values = wire.make_values("AllTypes", N, seed=1)
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    theirs = atdata.call("write", provider=spec, type="AllTypes", samples=values, name="braced",
                         mode="brace", maxcount=5, out_dir=str(tmp_path / "parts"))
    assert len(theirs["data_urls"]) == 1 and "{" in theirs["data_urls"][0]
    with open_our_index(spec) as index:
        entry = index.get_dataset("braced")
        assert entry.cid == theirs["cid"]
        assert wire.diff_samples(values, _read_ours(index, "braced")) == []


def test_our_insert_of_a_brace_url_without_a_store_gives_atdatas_entry_and_cid(atdata: AtdataSide, tmp_path: Path) -> None:
    """Indexed in place, a brace-pattern URL is recorded as written (not expanded), as atdata does."""
    from atdata_dagster import Dataset

    values = wire.make_values("AllTypes", N, seed=2)
    theirs = atdata.call("write", provider={"kind": "sqlite", "path": str(tmp_path / "theirs.db")}, type="AllTypes",
                         samples=values, name="braced", mode="brace", maxcount=5, out_dir=str(tmp_path / "parts"))
    (pattern,) = theirs["data_urls"]
    assert "{" in pattern
    with open_our_index({"kind": "sqlite", "path": str(tmp_path / "ours.db")}) as index:
        entry = index.insert_dataset(Dataset[our_type("AllTypes")](pattern), name="braced")
        assert (entry.data_urls, entry.schema_ref, entry.cid) == ([pattern], theirs["schema_ref"], theirs["cid"])
        assert wire.diff_samples(values, _read_ours(index, "braced")) == []  # and it still reads every shard


def test_same_samples_same_bytes(atdata: AtdataSide) -> None:
    """The msgpack payload of every sample is byte-identical on both sides."""
    T = our_type("AllTypes")
    for v in wire.make_values("AllTypes", N, seed=7):
        theirs = atdata.call("encode", type="AllTypes", values=v)["packed_hex"]
        assert T(**v).packed.hex() == theirs, v["s"]


@pytest.mark.parametrize("array", wire.ARRAYS, ids=lambda a: f"{a.dtype.str}-{'x'.join(map(str, a.shape)) or '0d'}")
def test_ndarray_wire_bytes_identical(atdata: AtdataSide, array: Any) -> None:
    """Each dtype/shape (0-d, bool, big-endian, empty, complex, unicode) encodes to the same bytes."""
    T = our_type("Tiny")
    theirs = atdata.call("encode", type="Tiny", values={"label": "x", "v": array})["packed_hex"]
    assert T(label="x", v=array).packed.hex() == theirs
    back = T.from_bytes(bytes.fromhex(theirs)).v
    assert wire.same_value(back, array)


def test_cids_agree(atdata: AtdataSide) -> None:
    from atdata_dagster.index.entry import compute_cid

    items = [
        ("atdata://local/schema/A@1.0.0", ["/x/data--00000000--000000.tar"]),
        ("atdata://local/schema/Ünï@2.0.1", ["/d/ünïcødé ✓/a.tar", "s3://b/k.tar", "at://did:plc:x/blob/bafk"]),
        ("atdata://local/schema/B@1.0.0", []),
        ("r" * 23, ["u" * 24]),  # CBOR head boundaries
        ("r" * 255, ["u" * 256]),
        ("r" * 65535, ["u" * 65536]),
        ("atdata://local/schema/Many@1.0.0", [f"/s/{i}.tar" for i in range(300)]),
    ]
    assert atdata.call("cid", items=items) == [compute_cid(r, u) for r, u in items]


ARBITRARY_DATA = [
    {"name": "test", "value": 42}, 1.0, 0.1, -2.5, 1e300, 5e-324, -0.0, {"a": 1.5, "bb": [1, 2.0]},
    b"xy", True, None, "", [], {}, 2**64 - 1, -(2**64), {"b": 1, "a": 2, "aa": 3}, {"nested": {"f": [0.5, {"x": None}]}},
    float("nan"), float("inf"), 2**64, -(2**64) - 1,  # atdata refuses these: so must we
]


def test_generate_cid_of_arbitrary_data_matches_atdata_floats_included(atdata: AtdataSide) -> None:
    from atdata_dagster import generate_cid, verify_cid

    def ours(value: Any) -> Any:
        try:
            return generate_cid(value)
        except Exception as e:  # noqa: BLE001 - compared with atdata's exception type
            return {"error": type(e).__name__}

    theirs = atdata.call("generate_cid", values=ARBITRARY_DATA)
    assert [ours(v) for v in ARBITRARY_DATA] == theirs
    assert sum(isinstance(t, dict) for t in theirs) == 4  # the four refusals above, all ValueError
    assert all(t == {"error": "ValueError"} for t in theirs if isinstance(t, dict))
    assert verify_cid(theirs[1], 1.0) and not verify_cid(theirs[1], 1)  # 1.0 and 1 differ, as in atdata


def test_load_dataset_finds_the_same_splits_and_shards_as_atdata(atdata: AtdataSide, tmp_path: Path) -> None:
    from atdata_dagster import load_dataset, write_samples

    Tiny = our_type("Tiny")
    rows = [Tiny(**v) for v in wire.make_values("Tiny", 4)]
    write_samples(rows[:2], tmp_path / "mnist-train-000000.tar")
    write_samples(rows[2:3], tmp_path / "mnist-test-000000.tar")
    write_samples(rows[3:], tmp_path / "valid-000000.tar")
    write_samples(rows, tmp_path / "other.tar")  # no split in the name: train
    (tmp_path / "empty").mkdir()

    def ours(path: str, **kw: Any) -> Any:
        got = load_dataset(path, Tiny, **kw)
        if isinstance(got, dict):
            return {"splits": {k: v.list_shards() for k, v in got.items()}}
        return {"dataset": got.list_shards()}

    cases = [
        {"path": str(tmp_path)},
        {"path": str(tmp_path / "*.tar")},
        {"path": str(tmp_path / "mnist-*.tar"), "split": "test"},
        {"path": str(tmp_path / "other.tar")},
        {"path": str(tmp_path), "data_files": {"a": str(tmp_path / "other.tar"), "b": [str(tmp_path / "valid-000000.tar")]}},
        {"path": str(tmp_path), "split": "nope"},
        {"path": str(tmp_path / "empty")},
    ]
    for case in cases:
        theirs = atdata.call("load_splits", **case)
        if "error" in theirs:
            # our typed error is also theirs: UnknownSplitError is a ValueError, DataFilesNotFoundError a FileNotFoundError
            expected = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}[theirs["error"]]
            with pytest.raises(expected):
                load_dataset(case["path"], Tiny, **{k: v for k, v in case.items() if k != "path"})
        else:
            assert ours(case["path"], **{k: v for k, v in case.items() if k != "path"}) == theirs, case


def test_unreadable_shards_raise_an_instance_of_what_atdata_raises(atdata: AtdataSide, tmp_path: Path) -> None:
    import builtins
    import importlib
    import io
    import tarfile

    import msgpack

    from atdata_dagster import Dataset, write_samples
    from atdata_dagster.errors import ShardError

    Tiny = our_type("Tiny")
    good = write_samples([Tiny(**v) for v in wire.make_values("Tiny", 3)], tmp_path / "good.tar").list_shards()[0]
    (tmp_path / "text.tar").write_bytes(b"not a tar at all, just text....")
    (tmp_path / "noise.tar").write_bytes(bytes(range(256)) * 3)
    with tarfile.open(tmp_path / "list.tar", "w") as t:
        data = msgpack.packb([1, 2, 3])
        info = tarfile.TarInfo("k0.msgpack")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    for name in ("missing.tar", "text.tar", "noise.tar", "list.tar"):
        theirs = atdata.call("read_error", type="Tiny", url=str(tmp_path / name))
        assert "name" in theirs, (name, theirs)
        module = builtins if theirs["module"] == "builtins" else importlib.import_module(theirs["module"])
        expected = getattr(module, theirs["name"])
        with pytest.raises(expected) as err:
            list(Dataset[Tiny](str(tmp_path / name)))
        assert isinstance(err.value, ShardError), name
    assert atdata.call("read_error", type="Tiny", url=good) == {"samples": 3}


def test_lenses_we_store_are_listed_found_and_read_by_atdata(atdata: AtdataSide, provider_spec: dict) -> None:
    from tests.test_lenses import gray_caption, to_gray

    with open_our_index(provider_spec) as index:
        ref = index.store_lens(to_gray, name="to_gray", description="mean over channels")
        other = index.store_lens(gray_caption, name="caption")
    theirs = atdata.call("lenses", provider=provider_spec, source="Color", ref=ref)
    assert theirs["all"] == sorted([ref, other]) and theirs["found"] == [ref]
    record = theirs["record"]
    assert record["getter"] == {"kind": "code_reference", "module": "tests.test_lenses", "qualname": "to_gray"}
    assert (record["source_schema"], record["view_schema"], record["description"]) == ("Color", "Gray", "mean over channels")


def test_dataset_conveniences_answer_as_atdatas_do(atdata: AtdataSide, tmp_path: Path) -> None:
    from atdata_dagster import Dataset, write_samples

    T = our_type("NoDoc")
    ds = write_samples([T(x=i, y=f"y{i}") for i in range(7)], tmp_path / "nd.tar", maxcount=3)
    theirs = atdata.call("conveniences", url=ds.url)
    ours_ds = Dataset[T](ds.url)
    ours = wire.conveniences(ours_ds, next(iter(ours_ds.iter_raw()))[0])
    assert ours == theirs


# ------------------------------------------------------------- schemas, stubs, labels


@pytest.mark.parametrize("type_name", ["AllTypes", "Tiny", "NoDoc"])
def test_schema_records_identical(atdata: AtdataSide, tmp_path: Path, type_name: str) -> None:
    """The local schema record (and its stored JSON text) is identical but for createdAt;
    undocumented classes get the same auto-generated description."""
    theirs = atdata.call("schema", type=type_name, work_dir=str(tmp_path / "a"))
    spec = {"kind": "sqlite", "path": str(tmp_path / "ours.db")}
    with open_our_index(spec) as index:
        ref = index.publish_schema(our_type(type_name), version="1.0.0")
        assert ref == theirs["ref"]
        ours = index.get_schema(ref)
        stored = index.provider.get_schema_json(type_name, "1.0.0")
    created = theirs["record"]["createdAt"]
    assert {**ours, "createdAt": created} == theirs["record"]
    assert stored == theirs["stored_json"].replace(json.dumps(created), json.dumps(ours["createdAt"]))


def test_schema_record_decoded_both_ways(atdata: AtdataSide, tmp_path: Path) -> None:
    """Our record through atdata's decoder and atdata's through ours give the same fields."""
    from atdata_dagster.samples.schema import build_schema_record, type_from_record

    ours = build_schema_record(our_type("AllTypes"), version="1.0.0")
    decoded = atdata.call("decode_record", record=ours)
    assert decoded["name"] == "AllTypes"
    assert [(f["name"], f["optional"]) for f in decoded["fields"]] == [
        (f["name"], f["optional"]) for f in ours["fields"]
    ]
    theirs = atdata.call("schema", type="AllTypes", work_dir=str(tmp_path))["record"]
    T = type_from_record(theirs)
    assert list(T.__dataclass_fields__) == FIELDS


def test_stub_modules_same_layout_and_import_path(atdata: AtdataSide, tmp_path: Path) -> None:
    """Same stub files, same import path (``local.AllTypes_1_0_0``), same class fields."""
    theirs = atdata.call("schema", type="AllTypes", work_dir=str(tmp_path / "a"))
    spec = {"kind": "sqlite", "path": str(tmp_path / "ours.db")}
    stub_dir = tmp_path / "ours-stubs"
    with open_our_index(spec, auto_stubs=True, stub_dir=str(stub_dir)) as index:
        ref = index.publish_schema(our_type("AllTypes"), version="1.0.0")
        assert index.get_import_path(ref) == theirs["import_path"] == "local.AllTypes_1_0_0"
        cls = index.get_schema_type(ref)
    files = sorted(str(p.relative_to(stub_dir)) for p in stub_dir.rglob("*.py"))
    assert files == theirs["stub_files"]
    assert cls.__name__ == theirs["stub_class"]["name"]
    assert list(cls.__dataclass_fields__) == theirs["stub_class"]["fields"]

    def class_fields(src: str) -> list[tuple[str, bool]]:
        tree = ast.parse(src)
        c = next(n for n in tree.body if isinstance(n, ast.ClassDef))
        return [(n.target.id, n.value is not None) for n in c.body
                if isinstance(n, ast.AnnAssign) and not n.target.id.startswith("__")]

    ours_src = (stub_dir / "local" / "AllTypes_1_0_0.py").read_text()
    assert class_fields(ours_src) == class_fields(theirs["stub_source"])
    assert "Schema: AllTypes@1.0.0" in ours_src[:500]  # atdata's staleness marker


def test_shared_stub_dir_both_sides_keep_working(atdata: AtdataSide, tmp_path: Path) -> None:
    """One stub_dir (e.g. the shared default ``~/.atdata/stubs``) used by both libraries in turn:
    each still gets a working class with the right fields and decodes the data."""
    values = wire.make_values("AllTypes", 4)
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    stub_dir = tmp_path / "stubs"
    module = stub_dir / "local" / "AllTypes_1_0_0.py"
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        entry = index.write_samples([our_type("AllTypes")(**v) for v in values], name="s")

    first = atdata.call("stubs", provider=spec, ref=entry.schema_ref, stub_dir=str(stub_dir))  # atdata writes its module
    assert first["import_path"] == "local.AllTypes_1_0_0" and first["fields"] == FIELDS
    assert "from atdata import PackableSample" in module.read_text()
    with open_our_index(spec, auto_stubs=True, stub_dir=str(stub_dir)) as index:  # we load from the same dir
        assert list(index.get_schema_type(entry.schema_ref).__dataclass_fields__) == FIELDS
        assert wire.diff_samples(values, _read_ours(index, "s")) == []
        assert index.get_import_path(entry.schema_ref) == "local.AllTypes_1_0_0"
    again = atdata.call("stubs", provider=spec, ref=entry.schema_ref, stub_dir=str(stub_dir))  # and atdata again
    assert again["fields"] == FIELDS and again["class_name"] == "AllTypes"
    assert wire.diff_samples(values, atdata.call("read", provider=spec, name="s")["samples"]) == []


def test_labels_interoperate(atdata: AtdataSide, provider_spec: dict, tmp_path: Path) -> None:
    """Versioned labels set on one side resolve on the other, in the same rows/keys."""
    vals = wire.make_values("Tiny", 2)
    with open_our_index(provider_spec, store_root=tmp_path / "store") as index:
        e1 = index.write_samples([our_type("Tiny")(**v) for v in vals], name="lab")
        e2 = index.write_samples([our_type("Tiny")(**v) for v in vals[:1]], name="lab-v2")
        index.label("lab", e1.cid, version="1.0.0", description="first")
    # atdata resolves our versioned label, then labels "lab@2.0.0" itself
    assert atdata.call("label", provider=provider_spec, name="lab", cid=e2.cid, version="2.0.0")["cid"] == e2.cid
    with open_our_index(provider_spec) as index:
        assert index.get_label("lab", "1.0.0").cid == e1.cid
        assert index.get_label("lab", "2.0.0").cid == e2.cid
        assert index.get_dataset("lab-v2").cid == e2.cid
    read = atdata.call("read", provider=provider_spec, name="lab")
    versioned = sorted(((v, c) for n, c, v in (tuple(x) for x in read["labels"]) if n == "lab" and v))
    assert versioned == [("1.0.0", e1.cid), ("2.0.0", e2.cid)]


def test_latest_label_agrees_across_writers(atdata: AtdataSide, provider_spec: dict, tmp_path: Path) -> None:
    """Labels written alternately by both libraries: both agree which one is the latest, so
    ``get_dataset(name)`` / unversioned ``get_label(name)`` resolve to the same entry.

    Redis is the exception by construction: atdata stores no timestamp in ``Label:`` hashes
    and picks an arbitrary label in SCAN order (reference §5.2, Appendix B.12); we keep a
    write sequence, and count atdata-written labels (no ``created_at``) as the oldest.
    """
    import time

    store = str(tmp_path / "store")
    a = atdata.call("write", provider=provider_spec, store_root=store, type="Tiny", samples=wire.make_values("Tiny", 1), name="a")
    b = atdata.call("write", provider=provider_spec, store_root=store, type="Tiny", samples=wire.make_values("Tiny", 2), name="b")
    names = {a["cid"]: "a", b["cid"]: "b"}

    def resolved() -> tuple[tuple[str, str], tuple[str, str]]:
        theirs = atdata.call("resolve", provider=provider_spec, name="mix")
        with open_our_index(provider_spec) as index:
            ours = (names[index.get_label("mix").cid], names[index.get_dataset("mix").cid])
        return ours, (names[theirs["label"]["cid"]], names[theirs["dataset"]["cid"]])

    redis = provider_spec["kind"] == "redis"
    with open_our_index(provider_spec) as index:
        index.label("mix", a["cid"], version="1")
    assert resolved() == (("a", "a"), ("a", "a"))
    time.sleep(1.1)  # atdata's SQLite timestamps have one-second resolution
    atdata.call("label", provider=provider_spec, name="mix", cid=b["cid"], version="2")
    ours, theirs = resolved()
    if redis:
        assert ours == ("a", "a")  # atdata's label has no time: counted as older than ours
    else:
        assert (ours, theirs) == (("b", "b"), ("b", "b")), "after atdata labelled mix@2 -> b"
    time.sleep(1.1)
    with open_our_index(provider_spec) as index:
        index.label("mix", a["cid"], version="3")
    ours, theirs = resolved()
    assert ours == ("a", "a"), "after we labelled mix@3 -> a"
    if not redis:
        assert theirs == ("a", "a"), "after we labelled mix@3 -> a"


# ------------------------------------------------- deliberate improvements (Appendix B)


def test_optional_before_required_record_decodes_here_not_in_atdata(atdata: AtdataSide) -> None:
    """B.7: a record with an optional field before a required one (valid for other writers)."""
    from atdata_dagster.samples.schema import type_from_record

    record = {
        "name": "OptFirst", "version": "1.0.0", "description": None, "createdAt": "2026-01-01T00:00:00+00:00",
        "fields": [
            {"name": "a", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": True},
            {"name": "b", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        ],
    }
    with pytest.raises(AssertionError, match="non-default argument"):
        atdata.call("decode_record", record=record)
    T = type_from_record(record)
    sample = T.from_bytes(T(b="x").packed)
    assert (sample.a, sample.b) == (None, "x")


def test_changed_class_gets_fresh_schema_atdata_reads_both(atdata: AtdataSide, tmp_path: Path) -> None:
    """B.5: atdata would reuse the stale ``Tiny@1.0.0`` for a changed class; we publish
    ``Tiny@1.0.1``, and atdata decodes both datasets through the refs we stored."""
    from atdata_dagster.samples.packable import packable

    v2_spec = wire.TypeSpec("Tiny", wire.SPECS["Tiny"].fields + (("extra", "int"),), "Tiny sample, v2.")
    TinyV2 = wire.build_type(v2_spec, packable, module="compat_types_v2")
    v1_values = wire.make_values("Tiny", 2)
    v2_values = [{**v, "extra": i} for i, v in enumerate(wire.make_values("Tiny", 3))]
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        e1 = index.write_samples([our_type("Tiny")(**v) for v in v1_values], name="t1")
        e2 = index.write_samples([TinyV2(**v) for v in v2_values], name="t2")
        e3 = index.write_samples([our_type("Tiny")(**v) for v in v1_values[:1]], name="t3")
    assert (e1.schema_ref, e2.schema_ref, e3.schema_ref) == (
        "atdata://local/schema/Tiny@1.0.0", "atdata://local/schema/Tiny@1.0.1", "atdata://local/schema/Tiny@1.0.0")
    assert wire.diff_samples(v1_values, atdata.call("read", provider=spec, name="t1")["samples"]) == []
    assert wire.diff_samples(v2_values, atdata.call("read", provider=spec, name="t2")["samples"]) == []


def test_unsafe_dataset_names_rejected_atdata_escapes(atdata: AtdataSide, tmp_path: Path) -> None:
    """B.10: atdata writes ``../escape`` outside its store root; we refuse the name."""
    from atdata_dagster.errors import InvalidNameError

    store = tmp_path / "root" / "store"
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    theirs = atdata.call("write", provider=spec, store_root=str(store), type="Tiny",
                         samples=wire.make_values("Tiny", 1), name="../escape")
    assert not Path(theirs["data_urls"][0]).resolve().is_relative_to(store.resolve())
    with open_our_index(spec, store_root=store) as index:
        with pytest.raises(InvalidNameError):
            index.write_samples([our_type("Tiny")(**v) for v in wire.make_values("Tiny", 1)], name="../escape2")
    assert not (tmp_path / "root" / "escape2").exists()


def test_manifest_json_is_standard_where_atdata_writes_infinity(atdata: AtdataSide, tmp_path: Path) -> None:
    """B.11: a numeric field with no values (an all-None optional int): atdata writes
    ``Infinity``; our manifest is standard JSON, and our reader accepts atdata's."""
    from atdata_dagster.shards.manifest import read_manifest

    values = wire.make_values("AllTypes", 1, seed=1)
    assert values[0]["opt_i"] is None
    atdata.call("write_tar", type="AllTypes", samples=values, path=str(tmp_path / "a.tar"), manifest=True)
    theirs_text = (tmp_path / "a.manifest.json").read_text()
    assert "Infinity" in theirs_text
    assert read_manifest(str(tmp_path / "a.manifest.json"))["num_samples"] == 1

    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        entry = index.write_samples([our_type("AllTypes")(**v) for v in values], name="inf", manifest=True)
    ours_path = entry.data_urls[0][: -len(".tar")] + ".manifest.json"
    json.loads(Path(ours_path).read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert atdata.call("read_manifest", json_path=ours_path)["num_samples"] == 1


# ----------------------------------------------------------------------- manifests


def test_our_manifests_read_by_atdata(atdata: AtdataSide, tmp_path: Path) -> None:
    """Every shard gets a manifest (atdata drops them in Index.write); atdata's reader loads each."""
    from atdata_dagster.shards.manifest import read_manifest

    values = wire.make_values("AllTypes", N)
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        entry = index.write_samples([our_type("AllTypes")(**v) for v in values], name="m", maxcount=5, manifest=True)
    counts = []
    for url in entry.data_urls:
        stem = url[: -len(".tar")]
        ours = read_manifest(stem + ".manifest.json")
        theirs = atdata.call("read_manifest", json_path=stem + ".manifest.json", parquet_path=stem + ".manifest.parquet")
        assert theirs["shard_id"] == ours["shard_id"] == Path(stem).name
        assert theirs["header"]["aggregates"] == ours["aggregates"]
        for key in ("manifest_version", "schema_type", "schema_version", "num_samples", "size_bytes"):
            assert theirs["header"][key] == ours[key], key
        if theirs["parquet_columns"] is not None:
            assert theirs["parquet_columns"][:3] == ["__key__", "__offset__", "__size__"]
            assert len(theirs["parquet_rows"]) == ours["num_samples"]
        counts.append(ours["num_samples"])
    assert counts == [5, 5, 2]


def _have_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


@pytest.mark.xfail(
    not _have_pyarrow(),
    strict=True,
    reason=(
        "ENGINE DIFFERENCE: without pyarrow (not a dependency) atdata_dagster/shards/manifest.py "
        "writes only <shard>.manifest.json, no <shard>.manifest.parquet; atdata's "
        "ShardManifest.from_files / manifest queries need the parquet and raise FileNotFoundError"
    ),
)
def test_our_manifest_parquet_readable_by_atdata(atdata: AtdataSide, tmp_path: Path) -> None:
    """The per-sample parquet sidecar atdata's query layer reads (``__key__``, ``__offset__``, ``__size__``)."""
    spec = {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    with open_our_index(spec, store_root=tmp_path / "store") as index:
        entry = index.write_samples([our_type("AllTypes")(**v) for v in wire.make_values("AllTypes", 4)], name="pq", manifest=True)
    stem = entry.data_urls[0][: -len(".tar")]
    assert Path(stem + ".manifest.parquet").exists(), "no parquet manifest written next to the shard"
    theirs = atdata.call("read_manifest", json_path=stem + ".manifest.json", parquet_path=stem + ".manifest.parquet")
    assert theirs["parquet_columns"][:3] == ["__key__", "__offset__", "__size__"]
    assert len(theirs["parquet_rows"]) == 4


def test_atdata_manifest_read_by_ours(atdata: AtdataSide, tmp_path: Path) -> None:
    from atdata_dagster.shards.manifest import read_manifest

    values = wire.make_values("AllTypes", 5)
    out = atdata.call("write_tar", type="AllTypes", samples=values, path=str(tmp_path / "one.tar"), manifest=True)
    m = read_manifest(str(tmp_path / "one.manifest.json"))
    assert (m["shard_id"], m["num_samples"], m["schema_type"]) == ("one", 5, "AllTypes")
    T = our_type("AllTypes")
    from atdata_dagster.dataset import Dataset

    got = [fields_of(s, FIELDS) for s in Dataset[T](out["url"]).ordered()]
    assert wire.diff_samples(values, got) == []


def test_manifest_queries_find_the_same_samples_as_atdatas_query_executor(atdata: AtdataSide, tmp_path: Path) -> None:
    from atdata_dagster import QueryExecutor, write_samples

    T = our_type("AllTypes")
    values = wire.make_values("AllTypes", 12, seed=3)
    urls = write_samples([T(**v) for v in values], tmp_path / "q.tar", maxcount=5, manifest=True).list_shards()
    theirs = atdata.call("query", urls=urls, field="i", threshold=0)
    ours = QueryExecutor.from_shard_urls(urls).query(lambda df: df["i"] > 0)
    assert theirs and [[h.key, h.offset] for h in ours] == [[k, o] for _, k, o in theirs]
    # atdata names the shard by its manifest's shard_id; ours by the shard URL it was given
    assert {h.shard for h in ours} <= set(urls)


# ---------------------------------------------------------------------- atmosphere


def test_our_atmosphere_records_parsed_by_atdata(atdata: AtdataSide) -> None:
    """Schema / entry (http, s3, blobs) / label records we build go through atdata's parsers."""
    from atdata_dagster.atmosphere import records as r
    from atdata_dagster.samples.schema import build_schema_record

    local = build_schema_record(our_type("AllTypes"), version="1.0.0", description="ours")
    schema = r.SchemaRecord.from_local(local).to_record()
    ck = r.Checksum.sha256("cd" * 32)
    uri = "at://did:plc:abcdefghijklmnopqrstuvwx/science.alt.dataset.schema/3kxyz"
    http = r.EntryRecord(name="ours", schema_ref=uri, description="d", tags=["t"], license="MIT",
                         size=r.DatasetSize(samples=3, bytes=10, shards=1),
                         metadata={"split": "train", "source_uri": "https://x", "k": "v"},
                         storage=r.StorageHttp((r.HttpShard("https://h/x--000000.tar", ck),))).to_record()
    s3 = r.EntryRecord(name="ours-s3", schema_ref=uri,
                       storage=r.StorageS3("bkt", (r.S3Shard("p/data--ab--000000.tar", ck),), region="eu-west-1",
                                           endpoint="http://127.0.0.1:9000")).to_record()
    blob_cid = r.blob_cid("cd" * 32)
    blobs = r.EntryRecord(name="ours-blobs", schema_ref=uri,
                          storage=r.StorageBlobs((r.BlobShard(r.BlobRef.from_record(
                              {"$type": "blob", "ref": {"$link": blob_cid}, "mimeType": "application/x-tar", "size": 10}), ck),))
                          ).to_record()
    float_meta = r.EntryRecord(name="ours-floats", schema_ref=uri, metadata={"lr": 0.5, "n": 3},
                               storage=r.StorageHttp((r.HttpShard("https://h/y.tar"),))).to_record()
    label = r.DatasetLabel(name="ours", dataset_uri="at://did:plc:abcdefghijklmnopqrstuvwx/science.alt.dataset.entry/3k",
                           version="1.0.0", description="v1").to_record()

    got = atdata.call("parse_atmo", schema=schema, entry=http, label=label)
    assert got["schema"]["name"] == "AllTypes" and got["schema"]["atdata_schema_version"] == 1
    assert got["schema"]["roundtrip"] and got["entry"]["roundtrip"] and got["label"]["roundtrip"]
    assert [f["name"] for f in got["schema_type_fields"]] == FIELDS
    assert [f["name"] for f in got["schema_type_fields"] if f["optional"]] == ["opt_s", "opt_i", "opt_arr", "opt_arr2"]
    assert got["entry"]["storage"] == {"class": "StorageHttp", "urls": ["https://h/x--000000.tar"],
                                       "checksums": [{"algorithm": "sha256", "digest": "cd" * 32}]}
    assert (got["entry"]["tags"], got["entry"]["license"], got["entry"]["size"]) == (["t"], "MIT", {"samples": 3, "bytes": 10, "shards": 1})
    assert got["entry"]["metadata"]["split"] == "train" and got["entry"]["metadata"]["source_uri"] == "https://x"
    assert got["label"] == {"name": "ours", "dataset_uri": label["datasetUri"], "version": "1.0.0",
                            "description": "v1", "roundtrip": True}

    got = atdata.call("parse_atmo", entry=s3)["entry"]
    assert got["storage"] == {"class": "StorageS3", "bucket": "bkt", "region": "eu-west-1",
                              "endpoint": "http://127.0.0.1:9000", "keys": ["p/data--ab--000000.tar"]}
    got = atdata.call("parse_atmo", entry=blobs)["entry"]
    assert got["storage"]["class"] == "StorageBlobs"
    assert got["storage"]["blobs"][0]["blob"]["ref"]["$link"] == blob_cid
    got = atdata.call("parse_atmo", entry=float_meta)["entry"]  # the {"$bytes": msgpack} metadata form
    assert got["metadata"] is not None


def test_atdata_atmosphere_records_parsed_by_ours(atdata: AtdataSide) -> None:
    from atdata_dagster.atmosphere import records as r
    from atdata_dagster.samples.schema import type_from_record

    built = atdata.call("build_atmo", type="AllTypes", http_urls=["https://h/a.tar", "https://h/b.tar"],
                        s3_keys=["k/a.tar"], blob_cids=["bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"])
    schema = r.SchemaRecord.from_record(built["schema"])
    assert [f["name"] for f in schema.fields if not f["optional"]] == FIELDS[:10]
    assert set(f["name"] for f in schema.fields) == set(FIELDS)
    assert set(type_from_record(built["schema"]).__dataclass_fields__) == set(FIELDS)
    http = r.EntryRecord.from_record(built["entries"]["http"])
    assert http.storage.data_urls() == ["https://h/a.tar", "https://h/b.tar"]
    assert http.metadata == {"split": "train", "version": "1", "extra_key": 5}
    assert (http.tags, http.license, http.size.samples) == (["a", "b"], "MIT", 10)
    s3 = r.EntryRecord.from_record(built["entries"]["s3"])
    assert s3.storage.data_urls() == ["s3://bkt/k/a.tar"]
    blobs = r.EntryRecord.from_record(built["entries"]["blobs"])
    assert blobs.storage.blobs[0].blob.cid == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    label = r.DatasetLabel.from_record(built["label"])
    assert (label.name, label.version, label.description) == ("digits", "1.0.0", "first")
    for rec, cls in ((built["entries"]["http"], r.EntryRecord), (built["label"], r.DatasetLabel)):
        assert cls.from_record(rec).to_record() == rec
