"""Streaming WebDataset shard writer: samples -> ``<key>.msgpack`` tar members -> a store.

The tar format is written by hand (ustar, deterministic headers) instead of through
``tarfile``/``webdataset.TarWriter``: ``tarfile`` keeps a ``TarInfo`` per member for
the life of the archive (~400 bytes per sample), ours keeps nothing per member, hashes
the bytes (SHA-256) as they stream out in large chunks, and produces byte-identical
shards for identical samples (mode 0o444, uid/gid 0, uname/gname ``bigdata``, mtime 0).
Readers (stdlib ``tarfile``, ``webdataset``, atdata) see ordinary tar files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import time
from typing import Any, Callable, Iterable, Iterator, Protocol

from ..errors import EmptyDatasetError, InvalidNameError, NotPackableError, SampleError
from .manifest import ManifestBuilder
from .sinks import BackgroundCommitSink, ShardInfo, ShardSink, ShardTarget, ShardWriteResult

__all__ = [
    "ShardWriter",
    "TarStreamEncoder",
    "copy_dataset_to_store",
    "validate_sample_key",
    "write_all",
    "write_samples_to_store",
]

BLOCK = 512
#: Bytes buffered before they are hashed and handed to the sink.
CHUNK_SIZE = 1 << 20
#: Longest key accepted for newly written samples (``<key>.msgpack`` fits a ustar name).
MAX_KEY_LENGTH = 64
#: ``progress(samples, bytes)`` is called at most this often (seconds), and at the end.
PROGRESS_INTERVAL = 2.0

_END_OF_ARCHIVE = bytes(2 * BLOCK)
_PADS = [bytes(i) for i in range(BLOCK)]


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


# Fixed parts of every header (see POSIX ustar): only name, size, prefix and checksum vary.
_MID = _octal(0o444, 8) + _octal(0, 8) + _octal(0, 8)  # mode, uid, gid   [100:124]
_MTIME = _octal(0, 12)  # [136:148]
_TAIL_HEAD = (
    b"0"  # typeflag: regular file               [156]
    + bytes(100)  # linkname                      [157:257]
    + b"ustar\x0000"  # magic + version           [257:265]
    + b"bigdata".ljust(32, b"\0")  # uname        [265:297]
    + b"bigdata".ljust(32, b"\0")  # gname        [297:329]
    + _octal(0, 8)  # devmajor                    [329:337]
    + _octal(0, 8)  # devminor                    [337:345]
)
_NO_PREFIX = bytes(155)  # prefix                 [345:500]
_TAIL_PAD = bytes(12)  # [500:512]
_CONST_SUM = sum(_MID) + sum(_MTIME) + 8 * 0x20 + sum(_TAIL_HEAD)
_NAME_SUFFIX = b".msgpack"
_MAX_OCTAL_SIZE = 8**11 - 1


def _size_field(size: int) -> bytes:
    if size <= _MAX_OCTAL_SIZE:
        return b"%011o\0" % size
    # GNU base-256 extension (payloads >= 8 GiB); tarfile and GNU tar read it.
    return b"\x80" + size.to_bytes(11, "big")


def _split_ustar_name(name: bytes) -> tuple[bytes, bytes]:
    """Split a long member name into (prefix, name) for the ustar header."""
    if len(name) <= 100:
        return b"", name
    # prefix <= 155 bytes, name <= 100 bytes, split at a '/': the rightmost usable '/'
    # gives the shortest name part.
    cut = name.rfind(b"/", 0, 156)
    if cut <= 0 or not 0 < len(name) - cut - 1 <= 100:
        raise InvalidNameError(
            f"tar member name {name.decode('utf-8', 'replace')!r} is too long for a ustar header; "
            "use keys of at most 64 characters"
        )
    return name[:cut], name[cut + 1 :]


_TAIL = _TAIL_HEAD + _NO_PREFIX + _TAIL_PAD
# name (NUL-padded by struct), mode/uid/gid, size, mtime, checksum, the rest
_pack_header = struct.Struct("100s24s12s12s8s356s").pack
# payload size -> (size field, checksum of the fixed fields + size field, padding, member size)
_size_fields: dict[int, tuple[bytes, int, bytes, int]] = {}


def _size_info(size: int) -> tuple[bytes, int, bytes, int]:
    info = _size_fields.get(size)
    if info is None:
        field = _size_field(size)
        pad = -size % BLOCK
        info = (field, _CONST_SUM + sum(field), _PADS[pad], BLOCK + size + pad)
        if len(_size_fields) < 65536:  # samples of one type repeat a few sizes
            _size_fields[size] = info
    return info


def member_header(name: bytes, size: int) -> bytes:
    """The deterministic 512-byte ustar header of a regular file member."""
    field, chk, _, _ = _size_info(size)
    if len(name) <= 100:
        return _pack_header(name, _MID, field, _MTIME, b"%06o\0 " % (chk + sum(name)), _TAIL)
    prefix, short = _split_ustar_name(name)
    chk += sum(short) + sum(prefix)
    return b"".join(
        (short.ljust(100, b"\0"), _MID, field, _MTIME, b"%06o\0 " % chk, _TAIL_HEAD, prefix.ljust(155, b"\0"), _TAIL_PAD)
    )


_KEY_RULE = (
    "keys must be 1-64 ASCII characters without '.', '/' or NUL "
    "(webdataset splits member names at the first '.')"
)


def validate_sample_key(key: str) -> str:
    """Check a key for a newly written sample (InvalidNameError naming the rule)."""
    if (
        isinstance(key, str)
        and 0 < len(key) <= MAX_KEY_LENGTH
        and key.isascii()
        and "." not in key
        and "/" not in key
        and "\0" not in key
    ):
        return key
    raise InvalidNameError(f"invalid sample key {key!r}: {_KEY_RULE}")


def _validate_copied_key(key: str) -> str:
    """Keys copied from existing shards may contain '/' (directories inside the tar)."""
    if isinstance(key, str) and key and "." not in key and "\0" not in key and not key.startswith("/"):
        segments = key.split("/")
        if all(s not in ("", "..") for s in segments) and len(key.encode("utf-8")) <= 240:
            return key
    raise InvalidNameError(
        f"invalid sample key {key!r} in the source dataset: keys must be relative '/'-separated "
        "names without '.', '..' segments or NUL, at most 240 bytes"
    )


class TarStreamEncoder:
    """Encode ``(name, payload)`` members into a tar byte stream, hashing as it goes.

    Holds one output buffer and a running SHA-256; no per-member state. ``emit`` is
    called with chunks of about ``chunk_size`` bytes (large payloads are passed
    through without copying).
    """

    __slots__ = ("_emit", "_parts", "_chunk", "_sha", "size", "_flush_at")

    def __init__(self, emit: Callable[[Any], None], chunk_size: int | None = None):
        self._emit = emit
        self._parts: list[Any] = []  # pending pieces, joined once per chunk
        self._chunk = chunk_size or CHUNK_SIZE
        self._sha = hashlib.sha256()
        self.size = 0  # bytes encoded so far (the offset of the next member header)
        self._flush_at = self._chunk  # flush once self.size reaches this

    @staticmethod
    def member_size(payload_len: int) -> int:
        """Bytes a member with a payload of this length occupies (header + padded data)."""
        return BLOCK + ((payload_len + BLOCK - 1) & ~(BLOCK - 1))

    def add(self, name: bytes, payload: bytes | bytearray | memoryview) -> int:
        """Append one regular-file member (``payload``: bytes or a byte-format view); return its offset."""
        offset = self.size
        n = len(payload)
        info = _size_fields.get(n) or _size_info(n)
        # member_header() inlined for the common case: this runs once per sample.
        if len(name) <= 100:
            header = _pack_header(name, _MID, info[0], _MTIME, b"%06o\0 " % (info[1] + sum(name)), _TAIL)
        else:
            header = member_header(name, n)
        parts = self._parts
        parts.append(header)
        if n >= self._chunk:  # large payloads go to the sink without being copied
            self._flush(offset + BLOCK)
            self._sha.update(payload)
            self._emit(payload)
        else:
            parts.append(payload)
        parts.append(info[2])
        self.size = end = offset + info[3]
        if end >= self._flush_at:
            self._flush(end)
        return offset

    def _flush(self, upto: int) -> None:
        parts = self._parts
        if parts:
            data = b"".join(parts)
            parts.clear()
            self._sha.update(data)
            self._emit(data)
        self._flush_at = upto + self._chunk

    def finish(self) -> str:
        """Write the two end-of-archive blocks, flush, and return the SHA-256 hex."""
        self._parts.append(_END_OF_ARCHIVE)
        self.size += len(_END_OF_ARCHIVE)
        self._flush(self.size)
        return self._sha.hexdigest()


def _payload_of(sample: Any, position: int) -> tuple[str | None, bytes]:
    """(key or None, msgpack payload) of one input sample."""
    packed = getattr(type(sample), "packed", None)
    if packed is not None:
        try:
            payload = sample.packed
        except (SampleError, NotPackableError) as exc:
            raise type(exc)(f"sample {position}: {exc}") from exc
        except Exception as exc:
            raise SampleError(
                f"sample {position} ({type(sample).__name__}) could not be serialized: {exc}; "
                "check that every field value matches its declared type"
            ) from exc
        return getattr(sample, "__key__", None), payload
    if isinstance(sample, dict) and isinstance(sample.get("msgpack"), (bytes, bytearray, memoryview)):
        # webdataset-style raw sample {"__key__": ..., "msgpack": payload}
        return sample.get("__key__"), sample["msgpack"]
    raise NotPackableError(
        f"sample {position} is a {type(sample).__name__}, which is not packable: decorate its class "
        "with @packable, wrap dicts in DictSample(...), or pass {'__key__': k, 'msgpack': payload}"
    )


class ShardWriter:
    """Stream samples into WebDataset shards committed to a store (a :class:`~atdata_dagster.shards.sinks.ShardTarget`).

    Each sample becomes one tar member ``<key>.msgpack``. A shard is finished and
    committed (``sink.commit(index, sha256)``) when it holds ``maxcount`` samples, or
    when adding the next member would make the finished tar larger than ``maxsize``
    bytes: ``maxsize`` is a true upper bound on the file size, except that a single
    sample larger than it gets a shard of its own. ``None`` disables a limit.

    Samples that carry no key (``__key__``) get the zero-padded global sample index
    ``f"{i:010d}"`` (``0000000000``, ``0000000001``, ...), so the same samples always
    give byte-identical shards, the same SHA-256 and so the same content-derived URLs.

    If anything fails (or :meth:`abort` is called, or the ``with`` block raises), the
    shard being written is discarded. Shards already committed by this writer stay in
    the store; nothing references them, and ``atdata-dagster gc`` removes them.
    """

    def __init__(
        self,
        store: ShardTarget,
        prefix: str,
        *,
        maxcount: int | None = 10000,
        maxsize: int | None = None,
        manifest: bool = False,
        sample_type: type | None = None,
        progress: Callable[[int, int], None] | None = None,
        provenance: dict | None = None,
        _copy_keys: bool = False,
    ):
        if maxcount is not None and (not isinstance(maxcount, int) or maxcount < 1):
            raise ValueError(f"maxcount must be a positive integer or None, got {maxcount!r}")
        if maxsize is not None and (not isinstance(maxsize, int) or maxsize < 1):
            raise ValueError(f"maxsize must be a positive integer (bytes) or None, got {maxsize!r}")
        self.store = store
        self.prefix = prefix
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.manifest = manifest
        self.sample_type = sample_type
        self.provenance = provenance
        self._progress = progress
        self._check_key = _validate_copied_key if _copy_keys else validate_sample_key
        self._shards: list[ShardInfo] = []
        self._sink: ShardSink | None = None
        # (sink, shard position, manifest builder or None) of shards committing in the background
        self._pending: list[tuple[Any, int, Any]] = []
        self._created: list[str] = []  # final URLs (shards, then their sidecars) this writer created
        self._enc: TarStreamEncoder | None = None
        self._builder: ManifestBuilder | None = None
        self._count = 0  # samples in the current shard
        self._total = 0  # samples written overall
        self._done_bytes = 0  # bytes of committed shards
        self._prev_name: bytes | None = None
        self._result: ShardWriteResult | None = None
        self._closed = False
        self._last_progress = time.monotonic()

    # ------------------------------------------------------------------ API
    @property
    def num_samples(self) -> int:
        return self._total

    @property
    def bytes_written(self) -> int:
        return self._done_bytes + (self._enc.size if self._enc else 0)

    def write_sample(self, sample: Any) -> None:
        """Serialize one packable sample (``.packed``) and append it."""
        key, payload = _payload_of(sample, self._total)
        if self.sample_type is None and hasattr(type(sample), "packed"):
            self.sample_type = type(sample)
        self.write_payload(key, payload)

    def write_payload(self, key: str | None, payload: bytes | bytearray | memoryview) -> None:
        """Append one already-serialized msgpack payload under ``key`` (``None``: index key)."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed; create a new writer to write more samples")
        try:
            if key is None:
                name = b"%010d.msgpack" % self._total
            else:
                name = self._check_key(key).encode("utf-8") + _NAME_SUFFIX
            if type(payload) is not bytes:
                payload = memoryview(payload).cast("B")
            self._append(name, payload)
        except BaseException:
            self.abort()
            raise

    def close(self, *, empty_shard: bool = False) -> ShardWriteResult:
        """Finish and commit the last shard; return every shard's URL and checksum.

        With ``empty_shard`` a writer that was given no sample commits one valid, empty tar
        shard (an opted-in empty dataset), so the entry still lists a checksummed shard.
        """
        if self._result is not None:
            return self._result
        if self._closed:
            raise RuntimeError("ShardWriter was aborted; nothing to close")
        try:
            if empty_shard and not self._total and not self._shards:
                self._open_shard()
                self._finish_shard()
            if self._count:
                self._finish_shard()
            self._settle(block=True)  # every shard durable before anyone records the URLs
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._report(force=True)
        self._result = ShardWriteResult(self._shards)
        return self._result

    def abort(self) -> None:
        """Discard the shard being written (committed shards are left for gc)."""
        self._closed = True
        sink, self._sink, self._enc = self._sink, None, None
        pending, self._pending = self._pending, []
        for s in ([sink] if sink is not None else []) + [p[0] for p in pending]:
            try:
                s.abort()  # a background commit is let finish: no thread outlives the writer
            except Exception:  # noqa: BLE001, S110 - abort must not mask the error being raised
                pass
        for s, position, _ in pending:  # finished in the background after all: it is this writer's
            if s.done() and position < len(self._shards):
                self._note_created(s, self._shards[position].url)

    def _note_created(self, sink: Any, url: str | None) -> None:
        if url is None or not getattr(sink, "created", True):
            return
        self._created.append(url)
        if url.endswith(".manifest.json"):  # the parquet sidecar is written next to it when pyarrow is there
            self._created.append(url[: -len(".json")] + ".parquet")

    @property
    def created_urls(self) -> list[str]:
        """Final URLs of the shards (and their sidecars) this writer put in the store itself.

        Not those whose identical content was already stored (content-addressed names are
        shared, so they may belong to other entries). After a failed write these are what
        it left behind: see ``Index.write``, which removes them.
        """
        return list(self._created)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    # ------------------------------------------------------------ internals
    def _append(self, name: bytes, payload: bytes | memoryview) -> None:
        n = len(payload)
        enc = self._enc
        if enc is not None and self.maxsize is not None and self._count:
            # Never exceed maxsize: finish the shard if this member would not fit.
            if enc.size + TarStreamEncoder.member_size(n) + len(_END_OF_ARCHIVE) > self.maxsize:
                self._finish_shard()
                enc = None
        if enc is None:
            enc = self._open_shard()
        elif name == self._prev_name:
            raise SampleError(
                f"sample {self._total} repeats the key {name[:-8].decode('utf-8')!r} of the sample before it; "
                "readers would merge them into one sample. Give samples distinct keys"
            )
        offset = enc.add(name, payload)
        if self._builder is not None:
            self._builder.add(name[:-8].decode("utf-8"), offset, n, payload)
        self._prev_name = name
        self._count += 1
        self._total += 1
        if self.maxcount is not None and self._count >= self.maxcount:
            self._finish_shard()
        elif self._progress is not None and not self._total & 0x3FF:
            self._report()

    def _emit(self, data: Any) -> None:
        assert self._sink is not None
        self._sink.write(data)
        if self._progress is not None:
            self._report()

    def _open_shard(self) -> TarStreamEncoder:
        self._sink = self.store.open_sink(self.prefix)
        self._enc = TarStreamEncoder(self._emit)
        self._count = 0
        self._prev_name = None
        if self.manifest:
            self._builder = ManifestBuilder.for_sample_type(self.sample_type, provenance=self.provenance)
        return self._enc

    def _finish_shard(self) -> None:
        enc, sink = self._enc, self._sink
        assert enc is not None and sink is not None
        sha = enc.finish()
        builder, self._builder = self._builder, None
        manifest_url = None
        if isinstance(sink, BackgroundCommitSink):  # the store finishes it in the background: encode on meanwhile
            url = sink.start_commit(len(self._shards), sha)
            self._pending.append((sink, len(self._shards), builder))
        else:
            url = sink.commit(len(self._shards), sha)
            self._note_created(sink, url)
            if builder is not None:
                manifest_url = builder.write(self.store, url)
                self._note_created(sink, manifest_url)
        self._sink = self._enc = None
        self._shards.append(ShardInfo(url=url, sha256=sha, size=enc.size, num_samples=self._count, manifest_url=manifest_url))
        self._done_bytes += enc.size
        self._count = 0
        self._settle(block=False)

    def _settle(self, block: bool) -> None:
        """Raise the error of a failed background commit; with ``block``, wait for all of them.

        A shard's manifest sidecar is stored only once the shard itself is durable, so
        nothing ever sits under a final name next to a shard that never appears.
        """
        while self._pending and (block or self._pending[0][0].done()):
            sink, position, builder = self._pending[0]
            sink.wait()
            info = self._shards[position]
            self._note_created(sink, info.url)
            if builder is not None:
                self._shards[position] = dataclasses.replace(info, manifest_url=builder.write(self.store, info.url))
                self._note_created(sink, self._shards[position].manifest_url)
            self._pending.pop(0)

    def _report(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self._progress(self._total, self.bytes_written)


def write_samples_to_store(
    samples: Iterable[Any],
    store: ShardTarget,
    prefix: str,
    *,
    maxcount: int | None = 10000,
    maxsize: int | None = None,
    manifest: bool = False,
    progress: Callable[[int, int], None] | None = None,
    sample_type: type | None = None,
) -> ShardWriteResult:
    """Stream ``samples`` into shards of ``store`` under ``prefix``; return URLs and checksums.

    Raises :class:`EmptyDatasetError` if ``samples`` is empty (nothing is written),
    :class:`NotPackableError`/:class:`SampleError` naming the position of a sample
    that cannot be serialized (the shard in progress is discarded).
    """
    with ShardWriter(
        store, prefix, maxcount=maxcount, maxsize=maxsize, manifest=manifest, sample_type=sample_type, progress=progress
    ) as writer:
        return write_all(writer, samples, where=f"under {prefix!r}")


def write_all(writer: ShardWriter, samples: Iterable[Any], *, where: str, allow_empty: bool = False) -> ShardWriteResult:
    """Write every sample and close ``writer``: the one empty-dataset check of the package.

    Raises :class:`EmptyDatasetError` (the writer aborted, nothing written) if ``samples``
    yields nothing, unless ``allow_empty`` (then one empty shard is committed);
    ``where`` says where the dataset was going (``under 'name'``, ``to 'x.tar'``).
    """
    for sample in samples:
        writer.write_sample(sample)
    if writer.num_samples == 0 and allow_empty:
        return writer.close(empty_shard=True)
    if writer.num_samples == 0:
        writer.abort()
        raise EmptyDatasetError(
            f"samples must be non-empty: nothing to write {where}; "
            "pass an iterable that yields at least one sample (a generator already consumed yields none)"
        )
    return writer.close()


class RawSamples(Protocol):
    """What :func:`copy_dataset_to_store` reads: a dataset's shards as raw ``(key, payload)`` pairs."""

    def list_shards(self) -> list[str]: ...

    def iter_raw(self, shards: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]: ...


def copy_dataset_to_store(
    ds: RawSamples,
    store: ShardTarget,
    *,
    prefix: str,
    maxcount: int | None = None,
    maxsize: int | None = None,
    manifest: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ShardWriteResult:
    """Copy a dataset's samples into ``store`` as raw ``(key, payload)`` pairs.

    Nothing is re-serialized and source keys are kept. With ``maxcount`` and
    ``maxsize`` both ``None`` every source shard becomes one destination shard;
    otherwise samples are re-sharded by the limits. Raises :class:`EmptyDatasetError`
    if the dataset has no samples.
    """
    keep_boundaries = maxcount is None and maxsize is None
    with ShardWriter(
        store,
        prefix,
        maxcount=maxcount,
        maxsize=maxsize,
        manifest=manifest,
        sample_type=getattr(ds, "sample_type", None),
        progress=progress,
        _copy_keys=True,
    ) as writer:
        if keep_boundaries:
            for url in ds.list_shards():
                for key, payload in ds.iter_raw(shards=[url]):
                    writer.write_payload(key, payload)
                if writer._count:
                    writer._finish_shard()
        else:
            for key, payload in ds.iter_raw():
                writer.write_payload(key, payload)
        if writer.num_samples == 0:
            writer.abort()
            raise EmptyDatasetError(
                f"dataset {getattr(ds, 'url', ds)!r} has no samples; nothing to copy under {prefix!r}"
            )
        return writer.close()
