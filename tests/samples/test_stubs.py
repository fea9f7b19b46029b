"""Generated stub modules: layout, import paths, decoding, staleness and hostile records."""

from __future__ import annotations

import ast
import builtins
import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atdata_dagster.errors import InvalidNameError, SchemaError
from atdata_dagster.samples import PackableSample, StubManager, field_specs

from .sample_types import Img

RECORD: dict[str, Any] = {
    "name": "MySample",
    "version": "1.0.0",
    "fields": [
        {"name": "image", "fieldType": {"$type": "local#ndarray", "dtype": "uint8"}, "optional": False},
        {"name": "label", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        {"name": "frames", "fieldType": {"$type": "local#array", "items": {"$type": "local#ndarray"}}, "optional": False},
        {"name": "mask", "fieldType": {"$type": "local#ndarray", "dtype": "bool"}, "optional": True},
        {"name": "score", "fieldType": {"$type": "local#primitive", "primitive": "float"}, "optional": True},
    ],
    "description": "My sample.",
}


@pytest.fixture
def stubs(tmp_path: Path) -> StubManager:
    return StubManager(tmp_path / "stubs")


def test_layout_and_import_path(stubs: StubManager):
    path = stubs.ensure_stub(RECORD)
    root = stubs.stub_dir
    assert path == root / "local" / "MySample_1_0_0.py"
    assert (root / "__init__.py").is_file() and (root / "local" / "__init__.py").is_file()
    assert stubs.import_path("MySample", "1.0.0") == "local.MySample_1_0_0"
    assert stubs.import_path("MySample", "1.0.0", authority="did:plc:abc") == "did_plc_abc.MySample_1_0_0"
    text = path.read_text()
    assert "Schema: MySample@1.0.0" in text.splitlines()
    ast.parse(text)  # real, importable Python


def test_default_stub_dir_is_home_atdata_stubs(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert StubManager().stub_dir == tmp_path / ".atdata" / "stubs"


def test_generated_module_annotations_follow_atdata(stubs: StubManager):
    text = stubs.ensure_stub(RECORD).read_text()
    assert "class MySample(PackableSample):" in text
    assert "    image: NDArray[Any]" in text
    assert "    frames: list[NDArray[Any]]" in text
    assert "    mask: NDArray[Any] | None = None" in text
    assert "    score: float | None = None" in text


def test_load_type_decodes_arrays_despite_ndarray_any(stubs: StubManager):
    T = stubs.load_type(RECORD)
    assert T.__name__ == "MySample" and issubclass(T, PackableSample)
    assert T.__schema_ref__ == "atdata://local/schema/MySample@1.0.0"
    assert T.__module__ == "_atdata_generated_MySample_1_0_0"
    assert sys.modules["_atdata_generated_MySample_1_0_0"].MySample is T
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    s = T(img, "x", [np.ones(2, np.float32)], mask=np.array([True]))
    back = T.from_bytes(s.packed)
    assert isinstance(back.image, np.ndarray) and back.image.dtype == np.uint8
    np.testing.assert_array_equal(back.image, img)
    assert isinstance(back.frames[0], np.ndarray) and back.mask.tolist() == [True]
    assert back.score is None
    # data written by a hand-written class with the same fields reads with the stub type
    other = Img(img, "y", [1.0])
    assert isinstance(stubs.load_type(_img_record()).from_bytes(other.packed).image, np.ndarray)


def _img_record() -> dict[str, Any]:
    from atdata_dagster.samples import build_schema_record

    return build_schema_record(Img, version="2.0.0")


def test_stub_is_importable_from_stub_dir_on_sys_path(stubs: StubManager):
    stubs.ensure_stub(RECORD)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from local.MySample_1_0_0 import MySample;"
        "print(MySample.__schema_ref__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(stubs.stub_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "atdata://local/schema/MySample@1.0.0"


def test_fresh_stub_is_not_rewritten_and_changed_fields_regenerate(stubs: StubManager):
    path = stubs.ensure_stub(RECORD)
    os.utime(path, ns=(1, 1))
    stubs.ensure_stub(RECORD)
    assert path.stat().st_mtime_ns == 1  # untouched
    changed = copy.deepcopy(RECORD)
    changed["fields"][1]["fieldType"]["primitive"] = "bytes"
    stubs.ensure_stub(changed)
    assert path.stat().st_mtime_ns != 1
    assert "    label: bytes" in path.read_text()
    assert field_specs(stubs.load_type(changed))[1].primitive == "bytes"


def test_stale_stub_without_schema_line_is_regenerated(stubs: StubManager):
    path = stubs.ensure_stub(RECORD)
    path.write_text("raise RuntimeError('stale')\n")
    assert stubs.load_type(RECORD).__name__ == "MySample"
    assert "Schema: MySample@1.0.0" in path.read_text()


def test_optional_before_required_stub_imports_and_decodes(stubs: StubManager):
    record = {
        "name": "Mixed",
        "version": "1.0.0",
        "fields": [
            {"name": "note", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": True},
            {"name": "value", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": False},
        ],
    }
    T = stubs.load_type(record)
    s = T.from_data({"note": None, "value": 2})
    assert (s.note, s.value) == (None, 2)


def test_clear_removes_generated_modules_and_counts_them(stubs: StubManager):
    stubs.ensure_stub(RECORD)
    stubs.ensure_stub(dict(RECORD, version="1.0.1"))
    stubs.ensure_stub(RECORD, authority="example.com")
    assert stubs.clear() == 3
    assert not list(stubs.stub_dir.rglob("MySample_*.py"))
    assert stubs.clear() == 0
    assert StubManager(stubs.stub_dir / "missing").clear() == 0


def test_authorities_do_not_collide(stubs: StubManager):
    a = stubs.load_type(RECORD)
    b = stubs.load_type(RECORD, authority="did:plc:xyz")
    assert a is not b
    # "at_<authority>__<stem>": "__" never occurs in an authority directory, so no two collide
    assert b.__module__ == "_atdata_generated_at_did_plc_xyz__MySample_1_0_0"


# ----------------------------------------------------------------- hostile input

HOSTILE_DESCRIPTION = '"""; import os; os.system("touch PWNED") #\n\'\'\'\\ \x00 é \r\nSchema: Other@9.9.9'


def test_hostile_description_is_inert_text(stubs: StubManager, tmp_path: Path, monkeypatch):
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    real_import = builtins.__import__
    record = dict(RECORD, description=HOSTILE_DESCRIPTION, name="Hostile")
    path = stubs.ensure_stub(record)
    text = path.read_text()
    tree = ast.parse(text)
    # the only statements are the docstring, imports, __all__ and the class
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds == ["Expr", "ImportFrom", "ImportFrom", "ImportFrom", "ImportFrom", "Assign", "ClassDef"]
    assert "Schema: Other@9.9.9" not in text.splitlines()
    monkeypatch.chdir(tmp_path)
    T = stubs.load_type(record)
    assert builtins.__import__ is real_import
    assert calls == [] and not (tmp_path / "PWNED").exists()
    module_doc = sys.modules[T.__module__].__doc__
    assert HOSTILE_DESCRIPTION in module_doc  # escaped in source, original text at runtime
    assert T.__doc__ == HOSTILE_DESCRIPTION


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r["fields"][0].update(name="x; import os"), "invalid field name"),
        (lambda r: r["fields"][0].update(name="__class__"), "invalid field name"),
        (lambda r: r["fields"][0].update(name="def"), "invalid field name"),
        (lambda r: r["fields"][0].update(name="packed"), "shadow"),
        (lambda r: r.update(name="X(PackableSample):\n    pass\nimport os\nclass Y"), "invalid type name"),
        (lambda r: r.update(name="__import__"), "invalid type name"),
        (lambda r: r.update(version="1.0.0\nimport os"), "version"),
        (lambda r: r.update(version="../../../etc/passwd"), "version"),
        (lambda r: r["fields"][0].update(fieldType={"$type": "local#primitive", "primitive": "__import__('os')"}), "unknown primitive"),
    ],
    ids=["semicolon", "dunder", "keyword", "shadow", "class-injection", "dunder-type", "version-newline", "version-path", "primitive-code"],
)
def test_hostile_names_raise_schema_error_and_write_nothing(stubs: StubManager, mutate, match):
    record = copy.deepcopy(RECORD)
    mutate(record)
    with pytest.raises(SchemaError, match=match):
        stubs.ensure_stub(record)
    with pytest.raises(SchemaError, match=match):
        stubs.load_type(record)
    assert not stubs.stub_dir.exists() or not list(stubs.stub_dir.rglob("*.py"))


@pytest.mark.parametrize("authority", ["../evil", "a/b", "__pycache__", "", "x y"])
def test_hostile_authority_is_refused(stubs: StubManager, authority):
    with pytest.raises(SchemaError, match="authority"):
        stubs.ensure_stub(RECORD, authority=authority)


def test_import_path_validates_names(stubs: StubManager):
    with pytest.raises(InvalidNameError):
        stubs.import_path("a; b", "1.0.0")
    with pytest.raises(InvalidNameError):
        stubs.import_path("A", "1/0")
