"""gc deletes only what it provably owns and nothing references (data-safety issue, gc part).

One test (at least) per rule: ownership (a missing or empty index, a store of another
index or of no index, atdata's shared default root), references compared as locations,
only the store's own names (disk and a shared S3 bucket, uploads included), no gap
between check and delete (an entry committed while gc runs, a retried write reusing an
S3 shard), and S3 keys with ``#``, ``?``, spaces and ``%``. Each failed on the code
before this change. S3 tests run against the real Ceph RGW.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import packable
from atdata_dagster.cli import main as cli_main
from atdata_dagster.errors import GcRefusedError
from atdata_dagster.gc import collect_garbage
from atdata_dagster.index.entry import LocalDatasetEntry
from atdata_dagster.index.index import Index, Repository
from atdata_dagster.index.providers import SqliteProvider, provider_from_url
from atdata_dagster.dataset import write_samples
from atdata_dagster.shards.writer import ShardWriter
from atdata_dagster.stores.disk import LocalDiskStore

MiB = 1024 * 1024
OLD = 1_000_000_000  # an mtime far older than any grace period


@packable
class Row:
    i: int
    x: NDArray[np.float32]


def rows(n: int, seed: int = 0) -> list[Row]:
    return [Row(i=seed * 1000 + k, x=np.full(4, k, np.float32)) for k in range(n)]


def sqlite_index(path: Path, store=None, **kw) -> Index:
    return Index(provider_from_url(f"sqlite:///{path}"), data_store=store, atmosphere=None, **kw)


def aged(path: Path) -> Path:
    os.utime(path, (OLD, OLD))
    return path


def orphan(root: Path, dataset: str, hexid: str = "deadbeef", n: int = 9) -> Path:
    """An unreferenced, old shard under the store's own naming."""
    path = root / dataset / f"data--{hexid}--{n:06d}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 1024)
    return aged(path)


def index_entry(index: Index, name: str, urls: list[str], schema_ref: str, repo: str = "local") -> None:
    """Commit an entry over existing URLs (as atdata or a script may record them)."""
    index.repos[repo].provider.put_entry(LocalDatasetEntry(name=name, schema_ref=schema_ref, data_urls=urls))


# ------------------------------------------------------------------ ownership
def test_gc_refuses_an_index_that_did_not_exist_before_the_command_and_creates_none(tmp_path, capsys):
    with sqlite_index(tmp_path / "index.db", LocalDiskStore(tmp_path / "data")) as index:
        entry = index.write_samples(rows(6), name="kept", maxcount=3)
    for url in entry.data_urls:
        aged(Path(url))
    typo = tmp_path / "indx.db"
    code = cli_main(["--index", f"sqlite:///{typo}", "--data-root", str(tmp_path / "data"), "gc", "--grace", "0"],
                    out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "--force" in err
    assert not typo.exists()  # no empty index was created
    assert all(Path(u).exists() for u in entry.data_urls)


def test_gc_refuses_an_index_without_entries_unless_forced(tmp_path):
    with sqlite_index(tmp_path / "index.db", LocalDiskStore(tmp_path / "data")) as index:
        entry = index.write_samples(rows(6), name="gone", maxcount=3)
        index.provider.delete_entry(entry.cid)
        for url in entry.data_urls:
            aged(Path(url))
        with pytest.raises(GcRefusedError, match=r"no entries.*--force"):
            collect_garbage(index, grace=0)
        assert all(Path(u).exists() for u in entry.data_urls)
        assert sorted(collect_garbage(index, grace=0, force=True)) == sorted(entry.data_urls)


def test_gc_refuses_a_store_another_index_writes_to_and_proceeds_when_both_are_mounted(tmp_path):
    root = tmp_path / "shared"
    with sqlite_index(tmp_path / "a.db", LocalDiskStore(root)) as a, sqlite_index(tmp_path / "b.db", LocalDiskStore(root)) as b:
        ea = a.write_samples(rows(6), name="a-data", maxcount=3)
        eb = b.write_samples(rows(6, 1), name="b-data", maxcount=3)
        for url in ea.data_urls + eb.data_urls:
            aged(Path(url))
        with pytest.raises(GcRefusedError, match=r"other index.*--force"):
            collect_garbage(b, grace=0)
        assert all(Path(u).exists() for u in ea.data_urls)
    stray = orphan(root, "a-data", "0badf00d", 7)
    both = Index(SqliteProvider(tmp_path / "a.db"), data_store=LocalDiskStore(root),
                 repos={"b": Repository(SqliteProvider(tmp_path / "b.db"))}, atmosphere=None)
    with both:
        assert collect_garbage(both, grace=0) == [str(stray)]
    assert all(Path(u).exists() for u in ea.data_urls + eb.data_urls)


def test_gc_refuses_a_store_without_an_ownership_marker(tmp_path):
    # shards another tool (atdata itself, a copy) put under the store's naming: no marker
    theirs = write_samples(rows(3), tmp_path / "data" / "theirs" / "data--01234567--000000.tar")
    aged(Path(theirs.url))
    with sqlite_index(tmp_path / "index.db", LocalDiskStore(tmp_path / "mine")) as index:
        index.write_samples(rows(3), name="mine")
    with sqlite_index(tmp_path / "index.db", LocalDiskStore(tmp_path / "data")) as index:
        with pytest.raises(GcRefusedError, match=r"no ownership marker.*--force"):
            collect_garbage(index, grace=0)
    assert Path(theirs.url).exists()


def test_gc_refuses_the_shared_default_root_while_atdata_default_index_is_not_mounted(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default_root = tmp_path / "home" / ".atdata" / "data"
    # atdata's default index records a shard in the default root (atdata writes no marker)
    theirs = write_samples(rows(3), default_root / "theirs" / "data--89abcdef--000000.tar")
    aged(Path(theirs.url))
    with Index(atmosphere=None) as atdata_default:
        atdata_default.insert_dataset(theirs, name="theirs")
    # our index has no store: it writes into the default root too
    with sqlite_index(tmp_path / "mine.db") as mine:
        mine.write_samples(rows(3, 1), name="mine")
        with pytest.raises(GcRefusedError, match=r"shared default root.*--force"):
            collect_garbage(mine, grace=0)
    assert Path(theirs.url).exists()
    # with atdata's default index mounted, its entries are seen and its shard is kept
    stray = orphan(default_root, "mine", "0badcafe", 5)
    both = Index(SqliteProvider(tmp_path / "mine.db"), repos={"atdata": Repository(SqliteProvider())}, atmosphere=None)
    with both:
        assert collect_garbage(both, grace=0) == [str(stray)]
    assert Path(theirs.url).exists()


# ------------------------------------------------------------------ references as locations
def test_gc_compares_references_as_locations_not_strings(tmp_path, monkeypatch):
    root = tmp_path / "data"
    index = sqlite_index(tmp_path / "index.db", LocalDiskStore(root),
                         repos={"lab": Repository(SqliteProvider(tmp_path / "lab.db"))})
    with index:
        anchor = index.write_samples(rows(3), name="anchor")
        shards = [orphan(root, "refs", f"{k:08x}", k) for k in range(5)]
        ranged = [orphan(root, "refs", "0badcafe", k) for k in (6, 7)]
        link = tmp_path / "link"
        link.symlink_to(root)
        monkeypatch.chdir(tmp_path)
        forms = {
            "file-url": f"file://{shards[0]}",
            "double-slash": str(shards[1]).replace("/refs/", "//refs/"),
            "dot-segment": str(shards[2]).replace("/refs/", "/./refs/"),
            "symlinked-folder": str(link / "refs" / shards[3].name),
            "relative": os.path.relpath(shards[4], tmp_path),
            "brace-pattern": f"{root}/refs/data--0badcafe--{{000006..000007}}.tar",
        }
        for name, url in forms.items():
            index_entry(index, name, [url], anchor.schema_ref)
        # a mounted repository references through file:// too; another entry reuses the anchor's shards
        index_entry(index, "lab-copy", [f"file://{ranged[0]}"], anchor.schema_ref, repo="lab")
        index_entry(index, "reuse", list(anchor.data_urls), anchor.schema_ref, repo="lab")
        stray = orphan(root, "refs", "feedf00d", 99)
        assert collect_garbage(index, grace=0) == [str(stray)]
    assert all(p.exists() for p in shards + ranged) and all(Path(u).exists() for u in anchor.data_urls)


def test_gc_keeps_a_shard_whose_own_path_contains_braces(tmp_path):
    """A brace pattern is expanded, but the literal URL is a reference too: a dataset named
    ``x{1,2}`` has a folder with braces in its name."""
    with sqlite_index(tmp_path / "index.db", LocalDiskStore(tmp_path / "data")) as index:
        entry = index.write_samples(rows(3), name="x{1,2}")
        for url in entry.data_urls:
            aged(Path(url))
        assert collect_garbage(index, grace=0) == []
    assert all(Path(u).exists() for u in entry.data_urls)


# ------------------------------------------------------------------ only its own names
def test_gc_touches_only_the_stores_own_names_on_disk(tmp_path):
    root = tmp_path / "data"
    with sqlite_index(tmp_path / "index.db", LocalDiskStore(root)) as index:
        index.write_samples(rows(3), name="ds")
        foreign = [root / "backup.tar", root / "ds" / "backup.tar", root / "ds" / "notes.manifest.json",
                   root / "ds" / "data--DEADBEEF--000001.tar", root / "ds" / "data--deadbeef--1.tar",
                   root / "ds" / ".tmp-foo.tar.part", root / "data--deadbeef--000002.tar",
                   root / "other-app" / "export.tar"]
        for path in foreign:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"keep me")
            aged(path)
        own = orphan(root, "ds", "deadbeef", 1)
        assert collect_garbage(index, grace=0) == [str(own)]
    assert all(p.exists() for p in foreign)


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_gc_on_a_shared_bucket_without_prefix_touches_only_its_own_objects_and_uploads(
    tmp_path, rgw_server, s3_bucket, s3_client
):
    from atdata_dagster.stores.s3 import S3DataStore

    store = S3DataStore(bucket=s3_bucket, part_size=5 * MiB, **rgw_server.config)
    index = sqlite_index(tmp_path / "index.db", store)
    try:
        entry = index.write_samples(rows(6), name="mine", maxcount=3)
        foreign = ["backup.tar", "photos/holiday.tar", "logs/run.manifest.json", "mine/backup.tar",
                   "data--deadbeef--000001.tar", "mine/.tmpx/data.tar"]
        for key in foreign:
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"another application's object")
        theirs = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="videos/big.tar")["UploadId"]
        own_orphan = "mine/data--deadbeef--000009.tar"
        s3_client.put_object(Bucket=s3_bucket, Key=own_orphan, Body=b"\0" * 1024)
        crashed = store.open_sink("mine")  # a writer that died mid-shard: our own upload under .tmp/
        crashed.write(b"x" * (6 * MiB))
        crashed._parts[0].result()
        del crashed

        assert collect_garbage(index, grace=0) == [f"s3://{s3_bucket}/{own_orphan}"]

        left = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
        assert set(foreign) <= left and own_orphan not in left
        assert {u.split("/", 3)[3] for u in entry.data_urls} <= left
        uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        assert [(u["Key"], u["UploadId"]) for u in uploads] == [("videos/big.tar", theirs)]
        s3_client.abort_multipart_upload(Bucket=s3_bucket, Key="videos/big.tar", UploadId=theirs)
    finally:
        index.close()
        store.close()


# ------------------------------------------------------------------ no check/delete gap
def test_an_entry_committed_while_gc_runs_keeps_its_shards(provider_url, tmp_path):
    root = tmp_path / "data"
    with Index(provider_from_url(provider_url), data_store=LocalDiskStore(root), atmosphere=None) as index:
        anchor = index.write_samples(rows(3), name="anchor")
        first, late = orphan(root, "late", "0000000a", 1), orphan(root, "late", "0000000b", 2)

        def progress(candidates):
            # the entry commits after gc listed its candidates, before the first delete
            index_entry(index, "late", [str(late)], anchor.schema_ref)
            yield from candidates

        assert collect_garbage(index, grace=0, progress=progress) == [str(first)]
    assert late.exists() and not first.exists()


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_a_retried_write_reusing_s3_shards_refreshes_their_age_so_a_concurrent_gc_keeps_them(
    tmp_path, rgw_server, s3_bucket
):
    from atdata_dagster.stores.s3 import S3DataStore

    store = S3DataStore(bucket=s3_bucket, part_size=5 * MiB, **rgw_server.config)
    index = sqlite_index(tmp_path / "index.db", store)
    try:
        index.write_samples(rows(3, 9), name="anchor")
        failed = index.write_samples(rows(6), name="retry", maxcount=3)
        index.provider.delete_entry(failed.cid)  # as if the write died before its commit
        grace = 2.0
        time.sleep(grace + 1.5)  # the orphaned shards are now older than the grace period
        retried: list[str] = []

        def progress(candidates):
            # the retry rewrites the same shards between gc's listing and its deletes
            with ShardWriter(store, "retry", maxcount=3, sample_type=Row) as writer:
                for sample in rows(6):
                    writer.write_sample(sample)
                retried.extend(writer.close())
            yield from candidates

        deleted = collect_garbage(index, grace=grace, progress=progress)
        assert retried == list(failed.data_urls)
        assert not set(deleted) & set(retried)
        entry = index.write_samples(rows(6), name="retry", maxcount=3)  # the retry commits its entry
        assert set(index.verify(entry).values()) == {"ok"}
    finally:
        index.close()
        store.close()


# ------------------------------------------------------------------ S3 keys
@pytest.mark.s3
@pytest.mark.xdist_group("s3")
@pytest.mark.parametrize("name", ["hash#tag", "query?x=1", "with space", "100%", "enc%2Fslash"])
def test_s3_dataset_names_with_url_characters_write_read_verify_and_gc(name, tmp_path, rgw_server, s3_bucket, s3_client):
    from atdata_dagster.stores.s3 import S3DataStore

    store = S3DataStore(bucket=s3_bucket, prefix="team", **rgw_server.config)
    index = sqlite_index(tmp_path / "index.db", store)
    try:
        entry = index.write_samples(rows(6), name=name, maxcount=3)
        # the key a URL parser reaches by cutting at '#'/'?': another dataset's object
        neighbour = "team/" + re.split(r"[#?]", name)[0]
        s3_client.put_object(Bucket=s3_bucket, Key=neighbour, Body=b"another dataset")
        assert [s.i for s in index.dataset(name, Row).ordered()] == list(range(6))
        assert set(index.verify(entry).values()) == {"ok"}
        with store.open_read(store.read_url(entry.data_urls[0])) as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry.checksums[entry.data_urls[0]]
        stray = f"team/{name}/data--deadbeef--000009.tar"
        s3_client.put_object(Bucket=s3_bucket, Key=stray, Body=b"\0" * 1024)

        assert collect_garbage(index, grace=0) == [f"s3://{s3_bucket}/{stray}"]

        left = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
        assert neighbour in left and stray not in left
        assert set(index.verify(entry).values()) == {"ok"}
    finally:
        index.close()
        store.close()


def test_write_samples_into_a_folder_with_a_percent_sign(tmp_path):
    folder = tmp_path / "100% done"
    one = write_samples(rows(4), folder / "one.tar")
    assert one.url == str(folder / "one.tar") and [s.i for s in one.ordered()] == list(range(4))
    many = write_samples(rows(5), folder / "many.tar", maxcount=2)
    assert sorted(p.name for p in folder.glob("many-*.tar")) == [f"many-{k:06d}.tar" for k in range(3)]
    assert [s.i for s in many.ordered()] == list(range(5))


def test_gc_on_a_fresh_index_of_any_provider_refuses_and_deletes_nothing(provider_kind, provider_url, tmp_path, capsys):
    """A typo in ``--index`` opens a new, empty index (PostgreSQL and Redis create it on
    connect): gc must refuse instead of deleting every shard of the store."""
    with sqlite_index(tmp_path / "real.db", LocalDiskStore(tmp_path / "data")) as index:
        entry = index.write_samples(rows(6), name="kept", maxcount=3)
    for url in entry.data_urls:
        aged(Path(url))
    code = cli_main(["--index", provider_url, "--data-root", str(tmp_path / "data"), "gc", "--grace", "0"],
                    out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and ("does not exist" in err or "no entries" in err)
    assert all(Path(u).exists() for u in entry.data_urls)
