"""Fast local shard reading: one pass over the tar headers of a memory-mapped shard.

:func:`scan_shard` maps a local shard and returns where every sample's msgpack payload
lies (two int64 arrays, offsets and sizes), so readers slice payloads straight out of
the map instead of copying them through a stream parser. The scan is a tight loop over
512-byte ustar headers; it still checks every header checksum and every member name. A
shard with anything unusual (pax or GNU headers, directories or links, members that are
not ``<key>.msgpack``, several members for one key, a truncated archive) is handed to the
careful parser in :mod:`.reader`, which either reads it or raises its usual
:class:`ShardError`; the fast path never accepts what the careful one would refuse.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator
from zlib import adler32

import numpy as np

from ..errors import ShardError
from .reader import BLOCK, iter_samples

__all__ = ["FAULT_AROUND", "ShardIndex", "iter_payload_views", "map_file", "open_index", "sample_key", "scan_shard"]

_ZERO = bytes(BLOCK)
_SUFFIX = b".msgpack"
#: Bytes a map must cover before pages already read are handed back to the kernel
#: (``madvise(MADV_DONTNEED)``): keeps resident memory bounded while walking big shards.
RELEASE_EVERY = 16 << 20
PAGE = mmap.PAGESIZE
#: What one page fault may map in (Linux's default ``fault_around_bytes``): a sample read
#: from a map costs at least this much resident memory until the pages are released.
FAULT_AROUND = 64 << 10


@dataclass
class ShardIndex:
    """Where each sample's payload lies inside one shard buffer."""

    url: str
    buffer: "mmap.mmap | bytes"  # an mmap, or bytes for a stream that could not be mapped
    offsets: np.ndarray  # int64 payload start per sample
    sizes: np.ndarray  # int64 payload length per sample
    keys: list[str] | None = None  # only when the careful parser produced them
    _spans: tuple | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.offsets)

    def payload(self, i: int) -> memoryview:
        """Sample ``i``'s msgpack payload, as a zero-copy view onto the buffer."""
        spans = self._spans
        if spans is None:  # plain lists and one view: a lookup is then two list reads and a slice
            spans = self._spans = (memoryview(self.buffer), self.offsets.tolist(), (self.offsets + self.sizes).tolist())
        view, starts, ends = spans
        return view[starts[i] : ends[i]]

    def views(self, start: int, stop: int) -> list[memoryview]:
        """Payloads ``start .. stop-1`` as zero-copy views onto the buffer."""
        view = memoryview(self.buffer)
        offs = self.offsets[start:stop]
        return [view[a:b] for a, b in zip(offs.tolist(), (offs + self.sizes[start:stop]).tolist())]

    def release(self) -> None:
        """Give the pages read so far back to the kernel (a map stays valid and re-reads on demand)."""
        buf = self.buffer
        if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            try:
                buf.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # pragma: no cover - closed map or unsupported
                pass


def map_file(stream: BinaryIO) -> mmap.mmap | None:
    """A read-only map of ``stream``'s file, or None when it is not a regular local file."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size < BLOCK:
        return None
    try:
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # pragma: no cover - e.g. a filesystem without mmap
        return None
    if hasattr(mmap, "MADV_SEQUENTIAL"):
        try:
            mm.madvise(mmap.MADV_SEQUENTIAL)
        except OSError:  # pragma: no cover
            pass
    return mm


_END = -1
_OCT11 = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_OCT6 = 8 ** np.arange(5, -1, -1, dtype=np.int64)
_SUFFIX_ARR = np.frombuffer(_SUFFIX, np.uint8)
_NAME_COLS = np.arange(100)
_MAX_ROWS = 1024  # headers checked per numpy pass


def _header_at(buf, pos: int, n: int, prev_name: bytes) -> tuple[int, bytes] | int | None:
    """(size, name) of the plain ``<key>.msgpack`` member at ``pos``; _END at the end marker; else None."""
    end = pos + BLOCK
    if end > n:
        return None  # truncated: let the careful parser explain it
    header = buf[pos:end]
    if header[156] != 48:  # typeflag '0'; anything else (pax, GNU, links, '\0') -> careful path
        return _END if header == _ZERO else None
    # checksum: the byte sum with the checksum field counted as spaces (adler32's low
    # half is 1 + sum for an ASCII header); non-ASCII headers go the careful way
    if not header.isascii():
        return None
    try:
        stored = int(header[148:154], 8)
        size = int(header[124:135], 8)
    except ValueError:
        return None
    if stored != (adler32(header) & 0xFFFF) - 1 - sum(header[148:156]) + 256:
        return None
    nul = header.find(0, 0, 100)
    name = header[: nul if nul >= 0 else 100]
    if header[345] or not name.endswith(_SUFFIX):  # a ustar prefix, or not a msgpack member
        return None
    base = name.rfind(b"/") + 1
    if (
        name.find(b".", base) != len(name) - 8  # key must hold no '.', basename not '.msgpack'
        or base == len(name) - 8
        or name[:1] == b"/"
        or b".." in name
        or name == prev_name
    ):
        return None
    if end + size + (-size % BLOCK) > n:
        return None
    return size, name


_HIGH_BITS = np.uint64(0x8080808080808080)


def _run_length(arr: np.ndarray, first: int, stride: int, rows: int, prev_name: bytes) -> tuple[int, np.ndarray]:
    """How many members from ``first`` on, every ``stride`` bytes, are plain msgpack members
    whose data fills exactly ``stride - 512`` bytes (and their sizes): the numpy twin of
    :func:`_header_at` for runs of equally padded samples. For the run, a name field must be
    NUL-padded (what every tar writer does); anything else ends the run."""
    h = np.ascontiguousarray(
        np.lib.stride_tricks.as_strided(arr[first:], shape=(rows, BLOCK), strides=(stride, 1), writeable=False)
    )
    ok = (np.bitwise_or.reduce(h.view(np.uint64), axis=1) & _HIGH_BITS) == 0  # ASCII
    ok &= (h[:, 156] == 48) & (h[:, 345] == 0) & (h[:, 135] == 0) & (h[:, 154] == 0)
    digits = h[:, 124:135].astype(np.int64) - 48
    chk = h[:, 148:154].astype(np.int64) - 48
    ok &= ((digits >= 0) & (digits < 8)).all(1) & ((chk >= 0) & (chk < 8)).all(1)
    sizes = digits @ _OCT11
    ok &= (sizes + 511) // BLOCK * BLOCK == stride - BLOCK
    ok &= chk @ _OCT6 == h.sum(1, dtype=np.int64) - h[:, 148:156].sum(1, dtype=np.int64) + 256
    names = h[:, :100]
    nul = (names == 0).argmax(1)
    ok &= (np.count_nonzero(names, axis=1) == nul) & (nul > 8)  # one name, NUL-padded after it
    ok &= (names[np.arange(rows)[:, None], nul[:, None] - 8 + np.arange(8)] == _SUFFIX_ARR).all(1)
    ok &= (names == 46).sum(1) == 1  # the suffix's dot only
    ok &= ~(names == 47).any(1)  # no directories in a run (the scalar path handles them)
    prev = np.zeros(100, np.uint8)
    prev[: len(prev_name)] = np.frombuffer(prev_name, np.uint8)[:100]
    ok[0] &= bool((names[0] != prev).any())
    if rows > 1:
        ok[1:] &= (names[1:] != names[:-1]).any(1)
    bad = np.flatnonzero(~ok)
    count = int(bad[0]) if len(bad) else rows
    return count, sizes[:count]


def _fast_scan(buf, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(payload offsets, sizes) if every member is a plain ustar ``<key>.msgpack`` file, else None.

    Members are parsed one by one until a run of equally padded members shows up; such
    runs (the usual case: samples of one type have near-equal sizes) are checked with
    numpy, many headers per pass.
    """
    arr = np.frombuffer(buf, np.uint8)
    offsets: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    one_off: list[int] = []
    one_size: list[int] = []
    pos = 0
    prev_name = b""
    scalar_left = 0
    while True:
        got = _header_at(buf, pos, n, prev_name)
        if got is None:
            return None
        if got == _END:
            break
        size, prev_name = got  # type: ignore[misc]
        one_off.append(pos + BLOCK)
        one_size.append(size)
        stride = BLOCK + size + (-size % BLOCK)
        pos += stride
        if scalar_left:
            scalar_left -= 1
            continue
        rows = min((n - pos - BLOCK) // stride + 1 if n - pos >= BLOCK else 0, _MAX_ROWS)
        if rows < 8:
            continue
        count, run_sizes = _run_length(arr, pos, stride, rows, prev_name)
        if count:
            offsets.append(np.array(one_off, np.int64))
            sizes.append(np.array(one_size, np.int64))
            one_off, one_size = [], []
            offsets.append(pos + BLOCK + stride * np.arange(count, dtype=np.int64))
            sizes.append(run_sizes)
            last = pos + stride * (count - 1)
            nul = buf.find(b"\0", last, last + 100)
            prev_name = buf[last : nul if nul >= 0 else last + 100]
            pos += stride * count
        if count < 8:
            scalar_left = 32  # sizes vary here: parse one by one for a while
    offsets.append(np.array(one_off, np.int64))
    sizes.append(np.array(one_size, np.int64))
    return np.concatenate(offsets), np.concatenate(sizes)


def open_index(stream: BinaryIO, url: str = "<stream>") -> ShardIndex | None:
    """:func:`scan_shard` for a local regular file whose members are all plain; else None.

    None means: read this stream with the streaming parser (it is remote, or unusual).
    """
    mm = map_file(stream)
    if mm is None:
        return None
    found = _fast_scan(mm, len(mm))
    if found is None:
        mm.close()
        stream.seek(0)
        return None
    offsets, sizes = found
    index = ShardIndex(url, mm, offsets, sizes)
    # The scan touched one header per sample, and the kernel maps the pages around each
    # fault too (fault-around): for samples of tens of KiB that is the whole file. Hand
    # them back now (they stay in the page cache), so opening many shards at once, as a
    # global shuffle does, does not count every shard's bytes as this process's memory.
    index.release()
    return index


def scan_shard(stream: BinaryIO, url: str = "<stream>") -> ShardIndex:
    """Index one shard's samples: payload offsets and sizes inside a buffer.

    A local regular file is memory-mapped and scanned in place; any other stream is
    read through the careful parser (payloads copied into one buffer). Either way the
    result lists exactly the samples :func:`~.reader.iter_samples` yields, in order.
    """
    index = open_index(stream, url)
    return index if index is not None else _careful_index(stream, url)


def _careful_index(stream: BinaryIO, url: str) -> ShardIndex:
    keys: list[str] = []
    parts: list[bytes] = []
    sizes: list[int] = []
    for key, payload in iter_samples(stream, url):
        keys.append(key)
        parts.append(payload)
        sizes.append(len(payload))
    size_arr = np.array(sizes, np.int64)
    offsets = np.zeros(len(sizes), np.int64)
    if len(sizes) > 1:
        np.cumsum(size_arr[:-1], out=offsets[1:])
    return ShardIndex(url, b"".join(parts), offsets, size_arr, keys)


def iter_payload_views(index: ShardIndex, chunk: int = 1024) -> Iterator[memoryview]:
    """Every payload of ``index`` in order, as views; releases pages as it goes."""
    released = 0
    for start in range(0, len(index), chunk):
        yield from index.views(start, start + chunk)
        end = int(index.offsets[min(start + chunk, len(index)) - 1])
        if end - released > RELEASE_EVERY:
            index.release()
            released = end


def sample_key(index: ShardIndex, i: int) -> str:
    """Sample ``i``'s key (for error messages): read back from its tar header."""
    if index.keys is not None:
        return index.keys[i]
    off = int(index.offsets[i]) - BLOCK
    if off < 0:
        raise ShardError(f"shard {index.url}: no sample {i}")
    header = bytes(memoryview(index.buffer)[off : off + 100])
    name = header.split(b"\0", 1)[0].decode("utf-8", "replace")
    return name[: -len(".msgpack")] if name.endswith(".msgpack") else name
