"""The memory-mapped shard index: the same samples as the streaming reader, or a hand-over to it."""

from __future__ import annotations

import io
import tarfile

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atdata_dagster.errors import ShardError
from atdata_dagster.shards.fastread import iter_payload_views, open_index, sample_key, scan_shard
from atdata_dagster.shards.reader import iter_samples
from atdata_dagster.shards.writer import TarStreamEncoder


def encode(members) -> bytes:
    out = []
    enc = TarStreamEncoder(out.append)
    for name, data in members:
        enc.add(name.encode(), data)
    enc.finish()
    return b"".join(bytes(x) for x in out)


def tarfile_bytes(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1.5  # a float mtime: tarfile writes a pax header, as atdata's writer does
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write(tmp_path, data: bytes, name: str = "s.tar"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def streamed(path: str) -> list[tuple[str, bytes]]:
    with open(path, "rb") as f:
        return list(iter_samples(f, path))


def mapped(path: str):
    with open(path, "rb", buffering=0) as f:
        return open_index(f, path)


def payloads_of(index) -> list[bytes]:
    return [bytes(v) for v in iter_payload_views(index)]


def members(sizes: list[int], prefix: str = "k") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i:05d}.msgpack", msgpack.packb({"i": i, "pad": b"x" * size})) for i, size in enumerate(sizes)]


def test_index_of_a_written_shard_lists_the_streamed_payloads_and_keys(tmp_path):
    path = write(tmp_path, encode(members([100] * 50 + [3000] * 20 + [7, 900, 20000])))
    index = mapped(path)
    assert index is not None and index.keys is None  # mapped, not copied through the stream parser
    expected = streamed(path)
    assert payloads_of(index) == [p for _, p in expected]
    assert [sample_key(index, i) for i in range(len(index))] == [k for k, _ in expected]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=0, max_size=80))
def test_any_mix_of_payload_sizes_is_indexed_exactly(tmp_path_factory, sizes):
    path = write(tmp_path_factory.mktemp("fr"), encode(members(sizes)))
    index = mapped(path)
    assert index is not None
    assert payloads_of(index) == [p for _, p in streamed(path)]


@pytest.mark.parametrize(
    "case",
    [
        "pax",  # python tarfile with pax headers (what atdata's webdataset writer produces)
        "dirs",  # keys with directories
        "extra-member",  # a sample with a second member (k.json)
        "upper-suffix",  # K.MSGPACK
    ],
)
def test_unusual_shards_go_to_the_stream_parser_and_read_the_same(tmp_path, case):
    base = members([10, 20, 30])
    if case == "pax":
        data = tarfile_bytes(base)
    elif case == "dirs":
        data = encode([(f"sub/dir/{n}", p) for n, p in base])
    elif case == "extra-member":
        data = encode([base[0], ("k00000.json", b"{}"), *base[1:]])
    else:
        data = encode([(n.replace(".msgpack", ".MSGPACK"), p) for n, p in base])
    path = write(tmp_path, data)
    if case != "dirs":  # a key with '/' is fine for the fast path when it is the only unusual thing
        assert mapped(path) is None
    with open(path, "rb") as f:
        index = scan_shard(f, path)
    expected = streamed(path)
    assert payloads_of(index) == [p for _, p in expected]
    assert [sample_key(index, i) for i in range(len(index))] == [k for k, _ in expected]


def _corrupt_checksum_of_member(data: bytes, member: int) -> bytes:
    pos, seen = 0, 0
    while True:
        size = int(data[pos + 124 : pos + 135], 8)
        if seen == member:
            out = bytearray(data)
            out[pos + 148 : pos + 154] = b"000001"
            return bytes(out)
        pos += 512 + size + (-size % 512)
        seen += 1


@pytest.mark.parametrize("member", [0, 17, 39])  # first, inside a run of equal sizes, last
def test_a_bad_header_checksum_anywhere_is_refused_like_the_stream_parser(tmp_path, member):
    data = _corrupt_checksum_of_member(encode(members([200] * 40)), member)
    path = write(tmp_path, data)
    assert mapped(path) is None
    with pytest.raises(ShardError, match="checksum"):
        with open(path, "rb") as f:
            scan_shard(f, path)


def test_truncated_and_duplicate_key_shards_raise_shard_errors(tmp_path):
    good = encode(members([300] * 12))
    cut = write(tmp_path, good[: len(good) - 1024 - 700], "cut.tar")
    assert mapped(cut) is None
    with pytest.raises(ShardError, match="truncated"):
        with open(cut, "rb") as f:
            scan_shard(f, cut)
    dup = write(tmp_path, encode([("a.msgpack", b"\x80"), ("a.msgpack", b"\x80")]), "dup.tar")
    assert mapped(dup) is None
    with pytest.raises(ShardError, match="two 'msgpack' members"):
        with open(dup, "rb") as f:
            scan_shard(f, dup)


def test_streams_that_cannot_be_mapped_are_indexed_through_the_parser():
    data = encode(members([5, 6, 7]))
    assert open_index(io.BytesIO(data), "mem") is None
    index = scan_shard(io.BytesIO(data), "mem")
    assert payloads_of(index) == [p for _, p in iter_samples(io.BytesIO(data), "mem")]
    assert index.keys == ["k00000", "k00001", "k00002"]


def _resident_kib(path: str) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip().endswith(path)
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


def test_opening_a_shard_leaves_none_of_its_pages_resident_in_this_process(tmp_path):
    import os

    from atdata_dagster.shards.fastread import FAULT_AROUND
    from atdata_dagster.shards.writer import TarStreamEncoder

    path = str(tmp_path / "big.tar")
    with open(path, "wb") as f:  # 200 samples of 40 KiB: a header every ten pages
        enc = TarStreamEncoder(f.write)
        for i in range(200):
            enc.add(b"%010d.msgpack" % i, msgpack.packb({"x": os.urandom(40 << 10)}))
        enc.finish()
    with open(path, "rb") as f:
        index = open_index(f, path)
        assert index is not None and len(index) == 200
        assert _resident_kib(path) * 1024 < FAULT_AROUND  # the scan's pages were handed back
        assert msgpack.unpackb(bytes(index.payload(150)))["x"] != b""  # and the map still reads
