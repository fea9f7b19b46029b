"""Index providers: where an index repository keeps its entries, schemas and labels.

SQLite (the embedded default) and PostgreSQL share one SQLAlchemy implementation
(``SqlProvider``) and differ in their subclasses; Redis has its own. All three read
and write exactly atdata's tables and keys.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import ConfigurationError
from ...redact import redact
from .base import IndexProvider, ProviderKind
from .redis import RedisProvider
from .sql import DEFAULT_SQLITE_PATH, PostgresProvider, SqliteProvider, SqlProvider, is_keyword_dsn

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "IndexProvider",
    "PostgresProvider",
    "ProviderKind",
    "RedisProvider",
    "SqlProvider",
    "SqliteProvider",
    "create_provider",
    "provider_from_url",
]

_NAMES = "'sqlite', 'redis', 'postgres' (or 'postgresql')"


def create_provider(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    dsn: str | None = None,
    redis: Any = None,
    **kwargs: Any,
) -> IndexProvider:
    """A provider by name, as atdata's factory: ``sqlite`` (``path``), ``redis``
    (``redis`` connection, or ``url=`` / Redis keyword arguments) or ``postgres`` /
    ``postgresql`` (``dsn``, required). Names are case-insensitive.
    """
    key = str(name).strip().lower()
    try:
        kind = ProviderKind.POSTGRES if key == "postgresql" else ProviderKind(key)
    except ValueError:
        raise ConfigurationError(f"unknown index provider {name!r}: use one of {_NAMES}") from None
    if kind is ProviderKind.SQLITE:
        return SqliteProvider(path, **kwargs)
    if kind is ProviderKind.REDIS:
        return RedisProvider(redis, **kwargs)
    if not dsn:
        raise ConfigurationError(
            "the postgres provider needs a dsn, e.g. "
            "create_provider('postgres', dsn='postgresql://user:password@host:5432/dbname')"
        )
    return PostgresProvider(dsn, **kwargs)


def provider_from_url(url: str, **kwargs: Any) -> IndexProvider:
    """A provider from one URL.

    - ``sqlite:///relative/index.db``, ``sqlite:////abs/index.db`` (SQLAlchemy's form;
      ``~`` is expanded), ``sqlite:///:memory:``
    - ``postgresql://…``, ``postgres://…``, ``postgresql+psycopg://…``, or a libpq
      key/value DSN (``host=… dbname=… user=…``)
    - ``redis://…``, ``rediss://…``, ``unix://…`` (redis-py URL forms)
    """
    text = str(url).strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme == "sqlite":
        rest = text[len("sqlite:"):]
        if not rest.startswith("//"):
            raise ConfigurationError(f"malformed SQLite URL {text!r}: use sqlite:///path/to/index.db")
        path = rest[2:]
        if path.startswith("/"):
            path = path[1:]  # sqlite:///x -> "x" (relative), sqlite:////x -> "/x"
        path = path.split("?", 1)[0]
        return SqliteProvider(path or None, **kwargs)
    if scheme.startswith("postgres") or is_keyword_dsn(text):
        return PostgresProvider(text, **kwargs)
    if scheme in ("redis", "rediss", "unix"):
        return RedisProvider(url=text, **kwargs)
    raise ConfigurationError(
        f"cannot tell the index provider from URL scheme {redact(scheme or text)!r}: use sqlite:///path, "
        "postgresql://user:password@host:5432/dbname or redis://host:6379/0"
    )
