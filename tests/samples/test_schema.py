"""Schema records, refs, versions and types rebuilt from records (incl. hostile ones)."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import typing
from datetime import datetime, timezone
from typing import Any, Optional, Union

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster.errors import (
    InvalidNameError,
    InvalidRefError,
    NotPackableError,
    SampleError,
    SchemaError,
    UnsupportedTypeError,
)
from atdata_dagster.samples import (
    DictSample,
    FieldSpec,
    PackableSample,
    build_schema_record,
    field_specs,
    fields_signature,
    make_schema_ref,
    next_version,
    packable,
    parse_schema_ref,
    schema_json,
    type_from_record,
)

from .sample_types import Img, Lists

REFERENCE_RECORD = {
    "name": "Img",
    "version": "1.0.0",
    "fields": [
        {"name": "image", "fieldType": {"$type": "local#ndarray", "dtype": "uint8"}, "optional": False},
        {"name": "label", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        {
            "name": "xs",
            "fieldType": {"$type": "local#array", "items": {"$type": "local#primitive", "primitive": "float"}},
            "optional": False,
        },
        {"name": "score", "fieldType": {"$type": "local#primitive", "primitive": "float"}, "optional": True},
    ],
    "description": "Image sample.",
    "createdAt": "2026-11-25T20:48:19.891457+00:00",
}


# ----------------------------------------------------------------- field specs and records


def test_field_specs_of_reference_class():
    assert field_specs(Img) == [
        FieldSpec("image", "ndarray", dtype="uint8"),
        FieldSpec("label", "primitive", primitive="str"),
        FieldSpec("xs", "array", items=FieldSpec("xs", "primitive", primitive="float")),
        FieldSpec("score", "primitive", optional=True, primitive="float"),
    ]


def test_build_schema_record_matches_reference_example_field_by_field():
    before = datetime.now(timezone.utc)
    record = build_schema_record(Img, version="1.0.0")
    assert list(record) == ["name", "version", "fields", "description", "createdAt"]
    for key in ("name", "version", "description"):
        assert record[key] == REFERENCE_RECORD[key]
    assert len(record["fields"]) == len(REFERENCE_RECORD["fields"])
    for ours, ref in zip(record["fields"], REFERENCE_RECORD["fields"]):
        assert ours == ref
        assert list(ours) == ["name", "fieldType", "optional"]
        assert list(ours["fieldType"])[0] == "$type"
    created = datetime.fromisoformat(record["createdAt"])
    assert created.utcoffset() is not None and created >= before
    assert record["createdAt"].endswith("+00:00")


def test_schema_json_uses_json_dumps_defaults_without_ref():
    record = dict(REFERENCE_RECORD, **{"$ref": "atdata://local/schema/Img@1.0.0"})
    text = schema_json(record)
    assert text == json.dumps(REFERENCE_RECORD)
    assert '"$ref"' not in text and '", "' in text and '": ' in text


def test_explicit_description_wins_and_undocumented_uses_dataclass_signature():
    assert build_schema_record(Img, version="2.0.0", description="d")["description"] == "d"

    @packable
    class NoDoc:
        x: int

    assert build_schema_record(NoDoc, version="1.0.0")["description"].startswith("NoDoc(x:")


def test_list_of_ndarray_is_recorded_as_array_of_ndarray():
    field = next(f for f in build_schema_record(Lists, version="1.0.0")["fields"] if f["name"] == "arrays")
    assert field["fieldType"] == {
        "$type": "local#array",
        "items": {"$type": "local#ndarray", "dtype": "int16"},
    }


def test_bare_ndarray_dtype_defaults_to_float32():
    @packable
    class Bare:
        a: NDArray
        b: np.ndarray
        c: NDArray[Any]

    assert {s.dtype for s in field_specs(Bare)} == {"float32"}


@pytest.mark.parametrize(
    "annotation, match",
    [
        (dict, "Unsupported type"),
        (dict[str, int], "Unsupported type"),
        (Union[int, str], "Complex union"),
        (int | str | None, "Complex union"),
        (list, "item type"),
        (tuple[int, int], "Unsupported type"),
        (list[Optional[int]], "cannot be optional"),
        (Any, "Unsupported type"),
    ],
    ids=["dict", "dict-generic", "union", "union-none", "bare-list", "tuple", "list-optional", "any"],
)
def test_unsupported_field_types_raise_unsupported_type_error(annotation, match):
    cls = dataclasses.make_dataclass("Bad", [("field_x", annotation)], bases=(PackableSample,))
    with pytest.raises(UnsupportedTypeError, match=match) as info:
        field_specs(cls)
    assert "Bad.field_x" in str(info.value) and "supported field types are" in str(info.value)
    with pytest.raises(TypeError):  # compatible with atdata's TypeError
        build_schema_record(cls, version="1.0.0")


def test_nested_dataclass_field_is_unsupported():
    @dataclasses.dataclass
    class Inner:
        x: int

    cls = dataclasses.make_dataclass("Outer", [("inner", Inner)], bases=(PackableSample,))
    with pytest.raises(UnsupportedTypeError, match="Nested dataclass"):
        field_specs(cls)


def test_non_packable_class_raises_not_packable_and_dict_sample_sample_error():
    class Plain:
        x: int

    with pytest.raises(NotPackableError):
        build_schema_record(Plain, version="1.0.0")
    with pytest.raises(SampleError, match="must be a dataclass"):
        build_schema_record(DictSample, version="1.0.0")


def test_build_schema_record_rejects_bad_version():
    with pytest.raises(InvalidNameError, match="version"):
        build_schema_record(Img, version="1.0/evil")


def test_fields_signature_ignores_metadata_and_tracks_fields():
    a = build_schema_record(Img, version="1.0.0")
    b = dict(copy.deepcopy(a), version="9.9.9", description="other", createdAt="x")
    assert fields_signature(a) == fields_signature(b) == fields_signature(a["fields"])
    assert fields_signature(a) == fields_signature(field_specs(Img))
    b["fields"][3]["optional"] = False
    assert fields_signature(a) != fields_signature(b)
    assert len(fields_signature(a)) == 64


# ----------------------------------------------------------------- refs and versions


def test_make_and_parse_schema_ref_round_trip():
    ref = make_schema_ref("Img", "1.2.3")
    assert ref == "atdata://local/schema/Img@1.2.3"
    assert parse_schema_ref(ref) == ("Img", "1.2.3")


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("local://schemas/my.module.Img@1.0.0", ("Img", "1.0.0")),
        ("local://schemas/Img@2.0.1", ("Img", "2.0.1")),
        ("atdata://local/schema/pkg.Img@1.0.0", ("pkg.Img", "1.0.0")),
        ("atdata://local/schema/Img@v1", ("Img", "v1")),
        ("atdata://local/schema/Img@1.0.0-rc.1+build", ("Img", "1.0.0-rc.1+build")),
    ],
)
def test_parse_schema_ref_accepts_current_and_legacy_forms(ref, expected):
    assert parse_schema_ref(ref) == expected


@pytest.mark.parametrize(
    "ref, match",
    [
        ("atdata://local/schema/Img", "missing '@version'"),
        ("http://x/schema/Img@1.0.0", "unknown prefix"),
        ("atdata://local/lens/Img@1.0.0", "unknown prefix"),
        ("atdata://local/schema/@1.0.0", "not a \\(dotted\\) identifier"),
        ("atdata://local/schema/../../etc@1.0.0", "not a \\(dotted\\) identifier"),
        ("atdata://local/schema/Img@", "version"),
        ("atdata://local/schema/Img@1/2", "version"),
        ("atdata://local/schema/a@b@1.0.0", "identifier"),
        (None, "expected a string"),
    ],
)
def test_parse_schema_ref_rejects_malformed_refs_naming_them(ref, match):
    with pytest.raises(InvalidRefError, match=match) as info:
        parse_schema_ref(ref)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    if isinstance(ref, str):
        assert repr(ref) in str(info.value)
        assert "atdata://local/schema/{Name}@{version}" in str(info.value) or "version" in str(info.value)


def test_make_schema_ref_validates_name_and_version():
    with pytest.raises(InvalidNameError):
        make_schema_ref("bad name", "1.0.0")
    with pytest.raises(InvalidNameError):
        make_schema_ref("Img", "")


@pytest.mark.parametrize(
    "existing, expected",
    [
        ([], "1.0.0"),
        (["1.0.0"], "1.0.1"),
        (["1.0.9", "1.0.10", "0.9.99"], "1.0.11"),
        (["2.0.0", "10.0.0", "v11", "11.0", "latest"], "10.0.1"),
        (["v1", "abc"], "1.0.0"),
    ],
)
def test_next_version_bumps_highest_semver_patch(existing, expected):
    assert next_version(existing) == expected


# ----------------------------------------------------------------- type_from_record


def test_type_from_local_record_round_trips_data_and_record():
    T = type_from_record(REFERENCE_RECORD)
    assert T.__name__ == "Img" and issubclass(T, PackableSample)
    assert T.__schema_version__ == "1.0.0"
    assert T.__schema_ref__ == "atdata://local/schema/Img@1.0.0"
    assert T.__doc__ == "Image sample."
    # the rebuilt type describes the same record
    again = build_schema_record(T, version="1.0.0")
    assert again["fields"] == REFERENCE_RECORD["fields"]
    # and reads data written by the original class, arrays decoded
    payload = Img(np.arange(4, dtype=np.uint8), "x", [0.5], 1.5).packed
    s = T.from_bytes(payload)
    assert isinstance(s.image, np.ndarray) and s.image.dtype == np.uint8
    assert (s.label, s.xs, s.score) == ("x", [0.5], 1.5)
    assert s.packed == payload


def test_type_from_record_is_cached_and_instances_pickle():
    T1 = type_from_record(REFERENCE_RECORD)
    T2 = type_from_record(dict(REFERENCE_RECORD, description="changed text"))
    assert T1 is T2
    s = T1(np.zeros(2, np.uint8), "p", [])
    back = pickle.loads(pickle.dumps(s))
    assert type(back) is T1 and back.label == "p" and back.score is None


def test_type_from_record_with_changed_fields_is_a_new_type():
    changed = copy.deepcopy(REFERENCE_RECORD)
    changed["fields"][1]["fieldType"]["primitive"] = "bytes"
    assert type_from_record(changed) is not type_from_record(REFERENCE_RECORD)


def test_optional_before_required_still_decodes():
    record = {
        "name": "Mixed",
        "version": "1.0.0",
        "fields": [
            {"name": "note", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": True},
            {"name": "value", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": False},
            {"name": "arr", "fieldType": {"$type": "local#ndarray", "dtype": "int8"}, "optional": True},
        ],
    }
    T = type_from_record(record)
    s = T.from_data({"note": None, "value": 3, "arr": None})
    assert (s.note, s.value, s.arr) == (None, 3, None)
    s2 = T(value=4)
    assert s2.note is None
    assert list(T.from_bytes(s2.packed).__dict__) == ["note", "value", "arr"]
    with pytest.raises(TypeError):
        T()  # value is still required


def test_legacy_record_with_foundation_type_names():
    record = {
        "name": "Legacy",
        "version": "0.1.0",
        "fields": [
            {"name": "img", "fieldType": {"$type": "ac.foundation.dataset.schemaType#ndarray", "dtype": "uint8"}, "optional": False},
            {"name": "tags", "fieldType": {"$type": "ac.foundation.dataset.schemaType#array",
                                           "items": {"$type": "ac.foundation.dataset.schemaType#primitive", "primitive": "str"}},
             "optional": False},
            {"name": "plain", "fieldType": {"kind": "primitive", "primitive": "int"}, "optional": True},
        ],
    }
    T = type_from_record(record)
    hints = typing.get_type_hints(T)
    assert hints["tags"] == list[str] and hints["plain"] == Optional[int]
    assert [s.dtype for s in field_specs(T) if s.kind == "ndarray"] == ["uint8"]


def test_07_binary_and_structured_kinds():
    record = {
        "name": "Formats",
        "version": "1.0.0",
        "fields": [
            {"name": kind, "fieldType": {"$type": f"local#{kind}"}, "optional": False}
            for kind in ("sparse", "arrow_tensor", "safetensors", "dataframe")
        ]
        + [{"name": "st", "fieldType": {"$type": "local#structured", "dtype": [["a", "<i4"]]}, "optional": False}],
    }
    specs = field_specs(type_from_record(record))
    assert [s.primitive for s in specs[:4]] == ["bytes"] * 4
    assert specs[4].kind == "ndarray"


def test_json_schema_record_from_atmosphere():
    record = {
        "$type": "science.alt.dataset.schema",
        "name": "Img",
        "version": "1.0.0",
        "schemaType": "jsonSchema",
        "schema": {
            "$type": "science.alt.dataset.schema#jsonSchemaFormat",
            "type": "object",
            "properties": {
                "image": {"$ref": "https://alt.science/schemas/atdata-ndarray-bytes/1.0.0#/$defs/ndarray"},
                "label": {"type": "string"},
                "raw": {"type": "string", "format": "byte", "contentEncoding": "base64"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "count": {"type": "integer"},
                "ok": {"type": "boolean"},
                "score": {"type": "number"},
            },
            "required": ["image", "label", "raw", "tags", "count", "ok"],
        },
        "createdAt": "2026-01-01T00:00:00+00:00",
        "atdataSchemaVersion": 1,
    }
    T = type_from_record(record)
    specs = {s.name: s for s in field_specs(T)}
    assert specs["image"].kind == "ndarray"
    assert specs["raw"].primitive == "bytes" and specs["count"].primitive == "int"
    assert specs["ok"].primitive == "bool" and specs["tags"].items.primitive == "str"
    assert specs["score"].optional and not specs["label"].optional
    s = T(np.ones(2, np.float32), "l", b"r", ["t"], 1, True)
    assert isinstance(T.from_bytes(s.packed).image, np.ndarray)
    nested = dict(record, schema={"schemaBody": record["schema"]}, name="Img2")
    assert [f.name for f in dataclasses.fields(type_from_record(nested))] == list(
        record["schema"]["properties"]
    )


@pytest.mark.parametrize("key", ["atdataSchemaVersion", "$atdataSchemaVersion"])
def test_future_schema_version_is_refused(key):
    with pytest.raises(SchemaError, match="upgrade"):
        type_from_record(dict(REFERENCE_RECORD, **{key: 2}))


def _one_field(field: Any = "x", ft: Any = None, name: Any = "T", version: Any = "1.0.0") -> dict[str, Any]:
    ft = ft if ft is not None else {"$type": "local#primitive", "primitive": "int"}
    return {"name": name, "version": version, "fields": [{"name": field, "fieldType": ft, "optional": False}]}


@pytest.mark.parametrize(
    "record, match",
    [
        (_one_field(field="x; import os"), "invalid field name"),
        (_one_field(field="__class__"), "invalid field name"),
        (_one_field(field="__init__"), "invalid field name"),
        (_one_field(field="def"), "invalid field name"),
        (_one_field(field="packed"), "shadow"),
        (_one_field(field="as_wds"), "shadow"),
        (_one_field(field="from_data"), "shadow"),
        (_one_field(field="ﬁeld"), "invalid field name"),  # NFKC-changed identifier
        (_one_field(field=3), "invalid field name"),
        (_one_field(field="a" * 500), "invalid field name"),
        (_one_field(version="../../x"), "version"),
        (_one_field(name="os.system('x')"), "invalid type name"),
        (_one_field(name="class"), "invalid type name"),
        (_one_field(name="__builtins__"), "invalid type name"),
        (_one_field(ft={"$type": "local#ref", "ref": "at://x"}), "'ref' field"),
        (_one_field(ft={"$type": "local#evil"}), "unknown kind"),
        (_one_field(ft={"$type": "local#primitive", "primitive": "object"}), "unknown primitive"),
        (_one_field(ft="int"), "expected an object"),
        ({"name": "T", "version": "1.0.0", "fields": []}, "no fields"),
        ({"name": "T", "version": "1.0.0"}, "no 'fields'"),
        ({"name": "T", "version": "1.0.0", "fields": [{"name": "a", "fieldType": {"$type": "local#primitive", "primitive": "int"}}] * 2}, "duplicate"),
        ([1, 2], "JSON object"),
    ],
)
def test_hostile_or_malformed_records_raise_schema_error(record, match):
    with pytest.raises(SchemaError, match=match):
        type_from_record(record)


def test_deeply_nested_record_is_refused_not_recursed_forever():
    ft: dict[str, Any] = {"$type": "local#primitive", "primitive": "int"}
    for _ in range(5000):
        ft = {"$type": "local#array", "items": ft}
    with pytest.raises(SchemaError, match="deep"):
        type_from_record(_one_field(ft=ft))


def test_hostile_dtype_name_falls_back_to_plain_ndarray():
    T = type_from_record(_one_field(field="a", ft={"$type": "local#ndarray", "dtype": "object"}, name="Odd"))
    assert field_specs(T)[0].dtype == "float32"
    assert typing.get_type_hints(T)["a"] == NDArray
