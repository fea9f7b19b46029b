"""Sample types and helpers shared by the Dagster tests (importable by child processes)."""

import dagster as dg
import numpy as np
from numpy.typing import NDArray

from atdata_dagster.samples.packable import packable


@packable
class Row:
    """A small sample: a key, a label and a float32 vector."""

    key: str
    label: int
    vec: NDArray[np.float32]


def rows(n: int, start: int = 0, dim: int = 4) -> "list[Row]":
    return [Row(key=f"r{i}", label=i, vec=np.full(dim, i, np.float32)) for i in range(start, start + n)]


def row_stream(n: int, start: int = 0, dim: int = 4):
    """A generator of rows (never a list)."""
    for i in range(start, start + n):
        yield Row(key=f"r{i}", label=i, vec=np.full(dim, i, np.float32))


def materialization(result: dg.ExecuteInProcessResult, key: str, partition: str | None = None):
    """The AssetMaterialization of ``key`` (and partition) in a run result."""
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey.from_coercible(key) and mat.partition == partition:
            return mat
    raise AssertionError(f"no materialization of {key} / {partition} in the run")


def md(mat, key: str):
    """A metadata value's plain value."""
    return mat.metadata[key].value
