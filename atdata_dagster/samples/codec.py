"""Sample bytes: atdata's msgpack payload and its compact ndarray wire format.

Writers here produce exactly the bytes atdata writes; readers are strict (string keys,
no ext types, bounded lengths) and turn any malformed input into
:class:`~atdata_dagster.errors.DecodeError` instead of crashing or allocating what a
hostile header asks for.
"""

from __future__ import annotations

import ast
import struct
import threading
import warnings
from io import BytesIO
from typing import Any, Literal

import msgpack
import numpy as np

from ..errors import DecodeError, PayloadTypeError, SampleError

__all__ = [
    "MAX_NDIM",
    "decode_ndarray",
    "encode_ndarray",
    "pack_payload",
    "unpack_payload",
]

#: Most dimensions an encoded array may have (numpy < 2 cannot hold more).
MAX_NDIM = 32

_NPY_MAGIC = b"\x93NUMPY"
_INTP_MAX = int(np.iinfo(np.intp).max)
_NPY_MAX_HEADER = 10_000  # numpy's own limit for headers it loads "securely"
_CACHE_LIMIT = 1024

# dtype-string bytes -> dtype; shape-struct per ndim; (dtype.str, shape) -> header.
# Parsing a dtype string or building a header costs microseconds; samples of one
# type repeat the same few values, so these caches make per-sample cost a dict hit.
_dtype_cache: dict[bytes, np.dtype] = {}
_shape_structs: dict[int, struct.Struct] = {}
_header_cache: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}
_header_info: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}


def _shape_struct(ndim: int) -> struct.Struct:
    st = _shape_structs.get(ndim)
    if st is None:
        st = _shape_structs[ndim] = struct.Struct("<%dq" % ndim)
    return st


# --------------------------------------------------------------------------- ndarray


def encode_ndarray(arr: np.ndarray) -> bytes:
    """Encode ``arr`` in atdata's compact array format (or ``.npy`` for structured dtypes).

    Layout: one byte ``len(dtype.str)``, ``dtype.str`` in ASCII (byte order explicit), one
    byte ``ndim``, ``ndim`` little-endian int64 dimensions, then ``arr.tobytes()`` in C
    order. Structured (compound) dtypes are written as a full ``.npy`` file, as atdata
    0.7 does. Object arrays cannot be stored safely and raise :class:`SampleError`.
    """
    if not isinstance(arr, np.ndarray):
        raise SampleError(
            f"encode_ndarray expects a numpy.ndarray, got {type(arr).__name__}; "
            "wrap the value with numpy.asarray(...) first"
        )
    dtype = arr.dtype
    shape = arr.shape
    key = (dtype, shape)  # hashing the dtype is ~4x cheaper than building dtype.str
    header = _header_cache.get(key)
    if header is None or dtype.fields is not None:
        if dtype.hasobject:
            raise SampleError(
                f"cannot serialize an object-dtype array (dtype {dtype!r}, shape {shape}): "
                "object arrays would need pickle; convert it to a numeric, bool, bytes "
                "or str dtype (e.g. arr.astype(str)) or store the values in a list field"
            )
        if dtype.fields is not None:
            buf = BytesIO()
            np.save(buf, arr, allow_pickle=False)
            return buf.getvalue()
        if arr.ndim > MAX_NDIM:
            raise SampleError(
                f"cannot serialize an array with {arr.ndim} dimensions (max {MAX_NDIM}): "
                "reshape it to fewer dimensions"
            )
        if dtype.itemsize == 0 and arr.size:
            raise SampleError(
                f"cannot serialize a non-empty array of zero-width dtype {dtype.str!r}: "
                "give the dtype a width (e.g. 'U1', 'S1')"
            )
        dstr = dtype.str.encode("ascii")
        header = (
            bytes((len(dstr),)) + dstr + bytes((arr.ndim,)) + _shape_struct(arr.ndim).pack(*shape)
        )
        if len(_header_cache) >= _CACHE_LIMIT:
            _header_cache.clear()
        _header_cache[key] = header
    return header + arr.tobytes()


def _parse_dtype(raw: bytes) -> np.dtype:
    dtype = _dtype_cache.get(raw)
    if dtype is not None:
        return dtype
    try:
        text = raw.decode("ascii")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated aliases still parse
            dtype = np.dtype(text)
    except Exception as exc:  # noqa: BLE001 - np.dtype raises TypeError, ValueError, SyntaxError...; re-raised as DecodeError
        raise DecodeError(
            f"ndarray payload has an invalid dtype string {raw!r}: {exc}; the payload "
            "is corrupt or was not written by an atdata-compatible writer"
        ) from None
    _check_decodable_dtype(dtype, repr(text))
    if len(_dtype_cache) >= _CACHE_LIMIT:
        _dtype_cache.clear()
    _dtype_cache[raw] = dtype
    return dtype


def _check_decodable_dtype(dtype: np.dtype, label: str) -> None:
    if dtype.hasobject:
        raise DecodeError(
            f"ndarray payload declares object dtype {label}; object arrays are refused "
            "because loading them would need pickle"
        )


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes the data of ``shape`` x ``dtype`` must occupy (checked in Python ints)."""
    count = 1
    bound = max(dtype.itemsize, 1)  # numpy refuses shapes whose non-zero extents overflow intp
    for dim in shape:
        if dim < 0:
            raise DecodeError(f"ndarray payload declares a negative dimension in shape {shape}")
        count *= dim
        bound *= max(dim, 1)
    if bound > _INTP_MAX:
        raise DecodeError(
            f"ndarray payload declares shape {shape} of {dtype.str!r}, too large for any array; "
            "the payload is corrupt or hostile"
        )
    if dtype.itemsize == 0 and count:
        raise DecodeError(
            f"ndarray payload declares {count} elements of zero-width dtype {dtype.str!r}"
        )
    return count * dtype.itemsize


def decode_ndarray(data: bytes | bytearray | memoryview, *, copy: bool = True) -> np.ndarray:
    """Decode bytes written by :func:`encode_ndarray` (or a legacy ``.npy`` payload).

    The header is validated before anything is allocated: the declared shape times the
    itemsize must equal the number of bytes that follow, so a lying header raises
    :class:`DecodeError` rather than allocating. Object dtypes are refused.

    By default the result is a fresh, writable array (users mutate arrays and
    ``torch.from_numpy`` warns on read-only ones; copying a typical embedding costs far
    less than the msgpack decode). ``copy=False`` returns a zero-copy, **read-only** view
    onto ``data`` instead.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(
                f"ndarray payload must be bytes, got {type(data).__name__}; ndarray "
                "fields are stored as msgpack bin values"
            )
        data = bytes(data)
    n = len(data)
    if n >= 6 and data[0] == 0x93 and data[:6] == _NPY_MAGIC:
        return _decode_npy(data, copy=copy)
    if n < 2 or data[0] + 2 > n:
        raise DecodeError(
            f"ndarray payload of {n} bytes is truncated inside its dtype header"
        )
    ndim = data[data[0] + 1]
    end = data[0] + 2 + 8 * ndim
    if ndim > MAX_NDIM:
        raise DecodeError(f"ndarray payload declares {ndim} dimensions (max {MAX_NDIM})")
    if end > n:
        raise DecodeError(
            f"ndarray payload of {n} bytes is truncated inside its shape header "
            f"({ndim} dimensions need {8 * ndim} bytes)"
        )
    header = data[:end]
    info = _header_info.get(header)
    if info is None:
        info = _parse_compact_header(header, ndim)
    dtype, shape, nbytes = info
    if nbytes != n - end:
        raise DecodeError(
            f"ndarray payload header declares shape {shape} of {dtype.str!r} "
            f"({nbytes} bytes) but {n - end} data bytes follow; the payload is "
            "truncated or corrupt"
        )
    if dtype.itemsize == 0:
        return np.empty(shape, dtype)
    if copy:
        # One copy into a bytearray gives a writable array without a second pass.
        return np.ndarray(shape, dtype, bytearray(memoryview(data)[end:]))
    return np.ndarray(shape, dtype, data, end)


def _parse_compact_header(header: bytes, ndim: int) -> tuple[np.dtype, tuple[int, ...], int]:
    dlen = header[0]
    dtype = _parse_dtype(header[1 : 1 + dlen])
    if dtype.fields is not None or dtype.subdtype is not None:
        raise DecodeError(
            f"ndarray payload declares compound dtype {dtype!r} in the compact format; "
            "compound arrays are stored as .npy"
        )
    shape = _shape_struct(ndim).unpack_from(header, dlen + 2) if ndim else ()
    info = (dtype, shape, _nbytes(shape, dtype))
    if len(_header_info) >= _CACHE_LIMIT:
        _header_info.clear()
    _header_info[header] = info
    return info


def _decode_npy(data: bytes, *, copy: bool) -> np.ndarray:
    """Read a ``.npy`` payload without ever trusting its header for an allocation."""
    n = len(data)
    if n < 10:
        raise DecodeError(f".npy payload of {n} bytes is truncated inside its header")
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", data, 8)
        start, encoding = 10, "latin1"
    elif major in (2, 3):
        if n < 12:
            raise DecodeError(f".npy payload of {n} bytes is truncated inside its header")
        (hlen,) = struct.unpack_from("<I", data, 8)
        start, encoding = 12, ("latin1" if major == 2 else "utf8")
    else:
        raise DecodeError(f".npy payload has unsupported format version {major}.{data[7]}")
    if hlen > _NPY_MAX_HEADER:
        raise DecodeError(f".npy payload header of {hlen} bytes exceeds {_NPY_MAX_HEADER}")
    end = start + hlen
    if end > n:
        raise DecodeError(f".npy payload of {n} bytes is truncated inside its header")
    try:
        header = ast.literal_eval(data[start:end].decode(encoding))
    except Exception as exc:  # noqa: BLE001 - literal_eval of hostile text raises many types; re-raised as DecodeError
        raise DecodeError(f".npy payload header does not parse: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise DecodeError(f".npy payload header is not a valid header dict: {header!r:.200}")
    shape, fortran = header["shape"], header["fortran_order"]
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int for d in shape)
        or not isinstance(fortran, bool)
    ):
        raise DecodeError(f".npy payload header has an invalid shape or order: {header!r:.200}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception as exc:  # noqa: BLE001 - descr_to_dtype of hostile input raises many types; re-raised as DecodeError
        raise DecodeError(f".npy payload header has an invalid dtype: {exc}") from None
    _check_decodable_dtype(dtype, repr(header["descr"]))
    nbytes = _nbytes(shape, dtype)
    if nbytes != n - end:
        raise DecodeError(
            f".npy payload header declares shape {shape} of {dtype.str!r} ({nbytes} "
            f"bytes) but {n - end} data bytes follow; the payload is truncated or corrupt"
        )
    if dtype.itemsize == 0:
        return np.empty(shape, dtype)
    order: Literal["F", "C"] = "F" if fortran else "C"
    if copy:
        return np.ndarray(shape, dtype, bytearray(memoryview(data)[end:]), order=order)
    return np.ndarray(shape, dtype, data, end, order=order)


# --------------------------------------------------------------------------- msgpack


def _pack_default(obj: Any) -> Any:
    # msgpack calls this only for values it cannot encode natively.
    if isinstance(obj, np.ndarray):
        return encode_ndarray(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialize {type(obj).__module__}.{type(obj).__qualname__} object")


_local = threading.local()


def _packer() -> msgpack.Packer:
    # Reusing a Packer avoids re-creating its buffer for every sample; Packers are not
    # thread-safe, so keep one per thread.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, default=_pack_default)
    return packer


def pack_payload(mapping: dict[str, Any]) -> bytes:
    """Serialize a sample dict as atdata does: a msgpack map in the given key order.

    ``bytes`` become msgpack bin, ``str`` str, floats float64; numpy arrays (also
    inside lists) become bin values in the compact array format; numpy scalars become
    Python scalars. Keys must be strings.
    """
    if type(mapping) is not dict and not isinstance(mapping, dict):
        raise SampleError(
            f"a sample payload must be a dict of field name -> value, got {type(mapping).__name__}"
        )
    for key in mapping:
        if type(key) is not str:
            raise SampleError(
                f"sample field names must be str, got {key!r} ({type(key).__name__}); "
                "atdata readers reject non-string map keys"
            )
    packer = _packer()
    try:
        return packer.pack(mapping)
    except SampleError:
        packer.reset()
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises TypeError/OverflowError/ValueError; re-raised as SampleError
        packer.reset()
        raise SampleError(
            f"cannot serialize sample fields {list(mapping)}: {exc}; field values must be "
            "str, int, float, bool, bytes, None, numpy arrays/scalars or lists of these"
        ) from None


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed in a sample payload")


def _check_keys(obj: dict) -> dict:
    for key in obj:
        if type(key) is not str:
            raise DecodeError(
                f"msgpack map key {key!r:.60} is {type(key).__name__}; sample payloads "
                "must use str keys"
            )
    return obj


#: Arrays up to this many elements decode straight away. msgpack allocates a list of
#: the declared length when it reads an array header, before the elements, so nested
#: headers that lie about their length (a few bytes each, up to msgpack's 1024 levels)
#: would allocate ``1024 x declared x 8`` bytes; with this cap that is at most 512 KiB.
#: Payloads with longer arrays are first checked by :func:`_check_lengths`.
_FAST_ARRAY_LEN = 64


def _check_lengths(data: bytes | bytearray | memoryview) -> None:
    """Refuse a payload whose arrays declare more elements than it holds, before allocating.

    ``Unpacker.skip`` walks the whole payload in C without building objects; it fails
    on the first container that claims elements that are not there. A payload that
    passes has at most one element per byte, so msgpack's up-front list allocations stay
    within 8 bytes per payload byte.
    """
    n = len(data)
    unpacker = msgpack.Unpacker(max_buffer_size=max(n, 1), max_str_len=n, max_bin_len=n, max_array_len=n,
                                max_map_len=n // 2, max_ext_len=n)
    unpacker.feed(data)
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        raise DecodeError(
            f"sample payload ({n} bytes) declares more values than it holds (an array or map "
            "length larger than the data that follows); the payload is truncated, corrupt or hostile"
        ) from None


def _unpackb(data: Any, n: int, array_len: int) -> Any:
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        object_hook=_check_keys,
        ext_hook=_reject_ext,
        max_ext_len=0,  # also refuses timestamps (-1), which never reach ext_hook
        max_str_len=n,
        max_bin_len=n,
        max_array_len=array_len,
        max_map_len=n // 2,  # maps are not allocated ahead of their entries
    )


def unpack_payload(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Strictly decode a msgpack sample payload into a dict.

    Rejects (with :class:`DecodeError`): non-map top level, non-str map keys, ext
    types (including timestamps), invalid UTF-8 in str values, truncated or trailing
    bytes, lengths larger than the payload, containers declaring more elements than
    bytes remain, and nesting deeper than msgpack's stack. Decoding holds at most a
    small multiple of the payload in Python objects (about 64 bytes per payload byte,
    for a payload made only of empty lists).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a sample payload must be bytes, got {type(data).__name__}")
    n = len(data)
    fast = min(n, _FAST_ARRAY_LEN)
    try:
        try:
            obj = _unpackb(data, n, fast)
        except ValueError as exc:
            if "exceeds max_array_len" not in str(exc) or fast == n:
                raise
            _check_lengths(data)  # a long array: check the declared lengths first
            obj = _unpackb(data, n, n)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack's decode errors are several unrelated types; re-raised as DecodeError
        if "max_ext_len" in str(exc):
            raise DecodeError(
                f"sample payload ({n} bytes) holds a msgpack ext type (e.g. a timestamp); ext "
                "types are not allowed in a sample payload: store times as str or int"
            ) from None
        raise DecodeError(
            f"sample payload ({n} bytes) is not a valid msgpack map: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if type(obj) is not dict:
        raise PayloadTypeError(
            f"sample payload must be a msgpack map of field name -> value, got {type(obj).__name__}"
        )
    return obj
