"""The streaming tar reader: formats it understands and hostile input it rejects."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest
import webdataset as wds
from hypothesis import given, settings
from hypothesis import strategies as st

from atdata_dagster.errors import ShardError, StoreError
from atdata_dagster.shards import reader as reader_mod
from atdata_dagster.shards.reader import (
    FunctionOpener,
    LocalOpener,
    ShardOpener,
    as_opener,
    iter_members,
    iter_samples,
    open_url,
    verify_shards,
)
from atdata_dagster.shards.writer import ShardWriter, TarStreamEncoder

from .helpers import MemoryStore, payload


def make_tar(members, fmt=tarfile.USTAR_FORMAT, pax_headers=None) -> bytes:
    """members: list of (name, bytes | None for a directory, optional TarInfo tweaks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def encode(members) -> bytes:
    out = []
    enc = TarStreamEncoder(out.append)
    for name, data in members:
        enc.add(name.encode(), data)
    enc.finish()
    return b"".join(bytes(x) for x in out)


class Trickle(io.RawIOBase):
    """A stream returning at most ``step`` bytes per read (like a slow socket)."""

    def __init__(self, data: bytes, step: int):
        self._f = io.BytesIO(data)
        self.step = step

    def readable(self):
        return True

    def read(self, n=-1):
        return self._f.read(min(self.step, n if n >= 0 else self.step))


def members(data: bytes, url="mem://t.tar"):
    return list(iter_members(io.BytesIO(data), url))


def samples(data: bytes, url="mem://t.tar"):
    return list(iter_samples(io.BytesIO(data), url))


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_stdlib_formats(fmt):
    ms = [("a.msgpack", payload(1)), ("b.msgpack", payload(2)), ("b.json", b"{}")]
    assert members(make_tar(ms, fmt)) == ms
    assert samples(make_tar(ms, fmt)) == [("a", payload(1)), ("b", payload(2))]


def test_pax_long_and_unicode_names():
    long = "x" * 150 + "/" + "ü" * 120 + ".msgpack"
    data = make_tar([(long, payload(1)), ("k.msgpack", payload(2))], tarfile.PAX_FORMAT)
    assert members(data) == [(long, payload(1)), ("k.msgpack", payload(2))]


def test_pax_global_header():
    data = make_tar([("k.msgpack", payload(1))], tarfile.PAX_FORMAT, pax_headers={"comment": "hello"})
    assert data[156:157] == b"g"
    assert members(data) == [("k.msgpack", payload(1))]
    # a global 'path' applies to later members, as in tarfile
    data = make_tar([("k.msgpack", payload(1))], tarfile.PAX_FORMAT, pax_headers={"path": "g.msgpack"})
    assert [n for n, _ in members(data)] == tarfile.open(fileobj=io.BytesIO(data)).getnames()


def test_gnu_longname():
    long = "d" * 120 + "/k1.msgpack"
    data = make_tar([(long, payload(1))], tarfile.GNU_FORMAT)
    assert data[156:157] == b"L"
    assert samples(data) == [("d" * 120 + "/k1", payload(1))]


def test_directories_skipped_and_directory_keys():
    data = make_tar([("sub", None), ("sub/dir", None), ("sub/dir/k1.msgpack", payload(1)), ("sub/dir/k1.json", b"{}")])
    assert samples(data) == [("sub/dir/k1", payload(1))]


def test_ustar_prefix_field():
    name = "p" * 90 + "/" + "q" * 60 + ".msgpack"  # > 100 bytes: split into prefix + name
    data = make_tar([(name, payload(1))], tarfile.USTAR_FORMAT)
    assert members(data) == [(name, payload(1))]


def test_uppercase_suffix_and_extra_members():
    data = make_tar([("K.MSGPACK", payload(1)), ("k2.json", b"{}"), ("k2.msgpack", payload(2)), ("noext", b"x")])
    assert samples(data) == [("K", payload(1)), ("k2", payload(2))]


def with_size_field(tar: bytes, field: bytes) -> bytes:
    """``tar`` with its first header's 12-byte size field replaced and the checksum redone."""
    header = bytearray(tar[:512])
    header[124:136] = field
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + tar[512:]


def test_a_base256_size_field_is_read_as_gnu_tar_writes_it_for_huge_members():
    data = payload(3)
    tar = make_tar([("k.msgpack", data)])
    base256 = with_size_field(tar, b"\x80" + len(data).to_bytes(11, "big"))  # GNU form for members over 8 GiB
    assert samples(base256) == [("k", data)]


def test_a_negative_base256_size_field_is_an_unreadable_shard():
    tar = with_size_field(make_tar([("k.msgpack", payload(3))]), b"\xff" * 12)
    with pytest.raises(ShardError, match="unreadable size field"):
        samples(tar)


def test_webdataset_tarwriter_shards(tmp_path):
    url = str(tmp_path / "w.tar")
    with wds.TarWriter(url) as tw:
        for i in range(5):
            tw.write({"__key__": f"74479c03-e911-11f1-8000-00000000000{i}", "msgpack": payload(i)})
    with open_url(url) as f:
        got = list(iter_samples(f, url))
    assert got == [(f"74479c03-e911-11f1-8000-00000000000{i}", payload(i)) for i in range(5)]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=30),
    step=st.integers(1, 4096),
    chunk=st.sampled_from([512, 1000, 4096, 1 << 20]),
)
def test_roundtrip_any_chunking(sizes, step, chunk):
    ms = [(f"k{i}.msgpack", os.urandom(n)) for i, n in enumerate(sizes)]
    data = encode(ms)
    old = reader_mod.READ_CHUNK
    reader_mod.READ_CHUNK = chunk
    try:
        assert list(iter_members(Trickle(data, step), "t")) == ms
    finally:
        reader_mod.READ_CHUNK = old
    assert [(m.name, m.size) for m in tarfile.open(fileobj=io.BytesIO(data))] == [(n, len(d)) for n, d in ms]


# ------------------------------------------------------------------ hostile input


def good_tar() -> bytes:
    return encode([("a.msgpack", payload(1)), ("b.msgpack", os.urandom(3000)), ("c.msgpack", payload(3))])


@pytest.mark.parametrize("cut", [100, 512, 700, 1024 + 512 + 100, 1024 + 512 + 3072, -1024 - 1, -1024])
def test_truncated(cut):
    data = good_tar()[:cut]
    with pytest.raises(ShardError, match="truncated") as ei:
        samples(data)
    assert "mem://t.tar" in str(ei.value)


@pytest.mark.parametrize("cut", [-512, -1])
def test_partial_end_marker_is_accepted(cut):
    """One zero block already ends the archive (as for tarfile); every sample is intact."""
    assert len(samples(good_tar()[:cut])) == 3


def test_empty_stream():
    with pytest.raises(ShardError, match="empty"):
        members(b"")


def test_bad_checksum():
    data = bytearray(good_tar())
    data[1024] ^= 0x01  # first byte of the second member's name
    with pytest.raises(ShardError, match="checksum.*'a.msgpack'"):
        members(bytes(data))


def test_garbage_is_rejected():
    with pytest.raises(ShardError, match="checksum"):
        members(os.urandom(4096))


def test_dotdot_member():
    data = make_tar([("ok.msgpack", payload(1)), ("../evil.msgpack", payload(2))])
    with pytest.raises(ShardError, match=r"'\.\./evil\.msgpack'"):
        members(data)


def test_dotdot_inside_path():
    data = make_tar([("a/../../evil.msgpack", payload(2))])
    with pytest.raises(ShardError, match="absolute or '..'"):
        members(data)


def test_absolute_member():
    data = make_tar([("/etc/evil.msgpack", payload(1))])
    with pytest.raises(ShardError, match="absolute"):
        members(data)


def test_absolute_pax_path():
    data = make_tar([("/" + "x" * 200 + ".msgpack", payload(1))], tarfile.PAX_FORMAT)
    with pytest.raises(ShardError, match="absolute"):
        members(data)


def _with_size(data: bytes, size_field: bytes, at: int = 0) -> bytes:
    h = bytearray(data[at : at + 512])
    h[124:136] = size_field
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    return data[:at] + bytes(h) + data[at + 512 :]


def test_lying_size_is_truncation():
    data = _with_size(good_tar(), b"%011o\0" % 10_000_000)
    with pytest.raises(ShardError, match="truncated.*10000000 bytes"):
        members(data)


def test_absurd_size():
    data = _with_size(good_tar(), b"\x80" + (1 << 60).to_bytes(11, "big"))
    with pytest.raises(ShardError, match="claims"):
        members(data)


def test_unparseable_size():
    data = _with_size(good_tar(), b"zzzzzzzzzzz\0")
    with pytest.raises(ShardError, match="size"):
        members(data)


def test_dotted_key_is_missing_msgpack():
    data = make_tar([("a.b.msgpack", payload(1))])
    with pytest.raises(ShardError, match="Sample missing 'msgpack'.*'a'"):
        samples(data)


def test_missing_msgpack_member():
    data = make_tar([("k1.msgpack", payload(1)), ("k2.json", b"{}")])
    with pytest.raises(ShardError, match="Sample missing 'msgpack'.*mem://t.tar.*'k2'"):
        samples(data)


def test_duplicate_member():
    data = make_tar([("k.msgpack", payload(1)), ("k.msgpack", payload(2))])
    with pytest.raises(ShardError, match="two 'msgpack'"):
        samples(data)


def test_malformed_pax():
    data = bytearray(make_tar([("x" * 120 + ".msgpack", payload(1))], tarfile.PAX_FORMAT))
    assert data[156:157] == b"x"
    data[512:514] = b"99"  # record length now points past the header data
    with pytest.raises(ShardError, match="pax"):
        members(bytes(data))


def test_many_members_constant_state():
    """Thousands of members stream through without the reader keeping them."""
    ms = [(f"k{i}.msgpack", b"x") for i in range(5000)]
    n = sum(1 for _ in iter_members(io.BytesIO(encode(ms)), "t"))
    assert n == 5000


# ------------------------------------------------------------------ openers / verify


def test_open_url_forms(tmp_path):
    p = tmp_path / "a b.tar"
    p.write_bytes(b"hello")
    assert open_url(str(p)).read() == b"hello"
    assert open_url(p.as_uri()).read() == b"hello"  # file:///...a%20b.tar
    with pytest.raises(FileNotFoundError):
        open_url(str(tmp_path / "missing.tar"))
    with pytest.raises(StoreError, match="pass an opener"):
        open_url("gopher://x/y.tar")
    with pytest.raises(StoreError, match="no opener for s3://"):
        open_url("s3://bucket/y.tar")  # no import-time registry: remote schemes need an opener object


def test_openers_are_explicit_objects_not_a_registry(tmp_path):
    assert not hasattr(reader_mod, "register_opener") and not hasattr(reader_mod, "_OPENERS")
    p = tmp_path / "x.tar"
    p.write_bytes(b"local")
    assert isinstance(LocalOpener(), ShardOpener) and LocalOpener()(str(p)).read() == b"local"
    wrapped = as_opener(lambda url: io.BytesIO(url.encode()))
    assert isinstance(wrapped, FunctionOpener) and wrapped.open("memtest://abc").read() == b"memtest://abc"
    local = LocalOpener()
    assert as_opener(local) is local and as_opener(None) == LocalOpener()
    with pytest.raises(TypeError, match="must have .open"):
        as_opener(42)


def test_verify_stops_at_the_recorded_size(tmp_path):
    data = b"x" * 1000
    p = tmp_path / "a.tar"
    p.write_bytes(data + b"trailing garbage")
    sha = hashlib.sha256(data).hexdigest()
    reads: list[int] = []

    class Counting(io.BytesIO):
        def read(self, n=-1):
            out = super().read(n)
            reads.append(len(out))
            return out

    opener = lambda url: Counting(p.read_bytes())  # noqa: E731
    assert verify_shards([str(p)], {str(p): sha}, opener=opener, sizes={str(p): 1000}) == {str(p): "mismatch"}
    assert sum(reads) == 1001  # the recorded size plus one byte to see that it is overlong
    p.write_bytes(data)
    assert verify_shards([str(p)], {str(p): sha}, sizes={str(p): 1000}) == {str(p): "ok"}


def test_verify_shards(tmp_path):
    good = tmp_path / "good.tar"
    good.write_bytes(b"abc")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"abd")
    sha = hashlib.sha256(b"abc").hexdigest()
    urls = [str(good), str(bad), str(tmp_path / "gone.tar"), str(tmp_path / "nochecksum.tar"), "gopher://x/y.tar"]
    checks = {urls[0]: sha, urls[1]: sha, urls[2]: sha, urls[4]: sha}
    assert verify_shards(urls, checks) == {
        urls[0]: "ok",
        urls[1]: "mismatch",
        urls[2]: "missing",
        urls[3]: "skipped",
        urls[4]: verify_shards([urls[4]], checks)[urls[4]],
    }
    assert verify_shards([urls[4]], checks)[urls[4]].startswith("error:")


def test_verify_with_store_opener():
    store = MemoryStore()
    with ShardWriter(store, "p") as w:
        w.write_payload(None, payload(1))
        r = w.close()
    assert verify_shards(list(r), r.checksums, opener=store.open_read) == {r[0]: "ok"}
    store.objects[r[0]] = store.objects[r[0]][:-1] + b"\1"
    assert verify_shards(list(r), r.checksums, opener=store.open_read) == {r[0]: "mismatch"}


def test_pax_size_overrides_header_size():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("k.msgpack")
        info.size = 5
        info.pax_headers = {"size": "5"}
        tf.addfile(info, io.BytesIO(b"hello"))
    data = buf.getvalue()
    assert data[156:157] == b"x"
    # zero the ustar size field of the real member: only the pax record says 5
    data = _with_size(data, b"%011o\0" % 0, at=1024)
    assert members(data) == [("k.msgpack", b"hello")]
