"""Secret redaction: the one place that removes passwords, keys and tokens from text.

Every message, ``repr``, ``describe()`` and log line that may carry connection details
goes through :func:`redact` (SQL and Redis providers, the S3 store, the Dagster
resources, the CLI). It masks, with ``***``:

- the password of URL userinfo (``postgresql://user:pw@host``, ``redis://:pw@host``),
  even in a URL that does not parse;
- the value of a secret key in a query string, a libpq key/value DSN or a mapping repr
  (``?password=pw``, ``password='a b'``, ``sslpassword=...``, ``'password': 'pw'``);
- each secret it is given, and the value of every secret environment variable
  (``PGPASSWORD``, ``AWS_SECRET_ACCESS_KEY``, ...), wherever it appears verbatim or
  URL-encoded: drivers echo them (a database named like the password).

URL schemes are never masked, so a password that is a common word (``postgres``) does
not turn ``postgresql://`` into ``***ql://``. Environment secrets shorter than
:data:`MIN_ENV_SECRET` characters are masked only in the places above, not verbatim
everywhere (they would mask ordinary words in every message of the process).

Errors whose message was redacted must not carry the raw exception along as
``__cause__`` / ``__context__``: :func:`leaks` tells whether an exception chain shows a
secret, and the caller then raises its typed error outside the ``except`` block (where
Python sets no ``__context__``) without a cause.

This module imports only the standard library, so every layer may use it.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Iterator
from urllib.parse import unquote, unquote_plus

__all__ = [
    "MASK",
    "SECRET_ENV_VARS",
    "SECRET_KEYS",
    "env_secrets",
    "is_secret_key",
    "leaks",
    "redact",
    "secrets_in",
]

MASK = "***"

#: environment variables whose values are secrets (libpq, Redis CLI, AWS, our CLI)
SECRET_ENV_VARS = (
    "PGPASSWORD",
    "REDISCLI_AUTH",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "ATDATA_APP_PASSWORD",
)

#: keys whose value is a secret in a query string, a key/value DSN or a mapping
SECRET_KEYS = (
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "pgpassword",
    "requirepass",
    "secret",
    "secret_key",
    "aws_secret_access_key",
    "session_token",
    "aws_session_token",
    "x-amz-security-token",
)

#: an environment secret shorter than this is not masked verbatim (see the module docstring)
MIN_ENV_SECRET = 4

_KEYS = "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# ://user:pw@ -- the password runs to the last '@' before whitespace (also in URLs that do not parse)
_USERINFO_RE = re.compile(r"(://[^:/@\s]*:)(\S*)@")
# password=pw / password = 'a b\'c' (libpq quoting) / ?password=pw&...
# (spaces after '=' only before a quoted value: "pass password= (an app password)" is prose)
_KV_RE = re.compile(
    rf"(?<![\w-])({_KEYS})(\s*=(?:\s*(?=['\"]))?)('(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&#'\"]+)", re.I
)
# 'password': 'pw' / "password": "pw" (a mapping's repr or JSON)
_MAPPING_RE = re.compile(
    rf"""(['"])({_KEYS})\1(\s*:\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|b'(?:[^'\\]|\\.)*')""", re.I
)


def is_secret_key(key: str) -> bool:
    """Whether a query / DSN / mapping key names a secret (``password``, ``sslpassword``, ...)."""
    return str(key).strip().lower() in SECRET_KEYS


def env_secrets() -> list[str]:
    """The current values of the secret environment variables (read on every call)."""
    return [v for v in (os.environ.get(name) for name in SECRET_ENV_VARS) if v and len(v) >= MIN_ENV_SECRET]


def secrets_in(text: str) -> list[str]:
    """The secret values written in a URL or a libpq key/value DSN (userinfo password,
    ``password=`` and the other :data:`SECRET_KEYS`), unquoted and URL-decoded.

    Used to mask them later wherever a driver echoes them (an error naming a database
    that is called like the password).
    """
    found: list[str] = []
    for m in _USERINFO_RE.finditer(text):
        found.append(unquote(m.group(2)))
    for m in _KV_RE.finditer(text):
        value = m.group(3)
        if value[:1] in "'\"":
            value = re.sub(r"\\(.)", r"\1", value[1:-1] if value[-1:] == value[:1] and len(value) > 1 else value[1:])
        else:
            value = unquote_plus(value)  # a '+' that was a literal plus still matches: see _pattern
        found.append(value)
    for m in _MAPPING_RE.finditer(text):
        found.append(re.sub(r"\\(.)", r"\1", m.group(4).lstrip("b")[1:-1]))
    return [s for s in dict.fromkeys(found) if s and s != MASK]


@lru_cache(maxsize=256)
def _pattern(secret: str) -> re.Pattern[str]:
    """The secret as is or URL-encoded in any mix (each character literal or ``%XX``,
    a space also ``+``, a quote or backslash also libpq-escaped): drivers and URL
    renderers encode different character sets."""
    parts = []
    for ch in secret:
        hexes = (f"{b:02X}" for b in ch.encode("utf-8"))
        encoded = "".join("%" + "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in h) for h in hexes)
        alternatives = [re.escape(ch), encoded] + (["\\+"] if ch == " " else [])
        if ch in "'\\":  # libpq's quoting inside '...'
            alternatives.append(re.escape("\\" + ch))
        parts.append(f"(?:{'|'.join(alternatives)})")
    return re.compile("".join(parts))


def _mask_literals(text: str, secrets: list[str]) -> str:
    """Replace each secret (in any URL encoding) outside URL schemes."""
    patterns = [_pattern(s) for s in sorted(set(secrets), key=len, reverse=True)]
    if not patterns:
        return text

    def mask(part: str) -> str:
        for pattern in patterns:
            part = pattern.sub(MASK, part)
        return part

    out, pos = [], 0
    for m in _SCHEME_RE.finditer(text):
        out += [mask(text[pos:m.start()]), m.group()]
        pos = m.end()
    out.append(mask(text[pos:]))
    return "".join(out)


def _forms(secret: str | bytes | None) -> list[str]:
    """How a secret can appear in text: a str as is; bytes (redis-py accepts a bytes
    password) decoded as UTF-8 and as Python shows them inside ``b'...'``."""
    if isinstance(secret, str):
        return [secret] if secret else []
    if isinstance(secret, (bytes, bytearray)) and secret:
        shown = repr(bytes(secret))[2:-1]
        try:
            return list(dict.fromkeys([bytes(secret).decode("utf-8"), shown]))
        except UnicodeDecodeError:
            return [shown, bytes(secret).decode("latin-1")]
    return []


def redact(text: object, *secrets: str | bytes | None) -> str:
    """``text`` (any object: its ``str``) with every secret masked as ``***``.

    Masks URL userinfo passwords, secret key/value pairs, the given ``secrets`` and the
    secret environment variables (see the module docstring). Idempotent.
    """
    s = text if isinstance(text, str) else str(text)
    known = [form for x in secrets for form in _forms(x)]
    known += secrets_in(s)
    known += env_secrets()
    s = _mask_literals(s, list(dict.fromkeys(known)))
    s = _USERINFO_RE.sub(rf"\1{MASK}@", s)
    s = _MAPPING_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}'{MASK}'", s)
    return _KV_RE.sub(lambda m: m.group() if m.group(3).strip("'\"") == MASK else f"{m.group(1)}{m.group(2)}{MASK}", s)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def leaks(exc: BaseException, *secrets: str | bytes | None) -> bool:
    """Whether ``exc`` or any exception of its ``__cause__`` / ``__context__`` chain (and a
    driver's ``.orig``) shows a secret in its message, ``repr`` or arguments.

    If so, raise the redacted error without that chain (outside the ``except`` block).
    """
    for e in _chain(exc):
        text = f"{e}\n{e!r}\n{e.args!r}"
        if redact(text, *secrets) != text:
            return True
    return False
