"""The daily theft indicator: a customer's sustained drop matched to the area's excess loss.

Unlike the sample-window indicators this runs once a day over days of energy: each customer's
share of the master meter's energy is compared with its seasonal baseline, and the drop in kWh
is matched against the area's loss above normal (see :mod:`edge_rules.theft`). It feeds the
suspect ranking of :mod:`edge_rules.line_loss`, not the per-poll alarms, so it lives apart from
them: the numba kernel, its NumPy twin and the checked entry point :func:`deficit_scores`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge_rules._jit import njit
from edge_rules.theft.episodes import (
    F64,
    I64,
    U8,
    _array,
    _quiet_all_nan,
    _shaped,
)

# --------------------------------------------------------------------------------------------
# Sustained drop against the seasonal baseline, matched to the area's excess loss
# --------------------------------------------------------------------------------------------


@njit
def deficit_scores_nb(
    energy: F64,
    actual: U8,
    customer_area: I64,
    master: F64,
    excess: F64,
    learn: U8,
    match_start: I64,
    baseline_days: int,
    recent_days: int,
    min_baseline: int,
    lookback_days: int,
    gap_days: int,
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """Per customer and day: ``expected`` and ``recent`` kWh/day, the ``deficit`` between them,
    how well that deficit ``explains`` the area's excess loss (0..1), that ``excess`` (the
    area's mean excess kWh/day over the same days) and the deficit's ``significance``, all
    (customers, days).

    The customer's reference is the median of its share of the master's energy over its last
    ``baseline_days`` days that were actual and on which its area was qualified (``learn``),
    ending ``gap_days`` before the recent window (so a slow, progressive theft has not yet
    pulled the reference down) and searched no further than ``lookback_days`` before it,
    needing ``min_baseline`` of them. The recent window is the last ``recent_days`` days up to the day
    judged; ``expected`` is reference share × the master's energy, averaged over the recent
    days that have both values.

    ``explains`` compares the customer's deficit δ (reference share × master − energy) with
    the area's excess x summed over the days from ``match_start[area, day]`` (the caller passes
    a week before the area's current rise began; −1 means the recent window) to the day judged:
    min(Σδ, Σx) / max(Σδ, Σx) when both are positive, else 0. Signed sums let day-to-day
    scatter cancel. A customer whose drop matches the rise in size *and in time* scores near 1;
    one whose drop is far larger (an empty holiday home), far smaller, or began before the
    area's loss rose (an honest change the master saw too, counted on the days before the rise)
    scores lower. ``significance`` is the mean deficit in units of
    its own noise: the customer's day-to-day scatter (1.4826 × the MAD of its baseline shares ×
    the mean master energy) divided by √(days used) — a steady customer whose use falls by a
    third stands out, a customer whose use always swings that much does not.
    """
    customers, days = energy.shape
    expected_out = np.full((customers, days), np.nan)
    recent_out = np.full((customers, days), np.nan)
    deficit_out = np.full((customers, days), np.nan)
    explains_out = np.zeros((customers, days))
    excess_out = np.full((customers, days), np.nan)
    significance_out = np.full((customers, days), np.nan)
    shares = np.empty(baseline_days, dtype=np.float64)
    deviations = np.empty(baseline_days, dtype=np.float64)
    for c in range(customers):
        a = customer_area[c]
        for d in range(days):
            first_recent = d - recent_days + 1
            if first_recent < 0:
                continue
            n = 0
            j = first_recent - 1 - gap_days
            stop = max(-1, first_recent - 1 - lookback_days)
            while j > stop and n < baseline_days:
                e = energy[c, j]
                mj = master[a, j]
                if learn[a, j] != 0 and actual[c, j] != 0 and e == e and mj > 0.0:
                    shares[n] = e / mj
                    n += 1
                j -= 1
            if n < min_baseline:
                continue
            ordered = np.sort(shares[:n])
            half = n // 2
            share = ordered[half] if n % 2 else 0.5 * (ordered[half - 1] + ordered[half])
            for i in range(n):
                deviations[i] = abs(ordered[i] - share)
            spread = np.sort(deviations[:n])
            mad = spread[half] if n % 2 else 0.5 * (spread[half - 1] + spread[half])
            used = 0
            sum_expected = 0.0
            sum_recent = 0.0
            sum_excess = 0.0
            for k in range(first_recent, d + 1):
                e = energy[c, k]
                mk = master[a, k]
                x = excess[a, k]
                if e == e and mk > 0.0 and x == x:
                    used += 1
                    sum_expected += share * mk
                    sum_recent += e
                    sum_excess += x
            if used * 2 < recent_days:
                continue
            start = match_start[a, d]
            if start < 0 or start > first_recent:
                start = first_recent
            overlap = 0.0
            union = 0.0
            for k in range(start, d + 1):
                e = energy[c, k]
                mk = master[a, k]
                x = excess[a, k]
                if e == e and mk > 0.0 and x == x:
                    overlap += share * mk - e
                    union += x
            mean_expected = sum_expected / used
            mean_recent = sum_recent / used
            mean_deficit = mean_expected - mean_recent
            mean_excess = sum_excess / used
            expected_out[c, d] = mean_expected
            recent_out[c, d] = mean_recent
            deficit_out[c, d] = mean_deficit
            excess_out[c, d] = mean_excess
            noise = 1.4826 * mad * (mean_expected / share if share > 0.0 else 0.0)
            if noise > 0.0:
                significance_out[c, d] = mean_deficit / (noise / np.sqrt(used))
            elif mean_deficit > 0.0:
                significance_out[c, d] = np.inf
            else:
                significance_out[c, d] = 0.0
            if overlap > 0.0 and union > 0.0:
                explains_out[c, d] = min(overlap, union) / max(overlap, union)
    return expected_out, recent_out, deficit_out, explains_out, excess_out, significance_out


def deficit_scores_np(
    energy: F64,
    actual: U8,
    customer_area: I64,
    master: F64,
    excess: F64,
    learn: U8,
    match_start: I64,
    baseline_days: int,
    recent_days: int,
    min_baseline: int,
    lookback_days: int,
    gap_days: int,
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """NumPy twin of :func:`deficit_scores_nb`: vectorised over customers, one day at a time;
    the reference takes the *last* ``baseline_days`` usable days via a reversed cumulative
    count."""
    customers, days = energy.shape
    expected_out = np.full((customers, days), np.nan)
    recent_out = np.full((customers, days), np.nan)
    deficit_out = np.full((customers, days), np.nan)
    explains_out = np.zeros((customers, days))
    excess_out = np.full((customers, days), np.nan)
    significance_out = np.full((customers, days), np.nan)
    m_c = master[customer_area] if customers else np.empty((0, days))
    learn_c = learn[customer_area] if customers else np.empty((0, days), dtype=np.uint8)
    x_c = excess[customer_area] if customers else np.empty((0, days))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        usable = (learn_c != 0) & (actual != 0) & ~np.isnan(energy) & (m_c > 0.0)
        share_all = np.where(usable, energy / np.where(m_c > 0.0, m_c, 1.0), np.nan)
    for d in range(recent_days - 1, days):
        first_recent = d - recent_days + 1
        lo = max(0, first_recent - lookback_days)
        hi = max(lo, first_recent - gap_days)
        window_usable = usable[:, lo:hi][:, ::-1]
        rank = np.cumsum(window_usable, axis=1)
        chosen = window_usable & (rank <= baseline_days)
        shares = np.where(chosen, share_all[:, lo:hi][:, ::-1], np.nan)
        n = chosen.sum(axis=1)
        ok = n >= min_baseline
        if not ok.any():
            continue
        with _quiet_all_nan():
            share = np.nanmedian(shares[ok], axis=1)
            mad = np.nanmedian(np.abs(shares[ok] - share[:, None]), axis=1)
        e = energy[ok, first_recent : d + 1]
        mk = m_c[ok, first_recent : d + 1]
        xk = x_c[ok, first_recent : d + 1]
        good = ~np.isnan(e) & (mk > 0.0) & ~np.isnan(xk)
        used = good.sum(axis=1)
        exp_terms = np.where(good, share[:, None] * mk, 0.0)
        sum_expected = np.cumsum(exp_terms, axis=1)[:, -1]
        sum_recent = np.cumsum(np.where(good, e, 0.0), axis=1)[:, -1]
        sum_excess = np.cumsum(np.where(good, xk, 0.0), axis=1)[:, -1]
        enough = used * 2 >= recent_days
        rows = np.flatnonzero(ok)[enough]
        u = used[enough]
        mean_expected = sum_expected[enough] / u
        mean_recent = sum_recent[enough] / u
        mean_deficit = mean_expected - mean_recent
        mean_excess = sum_excess[enough] / u
        expected_out[rows, d] = mean_expected
        recent_out[rows, d] = mean_recent
        deficit_out[rows, d] = mean_deficit
        excess_out[rows, d] = mean_excess
        share_e, mad_e = share[enough], mad[enough]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            level = np.where(
                share_e > 0.0, mean_expected / np.where(share_e > 0.0, share_e, 1.0), 0.0
            )
            noise = 1.4826 * mad_e * level
            significance_out[rows, d] = np.where(
                noise > 0.0,
                mean_deficit / (noise / np.sqrt(u)),
                np.where(mean_deficit > 0.0, np.inf, 0.0),
            )
        share_rows = share_e
        for row, ref in zip(rows, share_rows, strict=True):
            start = int(match_start[customer_area[row], d])
            if start < 0 or start > first_recent:
                start = first_recent
            e_k = energy[row, start : d + 1]
            m_k = m_c[row, start : d + 1]
            x_k = x_c[row, start : d + 1]
            ok_k = ~np.isnan(e_k) & (m_k > 0.0) & ~np.isnan(x_k)
            if not ok_k.size:
                continue
            total_gap = float(np.cumsum(np.where(ok_k, ref * m_k - e_k, 0.0))[-1])
            total_excess = float(np.cumsum(np.where(ok_k, x_k, 0.0))[-1])
            if total_gap > 0.0 and total_excess > 0.0:
                explains_out[row, d] = min(total_gap, total_excess) / max(total_gap, total_excess)
    return expected_out, recent_out, deficit_out, explains_out, excess_out, significance_out


class DeficitScores(NamedTuple):
    """What :func:`deficit_scores` returns, each (customers, days)."""

    expected: F64
    recent: F64
    deficit: F64
    explains: F64
    excess: F64
    significance: F64


def deficit_scores(
    energy: F64,
    actual: U8,
    customer_area: I64,
    master: F64,
    excess: F64,
    learn: U8,
    match_start: I64 | None = None,
    *,
    baseline_days: int = 28,
    recent_days: int = 5,
    min_baseline: int = 14,
    lookback_days: int = 365,
    gap_days: int = 0,
) -> DeficitScores:
    """Validated entry point of :func:`deficit_scores_nb`. ``energy``/``actual`` are
    (customers, days); ``master``, ``excess`` (kWh the area lost beyond its usual loss) and
    ``learn`` (1 on qualified days) and ``match_start`` (default: the recent window) are
    (areas, days); ``customer_area`` maps customers to area rows."""
    energy = _array(energy, "energy", 2, np.float64)
    actual = _shaped(actual, energy.shape, "actual", np.uint8)
    master = _array(master, "master", 2, np.float64)
    if master.shape[1] != energy.shape[1]:
        raise ValueError("master must cover the same days as energy")
    excess = _shaped(excess, master.shape, "excess", np.float64)
    learn = _shaped(learn, master.shape, "learn", np.uint8)
    if match_start is None:
        match_start = np.full(master.shape, -1, dtype=np.int64)
    match_start = _shaped(match_start, master.shape, "match_start", np.int64)
    customer_area = _shaped(customer_area, (energy.shape[0],), "customer_area", np.int64)
    if customer_area.size and not (
        customer_area.min() >= 0 and customer_area.max() < master.shape[0]
    ):
        raise ValueError(f"customer_area must index the {master.shape[0]} area rows")
    if not 1 <= min_baseline <= baseline_days:
        raise ValueError(f"min_baseline must be 1..baseline_days ({baseline_days})")
    if recent_days < 1 or lookback_days < baseline_days + gap_days or gap_days < 0:
        raise ValueError(
            "recent_days must be >= 1, gap_days >= 0 and lookback_days >= baseline_days + gap_days"
        )
    return DeficitScores(
        *deficit_scores_nb(
            energy,
            actual,
            customer_area,
            master,
            excess,
            learn,
            match_start,
            int(baseline_days),
            int(recent_days),
            int(min_baseline),
            int(lookback_days),
            int(gap_days),
        )
    )


