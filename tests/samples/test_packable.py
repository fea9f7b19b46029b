"""PackableSample, @packable and DictSample: round trips, validation and decoding."""

from __future__ import annotations

import dataclasses
import datetime  # noqa: F401 - named by annotations built in the unsupported-type tests
import decimal  # noqa: F401
import pickle
import re
import uuid
from typing import Any, Optional  # noqa: F401 - Optional: as above

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster.errors import (
    DecodeError,
    FieldMismatchError,
    NotPackableError,
    SampleError,
)
from atdata_dagster.samples import (
    DictSample,
    PackableSample,
    ensure_packable_type,
    is_packable_type,
    packable,
)
from atdata_dagster.samples.packable import new_key

from .future_types import FutureSample
from .sample_types import (
    AllPrimitives,
    Annotated,
    Emb,
    Img,
    Lists,
    Subclassed,
    Tiny,
)

TINY_HEX = "82a56c6162656ca161a176c415033c66340102000000000000000000803f00000040"


def assert_arrays_equal(a: Any, b: Any) -> None:
    assert isinstance(a, np.ndarray), f"expected ndarray, got {type(a).__name__}"
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- bytes


def test_packed_tiny_sample_matches_reference_bytes():
    assert Tiny("a", np.array([1, 2], np.float32)).packed.hex() == TINY_HEX


def test_reference_payload_reads_back_as_tiny():
    s = Tiny.from_bytes(bytes.fromhex(TINY_HEX))
    assert s.label == "a"
    assert_arrays_equal(s.v, np.array([1, 2], np.float32))


def test_fields_are_packed_in_declaration_order_with_none_as_nil():
    img = Img(np.zeros(1, np.uint8), "x", [1.0])
    raw = msgpack.unpackb(img.packed)
    assert list(raw) == ["image", "label", "xs", "score"]
    assert raw["score"] is None


def test_as_wds_has_uuid1_key_and_payload():
    t = Tiny("a", np.array([1.0], np.float32))
    wds = t.as_wds
    assert set(wds) == {"__key__", "msgpack"}
    assert wds["msgpack"] == t.packed
    key = uuid.UUID(wds["__key__"])
    assert key.version == 1 and key.node == 0 and key.clock_seq == 0
    assert wds["__key__"].endswith("-8000-000000000000") and "." not in wds["__key__"]


def test_new_key_matches_uuid1_and_never_repeats():
    keys = [new_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    ref = uuid.uuid1(node=0, clock_seq=0)
    mine = uuid.UUID(new_key())
    assert abs(mine.time - ref.time) < 10**8  # within 10 s of the stdlib's clock


# ----------------------------------------------------------------- round trips


def test_primitive_fields_round_trip():
    s = AllPrimitives("héllo", -(2**40), 2.5, True, b"\x00\xff")
    back = AllPrimitives.from_bytes(s.packed)
    assert back == s
    assert type(back.b) is bool and type(back.i) is int


def test_int_for_float_field_reads_back_as_float():
    s = AllPrimitives("s", 1, 3, False, b"")
    back = AllPrimitives.from_bytes(s.packed)
    assert back.f == 3.0 and type(back.f) is float


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(6, dtype=np.uint8).reshape(2, 3),
        np.array(4.25, dtype=np.float64),
        np.array([1, 2], dtype=">i4"),
        np.array([True, False]),
        np.array(["ab", "c"], dtype="<U2"),
    ],
    ids=["uint8-2d", "0d", "big-endian", "bool", "unicode"],
)
def test_ndarray_field_round_trips_every_dtype(arr):
    back = Tiny.from_bytes(Tiny("x", arr).packed)
    assert_arrays_equal(back.v, arr)
    assert back.v.flags.writeable


def test_every_ndarray_annotation_form_decodes_to_arrays():
    a = np.arange(3, dtype=np.float32)
    s = Annotated(a, a * 2, a * 3, a * 4, a * 5, [a, a[:1]])
    back = Annotated.from_bytes(s.packed)
    for name in ("bare", "typed", "plain", "opt_typing", "opt_pep604"):
        assert_arrays_equal(getattr(back, name), getattr(s, name))
    assert len(back.many) == 2
    assert_arrays_equal(back.many[1], a[:1])


def test_optional_ndarray_fields_round_trip_none():
    a = np.ones(2, np.float32)
    back = Annotated.from_bytes(Annotated(a, a, a).packed)
    assert back.opt_typing is None and back.opt_pep604 is None and back.many == []


def test_string_annotations_from_future_import_decode_arrays():
    img = np.arange(4, dtype=np.uint8)
    s = FutureSample(img, maybe=img.astype(np.float64), union=img[:2], many=[img], label="l")
    back = FutureSample.from_bytes(s.packed)
    assert_arrays_equal(back.image, img)
    assert_arrays_equal(back.maybe, img.astype(np.float64))
    assert_arrays_equal(back.union, img[:2])
    assert_arrays_equal(back.many[0], img)
    assert back.label == "l" and back.count == 0


def test_list_fields_round_trip():
    arrs = [np.array([1, 2], np.int16), np.array([[3]], np.int16)]
    s = Lists([1, 2], [[1], [], [2, 3]], ["a", "b"], arrs, maybe=["m"])
    back = Lists.from_bytes(s.packed)
    assert back.ints == [1, 2] and back.nested == [[1], [], [2, 3]] and back.strs == ["a", "b"]
    assert back.maybe == ["m"]
    for got, want in zip(back.arrays, arrs):
        assert_arrays_equal(got, want)
    assert Lists.from_bytes(Lists([], [], [], []).packed).maybe is None


def test_optional_primitive_set_and_none():
    img = np.zeros(1, np.uint8)
    assert Img.from_bytes(Img(img, "a", [], 0.5).packed).score == 0.5
    assert Img.from_bytes(Img(img, "a", []).packed).score is None


def test_numpy_scalar_field_values_are_packed_as_python_scalars():
    s = AllPrimitives("s", np.int32(7), np.float32(0.5), np.bool_(True), b"")
    back = AllPrimitives.from_bytes(s.packed)
    assert (back.i, back.f, back.b) == (7, 0.5, True)
    assert type(back.i) is int and type(back.b) is bool


def test_direct_dataclass_subclass_works():
    s = Subclassed("n", 3)
    assert Subclassed.from_bytes(s.packed) == s


# ----------------------------------------------------------------- from_data policy


def test_missing_field_uses_default():
    back = Subclassed.from_data({"name": "n"})
    assert back.value == 0


def test_missing_required_field_raises_naming_it():
    with pytest.raises(FieldMismatchError, match="requires field 'name'"):
        Subclassed.from_data({"value": 1})


def test_extra_key_raises_sample_error_that_is_also_type_error():
    with pytest.raises(FieldMismatchError, match=r"no field\(s\) \['extra'\]") as info:
        Subclassed.from_data({"name": "n", "value": 1, "extra": 2})
    assert isinstance(info.value, SampleError) and isinstance(info.value, TypeError)


def test_ndarray_field_with_garbage_raises_decode_error_naming_field():
    with pytest.raises(DecodeError, match=r"Tiny\.v"):
        Tiny.from_data({"label": "a", "v": b"\x03<f8\x01" + (5).to_bytes(8, "little")})
    with pytest.raises(DecodeError, match=r"Tiny\.v: expected ndarray bytes"):
        Tiny.from_data({"label": "a", "v": 5})


def test_from_bytes_with_bad_payload_raises_decode_error():
    with pytest.raises(DecodeError):
        Tiny.from_bytes(b"\x93garbage")


# ----------------------------------------------------------------- pack-time validation


@pytest.mark.parametrize(
    "kwargs, field, hint",
    [
        ({"s": 1}, "s", "str"),
        ({"i": "1"}, "i", "int"),
        ({"i": True}, "i", "bool values are not accepted"),
        ({"i": 1.5}, "i", "int"),
        ({"f": "x"}, "f", "float"),
        ({"f": True}, "f", "float"),
        ({"b": 1}, "b", "bool"),
        ({"raw": "text"}, "raw", "bytes"),
        ({"s": None}, "s", "Optional"),
    ],
)
def test_wrong_primitive_type_raises_sample_error_naming_field(kwargs, field, hint):
    values = {"s": "s", "i": 1, "f": 1.0, "b": True, "raw": b""} | kwargs
    s = AllPrimitives(**values)
    with pytest.raises(SampleError, match=rf"AllPrimitives\.{field} expects .*{hint}"):
        s.packed


def test_wrong_ndarray_and_list_values_raise_with_fix_hints():
    with pytest.raises(SampleError, match=r"Tiny\.v expects NDArray.*np\.asarray"):
        Tiny("a", [1, 2]).packed  # type: ignore[arg-type]
    with pytest.raises(SampleError, match=r"Lists\.ints expects list\[int\].*tolist"):
        Lists(np.array([1]), [], [], []).packed  # type: ignore[arg-type]
    with pytest.raises(SampleError, match=r"Lists\.strs expects list\[str\]"):
        Lists([], [], ["a", 1], []).packed  # type: ignore[list-item]
    with pytest.raises(SampleError, match=r"Lists\.nested"):
        Lists([], [[1], "x"], [], []).packed  # type: ignore[list-item]


def test_object_array_in_field_raises_sample_error_naming_field():
    with pytest.raises(SampleError, match=r"Tiny\.v: .*object"):
        Tiny("a", np.array([None], dtype=object)).packed


def test_unschemaable_field_is_packed_as_msgpack_sees_fit():
    @packable
    class Loose:
        meta: dict
        anything: Any

    s = Loose({"a": [1, 2]}, "x")
    assert Loose.from_bytes(s.packed) == s
    with pytest.raises(SampleError, match=r"cannot serialize .*Loose \(fields"):
        Loose({"a": object()}, 1).packed


# ----------------------------------------------------------------- @packable


def test_packable_keeps_name_module_doc_and_is_dataclass_subclass():
    assert Img.__name__ == "Img" and Img.__qualname__ == "Img"
    assert Img.__module__ == "tests.samples.sample_types"
    assert Img.__doc__ == "Image sample."
    assert issubclass(Img, PackableSample) and dataclasses.is_dataclass(Img)
    assert [f.name for f in dataclasses.fields(Img)] == ["image", "label", "xs", "score"]


def test_packable_classes_pickle_by_reference():
    s = Img(np.arange(3, dtype=np.uint8), "p", [1.0], 2.0)
    back = pickle.loads(pickle.dumps(s))
    assert type(back) is Img
    assert_arrays_equal(back.image, s.image)
    assert back.label == "p"


def test_packable_with_parentheses_and_on_dataclass_and_frozen():
    @packable()
    class A:
        x: int

    @packable
    @dataclasses.dataclass(frozen=True)
    class B:
        x: int
        y: str = "d"

    assert A.from_bytes(A(1).packed).x == 1
    b = B.from_bytes(B(2).packed)
    assert (b.x, b.y) == (2, "d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.x = 3  # type: ignore[misc]


def test_packable_keeps_methods_super_and_post_init():
    @packable
    class WithMethods:
        x: int

        def __post_init__(self) -> None:
            self.x = int(self.x)

        def double(self) -> int:
            return self.x * 2

    assert WithMethods("4").double() == 8  # type: ignore[arg-type]
    assert WithMethods.from_bytes(WithMethods(3).packed).double() == 6


def test_packable_rejects_non_classes():
    with pytest.raises(NotPackableError, match="decorates classes"):
        packable(lambda: None)  # type: ignore[arg-type]


def test_non_dataclass_subclass_cannot_pack():
    class NotDC(PackableSample):
        pass

    with pytest.raises(SampleError, match="must be a dataclass"):
        NotDC().packed


def test_is_packable_and_ensure_packable():
    assert is_packable_type(Img) and is_packable_type(DictSample)
    assert not is_packable_type(dict) and not is_packable_type(Img(np.zeros(1), "", []))
    assert ensure_packable_type(Tiny) is Tiny

    class Plain:
        x: int

    with pytest.raises(NotPackableError, match=r"Plain is not a packable.*@atdata_dagster\.packable"):
        ensure_packable_type(Plain)


def test_unresolvable_string_annotation_gives_clear_error():
    @packable
    class Broken:
        x: "DoesNotExist"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="cannot resolve the field annotations of .*Broken"):
        Broken(1).packed


# ----------------------------------------------------------------- DictSample


def test_dict_sample_access_and_verbatim_repack():
    payload = Img(np.arange(3, dtype=np.uint8), "lab", [0.5], None).packed
    d = DictSample.from_bytes(payload)
    assert d.label == "lab" and d["label"] == "lab" and d.get("missing", 1) == 1
    assert list(d.keys()) == ["image", "label", "xs", "score"]
    assert isinstance(d.image, bytes)  # arrays stay raw bytes, as in atdata
    assert d.to_dict()["xs"] == [0.5] and len(d) == 4 and "score" in d
    assert d.packed == payload
    assert DictSample.from_bytes(d.as_wds["msgpack"]) == d


def test_dict_sample_missing_attribute_lists_fields():
    d = DictSample({"a": 1})
    with pytest.raises(AttributeError, match=r"no field 'b'; fields: \['a'\]"):
        d.b


def test_dict_sample_as_type_decodes_arrays():
    payload = Img(np.arange(3, dtype=np.uint8), "lab", [0.5]).packed
    typed = DictSample.from_bytes(payload).as_type(Img)
    assert type(typed) is Img
    assert_arrays_equal(typed.image, np.arange(3, dtype=np.uint8))
    with pytest.raises(NotPackableError):
        DictSample({}).as_type(dict)


def test_dict_sample_pickles_and_compares():
    d = DictSample({"a": 1, "b": b"x"}, c=[1])
    back = pickle.loads(pickle.dumps(d))
    assert back == d and back.c == [1]
    d.a = 5
    assert d["a"] == 5 and back.a == 1


# ----------------------------------------------------------------- speed guard


def test_packing_is_fast_enough_for_the_shard_benchmark():
    """Packing the benchmark's sample must stay within a small factor of raw msgpack."""
    import time

    arr = np.random.default_rng(0).random(256, dtype=np.float32)
    s = Emb("sample_000001", 3, arr)
    raw = {"key": s.key, "label": s.label, "embedding": arr.tobytes()}

    def best(fn, n=2000):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times.append(time.perf_counter() - t0)
        return min(times) / n

    ours = best(lambda: s.packed)
    baseline = best(lambda: msgpack.packb(raw))
    assert ours < max(10 * baseline, 20e-6), (ours, baseline)
    assert re.fullmatch(r"[0-9a-f-]{36}", s.as_wds["__key__"])


@pytest.mark.parametrize("annotation, says", [
    ("datetime.datetime", "isoformat"),
    ("Optional[datetime.date]", "isoformat"),
    ("set[int]", "cannot store a set"),
    ("list[frozenset]", "cannot store a set"),
    ("tuple[int, int]", "would read back as a list"),
    ("decimal.Decimal", "store it as str"),
])
def test_a_field_type_no_sample_could_round_trip_is_refused_when_the_class_is_decorated(annotation, says):
    from atdata_dagster.errors import UnsupportedTypeError

    namespace: dict = {}
    exec(f"class Bad:\n    ok: int\n    when: {annotation}\n", {**globals(), **locals()}, namespace)
    with pytest.raises(UnsupportedTypeError, match=f"Bad.when: .*{says}"):
        packable(namespace["Bad"])


def test_fields_msgpack_can_carry_are_still_accepted_at_decoration():

    @packable
    class Loose:
        meta: dict
        anything: Any
        ids: list[int]
        blob: bytes | None = None

    sample = Loose(meta={"a": [1, 2]}, anything="x", ids=[1])
    assert Loose.from_bytes(sample.packed) == sample


# --------------------------------------------------------------------------- atdata parity


@packable
class Encoded:
    vec: NDArray[np.float32]
    mask: Optional[NDArray] = None
    raw: bytes = b""
    label: int = 0


def test_serialized_array_bytes_given_to_the_constructor_are_decoded():

    s = Encoded(vec=np.arange(3, dtype=np.float32), mask=np.ones((2, 2), np.uint8), raw=b"\x01", label=7)
    back = Encoded(**DictSample.from_bytes(s.packed).to_dict())  # atdata's round trip
    assert isinstance(back.vec, np.ndarray) and back.vec.dtype == np.float32
    np.testing.assert_array_equal(back.vec, s.vec)
    np.testing.assert_array_equal(back.mask, s.mask)
    assert back.raw == b"\x01" and back.label == 7  # a bytes field stays bytes
    with pytest.raises(SampleError, match=r"Encoded.vec: bytes that are not a serialized array"):
        Encoded(vec=b"garbage")


def test_samplebatch_of_t_knows_its_sample_type():
    from atdata_dagster import SampleBatch, packable

    @packable
    class Item:
        x: int

    assert SampleBatch[Item]([Item(1), Item(2)]).sample_type is Item
    assert SampleBatch[Item]([]).sample_type is Item  # from T, as atdata
    assert SampleBatch([Item(3)]).sample_type is Item  # inferred from the samples
    assert SampleBatch([], sample_type=Item).sample_type is Item
    assert SampleBatch([]).sample_type is None


def test_dictsample_accepts_atdatas_data_keyword():
    from atdata_dagster import DictSample

    d = DictSample(_data={"a": 1, "b": "x"})
    assert d.a == 1 and d["b"] == "x" and d.to_dict() == {"a": 1, "b": "x"}
    assert DictSample(a=1).to_dict() == {"a": 1}
    assert DictSample({"a": 1}).to_dict() == {"a": 1}
    # atdata drops keyword fields given next to _data; they are kept here
    assert DictSample(_data={"a": 1}, b=2).to_dict() == {"a": 1, "b": 2}
