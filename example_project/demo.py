"""`make demo`: write a small real dataset through ``local.Index`` and read it back.

Everything lives under ``.demo/`` in the repository (never the user's home): the
SQLite index at ``.demo/index.db`` and the shards under ``.demo/data``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from atdata_dagster import local
from atdata_dagster.samples import packable

ROOT = Path(__file__).resolve().parent.parent / ".demo"


@packable
class Digit:
    """One 8x8 grey-scale handwritten digit from scikit-learn's bundled dataset."""

    image: NDArray[np.uint8]
    label: int


def digits() -> list[Digit]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return [Digit(image=img.astype(np.uint8), label=int(y)) for img, y in zip(data.images, data.target)]


def main() -> int:
    ROOT.mkdir(exist_ok=True)
    index = local.Index(path=str(ROOT / "index.db"), data_store=local.LocalDiskStore(ROOT / "data"), atmosphere=None)
    samples = digits()
    entry = index.write(samples, name="digits/raw", maxcount=500)
    ds = index.dataset("digits/raw")
    n = sum(1 for _ in ds.ordered())
    stats = entry.metadata["stats"]
    print(f"{entry.name}: {stats['num_samples']} samples, {stats['num_shards']} shards, "
          f"{stats['total_bytes']:,} bytes, CID {entry.cid}")
    print(f"read back {n} samples as {ds.sample_type.__name__}; schema {entry.schema_ref}")
    print(f"verify: {sorted(set(index.verify(entry).values()))}")
    return 0 if n == len(samples) else 1


if __name__ == "__main__":
    sys.exit(main())
