"""S3DataStore: shards streamed into any S3-compatible object store (AWS, Ceph RGW, ...).

Shards are streamed as multipart uploads to a temporary key and moved to their final,
content-derived key with a server-side copy at commit, so nothing is ever visible under a
final key before the whole shard is durable; failed uploads are aborted (or left for
:meth:`S3DataStore.abort_stale_uploads`). Layout (atdata-compatible)::

    s3://<bucket>/<store prefix>/<dataset prefix>/data--<id>--000000.tar

atdata uses a random uuid4 for ``<id>``; here it is ``sha256(shard)[:32]`` written in
uuid shape (8-4-4-4-12 hex), so the same content always gets the same key (and so the
same entry CID) and re-writing unchanged data is a no-op. The full SHA-256 is stored as
the ``x-amz-meta-sha256`` header of every shard.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping
from urllib.parse import quote, unquote

from botocore import UNSIGNED
from botocore import exceptions as bex
from botocore.config import Config

from ..errors import ConfigurationError, InvalidNameError, ShardError, StoreError
from ..redact import redact
from .base import OWNER_DIR, RESERVED_SEGMENT, DataStore, ShardSink, valid_owner_id
from .disk import validate_dataset_prefix

__all__ = ["AnonymousS3Opener", "DefaultChainS3Opener", "S3DataStore", "S3ObjectNotFoundError", "S3Opener",
           "S3ShardSink", "default_chain_opener", "open_s3_url", "parse_s3_url"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
COPY_PIECE = 5 * GiB  # CopyObject limit; larger objects are copied with UploadPartCopy
READ_BUFFER = 1 * MiB
#: Shards of one store completing (last parts, CompleteMultipartUpload, move) at once.
COMMITS_IN_FLIGHT = 2
TMP_DIR = ".tmp"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ID = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{8}|[0-9a-f]{16}|[0-9a-f]{64})"
# Own names, relative to the store prefix: always inside a dataset prefix (one or more
# segments), never at the store root. Shards are data--<id>--<n>.tar (the id uuid-shaped
# here, uuid4 in atdata); the .tmp segment is reserved for this store's uploads in progress.
_OWN_SHARD_RE = re.compile(rf"^(?:[^/]+/)+data--{_ID}--[0-9]{{6}}\.tar$")
_OWN_SIDECAR_RE = re.compile(rf"^(?:[^/]+/)+data--{_ID}--[0-9]{{6}}\.manifest\.(?:json|parquet)$")
_OWN_TMP_RE = re.compile(rf"^(?:[^/]+/)+{re.escape(TMP_DIR)}/[^/]+\.tar$")
_ENV_LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


# ---------------------------------------------------------------------- helpers
def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; raises StoreError for anything else.

    The key is everything after the bucket, verbatim: ``s3://`` URLs are not percent-encoded
    (atdata writes raw keys), so ``#``, ``?``, ``%`` and spaces are part of the key (a URL
    parser would cut the key at ``#`` or ``?`` and reach another object).
    """
    if not isinstance(url, str) or url[:5].lower() != "s3://":
        raise StoreError(f"not an S3 object URL: {url!r}; expected s3://<bucket>/<key>")
    bucket, _, key = url[5:].partition("/")
    key = key.lstrip("/")
    if not bucket or not key:
        raise StoreError(f"not an S3 object URL: {url!r}; expected s3://<bucket>/<key>")
    return bucket, key


def _shard_id(sha256: str) -> str:
    """The uuid-shaped id of a shard: the first 32 hex digits of its SHA-256."""
    h = sha256[:32]
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env``-style file (KEY=VALUE lines, optional ``export``, quotes, comments)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read S3 credentials file {str(path)!r}: {exc.strerror or exc}; "
            "pass an existing .env file or a dict of credentials"
        ) from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE_RE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def _validate_prefix(prefix: str) -> str:
    """The local store's prefix rules, plus: no ``.tmp`` segment (reserved for uploads in progress)."""
    prefix = validate_dataset_prefix(prefix)
    if TMP_DIR in prefix.split("/"):
        raise InvalidNameError(
            f"dataset prefix {prefix!r} has a {TMP_DIR!r} segment, which S3DataStore reserves for "
            "uploads in progress; choose another name"
        )
    return prefix


class S3ObjectNotFoundError(StoreError, FileNotFoundError):
    """An ``s3://`` object does not exist (a FileNotFoundError, as for local shards)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Uploads:
    """Per-store background threads: part uploads (at most ``limit`` in flight) and control calls.

    The writer thread blocks in :meth:`submit` while ``limit`` parts are queued or
    uploading, so memory stays bounded by about ``(limit + 2) * part_size`` per store
    however many sinks are open. Small control requests (create/abort a multipart upload,
    delete a temporary object) run on two separate threads so they never wait behind, or
    hold up, part uploads.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._commit_slots = threading.BoundedSemaphore(COMMITS_IN_FLIGHT)
        self._pool: ThreadPoolExecutor | None = None
        self._ctl: ThreadPoolExecutor | None = None
        self._cmt: ThreadPoolExecutor | None = None
        self._pending: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, fn, *args) -> Future:
        """Upload one part in the background (blocks while ``limit`` are in flight)."""
        return self._bounded(self._slots, "_pool", self.limit, "s3-upload", fn, args)

    def commit(self, fn, *args) -> Future:
        """Run a shard's completion (finish upload, move to the final key) in the background.

        At most ``COMMITS_IN_FLIGHT`` run at once; the writer blocks here beyond that, so a
        fast encoder never piles up unfinished shards (a small shard's pending PutObject
        holds its body, at most one part).
        """
        return self._bounded(self._commit_slots, "_cmt", COMMITS_IN_FLIGHT, "s3-commit", fn, args)

    def _bounded(self, slots: threading.BoundedSemaphore, attr: str, threads: int, name: str, fn, args) -> Future:
        slots.acquire()
        try:
            with self._lock:
                pool = getattr(self, attr)
                if pool is None:
                    pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
                    setattr(self, attr, pool)
                fut = pool.submit(fn, *args)
        except BaseException:
            slots.release()
            raise
        fut.add_done_callback(lambda _f: slots.release())
        return fut

    def control(self, fn, *args) -> Future:
        with self._lock:
            if self._ctl is None:
                self._ctl = ThreadPoolExecutor(2, thread_name_prefix="s3-control")
            fut = self._ctl.submit(fn, *args)
            self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    def flush(self) -> None:
        """Wait for every background control call submitted so far."""
        for fut in list(self._pending):
            try:
                fut.result()
            except BaseException:  # noqa: BLE001, S110 - waiting for pending uploads at shutdown; their errors were reported by their sinks
                pass

    def shutdown(self) -> None:
        with self._lock:  # commits first: they still use the other two pools
            cmt, self._cmt = self._cmt, None
        if cmt is not None:
            cmt.shutdown(wait=True)
        self.flush()
        with self._lock:
            pools, self._pool, self._ctl = (self._pool, self._ctl), None, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)


# ---------------------------------------------------------------------- reading
class _S3RawReader(io.RawIOBase):
    """GetObject body as a raw stream; resumes with a ranged GET if the connection drops."""

    MAX_RESUMES = 3

    def __init__(self, store: "S3DataStore", bucket: str, key: str):
        self._store, self._bucket, self._key = store, bucket, key
        self._pos = 0
        self._resumes = 0
        resp = store._call("GetObject", key, store.client.get_object, Bucket=bucket, Key=key, _bucket=bucket)
        self._etag = resp.get("ETag")
        self.size = int(resp.get("ContentLength", 0))
        self._body = resp["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._pos >= self.size:
            return 0
        while True:
            try:
                data = self._body.read(len(b))
                break
            except Exception as exc:  # noqa: BLE001 - any mid-body failure (reset, timeout, botocore) is retried from the current position
                if self._resumes >= self.MAX_RESUMES:
                    raise self._store._to_store_error(exc, "GetObject", self._key, bucket=self._bucket) from None
                self._resumes += 1
                log.debug("resuming s3://%s/%s at byte %d after %r", self._bucket, self._key, self._pos, exc)
                self._reopen()
        n = len(data)
        if n == 0 and self._pos < self.size:
            raise StoreError(
                f"s3://{self._bucket}/{self._key} ended after {self._pos} of {self.size} bytes "
                f"(endpoint {self._store.endpoint_display}); the object changed or the connection was cut, retry"
            )
        b[:n] = data
        self._pos += n
        return n

    def _reopen(self) -> None:
        try:
            self._body.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken body before reopening it; its error does not matter
            pass
        kw: dict[str, Any] = {"Range": f"bytes={self._pos}-"}
        if self._etag:
            kw["IfMatch"] = self._etag
        resp = self._store._call(
            "GetObject", self._key, self._store.client.get_object, Bucket=self._bucket, Key=self._key,
            _bucket=self._bucket, **kw,
        )
        self._body = resp["Body"]

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001, S110 - closing the body on close(); nothing useful to report
                pass
        super().close()


# ---------------------------------------------------------------------- sinks
class S3ShardSink:
    """Streams one shard into a multipart upload; see :meth:`S3DataStore.open_sink`.

    Bytes fill a ``part_size`` buffer; each full buffer is handed (without copying) to the
    store's upload threads as one UploadPart of a multipart upload to a temporary key,
    while the writer goes on filling the next. The multipart upload is created in the
    background once the first buffer is three quarters full, so a shard smaller than one
    part never becomes a multipart upload: it is sent with one PutObject at commit.

    :meth:`start_commit` returns the final URL at once and finishes the shard (last parts,
    CompleteMultipartUpload, server-side move) on a background thread, so the writer
    encodes the next shard meanwhile; :meth:`wait` blocks until the shard is durable and
    raises the commit's error. :meth:`commit` is both in one call.
    """

    def __init__(self, store: "S3DataStore", prefix: str):
        self._store = store
        self._prefix = prefix
        self._tmp_key = store._key(f"{prefix}/{TMP_DIR}/{uuid.uuid4()}.tar")
        self._part_size = store.part_size
        self._early = self._part_size * 3 // 4
        self._buf = bytearray(self._part_size)
        self._view = memoryview(self._buf)
        self._fill = 0
        self._size = 0
        self._create: Future | None = None  # -> UploadId
        self._tmp_object = False  # a completed upload sits at the temporary key
        self._abort_failed = False
        #: whether the commit put a new object under the final key (False: the content was already there)
        self.created = False
        self._parts: list[Future] = []
        self._error: BaseException | None = None
        self._done = False  # no more writes: committing, committed or aborted
        self._commit: Future | None = None  # the background completion started by start_commit()

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    # -- streaming
    def write(self, data: bytes | memoryview) -> None:
        if self._done:
            raise StoreError(f"shard sink for s3://{self._store.bucket}/{self._tmp_key} is already closed")
        self._raise_if_failed()
        mv = memoryview(data).cast("B")
        self._size += len(mv)
        while mv:
            n = min(len(mv), self._part_size - self._fill)
            self._view[self._fill:self._fill + n] = mv[:n]
            self._fill += n
            mv = mv[n:]
            if self._create is None and self._fill >= self._early:
                self._create = self._store._uploads.control(self._create_upload)
            if self._fill == self._part_size:
                self._ship_part()

    def _create_upload(self) -> str:
        st = self._store
        resp = st._call(
            "CreateMultipartUpload", self._tmp_key, st.client.create_multipart_upload,
            Bucket=st.bucket, Key=self._tmp_key, ContentType="application/x-tar",
        )
        return resp["UploadId"]

    def _ship_part(self) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StoreError(
                f"shard for s3://{self._store.bucket}/{self._prefix}/ exceeds {MAX_PARTS} parts of "
                f"{self._part_size} bytes; set a smaller maxsize on the writer or a larger part_size on the store"
            )
        if self._create is None:
            self._create = self._store._uploads.control(self._create_upload)
        # hand the buffer itself to the uploader (no copy) and start a fresh one
        self._view.release()
        body = self._buf
        if self._fill < self._part_size:  # the last part: shrink in place
            del body[self._fill:]
            self._buf = bytearray()
        else:
            self._buf = bytearray(self._part_size)
        self._view = memoryview(self._buf)
        self._fill = 0
        fut = self._store._uploads.submit(self._upload_part, number, body)
        fut.add_done_callback(self._on_part_done)
        self._parts.append(fut)

    def _upload_part(self, number: int, body) -> dict:
        st = self._store
        upload_id = self._create.result()  # type: ignore[union-attr]
        resp = st._call(
            "UploadPart", self._tmp_key, st.client.upload_part, Bucket=st.bucket, Key=self._tmp_key,
            UploadId=upload_id, PartNumber=number, Body=body,
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _on_part_done(self, fut: Future) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err = self._error
            self._discard()
            if not isinstance(err, StoreError):
                err = self._store._to_store_error(err, "UploadPart", self._tmp_key)
            raise self._hinted(err) from None

    def _hinted(self, err: StoreError) -> StoreError:
        """Say what is left behind when the upload could not be aborted (the server is gone)."""
        if not self._abort_failed:
            return err
        return type(err)(
            f"{err}. Nothing was committed; the unfinished multipart upload under "
            f"s3://{self._store.bucket}/{self._tmp_key} could not be aborted: run "
            "S3DataStore.abort_stale_uploads() (gc) once the endpoint is reachable"
        )

    # -- commit / abort
    def commit(self, index: int, sha256: str) -> str:
        """Make the shard durable under its final key and return its ``s3://`` URL."""
        url = self.start_commit(index, sha256)
        self.wait()
        return url

    def start_commit(self, index: int, sha256: str) -> str:
        """Return the final URL now and finish the shard in the background (see :meth:`wait`).

        Nothing is visible under the URL until the shard is complete; if completion fails,
        the upload is aborted and :meth:`wait` raises the error.
        """
        st = self._store
        if self._done:
            raise StoreError(f"shard sink for s3://{st.bucket}/{self._tmp_key} was already committed or aborted")
        try:
            if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
                raise ShardError(
                    f"commit of a shard under {self._prefix!r} got sha256={sha256!r}; expected 64 lowercase hex digits"
                )
            final_key = st._key(f"{self._prefix}/data--{_shard_id(sha256)}--{int(index):06d}.tar")
            self._raise_if_failed()
            if self._parts:
                if self._fill:
                    self._ship_part()
                self._release_buffer()
                job: tuple = (self._complete_and_move, final_key, sha256)
            else:
                body = self._buf
                self._view.release()
                del body[self._fill:]
                self._buf, self._view, self._fill = bytearray(), memoryview(b""), 0
                job = (self._put_whole, final_key, sha256, body)
            self._done = True
            self._commit = st._uploads.commit(self._finish, *job)
        except StoreError as exc:
            self._discard()
            raise self._hinted(exc) from None
        except BaseException:
            self._discard()
            raise
        return f"s3://{st.bucket}/{final_key}"

    def wait(self) -> None:
        """Block until the shard given to :meth:`start_commit` is durable; raise its error if it failed."""
        if self._commit is not None:
            self._commit.result()

    def done(self) -> bool:
        """Whether the background completion (if any) has finished, successfully or not."""
        return self._commit is None or self._commit.done()

    def _finish(self, fn, *args) -> None:
        try:
            fn(*args)
        except StoreError as exc:
            self._discard()
            raise self._hinted(exc) from None
        except BaseException:
            self._discard()
            raise

    def _put_whole(self, final_key: str, sha256: str, body: bytearray) -> None:
        """Smaller than one part: one atomic PutObject straight to the final key."""
        st = self._store
        if self._create is not None:  # created early for nothing: drop it in the background
            create, self._create = self._create, None
            st._uploads.control(self._abort_upload, create)
        size = st._same_content_exists(final_key, sha256)
        if size is not None and st._refresh(final_key, size, sha256):
            log.debug("s3://%s/%s already holds this content", st.bucket, final_key)
            return
        st._call(
            "PutObject", final_key, st.client.put_object, Bucket=st.bucket, Key=final_key, Body=body,
            ContentType="application/x-tar", Metadata={"sha256": sha256},
        )
        self.created = True

    def _complete_and_move(self, final_key: str, sha256: str) -> None:
        """Finish the multipart upload of the temporary key, then copy it server-side to the final key."""
        st = self._store
        existing = st._same_content_exists(final_key, sha256)  # while the last parts upload
        for fut in self._parts:
            try:
                fut.result()
            except BaseException:  # noqa: BLE001, S110 - part failures are collected by _raise_if_failed just below
                pass
        self._raise_if_failed()
        if existing is not None and st._refresh(final_key, existing, sha256):
            log.debug("s3://%s/%s already holds this content; upload discarded", st.bucket, final_key)
            self._discard()
            return
        parts = [f.result() for f in self._parts]
        upload_id = self._create.result()  # type: ignore[union-attr]
        st._call(
            "CompleteMultipartUpload", self._tmp_key, st.client.complete_multipart_upload, Bucket=st.bucket,
            Key=self._tmp_key, UploadId=upload_id, MultipartUpload={"Parts": parts},
        )
        self._create = None  # the upload is an object now: _discard() deletes it instead
        self._tmp_object = True
        st._server_copy(self._tmp_key, final_key, self._size, sha256)
        self.created = True
        self._tmp_object = False
        # the shard is durable under its final key; the temporary copy is garbage (and
        # gc's to remove if this process dies first), so drop it off the critical path
        st._uploads.control(st._delete_quietly, self._tmp_key)
        log.debug("committed s3://%s/%s (%d bytes, %d parts)", st.bucket, final_key, self._size, len(parts))

    def _release_buffer(self) -> None:
        self._view.release()
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._fill = 0

    def _abort_upload(self, create: Future) -> bool:
        """Abort the multipart upload ``create`` started; False if the server could not be told."""
        try:
            upload_id = create.result()
        except BaseException:  # noqa: BLE001 - the create call failed or was cancelled: there is no upload to abort
            return True  # it was never created
        st = self._store
        try:
            st.client.abort_multipart_upload(Bucket=st.bucket, Key=self._tmp_key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the abort is best effort and logged; NoSuchUpload means already gone
            if _error_code(exc) == "NoSuchUpload":
                return True
            log.warning(
                "could not abort the multipart upload of s3://%s/%s (%s); run "
                "S3DataStore.abort_stale_uploads() (gc) once the endpoint is reachable",
                st.bucket, self._tmp_key, st._sanitize(_short(exc)),
            )
            return False
        return True

    def abort(self) -> None:
        """Abort the multipart upload / delete the temporary object. Idempotent, never raises.

        A shard whose commit is already under way is let finish (then it is an ordinary
        committed shard that nothing references, which ``gc`` removes).
        """
        if self._commit is not None:
            try:
                self._commit.result()
            except BaseException:  # noqa: BLE001, S110 - abort after a commit: the commit's own error was already raised to its caller
                pass
            return
        self._discard()

    def _discard(self) -> None:
        """Stop writing and remove every trace on the server (idempotent)."""
        self._done = True
        self._release_buffer()
        for fut in self._parts:
            fut.cancel()
        for fut in self._parts:
            try:
                fut.result()
            except BaseException:  # noqa: BLE001, S110 - aborting: part failures do not matter any more
                pass
        if self._create is not None:
            create, self._create = self._create, None
            if not self._abort_upload(create):
                self._abort_failed = True
        elif self._tmp_object:
            self._tmp_object = False
            self._store._delete_quietly(self._tmp_key)

    def __enter__(self) -> "S3ShardSink":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None:
            self.abort()


class _StagedShardSink:
    """``cache_local=True``: stage the shard in a local temp file, then upload it to its final key."""

    def __init__(self, store: "S3DataStore", prefix: str):
        self._store = store
        self._prefix = prefix
        fd, self._path = tempfile.mkstemp(prefix="atdata-s3-", suffix=".tar", dir=store.cache_dir)
        self._file = os.fdopen(fd, "wb", buffering=READ_BUFFER)
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> None:
        if self._done:
            raise StoreError(f"staged shard sink {self._path} is already closed")
        try:
            self._size += self._file.write(data)
        except OSError as exc:
            self.abort()
            raise StoreError(
                f"cannot stage a shard of s3://{self._store.bucket}/{self._prefix}/ in {self._path}: "
                f"{exc.strerror or exc}; free disk space or use cache_local=False"
            ) from None

    def commit(self, index: int, sha256: str) -> str:
        from boto3.s3.transfer import TransferConfig  # lazy: boto3/botocore load on first S3 use

        st = self._store
        if self._done:
            raise StoreError(f"staged shard sink {self._path} was already committed or aborted")
        if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
            self.abort()
            raise ShardError(f"commit of a shard under {self._prefix!r} got sha256={sha256!r}; expected 64 lowercase hex digits")
        final_key = st._key(f"{self._prefix}/data--{_shard_id(sha256)}--{int(index):06d}.tar")
        try:
            self._file.close()
            existing = st._same_content_exists(final_key, sha256)
            if existing is None or not st._refresh(final_key, existing, sha256):
                cfg = TransferConfig(
                    multipart_threshold=st.part_size, multipart_chunksize=st.part_size,
                    max_concurrency=st.max_concurrency, use_threads=True,
                )
                st._call(
                    "upload_file", final_key, st.client.upload_file, self._path, st.bucket, final_key,
                    ExtraArgs={"ContentType": "application/x-tar", "Metadata": {"sha256": sha256}}, Config=cfg,
                )
        finally:
            self.abort()  # removes the staged file
        return f"s3://{st.bucket}/{final_key}"

    def abort(self) -> None:
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "_StagedShardSink":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None:
            self.abort()


# ---------------------------------------------------------------------- errors
def _error_code(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        err = resp.get("Error") or {}
        code = str(err.get("Code") or "")
        if code:
            return code
        status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(status or "")
    return ""


def _short(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        err = resp.get("Error") or {}
        status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = err.get("Code") or status
        msg = err.get("Message")
        return f"{code}{': ' + str(msg) if msg and msg != 'None' else ''} (HTTP {status})"
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- the store
class S3DataStore(DataStore):
    """Shards in an S3 bucket (AWS or any S3-compatible server such as Ceph RGW).

    ``credentials`` is atdata's form: a dict with ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` (``AWS_ENDPOINT``, ``AWS_REGION``, ``AWS_SESSION_TOKEN``
    optional), or the path of a ``.env`` file that sets at least ``AWS_ENDPOINT``,
    ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``. Keyword arguments override it;
    with neither, boto3's default credential chain (env vars, ``~/.aws``, instance role)
    is used. ``client`` reuses an existing boto3 S3 client instead.

    ``prefix`` is a key prefix inside the bucket under which every dataset lives.
    ``part_size`` (>= 5 MiB) is the multipart part size and ``max_concurrency`` the
    number of parts uploaded at once per store (memory at most about
    ``(max_concurrency + 2) * part_size``, whatever the shard or dataset size). ``cache_local=True`` stages each shard in a local temp file
    (``cache_dir``) and uploads it with boto3's transfer manager instead of streaming.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | str | os.PathLike | None = None,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        part_size: int = 8 * MiB,
        max_concurrency: int = 8,
        cache_local: bool = False,
        cache_dir: str | os.PathLike | None = None,
        client: Any = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ):
        self._credentials_source = (
            "the arguments" if (aws_access_key_id or aws_secret_access_key)
            else "the default AWS credential chain (AWS_* environment variables, ~/.aws, instance role)"
        )
        creds: dict[str, str] = {}
        if credentials is not None:
            if isinstance(credentials, Mapping):
                creds = {k: v for k, v in credentials.items() if v is not None}
                self._credentials_source = "the credentials dict"
                missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not creds.get(k)]
            elif isinstance(credentials, (str, os.PathLike)):
                path = Path(credentials).expanduser()
                creds = _read_env_file(path)
                self._credentials_source = f"credentials file {str(path)!r}"
                missing = [k for k in ("AWS_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not creds.get(k)]
            else:
                raise ConfigurationError(
                    f"S3DataStore credentials must be a dict or the path of a .env file, got {type(credentials).__name__}"
                )
            if missing:
                raise ConfigurationError(
                    f"S3DataStore: {self._credentials_source} lacks {', '.join(missing)}; "
                    "set AWS_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
        if not isinstance(bucket, str) or not bucket or "/" in bucket or bucket != bucket.strip():
            raise ConfigurationError(f"S3DataStore bucket={bucket!r} is not a bucket name; pass e.g. bucket='my-datasets'")
        if not isinstance(part_size, int) or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"S3DataStore part_size={part_size!r} is out of range; S3 needs parts of 5 MiB ({MIN_PART_SIZE}) to 5 GiB"
            )
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(f"S3DataStore max_concurrency={max_concurrency!r} must be an integer >= 1")
        key_prefix = (prefix or "").strip("/")
        if key_prefix:
            if any(seg in ("", ".", "..") for seg in key_prefix.split("/")):
                raise ConfigurationError(f"S3DataStore prefix={prefix!r} has empty, '.' or '..' segments")

        self.bucket = bucket
        self.prefix = key_prefix
        self.endpoint_url = (endpoint_url or creds.get("AWS_ENDPOINT") or "").rstrip("/") or None
        if self.endpoint_url and not re.match(r"^https?://", self.endpoint_url):
            raise ConfigurationError(
                f"S3 endpoint {self.endpoint_url!r} has no scheme; use e.g. 'http://127.0.0.1:7480' or 'https://s3.example.com'"
            )
        self.region_name = region_name or creds.get("AWS_REGION") or None
        self._access_key = aws_access_key_id or creds.get("AWS_ACCESS_KEY_ID") or None
        self._secret_key = aws_secret_access_key or creds.get("AWS_SECRET_ACCESS_KEY") or None
        self._session_token = aws_session_token or creds.get("AWS_SESSION_TOKEN") or None
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.cache_local = bool(cache_local)
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._user_client = client is not None
        self._client = client
        self._client_pid = os.getpid()
        self._client_lock = threading.Lock()
        self._uploads = _Uploads(max_concurrency)
        self._bucket_checked = False
        self._unsigned = False  # anonymous reads (see AnonymousS3Opener)

    # -- configuration
    def __repr__(self) -> str:
        key = self._access_key
        shown = f"{key[:4]}…" if key else None
        return (
            f"S3DataStore(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r}, "
            f"region_name={self.region_name!r}, aws_access_key_id={shown!r}, "
            f"aws_secret_access_key={'***' if self._secret_key else None!r}, part_size={self.part_size}, "
            f"max_concurrency={self.max_concurrency}, cache_local={self.cache_local})"
        )

    @property
    def endpoint_display(self) -> str:
        return self.endpoint_url or "AWS S3 (default endpoint)"

    @property
    def client(self):
        """The boto3 S3 client (created on first use; thread-safe; new in a forked child)."""
        pid = os.getpid()
        if self._client_pid != pid and not self._user_client:
            # A forked child (e.g. a DataLoader worker) inherited the parent's client: its pooled
            # connections are the parent's sockets, and two processes reading them interleave
            # responses (seen as shards failing their checksum). Start with a client of its own.
            self._client_lock = threading.Lock()
            self._client = None
            self._client_pid = pid
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self):
        import boto3  # lazy: boto3/botocore load on first S3 use

        connect_timeout, read_timeout, max_attempts = self._timeouts
        cfg = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max(10, 2 * self.max_concurrency + 2),
            s3={"addressing_style": "path"} if self.endpoint_url else {},
        )
        if getattr(self, "_unsigned", False):

            cfg = cfg.merge(Config(signature_version=UNSIGNED))
            session = boto3.session.Session(region_name=self.region_name or "us-east-1")
            return session.client("s3", endpoint_url=self.endpoint_url, config=cfg)
        session = boto3.session.Session(
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            aws_session_token=self._session_token,
            region_name=self.region_name or ("us-east-1" if self.endpoint_url else None),
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=cfg)

    def __getstate__(self) -> dict:
        if self._user_client:
            raise TypeError(
                "an S3DataStore built from an existing boto3 client cannot be pickled; "
                "pass credentials/endpoint instead of client= to use it in worker processes"
            )
        state = self.__dict__.copy()
        state["_client"] = None
        state["_client_lock"] = None
        state["_uploads"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client_pid = os.getpid()
        self._client_lock = threading.Lock()
        self._uploads = _Uploads(self.max_concurrency)

    def flush(self) -> None:
        """Wait until background clean-up (temporary objects, unused uploads) has reached the server."""
        self._uploads.flush()

    def close(self) -> None:
        """Flush, then release the store's upload threads (they are re-created on next use)."""
        self._uploads.shutdown()

    # -- keys and URLs
    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def url_for_key(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _key_of(self, url: str) -> str:
        bucket, key = self._split_own(url)
        if bucket is None:
            raise StoreError(f"{url!r} is not in this store (s3://{self.bucket}/{self.prefix})")
        return key

    def _split_own(self, url: str) -> tuple[str | None, str]:
        if url.startswith("s3://"):
            bucket, key = parse_s3_url(url)
        elif self.endpoint_url and url.startswith(self.endpoint_url + "/"):
            rest = url[len(self.endpoint_url) + 1:]
            bucket, _, key = rest.partition("/")
            key = unquote(key)  # the read_url form is percent-encoded
        else:
            return None, ""
        if bucket != self.bucket or not key:
            return None, ""
        if self.prefix and not key.startswith(self.prefix + "/"):
            return None, ""
        return bucket, key

    def owns(self, url: str) -> bool:
        return self._split_own(url)[0] is not None

    def read_url(self, url: str) -> str:
        """``s3://b/k`` -> ``{endpoint}/b/k`` when an endpoint is configured, else unchanged (as atdata)."""
        if self.endpoint_url and url.startswith("s3://"):
            bucket, key = parse_s3_url(url)
            return f"{self.endpoint_url}/{bucket}/{quote(key)}"
        return url

    # -- error handling
    def _sanitize(self, text: str) -> str:
        return redact(text, self._secret_key, self._session_token)

    def _to_store_error(self, exc: BaseException, op: str, key: str | None, *, bucket: str | None = None) -> StoreError:

        bucket = bucket or self.bucket
        where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        at = f"{op} {where} at {self.endpoint_display}"
        code = _error_code(exc)
        if code in ("NoSuchBucket",) or (code == "404" and op in ("HeadBucket",)):
            msg = f"{at}: bucket {bucket!r} does not exist; create it (e.g. `aws s3 mb s3://{bucket}`) or fix bucket="
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"):
            msg = (
                f"{at}: the credentials were rejected ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                f"(from {self._credentials_source}) and the region"
            )
        elif code in ("AccessDenied", "403", "AllAccessDisabled"):
            msg = (
                f"{at}: access denied ({code}); the credentials from {self._credentials_source} were rejected "
                f"or lack permission on bucket {bucket!r}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            )
        elif code in ("NoSuchKey", "404", "NotFound"):
            return S3ObjectNotFoundError(f"{at}: object not found; the shard was deleted or the URL is wrong")
        elif code == "PreconditionFailed":
            msg = f"{at}: the object changed while it was being read; read it again"
        elif isinstance(exc, bex.NoCredentialsError):
            msg = (
                f"{at}: no AWS credentials found; pass credentials={{'AWS_ACCESS_KEY_ID': ..., "
                "'AWS_SECRET_ACCESS_KEY': ...}, a .env file path, or set the AWS_* environment variables"
            )
        elif isinstance(exc, (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ConnectTimeoutError)):
            msg = f"{at}: cannot reach the S3 endpoint ({type(exc).__name__}); is the server running? check endpoint_url / AWS_ENDPOINT"
        elif isinstance(exc, (bex.ReadTimeoutError, bex.ResponseStreamingError, bex.ConnectionError, ConnectionError, TimeoutError)):
            msg = f"{at}: the connection to the S3 endpoint failed ({type(exc).__name__}); the server stopped or the network broke, retry"
        elif isinstance(exc, bex.ClientError):
            msg = f"{at}: {_short(exc)}"
        else:
            msg = f"{at}: {type(exc).__name__}: {exc}"
        return StoreError(self._sanitize(msg))

    def _call(self, op: str, key: str | None, fn, *args, _bucket: str | None = None, **kw):
        """Run one S3 call, turning every failure into a StoreError that names the object and the fix."""

        try:
            return fn(*args, **kw)
        except (bex.BotoCoreError, bex.ClientError, OSError) as exc:
            raise self._to_store_error(exc, op, key, bucket=_bucket) from None
        except Exception as exc:  # s3transfer wraps errors (e.g. S3UploadFailedError)
            if type(exc).__module__.startswith(("boto3", "s3transfer")):
                cause = exc.__cause__ or exc.__context__ or exc
                raise self._to_store_error(cause if cause is not exc else exc, op, key, bucket=_bucket) from None
            raise

    # -- writing
    def check_bucket(self) -> None:
        """Raise StoreError unless the bucket exists and the credentials may use it."""
        self._call("HeadBucket", None, self.client.head_bucket, Bucket=self.bucket)
        self._bucket_checked = True

    def open_sink(self, prefix: str) -> ShardSink:
        """A sink streaming one shard of dataset ``prefix`` into the bucket (see the module docstring)."""
        prefix = _validate_prefix(prefix)
        if not self._bucket_checked:  # fail before the caller streams a whole shard
            self.check_bucket()
        if self.cache_local:
            return _StagedShardSink(self, prefix)
        return S3ShardSink(self, prefix)

    def _same_content_exists(self, key: str, sha256: str) -> int | None:
        """The size of the object at ``key`` if it holds the shard ``sha256``, else ``None``."""

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except bex.ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._to_store_error(exc, "HeadObject", key) from None
        except (bex.BotoCoreError, OSError) as exc:
            raise self._to_store_error(exc, "HeadObject", key) from None
        if (head.get("Metadata") or {}).get("sha256") != sha256:
            return None
        return int(head.get("ContentLength", 0))

    def _refresh(self, key: str, size: int, sha256: str) -> bool:
        """Reuse the existing shard at ``key``: copy it onto itself, which sets its LastModified
        to now (as the disk store's ``utime``), so a concurrent gc sees a young object and keeps
        it until the entry that reuses it is committed. False if it is gone (deleted meanwhile):
        the caller then writes it again."""
        try:
            self._server_copy(key, key, size, sha256)
        except S3ObjectNotFoundError:
            return False
        return True

    def _server_copy(self, src: str, dst: str, size: int, sha256: str) -> None:
        meta: dict[str, Any] = {"ContentType": "application/x-tar", "Metadata": {"sha256": sha256}}
        source = {"Bucket": self.bucket, "Key": src}
        if size <= COPY_PIECE:
            self._call(
                "CopyObject", dst, self.client.copy_object, Bucket=self.bucket, Key=dst, CopySource=source,
                MetadataDirective="REPLACE", **meta,
            )
            return
        up = self._call("CreateMultipartUpload", dst, self.client.create_multipart_upload, Bucket=self.bucket, Key=dst, **meta)
        upload_id = up["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PIECE), 1):
                end = min(start + COPY_PIECE, size) - 1
                r = self._call(
                    "UploadPartCopy", dst, self.client.upload_part_copy, Bucket=self.bucket, Key=dst,
                    UploadId=upload_id, PartNumber=number, CopySource=source, CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]})
            self._call(
                "CompleteMultipartUpload", dst, self.client.complete_multipart_upload, Bucket=self.bucket, Key=dst,
                UploadId=upload_id, MultipartUpload={"Parts": parts},
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=dst, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the abort is best effort; the original error is re-raised
                log.warning("could not abort the copy upload of s3://%s/%s; run abort_stale_uploads()", self.bucket, dst)
            raise

    def _delete_quietly(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - a failed cleanup delete is logged; gc removes the object
            log.warning("could not delete s3://%s/%s (%s); gc will remove it", self.bucket, key, self._sanitize(_short(exc)))

    def put_sidecar(self, shard_url: str, suffix: str, data: bytes) -> str:
        key = self._key_of(shard_url)
        stem = key[:-4] if key.endswith(".tar") else key
        side = stem + suffix
        ctype = "application/json" if suffix.endswith(".json") else "application/octet-stream"
        self._call("PutObject", side, self.client.put_object, Bucket=self.bucket, Key=side, Body=bytes(data), ContentType=ctype)
        return self.url_for_key(side)

    # -- reading
    def open_read(self, url: str) -> BinaryIO:
        """Stream an object (``s3://`` URL, or the ``read_url`` form) without downloading it first."""
        if url.startswith("s3://"):
            bucket, key = parse_s3_url(url)
        else:
            own, key = self._split_own(url)
            if own is None:
                raise StoreError(f"{url!r} is not an s3:// URL nor an object URL of endpoint {self.endpoint_display}")
            bucket = own
        raw = _S3RawReader(self, bucket, key)
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of an object with one ranged GetObject (random access to one sample)."""
        if url.startswith("s3://"):
            bucket, key = parse_s3_url(url)
        else:
            own, key = self._split_own(url)
            if own is None:
                raise StoreError(f"{url!r} is not an s3:// URL nor an object URL of endpoint {self.endpoint_display}")
            bucket = own
        if stop is not None and stop <= start:
            return b""
        rng = f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"
        resp = self._call("GetObject", key, self.client.get_object, Bucket=bucket, Key=key, Range=rng, _bucket=bucket)
        with closing(resp["Body"]) as body:
            return body.read()

    # -- listing / gc
    def _rel(self, key: str) -> str | None:
        """``key`` relative to the store prefix, ``None`` if outside it or among the ownership markers."""
        if self.prefix:
            if not key.startswith(self.prefix + "/"):
                return None
            key = key[len(self.prefix) + 1:]
        if key.split("/", 1)[0] == RESERVED_SEGMENT:
            return None
        return key

    def _own_kind(self, key: str) -> str | None:
        """``"shard"``, ``"sidecar"`` or ``"tmp"`` for keys of this store's own naming, else ``None``."""
        rel = self._rel(key)
        if rel is None:
            return None
        if _OWN_TMP_RE.match(rel):
            return "tmp"
        if f"/{TMP_DIR}/" in f"/{rel}":
            return None
        if _OWN_SHARD_RE.match(rel):
            return "shard"
        if _OWN_SIDECAR_RE.match(rel):
            return "sidecar"
        return None

    def is_own_name(self, url: str) -> bool:
        """Whether ``url`` is a shard, sidecar or temporary object of this store's own naming."""
        bucket, key = self._split_own(url) if isinstance(url, str) else (None, "")
        return bucket is not None and self._own_kind(key) is not None

    def iter_shard_urls(self, prefix: str | None = None) -> Iterator[str]:
        """Every own-named shard and leftover temporary object under the store (or ``prefix``)."""
        self._mtimes: dict[str, Any] = {}
        yield from self._list(prefix, lambda key: self._own_kind(key) in ("shard", "tmp"))

    def iter_sidecar_urls(self, prefix: str | None = None) -> Iterator[str]:
        """Every own-named ``<shard stem>.manifest.json|.parquet`` object under the store (or ``prefix``)."""
        yield from self._list(prefix, lambda key: self._own_kind(key) == "sidecar")

    def locations(self, url: str) -> set[str]:
        """The ``s3://`` URL a reference denotes in this store (``s3://`` or the endpoint form)."""
        if not isinstance(url, str):
            return set()
        try:
            bucket, key = self._split_own(url)
        except StoreError:
            return set()
        return {self.url_for_key(key)} if bucket is not None else set()

    # -- ownership
    def owner_ids(self) -> set[str]:
        """The index identities recorded under ``<prefix>/.atdata-dagster/owners/``."""
        base = self._key(OWNER_DIR) + "/"
        out: set[str] = set()
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(base):]
                    if valid_owner_id(name):
                        out.add(name)
        except Exception as exc:
            if isinstance(exc, StoreError):
                raise
            raise self._to_store_error(exc, "ListObjectsV2", base) from None
        return out

    def claim(self, owner_id: str) -> None:
        """Put ``<prefix>/.atdata-dagster/owners/<owner_id>`` (once per process and store)."""
        claimed = self.__dict__.setdefault("_claimed", set())
        if owner_id in claimed:
            return
        if not valid_owner_id(owner_id):
            raise StoreError(f"index identity {owner_id!r} is not 32 hex digits; it cannot mark s3://{self.bucket}")
        key = self._key(f"{OWNER_DIR}/{owner_id}")
        body = ('{"format": "atdata-dagster-store-owner", "version": 1, "index_id": "%s"}' % owner_id).encode()
        self._call("PutObject", key, self.client.put_object, Bucket=self.bucket, Key=key, Body=body,
                   ContentType="application/json")
        claimed.add(owner_id)

    def _list(self, prefix: str | None, want) -> Iterator[str]:
        """URLs of the objects under the store (or ``prefix``) whose key ``want`` accepts; notes their ages."""
        base = self._key(prefix.strip("/")) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        paginator = self.client.get_paginator("list_objects_v2")
        mtimes = self.__dict__.setdefault("_mtimes", {})
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if want(key):
                        url = self.url_for_key(key)
                        if obj.get("LastModified") is not None:
                            mtimes[url] = obj["LastModified"].timestamp()
                        yield url
        except Exception as exc:
            if isinstance(exc, StoreError):
                raise
            raise self._to_store_error(exc, "ListObjectsV2", base or None) from None

    def age_seconds(self, url: str, now: float | None = None, *, fresh: bool = False) -> float | None:
        """Seconds since the object was written or reused (from the last :meth:`iter_shard_urls`
        listing, else, or with ``fresh=True``, a HEAD); ``None`` if it does not exist. ``gc``
        uses it for its grace period, so shards a running writer has committed (or reused) but
        not yet indexed are kept."""
        now = time.time() if now is None else now
        mtime = None if fresh else getattr(self, "_mtimes", {}).get(url)
        if mtime is None:

            key = self._key_of(url)
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except bex.ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise self._to_store_error(exc, "HeadObject", key) from None
            except (bex.BotoCoreError, OSError) as exc:
                raise self._to_store_error(exc, "HeadObject", key) from None
            mtime = head["LastModified"].timestamp()
        return max(0.0, now - mtime)

    def delete(self, url: str) -> None:
        key = self._key_of(url)
        self._call("DeleteObject", key, self.client.delete_object, Bucket=self.bucket, Key=key)

    def restore(self, url: str, data: BinaryIO) -> None:
        """Replace the object (S3 replaces a whole object atomically: readers never see a mix)."""
        key = self._key_of(url)
        self._call("PutObject", key, self.client.upload_fileobj, data, self.bucket, key)

    def abort_stale_uploads(self, prefix: str | None = None, *, older_than: float = 0.0) -> int:
        """Abort this store's unfinished multipart uploads (under ``prefix``) started more than
        ``older_than`` seconds ago; return how many were aborted. Part of ``gc``: uploads left by
        a crashed writer are invisible but their parts are billed until aborted. Only uploads to
        this store's own temporary keys (``<dataset>/.tmp/<id>.tar``) are touched: never another
        application's uploads in a shared bucket."""
        base = self._key(prefix.strip("/")) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        paginator = self.client.get_paginator("list_multipart_uploads")
        cutoff = time.time() - older_than
        aborted = 0
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for up in page.get("Uploads", ()):
                    key = up["Key"]
                    if self._own_kind(key) != "tmp":
                        continue
                    initiated = up.get("Initiated")
                    if initiated is not None and older_than > 0 and initiated.timestamp() > cutoff:
                        continue
                    try:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"])
                        aborted += 1
                    except Exception as exc:
                        if _error_code(exc) != "NoSuchUpload":
                            raise
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors are many types; turned into StoreError naming the call
            raise self._to_store_error(exc, "ListMultipartUploads", base or None) from None
        return aborted


# ---------------------------------------------------------------------- openers
class S3Opener:
    """Opens ``s3://`` URLs (and the store's endpoint URL form) with one store's endpoint and credentials.

    A :class:`~atdata_dagster.shards.reader.ShardOpener` that pickles as the store's
    configuration (never a live client; the client is rebuilt on first use after
    unpickling). A store built from an existing boto3 ``client=`` cannot be pickled:
    pickling raises ``TypeError`` saying so.
    """

    def __init__(self, store: "S3DataStore"):
        self.store = store

    @property
    def bucket(self) -> str:
        return self.store.bucket

    def owns(self, url: str) -> bool:
        """Whether ``url`` is an object of this opener's bucket (any key)."""
        if url.startswith("s3://"):
            return parse_s3_url(url)[0] == self.store.bucket
        return self.store.owns(url)

    def open(self, url: str) -> BinaryIO:
        if not self.owns(url):
            raise StoreError(f"{url!r} is not in bucket {self.store.bucket!r} of this opener")
        return self.store.open_read(url)

    __call__ = open

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of an object of this bucket with one ranged GetObject."""
        if not self.owns(url):
            raise StoreError(f"{url!r} is not in bucket {self.store.bucket!r} of this opener")
        return self.store.read_range(url, start, stop)

    def __repr__(self) -> str:
        return f"S3Opener(bucket={self.store.bucket!r}, endpoint_url={self.store.endpoint_url!r})"


class _PerBucketOpener:
    """Base of the S3 openers that make one (process-local, unpickled) store per bucket on demand."""

    def __init__(self) -> None:
        self._stores: dict[str, S3DataStore] = {}
        self._lock = threading.Lock()

    def _make_store(self, bucket: str) -> S3DataStore:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cache_key(self, bucket: str) -> Any:
        return bucket

    def _store_for(self, bucket: str) -> S3DataStore:
        key = self._cache_key(bucket)
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                store = self._stores[key] = self._make_store(bucket)
            return store

    def open(self, url: str) -> BinaryIO:
        bucket, _key = parse_s3_url(url)
        return self._store_for(bucket).open_read(url)

    __call__ = open

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of an object with one ranged GetObject."""
        bucket, _key = parse_s3_url(url)
        return self._store_for(bucket).read_range(url, start, stop)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stores"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class AnonymousS3Opener(_PerBucketOpener):
    """Reads ``s3://`` URLs without credentials (unsigned requests) at ``endpoint_url``.

    This is how shards named by a foreign record (an atmosphere entry) are read: a
    record cannot make a reader use the reader's own credentials, so only objects the
    bucket serves to everyone can be read this way. ``None`` endpoint: AWS S3.
    """

    def __init__(self, endpoint_url: str | None = None, region_name: str | None = None):
        super().__init__()
        self.endpoint_url = endpoint_url
        self.region_name = region_name

    def _make_store(self, bucket: str) -> S3DataStore:
        store = S3DataStore(bucket=bucket, endpoint_url=self.endpoint_url, region_name=self.region_name)
        store._unsigned = True
        store._credentials_source = "no credentials (an anonymous read of a bucket named by a foreign record)"
        return store

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, AnonymousS3Opener) and other.endpoint_url == self.endpoint_url
                and other.region_name == self.region_name)

    def __hash__(self) -> int:
        return hash((AnonymousS3Opener, self.endpoint_url, self.region_name))

    def __repr__(self) -> str:
        return f"AnonymousS3Opener(endpoint_url={self.endpoint_url!r})"


class DefaultChainS3Opener(_PerBucketOpener):
    """Reads ``s3://`` URLs with boto3's default credential chain, as the AWS CLI would.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` /
    ``AWS_ENDPOINT`` and the region from ``AWS_REGION``, read where the shard is opened
    (so a worker process uses its own environment). Used for URLs the user names
    directly (``Dataset("s3://...")``), never for shards named by foreign records.
    """

    @staticmethod
    def _environment() -> tuple[str | None, str | None]:
        endpoint = (
            os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("AWS_ENDPOINT") or None
        )
        return endpoint, os.environ.get("AWS_REGION") or None

    def _cache_key(self, bucket: str) -> Any:
        return (bucket, *self._environment())

    def _make_store(self, bucket: str) -> S3DataStore:
        endpoint, region = self._environment()
        store = S3DataStore(bucket=bucket, endpoint_url=endpoint, region_name=region)
        store._credentials_source = "the default AWS credential chain (AWS_* environment variables, ~/.aws)"
        return store

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DefaultChainS3Opener)

    def __hash__(self) -> int:
        return hash(DefaultChainS3Opener)

    def __repr__(self) -> str:
        return "DefaultChainS3Opener()"


_DEFAULT_CHAIN = DefaultChainS3Opener()


def default_chain_opener() -> DefaultChainS3Opener:
    """The process's shared :class:`DefaultChainS3Opener` (its per-bucket clients are reused)."""
    return _DEFAULT_CHAIN


def open_s3_url(url: str) -> BinaryIO:
    """Open ``s3://bucket/key`` with boto3's default credential chain (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT``
    for the endpoint). To read with a store's credentials use ``S3Opener(store)`` or ``store.open_read``."""
    return _DEFAULT_CHAIN.open(url)
