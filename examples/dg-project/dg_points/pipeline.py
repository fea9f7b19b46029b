"""The Python the YAML points at: a sample type and the functions that produce datasets."""

import numpy as np
from numpy.typing import NDArray

from atdata_dagster import packable


@packable
class Point:
    """A numbered 3-d point."""

    idx: int
    vec: NDArray[np.float32]


def make_points():
    """A source dataset: yielded samples are streamed into shards, never held in memory."""
    for i in range(100):
        yield Point(idx=i, vec=np.full(3, i, np.float32))


def scale(points, context):
    """A derived dataset: ``points`` is a lazy Dataset[Point] over the exact upstream entry."""
    context.log.info("scaling %s", points.cid)
    return [Point(idx=p.idx, vec=p.vec * 2) for p in points.ordered()]
