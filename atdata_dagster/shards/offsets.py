"""Per-shard sample offsets: where each sample starts in its tar, for seeks and ranged reads.

Two sources, cheapest first:

- the shard's ``.manifest.parquet`` sidecar (written with ``manifest=True``): its
  ``__key__`` and ``__offset__`` columns are the keys and tar offsets, recorded at
  write time, so nothing of the shard is read;
- otherwise a header-only scan (:func:`scan_offsets`): it reads each 512-byte member
  header and seeks over the member's data, so a shard of large samples costs a few
  reads per sample, not its size.

A sample's offset is that of the first header belonging to it (a pax or GNU long-name
header before its first member counts), so parsing from that offset yields the sample
with its full name. :class:`ShardOffsets` adds the end of the last sample, which gives
every sample's byte range: ``[offsets[i], offsets[i + 1])``.
"""

from __future__ import annotations

import io
from bisect import bisect_right
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import CorruptShardError
from .reader import BLOCK, MAX_META_SIZE, _header_name, _parse_pax, _parse_size, iter_samples

__all__ = ["ShardOffsets", "scan_offsets", "offsets_from_manifest", "read_sample_bytes", "sample_at"]

_END = bytes(2 * BLOCK)


@dataclass(frozen=True)
class ShardOffsets:
    """Keys and start offsets of a shard's samples, in order, plus the end of the last one."""

    keys: tuple[str, ...]
    offsets: tuple[int, ...]
    end: int

    def __len__(self) -> int:
        return len(self.keys)

    def span(self, i: int) -> tuple[int, int]:
        """Byte range ``[start, stop)`` of sample ``i`` (its headers, data and padding)."""
        stop = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.end
        return self.offsets[i], stop


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        chunk = f.read(n - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _skip(f: BinaryIO, n: int, seekable: bool) -> None:
    if seekable:
        f.seek(n, io.SEEK_CUR)
        return
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            return
        n -= len(chunk)


def scan_offsets(f: BinaryIO, url: str = "<stream>") -> ShardOffsets:
    """Build a shard's offset index from its member headers only (data is seeked over).

    Groups members into samples as :func:`~atdata_dagster.shards.reader.iter_samples`
    does (key = name up to the first '.' of the basename). Raises :class:`ShardError`
    for a truncated or malformed tar.
    """
    try:
        seekable = f.seekable()
    except (AttributeError, ValueError):
        seekable = False
    keys: list[str] = []
    offsets: list[int] = []
    pos = 0
    first_meta: int | None = None  # offset of the pax/long-name header before the next member
    local_name: str | None = None
    while True:
        header = _read_exact(f, BLOCK)
        if len(header) < BLOCK:
            raise CorruptShardError(f"shard {url} is truncated at byte {pos + len(header)} (no end-of-archive marker)")
        if header == bytes(BLOCK):
            return ShardOffsets(tuple(keys), tuple(offsets), pos)
        try:
            size = _parse_size(header[124:136])
        except ValueError:
            raise CorruptShardError(f"shard {url}: unreadable size field in the header at offset {pos}") from None
        typeflag = header[156:157]
        start = pos
        pos += BLOCK
        padded = size + (-size % BLOCK)
        if typeflag in (b"x", b"L"):
            if size > MAX_META_SIZE:
                raise CorruptShardError(f"shard {url}: meta header at offset {start} claims {size} bytes")
            data = _read_exact(f, padded)[:size]
            if first_meta is None:
                first_meta = start
            if typeflag == b"L":
                local_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            else:
                local_name = _parse_pax(data, url, start).get("path", local_name)
            pos += padded
            continue
        if typeflag in (b"0", b"\0", b"7"):
            name = local_name if local_name is not None else _header_name(header, url, start)
            dot = name.find(".", name.rfind("/") + 1)
            if dot > 0 and name[dot - 1 : dot] != "/":
                key = name[:dot]
                if not keys or keys[-1] != key:
                    keys.append(key)
                    offsets.append(first_meta if first_meta is not None else start)
        first_meta = None
        local_name = None
        _skip(f, padded, seekable)
        pos += padded


def offsets_from_manifest(parquet: bytes, end: int | None = None) -> ShardOffsets | None:
    """Offsets from a ``.manifest.parquet`` sidecar's ``__key__``/``__offset__`` columns.

    ``end`` (the offset of the end-of-archive marker) is unknown to the manifest; when
    not given, the last sample's range is open-ended (``end = -1``) and
    :func:`read_sample_bytes` reads it to the end of the shard. ``None`` if the sidecar
    has no offset columns or cannot be parsed.
    """
    try:
        import pyarrow.parquet as pq  # lazy: pyarrow is heavy; only parquet manifests need it

        table = pq.read_table(io.BytesIO(parquet), columns=["__key__", "__offset__"], use_threads=False)  # see shards/query.py
    except Exception:  # noqa: BLE001 - an unreadable parquet sidecar means scanning the shard headers instead
        return None
    keys = tuple(str(k) for k in table.column("__key__").to_pylist())
    offsets = tuple(int(o) for o in table.column("__offset__").to_pylist())
    if any(b <= a for a, b in zip(offsets, offsets[1:])):
        return None  # not strictly increasing: not a sidecar of this shard
    return ShardOffsets(keys, offsets, -1 if end is None else end)


def read_sample_bytes(f: BinaryIO, offsets: ShardOffsets, i: int) -> bytes:
    """The bytes of sample ``i`` (from a seekable file), followed by an end-of-archive marker."""
    start, stop = offsets.span(i)
    f.seek(start)
    data = f.read() if stop < 0 else _read_exact(f, stop - start)
    return data + _END


def sample_at(data: bytes, url: str, key: str | None = None) -> tuple[str, bytes]:
    """``(key, payload)`` of the first sample in ``data`` (a sample's byte range + end marker)."""
    for k, payload in iter_samples(io.BytesIO(data), url):
        if key is not None and k != key:
            raise CorruptShardError(f"shard {url}: expected sample {key!r} at its recorded offset, found {k!r}; "
                             "the offset index is stale (the shard was rewritten?)")
        return k, payload
    raise CorruptShardError(f"shard {url}: no sample at the recorded offset")


def locate(cumulative: list[int], i: int) -> tuple[int, int]:
    """(shard, index within shard) of global sample ``i`` given cumulative sample counts ``[0, n0, n0+n1, ...]``."""
    s = bisect_right(cumulative, i) - 1
    return s, i - cumulative[s]


def iter_range(f: BinaryIO, url: str, offsets: ShardOffsets | None, start: int, stop: int) -> Iterator[tuple[str, bytes]]:
    """``(key, payload)`` of samples ``start .. stop-1`` of a shard open as ``f`` (seek if ``offsets``)."""
    skip = start
    if start > 0 and offsets is not None and start < len(offsets):
        f.seek(offsets.offsets[start])
        skip = 0
    n = stop - start
    if n <= 0:
        return
    for key, payload in iter_samples(f, url):
        if skip:
            skip -= 1
            continue
        yield key, payload
        n -= 1
        if n == 0:
            return
    raise CorruptShardError(f"shard {url} holds fewer samples than recorded (wanted samples {start}..{stop - 1})")
