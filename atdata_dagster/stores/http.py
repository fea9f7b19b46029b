"""Streaming reads of shards published over ``http://`` / ``https://`` (stdlib only).

Shards are read as a stream with a large buffer, never downloaded to disk first. A
connection that drops mid-body is resumed with a ``Range`` request when the server
supports it (``Accept-Ranges: bytes``), pinned to the first response's ETag.
"""

from __future__ import annotations

import http.client
import io
import urllib.error
import urllib.request
from typing import BinaryIO

from ..errors import StoreError

__all__ = ["open_http_url"]

READ_BUFFER = 1024 * 1024
USER_AGENT = "atdata-dagster"


def _request(url: str, headers: dict[str, str], timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) only, checked by the caller
    except urllib.error.HTTPError as exc:
        hint = {
            404: "the shard was deleted or the URL is wrong",
            403: "the server refused access; the URL may need credentials or has expired",
            401: "the server needs credentials; use the store's own opener (e.g. an s3:// URL with S3DataStore)",
        }.get(exc.code, "retry later or check the URL")
        raise StoreError(f"GET {_public(url)} failed with HTTP {exc.code} {exc.reason}: {hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"GET {_public(url)} failed: {reason}; is the server reachable?") from None


def _public(url: str) -> str:
    """The URL without its query string (presigned URLs carry signatures there) or user info."""
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


class _HTTPRaw(io.RawIOBase):
    MAX_RESUMES = 3

    def __init__(self, url: str, timeout: float):
        self._url, self._timeout = url, timeout
        self._resp = _request(url, {}, timeout)
        self._pos = 0
        self._resumes = 0
        length = self._resp.headers.get("Content-Length")
        self._size = int(length) if length and length.isdigit() else None
        self._etag = self._resp.headers.get("ETag")
        self._ranges = (self._resp.headers.get("Accept-Ranges") or "").lower() == "bytes"

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
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
        resp = _request(self._url, headers, self._timeout)
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


def open_http_url(url: str, *, timeout: float = 60.0) -> BinaryIO:
    """Open an ``http(s)://`` shard URL as a buffered binary stream."""
    if not url.startswith(("http://", "https://")):
        raise StoreError(f"not an http(s) URL: {url!r}")
    return io.BufferedReader(_HTTPRaw(url, timeout), buffer_size=READ_BUFFER)


def _register() -> None:
    from ..shards.reader import register_opener

    register_opener("http", open_http_url)
    register_opener("https", open_http_url)


_register()
