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
from dataclasses import dataclass
from typing import BinaryIO, Iterator
from zlib import adler32

import numpy as np

from ..errors import ShardError
from .reader import BLOCK, iter_samples

__all__ = ["ShardIndex", "iter_payload_views", "map_file", "open_index", "sample_key", "scan_shard"]

_ZERO = bytes(BLOCK)
_SUFFIX = b".msgpack"
#: Bytes a map must cover before pages already read are handed back to the kernel
#: (``madvise(MADV_DONTNEED)``): keeps resident memory bounded while walking big shards.
RELEASE_EVERY = 32 << 20


@dataclass
class ShardIndex:
    """Where each sample's payload lies inside one shard buffer."""

    url: str
    buffer: object  # an mmap, or bytes for a stream that could not be mapped
    offsets: np.ndarray  # int64 payload start per sample
    sizes: np.ndarray  # int64 payload length per sample
    keys: list[str] | None = None  # only when the careful parser produced them

    def __len__(self) -> int:
        return len(self.offsets)

    def payload(self, i: int) -> memoryview:
        """Sample ``i``'s msgpack payload, as a zero-copy view onto the buffer."""
        off = int(self.offsets[i])
        return memoryview(self.buffer)[off : off + int(self.sizes[i])]

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


def _fast_scan(buf, n: int) -> tuple[list[int], list[int]] | None:
    """(payload offsets, sizes) if every member is a plain ustar ``<key>.msgpack`` file, else None."""
    offsets: list[int] = []
    sizes: list[int] = []
    add_off = offsets.append
    add_size = sizes.append
    pos = 0
    prev_name = b""
    while True:
        end = pos + BLOCK
        if end > n:
            return None  # truncated: let the careful parser explain it
        header = buf[pos:end]
        if header[156] != 48:  # typeflag '0'; anything else (pax, GNU, links, '\0') -> careful path
            if header == _ZERO:
                return offsets, sizes
            return None
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
        prev_name = name
        start = end
        pos = start + size + (-size % BLOCK)
        if pos > n:
            return None
        add_off(start)
        add_size(size)


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
    return ShardIndex(url, mm, np.array(offsets, np.int64), np.array(sizes, np.int64))


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


def iter_payload_views(index: ShardIndex) -> Iterator[memoryview]:
    """Every payload of ``index`` in order, as views; releases pages as it goes."""
    view = memoryview(index.buffer)
    released = 0
    for off, size in zip(index.offsets.tolist(), index.sizes.tolist()):
        yield view[off : off + size]
        if off - released > RELEASE_EVERY:
            index.release()
            released = off


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
