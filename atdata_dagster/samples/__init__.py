"""Typed samples and their bytes: ``@packable`` classes, the msgpack/ndarray codec,
schema records built from and turned back into sample types, and generated stubs."""

from .codec import decode_ndarray, encode_ndarray, pack_payload, unpack_payload
from .packable import (
    DictSample,
    PackableSample,
    ensure_packable_type,
    is_packable_type,
    new_key,
    packable,
)
from .schema import (
    FieldSpec,
    build_schema_record,
    field_specs,
    fields_signature,
    make_schema_ref,
    next_version,
    normalize_record,
    parse_schema_ref,
    schema_json,
    type_from_record,
)
from .stubs import StubManager

__all__ = [
    "DictSample",
    "FieldSpec",
    "PackableSample",
    "StubManager",
    "build_schema_record",
    "decode_ndarray",
    "encode_ndarray",
    "ensure_packable_type",
    "field_specs",
    "fields_signature",
    "is_packable_type",
    "make_schema_ref",
    "new_key",
    "next_version",
    "normalize_record",
    "pack_payload",
    "packable",
    "parse_schema_ref",
    "schema_json",
    "type_from_record",
    "unpack_payload",
]
