"""Local-disk data store: shards under ``<root>/<prefix>/data--<8 hex>--<%06d>.tar``.

Same layout and URLs as atdata's ``LocalDiskStore`` (absolute resolved paths, no
``file://``), except that the 8 hex digits are the start of the shard's SHA-256
instead of a random uuid: identical content gets an identical URL, so rewriting
unchanged data is a no-op for the index. Shards are written to a temp file in the
target directory, fsynced, and linked into place without ever replacing an
existing file; prefixes are validated so nothing can be written outside the root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterator
from urllib.parse import unquote

from ..errors import InvalidNameError, StoreError
from ..files import atomic_write, fsync_dir, sha256_file
from .base import OWNER_DIR, RESERVED_SEGMENT, DataStore, valid_owner_id

__all__ = ["LocalDiskStore", "DiskSink", "validate_dataset_prefix", "DEFAULT_ROOT"]

DEFAULT_ROOT = "~/.atdata/data"
MAX_PREFIX_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_TMP_RE = re.compile(r"^\.tmp-[0-9a-f]{32}\.(tar|sidecar)\.part$")
#: This store's (and atdata's) shard names: ``data--<8, 16 or 64 hex>--<6 digits>.tar``.
_SHARD_RE = re.compile(r"^data--(?:[0-9a-f]{8}|[0-9a-f]{16}|[0-9a-f]{64})--[0-9]{6}\.tar$")
#: Sidecars of such a shard (manifests, as atdata names them).
_SIDECAR_RE = re.compile(r"^data--(?:[0-9a-f]{8}|[0-9a-f]{16}|[0-9a-f]{64})--[0-9]{6}\.manifest\.(?:json|parquet)$")


def validate_dataset_prefix(prefix: str) -> str:
    """Check a dataset prefix (the directory under the store root) and return it.

    A prefix is a relative path of ``/``-separated segments: non-empty, none empty,
    ``.`` or ``..``, no NUL, control character or backslash, each segment at most 255
    bytes and the whole at most 1024 bytes (UTF-8). Raises :class:`InvalidNameError`.
    """
    if not isinstance(prefix, str):
        raise InvalidNameError(f"dataset prefix must be a string, got {type(prefix).__name__}")
    fix = "use a relative name such as 'mnist' or 'lab/mnist/train'"
    if not prefix:
        raise InvalidNameError(f"dataset prefix is empty; {fix}")
    shown = prefix if len(prefix) <= 80 else prefix[:77] + "..."
    if _BAD_CHARS.search(prefix):
        raise InvalidNameError(f"dataset prefix {shown!r} contains a NUL, control character or backslash; {fix}")
    if prefix.startswith("/"):
        raise InvalidNameError(f"dataset prefix {shown!r} is absolute; it must be relative to the store root ({fix})")
    if len(prefix.encode("utf-8")) > MAX_PREFIX_BYTES:
        raise InvalidNameError(
            f"dataset prefix {shown!r} is {len(prefix.encode('utf-8'))} bytes long; the limit is {MAX_PREFIX_BYTES}"
        )
    for seg in prefix.split("/"):
        if seg in ("", ".", ".."):
            raise InvalidNameError(
                f"dataset prefix {shown!r} has an empty, '.' or '..' segment, which could escape the store root; {fix}"
            )
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidNameError(
                f"dataset prefix {shown!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes; shorten it"
            )
    if prefix.split("/", 1)[0] == RESERVED_SEGMENT:
        raise InvalidNameError(
            f"dataset prefix {shown!r} starts with {RESERVED_SEGMENT!r}, which stores reserve for their "
            f"ownership markers; {fix}"
        )
    return prefix


_fsync_dir = fsync_dir  # kept name for callers inside this module


_file_sha256 = sha256_file


class DiskSink:
    """One shard being written to ``<dir>/.tmp-<uuid4>.tar.part``."""

    #: whether the commit put a new file under the final name (False: the content was already there)
    created = False

    def __init__(self, directory: str):
        self.directory = directory
        self.tmp_path = os.path.join(directory, f".tmp-{uuid.uuid4().hex}.tar.part")
        self._size = 0
        self._fd: int | None = None
        try:
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create a shard file in {directory}: {exc.strerror or exc}") from exc

    def write(self, data: Any) -> None:
        if self._fd is None:
            raise StoreError(f"shard {self.tmp_path} is already committed or aborted")
        try:
            view = memoryview(data).cast("B")
            write, fd = os.write, self._fd
            while view:
                n = write(fd, view)
                view = view[n:]
                self._size += n
        except OSError as exc:
            self.abort()
            raise StoreError(
                f"cannot write shard {self.tmp_path}: {exc.strerror or exc}; "
                "free disk space or fix permissions, then write again"
            ) from exc

    def commit(self, index: int, sha256: str) -> str:
        if self._fd is None:
            raise StoreError(f"shard {self.tmp_path} is already committed or aborted")
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            url = self._place(index, sha256)
            _fsync_dir(self.directory)
        except StoreError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise StoreError(f"cannot commit shard in {self.directory}: {exc.strerror or exc}") from exc
        return url

    def _place(self, index: int, sha256: str) -> str:
        # 8 hex digits as in atdata; on a clash with different content use longer names.
        for width in (8, 16, 64):
            final = os.path.join(self.directory, f"data--{sha256[:width]}--{index:06d}.tar")
            for _attempt in range(3):
                if self._link(final):
                    self.created = True
                    return final
                try:
                    same = os.path.getsize(final) == self._size and _file_sha256(final) == sha256
                    if same:
                        # Refresh its mtime: gc spares recent files, and this one is about to
                        # be referenced again.
                        os.utime(final)
                except FileNotFoundError:
                    continue  # removed (by gc) since the link attempt: link ours instead
                break
            else:  # pragma: no cover - deleted three times in a row
                raise StoreError(f"cannot place shard {index} in {self.directory}: {final} keeps disappearing")
            if same:
                os.unlink(self.tmp_path)  # same content already durable under this name
                return final
        raise StoreError(f"cannot place shard {index} ({sha256}) in {self.directory}: names taken by other content")

    def _link(self, final: str) -> bool:
        """Move the temp file to ``final`` unless ``final`` exists; False if it exists."""
        try:
            os.link(self.tmp_path, final)
        except FileExistsError:
            return False
        except OSError:
            # Filesystem without hard links: rename after an existence check.
            if os.path.lexists(final):
                return False
            os.rename(self.tmp_path, final)
            return True
        os.unlink(self.tmp_path)
        return True

    def abort(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass
        except OSError:  # pragma: no cover - leave it for gc
            pass


class LocalDiskStore(DataStore):
    """Shards on the local filesystem under ``root`` (default ``~/.atdata/data``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        path = Path(os.fspath(root) if root is not None else DEFAULT_ROOT).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store root {path}: {exc.strerror or exc}") from exc
        self.root = path.resolve()
        self._claimed: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalDiskStore({str(self.root)!r})"

    # ------------------------------------------------------------- writing
    def directory_for(self, prefix: str) -> Path:
        """The directory of ``prefix`` (validated; guaranteed to be inside the root)."""
        validate_dataset_prefix(prefix)
        target = (self.root / prefix).resolve()
        if not target.is_relative_to(self.root):
            raise InvalidNameError(
                f"dataset prefix {prefix!r} resolves to {target}, outside the store root {self.root} "
                "(a symlink?); choose another name"
            )
        return target

    def open_sink(self, prefix: str) -> DiskSink:
        target = self.directory_for(prefix)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc.strerror or exc}") from exc
        # Re-check after mkdir: a component could have been a symlink created meanwhile.
        if not target.resolve().is_relative_to(self.root):
            raise InvalidNameError(f"dataset prefix {prefix!r} escapes the store root {self.root}")
        return DiskSink(str(target))

    def put_sidecar(self, shard_url: str, suffix: str, data: bytes) -> str:
        shard = self._path(shard_url)
        base = str(shard)[:-4] if str(shard).endswith(".tar") else str(shard)
        path = base + suffix
        tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}.sidecar.part")  # gc's own temp name
        try:
            atomic_write(path, data, tmp=tmp)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    # ------------------------------------------------------------- reading
    def _path(self, url: str) -> Path:
        raw = url[len("file://") :] if url.startswith("file://") else url
        path = Path(raw).expanduser()
        if not path.is_absolute():
            raise StoreError(f"{url} is not an absolute path; shard URLs of {self!r} are absolute")
        path = Path(os.path.normpath(path))
        if not path.is_relative_to(self.root):
            raise StoreError(f"{url} is not inside the store root {self.root}")
        return path

    def open_read(self, url: str) -> BinaryIO:
        path = self._path(url)
        return open(path, "rb", buffering=0)

    def age_seconds(self, url: str, now: float | None = None, *, fresh: bool = False) -> float | None:
        """Seconds since the file was last written or reused (its mtime); ``None`` if missing.

        Always read from the file system (``fresh`` changes nothing here)."""
        try:
            mtime = os.stat(self._path(url)).st_mtime
        except (OSError, StoreError):
            return None
        return (time.time() if now is None else now) - mtime

    def owns(self, url: str) -> bool:
        if not isinstance(url, str) or ("://" in url and not url.startswith("file://")):
            return False
        try:
            self._path(url)
        except StoreError:
            return False
        return True

    def _walk(self, want) -> Iterator[str]:
        """Regular files (no symlinks) under the root whose name ``want`` accepts, sorted per directory.

        Symlinked directories are not followed, so nothing outside the root is listed; files
        at the root itself and the ownership markers are never shards (datasets live in folders)."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            if dirpath == str(self.root):
                dirnames[:] = [d for d in dirnames if d != RESERVED_SEGMENT]
                continue
            for name in sorted(filenames):
                if want(name):
                    path = os.path.join(dirpath, name)
                    try:
                        if stat.S_ISREG(os.lstat(path).st_mode):
                            yield path
                    except FileNotFoundError:
                        continue

    def iter_shard_urls(self) -> Iterator[str]:
        """Every ``data--<hex>--<n>.tar`` shard and leftover ``.tmp-*.tar.part`` file (own names only)."""
        return self._walk(lambda name: bool(_SHARD_RE.match(name) or _TMP_RE.match(name)))

    def iter_sidecar_urls(self) -> Iterator[str]:
        """Every ``data--<hex>--<n>.manifest.json|.parquet`` file (temp sidecars are listed as shards)."""
        return self._walk(lambda name: bool(_SIDECAR_RE.match(name)))

    def _inside(self, path: str) -> bool:
        root = str(self.root)
        return path == root or path.startswith(root.rstrip("/") + "/")

    def is_own_name(self, url: str) -> bool:
        """Whether ``url`` is inside the root and named like a shard, sidecar or temp file of this store."""
        if not isinstance(url, str) or ("://" in url and not url.startswith("file://")):
            return False
        path = os.path.normpath(os.path.expanduser(url[len("file://"):] if url.startswith("file://") else url))
        if not os.path.isabs(path) or not self._inside(path):
            return False
        parts = os.path.relpath(path, self.root).split(os.sep)
        if len(parts) < 2 or parts[0] == RESERVED_SEGMENT:
            return False  # shards live in a dataset directory, never at the root or among markers
        name = parts[-1]
        return bool(_SHARD_RE.match(name) or _SIDECAR_RE.match(name) or _TMP_RE.match(name))

    def locations(self, url: str) -> set[str]:
        """The paths under the root that reference ``url`` may denote (see :meth:`DataStore.locations`).

        ``file://`` (also percent-encoded), ``~``, duplicate slashes, ``.``/``..`` and
        symlinked folders are resolved; a relative path is taken both from the current
        directory and from the store root."""
        if not isinstance(url, str) or ("://" in url and not url.startswith("file://")):
            return set()
        raws = {url}
        if url.startswith("file://"):
            rest = url[len("file://"):]
            if rest.startswith("localhost/"):
                rest = rest[len("localhost"):]
            if not rest.startswith("/"):
                return set()
            raws = {rest, unquote(rest)}
        out: set[str] = set()
        for raw in raws:
            path = os.path.expanduser(raw)
            bases = [path] if os.path.isabs(path) else [os.path.join(os.getcwd(), path), os.path.join(self.root, path)]
            for base in bases:
                base = "/" + base.lstrip("/")  # POSIX keeps a leading '//' in normpath
                for form in (os.path.normpath(base), os.path.realpath(base)):
                    if self._inside(form):
                        out.add(form)
        return out

    # ------------------------------------------------------------- ownership
    def owner_ids(self) -> set[str]:
        """The index identities recorded under ``<root>/.atdata-dagster/owners/``."""
        try:
            names = os.listdir(self.root / OWNER_DIR)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise StoreError(f"cannot read the ownership markers in {self.root / OWNER_DIR}: {exc.strerror or exc}") from exc
        return {n for n in names if valid_owner_id(n)}

    def claim(self, owner_id: str) -> None:
        """Write ``<root>/.atdata-dagster/owners/<owner_id>`` unless it exists (once per process)."""
        if owner_id in self._claimed:
            return
        if not valid_owner_id(owner_id):
            raise StoreError(f"index identity {owner_id!r} is not 32 hex digits; it cannot mark {self.root}")
        directory = self.root / OWNER_DIR
        marker = directory / owner_id
        try:
            if not marker.exists():
                directory.mkdir(parents=True, exist_ok=True)
                record = {"format": "atdata-dagster-store-owner", "version": 1, "index_id": owner_id}
                atomic_write(marker, json.dumps(record).encode(), tmp=directory / f".tmp-{uuid.uuid4().hex}")
        except OSError as exc:
            raise StoreError(f"cannot write the ownership marker {marker}: {exc.strerror or exc}") from exc
        self._claimed.add(owner_id)

    def delete(self, url: str) -> None:
        path = self._path(url)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror or exc}") from exc

    def restore(self, url: str, data: BinaryIO) -> None:
        path = self._path(url)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}.tar.part"  # gc's own temp name: a crash leaves nothing it misses
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                shutil.copyfileobj(data, f, 1 << 20)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot restore {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- write_samples' fixed paths


class PathSink(DiskSink):
    """A disk sink whose commit renames the shard onto a fixed path (``write_samples``).

    ``pattern`` is a printf pattern (``%`` in folder names escaped as ``%%``) when
    ``numbered``, else the literal path."""

    def __init__(self, pattern: str, numbered: bool):
        self.pattern, self.numbered = pattern, numbered
        directory = os.path.dirname(pattern % 0 if numbered else pattern) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create shard directory {directory}: {exc}") from exc
        super().__init__(directory)

    def _place(self, index: int, sha256: str) -> str:
        """The fixed name, replaced (DiskSink.commit fsyncs before and after, and aborts on error)."""
        final = self.pattern % index if self.numbered else self.pattern
        try:
            os.replace(self.tmp_path, final)
        except OSError as exc:
            raise StoreError(f"cannot commit shard {final}: {exc.strerror or exc}") from exc
        return final


class PathStore(DataStore):
    """Fixed-name shards at ``pattern % index`` (the plain ``write_samples`` layout)."""

    def __init__(self, pattern: str, numbered: bool):
        self.pattern, self.numbered = pattern, numbered

    def open_sink(self, prefix: str) -> PathSink:
        return PathSink(self.pattern, self.numbered)

    def put_sidecar(self, shard_url: str, suffix: str, data: bytes) -> str:
        path = (shard_url[:-4] if shard_url.endswith(".tar") else shard_url) + suffix
        try:
            atomic_write(path, data, tmp=f"{path}.tmp-{uuid.uuid4().hex}")
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        return path

    def open_read(self, url: str):
        return open(url, "rb")

    def owns(self, url: str) -> bool:  # pragma: no cover - not used for plain paths
        return False

    def iter_shard_urls(self) -> Iterator[str]:  # pragma: no cover
        return iter(())

    def delete(self, url: str) -> None:
        try:
            os.unlink(url)
        except FileNotFoundError:
            pass
