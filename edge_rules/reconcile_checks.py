"""Meter-against-meter checks: two summation groups compared window by window (Q/GDW 1376.1
F15 "有功总电能量差动越限") and a main meter against its check meter within the tolerance their
accuracy classes allow.

Unlike an area's line loss (:mod:`edge_rules.reconcile`), these compare two measurements of
the *same* energy, so there is no band to learn: a difference beyond the limit is a fault of a
meter, a CT or the wiring. Kernels, each with its NumPy twin:

``differential_check``
    two groups compared over 15/30/60-minute windows, with a relative or absolute limit.
``check_meter_compare``
    a main meter against its check meter, with a tolerance k·√Σc² from the accuracy classes of
    every meter and instrument transformer involved (:func:`check_tolerance_pct`).

Flags (uint8): 0 ok, 1 exceeded, 2 uncalculable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit
from edge_rules.reconcile import _f64, _same

__all__ = [
    "DIFF_EXCEEDED",
    "DIFF_OK",
    "DIFF_UNCALCULABLE",
    "check_meter_compare",
    "check_meter_compare_nb",
    "check_meter_compare_np",
    "check_tolerance_pct",
    "differential_check",
    "differential_check_nb",
    "differential_check_np",
]

F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

DIFF_OK: Final = 0
DIFF_EXCEEDED: Final = 1
DIFF_UNCALCULABLE: Final = 2


# --------------------------------------------------------------------------------------------
# Differential check between two groups (1376.1 F15)
# --------------------------------------------------------------------------------------------


@njit
def differential_check_nb(
    compared: F64, reference: F64, window: int, relative: bool, limit: float
) -> tuple[F64, F64, U8]:
    """Compare two groups' energy over consecutive windows of ``window`` intervals.

    Arrays are (pairs, intervals); only whole windows are judged. Returns per window the
    difference ``compared − reference`` (kWh), the relative deviation in % of the reference
    (NaN when the reference is 0), and a flag: exceeded when ``|deviation| > limit`` (relative
    mode, a zero reference with a non-zero compared group counts as exceeded) or
    ``|difference| > limit`` (absolute mode); uncalculable when an interval is missing.
    """
    pairs, n_t = compared.shape
    windows = n_t // window
    difference = np.empty((pairs, windows), dtype=np.float64)
    deviation = np.empty((pairs, windows), dtype=np.float64)
    flag = np.empty((pairs, windows), dtype=np.uint8)
    for p in range(pairs):
        for w in range(windows):
            c = 0.0
            r = 0.0
            for i in range(w * window, (w + 1) * window):
                c += compared[p, i]
                r += reference[p, i]
            diff = c - r
            difference[p, w] = diff
            deviation[p, w] = diff / r * 100.0 if r != 0.0 else np.nan
            if diff != diff:
                flag[p, w] = DIFF_UNCALCULABLE
            elif relative:
                if r == 0.0:
                    flag[p, w] = DIFF_EXCEEDED if c != 0.0 else DIFF_OK
                else:
                    flag[p, w] = DIFF_EXCEEDED if abs(deviation[p, w]) > limit else DIFF_OK
            else:
                flag[p, w] = DIFF_EXCEEDED if abs(diff) > limit else DIFF_OK
    return difference, deviation, flag


def differential_check_np(
    compared: F64, reference: F64, window: int, relative: bool, limit: float
) -> tuple[F64, F64, U8]:
    """NumPy twin of :func:`differential_check_nb` (window sums by ``cumsum`` to add in the
    kernel's order)."""
    pairs, n_t = compared.shape
    windows = n_t // window
    if windows == 0 or pairs == 0:
        empty = np.empty((pairs, windows))
        return empty, empty.copy(), np.empty((pairs, windows), dtype=np.uint8)
    shape = (pairs, windows, window)
    c = np.cumsum(compared[:, : windows * window].reshape(shape), axis=2)[:, :, -1]
    r = np.cumsum(reference[:, : windows * window].reshape(shape), axis=2)[:, :, -1]
    diff = c - r
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        deviation = np.where(r != 0.0, diff / r * 100.0, np.nan)
        if relative:
            exceeded = np.where(r == 0.0, c != 0.0, np.abs(deviation) > limit)
        else:
            exceeded = np.abs(diff) > limit
    flag = np.where(np.isnan(diff), DIFF_UNCALCULABLE, np.where(exceeded, DIFF_EXCEEDED, DIFF_OK))
    return np.ascontiguousarray(diff), np.ascontiguousarray(deviation), flag.astype(np.uint8)


def differential_check(
    compared: F64,
    reference: F64,
    *,
    interval_minutes: int,
    window_minutes: int,
    limit: float,
    relative: bool = True,
) -> tuple[F64, F64, U8]:
    """Validated entry point: ``window_minutes`` is 15, 30 or 60 (the F15 time spans) and a
    whole number of ``interval_minutes``; ``limit`` is % (relative) or kWh (absolute)."""
    compared = _f64(compared, "compared", 2)
    reference = _same(reference, compared, "reference", np.float64)
    if window_minutes not in (15, 30, 60):
        raise ValueError(
            f"window_minutes must be 15, 30 or 60 (Q/GDW 1376.1 F15), got {window_minutes}"
        )
    if interval_minutes <= 0 or window_minutes % interval_minutes:
        raise ValueError(
            f"a {window_minutes}-minute window is not a whole number of {interval_minutes}-minute intervals"
        )
    if not (limit >= 0 and math.isfinite(limit)):
        raise ValueError(f"limit must be a finite number >= 0, got {limit}")
    return differential_check_nb(
        compared, reference, window_minutes // interval_minutes, bool(relative), float(limit)
    )


# --------------------------------------------------------------------------------------------
# Check-meter comparison
# --------------------------------------------------------------------------------------------


def check_tolerance_pct(classes_pct: Sequence[float], k: float = 1.0) -> float:
    """Tolerance between a main and a check metering point: k·√Σc² over the accuracy classes
    (in %) of every meter, CT and PT on both sides — independent errors add in quadrature.

    Example: 0.5S meters with 0.2S CTs on both sides → √(0.5² + 0.2² + 0.5² + 0.2²) ≈ 0.76 %.
    """
    if not classes_pct:
        raise ValueError("give the accuracy class of at least one meter or transformer")
    for c in classes_pct:
        if not (c > 0 and math.isfinite(c)):
            raise ValueError(f"accuracy classes are positive percentages, got {c}")
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"k must be a positive number, got {k}")
    return k * math.sqrt(sum(c * c for c in classes_pct))


@njit
def check_meter_compare_nb(
    main: F64, check: F64, tolerance_pct: F64, min_energy: float
) -> tuple[F64, U8]:
    """Deviation of each main meter from its check meter, % of the check meter, per interval
    (pairs, intervals); flagged when ``|deviation| > tolerance_pct[pair]``. Intervals where the
    check meter saw less than ``min_energy`` (kWh) are uncalculable: class accuracy is only
    specified above a few percent of rated current."""
    pairs, n_t = main.shape
    deviation = np.empty((pairs, n_t), dtype=np.float64)
    flag = np.empty((pairs, n_t), dtype=np.uint8)
    for p in range(pairs):
        for t in range(n_t):
            m = main[p, t]
            c = check[p, t]
            if m == m and c == c and c >= min_energy and c > 0.0:
                deviation[p, t] = (m - c) / c * 100.0
                flag[p, t] = DIFF_EXCEEDED if abs(deviation[p, t]) > tolerance_pct[p] else DIFF_OK
            else:
                deviation[p, t] = np.nan
                flag[p, t] = DIFF_UNCALCULABLE
    return deviation, flag


def check_meter_compare_np(
    main: F64, check: F64, tolerance_pct: F64, min_energy: float
) -> tuple[F64, U8]:
    """NumPy twin of :func:`check_meter_compare_nb`."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        usable = ~np.isnan(main) & (check >= min_energy) & (check > 0.0)
        deviation = np.where(usable, (main - check) / check * 100.0, np.nan)
        exceeded = np.abs(deviation) > tolerance_pct[:, None]
    flag = np.where(usable, np.where(exceeded, DIFF_EXCEEDED, DIFF_OK), DIFF_UNCALCULABLE)
    return deviation, flag.astype(np.uint8)


def check_meter_compare(
    main: F64, check: F64, tolerance_pct: F64, min_energy: float = 0.0
) -> tuple[F64, U8]:
    """Validated entry point of :func:`check_meter_compare_nb`."""
    main = _f64(main, "main", 2)
    check = _same(check, main, "check", np.float64)
    tolerance_pct = _f64(tolerance_pct, "tolerance_pct", 1)
    if tolerance_pct.shape[0] != main.shape[0]:
        raise ValueError(f"tolerance_pct needs one value per pair ({main.shape[0]})")
    return check_meter_compare_nb(main, check, tolerance_pct, float(min_energy))
