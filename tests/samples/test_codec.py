"""Byte-level tests of the payload and ndarray codecs against the atdata reference vectors."""

from __future__ import annotations

import io
import struct

import msgpack
import numpy as np
import pytest

from atdata_dagster.errors import DecodeError, SampleError
from atdata_dagster.samples.codec import (
    decode_ndarray,
    encode_ndarray,
    pack_payload,
    unpack_payload,
)

# ----------------------------------------------------------------- reference vectors (§1.2, §1.3)

TINY_HEX = "82 a5 6c6162656c a1 61 a1 76 c4 15 03 3c6634 01 0200000000000000 0000803f 00000040"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_tiny_payload_matches_reference_bytes():
    payload = pack_payload({"label": "a", "v": np.array([1, 2], np.float32)})
    assert payload == h(TINY_HEX)


@pytest.mark.parametrize(
    "arr, hexbytes",
    [
        (
            np.arange(6, dtype="<i2").reshape(2, 3),
            "03 3c6932 02 0200000000000000 0300000000000000 000001000200030004000500",
        ),
        (np.array(3.5, ">f8"), "03 3e6638 00 400c000000000000"),
        (np.array([True, False]), "03 7c6231 01 0200000000000000 0100"),
    ],
    ids=["int16-2x3", "0d-big-endian-f8", "bool"],
)
def test_ndarray_encoding_matches_reference_bytes(arr, hexbytes):
    assert encode_ndarray(arr) == h(hexbytes)
    back = decode_ndarray(h(hexbytes))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


# ----------------------------------------------------------------- ndarray round trips


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.arange(5, dtype=">i4"),
        np.array([1.5, -2.0], dtype=">f8"),
        np.array(7, dtype=np.int64),
        np.array([True, False, True]),
        np.array(["ab", "c"], dtype="<U2"),
        np.array([b"xy", b"z"], dtype="S2"),
        np.array([1 + 2j], dtype=np.complex128),
        np.zeros((0, 3), dtype=np.uint8),
        np.array(["2024-01-01"], dtype="datetime64[ns]"),
        np.arange(12, dtype=np.float16).reshape(3, 4).T,  # non-contiguous
    ],
    ids=lambda a: f"{a.dtype.str}-{a.shape}",
)
def test_ndarray_round_trip_keeps_dtype_byte_order_and_shape(arr):
    back = decode_ndarray(encode_ndarray(arr))
    assert back.dtype.str == arr.dtype.str
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_decoded_array_is_writable_by_default_and_read_only_without_copy():
    data = encode_ndarray(np.arange(4, dtype=np.int32))
    arr = decode_ndarray(data)
    arr[0] = 99  # must not raise
    assert arr.flags.writeable and arr[0] == 99
    view = decode_ndarray(data, copy=False)
    assert not view.flags.writeable
    assert view.tolist() == [0, 1, 2, 3]


def test_structured_array_is_written_as_npy_and_reads_back():
    arr = np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")])
    data = encode_ndarray(arr)
    assert data.startswith(b"\x93NUMPY")
    back = decode_ndarray(data)
    assert back.dtype == arr.dtype
    assert back.tolist() == arr.tolist()


def test_object_array_is_refused_on_write():
    with pytest.raises(SampleError, match="object-dtype"):
        encode_ndarray(np.array([{"a": 1}], dtype=object))


def test_encode_rejects_non_arrays_with_fix():
    with pytest.raises(SampleError, match="asarray"):
        encode_ndarray([1, 2, 3])  # type: ignore[arg-type]


# ----------------------------------------------------------------- legacy .npy


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_legacy_npy_payload_decodes():
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.testing.assert_array_equal(decode_ndarray(_npy(arr)), arr)


def test_legacy_npy_fortran_order_decodes():
    arr = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    back = decode_ndarray(_npy(arr))
    np.testing.assert_array_equal(back, arr)


def test_legacy_npy_object_array_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(DecodeError, match="object"):
        decode_ndarray(buf.getvalue())


def test_legacy_npy_lying_shape_is_refused_without_allocating():
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }"
    header = header.ljust(118) + "\n"
    lying = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(16)
    with pytest.raises(DecodeError, match="data bytes follow"):
        decode_ndarray(lying)


# ----------------------------------------------------------------- hostile ndarray headers


def test_lying_header_shape_raises_decode_error_not_allocation():
    header = b"\x03<f8\x01" + struct.pack("<q", 10**15)
    with pytest.raises(DecodeError, match="data bytes follow"):
        decode_ndarray(header + bytes(16))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "too short|truncated"),
        (b"\x03<f", "truncated"),
        (b"\x03<f8\x02" + bytes(8), "truncated"),
        (b"\x03<f8\x01" + struct.pack("<q", -1), "negative"),
        (b"\x01O\x01" + struct.pack("<q", 1) + bytes(8), "object"),
        (b"\x06object\x00" + bytes(8), "object"),
        (b"\x03zz9\x00", "invalid dtype"),
        (b"\x02\xff\xfe\x00", "invalid dtype"),
        (b"\x03<f8\x21" + bytes(8 * 33), "dimensions"),
        (b"\x07i4,i4\x00\x00" + bytes(8), "compound|invalid dtype"),
        (b"\x03<U0\x01" + struct.pack("<q", 10**12), "zero-width"),
    ],
    ids=[
        "empty",
        "short-dtype",
        "short-shape",
        "negative-dim",
        "object-O",
        "object-word",
        "bad-dtype",
        "non-ascii-dtype",
        "too-many-dims",
        "compound-compact",
        "zero-width",
    ],
)
def test_malformed_ndarray_payload_raises_decode_error(data, match):
    with pytest.raises(DecodeError, match=match):
        decode_ndarray(data)


def test_decode_ndarray_rejects_non_bytes():
    with pytest.raises(DecodeError, match="must be bytes"):
        decode_ndarray("not bytes")  # type: ignore[arg-type]


# ----------------------------------------------------------------- payloads


def test_pack_payload_keeps_key_order_and_none():
    data = pack_payload({"z": 1, "a": None, "m": "x"})
    assert list(msgpack.unpackb(data)) == ["z", "a", "m"]
    assert unpack_payload(data) == {"z": 1, "a": None, "m": "x"}


def test_numpy_scalars_become_python_scalars_float32_as_float64():
    data = pack_payload({"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True)})
    # float32 0.5 -> float64 (cb) on the wire, as atdata does via .item()
    assert data == h("83 a1 66 cb 3fe0000000000000 a1 69 03 a1 62 c3")


def test_bytes_use_bin_and_str_uses_str_family():
    data = pack_payload({"b": b"\x00\x01", "s": "hé"})
    assert data == h("82 a1 62 c4 02 0001 a1 73 a3 68c3a9")


def test_arrays_inside_lists_are_encoded():
    arrs = [np.array([1], np.int8), np.array([2, 3], np.int8)]
    out = unpack_payload(pack_payload({"xs": arrs}))
    assert [decode_ndarray(b).tolist() for b in out["xs"]] == [[1], [2, 3]]


def test_pack_payload_rejects_non_str_keys_and_unencodable_values():
    with pytest.raises(SampleError, match="must be str"):
        pack_payload({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(SampleError, match="cannot serialize"):
        pack_payload({"x": object()})
    with pytest.raises(SampleError, match="dict"):
        pack_payload([("a", 1)])  # type: ignore[arg-type]


def test_pack_payload_after_error_still_produces_clean_output():
    with pytest.raises(SampleError):
        pack_payload({"a": 1, "x": object()})
    assert pack_payload({"k": 1}) == h("81 a1 6b 01")


# ----------------------------------------------------------------- strict reader


def _ext_payload() -> bytes:
    return msgpack.packb({"a": msgpack.ExtType(5, b"xyz")})


@pytest.mark.parametrize(
    "data, match",
    [
        (msgpack.packb({1: "int key"}), "not allowed|str keys|int"),
        (msgpack.packb({b"k": 1}, use_bin_type=True), "str keys"),
        (msgpack.packb({"a": {2: "nested int key"}}), "not allowed|str keys|int"),
        (_ext_payload(), "ext"),
        (msgpack.packb({"t": msgpack.Timestamp(1, 0)}), "ext"),
        (h("81 a1 61 a2 ff fe"), "msgpack map|utf-8|UnicodeDecodeError"),
        (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
        (msgpack.packb("text"), "must be a msgpack map"),
        (msgpack.packb({"a": "long string"})[:-3], "not a valid msgpack"),
        (b"", "not a valid msgpack"),
        (msgpack.packb({"a": 1}) + b"\x00", "not a valid msgpack"),
        (h("81 a1 61 c6 7fffffff") + b"x", "not a valid msgpack"),  # bin32 of 2 GiB
        (h("dd 7fffffff"), "not a valid msgpack"),  # array32 of 2**31-1 items
        (h("df 7fffffff"), "not a valid msgpack"),  # map32
        (b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0", "not a valid msgpack"),  # deep nesting
    ],
    ids=[
        "int-key",
        "bin-key",
        "nested-int-key",
        "ext",
        "timestamp",
        "invalid-utf8",
        "array-top",
        "str-top",
        "truncated",
        "empty",
        "trailing",
        "huge-bin",
        "huge-array",
        "huge-map",
        "deep",
    ],
)
def test_strict_reader_rejects_malformed_payloads(data, match):
    with pytest.raises(DecodeError, match=match):
        unpack_payload(data)


def test_strict_reader_accepts_float32_and_uint64_on_the_wire():
    data = h("82 a1 66 ca 3f000000 a1 75 cf ffffffffffffffff")
    assert unpack_payload(data) == {"f": 0.5, "u": 2**64 - 1}


def test_reader_rejects_non_bytes():
    with pytest.raises(DecodeError):
        unpack_payload({"a": 1})  # type: ignore[arg-type]
