"""Module-level sample types shared by the sample tests (module level so they pickle)."""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from numpy.typing import NDArray

from atdata_dagster.samples import PackableSample, packable


@packable
class Tiny:
    label: str
    v: NDArray


@packable
class AllPrimitives:
    """Every primitive field type."""

    s: str
    i: int
    f: float
    b: bool
    raw: bytes


@packable
class Img:
    """Image sample."""

    image: NDArray[np.uint8]
    label: str
    xs: list[float]
    score: Optional[float] = None


@packable
class Annotated:
    """One field per supported ndarray annotation form."""

    bare: NDArray
    typed: NDArray[np.float32]
    plain: np.ndarray
    opt_typing: Optional[NDArray] = None
    opt_pep604: NDArray | None = None
    many: list[NDArray] = field(default_factory=list)


@packable
class Lists:
    ints: list[int]
    nested: list[list[int]]
    strs: list[str]
    arrays: list[NDArray[np.int16]]
    maybe: Optional[list[str]] = None


@dataclass
class Subclassed(PackableSample):
    """A direct PackableSample dataclass subclass."""

    name: str
    value: int = 0


@packable
class Emb:
    key: str
    label: int
    embedding: NDArray[np.float32]
