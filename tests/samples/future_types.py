"""Sample types whose annotations are strings (PEP 563), as in user code."""

from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import NDArray

from atdata_dagster.samples import packable


@packable
class FutureSample:
    image: NDArray[np.uint8]
    maybe: Optional[NDArray] = None
    union: NDArray | None = None
    many: list[NDArray] | None = None
    label: str = ""
    count: int = 0
