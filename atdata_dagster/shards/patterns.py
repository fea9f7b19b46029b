"""Shard URL patterns: bounded brace expansion (``data-{000000..000099}.tar``, ``{a,b}``).

Patterns come from users, index rows written by other tools and records of a PDS.
``braceexpand`` materializes whole ranges, so ``{0..99999999999}`` or a product of a few
small groups would exhaust memory. :func:`expand_patterns` first *measures* every
pattern of an entry or record without expanding it (how many URLs, how long the longest,
how many characters in all), against one budget for the whole list, and only then
expands. This module is the only place that calls ``braceexpand``.
"""

from __future__ import annotations

import os
from typing import Iterable

from braceexpand import alphabet, braceexpand, char_range_re, int_range_re  # type: ignore[attr-defined]  # untyped module globals

from ..errors import InvalidRefError

__all__ = [
    "MAX_PATTERN_CHARS",
    "MAX_PATTERN_DEPTH",
    "MAX_PATTERN_SHARDS",
    "MAX_URL_LENGTH",
    "expand_patterns",
]

#: Most shard URLs all patterns of one entry or record may expand to, together.
MAX_PATTERN_SHARDS = 1_000_000
#: Deepest brace nesting accepted (parsing nested groups rescans them).
MAX_PATTERN_DEPTH = 8
#: Longest shard URL accepted, before or after expansion (S3 keys stop at 1024 bytes).
MAX_URL_LENGTH = 4096
#: Most characters all expanded URLs of one entry or record may hold, together.
MAX_PATTERN_CHARS = 128 << 20

# Saturation point of the arithmetic below: any count or length past every limit is
# "too large"; capping keeps products of many huge ranges cheap.
_CAP = max(MAX_PATTERN_SHARDS, MAX_PATTERN_CHARS, MAX_URL_LENGTH) + 1


def _sat(n: int) -> int:
    return n if n < _CAP else _CAP


class _Size:
    """What a pattern expands to: ``count`` strings, ``chars`` characters in all, ``longest``."""

    __slots__ = ("count", "chars", "longest")

    def __init__(self, count: int, chars: int, longest: int) -> None:
        self.count, self.chars, self.longest = count, chars, longest

    def then(self, other: "_Size") -> "_Size":
        """Every string of ``self`` followed by every string of ``other`` (a product)."""
        return _Size(
            _sat(self.count * other.count),
            _sat(self.chars * other.count + other.chars * self.count),
            _sat(self.longest + other.longest),
        )

    def plus(self, other: "_Size") -> "_Size":
        """The strings of ``self``, then those of ``other`` (a sequence ``{a,b}``)."""
        return _Size(_sat(self.count + other.count), _sat(self.chars + other.chars), max(self.longest, other.longest))


def _literal(text: str) -> _Size:
    return _Size(1, len(text), len(text))  # escapes only shorten it: an upper bound


def _measure(pattern: str) -> _Size:
    """The size of ``braceexpand(pattern)`` without expanding it (mirrors its parser).

    Counts are exact; lengths are upper bounds. Raises ``ValueError`` on unbalanced braces.
    """
    total = _Size(1, 0, 0)
    start = pos = depth = 0
    n = len(pattern)
    while pos < n:
        ch = pattern[pos]
        if ch == "\\":
            pos += 2
            continue
        if ch == "{":
            if depth == 0:
                total = total.then(_literal(pattern[start:pos]))
                start = pos
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                total = total.then(_measure_expression(pattern[start + 1 : pos]))
                start = pos + 1
        pos += 1
    if depth != 0:
        raise ValueError("unbalanced braces")
    return total.then(_literal(pattern[start:]))


def _measure_expression(expr: str) -> _Size:
    m = int_range_re.match(expr)
    if m:
        first, last, step = m.groups()
        if max(len(first), len(last)) > 30 or (step is not None and len(step) > 30):
            return _Size(_CAP, _CAP, _CAP)
        stride = abs(int(step or 1) or 1)
        count = _sat(abs(int(last) - int(first)) // stride + 1)
        width = max(len(first), len(last))
        return _Size(count, _sat(count * width), width)
    if char_range_re.match(expr):
        return _Size(len(alphabet), len(alphabet), 1)  # an upper bound: at most the whole alphabet
    # a sequence: items split at top-level commas, else a literal group around a pattern
    items: list[str] = []
    start = pos = depth = 0
    while pos < len(expr):
        ch = expr[pos]
        if ch == "\\":
            pos += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(expr[start:pos])
            start = pos + 1
        pos += 1
    if depth != 0 or not items:
        return _literal("{").then(_measure(expr)).then(_literal("}"))
    items.append(expr[start:])
    size = _measure(items[0])
    for item in items[1:]:
        size = size.plus(_measure(item))
    return size


def _depth(pattern: str) -> int:
    depth = deepest = 0
    for ch in pattern:
        if ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}":
            depth -= 1
    return deepest


def expand_patterns(
    patterns: Iterable[str],
    *,
    max_urls: int = MAX_PATTERN_SHARDS,
    max_url_length: int = MAX_URL_LENGTH,
    max_chars: int = MAX_PATTERN_CHARS,
) -> list[str]:
    """Expand shard URLs and brace patterns, in order, under one budget for the whole list.

    Every pattern is measured before anything is expanded: together they may yield at
    most ``max_urls`` URLs and ``max_chars`` characters, and no URL may be longer than
    ``max_url_length``. Braces nested more than ``MAX_PATTERN_DEPTH`` deep, unbalanced
    braces and anything over budget raise :class:`InvalidRefError` naming the pattern.
    """
    given = list(patterns)
    count = chars = 0
    for url in given:
        if not isinstance(url, str):
            raise InvalidRefError(f"a shard URL must be a str, got {type(url).__name__} {url!r:.80}")
        if "{" not in url:
            size = _literal(url)
        else:
            deepest = _depth(url)
            if deepest > MAX_PATTERN_DEPTH:
                raise _refuse(url, f"nests braces {deepest} deep (limit {MAX_PATTERN_DEPTH})")
            try:
                size = _measure(url)
            except ValueError as exc:  # unbalanced braces
                raise _refuse(url, f"is malformed ({exc})") from None
        count += size.count
        chars += size.chars
        if count > max_urls:
            raise _refuse(url, f"expands to {_num(count)} shard URLs, with the patterns before it (limit {max_urls})")
        if size.longest > max_url_length:
            raise _refuse(url, f"yields URLs of up to {_num(size.longest)} characters (limit {max_url_length})")
        if chars > max_chars:
            raise _refuse(url, f"expands to {_num(chars)} characters of URLs, with the patterns before it (limit {max_chars})")
    out: list[str] = []
    for url in given:
        if "{" not in url:
            out.append(url)
            continue
        try:
            out.extend(braceexpand(url))
        except ValueError as exc:  # braceexpand.UnbalancedBracesError
            raise _refuse(url, f"is malformed ({exc})") from None
    return out


def _num(n: int) -> str:
    return str(n) if n < _CAP else f"more than {_CAP - 1}"


def _refuse(url: str, why: str) -> InvalidRefError:
    return InvalidRefError(
        f"dataset URL pattern {url[:200]!r} {why}; list the shard URLs, or split the data into "
        "several smaller patterns or datasets ({000000..000099})"
    )


def brace_list(urls: list[str]) -> str:
    """One URL, or a brace list with the common prefix and suffix factored out.

    ``["/d/a-000000.tar", "/d/a-000001.tar"]`` -> ``"/d/a-00000{0,1}.tar"``, as atdata writes it.
    """
    if len(urls) == 1:
        return urls[0]
    prefix = os.path.commonprefix(urls)
    rev = os.path.commonprefix([u[len(prefix) :][::-1] for u in urls])
    suffix = rev[::-1]
    middles = [u[len(prefix) : len(u) - len(suffix)] for u in urls]
    return prefix + "{" + ",".join(middles) + "}" + suffix
