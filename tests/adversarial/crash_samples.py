"""Samples of the SIGKILL crash suite, shared by the killed writer and the test that re-runs it.

The same ``(seed, n, size)`` always gives the same samples, so the parent can re-run
exactly the write a child was killed in, and compare what it reads back.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Iterator

from atdata_dagster import packable


@packable
class CrashSample:
    """One sample: its position and an incompressible payload."""

    idx: int
    payload: bytes


@dataclass(frozen=True)
class Workload:
    """One write: ``n`` samples of ``size`` random bytes into shards of ``maxcount`` samples."""

    name: str
    seed: int
    n: int
    size: int
    maxcount: int
    manifest: bool = False

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.maxcount)

    def to_dict(self) -> dict:
        return asdict(self)


def make_samples(seed: int, n: int, size: int) -> Iterator[CrashSample]:
    """``n`` deterministic samples of ``size`` random bytes each."""
    rng = random.Random(seed)
    for i in range(n):
        yield CrashSample(idx=i, payload=rng.randbytes(size))
