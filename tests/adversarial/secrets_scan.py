"""The leak scanner of the secrets sweep (``test_secrets.py``) and the dumps it reads.

A :class:`LeakScanner` knows the sentinel secrets of a test and looks for each of them
in every text it is shown, in every form a secret takes on its way out: as is,
URL-encoded (``quote``/``quote_plus``, as in a DSN or a form body), JSON-escaped, and
by its random core alone (so a secret that was cut, re-encoded or embedded in a longer
token is still found). It also counts what it scanned per place, so a test can prove
that the place was not empty (no vacuous pass).

The dump helpers read the places a secret could end up in, from the outside, with
their own clients: every table of a PostgreSQL schema, every record of an ATProto
repo, every object key and manifest of a bucket, every file under a directory, every
Dagster event-log record / run / snapshot, every exception of a cause/context chain.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import traceback
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote, quote_plus, urlencode


@dataclass(frozen=True)
class Sentinel:
    """One secret: ``SENTINEL-<KIND>-<32 hex><suffix>``; the hex core is what gives it away."""

    kind: str
    core: str
    suffix: str = ""

    @classmethod
    def new(cls, kind: str, suffix: str = "") -> "Sentinel":
        return cls(kind, secrets.token_hex(16), suffix)

    @property
    def value(self) -> str:
        return f"SENTINEL-{self.kind}-{self.core}{self.suffix}"

    def forms(self) -> dict[str, str]:
        """Every spelling that would betray the secret, by name."""
        v = self.value
        out = {
            "plain": v,
            "url-encoded": quote(v, safe=""),
            "url-encoded (path)": quote(v),
            "form-encoded": quote_plus(v),
            "json-escaped": json.dumps(v)[1:-1],
            "json-escaped slash": json.dumps(v)[1:-1].replace("/", "\\/"),
            "random core": self.core,
        }
        return out


@dataclass
class Leak:
    place: str
    secret: str
    form: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.secret} ({self.form}) in {self.place}: ...{self.excerpt}..."


@dataclass
class LeakScanner:
    """Finds any form of any sentinel in the texts it is given; remembers what it saw."""

    sentinels: list[Sentinel]
    #: secrets that are not ours to choose, by the marks they cannot avoid (name -> substrings)
    markers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    leaks: list[Leak] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)  # place -> number of texts scanned
    chars: Counter = field(default_factory=Counter)  # place -> characters scanned

    def scan(self, place: str, obj: Any) -> list[Leak]:
        """Scan ``obj`` (str, bytes or anything with a repr) under the label ``place``."""
        text = as_text(obj)
        self.seen[place] += 1
        self.chars[place] += len(text)
        found = []
        for s in self.sentinels:
            for form_name, form in s.forms().items():
                at = text.find(form)
                if at >= 0:
                    excerpt = text[max(0, at - 80): at + len(form) + 40].replace("\n", "\\n")
                    found.append(Leak(place, s.kind, form_name, excerpt))
                    break  # one form is enough to flag this text for this secret
        for name, marks in self.markers.items():
            for mark in marks:
                at = text.find(mark)
                if at >= 0:
                    excerpt = text[max(0, at - 80): at + len(mark) + 40].replace("\n", "\\n")
                    found.append(Leak(place, name, f"marker {mark!r}", excerpt))
                    break
        self.leaks.extend(found)
        return found

    def scan_all(self, place: str, objs: Iterable[Any]) -> int:
        n = 0
        for obj in objs:
            self.scan(place, obj)
            n += 1
        return n

    def scan_exception(self, place: str, exc: BaseException) -> int:
        """Scan an exception: message, repr, args, attributes and its formatted traceback,
        then every exception of its ``__cause__`` / ``__context__`` chain the same way."""
        n = 0
        for e in exception_chain(exc):
            self.scan(place, exception_texts(e))
            n += 1
        self.scan(place, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return n

    def assert_clean(self) -> None:
        assert not self.leaks, "secrets leaked:\n" + "\n".join(str(leak) for leak in self.leaks[:40])

    def assert_saw(self, place: str, at_least: int = 1, chars: int = 1) -> None:
        assert self.seen[place] >= at_least, (
            f"the scan saw {self.seen[place]} texts in {place!r}, expected at least {at_least}: "
            "the place was empty, so a clean scan of it proves nothing"
        )
        assert self.chars[place] >= chars, f"the scan of {place!r} read only {self.chars[place]} characters"


#: an ATProto session token (a JWT) starts with base64url of '{"typ"' or '{"alg"'
JWT_MARKERS = {"PDS session token": ("eyJ0eXAi", "eyJhbGci")}


def as_text(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("latin-1")  # byte-for-byte: an ASCII sentinel stays findable
    try:
        return json.dumps(obj, default=repr, sort_keys=True) + "\n" + repr(obj)
    except (TypeError, ValueError):
        return repr(obj)


# --------------------------------------------------------------------------- exceptions
def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``
    (suppressed contexts included: ``raise ... from None`` still keeps ``__context__``)."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__])
        if isinstance(e, BaseExceptionGroup):  # pragma: no cover - none expected here
            todo.extend(e.exceptions)


def exception_texts(e: BaseException) -> str:
    parts = [type(e).__qualname__, str(e), repr(e), repr(e.args)]
    try:
        parts.append(repr(vars(e)))
    except TypeError:  # pragma: no cover - no __dict__
        pass
    return "\n".join(parts)


# --------------------------------------------------------------------------- PostgreSQL
def postgres_rows(dsn: str) -> dict[str, list[str]]:
    """Every row of every table of the DSN's schema (its ``search_path``), as text, by table."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(dsn)
    options = url.query.get("options", "")
    schema = options.split("search_path=", 1)[1] if "search_path=" in options else "public"
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    out: dict[str, list[str]] = {}
    with psycopg.connect(plain, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            out[table] = [as_row_text(r) for r in rows]
    return out


def as_row_text(row: Iterable[Any]) -> str:
    return " | ".join(as_text(v) if isinstance(v, (bytes, bytearray, memoryview)) else repr(v) for v in row)


# --------------------------------------------------------------------------- ATProto
def _xrpc(base: str, nsid: str, **params: Any) -> dict:
    url = f"{base}/xrpc/{nsid}?{urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def pds_records(pds_url: str, did: str) -> dict[str, list[str]]:
    """Every record of every collection of the repo (``describeRepo`` + ``listRecords``), as JSON text."""
    repo = _xrpc(pds_url, "com.atproto.repo.describeRepo", repo=did)
    out: dict[str, list[str]] = {"describeRepo": [json.dumps(repo)]}
    for collection in repo.get("collections", []):
        texts, cursor = [], None
        while True:
            params = {"repo": did, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = _xrpc(pds_url, "com.atproto.repo.listRecords", **params)
            texts.extend(json.dumps(r) for r in page.get("records", []))
            cursor = page.get("cursor")
            if not cursor or not page.get("records"):
                break
        out[collection] = texts
    return out


# --------------------------------------------------------------------------- S3
def bucket_texts(client: Any, bucket: str) -> list[str]:
    """Every object key of the bucket, with its user metadata; manifests and other small
    non-tar objects with their content (the tar shards hold only the samples)."""
    out = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            head = client.head_object(Bucket=bucket, Key=key)
            out.append(f"{key} {head.get('Metadata')!r}")
            if not key.endswith(".tar") and obj["Size"] < 1_000_000:
                out.append(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("latin-1"))
    return out


# --------------------------------------------------------------------------- files
def file_texts(root: Path) -> Iterator[tuple[str, str]]:
    """``(path, content)`` of every regular file under ``root`` (bytes read as latin-1)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                yield str(path), path.read_bytes().decode("latin-1")
            except OSError:  # a socket or a file removed meanwhile
                continue


# --------------------------------------------------------------------------- Dagster
def dagster_texts(instance: Any) -> dict[str, list[str]]:
    """Everything the Dagster instance stored about its runs, serialized as it is stored:
    runs (config, tags), job and execution-plan snapshots, and every event-log record."""
    from dagster._serdes import serialize_value

    out: dict[str, list[str]] = {"runs": [], "run_config": [], "snapshots": [], "event_log": [], "user_messages": []}
    for run in instance.get_runs():
        out["runs"].append(serialize_value(run))
        out["run_config"].append(json.dumps(run.run_config, sort_keys=True))
        if run.job_snapshot_id:
            out["snapshots"].append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
        if run.execution_plan_snapshot_id:
            out["snapshots"].append(serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)))
        for record in instance.all_logs(run.run_id):
            out["event_log"].append(serialize_value(record))
            if record.dagster_event is None:  # context.log.* messages
                out["user_messages"].append(record.user_message)
    return out


def log_record_texts(records: Iterable[logging.LogRecord]) -> Iterator[str]:
    """Each Python log record: logger, formatted message, raw args and any exception text."""
    for r in records:
        try:
            message = r.getMessage()
        except Exception as exc:  # noqa: BLE001 - a broken record is still scanned raw
            message = f"<unformattable: {exc!r}> {r.msg!r}"
        parts = [r.name, message, repr(r.args)]
        if r.exc_info and r.exc_info[1] is not None:
            parts.append("".join(traceback.format_exception(*r.exc_info)))
        yield "\n".join(parts)
