"""Typed samples: the ``PackableSample`` base, the ``@packable`` decorator and ``DictSample``.

A sample serializes to one msgpack map (fields in declaration order) and back. Each
class gets a plan, built once from its resolved annotations, that says which fields to
validate on write and which to turn back into numpy arrays on read, so the per-sample
path does no reflection.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import threading
import time
import types
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from ..errors import DecodeError, FieldMismatchError, NotPackableError, SampleError, UnsupportedTypeError
from . import codec
from .codec import decode_ndarray, encode_ndarray, pack_payload, unpack_payload
from .fields import FieldSpec, resolved_hints, spec_for_annotation

__all__ = [
    "DictSample",
    "PackableSample",
    "ensure_packable_type",
    "is_packable_type",
    "new_key",
    "packable",
]

T = TypeVar("T")
S = TypeVar("S", bound="PackableSample")

_PLAN_ATTR = "__atdata_plan__"
_plan_lock = threading.Lock()


_UUID_EPOCH = 0x01B21DD213814000  # 100-ns ticks from 1582-10-15 to 1970-01-01
_key_lock = threading.Lock()
_last_tick = 0


def new_key() -> str:
    """A fresh sample key as atdata makes them: ``str(uuid.uuid1(node=0, clock_seq=0))``.

    Built directly from the clock (``uuid.uuid1`` costs several microseconds per call);
    ticks are strictly increasing within the process, so keys never repeat.
    """
    global _last_tick
    with _key_lock:
        tick = time.time_ns() // 100 + _UUID_EPOCH
        if tick <= _last_tick:
            tick = _last_tick + 1
        _last_tick = tick
    return (
        f"{tick & 0xFFFFFFFF:08x}-{(tick >> 32) & 0xFFFF:04x}-"
        f"{((tick >> 48) & 0x0FFF) | 0x1000:04x}-8000-000000000000"
    )


# --------------------------------------------------------------------------- per-class plan

Check = Callable[[Any], bool]
Convert = Callable[[Any], Any]


def _describe(spec: FieldSpec) -> str:
    if spec.kind == "primitive":
        text = spec.primitive or "?"
    elif spec.kind == "ndarray":
        text = f"NDArray[{spec.dtype}]"
    else:
        assert spec.items is not None
        text = f"list[{_describe(spec.items)}]"
    return f"{text} | None" if spec.optional else text


def _isinstance_check(types: tuple[type, ...], *, reject_bool: bool = False) -> Check:
    if reject_bool:
        return lambda v: isinstance(v, types) and v.__class__ is not bool
    return lambda v: isinstance(v, types)


_PRIMITIVE_CHECKS: dict[str, Check] = {
    "str": _isinstance_check((str,)),
    # bool is an int subclass but decodes as bool, so it would not round-trip.
    "int": _isinstance_check((int, np.integer), reject_bool=True),
    # ints are accepted for floats (packed as msgpack ints, like atdata; read back as float).
    "float": _isinstance_check((float, int, np.floating, np.integer), reject_bool=True),
    "bool": _isinstance_check((bool, np.bool_)),
    "bytes": _isinstance_check((bytes, bytearray, memoryview)),
}


def _check_for(spec: FieldSpec) -> Check:
    if spec.kind == "primitive":
        base = _PRIMITIVE_CHECKS[spec.primitive or "bytes"]
    elif spec.kind == "ndarray":
        base = _isinstance_check((np.ndarray,))
    else:
        assert spec.items is not None
        item = _check_for(spec.items)
        item_fast = _fast_types(spec.items)

        def base(v: Any) -> bool:
            if not isinstance(v, (list, tuple)):
                return False
            # one C-level pass over the item types; the per-item check only if one is unusual
            return bool(item_fast) and set(map(type, v)) <= item_fast or all(map(item, v))

    if spec.optional:
        return lambda v: v is None or base(v)
    return base


_FAST_TYPES: dict[str, frozenset[type]] = {
    "str": frozenset({str}),
    "int": frozenset({int}),
    "float": frozenset({float, int}),
    "bool": frozenset({bool}),
    "bytes": frozenset({bytes}),
}


def _fast_types(spec: FieldSpec) -> frozenset[type]:
    """Exact value types that certainly pass :func:`_check_for` (skips a Python call)."""
    if spec.kind == "primitive":
        fast = _FAST_TYPES[spec.primitive or "bytes"]
    elif spec.kind == "ndarray":
        fast = frozenset({np.ndarray})
    else:
        fast = frozenset()
    return fast | {type(None)} if spec.optional else fast


def _fix_hint(spec: FieldSpec, value: Any) -> str:
    if value is None:
        return "pass a value, or declare the field Optional[...] (T | None) with a default"
    if spec.kind == "ndarray":
        return "pass a numpy array, e.g. np.asarray(value)"
    if spec.kind == "array":
        if isinstance(value, np.ndarray):
            return "convert the array with .tolist(), or declare the field as NDArray"
        return "pass a list whose items all match the item type"
    if spec.primitive == "int" and isinstance(value, (bool, np.bool_)):
        return "bool values are not accepted for int fields: pass int(value) or declare a bool field"
    return f"pass a {spec.primitive} value (convert it explicitly if needed)"


def _has_ndarray(spec: FieldSpec) -> bool:
    if spec.kind == "ndarray":
        return True
    return spec.items is not None and _has_ndarray(spec.items)


def _decode_array_value(v: Any) -> np.ndarray:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return decode_ndarray(v)
    if isinstance(v, np.ndarray):
        return v
    raise DecodeError(f"expected ndarray bytes, got {type(v).__name__}")


def _convert_for(spec: FieldSpec) -> Convert | None:
    """How to turn a decoded msgpack value into the field's Python value (None: as is)."""
    if spec.kind == "ndarray":
        return _decode_array_value
    if spec.kind == "array" and spec.items is not None and _has_ndarray(spec.items):
        item = _convert_for(spec.items)
        assert item is not None

        def convert_list(v: Any) -> list[Any]:
            if not isinstance(v, (list, tuple)):
                raise DecodeError(f"expected a list, got {type(v).__name__}")
            return [item(x) for x in v]

        return convert_list
    if spec.kind == "primitive" and spec.primitive == "float":
        return lambda v: float(v) if v.__class__ is int else v
    return None


class _Plan:
    """Everything the per-sample path needs, computed once per class."""

    __slots__ = ("owner", "cls_name", "steps", "specs", "decoders", "names", "noinit", "array_fields")

    def __init__(self, cls: type) -> None:
        self.owner = cls
        self.cls_name = cls.__qualname__
        hints = resolved_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        specs: dict[str, FieldSpec | None] = {}
        for name, tp in hints.items():
            try:
                specs[name] = spec_for_annotation(tp, name, cls.__qualname__)
            except Exception:  # noqa: BLE001 - a field type a schema cannot describe is packed as msgpack sees fit; reported by build_schema_record
                # Not describable by a schema (dict, Any, ...): packed as msgpack sees fit
                # and returned as decoded; build_schema_record reports it.
                specs[name] = None
        self.specs = specs
        self.names = tuple(hints)
        # (name, exact types that need no further check, full check, encode as ndarray)
        self.steps = tuple(
            (name, frozenset(), None, False)
            if spec is None
            else (name, _fast_types(spec), _check_for(spec), spec.kind == "ndarray")
            for name, spec in specs.items()
        )
        decoders: list[tuple[str, Any, bool, frozenset[type], Any]] = []
        for name, spec in specs.items():
            f = fields[name]
            required = (
                f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            )
            if spec is None:
                decoders.append((name, None, required, frozenset(), None))
            else:
                # checked after conversion: ndarray fields are arrays by then, float fields floats
                fast = _fast_types(spec) | ({float} if spec.kind == "primitive" and spec.primitive == "float" else set())
                decoders.append((name, _convert_for(spec), required, fast, _check_for(spec)))
        self.decoders = tuple(decoders)
        self.noinit = frozenset(name for name, f in fields.items() if not f.init)
        #: ndarray fields a constructor may be given serialized bytes for (see __post_init__)
        self.array_fields = tuple(name for name, spec in specs.items() if spec is not None and spec.kind == "ndarray")

    def decode_error_text(self, name: str, value: Any) -> str:
        spec = self.specs[name]
        assert spec is not None
        return (
            f"expects {_describe(spec)}, got {type(value).__name__} ({value!r:.60}); the payload "
            "does not match the sample type: read it with the type it was written with, or as DictSample"
        )

    def value_error(self, name: str, value: Any) -> SampleError:
        spec = self.specs[name]
        assert spec is not None
        return SampleError(
            f"{self.cls_name}.{name} expects {_describe(spec)}, got "
            f"{type(value).__name__} ({value!r:.60}); {_fix_hint(spec, value)}"
        )


def _plan(cls: type) -> _Plan:
    plan = getattr(cls, _PLAN_ATTR, None)
    if plan is None or plan.owner is not cls:  # a subclass sees its parent's plan
        plan = cls.__dict__.get(_PLAN_ATTR)
    if plan is None:
        if "__dataclass_fields__" not in cls.__dict__ and not dataclasses.is_dataclass(cls):
            raise SampleError(
                f"{cls.__qualname__} must be a dataclass to be packed: decorate it with "
                "@packable (or @dataclass on a PackableSample subclass)"
            )
        with _plan_lock:
            plan = cls.__dict__.get(_PLAN_ATTR)
            if plan is None:
                plan = _Plan(cls)
                type.__setattr__(cls, _PLAN_ATTR, plan)
    return plan


# --------------------------------------------------------------------------- PackableSample


class PackableSample:
    """Base class of typed samples; subclasses are dataclasses (see :func:`packable`).

    ``packed`` gives the msgpack payload atdata writes; ``from_bytes``/``from_data``
    read one back, turning every ndarray-typed field (``NDArray``, ``NDArray[np.X]``,
    ``np.ndarray``, optional or inside lists, string annotations too) into a numpy array.
    """

    def __post_init__(self) -> None:
        # Serialized array bytes given to the constructor are decoded, as atdata does, so
        # ``T(**DictSample.from_bytes(b).to_dict())`` gives arrays (atdata decodes only bare
        # ``NDArray`` annotations; every ndarray field is decoded here).
        for name in _plan(type(self)).array_fields:
            value = getattr(self, name)
            if value.__class__ is bytes or value.__class__ is bytearray:
                try:
                    object.__setattr__(self, name, decode_ndarray(bytes(value)))
                except DecodeError as exc:
                    raise SampleError(f"{type(self).__qualname__}.{name}: bytes that are not a serialized array: {exc}") from None

    @property
    def packed(self) -> bytes:
        """The msgpack payload: fields in declaration order, ``None`` kept as nil."""
        plan = _plan(type(self))
        data = {}
        for name, fast, check, is_array in plan.steps:
            value = getattr(self, name)
            if value.__class__ not in fast and check is not None and not check(value):
                raise plan.value_error(name, value)
            if is_array and value is not None:
                try:
                    value = encode_ndarray(value)
                except SampleError as exc:
                    raise SampleError(f"{plan.cls_name}.{name}: {exc}") from None
            data[name] = value
        packer = codec._packer()
        try:
            return packer.pack(data)
        except Exception as exc:  # noqa: BLE001 - msgpack raises several types for an unencodable value; re-raised as SampleError
            packer.reset()
            raise SampleError(
                f"cannot serialize {plan.cls_name} (fields {list(data)}): {exc}; field values "
                "must be str, int, float, bool, bytes, None, numpy arrays or lists of these"
            ) from None

    @property
    def as_wds(self) -> dict[str, Any]:
        """The WebDataset sample dict: ``{"__key__": uuid1 key, "msgpack": packed}``."""
        return {"__key__": new_key(), "msgpack": self.packed}

    @classmethod
    def from_data(cls: type[S], data: Mapping[str, Any]) -> S:
        """Build a sample from an unpacked payload dict, decoding ndarray fields.

        A field absent from ``data`` takes its default; a required one raises, as does a
        key the class has no field for (:class:`FieldMismatchError`, a ``SampleError``
        and a ``TypeError`` like atdata's).
        """
        plan = _plan(cls)
        if type(data) is not dict and not isinstance(data, Mapping):
            raise DecodeError(
                f"{plan.cls_name}.from_data expects a dict of field values, got {type(data).__name__}"
            )
        kwargs: dict[str, Any] = {}
        found = 0
        name = ""
        try:
            for name, convert, required, fast, check in plan.decoders:
                if name in data:
                    value = data[name]
                    found += 1
                    if convert is not None and value is not None:
                        value = convert(value)
                    if value.__class__ not in fast and check is not None and not check(value):
                        raise DecodeError(plan.decode_error_text(name, value))
                    kwargs[name] = value
                elif required:
                    raise FieldMismatchError(
                        f"{plan.cls_name} requires field {name!r} but the data has only "
                        f"{sorted(data)}; give the field a default (e.g. make it Optional[...] "
                        "= None) or read the data with the type it was written with"
                    )
        except DecodeError as exc:
            raise DecodeError(f"{plan.cls_name}.{name}: {exc}") from None
        if found != len(data):
            extra = sorted(str(k) for k in data if k not in plan.specs)
            raise FieldMismatchError(
                f"{plan.cls_name} has no field(s) {extra} present in the data; read it with "
                "the schema it was written with (Index.get_schema_type / type_from_record), "
                "as DictSample, or add the fields to the class"
            )
        if plan.noinit:
            late = {k: kwargs.pop(k) for k in plan.noinit if k in kwargs}
            obj = cls(**kwargs)
            for k, v in late.items():
                object.__setattr__(obj, k, v)
            return obj
        return cls(**kwargs)

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        """Decode a msgpack payload (strictly; see :func:`unpack_payload`)."""
        return cls.from_data(unpack_payload(data))


# --------------------------------------------------------------------------- @packable


_TEMPORAL = (datetime.date, datetime.time, datetime.timedelta)  # datetime.datetime is a date


def _unencodable(tp: Any, depth: int = 0) -> str | None:
    """Why values annotated ``tp`` cannot be written and read back as they are, or ``None``."""
    if depth > 16:
        return None
    origin = typing.get_origin(tp) or tp
    if origin is tuple:
        return "a tuple is stored by msgpack as a list and would read back as a list; annotate it list[T]"
    if origin in (set, frozenset):
        return "msgpack cannot store a set; use list[T] (e.g. sorted(values))"
    if isinstance(origin, type) and issubclass(origin, _TEMPORAL):
        return (f"msgpack cannot store {origin.__name__}; store an ISO-8601 str (value.isoformat()) "
                "or a POSIX timestamp (float)")
    if isinstance(origin, type) and issubclass(origin, (complex, decimal.Decimal, uuid.UUID)):
        return f"msgpack cannot store {origin.__name__}; store it as str"
    if origin is typing.Annotated:
        return _unencodable(typing.get_args(tp)[0], depth + 1)
    if origin not in (list, dict, typing.Union, types.UnionType):
        return None  # ndarray shapes/dtypes and other parametrized types are not field containers
    for arg in typing.get_args(tp):
        why = _unencodable(arg, depth + 1)
        if why is not None:
            return why
    return None


def _refuse_unencodable_fields(cls: type) -> None:
    """:class:`UnsupportedTypeError` at decoration time for a field no sample could round-trip."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError, AttributeError):
        return  # unresolvable forward refs: reported with a fix when the class is first used
    for f in dataclasses.fields(cls):
        why = _unencodable(hints.get(f.name, f.type))
        if why is not None:
            raise UnsupportedTypeError(
                f"{cls.__qualname__}.{f.name}: field type {hints.get(f.name, f.type)!r} is not supported: {why}"
            )


def packable(cls: type[T] | None = None, /) -> Any:
    """Turn an annotated class into a dataclass subclass of :class:`PackableSample`.

    The result keeps the original ``__name__``, ``__qualname__``, ``__module__`` and
    ``__doc__``, so a class defined at module level pickles by reference (Dagster runs
    steps in subprocesses). Usable as ``@packable`` or ``@packable()``.
    """
    if cls is None:
        return packable
    if not isinstance(cls, type):
        raise NotPackableError(
            f"@packable decorates classes, got {type(cls).__name__} {cls!r:.60}; "
            "put it on a class with annotated fields"
        )
    if issubclass(cls, PackableSample):
        if "__dataclass_fields__" not in cls.__dict__:
            cls = dataclasses.dataclass(cls)
        _refuse_unencodable_fields(cls)
        return cls
    if "__dataclass_fields__" not in cls.__dict__:
        cls = dataclasses.dataclass(cls)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    _refuse_unencodable_fields(cls)
    new = type(cls.__name__, (cls, PackableSample), namespace)
    return dataclasses.dataclass(
        new,
        init=params.init,
        repr=params.repr,
        eq=params.eq,
        order=params.order,
        unsafe_hash=params.unsafe_hash,
        frozen=params.frozen,
    )


def is_packable_type(t: Any) -> bool:
    """True for classes that can be written and read: they have ``packed``, ``from_data``
    and ``from_bytes`` (PackableSample dataclasses, DictSample, duck-typed equivalents)."""
    return (
        isinstance(t, type)
        and hasattr(t, "packed")
        and callable(getattr(t, "from_data", None))
        and callable(getattr(t, "from_bytes", None))
    )


def ensure_packable_type(t: Any) -> type:
    """Return ``t`` if :func:`is_packable_type`, else raise :class:`NotPackableError`."""
    if not is_packable_type(t):
        what = t.__qualname__ if isinstance(t, type) else f"{type(t).__name__} value {t!r:.60}"
        raise NotPackableError(
            f"{what} is not a packable sample type (it needs packed, from_data and "
            "from_bytes); decorate the class with @atdata_dagster.packable or subclass "
            "PackableSample as a @dataclass"
        )
    return t


# --------------------------------------------------------------------------- DictSample


class DictSample:
    """An untyped sample: the unpacked payload dict, as atdata's ``DictSample``.

    Values are exactly what msgpack decoded, so ndarray fields stay raw ``bytes``; use
    :meth:`as_type` to get a typed sample with arrays decoded. Fields are reachable as
    attributes (unless shadowed by a method such as ``keys``) and as items.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None, /, _data: Mapping[str, Any] | None = None,
                 **fields: Any) -> None:
        # ``DictSample(_data={...})`` is atdata's spelling; atdata then ignores keyword
        # fields, here they are added (nothing given is dropped)
        base = data if data is not None else _data
        merged = dict(base) if base is not None else {}
        merged.update(fields)
        object.__setattr__(self, "_data", merged)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DictSample:
        if not isinstance(data, Mapping):
            raise DecodeError(f"DictSample.from_data expects a dict, got {type(data).__name__}")
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_data", data if type(data) is dict else dict(data))
        return obj

    @classmethod
    def from_bytes(cls, data: bytes) -> DictSample:
        return cls.from_data(unpack_payload(data))

    @property
    def packed(self) -> bytes:
        """The dict packed verbatim (raw array bytes stay bin, so bytes round-trip)."""
        return pack_payload(self._data)

    @property
    def as_wds(self) -> dict[str, Any]:
        return {"__key__": new_key(), "msgpack": self.packed}

    def as_type(self, sample_type: type[T]) -> T:
        """Convert to a typed sample, decoding its ndarray fields."""
        ensure_packable_type(sample_type)
        return sample_type.from_data(self._data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_data":
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(
                f"DictSample has no field {name!r}; fields: {sorted(self._data)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Any:
        return self._data.keys()

    def values(self) -> Any:
        return self._data.values()

    def items(self) -> Any:
        return self._data.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the fields."""
        return dict(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DictSample):
            return self._data == other._data
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DictSample({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (DictSample, (self._data,))
