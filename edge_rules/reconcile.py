"""Reconciliation of transformer areas (台区线损): master against the sum of its sub-meters.

Line loss only means something when master and sub-meters are read at the **same frozen
instant**: the DL/T 645 daily freeze (05060001 time, 05060101 import) or the 00:00 register
read of a Modbus meter. A day's energy is the difference of two such freezes, so the caller
brings, per area and day, the master's energy, the sum of the sub-meters (a summation group,
:mod:`edge_rules.groups`) and the fraction of sub-meters whose two freezes were both actual.

Kernels here, each with its NumPy twin:

``area_loss``
    loss % = (master − Σ subs) / master × 100, and whether the day is calculable at all: the
    coverage gate (fewer than 98 % of sub-meters with actual freezes → ``uncalculable``), an
    actual, positive master, a finite sum.
``classify_losses``
    status per area and day: ``qualified`` / ``high`` / ``negative`` / ``uncalculable``. Each
    area learns its own band, median ± k·MAD of its *qualified* losses over the last
    ``window_days`` (needs ``min_history`` of them; until then only the absolute guards apply),
    and absolute guards (below −1 % negative, above 10 % high) apply always. Learning only from
    qualified days keeps a thief from teaching the band his own loss: once an area goes high,
    its band stays where it was until the loss comes back.
``expected_day_energy``
    what a sub-meter should have used on a day it was not read, from its own past.

The meter-against-meter checks (the 1376.1 F15 differential check between two groups, a main
meter against its check meter) are in :mod:`edge_rules.reconcile_checks`; the midnight freeze
of a meter without a freeze register in :mod:`edge_rules.reconcile_freeze`.

Status codes (uint8): 0 qualified, 1 high, 2 negative, 3 uncalculable (:data:`STATUS_NAMES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit
from edge_rules.codes import QUALITY_A

__all__ = [
    "STATUS_HIGH",
    "STATUS_NAMES",
    "STATUS_NEGATIVE",
    "STATUS_QUALIFIED",
    "STATUS_UNCALCULABLE",
    "UNCLASSIFIED",
    "BandSettings",
    "area_loss",
    "area_loss_nb",
    "area_loss_np",
    "classify_fixed_band",
    "classify_losses",
    "classify_losses_nb",
    "classify_losses_np",
    "expected_day_energy",
    "expected_day_energy_nb",
    "expected_day_energy_np",
]

_T = TypeVar("_T", bound=np.generic)
F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

STATUS_QUALIFIED: Final = 0
STATUS_HIGH: Final = 1
STATUS_NEGATIVE: Final = 2
STATUS_UNCALCULABLE: Final = 3
#: Marks a day :func:`classify_losses` must classify (any other value is taken as given).
UNCLASSIFIED: Final = 255
STATUS_NAMES: Final = ("qualified", "high", "negative", "uncalculable")


# --------------------------------------------------------------------------------------------
# Loss per area and day
# --------------------------------------------------------------------------------------------


@njit
def area_loss_nb(
    master: F64, subs: F64, master_actual: U8, coverage: F64, min_coverage: float
) -> tuple[F64, U8]:
    """Loss % and calculability, all arrays (areas, days).

    A day is calculable when the master's energy is actual and positive, the sum of the
    sub-meters is finite, and ``coverage`` (fraction of sub-meters with actual freezes) is at
    least ``min_coverage``. The loss is returned even for uncalculable days when it can be
    computed at all (for diagnosis); NaN otherwise.
    """
    areas, days = master.shape
    loss = np.empty((areas, days), dtype=np.float64)
    calculable = np.zeros((areas, days), dtype=np.uint8)
    for a in range(areas):
        for d in range(days):
            m = master[a, d]
            s = subs[a, d]
            if m > 0.0 and s == s:
                loss[a, d] = (m - s) / m * 100.0
                if master_actual[a, d] != 0 and coverage[a, d] >= min_coverage:
                    calculable[a, d] = 1
            else:
                loss[a, d] = np.nan
    return loss, calculable


def area_loss_np(
    master: F64, subs: F64, master_actual: U8, coverage: F64, min_coverage: float
) -> tuple[F64, U8]:
    """NumPy twin of :func:`area_loss_nb`."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        usable = (master > 0.0) & ~np.isnan(subs)
        loss = np.where(usable, (master - subs) / master * 100.0, np.nan)
        calculable = usable & (master_actual != 0) & (coverage >= min_coverage)
    return loss, calculable.astype(np.uint8)


def area_loss(
    master: F64, subs: F64, master_actual: U8, coverage: F64, min_coverage: float = 0.98
) -> tuple[F64, U8]:
    """Validated entry point of :func:`area_loss_nb`."""
    master = _f64(master, "master", 2)
    subs = _same(subs, master, "subs", np.float64)
    master_actual = _same(master_actual, master, "master_actual", np.uint8)
    coverage = _same(coverage, master, "coverage", np.float64)
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage is a fraction 0..1, got {min_coverage}")
    return area_loss_nb(master, subs, master_actual, coverage, float(min_coverage))


# --------------------------------------------------------------------------------------------
# Status: learned band plus absolute guards
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BandSettings:
    """How an area's status is judged.

    ``k`` band half-width in MADs (raw median absolute deviation, not scaled to σ; for normal
    noise 1 MAD ≈ 0.674 σ); ``window_days`` how many qualified days the band learns from
    (30–90), found within the last ``lookback_days``;
    ``min_history`` qualified days needed before the band is used; ``min_halfwidth_pct`` the
    narrowest band (an unusually steady area would otherwise flag harmless wobbles);
    ``lower_guard_pct`` / ``upper_guard_pct`` absolute limits that always apply;
    ``min_coverage`` the coverage gate; ``estimate_uncertainty`` the relative error assumed of
    an estimated sub-meter day (the band widens by it on days with estimates);
    ``sustained_days`` / ``sustained_fraction`` the shift rule: the mean of that many days
    beyond that fraction of the band is high or negative too (0 days turns it off);
    ``load_dependent`` centres the band on a robust line in the master's daily energy
    (technical loss rises with load) instead of a constant median.
    """

    k: float = 6.0
    window_days: int = 60
    lookback_days: int = 365
    min_history: int = 20
    min_halfwidth_pct: float = 0.5
    lower_guard_pct: float = -1.0
    upper_guard_pct: float = 10.0
    min_coverage: float = 0.98
    estimate_uncertainty: float = 0.3
    sustained_days: int = 7
    sustained_fraction: float = 0.5
    load_dependent: bool = True

    def __post_init__(self) -> None:
        if not (self.k > 0 and math.isfinite(self.k)):
            raise ValueError(f"band k must be a positive number, got {self.k}")
        if not 1 <= self.window_days <= 366:
            raise ValueError(f"window_days must be 1..366, got {self.window_days}")
        if not self.window_days <= self.lookback_days <= 3660:
            raise ValueError(f"lookback_days must be window_days..3660, got {self.lookback_days}")
        if not 1 <= self.min_history <= self.window_days:
            raise ValueError(
                f"min_history must be 1..window_days ({self.window_days}), got {self.min_history}"
            )
        if not self.min_halfwidth_pct >= 0:
            raise ValueError(f"min_halfwidth_pct must be >= 0, got {self.min_halfwidth_pct}")
        if not self.lower_guard_pct < self.upper_guard_pct:
            raise ValueError(
                f"lower_guard_pct ({self.lower_guard_pct}) must be below upper_guard_pct "
                f"({self.upper_guard_pct})"
            )
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"min_coverage is a fraction 0..1, got {self.min_coverage}")
        if not 0 <= self.sustained_days <= self.window_days:
            raise ValueError(f"sustained_days must be 0..window_days, got {self.sustained_days}")
        if not 0.0 < self.sustained_fraction <= 1.0:
            raise ValueError(f"sustained_fraction must be in (0, 1], got {self.sustained_fraction}")
        if not 0.0 <= self.estimate_uncertainty <= 10.0:
            raise ValueError(
                f"estimate_uncertainty is a relative error >= 0, got {self.estimate_uncertainty}"
            )


@njit
def _median_sorted(values: F64, n: int) -> float:
    half = n // 2
    if n % 2:
        return float(values[half])
    return float(0.5 * (values[half - 1] + values[half]))


@njit
def _loss_model_nb(
    ys: F64, xs: F64, n: int, slopes: F64, load_dependent: bool
) -> tuple[float, float]:
    """Technical loss in kWh as ``alpha + beta·load²`` (iron loss fixed, copper loss
    quadratic in the current) through the first ``n`` (loss %, load kWh) points, fitted
    robustly by Theil–Sen in (load², loss kWh): beta the median of pairwise slopes, alpha the
    median of the intercepts. (0, 0) without load dependence."""
    if not load_dependent:
        return 0.0, 0.0
    m = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = xs[j] * xs[j] - xs[i] * xs[i]
            if dx != 0.0:
                slopes[m] = (ys[j] * xs[j] / 100.0 - ys[i] * xs[i] / 100.0) / dx
                m += 1
    beta = _median_sorted(np.sort(slopes[:m]), m) if m > 0 else 0.0
    intercepts = np.empty(n, dtype=np.float64)
    for i in range(n):
        intercepts[i] = ys[i] * xs[i] / 100.0 - beta * (xs[i] * xs[i])
    alpha = _median_sorted(np.sort(intercepts), n)
    return alpha, beta


@njit
def _model_pct_nb(alpha: float, beta: float, x: float, load_dependent: bool) -> float:
    if not load_dependent:
        return 0.0
    return (alpha + beta * (x * x)) / x * 100.0


@njit
def classify_losses_nb(
    loss: F64,
    calculable: U8,
    given: U8,
    learnable: U8,
    allowance: F64,
    load: F64,
    load_dependent: bool,
    k: float,
    window_days: int,
    lookback_days: int,
    min_history: int,
    min_halfwidth: float,
    lower_guard: float,
    upper_guard: float,
    sustained_days: int,
    sustained_fraction: float,
) -> tuple[U8, F64, F64]:
    """Status per (area, day), walking the days in order.

    The band is the median ± k·MAD of the area's last ``window_days`` qualified, learnable
    days, searched back at most ``lookback_days``: counting learning days rather than calendar
    days keeps the band in force through a long theft (whose days are high and never learned)
    instead of letting it lapse and re-learn the theft as normal.

    With ``load_dependent`` the median is taken around a model of technical loss in ``load``
    (the master's energy): iron loss is fixed and copper loss quadratic in the current, so loss
    kWh ≈ alpha + beta·load², and its percentage rises on heavy days and on very light ones — a
    flat band would call a hot week or a holiday high. The model is fitted robustly (Theil–Sen)
    and the band is median ± k·MAD of the residuals, centred at today's load (clamped to half
    the lowest and twice the highest learned load: the physical model extrapolates, but not
    without limit). Without it this is exactly median ± k·MAD of the losses.

    ``given`` holds statuses already decided (history loaded from the store) or
    :data:`UNCLASSIFIED` for days to judge; decided days are kept and feed the band.
    ``learnable`` marks days that may feed the band when qualified (the pipeline passes "every
    sub-meter actual", so estimates never teach the band); ``allowance`` (percentage points,
    ≥ 0) widens the band on a day by the uncertainty of its estimated members.

    A day is high (negative) when its loss is above (below) the band, or when the mean
    residual of the last ``sustained_days`` fully actual days (today's window, at least half of
    them present) is beyond ``sustained_fraction`` of the band's half-width and today leans the
    same way by at least half that: a theft of a few tenths of a percent hides in one day's
    noise but not in a week's mean, and without this rule such days would pass as qualified
    and teach the band the thief's loss. (Estimated days stay out of the mean: one bad
    estimate must not colour a week; today's lean ends the alarm when the shift ends.) Returns
    ``status``, ``center`` and ``halfwidth`` (without the allowance) of the band each day was
    judged against (NaN when the band had too little history).
    """
    areas, days = loss.shape
    status = np.empty((areas, days), dtype=np.uint8)
    center = np.full((areas, days), np.nan)
    halfwidth = np.full((areas, days), np.nan)
    size = max(window_days, 1)
    ys = np.empty(size, dtype=np.float64)
    xs = np.empty(size, dtype=np.float64)
    deviation = np.empty(size, dtype=np.float64)
    slopes = np.empty(size * (size - 1) // 2 + 1, dtype=np.float64)
    for a in range(areas):
        for d in range(days):
            n = 0
            j = d - 1
            while j >= 0 and j >= d - lookback_days and n < window_days:
                if (
                    status[a, j] == STATUS_QUALIFIED
                    and learnable[a, j] != 0
                    and loss[a, j] == loss[a, j]
                    and (not load_dependent or load[a, j] > 0.0)
                ):
                    ys[n] = loss[a, j]
                    xs[n] = load[a, j] if load_dependent else 1.0
                    n += 1
                j -= 1
            alpha = 0.0
            beta = 0.0
            offset = np.nan
            lo_x = 1.0
            hi_x = 1.0
            if n >= min_history:
                alpha, beta = _loss_model_nb(ys, xs, n, slopes, load_dependent)
                lo_x = xs[0]
                hi_x = xs[0]
                for i in range(n):
                    lo_x = min(lo_x, xs[i])
                    hi_x = max(hi_x, xs[i])
                    deviation[i] = ys[i] - _model_pct_nb(alpha, beta, xs[i], load_dependent)
                offset = _median_sorted(np.sort(deviation[:n]), n)
                for i in range(n):
                    deviation[i] = abs(deviation[i] - offset)
                mad = _median_sorted(np.sort(deviation[:n]), n)
                halfwidth[a, d] = max(k * mad, min_halfwidth)
                lo_x = 0.5 * lo_x
                hi_x = 2.0 * hi_x
                x_today = load[a, d] if load_dependent else 1.0
                if not (x_today > 0.0):
                    x_today = 0.5 * (lo_x + hi_x)
                x_today = min(max(x_today, lo_x), hi_x)
                center[a, d] = offset + _model_pct_nb(alpha, beta, x_today, load_dependent)
            if given[a, d] != UNCLASSIFIED:
                status[a, d] = given[a, d]
                continue
            value = loss[a, d]
            width = halfwidth[a, d] + allowance[a, d]
            sustained = np.nan
            if sustained_days > 0 and n >= min_history:
                total = 0.0
                count = 0
                for j in range(max(0, d - sustained_days + 1), d + 1):
                    x_j = load[a, j] if load_dependent else 1.0
                    if (
                        calculable[a, j] != 0
                        and learnable[a, j] != 0
                        and loss[a, j] == loss[a, j]
                        and x_j > 0.0
                    ):
                        x_j = min(max(x_j, lo_x), hi_x)
                        model = offset + _model_pct_nb(alpha, beta, x_j, load_dependent)
                        total += loss[a, j] - model
                        count += 1
                if 2 * count >= sustained_days:
                    sustained = total / count
            if calculable[a, d] == 0 or value != value:
                status[a, d] = STATUS_UNCALCULABLE
            elif value > upper_guard:
                status[a, d] = STATUS_HIGH
            elif value < lower_guard:
                status[a, d] = STATUS_NEGATIVE
            elif n >= min_history and value > center[a, d] + width:
                status[a, d] = STATUS_HIGH
            elif n >= min_history and value < center[a, d] - width:
                status[a, d] = STATUS_NEGATIVE
            elif (
                n >= min_history
                and sustained > sustained_fraction * width
                and value - center[a, d] > 0.5 * sustained_fraction * width
            ):
                status[a, d] = STATUS_HIGH
            elif (
                n >= min_history
                and sustained < -sustained_fraction * width
                and value - center[a, d] < -0.5 * sustained_fraction * width
            ):
                status[a, d] = STATUS_NEGATIVE
            else:
                status[a, d] = STATUS_QUALIFIED
    return status, center, halfwidth


def classify_losses_np(
    loss: F64,
    calculable: U8,
    given: U8,
    learnable: U8,
    allowance: F64,
    load: F64,
    load_dependent: bool,
    k: float,
    window_days: int,
    lookback_days: int,
    min_history: int,
    min_halfwidth: float,
    lower_guard: float,
    upper_guard: float,
    sustained_days: int,
    sustained_fraction: float,
) -> tuple[U8, F64, F64]:
    """NumPy twin of :func:`classify_losses_nb`: sequential in days (a day's band depends on
    the statuses before it), array operations within an area-day (the Theil–Sen slopes as a
    pairwise matrix)."""
    areas, days = loss.shape
    status = np.zeros((areas, days), dtype=np.uint8)
    center = np.full((areas, days), np.nan)
    halfwidth = np.full((areas, days), np.nan)
    x_all = load if load_dependent else np.ones_like(loss)

    def model_pct(alpha: float, beta: float, x: F64) -> F64:
        if not load_dependent:
            return np.zeros_like(x)
        result: F64 = (alpha + beta * (x * x)) / x * 100.0
        return result

    for d in range(days):
        lo = max(0, d - lookback_days)
        for a in range(areas):
            past = loss[a, lo:d][::-1]
            past_x = x_all[a, lo:d][::-1]
            with np.errstate(invalid="ignore"):
                usable = (
                    (status[a, lo:d][::-1] == STATUS_QUALIFIED)
                    & (learnable[a, lo:d][::-1] != 0)
                    & ~np.isnan(past)
                    & (past_x > 0.0)
                )
            chosen = np.flatnonzero(usable)[:window_days]
            n = chosen.size
            fitted = n >= min_history
            alpha = beta = 0.0
            offset = np.nan
            lo_x = hi_x = 1.0
            if fitted:
                ys, xs = past[chosen], past_x[chosen]
                if load_dependent:
                    i, j = np.triu_indices(n, k=1)
                    dx = xs[j] * xs[j] - xs[i] * xs[i]
                    keep = dx != 0.0
                    if keep.any():
                        dy = ys[j] * xs[j] / 100.0 - ys[i] * xs[i] / 100.0
                        beta = float(np.median(dy[keep] / dx[keep]))
                    alpha = float(np.median(ys * xs / 100.0 - beta * (xs * xs)))
                resid = ys - model_pct(alpha, beta, xs)
                offset = float(np.median(resid))
                mad = float(np.median(np.abs(resid - offset)))
                halfwidth[a, d] = max(k * mad, min_halfwidth)
                lo_x = 0.5 * xs.min()
                hi_x = 2.0 * xs.max()
                x_today = x_all[a, d]
                if not x_today > 0.0:
                    x_today = 0.5 * (lo_x + hi_x)
                x_today = min(max(x_today, lo_x), hi_x)
                center[a, d] = offset + float(model_pct(alpha, beta, np.array([x_today]))[0])
            if given[a, d] != UNCLASSIFIED:
                status[a, d] = given[a, d]
                continue
            value = loss[a, d]
            width = halfwidth[a, d] + allowance[a, d]
            sustained = np.nan
            if sustained_days > 0 and fitted:
                s0 = max(0, d - sustained_days + 1)
                recent, recent_x = loss[a, s0 : d + 1], x_all[a, s0 : d + 1]
                with np.errstate(invalid="ignore"):
                    ok = (
                        (calculable[a, s0 : d + 1] != 0)
                        & (learnable[a, s0 : d + 1] != 0)
                        & ~np.isnan(recent)
                        & (recent_x > 0.0)
                    )
                if 2 * ok.sum() >= sustained_days:
                    x_ok = np.minimum(np.maximum(recent_x[ok], lo_x), hi_x)
                    resid_recent = recent[ok] - (offset + model_pct(alpha, beta, x_ok))
                    sustained = float(np.cumsum(resid_recent)[-1]) / ok.sum()
            if calculable[a, d] == 0 or np.isnan(value):
                status[a, d] = STATUS_UNCALCULABLE
            elif value > upper_guard:
                status[a, d] = STATUS_HIGH
            elif value < lower_guard:
                status[a, d] = STATUS_NEGATIVE
            elif fitted and value > center[a, d] + width:
                status[a, d] = STATUS_HIGH
            elif fitted and value < center[a, d] - width:
                status[a, d] = STATUS_NEGATIVE
            elif (
                fitted
                and sustained > sustained_fraction * width
                and value - center[a, d] > 0.5 * sustained_fraction * width
            ):
                status[a, d] = STATUS_HIGH
            elif (
                fitted
                and sustained < -sustained_fraction * width
                and value - center[a, d] < -0.5 * sustained_fraction * width
            ):
                status[a, d] = STATUS_NEGATIVE
            else:
                status[a, d] = STATUS_QUALIFIED
    return status, center, halfwidth


def classify_losses(
    loss: F64,
    calculable: U8,
    settings: BandSettings | None = None,
    given: U8 | None = None,
    learnable: U8 | None = None,
    allowance: F64 | None = None,
    load: F64 | None = None,
) -> tuple[U8, F64, F64]:
    """Validated entry point of :func:`classify_losses_nb`. Defaults: judge every day, every
    day may teach the band, no allowance; ``load`` (the master's energy per day) is needed when
    ``settings.load_dependent``."""
    settings = settings or BandSettings()
    loss = _f64(loss, "loss", 2)
    calculable = _same(calculable, loss, "calculable", np.uint8)
    if given is None:
        given = np.full(loss.shape, UNCLASSIFIED, dtype=np.uint8)
    given = _same(given, loss, "given", np.uint8)
    bad = (given != UNCLASSIFIED) & (given > STATUS_UNCALCULABLE)
    if bad.any():
        raise ValueError(f"given statuses must be 0..3 or {UNCLASSIFIED} (judge this day)")
    learnable = np.ones(loss.shape, dtype=np.uint8) if learnable is None else learnable
    learnable = _same(learnable, loss, "learnable", np.uint8)
    allowance = np.zeros(loss.shape) if allowance is None else allowance
    allowance = _same(allowance, loss, "allowance", np.float64)
    if not np.all(allowance >= 0.0):
        raise ValueError("allowance must be finite percentage points >= 0")
    if load is None:
        if settings.load_dependent:
            raise ValueError("a load-dependent band needs the master's energy per day (load)")
        load = np.zeros(loss.shape)
    load = _same(load, loss, "load", np.float64)
    return classify_losses_nb(
        loss,
        calculable,
        given,
        learnable,
        allowance,
        load,
        bool(settings.load_dependent),
        float(settings.k),
        int(settings.window_days),
        int(settings.lookback_days),
        int(settings.min_history),
        float(settings.min_halfwidth_pct),
        float(settings.lower_guard_pct),
        float(settings.upper_guard_pct),
        int(settings.sustained_days),
        float(settings.sustained_fraction),
    )


def classify_fixed_band(
    loss: F64, calculable: U8, low_pct: float = 0.0, high_pct: float = 10.0
) -> U8:
    """The utilities' customary rule, used as the baseline: qualified inside a fixed
    ``low_pct``..``high_pct`` band, the same coverage gate, no learning."""
    loss = _f64(loss, "loss", 2)
    calculable = _same(calculable, loss, "calculable", np.uint8)
    with np.errstate(invalid="ignore"):
        status = np.select(
            [(calculable == 0) | np.isnan(loss), loss > high_pct, loss < low_pct],
            [STATUS_UNCALCULABLE, STATUS_HIGH, STATUS_NEGATIVE],
            default=STATUS_QUALIFIED,
        )
    result: U8 = status.astype(np.uint8)
    return result


# --------------------------------------------------------------------------------------------


def _f64(array: F64, name: str, ndim: int) -> F64:
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array")
    result: F64 = np.ascontiguousarray(array, dtype=np.float64)
    return result


def _same(array: NDArray[_T], like: F64, name: str, dtype: type[_T]) -> NDArray[_T]:
    if not isinstance(array, np.ndarray) or array.shape != like.shape:
        raise ValueError(f"{name} must be shaped like the first array, {like.shape}")
    result: NDArray[_T] = np.ascontiguousarray(array, dtype=dtype)
    return result


# --------------------------------------------------------------------------------------------
# What a sub-meter should have used on a day it was not read
# --------------------------------------------------------------------------------------------


@njit
def expected_day_energy_nb(
    energy: F64, quality: U8, master: F64, weeks: int, typical_days: int, search_days: int
) -> F64:
    """Each row's expected energy for every day from its own past, (rows, days); NaN where
    there is nothing to go on.

    Like days first: the median of the row's actual energy on the same weekday over the last
    ``weeks`` weeks, scaled by how the area's master moved since (its energy today over its
    median on those same days) — a shop's Sunday looks like its last Sundays, and a cold week
    shows in the master. With fewer than two like days: the median of the row's share of the
    master over its last ``typical_days`` actual days within ``search_days``, times today's
    master. Only actual days feed an estimate, so a long outage does not copy estimates
    forward; only days before the one estimated are used.

    Why: the coverage gate lets an area with 98 % actual sub-meters through, and a sum missing
    one customer would overstate the loss by that customer's whole share. The caller splits a
    bracketed register gap in proportion to these estimates (the gap's total is exact) and
    fills what is still missing with them.
    """
    rows, days = energy.shape
    expected = np.full((rows, days), np.nan)
    like = np.empty(max(weeks, 1), dtype=np.float64)
    like_master = np.empty(max(weeks, 1), dtype=np.float64)
    recent = np.empty(max(typical_days, 1), dtype=np.float64)
    for r in range(rows):
        for d in range(days):
            m_today = master[r, d]
            if not (m_today > 0.0):
                continue
            n = 0
            for k in range(1, weeks + 1):
                j = d - 7 * k
                if j < 0:
                    break
                x = energy[r, j]
                mj = master[r, j]
                if x == x and quality[r, j] == QUALITY_A and mj > 0.0:
                    like[n] = x
                    like_master[n] = mj
                    n += 1
            if n >= 2:
                level = _median_sorted(np.sort(like[:n]), n)
                reference = _median_sorted(np.sort(like_master[:n]), n)
                expected[r, d] = level * (m_today / reference)
                continue
            n = 0
            j = d - 1
            while j >= 0 and j >= d - search_days and n < typical_days:
                x = energy[r, j]
                mj = master[r, j]
                if x == x and quality[r, j] == QUALITY_A and mj > 0.0:
                    recent[n] = x / mj
                    n += 1
                j -= 1
            if n > 0:
                expected[r, d] = _median_sorted(np.sort(recent[:n]), n) * m_today
    return expected


def expected_day_energy_np(
    energy: F64, quality: U8, master: F64, weeks: int, typical_days: int, search_days: int
) -> F64:
    """NumPy twin of :func:`expected_day_energy_nb` (vectorised over rows, a day at a time)."""
    rows, days = energy.shape
    expected = np.full((rows, days), np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        usable = ~np.isnan(energy) & (quality == QUALITY_A) & (master > 0.0)
        shares = np.where(usable, energy / np.where(master > 0.0, master, 1.0), np.nan)
    for d in range(days):
        m_today = master[:, d]
        with np.errstate(invalid="ignore"):
            live = m_today > 0.0
        lags = [d - 7 * k for k in range(1, weeks + 1) if d - 7 * k >= 0]
        like_ok = usable[:, lags] if lags else np.zeros((rows, 0), dtype=bool)
        n_like = like_ok.sum(axis=1)
        by_like = live & (n_like >= 2)
        if by_like.any():
            with _quiet():
                level = np.nanmedian(np.where(like_ok, energy[:, lags], np.nan)[by_like], axis=1)
                reference = np.nanmedian(
                    np.where(like_ok, master[:, lags], np.nan)[by_like], axis=1
                )
            expected[by_like, d] = level * (m_today[by_like] / reference)
        rest = live & ~by_like
        if rest.any():
            lo = max(0, d - search_days)
            have = usable[rest, lo:d][:, ::-1]
            chosen = have & (np.cumsum(have, axis=1) <= typical_days)
            ok = chosen.any(axis=1)
            if ok.any():
                picked = np.where(chosen, shares[rest, lo:d][:, ::-1], np.nan)[ok]
                target = np.flatnonzero(rest)[ok]
                expected[target, d] = np.nanmedian(picked, axis=1) * m_today[target]
    return expected


def expected_day_energy(
    energy: F64,
    quality: U8,
    master: F64,
    weeks: int = 4,
    typical_days: int = 7,
    search_days: int = 28,
) -> F64:
    """Validated entry point of :func:`expected_day_energy_nb`; ``master`` is each row's area
    master energy per day, shaped like ``energy``."""
    energy = _f64(energy, "energy", 2)
    quality = _same(quality, energy, "quality", np.uint8)
    master = _same(master, energy, "master", np.float64)
    if weeks < 0 or typical_days < 1 or search_days < 1:
        raise ValueError("weeks must be >= 0, typical_days and search_days >= 1")
    return expected_day_energy_nb(
        energy, quality, master, int(weeks), int(typical_days), int(search_days)
    )


class _quiet:
    """nanmedian of an all-NaN row warns and returns NaN; NaN is the wanted answer."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(None, None, None)
