"""Shuffling: bounded in bytes, seeded by (seed, epoch), exactly once, and measured."""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster.dataset import Dataset
from atdata_dagster.samples import packable
from atdata_dagster.dataset import write_samples
from atdata_dagster.shuffle import ShuffleBuffer, epoch_rng, shuffle_quality


@packable
class Item:
    label: int
    blob: NDArray[np.uint8]


def _items(n: int, size: int = 64) -> list[Item]:
    return [Item(label=i, blob=np.full(size, i % 251, np.uint8)) for i in range(n)]


def test_buffer_never_holds_more_bytes_than_its_bound():
    """At any time, the items read but not yet yielded fit in max_bytes (plus the one arriving)."""
    sizes = np.random.default_rng(3).integers(1, 1000, 2000).tolist()
    read = 0

    def source():
        nonlocal read
        for i, size in enumerate(sizes):
            read += 1
            yield b"x" * size, i

    out = []
    for payload, tag in ShuffleBuffer(epoch_rng(1), max_bytes=10_000).shuffle(source()):
        out.append(tag)
        held = [sizes[t] for t in range(read) if t not in set(out)] if len(out) % 97 == 0 else None
        if held is not None:
            assert sum(held) - sizes[read - 1] <= 10_000
    assert sorted(out) == list(range(2000))


def test_buffer_bound_in_items_and_order_is_seeded():
    src = [(b"p", i) for i in range(500)]
    a = [t for _, t in ShuffleBuffer(epoch_rng(7, 0), max_items=50).shuffle(iter(src))]
    b = [t for _, t in ShuffleBuffer(epoch_rng(7, 0), max_items=50).shuffle(iter(src))]
    c = [t for _, t in ShuffleBuffer(epoch_rng(7, 1), max_items=50).shuffle(iter(src))]
    assert a == b and a != c and sorted(a) == list(range(500))
    # an item can only leave after at most 50 later items came in
    assert all(label - out_pos <= 50 for out_pos, label in enumerate(a))
    with pytest.raises(ValueError):
        ShuffleBuffer(epoch_rng(0), max_bytes=0)


def test_quality_measures_displacement_and_adjacent_pairs():
    assert shuffle_quality(np.arange(1000)) == (0.0, 1.0)
    disp, adj = shuffle_quality(np.random.default_rng(0).permutation(100_000))
    assert 0.32 < disp < 0.35 and adj < 1e-3


def test_global_shuffle_of_local_shards_is_uniform_exactly_once_and_seeded(tmp_path):
    ds = write_samples(_items(600), tmp_path / "g.tar", maxcount=100)
    a = [s.label for s in ds.shuffled(seed=5)]
    b = [s.label for s in ds.shuffled(seed=5)]
    e1 = [s.label for s in ds.shuffled(seed=5, epoch=1)]
    assert a == b and a != e1 and sorted(a) == list(range(600))
    disp, adj = shuffle_quality(a)
    assert disp > 0.25 and adj < 0.02  # sample-level across shards, not shard blocks
    batches = list(ds.shuffled(seed=5, batch_size=64))
    assert [x for bt in batches for x in bt.label] == a  # batching does not change the order
    assert batches[0].blob.shape == (64, 64)


def test_buffered_shuffle_of_streamed_shards_is_exactly_once(tmp_path):
    local = write_samples(_items(300, size=256), tmp_path / "s.tar", maxcount=50)
    blobs = {u: open(u, "rb").read() for u in local.list_shards()}
    streamed = Dataset[Item](local.list_shards(), opener=lambda u: io.BytesIO(blobs[u]))  # not mappable
    got = [s.label for s in streamed.shuffled(seed=2, buffer_bytes=8 * 1024)]
    assert sorted(got) == list(range(300)) and got != list(range(300))
    assert got == [s.label for s in streamed.shuffled(seed=2, buffer_bytes=8 * 1024)]
    with pytest.raises(ValueError):
        streamed.shuffled(buffer_bytes=0)


def test_shuffled_read_holds_samples_by_bytes_not_by_count(tmp_path):
    """buffer_size=10,000 samples, but 1 MB of 200 kB samples: an item leaves within ~5 of arriving."""
    ds = write_samples(_items(40, size=200_000), tmp_path / "big.tar", maxcount=40)  # one shard
    got = [s.label for s in ds.shuffled(buffer_size=10_000, buffer_bytes=1_000_000, seed=0)]
    assert sorted(got) == list(range(40)) and got != list(range(40))
    assert all(label - pos <= 5 for pos, label in enumerate(got))
