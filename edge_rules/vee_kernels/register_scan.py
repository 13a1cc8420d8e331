"""The register scan: decrease vs rollover, impossible delta, re-baseline, interval energy.

Sequential by nature — a read is compared with the last *accepted* read, which depends on every
earlier decision — so its NumPy twin walks the intervals and vectorises across meters, exactly
as the daemon batches a poll cycle. :func:`scan_row` is the loop body the fused kernels of
:mod:`edge_rules.vee_ruleset` call too, which is why it is a kernel of its own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge_rules._jit import njit
from edge_rules.vee_kernels.bits import (
    BIT_DECREASE,
    BIT_IMPOSSIBLE,
    BIT_MISSING,
    BIT_REBASED,
    BIT_ROLLOVER,
    BIT_SPIKE_READ,
)
from edge_rules.vee_kernels.grid import (
    F64,
    I32,
    I64,
    U32,
    _f64,
    _i64,
    _same,
)

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
def spike_before(reads: F64, i: int, k: int, v: float, pv: float, ps: int, qv: float, qs: int,
                 lim: float) -> bool:
    """Whether a read ``v`` (slot ``k``) below the last accepted read ``pv`` (slot ``ps``) shows
    that ``pv`` was the bad read — a spike above both neighbours' trend — rather than ``v`` a
    decrease. Decided with the reads on both sides: ``pv`` must lie above the register line from
    the read before it (``qv`` at ``qs``) to ``v``, and ``v`` must continue that earlier trend
    (not below ``qv``, within the interval limit). When the read after ``v`` is known, it must
    not reach back up to ``pv`` (that makes ``v`` a dip), unless ``pv`` stands further above its
    neighbours' line than ``v`` lies below its own. Without a read after ``v`` (the daemon's
    newest read) the spike is the provisional verdict; the next read confirms or reverses it."""
    if qv != qv or v < qv or lim * (k - qs) < v - qv:
        return False
    for j in range(k + 1, reads.shape[1]):
        v2 = reads[i, j]
        if v2 == v2:
            if v2 < pv:
                return True
            excess = pv - (qv + (v - qv) * (ps - qs) / (k - qs))
            deficit = pv + (v2 - pv) * (k - ps) / (j - ps) - v
            return bool(excess > deficit)
    return True


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
    back = (1.0 - 2.0 * margin) * mod  # a step forward this large went back across the wrap
    if s and pv == pv:
        ok = True
        prev = pv
        for k in range(s):
            v = reads[i, k]
            d = v - prev
            elapsed = k - ps if k == 0 else 1
            ok &= (v == v) & (d >= 0.0) & ~(lim * elapsed < d)
            prev = v
        # every step is at most the whole rise: below ``back`` none went back across the wrap
        ok &= not (prev - pv > back)
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
    qv = np.nan  # the accepted read before ``pv`` (NaN: none known)
    qs = 0
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
            qv = np.nan
            cn = 0
            continue
        d = v - pv
        f = 0
        if d < 0.0:
            if pv >= wrap_hi and v <= wrap_lo:
                d = d + mod
                f |= BIT_ROLLOVER
            elif ps >= 0 and spike_before(reads, i, k, v, pv, ps, qv, qs, lim):
                # the previous accepted read was the bad one: reject it, compare with the
                # read before it (a read flagged bad is never a reference)
                flags[i, ps] = BIT_SPIKE_READ
                delta[i, ps] = np.nan
                span[i, ps] = 0
                pv = qv
                ps = qs
                qv = np.nan
                d = v - pv
            else:
                f |= BIT_DECREASE
        elif d > back:  # from the bottom of the range to its top: a decrease across the wrap
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
                qv = np.nan
                cn = 0
            flags[i, k] = f
            continue
        flags[i, k] = f
        delta[i, k] = d
        span[i, k] = k - ps
        qv = pv
        qs = ps
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
    back = (1.0 - 2.0 * wrap_margin) * modulus
    qv = np.full(m, np.nan)  # the accepted read before ``pv``
    qs = np.zeros(m, dtype=np.int64)
    rows = np.arange(m)
    # the next present read after each slot (spike_before looks one read ahead)
    idx = np.where(~np.isnan(reads), np.arange(s)[None, :], s)
    following = np.full((m, s), s, dtype=np.int64)
    if s > 1:
        following[:, :-1] = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1][:, 1:]
    padded = np.concatenate([reads, np.full((m, 1), np.nan)], axis=1)
    for k in range(s):
        v = reads[:, k]
        present = ~np.isnan(v)
        first = present & np.isnan(pv)
        compare = present & ~first
        d = v - pv
        below = compare & (d < 0.0)
        roll = below & (pv >= wrap_hi) & (v <= wrap_lo)
        # spike_before, vectorised: is the previous accepted read the bad one?
        j = following[:, k]
        v2 = padded[rows, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            excess = pv - (qv + (v - qv) * (ps - qs) / (k - qs))
            deficit = pv + (v2 - pv) * (k - ps) / (j - ps) - v
        spike = (below & ~roll & (ps >= 0) & ~np.isnan(qv) & (v >= qv)
                 & ~(limit * (k - qs) < v - qv)
                 & (np.isnan(v2) | (v2 < pv) | (excess > deficit)))
        hit = np.flatnonzero(spike)
        flags[hit, ps[hit]] = BIT_SPIKE_READ
        delta[hit, ps[hit]] = np.nan
        span[hit, ps[hit]] = 0
        pv = np.where(spike, qv, pv)
        ps = np.where(spike, qs, ps)
        qv = np.where(spike, np.nan, qv)
        d = np.where(spike, v - pv, np.where(roll, d + modulus, d))
        dec = (below & ~roll & ~spike) | (compare & ~below & (d > back))
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
        qv = np.where(good, pv, np.where(first | rebased, np.nan, qv))
        qs = np.where(good, ps, qs)
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
    bottom ``wrap_margin`` is a rollover; any other drop is a decrease, and so is a step forward
    of more than ``1 − 2 × wrap_margin`` of the range (back across the wrap). A drop whose next
    reads continue the trend from before the previous read makes that previous read the bad one
    (:func:`spike_before`). Rejected reads (decrease,
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


