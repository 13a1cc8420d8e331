"""Estimation cascade: values for reads that are missing or failed validation.

A *gap* is a run of intervals whose register read is missing or rejected. The register reads
either side of it (the *bracket*) prove how much energy the gap holds; what is unknown is how
that energy is spread. Each gap gets the first of these that can serve for *all* its intervals
(method codes in :mod:`edge_rules.codes`):

1. **check meter** (11) — interval energies of a check meter on the same load;
2. **linear** (17) — gaps of at most ``linear_max`` missing reads (2 h by default) between two
   good reads: interval energies interpolated between the interval before and the one after;
3. **like day** (15, or 14 when only one like day exists) — the same day type's average over the
   last weeks (holidays and estimates excluded) × a seasonal factor, prepared by the caller from
   :mod:`edge_rules.history`;
4. **previous year** (23) — last year's same-season day energy spread by the class profile;
5. **class profile × annual energy** (12);
6. **flat** — a bracketed gap with nothing else known is spread evenly.

Finally, **data scaling** (24): whenever good register reads bracket the gap, the estimates are
scaled so that they add up exactly to the register delta — the register is the one thing that is
measured. A like-day, previous-year or class estimate that was scaled is published with method 24;
check-meter and linear estimates keep their method (they are scaled as well; linear ones are
built to match). Gaps where the register itself did not count (meter stopped), counted energy
being replaced (a spike) or restarted at a new level are never scaled.

An estimate never overwrites an actual: the kernel fills only slots that have no accepted read,
and the caller keeps actual reads as they are. Every estimated register value lies between the
register reads around its gap (inclusive), by construction: a gap that is not scaled is held
within them, and an open gap never goes below the read before it.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit
from edge_rules.codes import Method
from edge_rules.vee_kernels import nan_grid

__all__ = ["FillResult", "fill_gaps", "fill_gaps_nb", "fill_gaps_np"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]

_CHECK: Final = Method.CHECK_METER
_LINEAR: Final = Method.LINEAR
_LIKE: Final = Method.AVERAGE_LIKE_DAY
_LIKE_ONE: Final = Method.LIKE_DAY
_PREVIOUS_YEAR: Final = Method.PREVIOUS_YEAR
_CALCULATED: Final = Method.CALCULATED
_SCALING: Final = Method.DATA_SCALING


class FillResult(NamedTuple):
    """``value`` estimated register value of each filled slot (NaN elsewhere); ``energy`` the
    interval energy of every due slot — actual where known, estimated inside gaps (including the
    interval closed by the read after a gap), NaN where unknown; ``method`` the method code of
    each filled slot (0 elsewhere); ``scaled`` 1 where the gap was scaled to its bracket."""

    value: F64
    energy: F64
    method: U8
    scaled: U8


@njit
def _covers(source: F64, i: int, a: int, b: int) -> bool:
    # an explicit loop, not all(...): numba compiles no generator expressions
    for j in range(a, b + 1):  # noqa: SIM110
        if source[i, j] != source[i, j]:
            return False
    return True


@njit
def _choose(
    i: int, a: int, b: int, q: int, p: int, bracketed: bool, missing: int, n_int: int,
    energy: F64, start_energy: F64, check: F64, check_row: int, like: F64, like_count: I64,
    previous_year: F64, calculated: F64, linear_max: int, due: int, shape: F64,
) -> int:
    """The cascade for one gap ``[a, b]``: write its shape into ``shape``, return the method.
    ``check[check_row]`` holds the check meter's energies (``check_row`` < 0: none)."""
    if check_row >= 0 and _covers(check, check_row, a, b):
        for j in range(a, b + 1):
            shape[j] = check[check_row, j]
        return _CHECK
    if bracketed and missing <= linear_max:
        before = energy[i, p] if p >= 0 else start_energy[i]
        after = energy[i, q + 1] if q + 1 < due else np.nan
        if before != before:
            before = after
        if after != after:
            after = before
        for j in range(a, b + 1):
            if before != before:
                shape[j] = 1.0
            else:
                shape[j] = before + (after - before) * ((j - a + 1) / (n_int + 1))
        return _LINEAR
    if _covers(like, i, a, b):
        single = False
        for j in range(a, b + 1):
            shape[j] = like[i, j]
            if like_count[i, j] == 1:
                single = True
        return _LIKE_ONE if single else _LIKE
    if _covers(previous_year, i, a, b):
        for j in range(a, b + 1):
            shape[j] = previous_year[i, j]
        return _PREVIOUS_YEAR
    if _covers(calculated, i, a, b):
        for j in range(a, b + 1):
            shape[j] = calculated[i, j]
        return _CALCULATED
    if bracketed:
        for j in range(a, b + 1):
            shape[j] = 1.0
        return _SCALING
    return 0


@njit
def fill_row(
    i: int,
    anchors: F64,
    energy: F64,
    no_scale: U8,
    pv: float,
    p: int,
    start_energy: F64,
    modulus: float,
    check: F64,
    check_row: int,
    like: F64,
    like_count: I64,
    previous_year: F64,
    calculated: F64,
    linear_max: int,
    due: int,
    value: F64,
    out_energy: F64,
    method: U8,
    scaled: U8,
    shape: F64,
) -> None:
    """Fill every gap of meter ``i`` (the loop body of :func:`fill_gaps_nb`, shared with the
    fused rule set). ``check[check_row]`` are the check meter's interval energies (−1: none).
    Output rows must arrive NaN / 0; ``shape`` is scratch of the row length."""
    complete = True
    for k in range(due):  # the common case: no gap at all
        complete &= anchors[i, k] == anchors[i, k]
    if complete:
        for k in range(due):
            out_energy[i, k] = energy[i, k]
        return
    k = 0
    while k < due:
        if anchors[i, k] == anchors[i, k]:
            out_energy[i, k] = energy[i, k]
            pv = anchors[i, k]
            p = k
            k += 1
            continue
        g0 = k
        while k < due and anchors[i, k] != anchors[i, k]:
            k += 1
        q = k  # the read after the gap, or ``due`` when the gap is still open
        bracketed = q < due
        a = g0
        b = q if bracketed else due - 1
        n_int = b - a + 1
        missing = q - g0
        chosen = 0
        if pv == pv and p >= -1:  # without a register to start from nothing is estimated
            chosen = _choose(i, a, b, q, p, bracketed, missing, n_int, energy, start_energy,
                             check, check_row, like, like_count, previous_year, calculated,
                             linear_max, due, shape)
        if chosen == 0:
            if bracketed:
                out_energy[i, q] = np.nan
                pv = anchors[i, q]
                p = q
                k = q + 1
            continue
        # -- data scaling to the bracketing register reads
        total = np.nan
        if bracketed and p == a - 1:
            blocked = False
            for j in range(a, b + 1):
                if no_scale[i, j]:
                    blocked = True
                    break
            if not blocked:
                total = anchors[i, q] - pv
                # a wrap only from the top half of the range to the bottom half: a read just
                # below where the gap started (an estimate that overshot) is no wrap
                if total < -0.5 * modulus:
                    total += modulus
                if total < 0.0:
                    total = np.nan
        did_scale = total == total
        if did_scale:
            acc = 0.0
            for j in range(a, b + 1):
                acc += shape[j]
            if acc > 0.0:
                factor = total / acc
                for j in range(a, b + 1):
                    shape[j] = shape[j] * factor
            else:
                for j in range(a, b + 1):
                    shape[j] = total / n_int
            if chosen != _CHECK and chosen != _LINEAR:
                chosen = _SCALING
        # The register values lie between the reads around the gap by construction: a gap
        # that could not be scaled (stopped meter, new baseline, a start from an estimate) is
        # held within [read before, read after]; an open gap never goes below the read before.
        top = np.inf
        if bracketed:
            top = anchors[i, q]
            if top < pv - 0.5 * modulus:
                top += modulus
            if top < pv:
                top = pv
        run = pv
        for j in range(a, b + 1):
            out_energy[i, j] = shape[j]
            if j < q:
                run += shape[j]
                held = min(max(run, pv), top)
                if modulus == modulus and held >= modulus:
                    held -= modulus
                value[i, j] = held
                method[i, j] = chosen
                scaled[i, j] = 1 if did_scale else 0
        if bracketed:
            pv = anchors[i, q]
            p = q
            k = q + 1


@njit
def fill_gaps_nb(
    anchors: F64,
    energy: F64,
    no_scale: U8,
    start_value: F64,
    start_slot: I64,
    start_energy: F64,
    modulus: F64,
    check: F64,
    like: F64,
    like_count: I64,
    previous_year: F64,
    calculated: F64,
    linear_max: int,
    due: int,
) -> tuple[F64, F64, U8, U8]:
    m, s = anchors.shape
    due = min(max(due, 0), s)
    value = nan_grid(m, s)
    out_energy = nan_grid(m, s)
    method = np.zeros((m, s), dtype=np.uint8)
    scaled = np.zeros((m, s), dtype=np.uint8)
    shape = np.empty(s)
    for i in range(m):
        fill_row(i, anchors, energy, no_scale, start_value[i], start_slot[i], start_energy,
                 modulus[i], check, i, like, like_count, previous_year, calculated, linear_max,
                 due, value, out_energy, method, scaled, shape)
    return value, out_energy, method, scaled


def _range_count(flags: NDArray[np.bool_], a: I64, b: I64) -> I64:
    """How many ``flags`` are set in ``[a, b]`` of each row (a, b per element, a ≤ b)."""
    cum = np.zeros((flags.shape[0], flags.shape[1] + 1), dtype=np.int64)
    np.cumsum(flags, axis=1, out=cum[:, 1:])
    rows = np.arange(flags.shape[0])[:, None]
    return cum[rows, b + 1] - cum[rows, a]


def fill_gaps_np(
    anchors: F64,
    energy: F64,
    no_scale: U8,
    start_value: F64,
    start_slot: I64,
    start_energy: F64,
    modulus: F64,
    check: F64,
    like: F64,
    like_count: I64,
    previous_year: F64,
    calculated: F64,
    linear_max: int,
    due: int,
) -> tuple[F64, F64, U8, U8]:
    """The NumPy twin: each interval finds its gap from running maxima and minima of anchor
    positions, and range sums come from cumulative sums (so sums differ from the loop's in the
    last bits: compare with a relative tolerance)."""
    m, s = anchors.shape
    due = min(max(due, 0), s)
    value = np.full((m, s), np.nan)
    out_energy = np.full((m, s), np.nan)
    method = np.zeros((m, s), dtype=np.uint8)
    scaled = np.zeros((m, s), dtype=np.uint8)
    if m == 0 or due == 0:
        return value, out_energy, method, scaled
    rows = np.arange(m)[:, None]
    idx = np.arange(due)[None, :]
    anc = anchors[:, :due]
    is_anchor = ~np.isnan(anc)
    # p: last anchor before each slot (the start anchor's slot when there is none)
    last_at = np.maximum.accumulate(np.where(is_anchor, idx, -(10**12)), axis=1)
    p = np.empty((m, due), dtype=np.int64)
    p[:, 0] = start_slot
    p[:, 1:] = np.maximum(last_at[:, :-1], start_slot[:, None])
    p_has_anchor = np.zeros((m, due), dtype=bool)
    p_has_anchor[:, 1:] = last_at[:, :-1] >= 0
    pv = np.where(p_has_anchor, anc[rows, np.clip(p, 0, due - 1)], start_value[:, None])
    # q: first anchor at or after each slot (``due`` when none)
    next_at = np.minimum.accumulate(np.where(is_anchor, idx, due)[:, ::-1], axis=1)[:, ::-1]
    q = next_at
    fill = ~is_anchor
    prev_fill = np.zeros((m, due), dtype=bool)
    prev_fill[:, 1:] = fill[:, :-1]
    # Interval j is inside a gap when its read is missing, or when it is the read right after a
    # missing one (its interval starts inside the gap).
    closing = is_anchor & prev_fill
    member = fill | closing
    usable = member & ~np.isnan(pv) & (p >= -1)
    a = p + 1
    bracketed = q < due
    b = np.where(bracketed, q, due - 1)
    a_c = np.clip(a, 0, due - 1)
    b_c = np.clip(b, 0, due - 1)
    n_int = b - a + 1
    missing = q - a

    def covered(source: F64) -> NDArray[np.bool_]:
        gaps_in_source: NDArray[np.bool_] = _range_count(np.isnan(source[:, :due]), a_c, b_c) == 0
        return gaps_in_source

    has_check = covered(check)
    has_like = covered(like)
    has_year = covered(previous_year)
    has_calc = covered(calculated)
    linear = ~has_check & bracketed & (missing <= linear_max)
    like_ok = ~has_check & ~linear & has_like
    single = _range_count(like_count[:, :due] == 1, a_c, b_c) > 0
    year_ok = ~has_check & ~linear & ~has_like & has_year
    calc_ok = ~has_check & ~linear & ~has_like & ~has_year & has_calc
    flat = ~has_check & ~linear & ~has_like & ~has_year & ~has_calc & bracketed
    chosen = np.select(
        [has_check, linear, like_ok & single, like_ok, year_ok, calc_ok, flat],
        [_CHECK, _LINEAR, _LIKE_ONE, _LIKE, _PREVIOUS_YEAR, _CALCULATED, _SCALING],
        default=0,
    )
    chosen = np.where(usable, chosen, 0)
    # shapes
    e = energy[:, :due]
    before = np.where(p >= 0, e[rows, np.clip(p, 0, due - 1)], start_energy[:, None])
    after_idx = q + 1
    after = np.where(bracketed & (after_idx < due), e[rows, np.clip(after_idx, 0, due - 1)], np.nan)
    before, after = np.where(np.isnan(before), after, before), np.where(np.isnan(after), before, after)
    with np.errstate(invalid="ignore"):
        line = np.where(np.isnan(before), 1.0,
                        before + (after - before) * ((idx - a + 1) / (n_int + 1)))
    shape = np.select(
        [chosen == _CHECK, chosen == _LINEAR, (chosen == _LIKE) | (chosen == _LIKE_ONE),
         chosen == _PREVIOUS_YEAR, chosen == _CALCULATED, chosen == _SCALING],
        [check[:, :due], line, like[:, :due], previous_year[:, :due], calculated[:, :due],
         np.ones((m, due))],
        default=np.nan,
    )
    # scaling
    blocked = _range_count(no_scale[:, :due] != 0, a_c, b_c) > 0
    can_scale = (chosen != 0) & bracketed & (p == a - 1) & ~blocked
    total = anc[rows, np.clip(q, 0, due - 1)] - pv
    total = np.where(total < -0.5 * modulus[:, None], total + modulus[:, None], total)
    can_scale &= total >= 0.0
    shape_sum = np.zeros((m, due + 1))
    np.cumsum(np.where(chosen != 0, shape, 0.0), axis=1, out=shape_sum[:, 1:])
    acc = shape_sum[rows, b_c + 1] - shape_sum[rows, a_c]
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled_shape = np.where(acc > 0.0, shape * (total / acc), total / n_int)
    est = np.where(can_scale, scaled_shape, shape)
    chosen = np.where(can_scale & (chosen != _CHECK) & (chosen != _LINEAR) & (chosen != 0),
                      _SCALING, chosen)
    est = np.where(chosen != 0, est, np.nan)
    # register values: start + running sum of the gap's estimates, wrapped at the modulus
    run_sum = np.zeros((m, due + 1))
    np.cumsum(np.where(chosen != 0, est, 0.0), axis=1, out=run_sum[:, 1:])
    register = pv + (run_sum[:, 1:] - run_sum[rows, a_c])
    # held within the reads around the gap (fill_row)
    top = np.where(bracketed, anc[rows, np.clip(q, 0, due - 1)], np.inf)
    top = np.where(top < pv - 0.5 * modulus[:, None], top + modulus[:, None], top)
    top = np.where(top < pv, pv, top)
    register = np.minimum(np.maximum(register, pv), top)
    wrapped = ~np.isnan(modulus)[:, None] & (register >= modulus[:, None])
    register = np.where(wrapped, register - modulus[:, None], register)
    filled = fill & (chosen != 0)
    value[:, :due] = np.where(filled, register, np.nan)
    method[:, :due] = np.where(filled, chosen, 0).astype(np.uint8)
    scaled[:, :due] = (filled & can_scale).astype(np.uint8)
    out_energy[:, :due] = np.where(member, np.where(chosen != 0, est, np.nan),
                                   np.where(is_anchor, e, np.nan))
    return value, out_energy, method, scaled


def fill_gaps(
    anchors: F64,
    energy: F64,
    no_scale: U8,
    start_value: F64,
    start_slot: I64,
    start_energy: F64,
    modulus: F64,
    *,
    check: F64 | None = None,
    like: F64 | None = None,
    like_count: I64 | None = None,
    previous_year: F64 | None = None,
    calculated: F64 | None = None,
    linear_max: int = 8,
    due: int | None = None,
) -> FillResult:
    """Estimate every gap of a window (module docstring: the cascade).

    ``anchors`` register values of accepted, not-failed reads (NaN elsewhere: those slots are
    the gaps); ``energy`` their single-interval energies (for linear interpolation's neighbours);
    ``no_scale`` slots that forbid scaling a gap that contains them; ``start_*`` the register
    value, slot (≤ −1) and last interval energy before the window; ``modulus`` 10^digits.
    The sources ``check`` … ``calculated`` are interval energies per slot, NaN where that source
    has nothing; ``like_count`` how many like days each ``like`` value averages. ``linear_max``
    the longest gap (missing reads) to interpolate linearly; ``due`` how many slots have come due
    (slots after it are in the future and never estimated).
    """
    anc = np.ascontiguousarray(anchors, dtype=np.float64)
    if anc.ndim != 2:
        raise ValueError(f"anchors must be 2-D, got shape {anc.shape}")
    m, s = anc.shape
    nan2 = np.full((m, s), np.nan)

    def grid(name: str, value: object | None, fill: F64 = nan2) -> F64:
        array = fill if value is None else np.ascontiguousarray(value, dtype=np.float64)
        if array.shape != (m, s):
            raise ValueError(f"{name} has shape {array.shape}, expected {(m, s)}")
        return array

    def vector(name: str, value: object) -> F64:
        array = np.ascontiguousarray(value, dtype=np.float64)
        if array.shape != (m,):
            raise ValueError(f"{name} has shape {array.shape}, expected {(m,)}")
        return array

    slots = np.ascontiguousarray(start_slot, dtype=np.int64)
    if slots.shape != (m,):
        raise ValueError(f"start_slot has shape {slots.shape}, expected {(m,)}")

    counts = (np.ones((m, s), dtype=np.int64) if like_count is None
              else np.ascontiguousarray(like_count, dtype=np.int64))
    if counts.shape != (m, s):
        raise ValueError(f"like_count has shape {counts.shape}, expected {(m, s)}")
    ns = np.ascontiguousarray(no_scale, dtype=np.uint8)
    if ns.shape != (m, s):
        raise ValueError(f"no_scale has shape {ns.shape}, expected {(m, s)}")
    return FillResult(*fill_gaps_nb(
        anc, grid("energy", energy), ns,
        vector("start_value", start_value), slots, vector("start_energy", start_energy),
        vector("modulus", modulus),
        grid("check", check), grid("like", like), counts, grid("previous_year", previous_year),
        grid("calculated", calculated), int(linear_max), s if due is None else int(due),
    ))
