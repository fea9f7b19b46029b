"""The torch-free loader plan: exactly once over ranks and workers, equal rank lengths, exact resume.

Property-based over shard layouts, rank and worker counts, drop_last, shuffling and the
points where a run stops; every case reads real shards written to a temp directory.
"""

from __future__ import annotations

import collections
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atdata_dagster import packable
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import LoaderStateError
from atdata_dagster.loader import Loader, global_state, load_state, make_state, merge_states
from atdata_dagster.dataset import write_samples


@packable
class Num:
    idx: int
    pad: bytes


_LAYOUTS: dict[tuple[int, ...], Dataset] = {}
_ROOT = tempfile.mkdtemp(prefix="atdata-loader-plan-")


def dataset(counts: tuple[int, ...]) -> Dataset:
    """Real shards holding ``counts[i]`` samples each, numbered 0..N-1 in order (cached per layout)."""
    ds = _LAYOUTS.get(counts)
    if ds is None:
        urls, start = [], 0
        for s, n in enumerate(counts):
            path = f"{_ROOT}/{'-'.join(map(str, counts))}-{s}.tar"
            write_samples((Num(idx=start + i, pad=bytes((start + i) % 50)) for i in range(n)), path)
            urls.append(path)
            start += n
        ds = _LAYOUTS[counts] = Dataset[Num](urls, metadata={"stats": {"shard_samples": list(counts)}})
    return ds


def run(loader: Loader, worker: int, workers: int, take: int | None = None) -> tuple[list[int], dict]:
    got = []
    it = loader.iter_worker(worker, workers)
    for _, sample in it:
        got.append(sample.idx)
        if take is not None and len(got) >= take:
            break
    return got, make_state(loader, worker, workers)


layouts = st.lists(st.integers(1, 12), min_size=1, max_size=5).map(tuple)


@settings(max_examples=40, deadline=None)
@given(counts=layouts, world=st.integers(1, 4), workers=st.integers(1, 3), drop_last=st.booleans(),
       shuffle=st.booleans(), buffer=st.sampled_from([0, 40, 400]), seed=st.integers(0, 3))
def test_every_rank_gets_the_same_length_and_the_epoch_is_covered_once(counts, world, workers, drop_last, shuffle,
                                                                        buffer, seed):
    ds = dataset(counts)
    n = sum(counts)
    if drop_last and n < world:
        return
    seen = []
    lengths = []
    for rank in range(world):
        loader = Loader(ds, rank=rank, world_size=world, drop_last=drop_last, shuffle=shuffle, seed=seed,
                        shuffle_buffer_bytes=buffer)
        got = [i for w in range(workers) for i in run(loader, w, workers)[0]]
        assert len(got) == loader.rank_len()
        lengths.append(len(got))
        seen += got
    assert len(set(lengths)) == 1
    counts_seen = collections.Counter(seen)
    if drop_last:
        assert len(seen) == n // world * world and max(counts_seen.values()) == 1
    else:
        assert sorted(counts_seen) == list(range(n))
        assert len(seen) - n == -(-n // world) * world - n < world


@settings(max_examples=40, deadline=None)
@given(counts=layouts, workers=st.integers(1, 3), after=st.integers(1, 4), shuffle=st.booleans(),
       fraction=st.floats(0, 1), seed=st.integers(0, 3))
def test_resume_from_any_stopping_point_onto_any_worker_count_is_exact(counts, workers, after, shuffle, fraction, seed):
    ds = dataset(counts)
    opts = dict(shuffle=shuffle, seed=seed, shuffle_buffer_bytes=64)
    first, states = [], []
    for w in range(workers):
        loader = Loader(ds, **opts)
        part = len(run(Loader(ds, **opts), w, workers)[0])
        got, state = run(loader, w, workers, take=int(part * fraction))
        if int(part * fraction) == 0:
            got, state = [], make_state(Loader(ds, **opts), w, workers)
        first += got
        states.append(state)
    resumed = Loader(ds, **opts)
    plan = merge_states(resumed, states)
    rest = []
    for w in range(after):
        loader = Loader(ds, **opts)
        load_state(loader, global_state(loader, plan))
        rest += run(loader, w, after)[0]
    assert sorted(first + rest) == list(range(sum(counts)))


def test_same_worker_count_resume_continues_the_same_order():
    ds = dataset((7, 5, 9))
    whole = run(Loader(ds, shuffle=True, seed=4, shuffle_buffer_bytes=100), 1, 2)[0]
    loader = Loader(ds, shuffle=True, seed=4, shuffle_buffer_bytes=100)
    head, state = run(loader, 1, 2, take=4)
    again = Loader(ds, shuffle=True, seed=4, shuffle_buffer_bytes=100)
    load_state(again, state)
    assert head + run(again, 1, 2)[0] == whole


def test_a_worker_state_loaded_into_another_worker_is_refused():
    ds = dataset((7, 5, 9))
    _, state = run(Loader(ds), 0, 2, take=3)
    loader = Loader(ds)
    load_state(loader, state)
    with pytest.raises(LoaderStateError, match="load the whole"):
        next(loader.iter_worker(1, 2))


def test_set_epoch_reorders_deterministically_and_drops_a_resume_of_another_epoch():
    ds = dataset((7, 5, 9))

    def order(epoch: int) -> list[int]:
        loader = Loader(ds, shuffle=True, seed=1)
        loader.set_epoch(epoch)
        return run(loader, 0, 1)[0]

    assert order(3) == order(3) != order(4)
    loader = Loader(ds, shuffle=True, seed=1)
    _, state = run(loader, 0, 1, take=5)
    load_state(loader, state)
    loader.set_epoch(1)
    assert sorted(run(loader, 0, 1)[0]) == list(range(21))  # a whole new epoch, not the rest of epoch 0


def test_a_state_of_other_shards_is_refused():
    _, state = run(Loader(dataset((7, 5, 9))), 0, 1, take=2)
    with pytest.raises(LoaderStateError, match="belongs to dataset"):
        load_state(Loader(dataset((7, 5, 8))), state)
    with pytest.raises(LoaderStateError, match="format"):
        load_state(Loader(dataset((7, 5, 9))), {"epoch": 0})


def test_shuffle_buffer_is_bounded_in_bytes():
    ds = Dataset[Num](dataset((30, 30)).list_shards(),
                      metadata={"stats": {"shard_samples": [30, 30], "shard_bytes": [30 * 1000, 30 * 1000]}})
    small = Loader(ds, shuffle=True, shuffle_buffer_bytes=3000)  # about 3 samples of ~1000 bytes
    order = small.output_order(small.full_plan(1), 0)
    assert order is not None
    # positions are read in order; with 3 samples held, the one read q-th is yielded no earlier than (q-3)-th
    displacement = [order.index(q) - q for q in range(60)]
    assert min(displacement) >= -3
    big = Loader(ds, shuffle=True, shuffle_buffer_bytes=60_000)
    assert max(abs(d) for d in (big.output_order(big.full_plan(1), 0).index(q) - q for q in range(60))) > 3
    np.testing.assert_array_equal(sorted(order), np.arange(60))
