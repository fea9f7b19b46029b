"""Sample types <-> schema records: field specs, refs, versions, and types rebuilt from records.

Records are the JSON documents atdata stores for a sample type (reference §4.1); they
may come from strangers (shared indexes, the atmosphere), so everything read from a
record is validated and only ever turned into data, never into code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword
import re
import threading
import unicodedata
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, NamedTuple, Optional

import numpy as np
from numpy.typing import NDArray

from ..errors import (
    InvalidNameError,
    InvalidRefError,
    SampleError,
    SchemaError,
)

from .fields import (  # re-exported: schema's public names predate the fields module
    _MAX_DEPTH,
    BINARY_KINDS,
    DEFAULT_NDARRAY_DTYPE,
    PRIMITIVE_TYPES,
    FieldKind,
    FieldSpec,
    resolved_hints,
    spec_for_annotation,
)
from .packable import PackableSample, ensure_packable_type

__all__ = [
    "FieldSpec",
    "RecordShape",
    "build_schema_record",
    "field_specs",
    "field_type_text",
    "fields_signature",
    "make_schema_ref",
    "next_version",
    "normalize_record",
    "parse_schema_ref",
    "schema_json",
    "spec_for_annotation",
    "type_from_record",
]

SCHEMA_REF_PREFIX = "atdata://local/schema/"
LEGACY_SCHEMA_REF_PREFIX = "local://schemas/"

_MAX_FIELDS = 1024
_MAX_NAME = 128
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,63}")
_SEMVER_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_DTYPE_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


_specs_cache: dict[type, tuple[FieldSpec, ...]] = {}
_specs_lock = threading.Lock()


def field_specs(cls: type) -> list[FieldSpec]:
    """The field specs of a packable dataclass, in declaration order (cached per class).

    Raises :class:`NotPackableError` for classes that are not packable, :class:`SampleError`
    for packable classes that are not dataclasses (e.g. ``DictSample``) and
    :class:`UnsupportedTypeError` for fields no schema can describe.
    """
    cached = _specs_cache.get(cls)
    if cached is not None:
        return list(cached)
    ensure_packable_type(cls)
    if not dataclasses.is_dataclass(cls):
        raise SampleError(
            f"{cls.__qualname__} must be a dataclass (use @packable) to have a schema; "
            "an untyped DictSample dataset needs an explicit schema_ref"
        )
    hints = resolved_hints(cls)
    specs = tuple(spec_for_annotation(tp, name, cls.__qualname__) for name, tp in hints.items())
    with _specs_lock:
        if len(_specs_cache) >= 4096:
            _specs_cache.clear()
        _specs_cache[cls] = specs
    return list(specs)


# --------------------------------------------------------------------------- records


def field_type_text(field_type: Any, *, dtype: bool = True, _depth: int = 0) -> str:
    """A schema record's ``fieldType`` as a reader thinks of it: ``str``, ``ndarray[uint8]``,
    ``list[int]``; with ``dtype=False`` arrays are just ``ndarray`` (for comparing what decoding
    needs: a bare ``NDArray`` annotation reads every dtype). ``?`` for anything unrecognised."""
    if not isinstance(field_type, dict) or _depth > _MAX_DEPTH:
        return "?"
    kind = str(field_type.get("$type", "")).split("#")[-1]
    if field_type.get("primitive"):
        return str(field_type["primitive"])
    if kind == "ndarray" or "dtype" in field_type:
        return f"ndarray[{field_type.get('dtype', '?')}]" if dtype else "ndarray"
    if kind == "array":
        return f"list[{field_type_text(field_type.get('items'), dtype=dtype, _depth=_depth + 1)}]"
    return kind or "?"


def _field_type(spec: FieldSpec) -> dict[str, Any]:
    if spec.kind == "primitive":
        return {"$type": "local#primitive", "primitive": spec.primitive}
    if spec.kind == "ndarray":
        return {"$type": "local#ndarray", "dtype": spec.dtype or DEFAULT_NDARRAY_DTYPE}
    assert spec.items is not None
    return {"$type": "local#array", "items": _field_type(spec.items)}


def build_schema_record(
    cls: type, *, version: str, description: str | None = None
) -> dict[str, Any]:
    """The local schema record of ``cls`` exactly as atdata stores it (reference §4.1).

    One deliberate difference: ``list[NDArray]`` is recorded as an ``array`` of
    ``ndarray`` items, not as a plain ``ndarray`` (atdata's check order bug), so readers
    rebuild a list of arrays and decode each element.
    """
    specs = field_specs(cls)
    _check_version(version, InvalidNameError, "version")
    return {
        "name": cls.__name__,
        "version": version,
        "fields": [
            {"name": s.name, "fieldType": _field_type(s), "optional": s.optional} for s in specs
        ],
        "description": description if description is not None else cls.__doc__,
        "createdAt": datetime.now(timezone.utc).isoformat(),
    }


def schema_json(record: dict[str, Any]) -> str:
    """The stored JSON text of a record (``json.dumps`` defaults; ``$ref`` is not stored)."""
    return json.dumps({k: v for k, v in record.items() if k != "$ref"})


def fields_signature(record_or_fields: Any) -> str:
    """A stable SHA-256 hex digest of a record's fields (name, type, optional).

    Accepts a record (local ``fields`` or JSON-Schema ``schema`` body), a list of field
    dicts or a list of :class:`FieldSpec`. Description, version and timestamps are
    ignored, so two records with the same fields have the same signature.
    """
    obj = record_or_fields
    if isinstance(obj, dict):
        if "fields" in obj:
            obj = obj["fields"]
        elif "schema" in obj:
            obj = obj["schema"]
    elif isinstance(obj, (list, tuple)):
        obj = [
            {"name": f.name, "fieldType": _field_type(f), "optional": f.optional}
            if isinstance(f, FieldSpec)
            else f
            for f in obj
        ]
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- names, refs, versions


def is_safe_identifier(name: Any) -> bool:
    """A Python identifier, not a keyword, unchanged by NFKC (what source code would see)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= _MAX_NAME
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and unicodedata.normalize("NFKC", name) == name
    )


def _is_type_name(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= _MAX_NAME and all(
        is_safe_identifier(part) for part in name.split(".")
    )


def _check_version(version: Any, exc: type[Exception], what: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise exc(
            f"invalid schema {what} {version!r}: use a non-empty version of letters, digits "
            "and . _ + - (no '/', '@' or spaces), e.g. '1.0.0'"
        )
    return version


def make_schema_ref(name: str, version: str) -> str:
    """``atdata://local/schema/{name}@{version}`` after validating both parts."""
    if not _is_type_name(name):
        raise InvalidNameError(
            f"invalid schema name {name!r}: use a Python identifier (optionally dotted), "
            "e.g. the sample class name"
        )
    _check_version(version, InvalidNameError, "version")
    return f"{SCHEMA_REF_PREFIX}{name}@{version}"


def parse_schema_ref(ref: str) -> tuple[str, str]:
    """``(name, version)`` of a schema ref; the legacy form drops its module part.

    Accepted: ``atdata://local/schema/{Name}@{version}`` and
    ``local://schemas/{module.Class}@{version}``. The version follows the last ``@``.
    """
    forms = f"use {SCHEMA_REF_PREFIX}{{Name}}@{{version}} or {LEGACY_SCHEMA_REF_PREFIX}{{module.Class}}@{{version}}"
    if not isinstance(ref, str):
        raise InvalidRefError(f"Invalid schema reference {ref!r}: expected a string; {forms}")
    if ref.startswith(SCHEMA_REF_PREFIX):
        rest, legacy = ref[len(SCHEMA_REF_PREFIX) :], False
    elif ref.startswith(LEGACY_SCHEMA_REF_PREFIX):
        rest, legacy = ref[len(LEGACY_SCHEMA_REF_PREFIX) :], True
    else:
        raise InvalidRefError(f"Invalid schema reference {ref!r}: unknown prefix; {forms}")
    name, sep, version = rest.rpartition("@")
    if not sep:
        raise InvalidRefError(f"Invalid schema reference {ref!r}: missing '@version'; {forms}")
    if not _is_type_name(name):
        raise InvalidRefError(
            f"Invalid schema reference {ref!r}: name {name!r} is not a (dotted) identifier; {forms}"
        )
    _check_version(version, InvalidRefError, f"version in reference {ref!r}:")
    if legacy:
        name = name.rpartition(".")[2]
    return name, version


def next_version(existing: list[str]) -> str:
    """Patch+1 of the highest ``X.Y.Z`` among ``existing`` (others ignored), else ``1.0.0``."""
    best: tuple[int, int, int] | None = None
    for v in existing:
        m = _SEMVER_RE.fullmatch(v) if isinstance(v, str) else None
        if m:
            t = (int(m[1]), int(m[2]), int(m[3]))
            if best is None or t > best:
                best = t
    if best is None:
        return "1.0.0"
    return f"{best[0]}.{best[1]}.{best[2] + 1}"


# --------------------------------------------------------------------------- reading records


class RecordShape(NamedTuple):
    """A validated record: safe type name, version, description and field specs."""

    name: str
    version: str
    description: str | None
    fields: tuple[FieldSpec, ...]


def _reserved_names() -> frozenset[str]:
    return frozenset(dir(PackableSample))


def _kind(field_type: dict[str, Any]) -> Any:
    t = field_type.get("$type")
    if isinstance(t, str) and "#" in t:
        return t.rpartition("#")[2]
    if "kind" in field_type:
        return field_type["kind"]
    return t


def _dtype_name(value: Any) -> str | None:
    """A record's dtype name if it is a plain, safe numpy dtype name, else None."""
    if not isinstance(value, str) or not _DTYPE_NAME_RE.fullmatch(value):
        return None
    try:
        dtype = np.dtype(value)
    except Exception:  # noqa: BLE001 - np.dtype of an arbitrary string raises many types: then it is not a dtype name
        return None
    if dtype.hasobject or dtype.fields is not None or dtype.name != value:
        return None
    return value


def _spec_from_field_type(ft: Any, name: str, where: str, depth: int) -> FieldSpec:
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{where}: field {name!r} nests lists more than {_MAX_DEPTH} deep")
    if not isinstance(ft, dict):
        raise SchemaError(f"{where}: field {name!r} has fieldType {ft!r:.80}, expected an object")
    kind = _kind(ft)
    if kind == "primitive":
        primitive = ft.get("primitive")
        if primitive not in PRIMITIVE_TYPES:
            raise SchemaError(
                f"{where}: field {name!r} has unknown primitive {primitive!r:.40}; "
                f"expected one of {sorted(PRIMITIVE_TYPES)}"
            )
        return FieldSpec(name, FieldKind.PRIMITIVE, primitive=primitive)
    if kind == "ndarray":
        return FieldSpec(name, FieldKind.NDARRAY, dtype=_dtype_name(ft.get("dtype")))
    if kind == "structured":
        return FieldSpec(name, FieldKind.NDARRAY)
    if kind in BINARY_KINDS:
        return FieldSpec(name, FieldKind.PRIMITIVE, primitive="bytes")
    if kind == "array":
        items = _spec_from_field_type(ft.get("items"), name, where, depth + 1)
        return FieldSpec(name, FieldKind.ARRAY, items=items)
    if kind == "ref":
        raise SchemaError(
            f"{where}: field {name!r} is a 'ref' field, which is not supported; "
            "publish the referenced type's fields inline"
        )
    raise SchemaError(
        f"{where}: field {name!r} has unknown kind {kind!r:.40}; expected primitive, ndarray, "
        f"structured, array or one of {sorted(BINARY_KINDS)}"
    )


_JSON_PRIMITIVES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def _spec_from_json_schema(prop: Any, name: str, where: str, depth: int) -> tuple[FieldSpec, bool]:
    """(spec, nullable) of a JSON-Schema property written by atdata's atmosphere publisher."""
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{where}: property {name!r} nests arrays more than {_MAX_DEPTH} deep")
    if not isinstance(prop, dict):
        raise SchemaError(f"{where}: property {name!r} is {prop!r:.80}, expected an object")
    ref = prop.get("$ref")
    if isinstance(ref, str):
        if ref.endswith("/ndarray") or "ndarray" in ref:
            return FieldSpec(name, FieldKind.NDARRAY), False
        raise SchemaError(f"{where}: property {name!r} has unsupported $ref {ref!r:.80}")
    jtype = prop.get("type")
    nullable = False
    if isinstance(jtype, list):
        nullable = "null" in jtype
        rest = [t for t in jtype if t != "null"]
        if len(rest) != 1:
            raise SchemaError(f"{where}: property {name!r} has a multi-type union {jtype!r:.80}")
        jtype = rest[0]
    if jtype == "string" and (prop.get("format") == "byte" or "contentEncoding" in prop):
        return FieldSpec(name, FieldKind.PRIMITIVE, primitive="bytes"), nullable
    if isinstance(jtype, str) and jtype in _JSON_PRIMITIVES:
        return FieldSpec(name, FieldKind.PRIMITIVE, primitive=_JSON_PRIMITIVES[jtype]), nullable
    if jtype == "array":
        items, item_null = _spec_from_json_schema(prop.get("items"), name, where, depth + 1)
        if item_null:
            raise SchemaError(f"{where}: property {name!r} has nullable array items")
        return FieldSpec(name, FieldKind.ARRAY, items=items), nullable
    raise SchemaError(f"{where}: property {name!r} has unsupported JSON-Schema type {jtype!r:.80}")


def _check_field_name(name: Any, where: str, reserved: frozenset[str]) -> str:
    if not is_safe_identifier(name):
        raise SchemaError(
            f"{where}: invalid field name {name!r:.80}: field names must be Python "
            "identifiers that are not keywords"
        )
    if name.startswith("__") and name.endswith("__"):
        raise SchemaError(f"{where}: invalid field name {name!r}: dunder names are reserved")
    if name in reserved:
        raise SchemaError(
            f"{where}: invalid field name {name!r}: it would shadow the PackableSample "
            "attribute of the same name; rename the field"
        )
    return name


def normalize_record(record: Any) -> RecordShape:
    """Validate a schema record from any source and reduce it to :class:`RecordShape`.

    Accepts local records (§4.1), 0.3.x records whose field ``$type`` is
    ``ac.foundation.dataset.schemaType#<kind>`` and atmosphere JSON-Schema records
    (§7.2). Raises :class:`SchemaError` naming the offending part.
    """
    if not isinstance(record, dict):
        raise SchemaError(f"a schema record must be a JSON object, got {type(record).__name__}")
    for key in ("atdataSchemaVersion", "$atdataSchemaVersion"):
        sv = record.get(key)
        if sv is not None and (not isinstance(sv, int) or isinstance(sv, bool) or sv > 1):
            raise SchemaError(
                f"schema record {record.get('name')!r:.80} has {key}={sv!r:.20}; this version "
                "of atdata_dagster reads schema format 1 only: upgrade atdata_dagster"
            )
    name = record.get("name")
    if not isinstance(name, str) or not _is_type_name(name) or any(
        p.startswith("__") and p.endswith("__") for p in name.split(".")
    ):
        raise SchemaError(
            f"schema record has invalid type name {name!r:.80}: it must be a Python identifier "
            "(optionally dotted), not a keyword or dunder name"
        )
    version = _check_version(record.get("version"), SchemaError, f"version of record {name!r}:")
    where = f"schema {name}@{version}"
    description = record.get("description")
    if description is not None and not isinstance(description, str):
        raise SchemaError(f"{where}: description must be a string or null")
    reserved = _reserved_names()

    raw: list[tuple[Any, FieldSpec, bool]] = []
    if "fields" in record:
        fields = record["fields"]
        if not isinstance(fields, list):
            raise SchemaError(f"{where}: 'fields' must be a list")
        if len(fields) > _MAX_FIELDS:
            raise SchemaError(f"{where}: more than {_MAX_FIELDS} fields")
        for f in fields:
            if not isinstance(f, dict):
                raise SchemaError(f"{where}: field entry {f!r:.80} is not an object")
            fname = _check_field_name(f.get("name"), where, reserved)
            optional = f.get("optional", False)
            if not isinstance(optional, bool):
                raise SchemaError(f"{where}: field {fname!r} has non-boolean 'optional'")
            raw.append((fname, _spec_from_field_type(f.get("fieldType"), fname, where, 0), optional))
    elif isinstance(record.get("schema"), dict):
        body = record["schema"]
        if isinstance(body.get("schemaBody"), dict):
            body = body["schemaBody"]
        props = body.get("properties")
        required = body.get("required", [])
        if not isinstance(props, dict) or not isinstance(required, list):
            raise SchemaError(f"{where}: JSON schema needs a 'properties' object and a 'required' list")
        if len(props) > _MAX_FIELDS:
            raise SchemaError(f"{where}: more than {_MAX_FIELDS} fields")
        for pname, prop in props.items():
            fname = _check_field_name(pname, where, reserved)
            spec, nullable = _spec_from_json_schema(prop, fname, where, 0)
            raw.append((fname, spec, nullable or fname not in required))
    else:
        raise SchemaError(f"{where}: record has no 'fields' list and no JSON 'schema' body")
    if not raw:
        raise SchemaError(f"{where}: record has no fields")
    seen: set[str] = set()
    specs = []
    for fname, spec, optional in raw:
        if fname in seen:
            raise SchemaError(f"{where}: duplicate field name {fname!r}")
        seen.add(fname)
        specs.append(dataclasses.replace(spec, optional=optional))
    return RecordShape(name, version, description, tuple(specs))


def annotation_for_spec(spec: FieldSpec, *, with_optional: bool = True) -> Any:
    """The Python annotation a :class:`FieldSpec` stands for."""
    if spec.kind == "primitive":
        tp: Any = PRIMITIVE_TYPES[spec.primitive or "bytes"]
    elif spec.kind == "ndarray":
        tp = NDArray[np.dtype(spec.dtype).type] if spec.dtype else NDArray  # type: ignore[misc]  # a runtime-built annotation
    else:
        assert spec.items is not None
        tp = list[annotation_for_spec(spec.items, with_optional=False)]  # type: ignore[misc]  # a runtime-built annotation
    return Optional[tp] if (spec.optional and with_optional) else tp


def dataclass_field_args(specs: tuple[FieldSpec, ...]) -> list[tuple[bool, bool]]:
    """Per field ``(has_default_none, kw_only)``.

    Optional fields default to None. atdata cannot rebuild a schema whose optional field
    precedes a required one (dataclass ordering); we make every field from the first such
    optional field on keyword-only, which keeps the declared (wire) order.
    """
    last_required = max((i for i, s in enumerate(specs) if not s.optional), default=-1)
    first_kw = next((i for i, s in enumerate(specs) if s.optional and i < last_required), None)
    return [(s.optional, first_kw is not None and i >= first_kw) for i, s in enumerate(specs)]


def _restore_sample(record: dict[str, Any], state: dict[str, Any]) -> Any:
    cls = type_from_record(record)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _reduce_record_sample(self: Any) -> tuple[Any, ...]:
    # Types rebuilt from records live in no module, so pickle them by record (Dagster
    # ships outputs to other processes).
    return (_restore_sample, (type(self).__schema_record__, dict(self.__dict__)))


_type_cache: OrderedDict[tuple[str, str, str], type] = OrderedDict()
_type_lock = threading.Lock()
_TYPE_CACHE_SIZE = 256


def type_from_record(record: dict[str, Any]) -> type[PackableSample]:
    """Build (or fetch from a bounded cache) the sample type a schema record describes.

    The result is a dataclass subclass of :class:`PackableSample` named after the record,
    with ``__schema_version__`` and ``__schema_ref__`` set; optional fields default to
    None. Every name is validated (:class:`SchemaError`); no record text is executed.
    """
    shape = normalize_record(record)
    key = (shape.name, shape.version, fields_signature(list(shape.fields)))
    with _type_lock:
        cached = _type_cache.get(key)
        if cached is not None:
            _type_cache.move_to_end(key)
            return cached

    fields = []
    for spec, (has_default, kw_only) in zip(shape.fields, dataclass_field_args(shape.fields)):
        kwargs: dict[str, Any] = {"kw_only": kw_only}
        if has_default:
            kwargs["default"] = None
        fields.append((spec.name, annotation_for_spec(spec), dataclasses.field(**kwargs)))
    minimal = {
        "name": shape.name,
        "version": shape.version,
        "fields": [
            {"name": s.name, "fieldType": _field_type(s), "optional": s.optional}
            for s in shape.fields
        ],
    }
    namespace = {
        "__module__": __name__,
        "__qualname__": shape.name,
        "__doc__": shape.description,
        "__schema_version__": shape.version,
        "__schema_ref__": make_schema_ref(shape.name, shape.version),
        "__schema_record__": minimal,
        "__reduce__": _reduce_record_sample,
    }
    cls = dataclasses.make_dataclass(shape.name, fields, bases=(PackableSample,), namespace=namespace)
    with _type_lock:
        existing = _type_cache.get(key)
        if existing is not None:
            return existing
        _type_cache[key] = cls
        while len(_type_cache) > _TYPE_CACHE_SIZE:
            _type_cache.popitem(last=False)
    return cls
