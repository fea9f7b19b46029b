"""Parent side of the SIGKILL crash suite: drive the fork server, classify kills, audit stores.

- :class:`ForkServer` / :class:`Job`: start ``crash_child`` once, fork one writer per kill
  point, read its events, SIGKILL it by pid.
- :func:`classify`: which phase of ``Index.write`` the writer was in when it died.
- :class:`DiskView` / :class:`S3View`: what a store holds (shards under final names,
  temporary objects, sidecars, unfinished multipart uploads) and whether a shard under
  a final name holds exactly the content its name derives from.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atdata_dagster.stores.base import OWNER_DIR

ROOT = Path(__file__).resolve().parents[2]

# Phases of Index.write a kill can hit.
BEFORE_SHARDS = "before_shards"  # schema publishing, before the first sink opens
MID_SHARD = "mid_shard"  # a shard is being written (or committed) to its temp object
BETWEEN_SHARDS = "between_shards"  # shard i is committed, shard i+1 not opened yet
BEFORE_COMMIT = "before_commit"  # every shard committed, the index entry not yet
IN_COMMIT = "in_commit"  # inside the provider's entry commit
AFTER_COMMIT = "after_commit"  # the write completed before the kill landed
PHASES = (BEFORE_SHARDS, MID_SHARD, BETWEEN_SHARDS, BEFORE_COMMIT, IN_COMMIT, AFTER_COMMIT)


# ---------------------------------------------------------------------- fork server
class ForkServer:
    """One ``python -m tests.adversarial.crash_child`` process; forks a writer per job."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.adversarial.crash_child"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self._next_line(120)
        if line != "READY":
            raise RuntimeError(f"crash_child did not start (got {line!r}):\n{self.log_tail()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output from crash_child within {timeout:.0f}s:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def run(self, job: dict) -> "Job":
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        self.current = Job(self)
        return self.current

    def warm(self, job: dict) -> None:
        """Have the server open and close the job's provider once, so writers fork warm."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({**job, "warm": True}) + "\n").encode())
        self.proc.stdin.flush()
        line = self._next_line(120)
        if line != "WARMED":
            raise RuntimeError(f"crash_child could not warm up for {job} (got {line!r}):\n{self.log_tail()}")

    def close(self) -> None:
        current = getattr(self, "current", None)
        if current is not None and current.status is None:
            current.abandon()
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()  # our own child, by its Popen handle
                self.proc.wait()
        self._log.close()


@dataclass
class Job:
    """One forked writer: its events (``(name, arg)``), pid and wait status."""

    server: ForkServer
    pid: int | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    status: int | None = None
    killed_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None

    def _pump(self, timeout: float) -> None:
        line = self.server._next_line(timeout)
        if line is None:
            raise RuntimeError(f"crash_child exited:\n{self.server.log_tail()}")
        if line.startswith("EXIT "):
            _, pid, status = line.split()
            assert self.pid is None or int(pid) == self.pid, line
            self.status = int(status)
            self.ended_at = time.monotonic()
            return
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[0] != "EV":
            raise RuntimeError(f"unexpected line from crash_child: {line!r}")
        pid, name, arg = int(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""
        if self.pid is None:
            self.pid = pid
        if name == "START":
            self.started_at = time.monotonic()
        self.events.append((name, arg))

    def wait_for(self, name: str, timeout: float = 60.0) -> None:
        """Read events until ``name``; raise if the writer finishes or fails first."""
        deadline = time.monotonic() + timeout
        while not any(n == name for n, _ in self.events):
            if self.status is not None:
                raise AssertionError(f"writer {self.pid} ended (status {self.status}) before {name}: {self.events}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"writer {self.pid} did not reach {name} in {timeout:.0f}s: {self.events}")
            self._pump(left)
            if self.events and self.events[-1][0] == "ERROR":
                raise AssertionError(f"writer {self.pid} failed: {self.events[-1][1]}\n{self.server.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the writer by its pid, unless the server already reported its exit."""
        assert self.pid is not None
        self.killed_at = time.monotonic()
        while self.status is None and not self.server.lines.empty():
            self._pump(1.0)  # an EXIT already queued: the pid is reaped, never signal it
        if self.status is not None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def abandon(self) -> None:
        """After a failure: make sure the writer is dead and reaped, so the server can go on."""
        try:
            if self.pid is None:
                self._pump(30)  # its PID line
            if self.status is None:
                self.kill()
                self.finish(timeout=30)
        except Exception:  # noqa: BLE001, S110 - cleanup after a failure: the original failure is what matters
            pass

    def finish(self, timeout: float = 120.0) -> None:
        """Read events until the server reports the writer's exit."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"writer {self.pid} did not exit in {timeout:.0f}s: {self.events}")
            self._pump(left)

    @property
    def was_killed(self) -> bool:
        return self.status is not None and os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    @property
    def error(self) -> str | None:
        return next((arg for name, arg in self.events if name == "ERROR"), None)

    @property
    def cid(self) -> str | None:
        return next((arg for name, arg in self.events if name == "DONE"), None)


def classify(events: list[tuple[str, str]], num_shards: int) -> str:
    """The phase of ``Index.write`` a writer was in when its last event was emitted."""
    names = [n for n, _ in events]
    if "DONE" in names or "PUT_DONE" in names:
        return AFTER_COMMIT
    if "PUT_BEGIN" in names:
        return IN_COMMIT
    if "HOLD" in names:
        return BEFORE_COMMIT
    open_shard: int | None = None
    committed: set[int] = set()
    for name, arg in events:
        if name == "OPEN":
            open_shard = int(arg)
        elif name in ("COMMITTED", "COMMIT_STARTED"):
            committed.add(int(arg))
            if open_shard == int(arg):
                open_shard = None
    if open_shard is not None:
        return MID_SHARD
    if not committed:
        return BEFORE_SHARDS
    return BEFORE_COMMIT if max(committed) >= num_shards - 1 else BETWEEN_SHARDS


# ---------------------------------------------------------------------- store views
_DISK_FINAL = re.compile(r"^data--([0-9a-f]{8}|[0-9a-f]{16}|[0-9a-f]{64})--(\d{6})\.tar$")
_DISK_TMP = re.compile(r"^\.tmp-[0-9a-f]{32}\.(tar|sidecar)\.part$")
_S3_FINAL = re.compile(r"(?:^|/)data--([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})--(\d{6})\.tar$")


@dataclass
class Listing:
    finals: dict[str, int]  # shard URL under a final name -> size
    temps: list[str]  # temporary objects of writes in progress (or crashed)
    sidecars: list[str]  # manifest sidecars
    others: list[str]  # anything else


def _sha256_of(f) -> str:
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def sidecar_shard(url: str) -> str:
    """The shard URL a ``<stem>.manifest.<ext>`` sidecar belongs to."""
    return url.split(".manifest.", 1)[0] + ".tar"


class DiskView:
    """What a LocalDiskStore root holds."""

    kind = "disk"

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self._complete: set[tuple] = set()

    def listing(self) -> Listing:
        out = Listing({}, [], [], [])
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = os.path.join(dirpath, name)
                if _DISK_TMP.match(name):
                    out.temps.append(path)
                elif ".manifest." in name:
                    out.sidecars.append(path)
                elif name.endswith(".tar"):
                    out.finals[path] = os.path.getsize(path)
                elif os.path.relpath(path, self.root).startswith(OWNER_DIR + "/"):
                    continue  # the index's ownership marker (gc's proof that it owns the store)
                else:
                    out.others.append(path)
        return out

    def multipart_uploads(self) -> list[str]:
        return []

    @staticmethod
    def _ident(url: str) -> tuple:
        st = os.stat(url)
        return (url, st.st_ino, st.st_size, st.st_mtime_ns)

    def mark_complete(self, url: str, sha: str) -> None:
        """``url`` was just verified to hold bytes of SHA-256 ``sha``: check its name says so."""
        m = _DISK_FINAL.match(os.path.basename(url))
        assert m and sha.startswith(m.group(1)), f"{url}: its name does not derive from its SHA-256 {sha}"
        self._complete.add(self._ident(url))

    def assert_complete(self, url: str) -> None:
        """A shard under a final name holds exactly the bytes whose SHA-256 names it."""
        key = self._ident(url)
        if key in self._complete:
            return
        m = _DISK_FINAL.match(os.path.basename(url))
        assert m, f"{url}: a .tar under the store root that is not named data--<hex>--<NNNNNN>.tar"
        with open(url, "rb") as f:
            sha = _sha256_of(f)
        assert sha.startswith(m.group(1)), (
            f"{url} is under a final name but holds other bytes (sha256 {sha}): a partial or torn shard"
        )
        self._complete.add(key)


class S3View:
    """What a bucket of the real S3 server holds (with a plain boto3 client)."""

    kind = "s3"

    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket
        self._complete: set[tuple] = set()
        self._etags: dict[str, str] = {}  # from the last listing

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def listing(self) -> Listing:
        out = Listing({}, [], [], [])
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", ()):
                key, url = obj["Key"], self._url(obj["Key"])
                if "/.tmp/" in f"/{key}":
                    out.temps.append(url)
                elif ".manifest." in key:
                    out.sidecars.append(url)
                elif key.endswith(".tar"):
                    out.finals[url] = int(obj["Size"])
                    self._etags[url] = obj.get("ETag", "")
                elif key.startswith(OWNER_DIR + "/"):
                    continue  # the index's ownership marker (gc's proof that it owns the store)
                else:
                    out.others.append(url)
        return out

    def multipart_uploads(self) -> list[str]:
        out = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
            for up in page.get("Uploads", ()):
                out.append(f"{self._url(up['Key'])} (upload {up['UploadId']})")
        return out

    @staticmethod
    def _shard_id(sha: str) -> str:
        return f"{sha[0:8]}-{sha[8:12]}-{sha[12:16]}-{sha[16:20]}-{sha[20:32]}"

    def mark_complete(self, url: str, sha: str) -> None:
        """``url`` (as listed last) was just verified to hold bytes of SHA-256 ``sha``: check its name."""
        m = _S3_FINAL.search(url)
        assert m and m.group(1) == self._shard_id(sha), f"{url}: its key does not derive from its SHA-256 {sha}"
        self._complete.add((url, self._etags.get(url)))

    def assert_complete(self, url: str) -> None:
        """A shard under a final key holds exactly the bytes whose SHA-256 names it."""
        key = url[len(f"s3://{self.bucket}/"):]
        if (url, self._etags.get(url)) in self._complete:
            return  # the same object (ETag) was hashed before
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        ident = (url, resp.get("ETag"))
        m = _S3_FINAL.search(key)
        assert m, f"{url}: a .tar in the bucket that is not named data--<uuid-shaped id>--<NNNNNN>.tar"
        sha = _sha256_of(resp["Body"])
        assert self._shard_id(sha) == m.group(1), (
            f"{url} is under a final key but holds other bytes (sha256 {sha}): a partial or torn shard"
        )
        recorded = (resp.get("Metadata") or {}).get("sha256")
        assert recorded == sha, f"{url}: x-amz-meta-sha256 is {recorded!r}, the content's SHA-256 is {sha}"
        self._complete.add(ident)


def describe(listing: Listing, uploads: list[str], referenced: set[str]) -> dict[str, list[str]]:
    """What gc should remove: temporary objects, unreferenced shards and their sidecars, open
    uploads. ``stray_sidecars`` are sidecars whose shard does not exist at all."""
    return {
        "temps": sorted(listing.temps),
        "orphan_shards": sorted(u for u in listing.finals if u not in referenced),
        "orphan_sidecars": sorted(
            u for u in listing.sidecars if sidecar_shard(u) not in referenced and sidecar_shard(u) in listing.finals
        ),
        "stray_sidecars": sorted(u for u in listing.sidecars if sidecar_shard(u) not in listing.finals),
        "uploads": sorted(uploads),
        "others": sorted(listing.others),
    }


def referenced_urls(index: Any) -> set[str]:
    """Every shard URL any entry of the index's local repository references."""
    out: set[str] = set()
    for entry in index.provider.iter_entries():
        out.update(entry.data_urls)
    return out
