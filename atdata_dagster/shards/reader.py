"""Streaming shard reader: tar members and WebDataset samples, without ``tarfile``.

``tarfile`` keeps a ``TarInfo`` for every member it has seen; this parser keeps only
the current member, reads the stream in large chunks, and rejects hostile input
(truncation, bad header checksums, absolute or ``..`` member names, absurd sizes)
with a :class:`ShardError` naming the URL and the member. It understands ustar,
POSIX pax (``x`` and ``g`` headers: only ``path`` and ``size`` are kept, records and
global headers are counted and bounded), GNU long names (``L``)
and GNU base-256 sizes; directories, links and other special members are skipped.

URLs are opened by explicit :class:`ShardOpener` objects (no global registry):
:func:`open_url` / :class:`LocalOpener` read local paths and ``file://``; the
stores layer provides HTTP and S3 openers and the ``Index`` builds the routing
opener that carries each dataset's credentials.
"""

from __future__ import annotations

import hashlib
import os
from zlib import adler32
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from ..errors import CorruptShardError, NotFoundError, ShardError, StoreError

__all__ = [
    "verify_checksums",
    "iter_members",
    "iter_samples",
    "open_url",
    "as_opener",
    "FunctionOpener",
    "LocalOpener",
    "ShardOpener",
    "verify_shards",
    "sha256_stream",
    "READ_CHUNK",
    "MAX_MEMBER_SIZE",
]

#: Bytes requested from the stream per read.
READ_CHUNK = 1 << 20
#: Largest member accepted (msgpack payloads of several GiB are already unreasonable).
MAX_MEMBER_SIZE = 1 << 34
#: Largest pax header / GNU long name accepted.
MAX_META_SIZE = 1 << 20

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = frozenset((b"0", b"\0", b"7"))
_NO_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))  # links, devices, dirs, fifos
_USTAR_POSIX = b"ustar\x00"


def _parse_octal(field: bytes) -> int:
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    return int(text, 8)


def _parse_size(field: bytes) -> int:
    first = field[0]
    if first & 0x80:
        if first == 0xFF:
            raise ValueError("negative base-256 size")
        return int.from_bytes(bytes([first & 0x7F]) + field[1:], "big")
    return _parse_octal(field)


#: Most records one pax header may hold (real ones have a handful).
MAX_PAX_RECORDS = 4096
#: Most global ('g') pax headers one shard may hold (tar tools write at most one).
MAX_GLOBAL_PAX = 64
#: The only pax keywords kept; every other record is checked for framing and dropped, so
#: a header of a million tiny records costs no memory and global headers cannot pile up.
_PAX_KEYWORDS = (b"path", b"size")


def _parse_pax(data: bytes, url: str, offset: int) -> dict[str, str]:
    records: dict[str, str] = {}
    pos, n, count = 0, len(data), 0
    while pos < n:
        if data[pos] == 0:  # trailing NUL padding
            break
        count += 1
        if count > MAX_PAX_RECORDS:
            raise CorruptShardError(
                f"shard {url}: pax header at offset {offset} holds more than {MAX_PAX_RECORDS} records; "
                "the shard is corrupt or hostile"
            )
        sp = data.find(b" ", pos, pos + 21)
        try:
            length = int(data[pos:sp]) if sp > pos else -1
        except ValueError:
            length = -1
        end = pos + length
        if length <= 0 or end > n or data[end - 1 : end] != b"\n":
            raise CorruptShardError(f"shard {url}: malformed pax header at offset {offset}")
        eq = data.find(b"=", sp + 1, end)
        if eq < 0:
            raise CorruptShardError(f"shard {url}: malformed pax record at offset {offset}")
        keyword = data[sp + 1 : eq]
        if keyword in _PAX_KEYWORDS:
            try:
                records[keyword.decode("ascii")] = data[eq + 1 : end - 1].decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptShardError(f"shard {url}: pax record at offset {offset} is not UTF-8") from None
        pos = end
    return records


def _check_name(name: str, url: str, offset: int) -> None:
    if name.startswith("/") or ".." in name.split("/") or "\0" in name:
        raise CorruptShardError(
            f"shard {url}: member {name!r} at offset {offset} has an absolute or '..' name; "
            "refusing to read a tar that could escape its directory"
        )


def iter_members(stream: BinaryIO, url: str = "<stream>") -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for every regular file member of a tar stream, in order."""
    read = stream.read
    buf = b""
    pos = 0  # next unread byte in buf
    base = 0  # stream offset of buf[0]
    global_pax: dict[str, str] = {}
    global_count = 0
    local_pax: dict[str, str] | None = None
    longname: str | None = None
    member = "<start>"
    while True:
        if len(buf) - pos < BLOCK:
            rest = buf[pos:]
            base += pos
            pos = 0
            parts = [rest]
            have = len(rest)
            while have < BLOCK:
                chunk = read(READ_CHUNK)
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
            buf = b"".join(parts)
            if have < BLOCK:
                where = "is empty" if base == 0 and have == 0 else f"ends at byte {base + have}"
                raise CorruptShardError(
                    f"shard {url} is truncated: it {where} without an end-of-archive marker "
                    f"(last member {member!r}); re-copy or re-write the shard{_compressed_hint(buf, base)}"
                )
        offset = base + pos
        header = buf[pos : pos + BLOCK]
        pos += BLOCK
        if header == _ZERO_BLOCK:
            return
        # Header checksum: byte sum with the checksum field counted as spaces. For an
        # ASCII header the sum is < 65521, so adler32's low half (1 + sum) gives it
        # exactly in C; sum() over 512 bytes costs several microseconds per member.
        if header.isascii():
            total = (adler32(header) & 0xFFFF) - 1
        else:
            total = sum(header)
        try:
            stored = int(header[148:154], 8)
        except ValueError:
            try:
                stored = _parse_octal(header[148:156])
            except ValueError:
                stored = -1
        if stored != total - sum(header[148:156]) + 256:
            signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 256
            if stored != signed:
                raise CorruptShardError(
                    f"shard {url}: bad tar header checksum at offset {offset} "
                    f"(after member {member!r}); the shard is corrupt or not a tar file"
                    f"{_compressed_hint(header, offset)}"
                )
        typeflag = header[156:157]
        try:
            size = int(header[124:135], 8) if header[135] == 0 else _parse_size(header[124:136])
        except ValueError:
            try:
                size = _parse_size(header[124:136])
            except ValueError:
                raise CorruptShardError(f"shard {url}: unreadable size field in the header at offset {offset}") from None
        meta = typeflag in (b"x", b"g", b"L", b"K")
        if typeflag in _NO_DATA:
            size = 0
        elif not meta:
            pax = local_pax
            if pax is not None and "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise CorruptShardError(f"shard {url}: bad pax size at offset {offset}") from None
            elif "size" in global_pax:
                try:
                    size = int(global_pax["size"])
                except ValueError:
                    raise CorruptShardError(f"shard {url}: bad pax size at offset {offset}") from None
        limit = MAX_META_SIZE if meta else MAX_MEMBER_SIZE
        if size < 0 or size > limit:
            raise CorruptShardError(
                f"shard {url}: member at offset {offset} claims {size} bytes (limit {limit}); "
                "the shard is corrupt or hostile"
            )
        # -- the member's data
        padded = size + (-size % BLOCK)
        if len(buf) - pos >= padded:
            data = buf[pos : pos + size]
            pos += padded
        else:
            parts = [buf[pos:]]
            have = len(parts[0])
            base += len(buf)
            while have < padded:
                chunk = read(max(READ_CHUNK, min(padded - have, 1 << 24)))
                if not chunk:
                    raise CorruptShardError(
                        f"shard {url} is truncated: member at offset {offset} needs {size} bytes, "
                        f"only {max(0, have)} are present; re-copy or re-write the shard"
                    )
                parts.append(chunk)
                have += len(chunk)
                base += len(chunk)
            joined = b"".join(parts)
            data = joined[:size]
            buf = joined[padded:]
            base -= len(buf)
            pos = 0
            del parts, joined
        # -- dispatch on the type
        if typeflag in _REGULAR:
            if longname is not None:
                name = longname
            elif local_pax is not None and "path" in local_pax:
                name = local_pax["path"]
            elif "path" in global_pax:
                name = global_pax["path"]
            else:
                name = _header_name(header, url, offset)
            longname = local_pax = None
            if name[:1] == "/" or ".." in name or "\0" in name:
                _check_name(name, url, offset)
            member = name
            yield name, data
        elif typeflag == b"x":
            local_pax = _parse_pax(data, url, offset)
        elif typeflag == b"g":
            global_count += 1
            if global_count > MAX_GLOBAL_PAX:
                raise CorruptShardError(
                    f"shard {url}: more than {MAX_GLOBAL_PAX} global pax headers (the last at offset "
                    f"{offset}); the shard is corrupt or hostile"
                )
            global_pax.update(_parse_pax(data, url, offset))
        elif typeflag == b"L":
            try:
                longname = data.split(b"\0", 1)[0].decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptShardError(f"shard {url}: GNU long name at offset {offset} is not UTF-8") from None
        elif typeflag == b"K":
            pass
        else:  # directories, links, devices, sparse and unknown members are skipped
            name = longname if longname is not None else _header_name(header, url, offset)
            longname = local_pax = None
            _check_name(name, url, offset)


_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def _compressed_hint(head: bytes, offset: int) -> str:
    """'; it is gzip-compressed ...' when a stream that should be a tar starts like a compressed file."""
    if offset != 0:
        return ""
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            return f"; it is {kind}-compressed: shards are uncompressed tar files, decompress it first"
    return ""


def _header_name(header: bytes, url: str, offset: int) -> str:
    end = header.find(b"\0", 0, 100)
    raw = header[: end if end >= 0 else 100]
    if header[345] and header[257:263] == _USTAR_POSIX:
        prefix = header[345:500].split(b"\0", 1)[0]
        raw = prefix + b"/" + raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptShardError(f"shard {url}: member name {raw!r} at offset {offset} is not UTF-8") from None


def iter_samples(stream: BinaryIO, url: str = "<stream>") -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, msgpack payload)`` per sample, grouping members as webdataset does.

    A member name splits at the first '.' of its basename into key and suffix
    (``sub/dir/k1.msgpack`` -> key ``sub/dir/k1``, suffix ``msgpack``; suffixes are
    lower-cased). Consecutive members with the same key form one sample; only the
    ``msgpack`` member is kept. A sample without one raises :class:`ShardError`.
    """
    key: str | None = None
    payload: bytes | None = None
    seen: list[str] = []  # suffixes of the current sample (usually one)
    for name, data in iter_members(stream, url):
        dot = name.find(".", name.rfind("/") + 1)
        if dot < 0 or name[dot - 1 : dot] in ("", "/"):
            continue  # no suffix, or a basename starting with '.': not a sample member
        k = name[:dot]
        suffix = name[dot + 1 :]
        if suffix != "msgpack":
            suffix = suffix.lower()
        if k != key:
            if key is not None:
                if payload is None:
                    raise _missing(url, key, seen)
                yield key, payload
            key, payload = k, None
            seen = [suffix]
        elif suffix in seen:
            raise CorruptShardError(f"shard {url}: sample {key!r} has two '{suffix}' members; keys must be unique")
        else:
            seen.append(suffix)
        if suffix == "msgpack":
            payload = data
    if key is not None:
        if payload is None:
            raise _missing(url, key, seen)
        yield key, payload


def _missing(url: str, key: str, seen: list[str]) -> ShardError:
    return CorruptShardError(
        f"Sample missing 'msgpack' key: shard {url}, sample {key!r} has members {sorted(seen)}; "
        "every sample needs a '<key>.msgpack' member (keys must not contain '.')"
    )


# ------------------------------------------------------------------ openers


@runtime_checkable
class ShardOpener(Protocol):
    """Opens shard URLs for reading: ``opener.open(url) -> BinaryIO``.

    Openers are explicit objects, built by whoever knows the credentials (the
    ``Index`` builds one per dataset; ``stores`` provides local, HTTP and S3 openers),
    and travel with a :class:`~atdata_dagster.dataset.Dataset` into worker processes,
    so they should pickle: hold configuration, not live connections. Openers are also
    callable (``opener(url)``), so any of them fits where a plain function is expected.
    """

    def open(self, url: str) -> BinaryIO: ...

    def __call__(self, url: str) -> BinaryIO: ...


Opener = Callable[[str], BinaryIO]


class LocalOpener:
    """Opens local paths and ``file://`` URLs; refuses every other scheme."""

    def open(self, url: str) -> BinaryIO:
        return open_url(url)

    __call__ = open

    def __eq__(self, other: object) -> bool:
        return type(other) is LocalOpener

    def __hash__(self) -> int:
        return hash(LocalOpener)

    def __repr__(self) -> str:
        return "LocalOpener()"


class FunctionOpener:
    """A :class:`ShardOpener` over a plain ``fn(url) -> BinaryIO`` (pickles only if ``fn`` does)."""

    def __init__(self, fn: Opener):
        self.fn = fn

    def open(self, url: str) -> BinaryIO:
        return self.fn(url)

    __call__ = open

    def __repr__(self) -> str:
        return f"FunctionOpener({getattr(self.fn, '__qualname__', self.fn)!r})"


def as_opener(opener: "ShardOpener | Opener | None", default: "ShardOpener | None" = None) -> ShardOpener:
    """``opener`` as a :class:`ShardOpener`: openers unchanged, plain callables wrapped, ``None`` -> ``default``."""
    if opener is None:
        return default if default is not None else LocalOpener()
    if isinstance(opener, ShardOpener):
        return opener
    if callable(opener):
        return FunctionOpener(opener)
    raise TypeError(f"a shard opener must have .open(url) or be callable, got {type(opener).__name__}")


def url_scheme(url: str) -> str:
    """The lower-cased scheme of a shard URL (``""`` for a plain path)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _local_path(url: str) -> str:
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StoreError(f"cannot open {url}: file:// URLs must name a local file (file:///path)")
        return unquote(parts.path)
    return os.path.expanduser(url)


def open_url(url: str) -> BinaryIO:
    """Open a local path or ``file://`` URL for reading.

    Other schemes need an opener object: ``index.dataset(...)`` builds one with the
    right credentials, ``atdata_dagster.stores.default_opener()`` reads local, ``http(s)://``
    and ``s3://`` (default AWS credential chain). A missing local file raises
    ``FileNotFoundError`` (an ``OSError``).
    """
    if not isinstance(url, str):
        url = os.fspath(url)
    scheme = url_scheme(url)
    if scheme in ("", "file"):
        return open(_local_path(url), "rb", buffering=0)
    raise StoreError(
        f"no opener for {scheme}:// URLs ({url}); read it through the Index that owns the store "
        "(index.dataset(...)), or pass an opener, e.g. atdata_dagster.stores.default_opener()"
    )


def sha256_stream(stream: BinaryIO, chunk: int = READ_CHUNK, *, limit: int | None = None) -> tuple[str, int]:
    """(SHA-256 hex, size) of everything readable from ``stream``.

    With ``limit``, reads at most ``limit + 1`` bytes: a returned size above ``limit``
    means the stream is longer than that (an endless body stops there).
    """
    h = hashlib.sha256()
    n = 0
    read = stream.read
    while True:
        want = chunk if limit is None else min(chunk, limit + 1 - n)
        if want <= 0:
            return h.hexdigest(), n
        data = read(want)
        if not data:
            return h.hexdigest(), n
        h.update(data)
        n += len(data)


def verify_shards(
    urls: Iterable[str],
    checksums: Mapping[str, str] | None,
    *,
    opener: "ShardOpener | Opener | None" = None,
    sizes: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Re-hash shards: URL -> ``"ok"``, ``"mismatch"``, ``"missing"``, ``"skipped"`` or ``"error:<msg>"``.

    ``"skipped"`` means no checksum is recorded for the URL (e.g. data indexed as-is);
    ``"missing"`` that the opener raised ``FileNotFoundError`` or ``NotFoundError``.
    ``sizes`` (URL -> recorded byte size) bounds each read: at most ``size + 1`` bytes
    are read, so a shard that is longer than recorded (or an endless HTTP body) is a
    ``"mismatch"`` after that many bytes instead of a read that never ends.
    """
    checksums = checksums or {}
    sizes = sizes or {}
    open_ = as_opener(opener).open
    out: dict[str, str] = {}
    for url in urls:
        expected = checksums.get(url)
        if not expected:
            out[url] = "skipped"
            continue
        limit = sizes.get(url)
        try:
            with open_(url) as f:
                digest, n = sha256_stream(f, limit=limit)
        except (FileNotFoundError, NotFoundError):
            out[url] = "missing"
            continue
        except Exception as exc:  # noqa: BLE001 - verify is a diagnostic: every failure is reported per shard, never raised
            out[url] = f"error:{exc}"
            continue
        if limit is not None and n != limit:
            out[url] = "mismatch"
            continue
        out[url] = "ok" if digest == expected.lower() else "mismatch"
    return out


def verify_checksums(entry: Any, *, opener: "ShardOpener | Opener | None" = None) -> dict[str, str]:
    """atdata 0.7's ``verify_checksums(entry)``: re-hash an entry's shards against ``metadata["checksums"]``.

    URL -> ``"ok"``, ``"mismatch"``, ``"skipped"`` (no checksum recorded; or, without an
    ``opener``, a remote URL, as atdata skips them) or ``"error:<message>"``. A missing
    shard is ``"missing"`` here, where atdata reports ``"error:[Errno 2] ..."``: code that
    checks for ``"ok"`` behaves the same. With ``opener`` (e.g. ``index.shard_opener(entry)``)
    remote shards are verified too; :meth:`Index.verify` does that for you.
    """
    checksums = (entry.metadata or {}).get("checksums") if isinstance(entry.metadata, dict) else None
    urls = list(entry.data_urls)
    if opener is None:
        remote = [u for u in urls if "://" in u and not u.startswith("file://")]
        result = verify_shards([u for u in urls if u not in remote], checksums, sizes=None)
        result.update({u: "skipped" for u in remote})
        return {u: result[u] for u in urls}
    return verify_shards(urls, checksums, opener=opener)

