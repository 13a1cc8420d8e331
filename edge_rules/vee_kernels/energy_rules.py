"""VEE rules on interval energy and meter-days, after the register scan.

Per interval: meter stopped and reverse energy. Per meter-day (rows are meter-days): spike
(highest vs third-highest interval), high / low against history, and a CT/PT multiplier
suspected from the data. Each rule's row function is shared with the fused kernels of
:mod:`edge_rules.vee_ruleset`; each numba kernel sits beside its NumPy twin.
"""

from __future__ import annotations

import numpy as np

from edge_rules._jit import njit
from edge_rules.vee_kernels.bits import (
    BIT_REVERSE,
    BIT_SPIKE,
    BIT_STOPPED,
)
from edge_rules.vee_kernels.grid import (
    F64,
    I8,
    I32,
    U8,
    U32,
    _f64,
    _same,
)

# ==========================================================================================
# Per-interval rules: meter stopped, reverse energy
# ==========================================================================================


@njit
def interval_row(
    i: int, delta: F64, power: F64, power_before: F64, export_delta: F64, generating: int,
    thr: float, reverse_kwh: float, reverse_kw: float, out: U32,
) -> None:
    """Meter stopped / reverse energy bits of meter ``i``, OR-ed into ``out``."""
    watch = generating == 0
    for k in range(delta.shape[1]):  # branch-free: comparisons as 0/1
        # Power above the threshold at both ends of the interval, yet no energy counted.
        stopped = (delta[i, k] == 0.0) & (power[i, k] > thr) & (power_before[i, k] > thr)
        reverse = watch & ((export_delta[i, k] > reverse_kwh) | (power[i, k] < -reverse_kw))
        out[i, k] |= stopped * BIT_STOPPED | reverse * BIT_REVERSE


@njit
def interval_flags_nb(
    delta: F64,
    power: F64,
    power_before: F64,
    export_delta: F64,
    generating: U8,
    stopped_kw: F64,
    reverse_kwh: F64,
    reverse_kw: F64,
) -> U32:
    m, s = delta.shape
    out = np.zeros((m, s), dtype=np.uint32)
    for i in range(m):
        interval_row(i, delta, power, power_before, export_delta, generating[i], stopped_kw[i],
                     reverse_kwh[i], reverse_kw[i], out)
    return out


def interval_flags_np(
    delta: F64,
    power: F64,
    power_before: F64,
    export_delta: F64,
    generating: U8,
    stopped_kw: F64,
    reverse_kwh: F64,
    reverse_kw: F64,
) -> U32:
    thr = stopped_kw[:, None]
    stopped = (delta == 0.0) & (power > thr) & (power_before > thr)
    reverse = (generating[:, None] == 0) & (
        (export_delta > reverse_kwh[:, None]) | (power < -reverse_kw[:, None])
    )
    return (np.where(stopped, BIT_STOPPED, 0) | np.where(reverse, BIT_REVERSE, 0)).astype(np.uint32)


def interval_flags(
    delta: F64,
    power: F64,
    power_before: F64,
    export_delta: F64,
    generating: U8,
    stopped_kw: F64,
    reverse_kwh: F64,
    reverse_kw: F64,
) -> U32:
    """Meter stopped (no energy while power at both ends of the interval is above
    ``stopped_kw``) and reverse energy on a non-generating meter (export register advanced by
    more than ``reverse_kwh``, or power below ``-reverse_kw``). NaN never triggers a rule."""
    d = _f64("delta", delta, 2)
    shape = d.shape
    p = _f64("power", power, 2)
    pb = _f64("power_before", power_before, 2)
    e = _f64("export_delta", export_delta, 2)
    for name, array in (("power", p), ("power_before", pb), ("export_delta", e)):
        _same(name, array, shape)
    g = np.ascontiguousarray(generating, dtype=np.uint8)
    params = [_f64(n, v, 1) for n, v in (("stopped_kw", stopped_kw), ("reverse_kwh", reverse_kwh),
                                         ("reverse_kw", reverse_kw))]
    _same("generating", g, (shape[0],))
    for name, param in zip(("stopped_kw", "reverse_kwh", "reverse_kw"), params, strict=True):
        _same(name, param, (shape[0],))
    return interval_flags_nb(d, p, pb, e, g, *params)


# ==========================================================================================
# Spike: highest vs third-highest interval of a day (rows are meter-days)
# ==========================================================================================


@njit
def spike_row(r: int, delta: F64, span: I32, factor: float, min_kwh: float, out: U32) -> None:
    """Spike bits of meter-day row ``r``, OR-ed into ``out``.

    The exact rule needs the third-highest interval, a serial top-3 walk that costs more than
    every other rule together. Most days cannot have a spike, and that is cheap to prove: a spike
    needs ``max ≥ factor × third``, i.e. at most two intervals above ``max / factor``. Two
    branch-free passes (max, then a count) rule a day out; only days that pass take the walk.
    """
    s = delta.shape[1]
    h1 = -np.inf
    n = 0
    for k in range(s):  # branch-free: comparisons as 0/1 so the loop vectorises
        d = delta[r, k]
        usable = (span[r, k] == 1) & (d == d)
        n += usable
        h1 = max(h1, d if usable else -np.inf)
    if n < 3:
        return
    if factor > 0.0:
        # a hair above max / factor, so rounding can only let more days through, never fewer
        threshold = h1 / factor * (1.0 + 1e-9) if h1 > 0.0 else h1 / factor * (1.0 - 1e-9)
        above = 0
        for k in range(s):
            above += (span[r, k] == 1) & (delta[r, k] > threshold)
        if above >= 3:
            return
    h1 = -np.inf
    h2 = -np.inf
    h3 = -np.inf
    for k in range(s):
        d = delta[r, k]
        if span[r, k] != 1 or d != d:
            continue
        if d > h1:
            h3 = h2
            h2 = h1
            h1 = d
        elif d > h2:
            h3 = h2
            h2 = d
        elif d > h3:
            h3 = d
    for k in range(s):
        d = delta[r, k]
        if span[r, k] == 1 and d >= factor * h3 and d - h3 >= min_kwh:
            out[r, k] |= BIT_SPIKE


@njit
def spike_flags_nb(delta: F64, span: I32, factor: F64, min_kwh: F64) -> U32:
    rows, s = delta.shape
    out = np.zeros((rows, s), dtype=np.uint32)
    for r in range(rows):
        spike_row(r, delta, span, factor[r], min_kwh[r], out)
    return out


def spike_flags_np(delta: F64, span: I32, factor: F64, min_kwh: F64) -> U32:
    rows, s = delta.shape
    usable = (span == 1) & ~np.isnan(delta)
    if s < 3:
        return np.zeros((rows, s), dtype=np.uint32)
    ranked = np.where(usable, delta, -np.inf)
    third = -np.partition(-ranked, 2, axis=1)[:, 2]
    enough = usable.sum(axis=1) >= 3
    hit = (
        usable
        & enough[:, None]
        & (delta >= factor[:, None] * third[:, None])
        & (delta - third[:, None] >= min_kwh[:, None])
    )
    return np.where(hit, BIT_SPIKE, 0).astype(np.uint32)


def spike_flags(delta: F64, span: I32, factor: F64, min_kwh: F64) -> U32:
    """Flag intervals of a day (one row per meter-day) at least ``factor`` × the day's
    third-highest interval and at least ``min_kwh`` above it. Only single-interval energies take
    part (an energy spread over a gap is not one interval); a day needs three of them. The
    third-highest is the reference because one or two genuine peaks (a kettle, an oven) must not
    hide a corrupt one, nor be flagged themselves."""
    d = _f64("delta", delta, 2)
    sp = np.ascontiguousarray(span, dtype=np.int32)
    _same("span", sp, d.shape)
    f = _f64("factor", factor, 1)
    mk = _f64("min_kwh", min_kwh, 1)
    _same("factor", f, (d.shape[0],))
    _same("min_kwh", mk, (d.shape[0],))
    return spike_flags_nb(d, sp, f, mk)


# ==========================================================================================
# High / low against history (rows are meter-days)
# ==========================================================================================


@njit
def band_one(e: float, t: float, y: float, high: float, low: float, min_kwh: float) -> int:
    """+1 high, −1 low, 0 for one meter-day (see :func:`history_band`)."""
    if e != e or t != t:
        return 0
    above = e > high * t and e - t > min_kwh
    below = e < low * t and t - e > min_kwh
    if above and (y != y or (e > high * y and e - y > min_kwh)):
        return 1
    if below and not above and (y != y or (e < low * y and y - e > min_kwh)):
        return -1
    return 0


@njit
def history_band_nb(
    energy: F64, trailing: F64, last_year: F64, high: F64, low: F64, min_kwh: F64
) -> I8:
    n = energy.shape[0]
    out = np.zeros(n, dtype=np.int8)
    for r in range(n):
        out[r] = band_one(energy[r], trailing[r], last_year[r], high[r], low[r], min_kwh[r])
    return out


def history_band_np(
    energy: F64, trailing: F64, last_year: F64, high: F64, low: F64, min_kwh: F64
) -> I8:
    no_year = np.isnan(last_year)
    hi = (energy > high * trailing) & (energy - trailing > min_kwh) & (
        no_year | ((energy > high * last_year) & (energy - last_year > min_kwh))
    )
    lo_t = (energy < low * trailing) & (trailing - energy > min_kwh)
    lo = ~((energy > high * trailing) & (energy - trailing > min_kwh)) & lo_t & (
        no_year | ((energy < low * last_year) & (last_year - energy > min_kwh))
    )
    return (hi.astype(np.int8) - lo.astype(np.int8)).astype(np.int8)


def history_band(
    energy: F64, trailing: F64, last_year: F64, high: F64, low: F64, min_kwh: F64
) -> I8:
    """+1 where a day's energy is above ``high`` × its trailing like-day mean (and above ``high``
    × the same season last year, when known), −1 where below ``low`` × both, else 0. Both
    differences must also exceed ``min_kwh`` so that tiny consumers are not flagged for noise.
    Requiring both references keeps a seasonal swing (the first cold week) from being flagged
    when last year's same season shows the same level."""
    arrays = [_f64(n, v, 1) for n, v in (("energy", energy), ("trailing", trailing),
                                         ("last_year", last_year), ("high", high), ("low", low),
                                         ("min_kwh", min_kwh))]
    for a in arrays[1:]:
        _same("history_band input", a, arrays[0].shape)
    return history_band_nb(*arrays)


# ==========================================================================================
# CT/PT multiplier suspected from the data (rows are meter-days)
# ==========================================================================================


@njit
def multiplier_row(
    r: int, day: F64, reference: F64, candidates: F64, ratio_tol: float, shape_tol: float,
    min_kwh: float, min_coverage: float,
) -> float:
    """The suspected ratio of meter-day row ``r``, or NaN (see :func:`multiplier_suspect`)."""
    s = day.shape[1]
    e = 0.0
    ref = 0.0
    n = 0
    for k in range(s):
        a = day[r, k]
        b = reference[r, k]
        if a == a and b == b:
            e += a
            ref += b
            n += 1
    if s == 0 or n < min_coverage * s or ref <= 0.0 or ref <= min_kwh or e <= 0.0:
        return np.nan
    ratio = e / ref
    best = np.nan
    for c in candidates:
        if abs(ratio / c - 1.0) <= ratio_tol:
            best = c
            break
    if best != best:
        return np.nan
    distance = 0.0
    for k in range(s):
        a = day[r, k]
        b = reference[r, k]
        if a == a and b == b:
            distance += abs(a / e - b / ref)
    return best if 0.5 * distance <= shape_tol else np.nan


@njit
def multiplier_suspect_nb(
    day: F64, reference: F64, candidates: F64, ratio_tol: F64, shape_tol: F64, min_kwh: F64,
    min_coverage: float,
) -> F64:
    rows = day.shape[0]
    out = np.empty(rows)
    for r in range(rows):
        out[r] = multiplier_row(r, day, reference, candidates, ratio_tol[r], shape_tol[r],
                                min_kwh[r], min_coverage)
    return out


def multiplier_suspect_np(
    day: F64, reference: F64, candidates: F64, ratio_tol: F64, shape_tol: F64, min_kwh: F64,
    min_coverage: float,
) -> F64:
    rows, s = day.shape
    out = np.full(rows, np.nan)
    if s == 0 or rows == 0:
        return out
    both = ~np.isnan(day) & ~np.isnan(reference)
    n = both.sum(axis=1)
    a = np.where(both, day, 0.0)
    b = np.where(both, reference, 0.0)
    e = np.zeros(rows)
    ref = np.zeros(rows)
    for k in range(s):  # same summation order as the compiled kernel: sums are compared exactly
        e += a[:, k]
        ref += b[:, k]
    ok = (n >= min_coverage * s) & (ref > 0.0) & (ref > min_kwh) & (e > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = e / ref
        best = np.full(rows, np.nan)
        for c in candidates[::-1]:  # the first matching candidate wins, as in the loop
            best = np.where(np.abs(ratio / c - 1.0) <= ratio_tol, c, best)
        distance = np.zeros(rows)
        for k in range(s):
            distance += np.where(both[:, k], np.abs(a[:, k] / e - b[:, k] / ref), 0.0)
    hit = ok & ~np.isnan(best) & (0.5 * distance <= shape_tol)
    out[hit] = best[hit]
    return out


def multiplier_suspect(
    day: F64, reference: F64, candidates: F64, ratio_tol: F64, shape_tol: F64, min_kwh: F64,
    min_coverage: float = 0.9,
) -> F64:
    """The CT/PT ratio error a meter-day suggests, or NaN.

    A wrong multiplier scales every interval by the same factor, so the day keeps its usual
    *shape* while its level jumps by a ratio between standard transformer ratios (×2, ×½, …).
    A row is suspect when its energy over the intervals known on both sides is within
    ``ratio_tol`` of one of ``candidates`` times the reference, and the normalised profiles
    differ by at most ``shape_tol`` (half the L1 distance: 0 identical, 1 disjoint). Rows where
    fewer than ``min_coverage`` of the intervals are known, or the reference is below
    ``min_kwh``, are not judged.
    """
    d = _f64("day", day, 2)
    ref = _f64("reference", reference, 2)
    _same("reference", ref, d.shape)
    c = _f64("candidates", candidates, 1)
    if np.any(c <= 0.0) or np.any(np.isnan(c)):
        raise ValueError("multiplier candidates must be positive numbers")
    rt = _f64("ratio_tol", ratio_tol, 1)
    st = _f64("shape_tol", shape_tol, 1)
    mk = _f64("min_kwh", min_kwh, 1)
    for name, param in (("ratio_tol", rt), ("shape_tol", st), ("min_kwh", mk)):
        _same(name, param, (d.shape[0],))
    return multiplier_suspect_nb(d, ref, c, rt, st, mk, float(min_coverage))


