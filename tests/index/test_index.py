"""The seed API of ``local.Index`` on the embedded default (SQLite + local disk)."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import local, packable
from atdata_dagster.errors import (
    AtmosphereUnavailableError,
    ConfigurationError,
    EmptyDatasetError,
    InvalidNameError,
    InvalidRefError,
    NotFoundError,
)


@packable
class Row:
    """A row of the index tests."""

    text: str
    value: int
    vec: NDArray[np.float32]
    note: Optional[str] = None


def rows(n: int, offset: int = 0) -> list[Row]:
    return [Row(text=f"r{i}", value=i, vec=np.full(4, i, np.float32)) for i in range(offset, offset + n)]


@pytest.fixture
def index(tmp_path: Path) -> local.Index:
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    yield idx
    idx.close()


def test_path_alone_selects_the_sqlite_file(tmp_path):
    idx = local.Index(path=str(tmp_path / "x.db"), atmosphere=None)
    assert (tmp_path / "x.db").exists()
    assert idx.provider.kind == "sqlite"


def test_write_creates_an_entry_with_checksums_stats_and_label(index):
    entry = index.write_samples(rows(25), name="ds", maxcount=10, metadata={"source": "unit"})
    assert len(entry.data_urls) == 3
    assert entry.metadata["source"] == "unit"
    assert set(entry.metadata["checksums"]) == set(entry.data_urls)
    assert entry.metadata["stats"]["num_samples"] == 25
    assert entry.metadata["stats"]["shard_samples"] == [10, 10, 5]
    assert index.get_label("ds").cid == entry.cid
    assert all(Path(u).is_absolute() and Path(u).exists() for u in entry.data_urls)


def test_write_honours_maxsize_in_final_shards(index):
    entry = index.write_samples(rows(50), name="sized", maxsize=4096)
    assert len(entry.data_urls) > 1
    assert all(os.path.getsize(u) <= 4096 for u in entry.data_urls)


def test_write_with_manifest_writes_a_sidecar_for_every_shard(index):
    entry = index.write_samples(rows(25), name="man", maxcount=10, manifest=True)
    for url in entry.data_urls:
        assert Path(url[: -len(".tar")] + ".manifest.json").exists()


def test_same_samples_twice_give_the_same_cid_and_one_entry(index):
    a = index.write_samples(rows(20), name="det", maxcount=7)
    b = index.write_samples(rows(20), name="det", maxcount=7)
    assert a.cid == b.cid and a.data_urls == b.data_urls
    assert [e.cid for e in index.list_entries()].count(a.cid) == 1


def test_changed_samples_give_a_new_cid_and_the_name_resolves_to_the_latest(index):
    a = index.write_samples(rows(20), name="ver")
    b = index.write_samples(rows(21), name="ver")
    assert a.cid != b.cid
    assert index.get_dataset("ver").cid == b.cid
    assert index.get_entry(a.cid).name == "ver"


def test_rewriting_unchanged_data_keeps_the_published_at_uri(index):
    a = index.write_samples(rows(5), name="pub")
    index.provider.update_entry_metadata(a.cid, {**a.metadata, "atmosphere": {"uri": "at://did:plc:x/c/1"}})
    b = index.write_samples(rows(5), name="pub")
    assert b.metadata["atmosphere"]["uri"] == "at://did:plc:x/c/1"


def test_empty_samples_raise_and_leave_nothing(index, tmp_path):
    with pytest.raises(EmptyDatasetError, match="non-empty"):
        index.write_samples([], name="empty")
    assert index.list_entries() == []
    assert not list((tmp_path / "data").rglob("*.tar"))


def test_an_opted_in_empty_dataset_is_one_checksummed_empty_shard_that_reads_as_nothing(index):
    entry = index.write_samples([], name="empty", allow_empty=True, sample_type=Row)
    assert entry.stats["num_samples"] == 0 and entry.stats["num_shards"] == 1
    assert open(entry.data_urls[0], "rb").read() == bytes(1024)  # a valid tar: just its end-of-archive blocks
    assert index.verify("empty") == {entry.data_urls[0]: "ok"}
    ds = index.dataset("empty")
    assert ds.sample_type.__name__ == "Row" and len(ds) == 0
    assert list(ds.ordered()) == [] and list(ds.ordered(batch_size=4)) == [] and list(ds.shuffled(batch_size=4)) == []


def test_an_empty_dataset_without_a_sample_type_says_how_to_give_one(index):
    with pytest.raises(EmptyDatasetError, match="sample_type="):
        index.write_samples(iter(()), name="empty", allow_empty=True)
    assert index.list_entries() == []


def test_allow_empty_changes_nothing_for_a_dataset_with_samples(index):
    assert index.write_samples(rows(3), name="a", allow_empty=True).cid == index.write_samples(rows(3), name="a").cid


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a//b", "a/./b", "x\x00y", "a" * 600])
def test_invalid_names_are_refused_and_nothing_is_written(index, tmp_path, bad):
    with pytest.raises(InvalidNameError):
        index.write_samples(rows(2), name=bad)
    assert not list(tmp_path.rglob("*.tar"))


def test_get_dataset_accepts_bare_local_and_at_local_names(index):
    e = index.write_samples(rows(3), name="mnist")
    assert index.get_dataset("mnist").cid == e.cid
    assert index.get_dataset("local/mnist").cid == e.cid
    assert index.get_dataset("@local/mnist").cid == e.cid


def test_missing_entries_raise_key_errors(index):
    with pytest.raises(KeyError):
        index.get_dataset("nope")
    with pytest.raises(NotFoundError):
        index.get_entry("bafyreinotthere")
    with pytest.raises(KeyError):
        index.get_entry_by_name("nope")
    with pytest.raises(KeyError, match="Unknown repository"):
        index.list_datasets(repo="unknown")


def test_get_entry_by_name_returns_the_entry(index):
    e = index.write_samples(rows(3), name="byname")
    assert index.get_entry_by_name("byname").cid == e.cid


def test_list_datasets_covers_local_named_repos_and_atmosphere(tmp_path, index):
    lab = local.Repository(local.create_provider("sqlite", path=str(tmp_path / "lab.db")), local.LocalDiskStore(tmp_path / "lab"))
    idx = local.Index(path=str(tmp_path / "i2.db"), data_store=local.LocalDiskStore(tmp_path / "d2"), repos={"lab": lab}, atmosphere=None)
    idx.write_samples(rows(2), name="a")
    e = idx.write_samples(rows(3), name="lab/b")
    assert e.data_urls[0].startswith(str((tmp_path / "lab").resolve()))
    assert {x.name for x in idx.list_datasets()} == {"a", "b"}
    assert [x.name for x in idx.list_datasets(repo="lab")] == ["b"]
    assert [x.name for x in idx.list_datasets(repo="local")] == ["a"]
    assert idx.list_datasets(repo="_atmosphere") == []
    assert idx.get_dataset("@lab/b").cid == e.cid


def test_local_is_a_reserved_repository_name(tmp_path):
    with pytest.raises(ConfigurationError):
        local.Index(path=str(tmp_path / "x.db"), repos={"local": local.Repository(local.create_provider("sqlite", path=str(tmp_path / "y.db")))})
    with pytest.raises(TypeError):
        local.Index(path=str(tmp_path / "x.db"), repos={"lab": object()})


@pytest.mark.parametrize("name, ok", [
    ("lab", True), ("lab.v2", True), ("team_a-1", True),
    ("local", False), ("_atmosphere", False), ("a/b", False), ("@lab", False), ("", False), (".hidden", False),
    ("x" * 65, False),
])
def test_repository_names_follow_one_rule_in_the_index_the_resource_and_the_component(tmp_path, name, ok):
    from atdata_dagster.errors import InvalidNameError, InvalidRepositoryNameError
    from atdata_dagster.index.names import validate_repository_name

    repo = local.Repository(local.create_provider("sqlite", path=str(tmp_path / "lab.db")))
    if ok:
        assert validate_repository_name(name) == name
        local.Index(path=str(tmp_path / "x.db"), repos={name: repo}, atmosphere=None).close()
        return
    with pytest.raises(InvalidRepositoryNameError, match="not a usable repository name") as caught:
        local.Index(path=str(tmp_path / "x.db"), repos={name: repo}, atmosphere=None)
    assert isinstance(caught.value, ConfigurationError) and isinstance(caught.value, InvalidNameError)


def test_add_entry_indexes_existing_shards_without_copying(index, tmp_path):
    from atdata_dagster import write_samples

    ds = write_samples(rows(12), str(tmp_path / "ext" / "out.tar"), maxcount=5)
    with pytest.warns(DeprecationWarning, match=r"add_entry\(\) is deprecated, use Index.insert_dataset\(\)"):
        entry = index.add_entry(ds, name="ext", metadata={"k": 1})
    assert entry.data_urls == [ds.url] and "{" in ds.url  # the URL as written, as atdata records it
    assert index.dataset("ext").list_shards() == ds.list_shards()
    assert entry.metadata == {"k": 1}
    assert sum(1 for _ in index.dataset("ext").ordered()) == 12


def test_insert_dataset_copies_into_the_store_and_records_checksums(index, tmp_path):
    from atdata_dagster import write_samples

    ds = write_samples(rows(12), str(tmp_path / "src.tar"))
    entry = index.insert_dataset(ds, name="copied", metadata={"m": 2}, prefix="elsewhere/copied", maxcount=5)
    assert len(entry.data_urls) == 3
    assert all("elsewhere/copied" in u for u in entry.data_urls)
    assert entry.metadata["m"] == 2 and set(entry.metadata["checksums"]) == set(entry.data_urls)
    assert set(index.verify(entry).values()) == {"ok"}


def test_insert_dataset_without_a_store_indexes_urls_verbatim(tmp_path):
    from atdata_dagster import write_samples

    idx = local.Index(path=str(tmp_path / "x.db"), atmosphere=None)
    ds = write_samples(rows(4), str(tmp_path / "one.tar"))
    entry = idx.insert_dataset(ds, name="plain")
    assert entry.data_urls == [str((tmp_path / "one.tar").resolve())]


def test_read_back_decodes_every_field_including_arrays(index):
    index.write_samples(rows(7), name="rb")
    got = list(index.dataset("rb", Row).ordered())
    assert [r.value for r in got] == list(range(7))
    assert isinstance(got[3].vec, np.ndarray) and got[3].vec.dtype == np.float32 and got[3].vec[0] == 3
    untyped = list(index.dataset("rb").ordered())  # type from the stored schema
    assert untyped[2].text == "r2" and isinstance(untyped[2].vec, np.ndarray)


def test_publish_schema_auto_increments_and_records_the_docstring(index):
    r1 = index.publish_schema(Row)
    r2 = index.publish_schema(Row)
    r3 = index.publish_schema(Row, version="2.0.0", description="explicit")
    assert (r1, r2, r3) == ("atdata://local/schema/Row@1.0.0", "atdata://local/schema/Row@1.0.1", "atdata://local/schema/Row@2.0.0")
    assert index.get_schema(r1)["description"] == "A row of the index tests."
    assert index.get_schema_record(r3).description == "explicit"
    assert {s["$ref"] for s in index.list_schemas()} == {r1, r2, r3}


def test_get_schema_accepts_the_legacy_ref_form(index):
    ref = index.publish_schema(Row, version="1.0.0")
    assert index.get_schema("local://schemas/tests.index.test_index.Row@1.0.0")["$ref"] == ref


def test_malformed_and_unknown_schema_refs_raise(index):
    with pytest.raises(InvalidRefError):
        index.get_schema("atdata://local/schema/NoVersion")
    with pytest.raises(ValueError):
        index.get_schema("http://x/y@1")
    with pytest.raises(KeyError, match="Schema not found"):
        index.get_schema("atdata://local/schema/Missing@1.0.0")


def test_implicit_schema_ref_reuses_matching_versions_and_refreshes_changed_classes(index):
    e1 = index.write_samples(rows(2), name="s1")
    e2 = index.write_samples(rows(3), name="s2")
    assert e1.schema_ref == e2.schema_ref == "atdata://local/schema/Row@1.0.0"

    @packable
    class Row2:  # same name, different fields: a stale 1.0.0 would not decode it
        text: str

    Row2.__name__ = "Row"
    e3 = index.write_samples([Row2(text="x")], name="s3")
    assert e3.schema_ref == "atdata://local/schema/Row@1.0.1"
    assert [s.text for s in index.dataset("s3").ordered()] == ["x"]


def test_get_schema_type_decodes_and_registers_in_the_types_namespace(index):
    ref = index.publish_schema(Row, version="1.0.0")
    T = index.get_schema_type(ref, register=False)
    assert [f for f in T.__dataclass_fields__] == ["text", "value", "vec", "note"]
    assert "Row" not in index.types and len(index.types) == 0
    L = index.get_schema_type(ref)
    assert index.types.Row is L and "Row" in index.types and list(index.types) == ["Row"]
    assert index.types.get("Nope") is None
    with pytest.raises(AttributeError, match="get_schema_type"):
        index.types.Nope
    sample = L(text="a", value=1, vec=np.zeros(2, np.float32))
    assert L.from_bytes(sample.packed).value == 1


@pytest.mark.parametrize("call, message", [
    (lambda ix, ref: ix.decode_schema(ref), r"Index.decode_schema\(\) is deprecated, use Index.get_schema_type\(\)"),
    (lambda ix, ref: ix.decode_schema_as(ref, Row), r"Index.decode_schema_as\(\) is deprecated"),
    (lambda ix, ref: ix.load_schema(ref), r"Index.load_schema\(\) is deprecated"),
])
def test_the_seed_schema_names_still_work_with_atdata_07s_deprecation_warning(index, call, message):
    ref = index.publish_schema(Row, version="1.0.0")
    with pytest.warns(DeprecationWarning, match=message) as warned:
        T = call(index, ref)
    assert T.__name__ == "Row"
    assert warned[0].filename == __file__  # the warning points at the caller's line


def test_index_write_still_writes_with_a_deprecation_warning_naming_write_samples(index):
    with pytest.warns(DeprecationWarning, match=r"Index.write\(\) is deprecated, use Index.write_samples\(\)"):
        entry = index.write(rows(3), name="old-style", maxcount=2)
    assert len(entry.data_urls) == 2 and index.dataset("old-style").count() == 3


def test_write_samples_can_write_to_a_given_data_store(index, tmp_path):
    other = local.LocalDiskStore(str(tmp_path / "elsewhere"))
    entry = index.write_samples(rows(4), name="placed", data_store=other)
    assert all(u.startswith(str(tmp_path / "elsewhere")) for u in entry.data_urls)
    assert [r.value for r in index.dataset("placed", Row).ordered()] == [0, 1, 2, 3]
    assert set(index.verify("placed").values()) == {"ok"}


def test_seed_properties_entries_all_entries_datasets_schemas(index, tmp_path):
    a = index.write_samples(rows(2), name="a")
    b = index.write_samples(rows(3), name="b")
    import types

    assert isinstance(index.entries, types.GeneratorType)
    assert sorted(e.cid for e in index.entries) == sorted([a.cid, b.cid])
    assert sorted(e.name for e in index.all_entries) == ["a", "b"]
    assert sorted(e.name for e in index.datasets) == ["a", "b"]
    (schema,) = list(index.schemas)
    assert schema.name == "Row" and schema.version == "1.0.0"
    assert index.stub_dir is None


def test_auto_stubs_generate_importable_modules_and_clear_them(tmp_path):
    idx = local.Index(path=str(tmp_path / "x.db"), auto_stubs=True, stub_dir=str(tmp_path / "stubs"), atmosphere=None)
    ref = idx.publish_schema(Row, version="1.0.0")
    assert idx.get_import_path(ref) == "local.Row_1_0_0"
    assert (tmp_path / "stubs" / "local" / "Row_1_0_0.py").exists()
    T = idx.get_schema_type(ref)
    assert T.__name__ == "Row" and idx.stub_dir == tmp_path / "stubs"
    assert idx.clear_stubs() >= 1
    assert not (tmp_path / "stubs" / "local" / "Row_1_0_0.py").exists()
    idx.get_schema(ref)  # as atdata: reading the schema writes its stub again
    assert (tmp_path / "stubs" / "local" / "Row_1_0_0.py").exists()


def test_without_auto_stubs_there_is_no_import_path(index):
    ref = index.publish_schema(Row)
    assert index.get_import_path(ref) is None
    assert index.clear_stubs() == 0


def test_atmosphere_methods_say_what_to_configure_when_disabled(index):
    index.write_samples(rows(2), name="p")
    with pytest.raises(AtmosphereUnavailableError, match="AtmosphereClient"):
        index.promote("p")
    with pytest.raises(AtmosphereUnavailableError):
        index.get_dataset("@alice.test/p")


def test_default_atmosphere_makes_no_network_call_until_needed(tmp_path, monkeypatch):
    import socket

    calls = []

    def no_network(self, address, *args, **kwargs):
        calls.append(address)
        raise OSError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    idx = local.Index(path=str(tmp_path / "x.db"))
    idx.write_samples(rows(3), name="offline")
    assert [r.value for r in idx.dataset("offline", Row).ordered()] == [0, 1, 2]
    assert [e.name for e in idx.list_datasets()] == ["offline"]
    assert calls == []  # constructing, writing, reading and listing never touched the network


def test_verify_reports_a_tampered_shard(index):
    e = index.write_samples(rows(20), name="t", maxcount=10)
    with open(e.data_urls[1], "r+b") as f:
        f.seek(600)
        f.write(b"X")
    status = index.verify(e)
    assert status[e.data_urls[0]] == "ok" and status[e.data_urls[1]] == "mismatch"


def _write_many(args):
    db, data, worker = args
    idx = local.Index(path=db, data_store=local.LocalDiskStore(data), atmosphere=None)
    for j in range(10):
        idx.write_samples(rows(3, offset=worker * 100 + j), name=f"w{worker}/d{j}")
        idx.write_samples(rows(2, offset=worker), name="shared")
    idx.close()
    return worker


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    db, data = str(tmp_path / "index.db"), str(tmp_path / "data")
    local.Index(path=db, atmosphere=None).close()
    ctx = mp.get_context("forkserver")
    pool = ctx.Pool(4)
    try:
        assert sorted(pool.map(_write_many, [(db, data, w) for w in range(4)])) == [0, 1, 2, 3]
    finally:  # close+join, not Pool.__exit__'s terminate(): that relies on SIGTERM reaching idle workers
        pool.close()
        pool.join()
    idx = local.Index(path=db, data_store=local.LocalDiskStore(data), atmosphere=None)
    names = [e.name for e in idx.list_entries()]
    assert len([n for n in names if n.startswith("w")]) == 40
    shared = [e for e in idx.list_entries() if e.name == "shared"]
    assert len(shared) == 4  # one per distinct content (offset differs per worker)
    assert idx.get_dataset("shared").cid in {e.cid for e in shared}
    for e in idx.list_entries():
        assert set(idx.verify(e).values()) == {"ok"}


# -- a write that fails halfway --------------------------------------------------------------------
def _failing(n_ok: int, offset: int = 0):
    yield from rows(n_ok, offset)
    raise RuntimeError("the sample generator failed")


def _shard_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".atdata-dagster" not in p.parts)


def test_repeated_failed_writes_leave_no_shards_behind(tmp_path):
    data = tmp_path / "data"
    idx = local.Index(path=str(tmp_path / "i.db"), data_store=local.LocalDiskStore(data), atmosphere=None)
    for attempt in range(3):
        with pytest.raises(RuntimeError, match="generator failed"):
            idx.write_samples(_failing(17, offset=attempt * 100), name="flaky", maxcount=5, manifest=True)
    assert _shard_files(data) == []  # 3 committed shards and their sidecars per attempt, all removed
    assert idx.list_entries() == []
    idx.close()


def test_a_failed_write_keeps_shards_that_other_entries_reference(tmp_path):
    data = tmp_path / "data"
    idx = local.Index(path=str(tmp_path / "i.db"), data_store=local.LocalDiskStore(data), atmosphere=None)
    kept = idx.write_samples(rows(10), name="same", maxcount=5)
    before = _shard_files(data)
    with pytest.raises(RuntimeError):
        idx.write_samples(_failing(12), name="same", maxcount=5)  # the first 2 shards are identical: reused, not created
    assert _shard_files(data) == before
    assert idx.verify(kept) == {u: "ok" for u in kept.data_urls}
    idx.close()


@pytest.mark.s3
def test_a_failed_write_to_s3_removes_the_objects_it_created(tmp_path, s3_store, s3_client, s3_bucket):
    idx = local.Index(path=str(tmp_path / "i.db"), data_store=s3_store, atmosphere=None)
    kept = idx.write_samples(rows(5), name="s3keep", maxcount=5)
    with pytest.raises(RuntimeError):
        idx.write_samples(_failing(23), name="s3flaky", maxcount=5)
    s3_store.flush()
    keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    assert not [k for k in keys if "s3flaky" in k and k.endswith(".tar")], keys
    assert idx.verify(kept) == {u: "ok" for u in kept.data_urls}
    idx.close()


def test_atdata_07_helpers_sha256_verify_checksums_and_shard_write_result(index, tmp_path):
    import hashlib

    from atdata_dagster import ShardWriteResult, sha256_bytes, sha256_file, verify_checksums

    assert sha256_bytes(b"hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    entry = index.write_samples(rows(5), name="v", maxcount=2)
    first = entry.data_urls[0]
    assert sha256_file(first) == entry.checksums[first] == hashlib.sha256(open(first, "rb").read()).hexdigest()
    assert verify_checksums(entry) == {u: "ok" for u in entry.data_urls}
    with open(first, "r+b") as f:  # flip one byte
        f.seek(600)
        b = f.read(1)
        f.seek(600)
        f.write(bytes([b[0] ^ 1]))
    assert verify_checksums(entry)[first] == "mismatch"
    remote = type(entry)(name="r", schema_ref=entry.schema_ref, data_urls=["s3://b/k.tar", first],
                         metadata={"checksums": {"s3://b/k.tar": "0" * 64}})
    assert verify_checksums(remote) == {"s3://b/k.tar": "skipped", first: "skipped"}  # as atdata, no opener
    result = ShardWriteResult(["a.tar", "b.tar"], {"a.tar": "1" * 64, "b.tar": "2" * 64})  # atdata's form
    assert list(result) == ["a.tar", "b.tar"] and result.checksums == {"a.tar": "1" * 64, "b.tar": "2" * 64}


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0-beta", "2", "1.0.0+build", "abc", "1.0.0.0"])
def test_publish_schema_accepts_the_versions_atdata_accepts(index, version):
    ref = index.publish_schema(Row, version=version)
    assert ref == f"atdata://local/schema/Row@{version}"
    assert index.get_schema_type(ref).__name__ == "Row"


@pytest.mark.parametrize("version", [" 1.0.0", "1.0/0", "1@0", ""])
def test_publish_schema_refuses_versions_that_would_break_the_ref_syntax(index, version):
    from atdata_dagster.errors import InvalidNameError

    with pytest.raises(InvalidNameError, match="invalid schema version"):
        index.publish_schema(Row, version=version)
