"""Dataset names for Dagster assets: asset key (+ partition key) -> dataset name, and back.

The rule: every component of the asset key path is percent-escaped
(:func:`escape_segment`) and joined with ``/``; a partitioned asset appends one final
segment ``partition=<escaped key>``, e.g. ``mnist/train/partition=2024-01-01``.
Escaped segments never contain ``/``, ``=`` or a leading ``.``, so any asset key or
partition key gives a safe name, and :func:`parse_dataset_name` inverts the rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple, Optional

import dagster as dg

from .errors import InvalidNameError
from .index.names import MAX_NAME_LENGTH, validate_dataset_name

__all__ = [
    "EMPTY_SEGMENT",
    "HASHED_PARTITION_MARK",
    "MAX_PARTITION_SEGMENT",
    "PARTITION_MARK",
    "DatasetNameParts",
    "dataset_name",
    "escape_segment",
    "parse_dataset_name",
    "partition_segment",
    "unescape_segment",
]

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_HEX = "0123456789ABCDEF"
PARTITION_MARK = "partition="
HASHED_PARTITION_MARK = "partition~sha256-"
EMPTY_SEGMENT = "~"
#: an escaped partition key longer than this (bytes) is replaced by its SHA-256
MAX_PARTITION_SEGMENT = 200
_MAX_SEGMENT_BYTES = 255


def escape_segment(text: str) -> str:
    """Percent-escape one name segment.

    Bytes of the UTF-8 encoding outside ``[A-Za-z0-9_.-]`` become ``%XX``, a leading
    ``.`` becomes ``%2E`` (so ``.``, ``..`` and ``.tmp*`` can never appear), and the
    empty string becomes ``~``. The result never contains ``/``, ``=``, ``~`` (except as
    the whole empty marker), NUL or a control character, and :func:`unescape_segment`
    inverts it exactly.
    """
    if text == "":
        return EMPTY_SEGMENT
    try:
        raw = text.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        raise InvalidNameError(
            f"cannot name a dataset after {text!r:.80}: asset key components and partition keys "
            "must be str without lone surrogates"
        ) from None
    out: list[str] = []
    for i, b in enumerate(raw):
        if b in _SAFE and not (i == 0 and b == 0x2E):
            out.append(chr(b))
        else:
            out.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(out)


def unescape_segment(segment: str) -> str:
    """The inverse of :func:`escape_segment` (:class:`InvalidNameError` if malformed)."""
    if segment == EMPTY_SEGMENT:
        return ""
    raw = bytearray()
    i = 0
    try:
        while i < len(segment):
            c = segment[i]
            if c == "%":
                hx = segment[i + 1 : i + 3]
                if len(hx) != 2 or any(ch not in _HEX for ch in hx):
                    raise ValueError
                raw.append(int(hx, 16))
                i += 3
            else:
                if ord(c) > 127 or ord(c) not in _SAFE:
                    raise ValueError
                raw.append(ord(c))
                i += 1
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise InvalidNameError(f"{segment!r} is not an escaped name segment (see atdata_dagster.naming.escape_segment)") from None


def _hashed_partition_segment(partition_key: str) -> str:
    return HASHED_PARTITION_MARK + hashlib.sha256(partition_key.encode("utf-8")).hexdigest()


def partition_segment(partition_key: str) -> str:
    """The final name segment for a partition key: ``partition=<escaped>``.

    Keys whose escaped form is longer than 200 bytes become
    ``partition~sha256-<hex digest of the UTF-8 key>``: deterministic and
    collision-resistant; the key itself is kept in the entry's ``lineage``.
    """
    escaped = escape_segment(partition_key)
    if len(escaped) > MAX_PARTITION_SEGMENT:
        return _hashed_partition_segment(partition_key)
    return PARTITION_MARK + escaped


class DatasetNameParts(NamedTuple):
    """What :func:`parse_dataset_name` recovers from a dataset name."""

    asset_key: dg.AssetKey
    partition_key: Optional[str]
    #: hex SHA-256 of the partition key when the key was too long to spell out
    partition_sha256: Optional[str] = None


def _check_partition_key(partition_key: object) -> str:
    if not isinstance(partition_key, str):
        raise InvalidNameError(
            f"partition key {partition_key!r:.80} is a {type(partition_key).__name__}; Dagster "
            "partition keys are str"
        )
    try:
        partition_key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(
            f"partition key {partition_key!r:.80} contains a lone surrogate and is not valid "
            "unicode; use keys that encode as UTF-8"
        ) from None
    return partition_key


def dataset_name(
    asset_key: dg.AssetKey | Sequence[str] | str,
    partition_key: str | None = None,
    *,
    base: str | None = None,
) -> str:
    """The dataset name for an asset (and partition).

    The rule: every component of the asset key path is escaped with
    :func:`escape_segment` and joined with ``/``; a partitioned asset appends one final
    segment ``partition=<escaped key>`` (hashed for very long keys, see
    :func:`partition_segment`). ``base`` (the ``atdata/name`` asset metadata) replaces
    the asset-key part and is used as written. Because escaped key segments never
    contain ``=`` or start with ``partition~``, the partition segment is unambiguous and
    :func:`parse_dataset_name` inverts the rule. Any partition key is safe: slashes,
    ``..``, NUL, control characters and unicode are escaped, so a name can never escape
    its store directory.
    """
    if base is not None:
        head = validate_dataset_name(base)
    else:
        path = _key_path(asset_key)
        if not path:
            raise InvalidNameError("an asset key needs at least one path component")
        head = "/".join(escape_segment(p) for p in path)
    if partition_key is None:
        name = head
    else:
        key = _check_partition_key(partition_key)
        segment = partition_segment(key)
        if len(head) + 1 + len(segment) > MAX_NAME_LENGTH:  # a long key under a long asset path: hash it
            segment = _hashed_partition_segment(key)
        name = f"{head}/{segment}"
    if len(name) > MAX_NAME_LENGTH or any(len(s.encode()) > _MAX_SEGMENT_BYTES for s in head.split("/")):
        raise InvalidNameError(
            f"dataset name for asset {_key_path(asset_key)!r} would be {len(name)} characters "
            f"(limit {MAX_NAME_LENGTH}, {_MAX_SEGMENT_BYTES} bytes per segment); set a shorter "
            "'atdata/name' in the asset's metadata"
        )
    return validate_dataset_name(name)


def parse_dataset_name(name: str) -> DatasetNameParts:
    """Invert :func:`dataset_name` for a name built from an asset key (no ``base``)."""
    segments = name.split("/")
    partition: str | None = None
    digest: str | None = None
    last = segments[-1]
    if len(segments) > 1 and last.startswith(PARTITION_MARK):
        partition = unescape_segment(last[len(PARTITION_MARK):])
        segments = segments[:-1]
    elif len(segments) > 1 and last.startswith(HASHED_PARTITION_MARK):
        digest = last[len(HASHED_PARTITION_MARK):]
        segments = segments[:-1]
    return DatasetNameParts(dg.AssetKey([unescape_segment(s) for s in segments]), partition, digest)


def _key_path(asset_key: dg.AssetKey | Sequence[str] | str) -> list[str]:
    if isinstance(asset_key, dg.AssetKey):
        return list(asset_key.path)
    if isinstance(asset_key, str):
        return [asset_key]
    return list(asset_key)
