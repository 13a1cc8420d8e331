"""``np.unique`` for the rules' integer arrays, without what ``np.unique`` imports.

NumPy 2.x's ``np.unique`` imports ``numpy.ma`` (masked arrays, 0.7 MiB of RSS and 7 ms) at its first
call; the daemon never uses masked arrays otherwise, and calls ``np.unique`` at its first VEE
evaluation (docs/performance.md, Memory). :func:`distinct` is the part the rules need: the sorted
distinct values of an integer array, the same values and dtype as ``np.unique`` returns
(tests/test_arrays.py compares them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["distinct"]


def distinct(values: NDArray[Any]) -> NDArray[Any]:
    """The sorted distinct values of ``values`` (flattened), as ``np.unique(values)`` for an
    integer or boolean array. Not for floats: NaN is never equal to itself, so each NaN would stay."""
    ordered = np.sort(values, axis=None)
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
