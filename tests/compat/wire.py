"""Shared by both sides of the compat suite: sample types as data, and values as JSON.

This module is imported by our tests (Python 3.11, ``atdata_dagster``) *and* by
``atdata_side.py`` running in the atdata venv (Python 3.12, real ``atdata``). It must
therefore import only the standard library and numpy. Each side turns a ``TypeSpec``
into a class with its own ``@packable``, so both define the same class name, field
order and annotations without sharing any code that touches the formats.
"""

from __future__ import annotations

import base64
import json
import struct
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from numpy.typing import NDArray

# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class TypeSpec:
    """A sample class described as data: ``fields`` are ``(name, annotation source)``.

    Fields whose annotation is optional get a ``None`` default (they come last, as
    atdata cannot decode an optional field before a required one).
    """

    name: str
    fields: tuple[tuple[str, str], ...]
    doc: str | None = None


_ANNOTATION_NS = {"NDArray": NDArray, "np": np, "Optional": Optional, "typing": typing, "Any": Any}

SPECS: dict[str, TypeSpec] = {
    s.name: s
    for s in [
        TypeSpec(
            "AllTypes",
            (
                ("s", "str"),
                ("i", "int"),
                ("f", "float"),
                ("flag", "bool"),
                ("raw", "bytes"),
                ("arr", "NDArray"),
                ("img", "NDArray[np.uint8]"),
                ("li", "list[int]"),
                ("ls", "list[str]"),
                ("nested", "list[list[int]]"),
                ("opt_s", "Optional[str]"),
                ("opt_i", "int | None"),
                ("opt_arr", "NDArray | None"),
                ("opt_arr2", "Optional[NDArray]"),
            ),
            "Every field type a schema can carry.",
        ),
        TypeSpec("Tiny", (("label", "str"), ("v", "NDArray")), "Tiny sample."),
        TypeSpec("NoDoc", (("x", "int"), ("y", "str"))),
    ]
}

#: the field names of a spec that hold arrays (bytes on the wire)
def ndarray_fields(spec: TypeSpec) -> set[str]:
    return {n for n, a in spec.fields if "NDArray" in a}


def _is_optional(annotation: str) -> bool:
    return annotation.startswith("Optional[") or annotation.endswith("| None")


def build_type(spec: TypeSpec, packable: Callable[[type], type], module: str) -> type:
    """Create ``spec`` as a class and decorate it with a side's ``@packable``."""
    annotations = {n: eval(a, dict(_ANNOTATION_NS)) for n, a in spec.fields}  # noqa: S307 (our own constants)
    ns: dict[str, Any] = {"__annotations__": annotations, "__module__": module, "__qualname__": spec.name}
    for n, a in spec.fields:
        if _is_optional(a):
            ns[n] = None
    if spec.doc is not None:
        ns["__doc__"] = spec.doc
    return packable(type(spec.name, (), ns))


# --------------------------------------------------------------------------- values


def _arr(dtype: str, values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.array(values, dtype=np.dtype(dtype))
    return a.reshape(shape) if shape is not None else a


#: arrays covering the dtypes/shapes the wire format must carry
ARRAYS: list[np.ndarray] = [
    _arr("<f4", [1.5, -2.25, 3.0, 0.0, 1e-3, 6.5], (2, 3)),
    _arr("<i2", list(range(6)), (2, 3)),
    _arr(">f8", 3.5),  # 0-d, big-endian
    _arr("|b1", [True, False, True]),
    _arr("|u1", [[0, 255], [7, 8]]),
    _arr("<i8", [-(2**63), 2**63 - 1]),
    _arr(">i4", [1, -2, 3]),
    _arr("<u2", [], (0, 4)),  # empty
    _arr("<c8", [1 + 2j, -3.5j]),
    _arr("<f8", [[[1.0]], [[2.0]]]),  # 3-d
    _arr("<U3", ["ab", "xyz"]),
]


def make_values(type_name: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` deterministic field dicts for ``SPECS[type_name]`` (same on both sides)."""
    out: list[dict[str, Any]] = []
    for k in range(n):
        j = k + seed
        if type_name == "AllTypes":
            out.append(
                {
                    "s": ["", "hello", "ünïcødé ✓", "tab\tnew\nline", "a" * 300][j % 5],
                    "i": [0, -1, 2**63 - 1, -(2**63), 4242][j % 5] + (0 if j % 5 in (2, 3) else j),
                    "f": [0.0, -1.5, 1e308, 2.5e-310, 3.141592653589793][j % 5],
                    "flag": j % 2 == 0,
                    "raw": bytes((j * 7 + b) % 256 for b in range(j % 4 * 5)),
                    "arr": ARRAYS[j % len(ARRAYS)],
                    "img": _arr("|u1", [(j + b) % 256 for b in range(12)], (2, 2, 3)),
                    "li": list(range(-j, j + 1)),
                    "ls": [f"w{j}", "", "x y"][: j % 4],
                    "nested": [[j], [], [1, 2, 3]],
                    "opt_s": None if j % 3 == 0 else f"opt{j}",
                    "opt_i": None if j % 2 else j * 1000,
                    "opt_arr": None if j % 3 == 1 else ARRAYS[(j + 3) % len(ARRAYS)],
                    "opt_arr2": None if j % 2 == 0 else ARRAYS[(j + 5) % len(ARRAYS)],
                }
            )
        elif type_name == "Tiny":
            out.append({"label": f"t{j}", "v": _arr("<f4", [j, j + 1])})
        elif type_name == "NoDoc":
            out.append({"x": j, "y": str(j)})
        else:
            raise KeyError(type_name)
    return out


# ---------------------------------------------------------------------- JSON form


def to_json(v: Any) -> Any:
    """Sample values -> JSON-able (bytes and arrays tagged, numpy scalars unwrapped)."""
    if isinstance(v, np.ndarray):
        return {"$nd": {"dtype": v.dtype.str, "shape": list(v.shape), "b64": base64.b64encode(v.tobytes()).decode()}}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, np.generic):
        return to_json(v.item())
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    return v


def from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"$nd"}:
            d = v["$nd"]
            return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
        if set(v) == {"$b64"}:
            return base64.b64decode(v["$b64"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def dumps(obj: Any) -> str:
    return json.dumps(to_json(obj))


def loads(text: str) -> Any:
    return from_json(json.loads(text))


# ------------------------------------------------------------------ comparisons


def decode_compact_ndarray(b: bytes) -> np.ndarray:
    """Independent reader of the compact ndarray bytes (reference §1.3), for comparisons."""
    n = b[0]
    dtype = np.dtype(b[1 : 1 + n].decode("ascii"))
    ndim = b[1 + n]
    off = 2 + n
    shape = struct.unpack_from("<%dq" % ndim, b, off)
    off += 8 * ndim
    return np.frombuffer(b[off:], dtype=dtype).reshape(shape).copy()


def same_value(a: Any, b: Any) -> bool:
    """Exact equality, arrays by dtype (byte order included), shape and bytes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype.str == b.dtype.str
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if type(a) is not type(b) and not (isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray))):
        return False
    return a == b


def diff_samples(expected: list[dict], actual: list[dict]) -> list[str]:
    """Human-readable differences between two lists of field dicts ([] when equal)."""
    problems: list[str] = []
    if len(expected) != len(actual):
        problems.append(f"sample count: expected {len(expected)}, got {len(actual)}")
    for idx, (e, a) in enumerate(zip(expected, actual)):
        if list(e) != list(a):
            problems.append(f"sample {idx}: fields {list(a)} != expected {list(e)}")
        for k in e:
            if k in a and not same_value(e[k], a[k]):
                problems.append(f"sample {idx} field {k!r}: expected {e[k]!r}, got {a[k]!r}")
    return problems


def conveniences(ds: Any, first_key: str) -> dict[str, Any]:
    """What atdata's Dataset conveniences return for a ``NoDoc`` dataset (JSON-able), asked the
    same way on either side: both libraries' ``Dataset`` objects go through this one function."""
    info = ds.describe()
    return {
        "len": len(ds),
        "column_names": ds.column_names,
        "schema": sorted(ds.schema),
        "describe": {k: info[k] for k in ("sample_type", "num_shards", "shards", "url")},
        "head": [s.x for s in ds.head(3)],
        "select": [s.x for s in ds.select([4, 0, 2])],
        "filter": [s.x for s in ds.filter(lambda s: s.x % 3 == 0)],
        "map": list(ds.map(lambda s: s.y)),
        "to_dict": ds.to_dict(limit=2),
        "get": ds.get(first_key).x,
    }
