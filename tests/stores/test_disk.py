"""LocalDiskStore: layout, content-addressed names, name validation, failures."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import msgpack
import pytest

from atdata_dagster.errors import InvalidNameError, StoreError
from atdata_dagster.shards.writer import ShardWriter, write_samples_to_store
from atdata_dagster.stores import LocalDiskStore, validate_dataset_prefix
from atdata_dagster.stores import disk as disk_mod


def _files(root) -> list[str]:
    return sorted(str(Path(d, n).relative_to(root)) for d, _, ns in os.walk(root) for n in ns)


def _write(store, prefix="mnist", n=5, **kw):
    return write_samples_to_store(({"msgpack": msgpack.packb({"i": i})} for i in range(n)), store, prefix, **kw)


def test_layout_and_absolute_urls(tmp_path):
    store = LocalDiskStore(tmp_path / "root")
    result = _write(store, "lab/mnist", n=5, maxcount=2)
    root = (tmp_path / "root").resolve()
    assert store.root == root
    for i, url in enumerate(result):
        assert os.path.isabs(url) and not url.startswith("file://")
        assert re.fullmatch(re.escape(str(root)) + rf"/lab/mnist/data--[0-9a-f]{{8}}--{i:06d}\.tar", url)
        sha = hashlib.sha256(open(url, "rb").read()).hexdigest()
        assert result.checksums[url] == sha and url.split("--")[1] == sha[:8]
    assert _files(root) == sorted(os.path.relpath(u, root) for u in result)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    store = LocalDiskStore()
    assert store.root == (tmp_path / ".atdata" / "data").resolve() and store.root.is_dir()


def test_root_is_expanded_and_resolved(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    store = LocalDiskStore("~/x/../data")
    assert store.root == (tmp_path / "data").resolve()


def test_temp_files_gone_after_commit_and_abort(tmp_path):
    store = LocalDiskStore(tmp_path)
    sink = store.open_sink("ds")
    assert os.path.basename(sink.tmp_path).startswith(".tmp-") and sink.tmp_path.endswith(".tar.part")
    assert os.path.exists(sink.tmp_path)
    assert list(store.iter_shard_urls()) == [sink.tmp_path]  # leftovers are visible to gc
    sink.write(b"x" * 1024)
    url = sink.commit(0, hashlib.sha256(b"x" * 1024).hexdigest())
    assert not os.path.exists(sink.tmp_path) and os.path.exists(url)
    sink2 = store.open_sink("ds")
    sink2.write(b"partial")
    sink2.abort()
    sink2.abort()  # idempotent
    assert _files(tmp_path) == ["ds/" + os.path.basename(url)]
    with pytest.raises(StoreError):
        sink2.write(b"more")


def test_same_content_committed_twice_is_one_file(tmp_path):
    store = LocalDiskStore(tmp_path)
    a = _write(store, "ds", n=7)
    b = _write(store, "ds", n=7)
    assert list(a) == list(b)
    assert _files(tmp_path) == ["ds/" + os.path.basename(a[0])]


def test_hash_prefix_collision_uses_longer_name(tmp_path):
    store = LocalDiskStore(tmp_path)
    content = b"real content"
    sha = hashlib.sha256(content).hexdigest()
    squatter = tmp_path / "ds" / f"data--{sha[:8]}--000000.tar"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"different bytes, same 8-hex prefix")
    sink = store.open_sink("ds")
    sink.write(content)
    url = sink.commit(0, sha)
    assert os.path.basename(url) == f"data--{sha[:16]}--000000.tar"
    assert open(url, "rb").read() == content
    assert squatter.read_bytes() == b"different bytes, same 8-hex prefix"  # never replaced


@pytest.mark.parametrize(
    "prefix",
    ["../x", "/abs", "a/../../b", "a/./b", "a//b", "a/", "", "nul\0x", "back\\slash", "ctl\x01", "x" * 256, "a/" * 600 + "b"],
)
def test_invalid_prefixes(tmp_path, prefix):
    root = tmp_path / "root"
    store = LocalDiskStore(root)
    with pytest.raises(InvalidNameError) as ei:
        store.open_sink(prefix)
    assert "prefix" in str(ei.value)
    with pytest.raises(InvalidNameError):
        _write(store, prefix)
    assert _files(tmp_path) == []  # nothing written inside or outside the root


def test_valid_prefixes():
    for p in ["mnist", "lab/mnist/train", "a-b_c.d", "ünï/cödé", "x" * 255]:
        assert validate_dataset_prefix(p) == p


def test_symlink_escape_is_rejected(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalDiskStore(root)
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidNameError, match="outside the store root"):
        store.open_sink("link/ds")
    assert list(outside.iterdir()) == []


def test_enospc_becomes_store_error_without_leftovers(tmp_path, monkeypatch):
    store = LocalDiskStore(tmp_path)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_mod.os, "write", full)
    with pytest.raises(StoreError) as ei:
        _write(store, "ds", n=3)
    monkeypatch.undo()
    assert "No space left" in str(ei.value) and str(tmp_path) in str(ei.value)
    assert _files(tmp_path) == []


def test_permission_error_on_create(tmp_path, monkeypatch):
    store = LocalDiskStore(tmp_path)
    real_open = os.open

    def denied(path, *a, **k):
        if str(path).endswith(".part"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(disk_mod.os, "open", denied)
    with pytest.raises(StoreError, match="Permission denied"):
        store.open_sink("ds")


def test_fsync_failure_at_commit(tmp_path, monkeypatch):
    store = LocalDiskStore(tmp_path)
    sink = store.open_sink("ds")
    sink.write(b"abc")

    def bad_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(disk_mod.os, "fsync", bad_fsync)
    with pytest.raises(StoreError, match="I/O error"):
        sink.commit(0, hashlib.sha256(b"abc").hexdigest())
    monkeypatch.undo()
    assert _files(tmp_path) == []


def test_no_hardlinks_fallback(tmp_path, monkeypatch):
    store = LocalDiskStore(tmp_path)

    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(disk_mod.os, "link", no_link)
    a = _write(store, "ds", n=3)
    b = _write(store, "ds", n=3)
    assert list(a) == list(b) and len(_files(tmp_path)) == 1


def test_sidecar_open_read_owns_delete(tmp_path):
    store = LocalDiskStore(tmp_path / "r")
    result = _write(store, "ds", n=3)
    url = result[0]
    side = store.put_sidecar(url, ".manifest.json", b"{}")
    assert side == url[:-4] + ".manifest.json" and open(side, "rb").read() == b"{}"
    with store.open_read(url) as f:
        assert hashlib.sha256(f.read()).hexdigest() == result.checksums[url]
    assert store.owns(url) and store.owns("file://" + url)
    assert not store.owns(str(tmp_path / "elsewhere.tar"))
    assert not store.owns("s3://bucket/ds/x.tar")
    assert not store.owns("relative/x.tar")
    assert list(store.iter_shard_urls()) == [url]
    store.delete(url)
    store.delete(url)  # missing is fine
    assert not os.path.exists(url)
    with pytest.raises(StoreError):
        store.delete(str(tmp_path / "outside.tar"))


def test_writer_commits_through_store(tmp_path):
    store = LocalDiskStore(tmp_path)
    with ShardWriter(store, "a/b", maxcount=1) as w:
        w.write_payload("k", msgpack.packb({"a": 1}))
        w.write_payload("k2", msgpack.packb({"a": 2}))
        r = w.close()
    assert len(r) == 2 and all(u.startswith(str(tmp_path.resolve()) + "/a/b/data--") for u in r)


def test_reuse_refreshes_mtime_for_gc(tmp_path):
    store = LocalDiskStore(tmp_path)
    (url,) = _write(store, "ds", n=2)
    os.utime(url, (1, 1))
    (again,) = _write(store, "ds", n=2)
    assert again == url and os.path.getmtime(url) > 1_000_000


def test_all_names_taken_is_a_store_error_without_leftovers(tmp_path):
    store = LocalDiskStore(tmp_path)
    content = b"content"
    sha = hashlib.sha256(content).hexdigest()
    (tmp_path / "ds").mkdir()
    for width in (8, 16, 64):
        (tmp_path / "ds" / f"data--{sha[:width]}--000000.tar").write_bytes(b"other")
    sink = store.open_sink("ds")
    sink.write(content)
    with pytest.raises(StoreError, match="names taken"):
        sink.commit(0, sha)
    assert not os.path.exists(sink.tmp_path)


# -- gc support: own names, locations, ownership markers ------------------------------
def test_gc_listings_name_only_own_shards_sidecars_and_temp_files(tmp_path):
    store = LocalDiskStore(tmp_path)
    (shard,) = _write(store, "ds", n=2)
    sidecar = store.put_sidecar(shard, ".manifest.json", b"{}")
    temp = tmp_path / "ds" / (".tmp-" + "a" * 32 + ".tar.part")
    temp.write_bytes(b"partial")
    for foreign in ("backup.tar", "ds/backup.tar", "ds/notes.manifest.json", "ds/data--XYZ--000000.tar",
                    "data--deadbeef--000000.tar", "ds/data--deadbeef--000000.tar.orig"):
        (tmp_path / foreign).write_bytes(b"not ours")
    os.symlink(shard, tmp_path / "ds" / "data--0badf00d--000000.tar")  # a link is never ours to delete
    assert list(store.iter_shard_urls()) == sorted([shard, str(temp)])
    assert list(store.iter_sidecar_urls()) == [sidecar]
    assert store.is_own_name(shard) and store.is_own_name(sidecar) and store.is_own_name(str(temp))
    assert not store.is_own_name(str(tmp_path / "ds" / "backup.tar"))
    assert not store.is_own_name(str(tmp_path / "data--deadbeef--000000.tar"))  # shards live in dataset folders


def test_locations_resolve_file_urls_duplicate_slashes_dot_segments_symlinks_and_relative_paths(tmp_path, monkeypatch):
    store = LocalDiskStore(tmp_path / "root")
    (shard,) = _write(store, "ds", n=2)
    (tmp_path / "link").symlink_to(tmp_path / "root")
    monkeypatch.chdir(tmp_path)
    for ref in (shard, f"file://{shard}", f"file://localhost{shard}", shard.replace("/ds/", "//ds/"),
                shard.replace("/ds/", "/./ds/"), shard.replace("/ds/", "/ds/../ds/"),
                str(tmp_path / "link" / "ds" / os.path.basename(shard)), os.path.relpath(shard, tmp_path),
                "ds/" + os.path.basename(shard), "file://" + shard.replace(" ", "%20")):
        assert shard in store.locations(ref), ref
    assert store.locations("s3://bucket/ds/x.tar") == set()
    assert store.locations(str(tmp_path / "elsewhere.tar")) == set()


def test_claim_writes_one_marker_per_index_that_readers_never_list_as_a_shard(tmp_path):
    from atdata_dagster.loading import load_dataset

    store = LocalDiskStore(tmp_path)
    assert store.owner_ids() == set()
    store.claim("a" * 32)
    store.claim("a" * 32)
    LocalDiskStore(tmp_path).claim("b" * 32)
    assert store.owner_ids() == {"a" * 32, "b" * 32}
    with pytest.raises(StoreError, match="32 hex"):
        store.claim("../../escape")
    _write(store, "ds", n=3)
    assert not any(".atdata-dagster" in u for u in [*store.iter_shard_urls(), *store.iter_sidecar_urls()])
    assert len(list(load_dataset(str(tmp_path / "ds")).ordered())) == 3
    with pytest.raises(InvalidNameError, match="reserve"):
        validate_dataset_prefix(".atdata-dagster/owners")


def test_reuse_survives_the_existing_shard_being_deleted_meanwhile(tmp_path, monkeypatch):
    """gc may delete an old shard between a writer's failed link and its reuse: the writer
    then links its own copy instead of failing."""
    store = LocalDiskStore(tmp_path)
    (url,) = _write(store, "ds", n=2)
    real_getsize = os.path.getsize

    def deleted_meanwhile(path):
        if path == url and os.path.exists(url):
            os.unlink(url)  # what a concurrent gc does
        return real_getsize(path)

    monkeypatch.setattr(disk_mod.os.path, "getsize", deleted_meanwhile)
    (again,) = _write(store, "ds", n=2)
    monkeypatch.undo()
    assert again == url and os.path.exists(url)
    assert hashlib.sha256(open(url, "rb").read()).hexdigest()[:8] == os.path.basename(url).split("--")[1]
