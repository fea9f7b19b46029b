"""Batched decoding: many msgpack payloads straight into per-field columns.

:class:`BatchDecoder` turns a list of payloads of one ``@packable`` type into columns:
a fixed-shape ndarray field becomes one preallocated ``(B, *shape)`` array filled with
a single numpy gather (no per-sample array, no ``np.stack``), every other field a list.
No sample object is built. The values are exactly those the per-sample path
(``T.from_bytes`` for each payload, then :class:`~atdata_dagster.dataset.SampleBatch`
field access) gives, and the same hostile-input checks hold: payloads are unpacked
strictly (str map keys, no ext types, no trailing bytes), every column's value types
are checked against the schema, array headers are validated once and every row is
compared against them. Anything the columns cannot express cheaply (a missing or extra
key, a value of the wrong type, ragged or mixed arrays, ``.npy`` payloads, untyped
fields) makes :meth:`BatchDecoder.decode` return ``None``; the caller then decodes
that batch sample by sample, which yields the same values or raises the usual error.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import msgpack
import numpy as np

from .codec import _reject_ext, decode_ndarray
from .packable import PackableSample, _plan

__all__ = ["BatchDecoder", "column_of", "rows_from_columns"]

_NONE = type(None)
#: Arrays at least this wide (bytes) are copied row by row into the batch instead of joined first.
_ROW_COPY_WIDTH = 16384


def column_of(values: list[Any]) -> Any:
    """The batch value of one field: ``np.stack`` of equal-shaped arrays, else the list."""
    if values and all(isinstance(v, np.ndarray) for v in values):
        try:
            return np.stack(values)
        except ValueError:  # ragged arrays: keep the list
            return values
    return values


# strict like unpack_payload: str map keys only (checked again by the field lookups), no ext
# types or timestamps; unpackb refuses trailing bytes and lengths beyond the payload itself
_unpack = partial(msgpack.unpackb, raw=False, strict_map_key=True, ext_hook=_reject_ext, max_ext_len=0)


class BatchDecoder:
    """Decode payloads of ``sample_type`` into columns; see the module docstring.

    ``BatchDecoder.for_type(T)`` is None when ``T`` has no batched path (not a
    ``PackableSample`` dataclass, or a field outside the schema types).
    """

    __slots__ = ("sample_type", "names", "nfields", "_fields")

    def __init__(self, sample_type: type) -> None:
        plan = _plan(sample_type)
        self.sample_type = sample_type
        fields = []
        for name, convert, _required, fast, check in plan.decoders:
            spec = plan.specs[name]
            assert spec is not None  # for_type refuses untyped fields
            kind = "ndarray" if spec.kind == "ndarray" else ("float" if spec.primitive == "float" else "plain")
            if spec.kind == "array":
                kind = "list"
            fields.append((name, kind, fast, check, convert))
        self._fields = tuple(fields)
        self.names = tuple(f[0] for f in fields)
        self.nfields = len(fields)

    @classmethod
    def for_type(cls, sample_type: Any) -> "BatchDecoder | None":
        if not isinstance(sample_type, type) or not issubclass(sample_type, PackableSample):
            return None
        try:
            plan = _plan(sample_type)
        except Exception:  # noqa: BLE001 - no batch plan for this type: the per-sample path handles (and reports) it
            return None
        if any(spec is None for spec in plan.specs.values()) or not plan.specs:
            return None
        return cls(sample_type)

    def decode(self, payloads: Sequence[Any]) -> dict[str, Any] | None:
        """Columns ``{field: array or list}`` for ``payloads``, or None: decode them one by one."""
        if not payloads:
            return None
        try:
            dicts = list(map(_unpack, payloads))
        except Exception:  # noqa: BLE001 - the per-sample path re-decodes and raises the precise DecodeError
            return None  # the per-sample path raises the precise DecodeError
        nfields = self.nfields
        try:
            if set(map(len, dicts)) != {nfields}:  # a missing or extra key (non-dict tops fail below)
                return None
            columns: dict[str, Any] = {}
            for name, kind, fast, check, convert in self._fields:
                col = [d[name] for d in dicts]  # KeyError: a field missing -> per-sample path
                types = set(map(type, col))
                if kind == "ndarray":
                    value = self._array_column(col, types)
                elif kind == "plain":
                    if not types <= fast:
                        return None
                    value = col
                elif kind == "float":
                    if int in types:
                        col = [float(v) if v.__class__ is int else v for v in col]
                        types = set(map(type, col))
                    if not types <= fast:
                        return None
                    value = col
                else:  # lists: convert (ndarray items) and check item by item
                    if convert is not None:
                        col = [v if v is None else convert(v) for v in col]
                    if not all(map(check, col)):
                        return None
                    value = column_of(col)
                if value is None:
                    return None
                columns[name] = value
        except Exception:  # noqa: BLE001 - the per-sample path re-decodes and raises the precise DecodeError
            return None
        return columns

    @staticmethod
    def _array_column(col: list[Any], types: set[type]) -> Any:
        if types != {bytes}:
            return None  # None values (optional) or wrong types: per-sample path
        first = col[0]
        if first[:6] == b"\x93NUMPY":
            return None  # .npy payloads (maybe Fortran order): per-sample path
        proto = decode_ndarray(first, copy=False)  # validates dtype, shape and length once
        if not proto.dtype.isnative:
            return None  # np.stack would swap to native order while each sample keeps its own
        width = len(first)
        head = width - proto.nbytes
        if set(map(len, col)) != {width}:
            return None
        n = len(col)
        out = np.empty((n,) + proto.shape, proto.dtype)
        if width >= _ROW_COPY_WIDTH:
            # large arrays: copy each row's data straight into the batch (one copy, no join)
            rows = out.reshape(n, -1).view(np.uint8) if out.nbytes else None
            header = first[:head]
            for i, v in enumerate(col):
                if v[:head] != header:
                    return None  # another dtype or shape: per-sample path
                if rows is not None:
                    rows[i] = np.frombuffer(v, np.uint8, width - head, head)
            return out
        raw = np.frombuffer(b"".join(col), np.uint8).reshape(n, width)
        if n > 1 and not (raw[1:, :head] == raw[0, :head]).all():
            return None  # rows with another dtype or shape: per-sample path
        if out.nbytes:
            out.reshape(n, -1).view(np.uint8)[...] = raw[:, head:]
        return out


def rows_from_columns(sample_type: type, columns: dict[str, Any], n: int) -> list[Any]:
    """The ``n`` samples the columns hold, as ``sample_type`` instances (arrays copied out)."""
    plan = _plan(sample_type)
    names = list(columns)
    out = []
    for i in range(n):
        kwargs = {}
        for name in names:
            column = columns[name]
            if isinstance(column, np.ndarray):
                value = column[i, ...].copy()  # a 0-d array stays an array (column[i] is a scalar)
            else:
                value = column[i]
                if isinstance(value, np.ndarray):
                    value = value.copy()
            kwargs[name] = value
        if plan.noinit:
            late = {k: kwargs.pop(k) for k in plan.noinit if k in kwargs}
            obj = sample_type(**kwargs)
            for k, v in late.items():
                object.__setattr__(obj, k, v)
        else:
            obj = sample_type(**kwargs)
        out.append(obj)
    return out
