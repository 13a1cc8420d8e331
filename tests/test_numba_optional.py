"""numba is optional at run time (no wheels for 32-bit ARM): without it every kernel still runs,
as its NumPy twin or as plain Python, after one warning (edge_rules/_jit.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs where ``import numba`` fails the way it does on a box without the package.
PROBE = r"""
import json, logging, sys
sys.modules["numba"] = None  # `import numba` now raises ImportError, as when it is not installed
logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
import numpy as np
from edge_rules import _jit
from edge_rules.groups import group_totals_nb, group_totals_np
from edge_rules.reconcile import _model_pct_nb

values = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, 5.0]])
quality = np.zeros((2, 3), dtype=np.uint8)
args = (values, quality, np.array([0, 1]), np.array([0, 0]), np.array([1.0, -1.0]), 1)
total, present, actual = group_totals_nb(*args)          # a kernel with a twin
twin_total, _, _ = group_totals_np(*args)
pct = _model_pct_nb(1.5, 0.25, 2.0, True)                # a kernel without one: plain Python
print(json.dumps({"available": _jit.numba_available(), "loaded": "numba" in sys.modules
                  and sys.modules["numba"] is not None,
                  "total": np.nan_to_num(total, nan=-1).tolist(),
                  "twin": np.nan_to_num(twin_total, nan=-1).tolist(),
                  "pct": pct}))
"""


def test_kernels_run_without_numba_after_one_warning() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["available"] is False and out["loaded"] is False
    assert out["total"] == out["twin"] == [[-2.0, 2.0, -5.0]]
    warnings = [ln for ln in result.stderr.splitlines() if "numba is not available" in ln]
    assert len(warnings) == 1, result.stderr
    assert "NumPy twins" in warnings[0]
    assert out["pct"] == (1.5 + 0.25 * 4.0) / 2.0 * 100.0
