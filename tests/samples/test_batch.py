"""Batched decoding gives exactly the values of the per-sample path, for every field type."""

from __future__ import annotations

from typing import Any, Optional

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from atdata_dagster.dataset import Dataset, SampleBatch
from atdata_dagster.errors import ShardError
from atdata_dagster.samples import packable
from atdata_dagster.samples.batch import BatchDecoder
from atdata_dagster.samples.codec import encode_ndarray
from atdata_dagster.dataset import write_samples

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


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
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types; arrays bit-exact with the same dtype and shape."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype.str == b.dtype.str
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@st.composite
def everything_batches(draw) -> list[Everything]:
    """A batch whose array fields share one dtype and shape (the column path) or, sometimes, do not."""
    dtype = draw(dtypes)
    shape = draw(shapes)
    uniform = draw(st.booleans())
    n = draw(st.integers(1, 6))

    def arr() -> np.ndarray:
        if uniform:
            return draw(hnp.arrays(dtype, shape))
        return draw(hnp.arrays(draw(dtypes), draw(shapes)))

    out = []
    for _ in range(n):
        out.append(
            Everything(
                s=draw(st.text(max_size=5)),
                i=draw(st.integers(-(2**63), 2**64 - 1)),
                f=draw(st.one_of(st.floats(allow_nan=False), st.integers(-1000, 1000))),
                b=draw(st.booleans()),
                raw=draw(st.binary(max_size=5)),
                arr=arr(),
                ints=draw(st.lists(st.integers(-5, 5), max_size=3)),
                nested=draw(st.lists(st.lists(st.text(max_size=2), max_size=2), max_size=2)),
                arrays=[arr() for _ in range(draw(st.integers(0, 2)))],
                maybe_s=draw(st.one_of(st.none(), st.text(max_size=3))),
                maybe_arr=draw(st.one_of(st.none(), st.just(None).map(lambda _: arr()))) if not uniform else arr(),
            )
        )
    return out


def per_sample(samples: list[Everything]) -> SampleBatch:
    return SampleBatch([Everything.from_bytes(s.packed) for s in samples], Everything)


FIELDS = ["s", "i", "f", "b", "raw", "arr", "ints", "nested", "arrays", "maybe_s", "maybe_arr"]


@SETTINGS
@given(everything_batches())
def test_batch_columns_equal_per_sample_field_values(samples):
    payloads = [s.packed for s in samples]
    columns = BatchDecoder.for_type(Everything).decode(payloads)
    expected = per_sample(samples)
    if columns is None:  # a batch the columns cannot express: the caller decodes it per sample
        return
    for name in FIELDS:
        assert same(columns[name], getattr(expected, name)), name


@SETTINGS
@given(everything_batches(), st.integers(1, 4))
def test_ordered_batches_equal_per_sample_reads(tmp_path_factory, samples, batch_size):
    ds = write_samples(samples, tmp_path_factory.mktemp("b") / "b.tar")
    one_by_one = list(ds.ordered())
    batches = list(ds.ordered(batch_size=batch_size))
    assert [len(b) for b in batches] == [min(batch_size, len(samples) - k) for k in range(0, len(samples), batch_size)]
    for k, batch in enumerate(batches):
        expected = SampleBatch(one_by_one[k * batch_size : (k + 1) * batch_size], Everything)
        for name in FIELDS:
            assert same(getattr(batch, name), getattr(expected, name)), name
        for got, want in zip(batch, expected):  # the sample objects built from columns
            assert all(same(getattr(got, n), getattr(want, n)) for n in FIELDS)


@packable
class Emb:
    key: str
    label: int
    vec: NDArray[np.float32]


@pytest.mark.parametrize("shape", [(256,), (32, 32, 3), (), (0, 4)])
def test_fixed_shape_arrays_take_the_column_path_into_one_array(shape):
    rng = np.random.default_rng(0)
    samples = [Emb(key=f"k{i}", label=i, vec=rng.standard_normal(shape).astype(np.float32)) for i in range(40)]
    columns = BatchDecoder.for_type(Emb).decode([s.packed for s in samples])
    assert columns is not None
    assert columns["vec"].shape == (40, *shape) and columns["vec"].dtype == np.float32
    assert columns["vec"].flags.writeable and columns["vec"].flags.c_contiguous
    assert np.array_equal(columns["vec"], np.stack([s.vec for s in samples]))
    assert columns["label"] == list(range(40)) and columns["key"][3] == "k3"


def _payload(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


vec = encode_ndarray(np.zeros(3, np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        _payload(key="a", label="not an int", vec=vec),  # wrong primitive type
        _payload(key="a", label=True, vec=vec),  # bool for int
        _payload(key="a", label=1, vec="not bytes"),  # wrong array wire type
        _payload(key="a", label=1, vec=b"\x03<f4\x01" + (5).to_bytes(8, "little") + bytes(12)),  # lying shape
        _payload(key="a", label=1),  # missing field
        _payload(key="a", label=1, vec=vec, extra=1),  # unknown field
        msgpack.packb([1, 2, 3]),  # not a map
        _payload(key="a", label=1, vec=vec) + b"\x00",  # trailing bytes
        msgpack.packb({1: 2, "label": 1, "vec": vec}),  # non-str key
    ],
)
def test_hostile_payloads_never_pass_the_column_path(bad):
    good = _payload(key="a", label=1, vec=vec)
    assert BatchDecoder.for_type(Emb).decode([good, bad, good]) is None


def test_a_hostile_payload_in_a_batch_raises_the_per_sample_error(tmp_path):
    from atdata_dagster.shards.writer import ShardWriter
    from atdata_dagster.stores.disk import LocalDiskStore

    good = Emb(key="a", label=1, vec=np.zeros(3, np.float32)).packed
    with ShardWriter(LocalDiskStore(tmp_path), "bad", maxcount=100) as w:
        for i in range(5):
            w.write_payload(f"s{i}", _payload(key="a", label="x", vec=vec) if i == 3 else good)
        urls = list(w.close())
    ds = Dataset[Emb](urls)
    with pytest.raises(ShardError, match=r"sample 's3' does not decode as Emb.*label"):
        list(ds.ordered(batch_size=4))
    with pytest.raises(ShardError, match=r"sample 's3' does not decode as Emb"):
        list(ds.shuffled(batch_size=2, seed=0))


def test_types_without_a_schema_have_no_column_path():
    from atdata_dagster.samples import DictSample

    assert BatchDecoder.for_type(DictSample) is None
    assert BatchDecoder.for_type(int) is None
