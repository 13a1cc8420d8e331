"""The whole VEE rule set over one window: one fused kernel and its NumPy twin.

Per meter row, :func:`rule_set_nb` screens disagreeing duplicates, scans the register, adds the
interval rules (stopped, reverse) and the spike rule per day, decides which reads anchor the
register, fills the gaps through the estimation cascade, applies the day rules (history band,
multiplier, interval sum) and grades every read. Each step is the row helper of its own kernel
(:mod:`edge_rules.vee_kernels`, :mod:`edge_rules.estimation`), so the rules exist once; fusing
them keeps a meter's row in cache from the first rule to the last and removes the whole-array
temporaries that the composition needs — which is what makes the rule set fast enough to run on
every poll cycle (bench/bench_vee.py).

:func:`rule_set_np` is the twin: the same steps composed from the NumPy twins, readable and the
reference the tests hold the fused kernel to. The only freedom is the order of additions inside
the estimation cascade's range sums (see tests/test_vee_kernels.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_rules import estimation as est
from edge_rules import vee_kernels as vk
from edge_rules._jit import njit
from edge_rules.calendar import INTERVALS_PER_DAY
from edge_rules.vee_rules import RuleArrays

__all__ = [
    "DAY_COVERAGE",
    "MULTIPLIER_CANDIDATES",
    "ChainInputs",
    "ChainOutputs",
    "rule_chain",
    "rule_set_nb",
    "rule_set_np",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
U8 = NDArray[np.uint8]
U32 = NDArray[np.uint32]
Bool = NDArray[np.bool_]

S_DAY: Final = INTERVALS_PER_DAY
#: Ratios between standard CT primaries (…, 50, 75, 100, 150, 200, …/5 A) that a wrong
#: multiplier produces most often. 4/3 and 3/4 (150 ↔ 200) and 1.5 and 2/3 (100 ↔ 150) are left
#: out: a 25–50 % change in level is within ordinary weather and week-to-week variation of one
#: meter (bench/vee_labelled.py flagged ordinary days at 1.5×), so the data cannot prove them.
MULTIPLIER_CANDIDATES: Final = np.array([0.25, 1 / 3, 0.5, 2.0, 3.0, 4.0])
#: A day's energy is judged against history only when this share of its intervals is actual.
DAY_COVERAGE: Final = 0.9

_REJECTED: Final = vk.BIT_DECREASE | vk.BIT_IMPOSSIBLE | vk.BIT_SPIKE_READ
_NOT_MISSING: Final = ~vk.BIT_MISSING & 0xFFFFFFFF
_NOT_REJECTED: Final = ~_REJECTED & 0xFFFFFFFF


@dataclass(slots=True)
class ChainInputs:
    """Everything the rule set needs for one window, already on the grid (rows = meters).

    ``reads`` register per interval, ``conflict`` disagreeing duplicates, ``power`` and
    ``power_before`` kW at each end of every interval, ``export_delta`` export energy per
    interval; the scan state before the window (``start_*``, ``cand_*``, slots relative to the
    window) and the last *published* value when it was an estimate (``soft_*``);
    ``start_energy`` the interval energy before the window; ``run_in`` estimates in a row so
    far; ``params`` the meters' rule parameters; ``check_rows`` each meter's check meter as a row
    of this window (−1 none); estimation sources ``like``/``like_count``/``previous_year``/
    ``calculated`` per interval; day references ``trailing``/``last_year`` ``(rows, days)`` (and
    ``trailing_margin``, how far a day must stand from ``trailing`` to be judged: the meter's own
    robust spread, NaN for the rule's fixed ``min_kwh`` alone) and
    the like-day ``reference_profile`` per interval; ``linear_max`` longest linear gap; ``due``
    intervals due.
    """

    reads: F64
    conflict: U8
    power: F64
    power_before: F64
    export_delta: F64
    start_value: F64
    start_slot: I64
    cand_value: F64
    cand_slot: I64
    cand_count: I64
    soft_value: F64
    soft_slot: I64
    start_energy: F64
    run_in: I64
    params: RuleArrays
    check_rows: I64
    like: F64
    like_count: I64
    previous_year: F64
    calculated: F64
    trailing: F64
    last_year: F64
    reference_profile: F64
    linear_max: int
    due: int
    trailing_margin: F64 | None = None


@dataclass(slots=True)
class ChainOutputs:
    """What the rule set found: ``flags`` every rule bit, ``accepted`` reads the register scan
    accepted, ``actual_energy`` single-interval energies of usable reads, ``scan`` and ``fill``
    the register scan and estimation results, ``quality``/``published``/``run_out`` the grading,
    ``day_energy`` (rows, days) and ``value`` the register value to publish per interval."""

    flags: U32
    accepted: Bool
    actual_energy: F64
    scan: vk.ScanResult
    fill: est.FillResult
    quality: U8
    published: U32
    run_out: I64
    day_energy: F64
    value: F64


# ==========================================================================================
# The fused kernel
# ==========================================================================================


@njit
def rule_set_nb(
    reads: F64, conflict: U8, power: F64, power_before: F64, export_delta: F64,
    start_value: F64, start_slot: I64, cand_value: F64, cand_slot: I64, cand_count: I64,
    soft_value: F64, soft_slot: I64, start_energy: F64, run_in: I64,
    fail_mask: U32, warn_mask: U32, modulus: F64, limit: F64, wrap_margin: F64,
    rebase_reads: I64, generating: U8, stopped_kw: F64, reverse_kwh: F64, reverse_kw: F64,
    spike_factor: F64, spike_min_kwh: F64, high: F64, low: F64, history_min_kwh: F64,
    ratio_tolerance: F64, shape_tolerance: F64, multiplier_min_kwh: F64,
    interval_sum_tol: F64, prolonged_after: I64, check_rows: I64, like: F64, like_count: I64,
    previous_year: F64, calculated: F64, trailing: F64, last_year: F64, reference: F64,
    candidates: F64, linear_max: int, due: int, trailing_margin: F64,
) -> tuple[U32, U8, F64, U32, F64, I32, F64, I64, F64, I64, I64, F64, F64, U8, U8, U8, U32,
           I64, F64, F64]:
    m, s = reads.shape
    days = s // S_DAY
    due = min(max(due, 0), s)
    # a copy without the duplicates that failed, only when there are any
    screened = reads
    for i in range(m):
        if (fail_mask[i] & vk.BIT_DUPLICATE) != 0 and conflict[i].any():
            screened = reads.copy()
            break
    scan_flags = np.empty((m, s), dtype=np.uint32)
    delta = np.empty((m, s))
    span = np.empty((m, s), dtype=np.int32)
    state_value = np.empty(m)
    state_slot = np.empty(m, dtype=np.int64)
    state_cv = np.empty(m)
    state_cs = np.empty(m, dtype=np.int64)
    state_cn = np.empty(m, dtype=np.int64)
    flags = np.empty((m, s), dtype=np.uint32)
    accepted = np.zeros((m, s), dtype=np.uint8)
    anchors = np.empty((m, s))
    actual = np.empty((m, s))
    no_scale = np.empty((m, s), dtype=np.uint8)
    delta_days = delta.reshape(m * days, S_DAY)
    span_days = span.reshape(m * days, S_DAY)
    flag_days = flags.reshape(m * days, S_DAY)
    # Hot paths are written out here and the row helpers called only for the rows that need
    # them: a call to a helper that numba does not inline updates the reference count of every
    # array it receives, which costs more than a clean row's whole work.
    # -- phase 1, per meter: everything that needs only the meter's own reads
    for i in range(m):
        dup_fail = (fail_mask[i] & vk.BIT_DUPLICATE) != 0
        if dup_fail and screened is not reads:
            for k in range(s):
                if conflict[i, k] != 0:
                    screened[i, k] = np.nan
        pv = start_value[i]
        ps = start_slot[i]
        lim = limit[i]
        simple = s > 0 and pv == pv  # a register counting up within its limit (scan_row)
        if simple:
            prev = pv
            for k in range(s):
                v = screened[i, k]
                d = v - prev
                simple &= (v == v) & (d >= 0.0) & ~(lim * (k - ps if k == 0 else 1) < d)
                prev = v
            # no step can be back across the wrap when the whole rise is less than one would be
            simple &= not (prev - pv > (1.0 - 2.0 * wrap_margin[i]) * modulus[i])
        if simple:
            prev = pv
            for k in range(s):
                v = screened[i, k]
                scan_flags[i, k] = 0
                delta[i, k] = v - prev
                span[i, k] = k - ps if k == 0 else 1
                prev = v
            state_value[i] = prev
            state_slot[i] = s - 1
            state_cv[i] = cand_value[i]
            state_cs[i] = cand_slot[i]
            state_cn[i] = 0
        else:
            (state_value[i], state_slot[i], state_cv[i], state_cs[i], state_cn[i]) = \
                vk.scan_row(i, screened, pv, ps, cand_value[i], cand_slot[i], cand_count[i],
                            modulus[i], lim, wrap_margin[i], rebase_reads[i], scan_flags, delta,
                            span)
        thr = stopped_kw[i]
        watch = generating[i] == 0
        rkwh = reverse_kwh[i]
        rkw = reverse_kw[i]
        for k in range(s):
            f = scan_flags[i, k]
            if conflict[i, k] != 0:
                if dup_fail:
                    f &= _NOT_MISSING
                f |= vk.BIT_DUPLICATE
            if f & vk.BIT_REBASED:
                f &= _NOT_REJECTED
            # interval_row, written out
            stopped = (delta[i, k] == 0.0) & (power[i, k] > thr) & (power_before[i, k] > thr)
            reverse = watch & ((export_delta[i, k] > rkwh) | (power[i, k] < -rkw))
            flags[i, k] = f | stopped * vk.BIT_STOPPED | reverse * vk.BIT_REVERSE
        factor = spike_factor[i]
        for b in range(days):
            # spike_row's quick test, written out: the exact walk only where a spike can be
            lo = b * S_DAY
            h1 = -np.inf
            n = 0
            for k in range(lo, lo + S_DAY):
                d = delta[i, k]
                usable = (span[i, k] == 1) & (d == d)
                n += usable
                h1 = max(h1, d if usable else -np.inf)
            if n < 3:
                continue
            if factor > 0.0:
                threshold = h1 / factor * (1.0 + 1e-9) if h1 > 0.0 else \
                    h1 / factor * (1.0 - 1e-9)
                above = 0
                for k in range(lo, lo + S_DAY):
                    above += (span[i, k] == 1) & (delta[i, k] > threshold)
                if above >= 3:
                    continue
            vk.spike_row(i * days + b, delta_days, span_days, factor, spike_min_kwh[i],
                         flag_days)
        fm = fail_mask[i]
        for k in range(s):
            v = screened[i, k]
            ok = (v == v) & (((scan_flags[i, k] & _REJECTED) == 0)
                             | ((flags[i, k] & vk.BIT_REBASED) != 0))
            accepted[i, k] = ok
            usable = ok & ((flags[i, k] & fm) == 0)
            anchors[i, k] = v if usable else np.nan
            actual[i, k] = delta[i, k] if (usable and span[i, k] == 1) else np.nan
            no_scale[i, k] = (flags[i, k] & vk.NO_SCALE_BITS) != 0
    # -- phase 2, per meter: estimation (a check meter's energy is known now), day rules, grade
    value = vk.nan_grid(m, s)
    energy = vk.nan_grid(m, s)
    method = np.zeros((m, s), dtype=np.uint8)
    scaled = np.zeros((m, s), dtype=np.uint8)
    shape = np.empty(s)
    day_energy = vk.nan_grid(m, days)
    actual_days = actual.reshape(m * days, S_DAY)
    reference_days = reference.reshape(m * days, S_DAY)
    quality = np.empty((m, s), dtype=np.uint8)
    published = np.empty((m, s), dtype=np.uint32)
    run_out = np.empty(m, dtype=np.int64)
    out_value = np.empty((m, s))
    for i in range(m):
        soft = soft_value[i] == soft_value[i]
        sv = soft_value[i] if soft else start_value[i]
        ss = soft_slot[i] if soft else start_slot[i]
        gap_free = True
        for k in range(due):
            gap_free &= anchors[i, k] == anchors[i, k]
        if gap_free:  # fill_row's first case, written out
            for k in range(due):
                energy[i, k] = actual[i, k]
        else:
            est.fill_row(i, anchors, actual, no_scale, sv, ss, start_energy, modulus[i], actual,
                         check_rows[i], like, like_count, previous_year, calculated, linear_max,
                         due, value, energy, method, scaled, shape)
        for b in range(days):
            r = i * days + b
            lo = b * S_DAY
            hi_ = lo + S_DAY
            if hi_ > due:
                continue  # a day in progress is not judged
            total = 0.0
            known = True
            actuals = 0
            e_sum = 0.0
            ref_sum = 0.0
            pairs = 0
            for k in range(lo, hi_):
                x = energy[i, k]
                if x != x:
                    known = False
                else:
                    total += x
                a = actual[i, k]
                c = reference[i, k]
                if a == a:
                    actuals += 1
                    if c == c:
                        e_sum += a
                        ref_sum += c
                        pairs += 1
            if known:
                day_energy[i, b] = total
            judged = day_energy[i, b] if actuals >= DAY_COVERAGE * S_DAY else np.nan
            margin = trailing_margin[i, b]
            band = vk.band_one(judged, trailing[i, b], last_year[i, b], high[i], low[i],
                               history_min_kwh[i] if not margin > history_min_kwh[i]
                               else margin)
            bits = 0
            if band > 0:
                bits |= vk.BIT_HIGH
            elif band < 0:
                bits |= vk.BIT_LOW
            # multiplier_row's level test, written out; the shape test only for a match
            if (pairs >= DAY_COVERAGE * S_DAY and ref_sum > 0.0
                    and ref_sum > multiplier_min_kwh[i] and e_sum > 0.0):
                ratio = e_sum / ref_sum
                near = False
                for cand in candidates:
                    near |= abs(ratio / cand - 1.0) <= ratio_tolerance[i]
                if near:
                    suspect = vk.multiplier_row(r, actual_days, reference_days, candidates,
                                                ratio_tolerance[i], shape_tolerance[i],
                                                multiplier_min_kwh[i], DAY_COVERAGE)
                    if suspect == suspect:
                        bits |= vk.BIT_MULTIPLIER
            # the register at the day's start: the read closing the day before, or what the
            # window starts from
            first = (sv if ss == -1 else np.nan) if b == 0 else anchors[i, lo - 1]
            last = anchors[i, hi_ - 1]
            if known and first == first and last == last:  # interval_sum_row, written out
                proven = last - first
                if proven < 0.0 and modulus[i] == modulus[i]:
                    proven += modulus[i]
                if abs(total - proven) > interval_sum_tol[i]:
                    bits |= vk.BIT_INTERVAL_SUM
            flags[i, hi_ - 1] |= bits
        fm = fail_mask[i]
        shown = fm | warn_mask[i]
        bad = vk.BIT_MISSING | fm
        clean = True
        for k in range(due):
            clean &= (flags[i, k] & bad) == 0
        if clean:  # grade_row's first case, written out (a method is set where estimated)
            for k in range(s):
                due_k = k < due
                quality[i, k] = 0 if due_k else 4
                published[i, k] = (flags[i, k] & shown) if due_k else 0
                out_value[i, k] = screened[i, k] if due_k else np.nan
            run_out[i] = 0 if due > 0 else run_in[i]
            continue
        run_out[i] = vk.grade_row(i, flags, method, fm, warn_mask[i], run_in[i],
                                  prolonged_after[i], due, quality, published)
        for k in range(s):
            q = quality[i, k]
            out_value[i, k] = screened[i, k] if q == 0 else (
                value[i, k] if (q == 1 or q == 2) else np.nan)
    return (scan_flags, accepted, actual, flags, delta, span, state_value, state_slot, state_cv,
            state_cs, state_cn, value, energy, method, scaled, quality, published, run_out,
            day_energy, out_value)


# ==========================================================================================
# The twin: the same steps composed from the NumPy twins
# ==========================================================================================


def _sum_columns(rows: F64) -> F64:
    """Row sums added left to right, the order of the fused loop (exact comparisons)."""
    acc = np.zeros(rows.shape[0])
    for k in range(rows.shape[1]):
        acc += rows[:, k]
    return acc


def rule_set_np(x: ChainInputs) -> ChainOutputs:
    """The rule set composed from the NumPy twins (the reference for :func:`rule_set_nb`)."""
    p = x.params
    n, s = x.reads.shape
    days = s // S_DAY
    due = min(max(x.due, 0), s)
    # -- duplicates that disagree: a failed duplicate is no read at all for the scan
    conflict = x.conflict != 0
    dup_fail = conflict & ((p.fail_mask & vk.BIT_DUPLICATE) != 0)[:, None]
    reads = np.where(dup_fail, np.nan, x.reads)
    scan = vk.ScanResult(*vk.register_scan_np(
        reads, x.start_value, x.start_slot, x.cand_value, x.cand_slot, x.cand_count,
        p.modulus, p.interval_limit_kwh, p.wrap_margin, p.rebase_reads))
    flags = scan.flags.copy()
    flags[dup_fail] &= np.uint32(_NOT_MISSING)
    flags |= np.where(conflict, vk.BIT_DUPLICATE, 0).astype(np.uint32)
    rebased = (flags & vk.BIT_REBASED) != 0
    flags[rebased] &= np.uint32(_NOT_REJECTED)
    flags |= vk.interval_flags_np(scan.delta, x.power, x.power_before, x.export_delta,
                                  p.generating, p.stopped_kw, p.reverse_kwh, p.reverse_kw)
    rows = n * days
    flags |= vk.spike_flags_np(scan.delta.reshape(rows, S_DAY), scan.span.reshape(rows, S_DAY),
                               np.repeat(p.spike_factor, days),
                               np.repeat(p.spike_min_kwh, days)).reshape(n, s)
    # -- what is a usable register value, and which intervals are actual
    present = ~np.isnan(reads)
    accepted = present & (((scan.flags & _REJECTED) == 0) | rebased)
    failed = (flags & p.fail_mask[:, None]) != 0
    anchors = np.where(accepted & ~failed, reads, np.nan)
    actual_energy = np.where((scan.span == 1) & accepted & ~failed, scan.delta, np.nan)
    no_scale = ((flags & vk.NO_SCALE_BITS) != 0).astype(np.uint8)
    check = np.full((n, s), np.nan)
    has_check = x.check_rows >= 0
    if np.any(has_check):
        check[has_check] = actual_energy[x.check_rows[has_check]]
    soft = ~np.isnan(x.soft_value)
    start_value = np.where(soft, x.soft_value, x.start_value)
    start_slot = np.where(soft, x.soft_slot, x.start_slot)
    fill = est.FillResult(*est.fill_gaps_np(
        anchors, actual_energy, no_scale, start_value, start_slot, x.start_energy, p.modulus,
        check, x.like, x.like_count, x.previous_year, x.calculated, x.linear_max, due))
    # -- day-level rules on complete days
    energy_rows = fill.energy.reshape(rows, S_DAY)
    actual_rows = actual_energy.reshape(rows, S_DAY)
    complete = np.tile(np.arange(days) * S_DAY + S_DAY <= due, n)
    coverage = (~np.isnan(actual_rows)).sum(axis=1) >= DAY_COVERAGE * S_DAY
    known = ~np.isnan(energy_rows).any(axis=1)
    # the day's energy (actual + estimated) is history; only a mostly actual day is judged
    day_energy = np.where(complete & known, _sum_columns(np.nan_to_num(energy_rows, nan=0.0)),
                          np.nan)
    band = vk.history_band_np(np.where(coverage, day_energy, np.nan), x.trailing.ravel(),
                              x.last_year.ravel(), np.repeat(p.high, days),
                              np.repeat(p.low, days),
                              _history_margin(p.history_min_kwh, x.trailing_margin, n, days))
    suspect = vk.multiplier_suspect_np(
        np.where(complete[:, None], actual_rows, np.nan),
        x.reference_profile.reshape(rows, S_DAY), MULTIPLIER_CANDIDATES,
        np.repeat(p.ratio_tolerance, days), np.repeat(p.shape_tolerance, days),
        np.repeat(p.multiplier_min_kwh, days), DAY_COVERAGE)
    # the register at each day's start and end: the read closing the day before (or the value
    # the window starts from) and the read closing the day
    ends = anchors.reshape(n, days, S_DAY)[:, :, -1]
    first_start = np.where(start_slot == -1, start_value, np.nan)
    starts = np.concatenate([first_start[:, None], ends[:, :-1]], axis=1)
    mismatch = vk.interval_sum_mismatch_np(
        np.where(complete[:, None], energy_rows, np.nan), starts.ravel(), ends.ravel(),
        np.repeat(p.modulus, days), np.repeat(p.interval_sum_tol, days))
    day_bits = (np.where(band > 0, vk.BIT_HIGH, 0) | np.where(band < 0, vk.BIT_LOW, 0)
                | np.where(~np.isnan(suspect), vk.BIT_MULTIPLIER, 0)
                | np.where(mismatch != 0, vk.BIT_INTERVAL_SUM, 0)).astype(np.uint32)
    flags.reshape(rows, S_DAY)[:, -1] |= np.where(complete, day_bits, 0).astype(np.uint32)
    estimated = (fill.method != 0).astype(np.uint8)
    quality, published, run_out = vk.grade_np(flags, estimated, p.fail_mask, p.warn_mask,
                                              x.run_in, p.prolonged_after, due)
    value = np.where(quality == 0, reads, np.where((quality == 1) | (quality == 2), fill.value,
                                                   np.nan))
    return ChainOutputs(flags, accepted, actual_energy, scan, fill, quality, published, run_out,
                        day_energy.reshape(n, days), value)


def _margin_grid(margin: F64 | None, shape: tuple[int, ...]) -> F64:
    if margin is None:
        return np.full(shape, np.nan)
    return np.ascontiguousarray(margin, dtype=np.float64)


def _history_margin(min_kwh: F64, margin: F64 | None, n: int, days: int) -> F64:
    """Per meter-day: the larger of the rule's ``min_kwh`` and the meter's own margin."""
    fixed = np.repeat(min_kwh, days)
    spread = _margin_grid(margin, (n, days)).ravel()
    return np.where(spread > fixed, spread, fixed)


def rule_chain(x: ChainInputs, impl: str = "nb") -> ChainOutputs:
    """Run the whole rule set over a window: ``nb`` the fused kernel, ``np`` the twin."""
    if impl == "np":
        return rule_set_np(x)
    if impl != "nb":
        raise ValueError(f"implementation {impl!r} is not 'nb' or 'np'")
    if x.reads.shape[1] % S_DAY:
        raise ValueError(f"a window is whole days of {S_DAY} intervals, got {x.reads.shape[1]}")
    p = x.params
    out = rule_set_nb(
        x.reads, x.conflict, x.power, x.power_before, x.export_delta, x.start_value,
        x.start_slot, x.cand_value, x.cand_slot, x.cand_count, x.soft_value, x.soft_slot,
        x.start_energy, x.run_in, p.fail_mask, p.warn_mask, p.modulus, p.interval_limit_kwh,
        p.wrap_margin, p.rebase_reads, p.generating, p.stopped_kw, p.reverse_kwh, p.reverse_kw,
        p.spike_factor, p.spike_min_kwh, p.high, p.low, p.history_min_kwh, p.ratio_tolerance,
        p.shape_tolerance, p.multiplier_min_kwh, p.interval_sum_tol, p.prolonged_after,
        x.check_rows, x.like, x.like_count, x.previous_year, x.calculated, x.trailing,
        x.last_year, x.reference_profile, MULTIPLIER_CANDIDATES, x.linear_max, x.due,
        _margin_grid(x.trailing_margin, x.trailing.shape))
    (scan_flags, accepted, actual, flags, delta, span, sv, ss, cv, cs, cn, value, energy, method,
     scaled, quality, published, run_out, day_energy, out_value) = out
    return ChainOutputs(
        flags, accepted.astype(bool), actual,
        vk.ScanResult(scan_flags, delta, span, sv, ss, cv, cs, cn),
        est.FillResult(value, energy, method, scaled), quality, published, run_out, day_energy,
        out_value)

