"""edge_rules.arrays.distinct is np.unique for the integer arrays the rules pass it, and does not
load numpy.ma (the reason it exists: docs/performance.md, Memory)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge_rules.arrays import distinct


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_distinct_equals_np_unique(dtype: type) -> None:
    rng = np.random.default_rng(7)
    for size in (0, 1, 2, 5, 100):
        for shape in ((size,), (size, 3)):
            values = rng.integers(0, 4, size=shape).astype(dtype)
            got, want = distinct(values), np.unique(values)
            assert got.dtype == want.dtype
            assert got.tolist() == want.tolist()


def test_distinct_does_not_import_numpy_ma() -> None:
    probe = ("import sys, numpy as np\nfrom edge_rules.arrays import distinct\n"
             "distinct(np.array([3, 1, 3, 2]))\nprint('numpy.ma' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
