"""Our sample layer against artefacts written by real atdata 0.7.0b1 (tests/compat/golden).

Skipped when the golden files are absent. Values are read with a tiny local decoder
for the ``$b64``/``$nd`` JSON wrappers so this file depends on nothing but the data.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster.samples import (
    DictSample,
    StubManager,
    build_schema_record,
    field_specs,
    packable,
    schema_json,
    type_from_record,
)

GOLDEN = Path(__file__).resolve().parents[1] / "compat" / "golden"
pytestmark = pytest.mark.skipif(
    not (GOLDEN / "golden.json").is_file(), reason="atdata golden artefacts not present"
)


@packable
class AllTypes:
    """Every field type a schema can carry."""

    s: str
    i: int
    f: float
    flag: bool
    raw: bytes
    arr: NDArray
    img: NDArray[np.uint8]
    li: list[int]
    ls: list[str]
    nested: list[list[int]]
    opt_s: Optional[str] = None
    opt_i: int | None = None
    opt_arr: NDArray | None = None
    opt_arr2: Optional[NDArray] = None


def _value(v: Any) -> Any:
    if isinstance(v, dict) and "$b64" in v:
        return base64.b64decode(v["$b64"])
    if isinstance(v, dict) and "$nd" in v:
        nd = v["$nd"]
        return np.frombuffer(base64.b64decode(nd["b64"]), dtype=nd["dtype"]).reshape(nd["shape"]).copy()
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads((GOLDEN / "golden.json").read_text())


def _payload_cases(golden: dict[str, Any]) -> list[tuple[dict[str, Any], bytes]]:
    cases = [
        ({k: _value(v) for k, v in case["values"].items()}, bytes.fromhex(case["packed_hex"]))
        for case in golden["payloads"]
    ]
    assert cases, "golden.json has no payloads"
    return cases


def test_packed_bytes_equal_atdata_bytes(golden):
    matched = 0
    for values, atdata_bytes in _payload_cases(golden):
        if set(values) != set(AllTypes.__dataclass_fields__):
            continue
        assert AllTypes(**values).packed == atdata_bytes
        matched += 1
    assert matched >= 1


def test_atdata_payloads_decode_with_every_ndarray_field_as_array(golden):
    for values, atdata_bytes in _payload_cases(golden):
        if set(values) != set(AllTypes.__dataclass_fields__):
            continue
        s = AllTypes.from_bytes(atdata_bytes)
        for name, want in values.items():
            got = getattr(s, name)
            if isinstance(want, np.ndarray):
                assert isinstance(got, np.ndarray), name
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
            else:
                assert got == want, name
        assert DictSample.from_bytes(atdata_bytes).packed == atdata_bytes


def test_schema_record_equals_atdata_record(golden):
    theirs = golden["schema_record"]
    ours = build_schema_record(AllTypes, version=theirs["version"])
    assert ours["fields"] == theirs["fields"]
    assert (ours["name"], ours["description"]) == (theirs["name"], theirs["description"])
    assert schema_json(dict(theirs)) == golden["stored_schema_json"]


def test_atmosphere_json_schema_record_decodes(golden):
    record = json.loads((GOLDEN / "atmosphere" / "schema.json").read_text())
    T = type_from_record(record)
    specs = {s.name: s for s in field_specs(T)}
    assert list(specs) == list(AllTypes.__dataclass_fields__)
    assert specs["arr"].kind == "ndarray" and specs["opt_arr2"].optional
    assert specs["nested"].items.items.primitive == "int"
    for values, atdata_bytes in _payload_cases(golden):
        if set(values) == set(specs):
            assert isinstance(T.from_bytes(atdata_bytes).arr, np.ndarray)


def test_our_stub_has_atdata_stub_fields_and_annotations(golden, tmp_path):
    theirs = (GOLDEN / "stubs" / "AllTypes_1_0_0.py").read_text()
    stubs = StubManager(tmp_path)
    path = stubs.ensure_stub(golden["schema_record"])
    assert stubs.import_path("AllTypes", "1.0.0") == golden["stub"]["import_path"]
    field_lines = lambda text: [  # noqa: E731
        line.strip() for line in text.splitlines() if line.startswith("    ") and ": " in line and "__" not in line
    ]
    assert field_lines(path.read_text()) == field_lines(theirs)
    T = stubs.load_type(golden["schema_record"])
    for values, atdata_bytes in _payload_cases(golden):
        if set(values) == set(T.__dataclass_fields__):
            assert isinstance(T.from_bytes(atdata_bytes).img, np.ndarray)
