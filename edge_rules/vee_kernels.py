"""Validation kernels: every VEE rule as a function of arrays (docs/dev/kernels.md).

Layout. A *window* is ``(meters, intervals)`` of register reads on the 15-minute grid
(:mod:`edge_rules.calendar`): ``reads[i, k]`` is the register of meter ``i`` read at the end of
interval ``k``, NaN when there is no read. Windows start at local midnight and are whole days,
so day-level rules see rows of 96 after a reshape. Per-meter parameters are 1-D arrays; sparse
reads off the grid (voltage, clock offset, tariff registers, CT/PT ratios) are flat arrays with
a ``rows`` array naming each value's meter.

Output. Rules set bits in a ``uint32`` mask per read (the ``BIT_*`` constants below); which of
them make a read fail, which are published as reasons and which are only counted is decided by
the caller through per-meter severity masks (:func:`grade`), so the kernels know nothing of
configuration.

Every kernel ``foo`` comes as ``foo_nb`` (numba), ``foo_np`` (the NumPy twin, the readable
reference) and ``foo`` (the checked entry point). The register scan is sequential by nature — a
read is compared with the last *accepted* read, which depends on every earlier decision — so its
NumPy twin walks the intervals and vectorises across meters, exactly as the daemon batches a
poll cycle.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit

__all__ = [
    "BIT_CLOCK_DRIFT",
    "BIT_CLOCK_FAIL",
    "BIT_DECREASE",
    "BIT_DUPLICATE",
    "BIT_HIGH",
    "BIT_IMPOSSIBLE",
    "BIT_INTERVAL_SUM",
    "BIT_LOW",
    "BIT_MISSING",
    "BIT_MULTIPLIER",
    "BIT_PROLONGED",
    "BIT_REBASED",
    "BIT_REVERSE",
    "BIT_ROLLOVER",
    "BIT_SPIKE",
    "BIT_STOPPED",
    "BIT_TARIFF_SUM",
    "BIT_VOLTAGE",
    "NO_SCALE_BITS",
    "ScanResult",
    "band_flags",
    "bin_slots",
    "drift_levels",
    "grade",
    "history_band",
    "interval_flags",
    "interval_sum_mismatch",
    "multiplier_suspect",
    "ratio_changes",
    "register_scan",
    "spike_flags",
    "tariff_sum_mismatch",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
I8 = NDArray[np.int8]
U8 = NDArray[np.uint8]
U32 = NDArray[np.uint32]

# ------------------------------------------------------------------------------------------
# Rule bits. The numbers are internal (never published); codes.py holds the published codes.
# ------------------------------------------------------------------------------------------
BIT_MISSING: Final = 1 << 0  # no read for the interval
BIT_DUPLICATE: Final = 1 << 1  # two reads for one interval with different values
BIT_DECREASE: Final = 1 << 2  # register below the last accepted read, not a wrap
BIT_ROLLOVER: Final = 1 << 3  # register wrapped at 10^digits (normal; counted only)
BIT_IMPOSSIBLE: Final = 1 << 4  # more energy than the contract power allows
BIT_SPIKE: Final = 1 << 5  # interval far above the third-highest of its day
BIT_HIGH: Final = 1 << 6  # day far above its history
BIT_LOW: Final = 1 << 7  # day far below its history
BIT_STOPPED: Final = 1 << 8  # register did not move while power says load
BIT_TARIFF_SUM: Final = 1 << 9  # tariff registers do not add up to the total
BIT_INTERVAL_SUM: Final = 1 << 10  # the day's intervals do not add up to the register delta
BIT_CLOCK_DRIFT: Final = 1 << 11  # meter clock off by more than the warning limit
BIT_CLOCK_FAIL: Final = 1 << 12  # meter clock off by more than the failure limit
BIT_MULTIPLIER: Final = 1 << 13  # CT/PT ratio changed (reported or suspected)
BIT_REVERSE: Final = 1 << 14  # reverse energy on a meter that should not generate
BIT_VOLTAGE: Final = 1 << 15  # voltage outside the supply band
BIT_PROLONGED: Final = 1 << 16  # n-th consecutive non-actual interval: field read needed
BIT_REBASED: Final = 1 << 17  # register accepted at a new level after repeated rejections

#: A gap touching these cannot be scaled to its bracketing register reads: the register itself
#: did not count (stopped) or counted energy that is being replaced (spike), or the closing read
#: is a new baseline rather than a continuation (rebased).
NO_SCALE_BITS: Final = BIT_STOPPED | BIT_SPIKE | BIT_REBASED

_NAN: Final = float("nan")


def _f64(name: str, value: object, ndim: int) -> F64:
    array = np.ascontiguousarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def _i64(name: str, value: object, ndim: int) -> I64:
    array = np.ascontiguousarray(value, dtype=np.int64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def _same(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")


@njit
def nan_grid(rows: int, cols: int) -> F64:
    """A NaN-filled 2-D array. numba's ``np.full`` fills element by element through an n-d
    index, 15× slower than ``empty`` + slice assignment — more than some whole rules cost."""
    out = np.empty((rows, cols))
    out[:] = np.nan
    return out


# ==========================================================================================
# Register scan: decrease vs rollover, impossible delta, re-baseline, interval energy
# ==========================================================================================


class ScanResult(NamedTuple):
    """Outcome of :func:`register_scan`.

    ``flags`` rule bits per read; ``delta`` energy since the previous accepted read (NaN when the
    read is missing, rejected or the first one); ``span`` how many intervals that delta covers
    (1 normally, more after a gap); the ``state_*`` arrays are the scan state after the window,
    with slots relative to the window start (the caller subtracts the window length to carry
    them into the next window).
    """

    flags: U32
    delta: F64
    span: I32
    state_value: F64
    state_slot: I64
    cand_value: F64
    cand_slot: I64
    cand_count: I64


@njit
def scan_row(
    i: int, reads: F64, pv: float, ps: int, cv: float, cs: int, cn: int, mod: float, lim: float,
    margin: float, rebase: int, flags: U32, delta: F64, span: I32,
) -> tuple[float, int, float, int, int]:
    """Scan meter ``i`` of a window (the loop body of :func:`register_scan_nb`, shared with the
    fused rule set); writes ``flags``/``delta``/``span`` row ``i``, returns the new state.

    Nearly every row is a register counting up within its limit; that case is checked and
    written in two branch-free passes before falling back to the general walk."""
    s = reads.shape[1]
    if s and pv == pv:
        ok = True
        prev = pv
        for k in range(s):
            v = reads[i, k]
            d = v - prev
            elapsed = k - ps if k == 0 else 1
            ok &= (v == v) & (d >= 0.0) & ~(lim * elapsed < d)
            prev = v
        if ok:
            prev = pv
            for k in range(s):
                v = reads[i, k]
                flags[i, k] = 0
                delta[i, k] = v - prev
                span[i, k] = k - ps if k == 0 else 1
                prev = v
            return prev, s - 1, cv, cs, 0
    wrap_hi = (1.0 - margin) * mod
    wrap_lo = margin * mod
    for k in range(reads.shape[1]):
        v = reads[i, k]
        delta[i, k] = np.nan
        span[i, k] = 0
        if v != v:
            flags[i, k] = BIT_MISSING
            continue
        if pv != pv:  # first read ever: nothing to compare with, it becomes the baseline
            flags[i, k] = 0
            pv = v
            ps = k
            cn = 0
            continue
        d = v - pv
        f = 0
        if d < 0.0:
            if pv >= wrap_hi and v <= wrap_lo:
                d = d + mod
                f |= BIT_ROLLOVER
            else:
                f |= BIT_DECREASE
        if (f & BIT_DECREASE) == 0 and lim * (k - ps) < d:
            f |= BIT_IMPOSSIBLE
        if f & (BIT_DECREASE | BIT_IMPOSSIBLE):
            # A rejected read may be the first of a new level (meter exchanged, register
            # preset): consecutive rejected reads that agree with each other become the new
            # baseline after ``rebase`` of them.
            if cn > 0 and v >= cv and not (lim * (k - cs) < v - cv):
                cn += 1
            else:
                cn = 1
            cv = v
            cs = k
            if rebase > 0 and cn >= rebase:
                f |= BIT_REBASED
                pv = v
                ps = k
                cn = 0
            flags[i, k] = f
            continue
        flags[i, k] = f
        delta[i, k] = d
        span[i, k] = k - ps
        pv = v
        ps = k
        cn = 0
    return pv, ps, cv, cs, cn


@njit
def register_scan_nb(
    reads: F64,
    last_value: F64,
    last_slot: I64,
    cand_value: F64,
    cand_slot: I64,
    cand_count: I64,
    modulus: F64,
    limit: F64,
    wrap_margin: F64,
    rebase_reads: I64,
) -> tuple[U32, F64, I32, F64, I64, F64, I64, I64]:
    m, s = reads.shape
    flags = np.empty((m, s), dtype=np.uint32)
    delta = np.empty((m, s))
    span = np.empty((m, s), dtype=np.int32)
    out_value = np.empty(m)
    out_slot = np.empty(m, dtype=np.int64)
    out_cv = np.empty(m)
    out_cs = np.empty(m, dtype=np.int64)
    out_cn = np.empty(m, dtype=np.int64)
    for i in range(m):
        out_value[i], out_slot[i], out_cv[i], out_cs[i], out_cn[i] = scan_row(
            i, reads, last_value[i], last_slot[i], cand_value[i], cand_slot[i], cand_count[i],
            modulus[i], limit[i], wrap_margin[i], rebase_reads[i], flags, delta, span)
    return flags, delta, span, out_value, out_slot, out_cv, out_cs, out_cn


def register_scan_np(
    reads: F64,
    last_value: F64,
    last_slot: I64,
    cand_value: F64,
    cand_slot: I64,
    cand_count: I64,
    modulus: F64,
    limit: F64,
    wrap_margin: F64,
    rebase_reads: I64,
) -> tuple[U32, F64, I32, F64, I64, F64, I64, I64]:
    m, s = reads.shape
    flags = np.zeros((m, s), dtype=np.uint32)
    delta = np.full((m, s), np.nan)
    span = np.zeros((m, s), dtype=np.int32)
    pv = last_value.copy()
    ps = last_slot.copy()
    cv = cand_value.copy()
    cs = cand_slot.copy()
    cn = cand_count.copy()
    wrap_hi = (1.0 - wrap_margin) * modulus
    wrap_lo = wrap_margin * modulus
    for k in range(s):
        v = reads[:, k]
        present = ~np.isnan(v)
        first = present & np.isnan(pv)
        compare = present & ~first
        d = v - pv
        below = compare & (d < 0.0)
        roll = below & (pv >= wrap_hi) & (v <= wrap_lo)
        d = np.where(roll, d + modulus, d)
        dec = below & ~roll
        imp = compare & ~dec & (limit * (k - ps) < d)
        bad = dec | imp
        chained = (cn > 0) & (v >= cv) & ~(limit * (k - cs) < v - cv)
        cn = np.where(bad, np.where(chained, cn + 1, 1), cn)
        cv = np.where(bad, v, cv)
        cs = np.where(bad, k, cs)
        rebased = bad & (rebase_reads > 0) & (cn >= rebase_reads)
        good = compare & ~bad
        flags[:, k] = (
            np.where(present, 0, BIT_MISSING)
            | np.where(roll, BIT_ROLLOVER, 0)
            | np.where(dec, BIT_DECREASE, 0)
            | np.where(imp, BIT_IMPOSSIBLE, 0)
            | np.where(rebased, BIT_REBASED, 0)
        ).astype(np.uint32)
        delta[good, k] = d[good]
        span[good, k] = (k - ps[good]).astype(np.int32)
        accept = first | good | rebased
        pv = np.where(accept, v, pv)
        ps = np.where(accept, k, ps)
        cn = np.where(accept, 0, cn)
    return flags, delta, span, pv, ps, cv, cs, cn


def register_scan(
    reads: F64,
    last_value: F64,
    last_slot: I64,
    modulus: F64,
    limit: F64,
    *,
    cand_value: F64 | None = None,
    cand_slot: I64 | None = None,
    cand_count: I64 | None = None,
    wrap_margin: F64 | float = 0.1,
    rebase_reads: I64 | int = 4,
) -> ScanResult:
    """Walk each meter's register reads and classify them.

    ``last_value``/``last_slot`` the last accepted read before the window (NaN: none; slot ≤ −1,
    relative to the window start); ``modulus`` 10^digits of each register (NaN: unknown, so
    every decrease is one); ``limit`` the most energy one interval can hold (contract kW ×
    interval hours × 1.2; NaN: no limit). A drop from the top ``wrap_margin`` of the range to its
    bottom ``wrap_margin`` is a rollover; any other drop is a decrease. Rejected reads (decrease,
    impossible) do not become the baseline, unless ``rebase_reads`` consecutive rejected reads
    agree with each other (a meter exchange or a preset register). The ``cand_*`` arrays carry a
    started re-baseline across windows.
    """
    r = _f64("reads", reads, 2)
    m = r.shape[0]
    lv = _f64("last_value", last_value, 1)
    ls = _i64("last_slot", last_slot, 1)
    mod = _f64("modulus", modulus, 1)
    lim = _f64("limit", limit, 1)
    cv = np.full(m, np.nan) if cand_value is None else _f64("cand_value", cand_value, 1)
    cs = np.zeros(m, np.int64) if cand_slot is None else _i64("cand_slot", cand_slot, 1)
    cn = np.zeros(m, np.int64) if cand_count is None else _i64("cand_count", cand_count, 1)
    wm = np.ascontiguousarray(np.broadcast_to(np.asarray(wrap_margin, dtype=np.float64), (m,)))
    rb = np.ascontiguousarray(np.broadcast_to(np.asarray(rebase_reads, dtype=np.int64), (m,)))
    for name, array in (("last_value", lv), ("last_slot", ls), ("modulus", mod), ("limit", lim),
                        ("cand_value", cv), ("cand_slot", cs), ("cand_count", cn),
                        ("wrap_margin", wm), ("rebase_reads", rb)):
        _same(name, array, (m,))
    return ScanResult(*register_scan_nb(r, lv, ls, cv, cs, cn, mod, lim, wm, rb))


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


def _rows(rows: object, n: int, meters: int) -> I64:
    r = _i64("rows", rows, 1)
    _same("rows", r, (n,))
    if r.size and (r.min() < 0 or r.max() >= meters):
        raise ValueError(f"rows must index the {meters} meters (0..{meters - 1})")
    return r


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


# ==========================================================================================
# Ingest: reads → interval grid, duplicates with different values
# ==========================================================================================


@njit
def bin_slots_nb(rows: I64, slots: I64, values: F64, meters: int, intervals: int) -> tuple[F64, U8]:
    grid = nan_grid(meters, intervals)
    conflict = np.zeros((meters, intervals), dtype=np.uint8)
    for j in range(rows.shape[0]):
        v = values[j]
        if v != v:
            continue
        r = rows[j]
        k = slots[j]
        held = grid[r, k]
        if held != held:
            grid[r, k] = v
        elif held != v:
            conflict[r, k] = 1
    return grid, conflict


def bin_slots_np(rows: I64, slots: I64, values: F64, meters: int, intervals: int
                 ) -> tuple[F64, U8]:
    grid = np.full((meters, intervals), np.nan)
    conflict = np.zeros((meters, intervals), dtype=np.uint8)
    valid = ~np.isnan(values)
    r = rows[valid]
    k = slots[valid]
    v = values[valid]
    flat = r * intervals + k
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    first = np.ones(flat_sorted.size, dtype=bool)
    first[1:] = flat_sorted[1:] != flat_sorted[:-1]
    first_value = v[order][first]
    grid.ravel()[flat_sorted[first]] = first_value
    group = np.cumsum(first) - 1
    differs = v[order] != first_value[group]
    bad = np.zeros(first_value.size, dtype=bool)
    np.logical_or.at(bad, group, differs)
    conflict.ravel()[flat_sorted[first][bad]] = 1
    return grid, conflict


def bin_slots(rows: I64, slots: I64, values: F64, meters: int, intervals: int) -> tuple[F64, U8]:
    """Place reads on the grid: the first read of an interval wins; ``conflict`` marks intervals
    that received another read with a different value (a duplicate that disagrees — which of the
    two is right cannot be known). NaN values are skipped."""
    v = _f64("values", values, 1)
    r = _rows(rows, v.size, meters)
    k = _i64("slots", slots, 1)
    _same("slots", k, v.shape)
    if k.size and (k.min() < 0 or k.max() >= intervals):
        raise ValueError(f"slots must be within 0..{intervals - 1}")
    return bin_slots_nb(r, k, v, int(meters), int(intervals))


# ==========================================================================================
# Grading: rule bits + severities → quality, published bits, prolonged estimation
# ==========================================================================================


@njit
def grade_row(
    i: int, flags: U32, estimated: U8, fail_mask: int, warn_mask: int, run: int,
    prolonged_after: int, due: int, quality: U8, published: U32,
) -> int:
    """Quality and published bits of meter ``i``; returns the run of estimates carried on."""
    s = flags.shape[1]
    shown = fail_mask | warn_mask
    bad = BIT_MISSING | fail_mask
    clean = True
    for k in range(min(due, s)):
        clean &= (flags[i, k] & bad) == 0
    if clean:  # every read actual: the common case, without the run bookkeeping
        for k in range(s):
            due_k = k < due
            quality[i, k] = 0 if due_k else 4
            published[i, k] = (flags[i, k] & shown) if due_k else 0
        return 0 if min(due, s) > 0 else run
    for k in range(s):
        if k >= due:
            quality[i, k] = 4
            published[i, k] = 0
            continue
        f = flags[i, k]
        missing = (f & BIT_MISSING) != 0
        failed = (f & fail_mask) != 0
        if missing or failed:
            q = (1 if missing else 2) if estimated[i, k] else 4
            run += 1
            if prolonged_after > 0 and run >= prolonged_after:
                f |= BIT_PROLONGED
        else:
            q = 0
            run = 0
        quality[i, k] = q
        published[i, k] = f & shown
    return run


@njit
def grade_nb(
    flags: U32, estimated: U8, fail_mask: U32, warn_mask: U32, run_in: I64, prolonged_after: I64,
    due: int,
) -> tuple[U8, U32, I64]:
    m, s = flags.shape
    quality = np.empty((m, s), dtype=np.uint8)
    published = np.empty((m, s), dtype=np.uint32)
    run_out = np.empty(m, dtype=np.int64)
    for i in range(m):
        run_out[i] = grade_row(i, flags, estimated, fail_mask[i], warn_mask[i], run_in[i],
                               prolonged_after[i], due, quality, published)
    return quality, published, run_out


def grade_np(
    flags: U32, estimated: U8, fail_mask: U32, warn_mask: U32, run_in: I64, prolonged_after: I64,
    due: int,
) -> tuple[U8, U32, I64]:
    m, s = flags.shape
    due = min(max(due, 0), s)
    quality = np.full((m, s), 4, dtype=np.uint8)
    published = np.zeros((m, s), dtype=np.uint32)
    f = flags[:, :due]
    missing = (f & BIT_MISSING) != 0
    failed = (f & fail_mask[:, None]) != 0
    bad = missing | failed
    est = estimated[:, :due] != 0
    q = np.where(bad, np.where(est, np.where(missing, 1, 2), 4), 0).astype(np.uint8)
    # Consecutive non-actual intervals, continuing the run carried in from the last window.
    idx = np.arange(1, due + 1)
    last_good = np.maximum.accumulate(np.where(~bad, idx[None, :], 0), axis=1) if due else \
        np.zeros((m, 0), dtype=np.int64)
    run = idx[None, :] - last_good
    run = np.where(last_good == 0, run + run_in[:, None], run)
    run = np.where(bad, run, 0)
    long_run = (prolonged_after[:, None] > 0) & (run >= prolonged_after[:, None]) & bad
    f = f | np.where(long_run, BIT_PROLONGED, 0).astype(np.uint32)
    quality[:, :due] = q
    published[:, :due] = f & (fail_mask | warn_mask)[:, None]
    run_out = run[:, -1].astype(np.int64) if due else run_in.copy()
    return quality, published, run_out


def grade(
    flags: U32, estimated: U8, fail_mask: U32, warn_mask: U32, run_in: I64, prolonged_after: I64,
    due: int | None = None,
) -> tuple[U8, U32, I64]:
    """Quality of every interval read from its rule bits and the meter's severities.

    A read with no ``fail`` bit is actual (``0``/A) and carries its ``warn``/``fail`` bits as
    published reasons; a missing read becomes ``E`` (1) and a failed one ``S`` (2) when the
    estimation cascade gave it a value (``estimated``), otherwise ``N`` (4). ``info`` bits are
    never published. The n-th consecutive non-actual interval (``prolonged_after``, 0 = off;
    ``run_in`` carries the count across windows) adds :data:`BIT_PROLONGED`: ask for a field
    read. Intervals from ``due`` on are not due yet (a day in progress): quality N, no bits.
    Returns quality, published bits and the run to carry forward.
    """
    fl = np.ascontiguousarray(flags, dtype=np.uint32)
    if fl.ndim != 2:
        raise ValueError(f"flags must be 2-D, got shape {fl.shape}")
    m, s = fl.shape
    est = np.ascontiguousarray(estimated, dtype=np.uint8)
    _same("estimated", est, fl.shape)
    fm = np.ascontiguousarray(fail_mask, dtype=np.uint32)
    wm = np.ascontiguousarray(warn_mask, dtype=np.uint32)
    ri = _i64("run_in", run_in, 1)
    pa = _i64("prolonged_after", prolonged_after, 1)
    for name, array in (("fail_mask", fm), ("warn_mask", wm), ("run_in", ri),
                        ("prolonged_after", pa)):
        _same(name, array, (m,))
    return grade_nb(fl, est, fm, wm, ri, pa, s if due is None else int(due))
