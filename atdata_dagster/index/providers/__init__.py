"""Index providers: where an index repository keeps its entries, schemas and labels.

SQLite (the embedded default) and PostgreSQL share one SQLAlchemy implementation
(``SqlProvider``) and differ in their subclasses; Redis has its own. All three read
and write exactly atdata's tables and keys.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from ...errors import ConfigurationError, UnknownOptionError
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


def _check_keywords(cls: type, given: dict[str, Any], call: str, also: tuple[str, ...]) -> None:
    """:class:`UnknownOptionError` naming any keyword of ``given`` that ``cls`` does not take."""
    params = inspect.signature(cls).parameters
    accepted = tuple(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = [k for k in given if k not in accepted]
    if unknown:
        raise UnknownOptionError.for_call(call, unknown, also + accepted)


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
        _check_keywords(SqliteProvider, kwargs, "create_provider('sqlite', ...)", ("path",))
        return SqliteProvider(path, **kwargs)
    if kind is ProviderKind.REDIS:
        try:
            return RedisProvider(redis, **kwargs)
        except TypeError as e:  # redis-py refused a keyword: name it as ours
            if "unexpected keyword argument" not in str(e):
                raise
            raise UnknownOptionError(
                f"create_provider('redis', ...): {e}; it accepts redis=, url=, retries= and redis.Redis "
                "connection keywords (host=, port=, db=, password=, ...)"
            ) from None
    _check_keywords(PostgresProvider, kwargs, "create_provider('postgres', ...)", ("dsn",))
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
