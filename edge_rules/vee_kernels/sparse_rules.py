"""VEE rules on sparse reads off the interval grid: voltage band, clock drift, tariff sums,
interval sums and CT/PT ratio changes.

These reads (voltage, clock offset, tariff registers, ratios) are flat arrays with a ``rows``
array naming each value's meter, not ``(meters, intervals)`` windows, which is what sets them
apart from :mod:`edge_rules.vee_kernels.energy_rules`. Each numba kernel sits beside its
NumPy twin.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit
from edge_rules.vee_kernels.grid import (
    F64,
    I64,
    U8,
    _f64,
    _rows,
    _same,
)

# ==========================================================================================
# Sparse reads: voltage band, clock drift, tariff sums, ratio changes
# ==========================================================================================


@njit
def band_flags_nb(values: F64, rows: I64, low: F64, high: F64) -> U8:
    n = values.shape[0]
    out = np.zeros(n, dtype=np.uint8)
    for j in range(n):
        v = values[j]
        r = rows[j]
        if v < low[r] or v > high[r]:
            out[j] = 1
    return out


def band_flags_np(values: F64, rows: I64, low: F64, high: F64) -> U8:
    return ((values < low[rows]) | (values > high[rows])).astype(np.uint8)



def band_flags(values: F64, rows: I64, low: F64, high: F64) -> U8:
    """1 where a value is below ``low`` or above ``high`` of its meter (voltage: 220 V −10 %
    … +7 %, GB/T 12325 for single-phase supply). NaN is not judged."""
    v = _f64("values", values, 1)
    lo = _f64("low", low, 1)
    hi = _f64("high", high, 1)
    _same("high", hi, lo.shape)
    return band_flags_nb(v, _rows(rows, v.size, lo.size), lo, hi)


@njit
def drift_levels_nb(offset_s: F64, rows: I64, warn_s: F64, resync_s: F64, fail_s: F64) -> U8:
    n = offset_s.shape[0]
    out = np.zeros(n, dtype=np.uint8)
    for j in range(n):
        a = abs(offset_s[j])
        r = rows[j]
        if a > fail_s[r]:
            out[j] = 3
        elif a > resync_s[r]:
            out[j] = 2
        elif a > warn_s[r]:
            out[j] = 1
    return out


def drift_levels_np(offset_s: F64, rows: I64, warn_s: F64, resync_s: F64, fail_s: F64) -> U8:
    a = np.abs(offset_s)
    level = np.where(a > fail_s[rows], 3, np.where(a > resync_s[rows], 2,
                                                   np.where(a > warn_s[rows], 1, 0)))
    return level.astype(np.uint8)


def drift_levels(offset_s: F64, rows: I64, warn_s: F64, resync_s: F64, fail_s: F64) -> U8:
    """Clock drift level of each meter-clock reading (meter time − gateway time, seconds):
    0 fine, 1 above ``warn_s``, 2 above ``resync_s`` (send a time sync), 3 above ``fail_s``
    (tariff registers and the meter's own profile can no longer be trusted)."""
    o = _f64("offset_s", offset_s, 1)
    params = [_f64(n, v, 1) for n, v in (("warn_s", warn_s), ("resync_s", resync_s),
                                         ("fail_s", fail_s))]
    for p in params:
        _same("drift parameter", p, params[0].shape)
    return drift_levels_nb(o, _rows(rows, o.size, params[0].size), *params)


@njit
def tariff_sum_mismatch_nb(total: F64, tariffs: F64, lsb: F64, modulus: F64) -> U8:
    n, t = tariffs.shape
    out = np.zeros(n, dtype=np.uint8)
    for j in range(n):
        if total[j] != total[j]:
            continue
        acc = 0.0
        present = 0
        for q in range(t):
            x = tariffs[j, q]
            if x == x:
                acc += x
                present += 1
        if present == 0:
            continue
        tolerance = lsb[j] * present + 1e-9 * max(1.0, abs(total[j]))
        diff = total[j] - acc
        mod = modulus[j]
        if mod == mod and mod > 0.0:  # registers wrap one by one: compare modulo 10^digits
            diff = diff - np.floor(diff / mod + 0.5) * mod
        if abs(diff) > tolerance:
            out[j] = 1
    return out


def tariff_sum_mismatch_np(total: F64, tariffs: F64, lsb: F64, modulus: F64) -> U8:
    n, t = tariffs.shape
    present = ~np.isnan(tariffs)
    acc = np.zeros(n)
    for q in range(t):  # left-to-right, like the loop: the comparison below is exact
        acc += np.where(present[:, q], tariffs[:, q], 0.0)
    count = present.sum(axis=1)
    tolerance = lsb * count + 1e-9 * np.maximum(1.0, np.abs(total))
    diff = total - acc
    wraps = ~np.isnan(modulus) & (modulus > 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(wraps, diff - np.floor(diff / modulus + 0.5) * modulus, diff)
    bad: NDArray[np.bool_] = ~np.isnan(total) & (count > 0) & (np.abs(diff) > tolerance)
    return bad.astype(np.uint8)


def tariff_sum_mismatch(total: F64, tariffs: F64, lsb: F64, modulus: F64) -> U8:
    """1 where the tariff registers read at the same instant do not add up to the total within
    one LSB per tariff register (each register truncates its own fraction, so ``n`` registers can
    fall short of the total by almost ``n`` LSB). Each register wraps at ``modulus`` on its own,
    so the difference is taken modulo it (NaN: no wrap). Absent tariffs are NaN; a row without
    any tariff, or without a total, is not judged."""
    tot = _f64("total", total, 1)
    tar = _f64("tariffs", tariffs, 2)
    ls = _f64("lsb", lsb, 1)
    mod = _f64("modulus", modulus, 1)
    if tar.shape[0] != tot.size:
        raise ValueError(f"tariffs has {tar.shape[0]} rows, total has {tot.size}")
    _same("lsb", ls, tot.shape)
    _same("modulus", mod, tot.shape)
    return tariff_sum_mismatch_nb(tot, tar, ls, mod)


@njit
def interval_sum_row(r: int, energy: F64, start: float, end: float, modulus: float,
                     tol: float) -> int:
    """1 when meter-day row ``r`` does not add up (see :func:`interval_sum_mismatch`)."""
    if start != start or end != end:
        return 0
    acc = 0.0
    for k in range(energy.shape[1]):
        x = energy[r, k]
        if x != x:
            return 0
        acc += x
    proven = end - start
    if proven < 0.0 and modulus == modulus:
        proven += modulus
    return 1 if abs(acc - proven) > tol else 0


@njit
def interval_sum_mismatch_nb(energy: F64, start: F64, end: F64, modulus: F64, tol: F64) -> U8:
    rows = energy.shape[0]
    out = np.zeros(rows, dtype=np.uint8)
    for r in range(rows):
        out[r] = interval_sum_row(r, energy, start[r], end[r], modulus[r], tol[r])
    return out


def interval_sum_mismatch_np(energy: F64, start: F64, end: F64, modulus: F64, tol: F64) -> U8:
    rows, s = energy.shape
    acc = np.zeros(rows)
    for k in range(s):  # left-to-right, as in the loop, so the comparison is exact
        acc += energy[:, k]
    complete = ~np.isnan(energy).any(axis=1) if s else np.ones(rows, dtype=bool)
    proven = end - start
    proven = np.where((proven < 0.0) & ~np.isnan(modulus), proven + modulus, proven)
    bad = complete & ~np.isnan(start) & ~np.isnan(end) & (np.abs(acc - proven) > tol)
    return bad.astype(np.uint8)


def interval_sum_mismatch(energy: F64, start: F64, end: F64, modulus: F64, tol: F64) -> U8:
    """1 where a meter-day's interval energies (actual and estimated) do not add up to the
    register delta between the day's bracketing register reads (``end`` − ``start``, wrapped
    at ``modulus``) within ``tol``. Only complete days with both reads are judged: the check
    proves that estimates were scaled to what the register shows."""
    e = _f64("energy", energy, 2)
    arrays = [_f64(n, v, 1) for n, v in (("start", start), ("end", end), ("modulus", modulus),
                                         ("tol", tol))]
    for a in arrays:
        _same("interval_sum input", a, (e.shape[0],))
    return interval_sum_mismatch_nb(e, *arrays)


@njit
def ratio_changes_nb(values: F64, rows: I64, last: F64) -> tuple[U8, F64]:
    n = values.shape[0]
    out = np.zeros(n, dtype=np.uint8)
    state = last.copy()
    for j in range(n):
        v = values[j]
        if v != v:
            continue
        r = rows[j]
        if state[r] == state[r] and v != state[r]:
            out[j] = 1
        state[r] = v
    return out, state


def ratio_changes_np(values: F64, rows: I64, last: F64) -> tuple[U8, F64]:
    n = values.shape[0]
    out = np.zeros(n, dtype=np.uint8)
    state = last.copy()
    valid = np.flatnonzero(~np.isnan(values))
    if valid.size == 0:
        return out, state
    order = valid[np.argsort(rows[valid], kind="stable")]
    r = rows[order]
    v = values[order]
    previous = np.empty_like(v)
    previous[1:] = v[:-1]
    starts = np.ones(r.size, dtype=bool)
    starts[1:] = r[1:] != r[:-1]
    previous[starts] = last[r[starts]]
    changed = ~np.isnan(previous) & (v != previous)
    out[order] = changed.astype(np.uint8)
    ends = np.ones(r.size, dtype=bool)
    ends[:-1] = r[1:] != r[:-1]
    state[r[ends]] = v[ends]
    return out, state


def ratio_changes(values: F64, rows: I64, last: F64) -> tuple[U8, F64]:
    """1 where a reported CT or PT ratio differs from the meter's previous report (or the
    configured ratio given as ``last``); returns the flags and the ratios to carry forward.
    Values are taken in the given (time) order per meter."""
    v = _f64("values", values, 1)
    st = _f64("last", last, 1)
    return ratio_changes_nb(v, _rows(rows, v.size, st.size), st)


