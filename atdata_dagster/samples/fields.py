"""Field specs: what a schema says about one field of a sample type.

The lowest layer of ``samples``: both ``packable`` (encoding plans) and ``schema``
(schema records, types rebuilt from records) build on it, so neither imports the other
to describe a field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Union

import numpy as np

from ..errors import UnsupportedTypeError

__all__ = ["DEFAULT_NDARRAY_DTYPE", "FieldKind", "FieldSpec", "PRIMITIVES", "PRIMITIVE_TYPES", "resolved_hints", "spec_for_annotation"]

PRIMITIVES: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool", bytes: "bytes"}
PRIMITIVE_TYPES: dict[str, type] = {v: k for k, v in PRIMITIVES.items()}
#: Binary formats atdata 0.7 can store in a field; we read them back as raw bytes.
BINARY_KINDS = frozenset({"sparse", "arrow_tensor", "safetensors", "dataframe"})
DEFAULT_NDARRAY_DTYPE = "float32"  # what atdata records for a bare NDArray

_SUPPORTED = (
    "supported field types are str, int, float, bool, bytes, NDArray / NDArray[np.<dtype>] / "
    "np.ndarray, list[T] of a supported T, and Optional[T] / T | None"
)
_MAX_DEPTH = 16  # nesting of list[list[...]] accepted from a record


# --------------------------------------------------------------------------- field specs


class FieldKind(StrEnum):
    """The three shapes a schema field takes (equal to the strings atdata's records use)."""

    PRIMITIVE = "primitive"
    NDARRAY = "ndarray"
    ARRAY = "array"


@dataclass(frozen=True)
class FieldSpec:
    """What a schema says about one field (or about the items of a list field).

    ``kind`` is ``"primitive"`` (``primitive`` in str/int/float/bool/bytes),
    ``"ndarray"`` (``dtype`` is a numpy dtype *name* such as ``"float32"``, or None when
    unknown) or ``"array"`` (``items`` describes the elements).
    """

    name: str
    kind: FieldKind
    optional: bool = False
    primitive: str | None = None
    dtype: str | None = None
    items: FieldSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FieldKind(self.kind))  # a plain string kind is checked here


def _unsupported(owner: str, name: str, tp: Any, why: str = "") -> UnsupportedTypeError:
    why = f" ({why})" if why else ""
    return UnsupportedTypeError(
        f"Unsupported type for schema field {owner}.{name}: {tp!r}{why}; {_SUPPORTED}. "
        "Change the annotation, or store the value as bytes"
    )


def _ndarray_dtype_name(tp: Any) -> str | None:
    """``NDArray[np.uint8]`` -> ``"uint8"``; bare NDArray / np.ndarray / Any -> None."""
    args = typing.get_args(tp)
    if len(args) != 2:
        return None
    scalar = typing.get_args(args[1])
    if len(scalar) != 1 or not isinstance(scalar[0], type) or not issubclass(scalar[0], np.generic):
        return None
    try:
        dtype = np.dtype(scalar[0])
    except TypeError:  # abstract scalar types such as np.floating
        return None
    return None if dtype.hasobject else dtype.name


def spec_for_annotation(tp: Any, name: str, owner: str = "?") -> FieldSpec:
    """The :class:`FieldSpec` of a resolved annotation, or :class:`UnsupportedTypeError`."""
    return _spec_for(tp, name, owner, 0)


def _spec_for(tp: Any, name: str, owner: str, depth: int) -> FieldSpec:
    if depth > _MAX_DEPTH:
        raise _unsupported(owner, name, tp, "nested too deeply")
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _spec_for(typing.get_args(tp)[0], name, owner, depth)
    if origin is Union or origin is types.UnionType:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) != 1:
            raise _unsupported(owner, name, tp, "Complex union types not supported")
        return dataclasses.replace(_spec_for(members[0], name, owner, depth), optional=True)
    try:
        primitive = PRIMITIVES.get(tp)
    except TypeError:  # unhashable annotation objects
        primitive = None
    if primitive is not None:
        return FieldSpec(name, FieldKind.PRIMITIVE, primitive=primitive)
    if tp is np.ndarray or origin is np.ndarray:
        return FieldSpec(name, FieldKind.NDARRAY, dtype=_ndarray_dtype_name(tp) or DEFAULT_NDARRAY_DTYPE)
    if origin is list or tp is list:
        args = typing.get_args(tp)
        if len(args) != 1:
            raise _unsupported(owner, name, tp, "list needs an item type, e.g. list[int]")
        items = _spec_for(args[0], name, owner, depth + 1)
        if items.optional:
            raise _unsupported(owner, name, tp, "list items cannot be optional")
        return FieldSpec(name, FieldKind.ARRAY, items=items)
    if dataclasses.is_dataclass(tp):
        raise _unsupported(owner, name, tp, "Nested dataclass types not yet supported")
    raise _unsupported(owner, name, tp)


def resolved_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields (string annotations included)."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - get_type_hints raises NameError, TypeError, ...; re-raised as UnsupportedTypeError
        raise UnsupportedTypeError(
            f"cannot resolve the field annotations of {cls.__qualname__}: {exc}; make every "
            "type named in its annotations importable from its module (not only under "
            "TYPE_CHECKING) and define the class at module level"
        ) from None
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}
