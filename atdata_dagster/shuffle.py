"""Shuffling payload streams: a global permutation over mapped shards, or a byte-bounded buffer.

Both work on undecoded payloads (decoding happens after the shuffle, batched when a
batch is asked for) and draw their random numbers in blocks with a numpy
``Generator`` seeded from ``(seed, epoch)``, so an epoch's order is reproducible and
differs between epochs.

* :func:`global_order` - every shard is a local, mapped file: a uniform permutation of
  all samples (a true sample-level shuffle). Memory: two int64 and one int32 per
  sample; pages of the maps are handed back to the kernel every
  :data:`~atdata_dagster.shards.fastread.RELEASE_EVERY` bytes read, so resident
  memory does not grow with the dataset.
* :class:`ShuffleBuffer` - streamed shards: the shard order is permuted, then samples
  pass through a buffer bounded by ``max_bytes`` of payload (and ``max_items``).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .shards.fastread import FAULT_AROUND, RELEASE_EVERY, ShardIndex

__all__ = ["DEFAULT_BUFFER_BYTES", "GLOBAL_SHUFFLE_MAX", "ShuffleBuffer", "epoch_rng", "global_batches", "global_order", "shuffle_quality"]

#: Default bound of the shuffle buffer, in payload bytes.
DEFAULT_BUFFER_BYTES = 32 << 20
#: Most samples shuffled globally (the permutation costs ~40 bytes per sample); larger
#: datasets use the shard order and the buffer.
GLOBAL_SHUFFLE_MAX = 16_000_000
_BLOCK = 4096  # random numbers drawn per numpy call


def epoch_rng(seed: int | None, epoch: int = 0) -> np.random.Generator:
    """The generator for one epoch: fixed by ``(seed, epoch)``; fresh entropy when ``seed`` is None."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF, spawn_key=(int(epoch),)))


def _permutation(indexes: Sequence[ShardIndex], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard position, sample position, cumulative bytes mapped in) of every sample, uniformly permuted."""
    counts = np.array([len(ix) for ix in indexes], np.int64)
    total = int(counts.sum())
    shard_of = np.repeat(np.arange(len(indexes), dtype=np.int32), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    perm = rng.permutation(total)
    shard_ids = shard_of[perm]
    local = perm - starts[shard_ids]
    # reading a sample maps at least the fault-around window (a page is not enough: the
    # kernel maps its neighbours too); pages are handed back every RELEASE_EVERY bytes
    touched = np.cumsum(np.maximum(np.concatenate([ix.sizes for ix in indexes])[perm], FAULT_AROUND)) if total else perm
    return shard_ids, local, touched


def global_order(indexes: Sequence[ShardIndex], rng: np.random.Generator) -> Iterator[tuple[int, int]]:
    """``(shard position, sample position)`` of every sample of ``indexes``, uniformly permuted."""
    shard_ids, local, touched = _permutation(indexes, rng)
    total = len(shard_ids)
    if not total:
        return
    marks = np.flatnonzero(np.diff(touched // RELEASE_EVERY)) + 1
    done = 0
    for mark in [*marks.tolist(), total]:
        yield from zip(shard_ids[done:mark].tolist(), local[done:mark].tolist())
        done = mark
        for ix in indexes:
            ix.release()


def global_batches(
    indexes: Sequence[ShardIndex], rng: np.random.Generator, batch_size: int,
) -> Iterator[tuple[list[int], list[int]]]:
    """:func:`global_order` in batches: ``(shard positions, sample positions)`` lists per batch.

    The same permutation as :func:`global_order` for the same ``rng`` state, drawn once
    with numpy and cut into batches, so no per-sample tuple or generator step is made.
    Pages are handed back whenever a batch crosses a ``RELEASE_EVERY`` mark.
    """
    shard_ids, local, touched = _permutation(indexes, rng)
    released = 0
    for start in range(0, len(shard_ids), batch_size):
        stop = min(start + batch_size, len(shard_ids))
        yield shard_ids[start:stop].tolist(), local[start:stop].tolist()
        level = int(touched[stop - 1]) // RELEASE_EVERY
        if level > released:
            released = level
            for ix in indexes:
                ix.release()


class ShuffleBuffer:
    """Shuffle a stream of payloads through a buffer of at most ``max_bytes`` (and ``max_items``).

    Items are ``(payload, tag)`` pairs; ``tag`` travels with the payload (the caller uses
    it to name the sample in errors). Random slots are drawn in blocks of floats.
    """

    def __init__(self, rng: np.random.Generator, max_bytes: int = DEFAULT_BUFFER_BYTES, max_items: int = 1 << 20):
        if max_bytes < 1 or max_items < 1:
            raise ValueError(f"shuffle buffer bounds must be positive, got {max_bytes} bytes, {max_items} items")
        self.rng = rng
        self.max_bytes = max_bytes
        self.max_items = max_items

    def _draws(self) -> Iterator[float]:
        random = self.rng.random
        while True:
            yield from random(_BLOCK).tolist()

    def shuffle(self, items: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        payloads: list[Any] = []
        tags: list[Any] = []
        held = 0
        max_bytes, max_items = self.max_bytes, self.max_items
        draw = self._draws().__next__
        for payload, tag in items:
            size = len(payload)
            # make room first: a random held item goes out (the newcomer waits its turn)
            while payloads and (held + size > max_bytes or len(payloads) >= max_items):
                j = int(draw() * len(payloads))
                out_p, out_t = payloads[j], tags[j]
                last_p, last_t = payloads.pop(), tags.pop()
                if j < len(payloads):
                    payloads[j], tags[j] = last_p, last_t
                held -= len(out_p)
                yield out_p, out_t
            payloads.append(payload)
            tags.append(tag)
            held += size
        for j in self.rng.permutation(len(payloads)).tolist():
            yield payloads[j], tags[j]


def shuffle_quality(order: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """(mean displacement as a fraction of N, adjacent-pair rate) of an output order.

    ``order[k]`` is the input position of the k-th sample out. A uniform shuffle gives
    a displacement near 1/3 and an adjacent-pair rate near 2/N; no shuffle gives 0 and 1.
    """
    pos = np.asarray(order, np.int64)
    n = len(pos)
    if n < 2:
        return 0.0, 0.0
    displacement = float(np.abs(pos - np.arange(n)).mean() / n)
    adjacent = float((np.abs(np.diff(pos)) == 1).mean())
    return displacement, adjacent
