"""Routing shard openers: which credentials (if any) open which shard URL.

A :class:`RoutingOpener` is a small, picklable value: a list of credentialed routes
(an :class:`~atdata_dagster.stores.s3.S3Opener` per bucket the user's stores own), an
opener for any other ``s3://`` bucket (the default AWS credential chain for URLs the
user names, :class:`~atdata_dagster.stores.s3.AnonymousS3Opener` for URLs a foreign
record names), an :class:`~atdata_dagster.stores.http.HttpOpener` and extra schemes
(``at://`` blobs). The ``Index`` builds one per dataset; :func:`default_opener` is
what a ``Dataset`` built without one uses.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Iterable, Mapping

from ..errors import StoreError
from ..shards.reader import LocalOpener, ShardOpener, url_scheme
from .base import read_span
from .http import HttpOpener
from .s3 import S3DataStore, S3Opener, default_chain_opener

__all__ = ["RoutingOpener", "StoreOpener", "default_opener", "store_opener"]


class StoreOpener:
    """Opens the URLs one data store owns with ``store.open_read`` (pickles with the store)."""

    def __init__(self, store: Any):
        self.store = store

    def owns(self, url: str) -> bool:
        return bool(self.store.owns(url))

    def open(self, url: str) -> BinaryIO:
        return self.store.open_read(url)

    __call__ = open

    def __repr__(self) -> str:
        return f"StoreOpener({type(self.store).__name__})"


def store_opener(store: Any) -> S3Opener | StoreOpener:
    """The credentialed route for a data store: an :class:`S3Opener` for S3 (the whole bucket), else the store itself."""
    return S3Opener(store) if isinstance(store, S3DataStore) else StoreOpener(store)


class RoutingOpener:
    """Opens each shard URL with the first route that owns it, else by scheme.

    ``routes``: credentialed openers with ``owns(url)`` (tried in order). ``s3``: opener
    for ``s3://`` URLs no route owns (``None``: refuse them). ``http``: opener for
    ``http(s)://``. ``schemes``: more openers by scheme (e.g. ``{"at": AtBlobOpener(...)}``).
    ``local=False`` refuses local paths and ``file://`` URLs (a foreign record must not
    make a reader open the reader's own files). ``origin`` names where the URLs came from,
    for error messages.
    """

    def __init__(self, routes: Iterable[Any] = (), *, s3: ShardOpener | None = None,
                 http: ShardOpener | None = None, schemes: Mapping[str, ShardOpener] | None = None,
                 local: bool = True, origin: str = ""):
        self.routes = tuple(routes)
        self.s3 = s3
        self.http = http if http is not None else HttpOpener()
        self.schemes = dict(schemes or {})
        self.local = local
        self.origin = origin

    def route_for(self, url: str) -> Any:
        """The opener that would open ``url`` (raises :class:`StoreError` if none may)."""
        for route in self.routes:
            if route.owns(url):
                return route
        scheme = url_scheme(url)
        where = f" (named by {self.origin})" if self.origin else ""
        if scheme in ("", "file"):
            if not self.local:
                raise StoreError(
                    f"refusing to open local file {url!r}{where}: a dataset from a foreign record may only "
                    "name remote shards (s3://, http(s)://, at:// blobs)"
                )
            return LocalOpener()
        if scheme == "s3":
            if self.s3 is None:
                raise StoreError(f"no opener for s3:// URL {url!r}{where}")
            return self.s3
        if scheme in ("http", "https"):
            return self.http
        opener = self.schemes.get(scheme)
        if opener is None:
            raise StoreError(
                f"no opener for {scheme}:// URLs ({url}){where}; read it through the Index that owns the store "
                "(index.dataset(...)) or pass opener= to the Dataset"
            )
        return opener

    def open(self, url: str) -> BinaryIO:
        return self.route_for(url).open(url)

    __call__ = open

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of ``url``: one ranged request where the route has one (S3), else a seek or read-through."""
        route = self.route_for(url)
        ranged = getattr(route, "read_range", None)
        if ranged is not None:
            return ranged(url, start, stop)
        with route.open(url) as f:
            return read_span(f, start, stop)

    def __repr__(self) -> str:
        parts = [f"routes={list(self.routes)!r}", f"s3={self.s3!r}", f"http={self.http!r}"]
        if self.schemes:
            parts.append(f"schemes={sorted(self.schemes)!r}")
        if not self.local:
            parts.append("local=False")
        return f"RoutingOpener({', '.join(parts)})"


_DEFAULT: RoutingOpener | None = None


def default_opener() -> RoutingOpener:
    """Local paths, ``file://``, ``http(s)://`` and ``s3://`` (boto3's default credential chain)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = RoutingOpener(s3=default_chain_opener(), http=HttpOpener())
    return _DEFAULT

