"""A lazy, typed wrapper around ``atproto.Client`` for the records and blobs we publish.

Nothing touches the network until the first call; a client given a handle and app
password logs in on its first write. Records travel as plain JSON dicts (the SDK's
raw XRPC calls, so unknown lexicons are not reshaped), blobs are streamed both ways,
and every SDK / HTTP failure becomes an :class:`AtmosphereError` subclass whose message
names the service and the operation (never the password).

Reads that a hostile PDS, PLC directory or DID host could stretch are bounded
(:class:`ReadLimits`): paging through
``listRecords`` stops with :class:`AtmosphereLimitError` after a page, record or time
budget (never a silent truncation: a partial listing would resolve the wrong label);
blob and DID-document bodies are streamed with a byte cap; a redirect to another host
(scheme, host or port) is refused, for the SDK's XRPC calls as well. (One XRPC JSON
response is still read whole by the SDK.)
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

from ..errors import (
    AtmosphereAuthError,
    AtmosphereConnectionError,
    AtmosphereError,
    AtmosphereLimitError,
    AtmosphereNotFoundError,
    AtmosphereRateLimitError,
    AtmosphereUnavailableError,
    BlobTooLargeError,
)
from .records import AtUri, BlobRef, blob_cid

__all__ = ["AtmosphereClient", "ReadLimits", "Record", "RecordRef", "UploadedBlob", "DEFAULT_SERVICE", "DEFAULT_PLC"]

DEFAULT_SERVICE = "https://bsky.social"
DEFAULT_PLC = "https://plc.directory"
CHUNK = 1024 * 1024
_NOT_FOUND_ERRORS = frozenset({"RecordNotFound", "RepoNotFound", "HandleNotFound", "BlobNotFound", "NotFound"})
_NOT_FOUND_TEXT = ("could not locate record", "could not find repo", "unable to resolve handle", "blob not found")

T = TypeVar("T")


def _service_root(url: str) -> str:
    url = (url or "").strip().rstrip("/")
    if url.endswith("/xrpc"):
        url = url[: -len("/xrpc")]
    if not url.startswith(("http://", "https://")):
        raise AtmosphereError(f"service URL {url!r} must start with http:// or https://")
    return url


@dataclass(frozen=True)
class ReadLimits:
    """Budgets for reading from a PDS, a PLC directory or a DID host (all of them may be hostile).

    ``max_pages`` / ``max_records``: most ``listRecords`` pages / records one listing may
    take; ``max_list_seconds``: wall-clock budget of one listing; past any of them the
    listing raises :class:`AtmosphereLimitError` (it never returns a silently truncated
    list). ``max_blob_bytes``: largest blob read (``getBlob``); ``max_did_document_bytes``:
    largest DID document. Redirects are followed only to the same scheme, host and port.
    """

    max_pages: int = 1_000
    max_records: int = 100_000
    max_list_seconds: float = 300.0
    max_blob_bytes: int = 1 << 30
    max_did_document_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_pages", "max_records", "max_blob_bytes", "max_did_document_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ReadLimits.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_list_seconds, (int, float)) or self.max_list_seconds <= 0:
            raise ValueError(f"ReadLimits.max_list_seconds must be > 0, got {self.max_list_seconds!r}")


def _httpx() -> Any:
    """The httpx module, imported on first network use (it takes ~0.4 s)."""
    import httpx  # lazy: httpx (and the atproto SDK) load on first network use

    return httpx


def _origin(url: Any) -> tuple[str, str, int | None]:
    httpx = _httpx()

    u = httpx.URL(str(url))
    return u.scheme, (u.host or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme)


def _refuse_cross_host_redirect(response: Any) -> None:
    """httpx response hook: a redirect to another scheme/host/port raises instead of being followed."""
    if not response.is_redirect:
        return
    source = response.request.url
    target = source.join(response.headers.get("location", ""))
    if _origin(target) != _origin(source):
        response.close()
        raise AtmosphereLimitError(
            f"{source.copy_with(query=None)} redirects (HTTP {response.status_code}) to another host, "
            f"{target.copy_with(query=None)}; redirects to other hosts are not followed for atmosphere reads"
        )


_HOOKS = {"response": [_refuse_cross_host_redirect]}


def _sdk_request(timeout: float) -> Any:
    """The SDK's HTTP layer with our redirect rule (it follows every redirect by default)."""
    from atproto_client.request import Request  # lazy: the atproto SDK and httpx load on first network use

    return Request(timeout=timeout, event_hooks=_HOOKS)


@dataclass(frozen=True)
class RecordRef:
    """What a write returns: the record's AT URI and CID."""

    uri: str
    cid: str


@dataclass(frozen=True)
class Record:
    """A record read back from a repository (``value`` is the plain JSON object)."""

    uri: str
    cid: str | None
    value: dict

    @property
    def rkey(self) -> str:
        return AtUri.parse(self.uri).rkey or ""


@dataclass(frozen=True)
class UploadedBlob:
    """A blob accepted by the PDS, with the SHA-256 and size we streamed."""

    ref: BlobRef
    sha256: str
    size: int


def _error_parts(exc: Any) -> tuple[int | None, str, str]:
    """(status, XRPC error name, message) of an SDK request error."""
    resp = getattr(exc, "response", None)
    if resp is None:
        return None, "", ""
    content = getattr(resp, "content", None)
    name = getattr(content, "error", None) or (content.get("error") if isinstance(content, dict) else None) or ""
    message = getattr(content, "message", None) or (content.get("message") if isinstance(content, dict) else None) or ""
    return getattr(resp, "status_code", None), str(name), str(message)


def _retry_after(exc: Any) -> float | None:
    value = getattr(exc, "retry_after", None)
    if value is not None:
        return float(value)
    reset = getattr(exc, "reset_at", None)
    if isinstance(reset, datetime):
        return max((reset - datetime.now(timezone.utc)).total_seconds(), 0.0)
    return None


def _is_not_found(name: str, message: str) -> bool:
    low = message.lower()
    return name in _NOT_FOUND_ERRORS or any(t in low for t in _NOT_FOUND_TEXT)


class _BlobStream(io.RawIOBase):
    """A readable raw stream over a streaming httpx response (closes it on close), capped at ``limit`` bytes."""

    def __init__(self, response: Any, what: str, limit: int | None = None):
        self._resp = response
        self._chunks = response.iter_bytes(CHUNK)
        self._buf = b""
        self._what = what
        self._limit = limit
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        httpx = _httpx()

        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
            except httpx.HTTPError as exc:
                raise AtmosphereConnectionError(f"reading {self._what} was cut off: {exc}") from exc
            self._count += len(self._buf)
            if self._limit is not None and self._count > self._limit:
                self._buf = b""
                self._resp.close()
                raise AtmosphereLimitError(
                    f"reading {self._what}: the body is longer than {self._limit} bytes "
                    "(ReadLimits.max_blob_bytes); stopped reading"
                )
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
        super().close()


class AtmosphereClient:
    """An ATProto session for publishing and reading dataset records.

    ``service_url`` is the PDS (or entryway) to talk to; with ``handle`` and
    ``password`` (an app password) the client logs in on first write. ``client``
    wraps an existing ``atproto.Client`` (logged in or not). ``plc_url`` is the PLC
    directory used to find the PDS that hosts another account's blobs and records.
    No network call happens before the first operation.
    """

    def __init__(
        self,
        service_url: str = DEFAULT_SERVICE,
        *,
        handle: str | None = None,
        password: str | None = None,
        client: Any = None,
        plc_url: str = DEFAULT_PLC,
        timeout: float = 30.0,
        limits: ReadLimits | None = None,
    ):
        if (handle is None) != (password is None):
            raise AtmosphereUnavailableError(
                "pass both handle= and password= (an app password) to log in, or neither for read-only use"
            )
        if client is None:
            from atproto import Client  # lazy: the atproto SDK and httpx load on first network use

            client = Client(base_url=_service_root(service_url), request=_sdk_request(timeout))
            self.service_url = _service_root(service_url)
        else:
            base = getattr(client, "_base_url", None) or service_url
            self.service_url = _service_root(base)
        self._client = client
        self._handle = handle
        self._password = password
        self.plc_url = plc_url.rstrip("/")
        self.timeout = timeout
        self.limits = limits if limits is not None else ReadLimits()
        if not isinstance(self.limits, ReadLimits):
            raise AtmosphereUnavailableError(f"limits must be a ReadLimits, got {type(limits).__name__}")
        self._lock = threading.RLock()
        self._handles: dict[str, str] = {}
        self._pds: dict[str, str] = {}
        self._readers: dict[str, Any] = {}
        self._http: Any = None

    @classmethod
    def from_client(cls, client: Any, *, plc_url: str = DEFAULT_PLC, timeout: float = 30.0,
                    limits: ReadLimits | None = None) -> "AtmosphereClient":
        """Wrap a plain ``atproto.Client`` (``Client(base_url=...)`` or an already logged-in one).

        Its own HTTP layer is used as configured (its redirect policy included); blob and
        DID-document reads go through this wrapper's bounded client.
        """
        return cls(client=client, plc_url=plc_url, timeout=timeout, limits=limits)

    def __repr__(self) -> str:
        who = self.handle or ("<session>" if self._session is not None else "anonymous")
        return f"AtmosphereClient({self.service_url!r}, {who})"

    # ------------------------------------------------------------------ session
    @property
    def _session(self) -> Any:
        return getattr(self._client, "_session", None)

    @property
    def atproto_client(self) -> Any:
        """The wrapped ``atproto.Client``."""
        return self._client

    @property
    def authenticated(self) -> bool:
        """Whether writes are possible: a session exists or credentials were given (no network)."""
        return self._session is not None or (self._handle is not None and self._password is not None)

    @property
    def handle(self) -> str | None:
        """The account's handle (from the session or the constructor)."""
        session = self._session
        return getattr(session, "handle", None) or self._handle

    @property
    def did(self) -> str:
        """The account's DID (logs in first if needed)."""
        return self._ensure_session("this operation").did

    def login(self) -> "AtmosphereClient":
        """Log in now instead of on first use; returns ``self``."""
        self._ensure_session("login")
        return self

    def _ensure_session(self, what: str) -> Any:
        session = self._session
        if session is not None:
            return session
        with self._lock:
            session = self._session
            if session is not None:
                return session
            if self._handle is None or self._password is None:
                raise AtmosphereUnavailableError(
                    f"{what} needs an authenticated atmosphere client, but this one is anonymous "
                    f"({self.service_url}); pass AtmosphereClient(service_url, handle=..., password=<app password>) "
                    "or a logged-in atproto.Client"
                )
            self._call(
                f"logging in as {self._handle}",
                lambda: self._client.login(self._handle, self._password, fetch_bsky_profile=False),
                service=self.service_url,
                login=True,
            )
            session = self._session
            if session is None:  # pragma: no cover - the SDK sets it or raises
                raise AtmosphereAuthError(f"authentication failed for {self._handle} at {self.service_url}: no session")
            return session

    @property
    def pds_url(self) -> str:
        """Where this client's requests go (after login: the account's own PDS)."""
        return _service_root(getattr(self._client, "_base_url", self.service_url))

    # ----------------------------------------------------------- error mapping
    def _call(self, op: str, fn: Callable[[], T], *, service: str | None = None, login: bool = False) -> T:
        httpx = _httpx()
        from atproto_client import exceptions as sdk  # lazy: the atproto SDK and httpx load on first network use

        service = service or self.pds_url
        try:
            return fn()
        except sdk.RateLimitExceededError as exc:
            wait = _retry_after(exc)
            hint = f"; retry after {wait:.0f} s" if wait is not None else "; retry later"
            raise AtmosphereRateLimitError(f"{op}: rate limited by {service} (HTTP 429){hint}", retry_after=wait) from None
        except sdk.InvokeTimeoutError:
            raise AtmosphereConnectionError(
                f"{op}: {service} did not answer within {self.timeout:.0f} s; check that the PDS is up and reachable"
            ) from None
        except sdk.UnauthorizedError as exc:
            status, name, message = _error_parts(exc)
            if login:
                raise AtmosphereAuthError(
                    f"authentication failed for {self._handle} at {service}: {message or name or status}; "
                    "check the handle and use an app password"
                ) from None
            raise AtmosphereAuthError(
                f"{op}: {service} refused the request (HTTP {status} {name}: {message}); "
                "the session may have expired or lacks permission: log in again"
            ) from None
        except sdk.NetworkError as exc:
            status, name, message = _error_parts(exc)
            if status is None:
                cause = exc.__cause__ or exc.__context__
                raise AtmosphereConnectionError(
                    f"{op}: cannot reach {service} ({cause or exc}); is the PDS running and the service URL right?"
                ) from None
            if status == 413:
                raise BlobTooLargeError(
                    f"{op}: {service} refused the upload as too large (HTTP 413 {name}: {message}); "
                    "lower blob_limit / maxsize below the PDS's upload limit, or use an S3 or HTTP data store"
                ) from None
            raise AtmosphereError(f"{op} failed at {service}: HTTP {status} {name}: {message}") from None
        except sdk.RequestErrorBase as exc:
            status, name, message = _error_parts(exc)
            if login and status == 400 and not _is_not_found(name, message):
                raise AtmosphereAuthError(
                    f"authentication failed for {self._handle} at {service}: {message or name or status}"
                ) from None
            if _is_not_found(name, message):
                raise AtmosphereNotFoundError(f"{op}: not found at {service} ({name}: {message})") from None
            raise AtmosphereError(f"{op} failed at {service}: HTTP {status} {name}: {message}") from None
        except sdk.LoginRequiredError:
            raise AtmosphereUnavailableError(
                f"{op} needs a logged-in session; pass handle= and password= (an app password)"
            ) from None
        except httpx.TransportError as exc:
            # The SDK wraps only httpx.NetworkError/TimeoutException; a server that drops the
            # connection mid-request (httpx.RemoteProtocolError) would otherwise escape untyped.
            raise AtmosphereConnectionError(
                f"{op}: the connection to {service} failed ({type(exc).__name__}: {exc}); "
                "is the PDS running and the service URL right?"
            ) from None

    def _query(self, client: Any, nsid: str, params: dict, op: str, service: str | None = None) -> dict:
        from atproto_client.models.dot_dict import DotDict  # lazy: the atproto SDK and httpx load on first network use

        clean = {k: v for k, v in params.items() if v is not None}
        resp = self._call(op, lambda: client.invoke_query(nsid, params=DotDict(clean)), service=service)
        content = resp.content
        if not isinstance(content, dict):
            raise AtmosphereError(f"{op}: {service or self.pds_url} answered {nsid} with non-JSON content")
        return content

    def _procedure(self, nsid: str, body: dict, op: str) -> dict:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        resp = self._call(op, lambda: self._client.invoke_procedure(
            nsid, data=None, content=payload, headers={"Content-Type": "application/json"}))
        return resp.content if isinstance(resp.content, dict) else {}

    # --------------------------------------------------------------- identity
    def resolve_handle(self, handle: str) -> str:
        """The DID of ``handle`` (a DID is returned unchanged); :class:`AtmosphereNotFoundError` if unknown."""
        handle = handle.lstrip("@")
        if handle.startswith("did:"):
            return handle
        key = handle.lower()
        if key in self._handles:
            return self._handles[key]
        session = self._session
        if session is not None and (getattr(session, "handle", "") or "").lower() == key:
            return session.did
        try:
            out = self._query(self._client, "com.atproto.identity.resolveHandle", {"handle": handle},
                              f"resolving handle {handle}")
        except AtmosphereNotFoundError:
            raise AtmosphereNotFoundError(
                f"handle {handle!r} not found: {self.pds_url} cannot resolve it; check the spelling "
                "or use the account's DID"
            ) from None
        did = out.get("did")
        if not isinstance(did, str) or not did.startswith("did:"):
            raise AtmosphereError(f"resolving handle {handle}: {self.pds_url} answered without a DID")
        self._handles[key] = did
        return did

    def pds_endpoint(self, did: str) -> str:
        """The URL of the PDS hosting ``did`` (session, then describeRepo, then the DID document)."""
        if did in self._pds:
            return self._pds[did]
        session = self._session
        endpoint: str | None = None
        if session is not None and session.did == did:
            endpoint = getattr(session, "pds_endpoint", None) or self.pds_url
        if endpoint is None:
            try:
                desc = self._query(self._client, "com.atproto.repo.describeRepo", {"repo": did}, f"describing {did}")
                endpoint = _pds_from_did_doc(desc.get("didDoc")) or self.pds_url
            except AtmosphereNotFoundError:
                endpoint = None
            except AtmosphereError:
                endpoint = None
        if endpoint is None:
            endpoint = _pds_from_did_doc(self._did_document(did))
        if not endpoint:
            raise AtmosphereNotFoundError(f"{did} has no ATProto PDS in its DID document")
        endpoint = _service_root(endpoint)
        self._pds[did] = endpoint
        return endpoint

    def _did_document(self, did: str) -> dict:
        if did.startswith("did:plc:"):
            url = f"{self.plc_url}/{did}"
        elif did.startswith("did:web:"):
            host = did[len("did:web:"):].replace("%3A", ":")
            url = f"https://{host}/.well-known/did.json"
        else:
            raise AtmosphereNotFoundError(f"cannot resolve {did!r}: only did:plc and did:web are supported")
        op = f"resolving {did}"
        resp = self._http_send("GET", url, op)
        cap = self.limits.max_did_document_bytes
        try:
            if resp.status_code == 404:
                raise AtmosphereNotFoundError(f"{did} is not registered at {url}")
            if resp.status_code >= 400:
                raise AtmosphereError(f"resolving {did}: {url} answered HTTP {resp.status_code}")
            body = self._read_capped(resp, cap, f"{op}: the DID document at {url}", "max_did_document_bytes")
        finally:
            resp.close()
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise AtmosphereError(f"resolving {did}: {url} did not return JSON") from None
        if not isinstance(doc, dict):
            raise AtmosphereError(f"resolving {did}: {url} did not return a DID document")
        return doc

    # ----------------------------------------------------------------- records
    def create_record(self, collection: str, record: dict, *, rkey: str | None = None,
                      validate: bool = False) -> RecordRef:
        """Create a record in the caller's repository (``validate=False``: our lexicons are not on the PDS)."""
        did = self._ensure_session(f"creating a {collection} record").did
        body: dict[str, Any] = {"repo": did, "collection": collection, "record": record, "validate": validate}
        if rkey is not None:
            body["rkey"] = rkey
        out = self._procedure("com.atproto.repo.createRecord", body, f"creating a {collection} record")
        return RecordRef(out["uri"], out["cid"])

    def put_record(self, collection: str, rkey: str, record: dict, *, validate: bool = False) -> RecordRef:
        """Create or replace the record at ``collection/rkey`` in the caller's repository."""
        did = self._ensure_session(f"writing {collection}/{rkey}").did
        body = {"repo": did, "collection": collection, "rkey": rkey, "record": record, "validate": validate}
        out = self._procedure("com.atproto.repo.putRecord", body, f"writing {collection}/{rkey}")
        return RecordRef(out["uri"], out["cid"])

    def delete_record(self, collection: str, rkey: str) -> None:
        """Delete a record of the caller's repository (a missing record is not an error)."""
        did = self._ensure_session(f"deleting {collection}/{rkey}").did
        self._procedure("com.atproto.repo.deleteRecord", {"repo": did, "collection": collection, "rkey": rkey},
                        f"deleting {collection}/{rkey}")

    def get_record(self, repo: str, collection: str, rkey: str) -> Record:
        """One record; :class:`AtmosphereNotFoundError` if it does not exist."""
        uri = f"at://{repo}/{collection}/{rkey}"
        out = self._read(repo, "com.atproto.repo.getRecord", {"repo": repo, "collection": collection, "rkey": rkey},
                         f"reading {uri}")
        value = out.get("value")
        if not isinstance(value, dict):
            raise AtmosphereError(f"reading {uri}: the PDS returned no record value")
        return Record(out.get("uri") or uri, out.get("cid"), value)

    def get_record_uri(self, uri: str) -> Record:
        """The record at an ``at://`` URI (a handle authority is resolved first)."""
        parsed = AtUri.parse(uri)
        if not parsed.is_record:
            raise AtmosphereError(f"{uri} does not name a record (at://<did>/<collection>/<rkey>)")
        return self.get_record(self.resolve_handle(parsed.authority), parsed.collection or "", parsed.rkey or "")

    def list_records(self, repo: str, collection: str, *, page_size: int = 100,
                     reverse: bool = False) -> Iterator[Record]:
        """Every record of ``collection`` in ``repo``, following the cursor through all pages.

        Stops at an empty page or a repeated cursor; raises :class:`AtmosphereLimitError`
        when the listing goes past ``limits.max_pages`` pages, ``limits.max_records``
        records or ``limits.max_list_seconds`` seconds (the records yielded so far are
        real, but the listing is incomplete).
        """
        if not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be 1..100, got {page_size}")
        limits = self.limits
        what = f"listing {collection} of {repo}"
        deadline = time.monotonic() + limits.max_list_seconds
        cursor: str | None = None
        seen: set[str] = set()
        pages = records_seen = 0
        while True:
            if pages >= limits.max_pages:
                raise self._over_budget(what, f"{pages} pages", "max_pages")
            if time.monotonic() > deadline:
                raise self._over_budget(what, f"{limits.max_list_seconds:g} seconds", "max_list_seconds")
            pages += 1
            out = self._read(repo, "com.atproto.repo.listRecords",
                             {"repo": repo, "collection": collection, "limit": page_size, "cursor": cursor,
                              "reverse": "true" if reverse else None},
                             f"listing {collection} of {repo}")
            records = out.get("records") or []
            if not isinstance(records, list):
                raise AtmosphereError(f"{what}: the PDS answered with 'records' that is not a list")
            records_seen += len(records)
            if records_seen > limits.max_records:
                raise self._over_budget(what, f"{limits.max_records} records", "max_records")
            for item in records:
                if isinstance(item, dict) and isinstance(item.get("value"), dict):
                    yield Record(item.get("uri", ""), item.get("cid"), item["value"])
            nxt = out.get("cursor")
            if not records or not nxt or not isinstance(nxt, str) or nxt in seen:
                return
            seen.add(nxt)
            cursor = nxt

    @staticmethod
    def _over_budget(what: str, spent: str, knob: str) -> AtmosphereLimitError:
        return AtmosphereLimitError(
            f"{what}: stopped after {spent} without reaching the last page; the repository is very large or "
            f"its PDS is misbehaving. Raise ReadLimits.{knob} (AtmosphereClient(limits=ReadLimits(...))) if you "
            "trust it"
        )

    def _read(self, repo: str, nsid: str, params: dict, op: str) -> dict:
        """A repo read on our service; if the repo lives on another PDS, retry there."""
        try:
            return self._query(self._client, nsid, params, op)
        except AtmosphereNotFoundError:
            did = repo if repo.startswith("did:") else None
            if did is None or (self._session is not None and self._session.did == did):
                raise
            try:
                endpoint = self.pds_endpoint(did)
            except AtmosphereError:
                raise AtmosphereNotFoundError(f"{op}: not found at {self.pds_url}") from None
            if endpoint == self.pds_url or endpoint == self.service_url:
                raise
            return self._query(self._reader(endpoint), nsid, params, op, service=endpoint)

    def _reader(self, endpoint: str) -> Any:
        with self._lock:
            if endpoint not in self._readers:
                from atproto import Client  # lazy: the atproto SDK and httpx load on first network use

                self._readers[endpoint] = Client(base_url=endpoint, request=_sdk_request(self.timeout))
            return self._readers[endpoint]

    # ------------------------------------------------------------------- blobs
    def upload_blob(self, data: bytes | BinaryIO, mime_type: str = "application/octet-stream", *,
                    size: int | None = None, max_size: int | None = None,
                    progress: Callable[[int], None] | None = None) -> UploadedBlob:
        """Upload bytes or a readable stream as a blob (streamed, hashed on the way).

        ``progress(n)`` is called with the size of each chunk as it is sent.
        """
        self._ensure_session("uploading a blob")
        digest = hashlib.sha256()
        count = 0
        if isinstance(data, (bytes, bytearray, memoryview)):
            payload: Any = bytes(data)
            digest.update(payload)
            count = len(payload)
            size = count
            if progress is not None:
                progress(count)
        else:
            stream = data

            def chunks() -> Iterator[bytes]:
                nonlocal count
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        return
                    count += len(chunk)
                    if max_size is not None and count > max_size:
                        raise BlobTooLargeError(f"blob exceeds {max_size} bytes while uploading")
                    digest.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk

            payload = chunks()
        if max_size is not None and size is not None and size > max_size:
            raise BlobTooLargeError(f"blob of {size} bytes exceeds the limit of {max_size} bytes")
        headers = {"Content-Type": mime_type}
        if size is not None:
            headers["Content-Length"] = str(size)
        resp = self._call("uploading a blob", lambda: self._client.invoke_procedure(
            "com.atproto.repo.uploadBlob", data=None, content=payload, headers=headers))
        out = resp.content if isinstance(resp.content, dict) else {}
        ref = BlobRef.from_record(out.get("blob"), "uploadBlob response")
        sha = digest.hexdigest()
        if size is not None and count != size:
            raise AtmosphereError(f"uploading a blob: expected {size} bytes but read {count}; the file changed")
        if ref.cid.startswith("bafkrei") and ref.cid != blob_cid(sha):
            raise AtmosphereError(
                f"uploading a blob: the PDS stored CID {ref.cid} but the bytes sent hash to {blob_cid(sha)}"
            )
        return UploadedBlob(BlobRef(ref.cid, ref.mime_type or mime_type, ref.size or count), sha, count)

    def get_blob(self, did: str, cid: str, *, max_bytes: int | None = None) -> BinaryIO:
        """Stream a blob from the PDS that hosts ``did`` (``com.atproto.sync.getBlob``).

        At most ``max_bytes`` (default ``limits.max_blob_bytes``) are read: a larger
        announced ``Content-Length`` is refused up front, a longer body when the cap is
        passed (:class:`AtmosphereLimitError`).
        """
        endpoint = self.pds_endpoint(did)
        url = f"{endpoint}/xrpc/com.atproto.sync.getBlob"
        what = f"blob {cid} of {did} from {endpoint}"
        cap = self.limits.max_blob_bytes if max_bytes is None else max_bytes
        resp = self._http_send("GET", url, f"reading {what}", params={"did": did, "cid": cid})
        if resp.status_code >= 400:
            try:
                body_bytes = self._read_capped(resp, 1 << 16, f"reading {what}: the error body", "max_blob_bytes")
                try:
                    body = json.loads(body_bytes)
                except (ValueError, RecursionError):
                    body = {}
                if not isinstance(body, dict):
                    body = {}
            except AtmosphereLimitError:
                body = {}
            finally:
                resp.close()
            name, message = str(body.get("error", ""))[:200], str(body.get("message", ""))[:500]
            if resp.status_code == 404 or _is_not_found(name, message):
                raise AtmosphereNotFoundError(f"{what}: not found ({name or resp.status_code}: {message})")
            if resp.status_code == 429:
                wait = resp.headers.get("retry-after")
                raise AtmosphereRateLimitError(f"reading {what}: rate limited (HTTP 429); retry later",
                                               retry_after=float(wait) if wait and wait.isdigit() else None)
            raise AtmosphereError(f"reading {what}: HTTP {resp.status_code} {name}: {message}")
        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > cap:
            resp.close()
            raise AtmosphereLimitError(
                f"reading {what}: the PDS announces {length} bytes, over the limit of {cap} "
                "(ReadLimits.max_blob_bytes); refusing to read it"
            )
        return io.BufferedReader(_BlobStream(resp, what, cap), buffer_size=CHUNK)

    # -------------------------------------------------------------------- http
    def _http_client(self) -> Any:
        with self._lock:
            if self._http is None:
                httpx = _httpx()

                self._http = httpx.Client(follow_redirects=True, max_redirects=5, timeout=self.timeout,
                                          event_hooks=_HOOKS)
            return self._http

    def _http_send(self, method: str, url: str, op: str, **kwargs: Any) -> Any:
        """A streamed response (the caller reads it within a cap and closes it); same-host redirects only."""
        httpx = _httpx()

        http = self._http_client()
        try:
            return http.send(http.build_request(method, url, **kwargs), stream=True)
        except httpx.TimeoutException:
            raise AtmosphereConnectionError(f"{op}: {url} did not answer within {self.timeout:.0f} s") from None
        except httpx.HTTPError as exc:
            raise AtmosphereConnectionError(f"{op}: cannot reach {url} ({exc})") from None

    @staticmethod
    def _read_capped(resp: Any, cap: int, what: str, knob: str) -> bytes:
        """The body of a streamed response, refusing more than ``cap`` bytes (announced or sent)."""
        httpx = _httpx()

        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > cap:
            raise AtmosphereLimitError(f"{what} is {length} bytes, over the limit of {cap} (ReadLimits.{knob})")
        parts, n = [], 0
        try:
            for chunk in resp.iter_bytes(CHUNK):
                n += len(chunk)
                if n > cap:
                    raise AtmosphereLimitError(f"{what} is longer than {cap} bytes (ReadLimits.{knob}); stopped reading")
                parts.append(chunk)
        except httpx.HTTPError as exc:
            raise AtmosphereConnectionError(f"{what} was cut off: {exc}") from None
        return b"".join(parts)

    def close(self) -> None:
        """Close the HTTP connection pools (the client can still be used afterwards)."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None
            for reader in self._readers.values():
                try:
                    reader.request.close()
                except Exception:  # noqa: BLE001, S110 - best-effort close of HTTP readers at shutdown; the original outcome stands
                    pass
            self._readers.clear()


def _pds_from_did_doc(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    for service in doc.get("service") or []:
        if not isinstance(service, dict):
            continue
        sid, stype = str(service.get("id", "")), service.get("type")
        if sid.endswith("#atproto_pds") or stype == "AtprotoPersonalDataServer":
            endpoint = service.get("serviceEndpoint")
            if isinstance(endpoint, str) and endpoint.startswith(("http://", "https://")):
                return endpoint
    return None
