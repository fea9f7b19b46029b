"""Bounds on what hostile input may cost, and malformed index entries that must stay contained.

Each test states a limit the engine keeps for input it did not write: a brace-pattern
budget shared by all patterns of an entry, memory bounded by a small multiple of the
input (pax headers, msgpack containers, manifests), no ``RecursionError`` on deep
values, one malformed index entry that does not stop ``list``/``show``/``verify``,
generated stubs whose names cannot shadow or collide, and ``clear_stubs`` that deletes
only what it generated.
"""

from __future__ import annotations

import io
import json
import sqlite3
import struct
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import local
from atdata_dagster.cli import main as cli_main
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import CorruptEntryError, DecodeError, InvalidRefError, SchemaError, ShardError
from atdata_dagster.index.entry import LocalDatasetEntry
from atdata_dagster.samples import DictSample, StubManager, packable, unpack_payload
from atdata_dagster.samples.stubs import STUB_MARKER
from atdata_dagster.shards.manifest import read_manifest
from atdata_dagster.shards.patterns import expand_patterns
from atdata_dagster.dataset import write_samples
from atdata_dagster.stores.disk import LocalDiskStore


@packable
class Row:
    label: str
    v: NDArray


def peak_of(fn) -> tuple[Any, int]:
    """(result or raised exception, peak bytes traced while running ``fn``)."""
    tracemalloc.start()
    try:
        try:
            out: Any = fn()
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which asserts on its type
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- URL patterns


def test_patterns_expand_in_order_and_plain_urls_pass_through():
    assert expand_patterns(["s3://b/x-{0..2}.tar", "/d/y.tar", "/d/z-{a,b}.tar"]) == [
        "s3://b/x-0.tar", "s3://b/x-1.tar", "s3://b/x-2.tar", "/d/y.tar", "/d/z-a.tar", "/d/z-b.tar",
    ]


def test_pattern_budget_is_the_total_over_all_patterns_of_a_list():
    assert len(expand_patterns(["a{0..4}", "b{0..4}"], max_urls=10)) == 10
    with pytest.raises(InvalidRefError, match="expands to 11 shard URLs, with the patterns before it"):
        expand_patterns(["a{0..4}", "b{0..4}", "c"], max_urls=10)


def test_every_element_of_a_dataset_list_counts_against_one_budget(tmp_path):
    # each pattern alone is under 1,000,000 URLs; together they are not
    urls = [f"{tmp_path}/{p}-{{000000..399999}}.tar" for p in "abc"]
    result, peak = peak_of(lambda: Dataset[Row](urls))
    assert isinstance(result, InvalidRefError) and "expands to 1200000" in str(result)
    assert peak < 1 << 20  # refused before anything was expanded


def test_url_length_after_expansion_is_bounded():
    long_group = "{" + "a" * 2000 + ",b}"
    assert len(max(expand_patterns([long_group * 2]), key=len)) == 4000
    with pytest.raises(InvalidRefError, match="URLs of up to 6000 characters \\(limit 4096\\)"):
        expand_patterns([long_group * 3])
    with pytest.raises(InvalidRefError, match="limit 4096"):
        expand_patterns(["/d/" + "x" * 5000 + ".tar"])  # a plain URL too


def test_total_characters_of_the_expansion_are_bounded():
    with pytest.raises(InvalidRefError, match="characters of URLs"):
        expand_patterns(["x" * 100 + "{0..99}", "y" * 100 + "{0..99}"], max_chars=15_000)


# --------------------------------------------------------------------------- pax headers


def _pax_records(records: dict[str, str]) -> bytes:
    out = []
    for k, v in records.items():
        rec = f" {k}={v}\n".encode()
        n = len(rec) + len(str(len(rec)))
        out.append(str(len(rec) + len(str(n))).encode() + rec)
    return b"".join(out)


def _shard_with_global_headers(headers: list[dict[str, str]]) -> bytes:
    out = io.BytesIO()
    for records in headers:
        raw = _pax_records(records)
        info = tarfile.TarInfo("././@PaxGlobalHeader")
        info.type = tarfile.XGLTYPE
        info.size = len(raw)
        out.write(info.tobuf(tarfile.USTAR_FORMAT) + raw + bytes(-len(raw) % 512))
    payload = Row(label="a", v=np.arange(3)).packed
    info = tarfile.TarInfo("000000.msgpack")
    info.size = len(payload)
    out.write(info.tobuf(tarfile.USTAR_FORMAT) + payload + bytes(-len(payload) % 512) + bytes(1024))
    return out.getvalue()


def test_global_pax_headers_do_not_accumulate_memory(tmp_path):
    # 40 global headers of 4000 distinct ~200-byte records (32 MiB of keywords if kept)
    headers = [{f"k{h}x{i}": "v" * 180 for i in range(4000)} for h in range(40)]
    path = tmp_path / "g.tar"
    path.write_bytes(_shard_with_global_headers(headers))
    result, peak = peak_of(lambda: list(Dataset[Row](str(path)).ordered()))
    assert not isinstance(result, Exception), result
    assert [s.label for s in result] == ["a"]
    assert peak < 8 << 20, f"{peak >> 20} MiB"


def test_global_pax_headers_are_counted(tmp_path):
    path = tmp_path / "g.tar"
    path.write_bytes(_shard_with_global_headers([{"comment": "x"}] * 65))
    with pytest.raises(ShardError, match="more than 64 global pax headers"):
        list(Dataset[Row](str(path)).ordered())


# --------------------------------------------------------------------------- msgpack payloads

KIB16 = 16 << 10


@pytest.mark.parametrize(
    "header", [b"\xdd" + struct.pack(">I", KIB16), b"\xdc\xff\xff"], ids=["array32-16k", "array16-64k"]
)
def test_nested_array_headers_that_lie_do_not_allocate(header):
    # 1000 nested array headers each claiming far more elements than the payload holds:
    # msgpack would allocate each list up front (16 KiB payload -> over 100 MiB).
    data = (b"\x81\xa1v" + header * 1000).ljust(KIB16, b"\x00")
    result, peak = peak_of(lambda: unpack_payload(data))
    assert isinstance(result, DecodeError) and "declares more values than it holds" in str(result)
    assert peak < 1 << 20, f"{peak >> 10} KiB"


def test_a_16kib_payload_of_nested_empty_arrays_decodes_within_a_small_multiple():
    wide = b"\x81\xa1v\xdc" + struct.pack(">H", KIB16 - 8) + b"\x90" * (KIB16 - 8)
    tree = b"\x81\xa1v" + b"\x9f" * 10 + b"\x90" * (KIB16 - 13)  # 15-ary nesting, mostly empty
    for data in (wide, tree):
        result, peak = peak_of(lambda: unpack_payload(data))
        # an empty list costs ~65 bytes of Python objects per payload byte; nothing worse is possible
        assert peak < 80 * len(data), f"{peak >> 10} KiB for {len(data)} bytes"


def test_record_metadata_bytes_from_a_pds_are_decoded_within_bounds():
    import base64

    from atdata_dagster.atmosphere.records import decode_metadata
    from atdata_dagster.errors import RecordError

    header = b"\xdc" + struct.pack(">H", 16000)  # array16 claiming 16000 elements (within the old length cap)
    data = (b"\x81\xa1v" + header * 1000).ljust(KIB16, b"\x00")
    record = {"$bytes": base64.b64encode(data).decode()}
    result, peak = peak_of(lambda: decode_metadata(record))
    assert isinstance(result, RecordError) and "not a msgpack map" in str(result)
    assert peak < 1 << 20, f"{peak >> 10} KiB"


def test_long_lists_still_decode_exactly():
    ids = list(range(5000))
    nested = [[i, [i]] for i in range(200)]
    assert unpack_payload(msgpack.packb({"ids": ids, "nested": nested})) == {"ids": ids, "nested": nested}


# --------------------------------------------------------------------------- manifests


def test_manifest_of_samples_with_deeply_nested_lists_has_no_recursion_error(tmp_path):
    deep: list = [1]
    for _ in range(500):  # msgpack packs up to 511 levels
        deep = [deep]
    ds = write_samples([DictSample(x=deep, y=1), DictSample(x=[1, 2], y=2)], tmp_path / "deep.tar", manifest=True)
    aggregates = read_manifest(str(tmp_path / "deep.tar"))["aggregates"]
    assert aggregates["x"]["truncated"] is True and aggregates["x"]["all_values"] == [1, 2]
    assert aggregates["y"]["count"] == 2
    assert [s["y"] for s in ds.ordered()] == [1, 2]


def test_a_16kib_manifest_parses_within_a_small_multiple(tmp_path):
    data = (b"[" + b"[]," * 5460 + b"[]]")
    (tmp_path / "m.manifest.json").write_bytes(data)
    result, peak = peak_of(lambda: read_manifest(str(tmp_path / "m.tar")))
    assert isinstance(result, ShardError) and "expected an object" in str(result)
    assert peak < (1 << 20) + 32 * len(data), f"{peak >> 10} KiB"  # one 1 MiB read chunk + the parse


# --------------------------------------------------------------------------- malformed index entries

BAD_META = {"stats": "lots", "checksums": [["a", 1]], "manifests": 5}


@pytest.fixture
def index_with_a_corrupt_entry(tmp_path):
    index = local.Index(path=str(tmp_path / "i.db"), data_store=LocalDiskStore(str(tmp_path / "d")), atmosphere=None)
    good = index.write_samples([Row(label="a", v=np.arange(3))], name="good")
    bad = index.write_samples([Row(label="b", v=np.arange(3))], name="bad")
    index.close()
    con = sqlite3.connect(tmp_path / "i.db")  # another tool rewrites the metadata
    con.execute("UPDATE dataset_entries SET metadata = ? WHERE cid = ?", (msgpack.packb(BAD_META), bad.cid))
    con.commit()
    con.close()
    return tmp_path, good, bad


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli_main(["--index", f"sqlite:///{tmp_path / 'i.db'}", "--data-root", str(tmp_path / "d"), *args], out=out)
    return code, out.getvalue()


def test_a_malformed_entry_is_a_typed_error_only_when_used():
    entry = LocalDatasetEntry(name="bad", schema_ref="atdata://local/schema/Row@1.0.0", data_urls=["/d/a.tar"],
                              metadata=dict(BAD_META))
    for prop, fieldname in (("stats", "stats"), ("checksums", "checksums"), ("manifest_urls", "manifests")):
        with pytest.raises(CorruptEntryError, match=f"metadata\\['{fieldname}'\\]") as info:
            getattr(entry, prop)
        assert info.value.field == fieldname and info.value.name == "bad"
    # gc can always learn what the entry might reference: its shards and their sidecars
    assert entry.referenced_urls() == ["/d/a.tar", "/d/a.manifest.json"]


def test_cli_list_reports_the_malformed_entry_and_lists_the_rest(index_with_a_corrupt_entry, capsys):
    tmp_path, good, bad = index_with_a_corrupt_entry
    code, out = _cli(tmp_path, "--json", "list")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["good"]["samples"] == 1 and "error" not in rows["good"]
    assert "metadata['stats']" in rows["bad"]["error"] and rows["bad"]["cid"] == bad.cid
    code, out = _cli(tmp_path, "list")
    assert code == 0 and "good" in out and "bad" in out
    assert "metadata['stats']" in capsys.readouterr().err


def test_cli_show_works_for_the_rest_and_names_the_problem(index_with_a_corrupt_entry, capsys):
    tmp_path, good, bad = index_with_a_corrupt_entry
    code, out = _cli(tmp_path, "--json", "show", "good")
    assert code == 0 and json.loads(out)["checksums"] == good.checksums
    code, out = _cli(tmp_path, "show", "bad")
    assert code == 1 and bad.cid in out
    assert "metadata['stats']" in capsys.readouterr().err


def test_cli_verify_works_for_the_rest_and_gives_a_typed_error_for_the_entry(index_with_a_corrupt_entry, capsys):
    tmp_path, good, bad = index_with_a_corrupt_entry
    code, out = _cli(tmp_path, "--json", "verify", "good")
    assert code == 0 and set(json.loads(out)["shards"].values()) == {"ok"}
    code, _ = _cli(tmp_path, "verify", "bad")
    assert code == 2 and "metadata['checksums']" in capsys.readouterr().err


def test_index_iteration_yields_every_entry_and_referenced_urls_never_raise(index_with_a_corrupt_entry):
    tmp_path, good, bad = index_with_a_corrupt_entry
    index = local.Index(path=str(tmp_path / "i.db"), data_store=LocalDiskStore(str(tmp_path / "d")), atmosphere=None)
    entries = {e.name: e for e in index.list_entries()}
    assert set(entries) == {"good", "bad"}
    with pytest.raises(CorruptEntryError):
        index.verify("bad")
    assert index.verify("good") == {u: "ok" for u in good.data_urls}
    assert set(bad.data_urls) <= set(entries["bad"].referenced_urls())


# --------------------------------------------------------------------------- generated stubs


def _field(name: str, ft: dict, optional: bool = False) -> dict:
    return {"name": name, "fieldType": ft, "optional": optional}


PRIM = lambda p: {"$type": "local#primitive", "primitive": p}  # noqa: E731
ARR = {"$type": "local#ndarray"}


def test_stub_fields_may_shadow_every_name_the_stub_uses(tmp_path):
    record = {
        "name": "Shadow",
        "version": "1.0.0",
        "fields": [
            _field("field", PRIM("int"), optional=True),  # a default makes it a class attribute
            _field("int", PRIM("str"), optional=True),
            _field("str", PRIM("float"), optional=True),
            _field("list", {"$type": "local#array", "items": PRIM("int")}, optional=True),
            _field("NDArray", ARR, optional=True),
            _field("Any", PRIM("bool"), optional=True),
            _field("Optional", PRIM("bytes")),
            _field("x", PRIM("int")),
            _field("arr", ARR),
        ],
    }
    stubs = StubManager(tmp_path / "stubs")
    T = stubs.load_type(record)
    s = T(Optional=b"o", x=3, arr=np.arange(2), field=1, int="i", str=1.5, list=[1], NDArray=np.ones(1), Any=True)
    back = T.from_bytes(s.packed)
    assert (back.field, back.int, back.str, back.list, back.Any, back.Optional, back.x) == (1, "i", 1.5, [1], True, b"o", 3)
    assert isinstance(back.arr, np.ndarray) and back.arr.tolist() == [0, 1]
    assert T.__annotations__["x"] is int  # not the class attribute 'int'
    assert T.from_bytes(T(Optional=b"", x=1, arr=np.zeros(1)).packed).field is None


@pytest.mark.parametrize(
    "a, b",
    [
        (("A", "1.0"), ("A", "1_0")),
        (("A_1", "0"), ("A", "1_0")),
        (("a.b", "1"), ("a_b", "1")),
        (("A", "1.0-rc"), ("A", "1.0_rc")),
    ],
)
def test_stub_file_names_are_injective(tmp_path, a, b):
    stubs = StubManager(tmp_path / "stubs")
    assert stubs.stub_path(*a) != stubs.stub_path(*b)
    assert stubs.import_path(*a) != stubs.import_path(*b)


def test_atdata_stub_names_are_kept_where_they_cannot_collide(tmp_path):
    stubs = StubManager(tmp_path / "stubs")
    assert stubs.import_path("MySample", "1.0.0") == "local.MySample_1_0_0"
    assert stubs.import_path("MySample", "1.0.0", authority="did:plc:abc") == "did_plc_abc.MySample_1_0_0"
    assert stubs.import_path("A_1", "0") == "local._eA_5f1__0"


def test_stubs_of_two_versions_that_atdata_would_name_alike_load_their_own_fields(tmp_path):
    stubs = StubManager(tmp_path / "stubs")
    one = stubs.load_type({"name": "V", "version": "1.0", "fields": [_field("a", PRIM("int"))]})
    two = stubs.load_type({"name": "V", "version": "1_0", "fields": [_field("b", PRIM("str"))]})
    assert list(one.__dataclass_fields__) == ["a"] and list(two.__dataclass_fields__) == ["b"]
    assert one.__module__ != two.__module__


def test_stub_authorities_that_atdata_would_name_alike_stay_apart(tmp_path):
    stubs = StubManager(tmp_path / "stubs")
    rec = {"name": "S", "version": "1", "fields": [_field("a", PRIM("int"))]}
    assert stubs.ensure_stub(rec, authority="did:plc:x") != stubs.ensure_stub(rec, authority="did_plc_x")
    assert stubs.ensure_stub(rec, authority="example.com") != stubs.ensure_stub(rec, authority="example-com")


def test_atmosphere_schemas_do_not_share_stub_files_with_local_ones(tmp_path):
    from atdata_dagster.index.index import _authority_of

    assert _authority_of("atdata://local/schema/S@1.0.0") == "local"
    assert _authority_of("at://did:plc:abc/science.alt.dataset.schema/3k") == "did:plc:abc"
    stubs = StubManager(tmp_path / "stubs")
    rec = {"name": "S", "version": "1.0.0", "fields": [_field("a", PRIM("int"))]}
    assert stubs.ensure_stub(rec, authority="local") != stubs.ensure_stub(rec, authority="did:plc:abc")


def test_clear_stubs_deletes_only_generated_files(tmp_path):
    index = local.Index(path=str(tmp_path / "i.db"), data_store=LocalDiskStore(str(tmp_path / "d")),
                        atmosphere=None, stub_dir=str(tmp_path / "stubs"))
    index.write_samples([Row(label="a", v=np.arange(3))], name="r")
    ref = index.get_dataset("r").schema_ref
    index.get_schema_type(ref)
    generated = tmp_path / "stubs" / "local" / "Row_1_0_0.py"
    assert generated.read_text().splitlines()[0] == STUB_MARKER
    mine = tmp_path / "stubs" / "local" / "my_helpers.py"
    mine.write_text("def helper():\n    return 1\n")
    lookalike = tmp_path / "stubs" / "local" / "Other_1_0_0.py"  # a user's file with a stub-like name
    lookalike.write_text('"""Schema: Other@1.0.0"""\n')
    assert index.clear_stubs() == 1
    assert not generated.exists() and mine.exists() and lookalike.exists()
    assert index.clear_stubs() == 0


def test_hostile_field_names_are_still_refused(tmp_path):
    with pytest.raises(SchemaError):
        StubManager(tmp_path / "stubs").load_type({"name": "H", "version": "1", "fields": [_field("__atdata_builtins__", PRIM("int"))]})


@pytest.fixture
def index_with_undecodable_rows(tmp_path):
    """One row whose metadata column, one whose data_urls column is not msgpack at all."""
    index = local.Index(path=str(tmp_path / "i.db"), data_store=LocalDiskStore(str(tmp_path / "d")), atmosphere=None)
    good = index.write_samples([Row(label="a", v=np.arange(3))], name="good")
    bad_meta = index.write_samples([Row(label="b", v=np.arange(3))], name="badmeta")
    bad_urls = index.write_samples([Row(label="c", v=np.arange(3))], name="badurls")
    index.close()
    con = sqlite3.connect(tmp_path / "i.db")
    con.execute("UPDATE dataset_entries SET metadata = ? WHERE cid = ?", (b"\xc1", bad_meta.cid))
    con.execute("UPDATE dataset_entries SET data_urls = ? WHERE cid = ?", (b"\xc1", bad_urls.cid))
    con.commit()
    con.close()
    return tmp_path, good, bad_meta, bad_urls


def test_rows_that_are_not_msgpack_are_listed_with_their_error_and_the_rest_work(index_with_undecodable_rows, capsys):
    tmp_path, good, bad_meta, bad_urls = index_with_undecodable_rows
    code, out = _cli(tmp_path, "--json", "list")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert "error" not in rows["good"]
    assert "not valid msgpack" in rows["badmeta"]["error"] and "not valid msgpack" in rows["badurls"]["error"]
    code, out = _cli(tmp_path, "--json", "verify", "good")
    assert code == 0 and set(json.loads(out)["shards"].values()) == {"ok"}


def test_an_undecodable_entry_is_never_read_unverified(index_with_undecodable_rows):
    tmp_path, good, bad_meta, bad_urls = index_with_undecodable_rows
    index = local.Index(path=str(tmp_path / "i.db"), data_store=LocalDiskStore(str(tmp_path / "d")), atmosphere=None)
    listed = {e.name: e for e in index.list_entries()}
    for name in ("badmeta", "badurls"):
        with pytest.raises(CorruptEntryError, match="not valid msgpack"):
            index.dataset_for_entry(listed[name])
        with pytest.raises(CorruptEntryError):
            listed[name].checksums
    # its shards are still known, so gc keeps them; an unreadable shard list stops gc
    assert listed["badmeta"].referenced_urls() == list(bad_meta.data_urls) + [
        u.replace(".tar", ".manifest.json") for u in bad_meta.data_urls]
    with pytest.raises(CorruptEntryError, match="data_urls"):
        listed["badurls"].referenced_urls()
    index.close()


def test_gc_refuses_while_an_entry_shard_list_is_unreadable_and_deletes_nothing(index_with_undecodable_rows, capsys):
    tmp_path, good, bad_meta, bad_urls = index_with_undecodable_rows
    before = sorted(p.name for p in (tmp_path / "d").rglob("*") if p.is_file())
    code, _ = _cli(tmp_path, "gc", "--grace", "0")
    assert code != 0 and "data_urls" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "d").rglob("*") if p.is_file()) == before
