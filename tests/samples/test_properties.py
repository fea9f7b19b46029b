"""Property tests: supported values round-trip; arbitrary bytes decode or raise DecodeError."""

from __future__ import annotations

from typing import Optional

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from atdata_dagster.errors import DecodeError
from atdata_dagster.samples import DictSample, decode_ndarray, encode_ndarray, packable
from atdata_dagster.samples.codec import unpack_payload

from .sample_types import Tiny

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@packable
class Everything:
    s: str
    i: int
    f: float
    b: bool
    raw: bytes
    arr: NDArray
    ints: list[int]
    nested: list[list[str]]
    arrays: list[NDArray]
    maybe_s: Optional[str] = None
    maybe_arr: NDArray | None = None


dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(),
    hnp.floating_dtypes(endianness="<"),
    hnp.floating_dtypes(endianness=">"),
    hnp.complex_number_dtypes(),
    hnp.unicode_string_dtypes(max_len=3),
    hnp.byte_string_dtypes(max_len=3),
)
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
int64s = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype.str == b.dtype.str and a.shape == b.shape and a.tobytes() == b.tobytes()


@SETTINGS
@given(arrays)
def test_any_array_round_trips_bit_exactly(arr):
    assert same_array(decode_ndarray(encode_ndarray(arr)), arr)


@SETTINGS
@given(
    st.text(),
    int64s,
    floats,
    st.booleans(),
    st.binary(max_size=64),
    arrays,
    st.lists(int64s, max_size=5),
    st.lists(st.lists(st.text(max_size=5), max_size=3), max_size=3),
    st.lists(arrays, max_size=3),
    st.none() | st.text(),
    st.none() | arrays,
)
def test_any_supported_sample_round_trips(s, i, f, b, raw, arr, ints, nested, arrs, maybe_s, maybe_arr):
    sample = Everything(s, i, f, b, raw, arr, ints, nested, arrs, maybe_s, maybe_arr)
    payload = sample.packed
    back = Everything.from_bytes(payload)
    assert (back.s, back.i, back.f, back.b, back.raw) == (s, i, f, b, raw)
    assert (back.ints, back.nested, back.maybe_s) == (ints, nested, maybe_s)
    assert same_array(back.arr, arr)
    assert len(back.arrays) == len(arrs) and all(map(same_array, back.arrays, arrs))
    assert (back.maybe_arr is None) == (maybe_arr is None)
    if maybe_arr is not None:
        assert same_array(back.maybe_arr, maybe_arr)
    # re-packing is byte-identical, and DictSample repacks verbatim
    assert back.packed == payload
    assert DictSample.from_bytes(payload).packed == payload


def _decode_all(data: bytes) -> None:
    try:
        unpack_payload(data)
    except DecodeError:
        pass
    try:
        decode_ndarray(data)
    except DecodeError:
        pass
    try:
        Tiny.from_bytes(data)
    except DecodeError:
        pass
    except TypeError as exc:  # FieldMismatchError: valid map, wrong fields
        assert type(exc).__name__ == "FieldMismatchError"


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(data):
    _decode_all(data)


@SETTINGS
@given(
    st.sampled_from(
        [
            bytes.fromhex("82a56c6162656ca161a176c415033c66340102000000000000000000803f00000040"),
            encode_ndarray(np.arange(6, dtype="<i2").reshape(2, 3)),
            msgpack.packb({"label": "x", "v": b"\x03<f4\x01\x01\x00\x00\x00\x00\x00\x00\x00abcd"}),
        ]
    ),
    st.data(),
)
def test_mutated_valid_payloads_decode_or_raise_decode_error(valid, data):
    pos = data.draw(st.integers(0, len(valid) - 1))
    byte = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(valid)))
    mutated = valid[:pos] + bytes([byte]) + valid[pos + 1 :]
    _decode_all(mutated)
    _decode_all(mutated[:cut])
