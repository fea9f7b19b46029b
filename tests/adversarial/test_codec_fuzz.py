"""Codec properties beyond tests/samples/test_properties.py.

* Every supported field type round-trips **byte-exactly** at its edges: ints at the
  int64/uint64 boundaries, every float bit pattern (nan with payloads, ±inf, -0.0,
  subnormals), any unicode text, bytes, bool, None in Optional fields, nested lists and
  ndarrays of every dtype the compact format carries (incl. datetime64/timedelta64,
  float16, complex, void, 0-d and empty shapes).
* Any byte string, and any mutation of a valid payload or a valid tar shard, read
  through the public entry points (``T.from_bytes``, ``DictSample.from_bytes``,
  ``decode_ndarray``, ``Dataset[T]``) either decodes or raises our typed error: never
  another exception, never a hang (Hypothesis deadline plus an alarm), never a big
  allocation (``tracemalloc`` peak under 64 MiB for inputs under 64 KiB).
"""

from __future__ import annotations

import copy
import io
import json
import math
import signal
import struct
import tarfile
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from atdata_dagster.atmosphere import DatasetLabel, EntryRecord, SchemaRecord
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import AtdataError
from atdata_dagster.samples import DictSample, decode_ndarray, encode_ndarray, packable
from atdata_dagster.samples.schema import type_from_record
from atdata_dagster.samples.stubs import StubManager

SETTINGS = settings(
    max_examples=300,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_PEAK = 64 << 20
ALARM_SECONDS = 10


@packable
class Edge:
    i: int
    f: float
    s: str
    raw: bytes
    flag: bool
    arr: NDArray
    floats: list[float]
    nested: list[list[int]]
    arrays: list[NDArray]
    maybe_i: Optional[int] = None
    maybe_f: float | None = None
    maybe_arr: NDArray | None = None
    maybe_list: Optional[list[str]] = None


INT_EDGES = [0, 1, -1, 127, 128, -32, -33, 255, 256, 2**15 - 1, -(2**15), 2**16, 2**31 - 1, -(2**31),
             2**32 - 1, 2**32, 2**63 - 1, -(2**63), 2**63, 2**64 - 1]
ints = st.sampled_from(INT_EDGES) | st.integers(-(2**63), 2**64 - 1)
# every float64 bit pattern: nan with any payload and sign, ±inf, -0.0, subnormals
floats = st.integers(0, 2**64 - 1).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0]) | st.floats()

dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="<"),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.timedelta64_dtypes(endianness="?"),
    hnp.unicode_string_dtypes(endianness="?", min_len=1, max_len=4),
    hnp.byte_string_dtypes(min_len=1, max_len=4),
    st.sampled_from([np.dtype("V1"), np.dtype("V3")]),
)
shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=3)


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(dtypes)
    shape = draw(shapes)
    # raw bytes, so every bit pattern (nan payloads, NaT, invalid code points) is covered
    raw = draw(st.binary(min_size=dtype.itemsize * math.prod(shape), max_size=dtype.itemsize * math.prod(shape)))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype.str == b.dtype.str and a.shape == b.shape and a.tobytes() == b.tobytes()


def float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


edges = st.builds(
    Edge,
    i=ints,
    f=floats,
    s=st.text(),  # Hypothesis text never holds lone surrogates (they cannot be UTF-8)
    raw=st.binary(max_size=300),
    flag=st.booleans(),
    arr=arrays(),
    floats=st.lists(floats, max_size=5),
    nested=st.lists(st.lists(ints, max_size=3), max_size=3),
    arrays=st.lists(arrays(), max_size=3),
    maybe_i=st.none() | ints,
    maybe_f=st.none() | floats,
    maybe_arr=st.none() | arrays(),
    maybe_list=st.none() | st.lists(st.text(max_size=4), max_size=3),
)


@SETTINGS
@given(edges)
def test_every_field_type_round_trips_byte_exactly_at_its_edges(sample):
    payload = sample.packed
    back = Edge.from_bytes(payload)
    assert (back.i, back.s, back.raw, back.flag, back.nested) == (sample.i, sample.s, sample.raw, sample.flag, sample.nested)
    assert type(back.flag) is bool and type(back.i) is int
    assert float_bits(back.f) == float_bits(sample.f)
    assert list(map(float_bits, back.floats)) == list(map(float_bits, sample.floats))
    assert same_array(back.arr, sample.arr)
    assert len(back.arrays) == len(sample.arrays) and all(map(same_array, back.arrays, sample.arrays))
    assert back.maybe_i == sample.maybe_i and back.maybe_list == sample.maybe_list
    assert (back.maybe_f is None) == (sample.maybe_f is None)
    if sample.maybe_f is not None:
        assert float_bits(back.maybe_f) == float_bits(sample.maybe_f)
    assert (back.maybe_arr is None) == (sample.maybe_arr is None)
    if sample.maybe_arr is not None:
        assert same_array(back.maybe_arr, sample.maybe_arr)
    assert back.packed == payload  # re-encoding is byte-identical
    assert DictSample.from_bytes(payload).packed == payload


@SETTINGS
@given(arrays())
def test_any_array_of_any_dtype_and_shape_round_trips_byte_exactly(arr):
    data = encode_ndarray(arr)
    back = decode_ndarray(data)
    assert same_array(back, arr)
    assert back.flags.writeable and same_array(decode_ndarray(data, copy=False), arr)
    assert encode_ndarray(back) == data


# --------------------------------------------------------------------------- hostile bytes


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {ALARM_SECONDS} s")


def only_typed_errors(fn: Callable[[], Any], data: bytes) -> None:
    """Run ``fn``: it may return or raise an AtdataError; anything else, a hang or a big allocation fails."""
    assert len(data) < 64 << 10
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, ALARM_SECONDS)
    tracemalloc.start()
    try:
        fn()
    except AtdataError:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MAX_PEAK, f"{peak >> 20} MiB allocated for {len(data)} input bytes"


def decode_everything(data: bytes) -> None:
    for fn in (lambda: Edge.from_bytes(data), lambda: DictSample.from_bytes(data), lambda: decode_ndarray(data)):
        only_typed_errors(fn, data)


def read_shard_bytes(data: bytes, sample_type: type = Edge) -> None:
    ds = Dataset[sample_type]("mem://fuzz.tar", opener=lambda url: io.BytesIO(data))
    only_typed_errors(lambda: list(ds.ordered()), data)
    only_typed_errors(lambda: ds.count(), data)


@SETTINGS
@given(st.binary(max_size=4096))
def test_any_bytes_as_a_payload_decode_or_raise_typed(data):
    decode_everything(data)


@SETTINGS
@given(st.binary(min_size=0, max_size=4096))
def test_any_bytes_as_a_shard_read_or_raise_typed(data):
    read_shard_bytes(data, DictSample)


def mutate(valid: bytes, draw) -> bytes:
    """Overwrite, insert, delete, truncate or splice bytes of ``valid``."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate", "extreme"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "extreme" and len(data) >= pos + 4:
            # a length or size field turned into its largest value
            data[pos : pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"7777"]))
    return bytes(data)


@SETTINGS
@given(edges, st.data())
def test_mutated_valid_payloads_decode_or_raise_typed(sample, data):
    decode_everything(mutate(sample.packed, data.draw))
    decode_everything(mutate(encode_ndarray(sample.arr), data.draw))


def shard(samples: list[bytes], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for k, payload in enumerate(samples):
            info = tarfile.TarInfo(f"{k:06d}.msgpack")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.slow
@SETTINGS
@given(st.lists(edges, min_size=1, max_size=3), st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
       st.data())
def test_mutated_valid_shards_read_or_raise_typed(samples, fmt, data):
    valid = shard([s.packed for s in samples], fmt)
    assert [s.packed for s in Dataset[Edge]("mem://ok.tar", opener=lambda url: io.BytesIO(valid)).ordered()] == [
        s.packed for s in samples
    ]
    mutated = mutate(valid, data.draw)
    if len(mutated) < 64 << 10:
        read_shard_bytes(mutated)


@pytest.mark.parametrize("header_bytes", [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff"])
def test_largest_declared_lengths_in_every_msgpack_container_refused_without_allocating(header_bytes):
    # str32, bin32, array32, map32, ext32 headers with the largest lengths, as a field value
    for marker in (b"\xdb", b"\xc6", b"\xdd", b"\xdf", b"\xc9"):
        data = b"\x81\xa1i" + marker + header_bytes + b"\x00" * 16
        with pytest.raises(AtdataError):
            Edge.from_bytes(data)
        only_typed_errors(lambda: DictSample.from_bytes(data), data)


# --------------------------------------------------------------------------- records from a PDS

GOLDEN_RECORDS = [
    json.loads(p.read_text()) for p in sorted((Path(__file__).parent.parent / "compat" / "golden" / "atmosphere").glob("*.json"))
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=6)
    | st.sampled_from(["", "blob", "../x", "__init__", "class", "string", "array", "O", "local#array", "file:///etc/passwd",
                       "https://h/{0..99999999999}.tar", "science.alt.dataset.storageBlobs"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5) | st.sampled_from(["$type", "$link", "ref", "type"]), c,
                                                       max_size=3),
    max_leaves=10,
)


def _paths(obj: Any, prefix: tuple = ()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=300, deadline=timedelta(seconds=3), suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GOLDEN_RECORDS), st.data())
def test_mutated_pds_records_parse_or_raise_typed(tmp_path_factory, valid, data):
    record = copy.deepcopy(valid)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(record))[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = data.draw(json_values)
        else:
            del parent[path[-1]]
    stubs = StubManager(tmp_path_factory.mktemp("stubs"))

    def parse_schema():
        local = SchemaRecord.from_record(record).to_local()
        type_from_record(local)
        stubs.render(local)

    def parse_entry():
        entry = EntryRecord.from_record(record)
        entry.to_record()
        Dataset(entry.storage.data_urls("did:plc:abc"))  # URL patterns are sized, not expanded blindly

    blob = json.dumps(record).encode()
    for fn in (parse_schema, parse_entry, lambda: DatasetLabel.from_record(record)):
        only_typed_errors(fn, blob)
