"""Durable local file writes: the one place the package writes a file atomically.

Layer 0 (imports nothing from the package): stores, stubs and ``write_samples`` sidecars
all use :func:`atomic_write`, so every such write is fsynced before it becomes visible.
"""

from __future__ import annotations

import hashlib
import os
import uuid

__all__ = ["atomic_write", "fsync_dir", "sha256_bytes", "sha256_file"]


def sha256_file(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks (atdata 0.7's name)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """SHA-256 hex digest of in-memory bytes (atdata 0.7's name)."""
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or link inside directory ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. some network file systems
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, *, tmp: str | os.PathLike | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to ``tmp`` (default ``<dir>/.tmp-<uuid4>.part``, in the same directory),
    are fsynced, renamed over ``path``, and the directory is fsynced. On failure the
    temporary file is removed and the ``OSError`` is raised.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    tmp_path = os.fspath(tmp) if tmp is not None else os.path.join(directory, f".tmp-{uuid.uuid4().hex}.part")
    try:
        with open(tmp_path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    fsync_dir(directory)
