"""Streaming reads of shards published over ``http://`` / ``https://`` (stdlib only).

Shards are read as a stream with a large buffer, never downloaded to disk first. A
connection that drops mid-body is resumed with a ``Range`` request when the server
supports it (``Accept-Ranges: bytes``), pinned to the first response's ETag.

Shard URLs can come from records written by strangers, so reads are bounded: a
redirect to another host (scheme, host or port) is refused rather than followed, and
:class:`HttpOpener` takes ``max_bytes`` to refuse a body longer than that.
"""

from __future__ import annotations

import http.client
import io
import urllib.error
import urllib.request
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreError

__all__ = ["HttpOpener", "open_http_url"]

READ_BUFFER = 1024 * 1024
USER_AGENT = "atdata-dagster"


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme.lower())
    return p.scheme.lower(), (p.hostname or "").lower(), port


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port (unless cross-host ones are allowed)."""

    def __init__(self, allow_cross_host: bool):
        self.allow_cross_host = allow_cross_host

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not self.allow_cross_host and _origin(newurl) != _origin(req.full_url):
            raise StoreError(
                f"GET {_public(req.full_url)} redirects (HTTP {code}) to another host, {_public(newurl)}; "
                "redirects to other hosts are not followed for shard URLs (a record could point a reader "
                "anywhere): use the final URL, or HttpOpener(allow_cross_host_redirects=True) if you trust it"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpNotFoundError(StoreError, FileNotFoundError):
    """An HTTP shard URL answered 404 or 410 (also a ``FileNotFoundError``, as a missing local shard)."""


def _request(url: str, headers: dict[str, str], timeout: float, allow_cross_host: bool = False):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    opener = urllib.request.build_opener(_SameHostRedirects(allow_cross_host))
    try:
        return opener.open(req, timeout=timeout)  # noqa: S310 - http(s) only, checked by the caller
    except urllib.error.HTTPError as exc:
        hint = {
            404: "the shard was deleted or the URL is wrong",
            403: "the server refused access; the URL may need credentials or has expired",
            401: "the server needs credentials; use the store's own opener (e.g. an s3:// URL with S3DataStore)",
        }.get(exc.code, "retry later or check the URL")
        error = HttpNotFoundError if exc.code in (404, 410) else StoreError
        raise error(f"GET {_public(url)} failed with HTTP {exc.code} {exc.reason}: {hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"GET {_public(url)} failed: {reason}; is the server reachable?") from None


def _public(url: str) -> str:
    """The URL without its query string (presigned URLs carry signatures there) or user info."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


class _HTTPRaw(io.RawIOBase):
    MAX_RESUMES = 3

    def __init__(self, url: str, timeout: float, max_bytes: int | None = None, allow_cross_host: bool = False):
        self._url, self._timeout = url, timeout
        self._max, self._cross = max_bytes, allow_cross_host
        self._resp = _request(url, {}, timeout, allow_cross_host)
        self._pos = 0
        self._resumes = 0
        length = self._resp.headers.get("Content-Length")
        self._size = int(length) if length and length.isdigit() else None
        if max_bytes is not None and self._size is not None and self._size > max_bytes:
            self._resp.close()
            raise StoreError(
                f"GET {_public(url)}: the server announces {self._size} bytes, over the limit of {max_bytes}; "
                "refusing to read it"
            )
        self._etag = self._resp.headers.get("ETag")
        self._ranges = (self._resp.headers.get("Accept-Ranges") or "").lower() == "bytes"

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        err: Exception | None
        while True:
            try:
                n = self._resp.readinto(b)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # reset / timeout / IncompleteRead
                n, err = -1, exc
            else:
                err = None
                if n == 0 and self._size is not None and self._pos < self._size:
                    err = EOFError(f"ended after {self._pos} of {self._size} bytes")
            if err is None:
                self._pos += n
                if self._max is not None and self._pos > self._max:
                    raise StoreError(
                        f"reading {_public(self._url)}: the body is longer than the limit of {self._max} bytes; "
                        "stopped reading"
                    )
                return n
            if not self._ranges or self._resumes >= self.MAX_RESUMES:
                raise StoreError(f"reading {_public(self._url)} failed at byte {self._pos}: {err}; retry") from None
            self._resumes += 1
            self._reopen()

    def _reopen(self) -> None:
        try:
            self._resp.close()
        except OSError:
            pass
        headers = {"Range": f"bytes={self._pos}-"}
        if self._etag:
            headers["If-Match"] = self._etag
        resp = _request(self._url, headers, self._timeout, self._cross)
        if resp.status != 206:
            resp.close()
            raise StoreError(f"{_public(self._url)} does not honour Range requests; cannot resume at byte {self._pos}")
        self._resp = resp

    def close(self) -> None:
        if not self.closed:
            try:
                self._resp.close()
            except OSError:
                pass
        super().close()


def open_http_url(url: str, *, timeout: float = 60.0, max_bytes: int | None = None,
                  allow_cross_host_redirects: bool = False) -> BinaryIO:
    """Open an ``http(s)://`` shard URL as a buffered binary stream.

    ``max_bytes`` refuses a body longer than that (up front from ``Content-Length``, else
    as soon as it is exceeded); redirects to another host are refused unless
    ``allow_cross_host_redirects``.
    """
    if not url.startswith(("http://", "https://")):
        raise StoreError(f"not an http(s) URL: {url!r}")
    raw = _HTTPRaw(url, timeout, max_bytes, allow_cross_host_redirects)
    return io.BufferedReader(raw, buffer_size=READ_BUFFER)


class HttpOpener:
    """A picklable :class:`~atdata_dagster.shards.reader.ShardOpener` for ``http(s)://`` shard URLs.

    Holds only settings: ``timeout`` (seconds per request), ``max_bytes`` (refuse a longer
    body; ``None``: unbounded) and ``allow_cross_host_redirects`` (default ``False``: a
    redirect to another scheme, host or port raises :class:`StoreError`).
    """

    def __init__(self, *, timeout: float = 60.0, max_bytes: int | None = None,
                 allow_cross_host_redirects: bool = False):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_cross_host_redirects = allow_cross_host_redirects

    def open(self, url: str) -> BinaryIO:
        return open_http_url(url, timeout=self.timeout, max_bytes=self.max_bytes,
                             allow_cross_host_redirects=self.allow_cross_host_redirects)

    __call__ = open

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpOpener) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((HttpOpener, self.timeout, self.max_bytes, self.allow_cross_host_redirects))

    def __repr__(self) -> str:
        return (f"HttpOpener(timeout={self.timeout}, max_bytes={self.max_bytes}, "
                f"allow_cross_host_redirects={self.allow_cross_host_redirects})")
