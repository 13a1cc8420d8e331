"""Load-control limit evaluation (Q/GDW 1376.1 power control, 功控): the numeric part.

The load-control engine (``gateway/load_control``) decides *what to do*; these kernels say, per
group and instant, *where the group stands*: the power it is judged on, the limit in force, which
limit kind set it, and whether the group is over, within the hysteresis band, or under. The
engine calls them with a handful of columns; the same functions evaluate a whole day offline
(what-if studies, tests), so the engine and any report agree by construction.

Power compared (1376.1 F43 "功率控制的功率计算滑差时间")
    The mean of the last ``window`` intervals of group power, counting only intervals that have
    a value (NaN = no sample); NaN when none has. Terminals judge a sliding mean, not a single
    sample, so a motor start does not shed a customer.

Limit kinds, highest priority first (1376.1 §"控制优先级": 当前功率下浮控 > 营业报停控 > 厂休控 >
时段控). Only the highest-priority kind in force applies; lower ones are ignored, not combined:

1. ``KIND_FLOAT_DOWN`` (当前功率下浮控, AFN05 F12): a fixed kW computed once, when the command
   "freezes", from the mean power of a sliding window before that moment × (1 + coefficient) —
   :func:`float_down_reference`. In force over ``[from, until)``.
2. ``KIND_BUSINESS_SUSPENSION`` (营业报停控, F44): a kW over an absolute range ``[from, until)``.
3. ``KIND_FACTORY_REST`` (厂休控, F42): a kW on the weekdays of a mask (bit 0 = Monday … bit 6 =
   Sunday, in the meters' local time) from a start minute for a duration (≤ 24 h, so a rest
   period may run past midnight into the next day).
4. ``KIND_TIME_PERIOD`` (时段控, F41): up to 8 daily local windows ``[start, end)`` in minutes,
   each with its own kW; a window with ``start > end`` runs over midnight, ``start == end`` is
   empty. Windows should not overlap (the engine rejects overlaps); if they do, the first in
   index order wins.

Every kind also has a validity range ``[from_ms, until_ms)``; outside it the kind is absent.

Security floor (保安定值, F17): the effective limit is ``max(limit, floor)`` — load control never
sheds below it. A floor alone does not create a limit.

State per group and interval (``uint8``): ``STATE_NO_LIMIT`` (no kind in force), ``STATE_NO_DATA``
(a limit but no power to judge), ``STATE_OVER`` (compared > limit), ``STATE_UNDER`` (compared ≤
limit × (1 − hysteresis): room to restore), ``STATE_WITHIN`` (between the two: hold position).

Layout (docs/dev/kernels.md): power is ``(groups, intervals)`` float64, NaN missing; time is
int64 UTC milliseconds per interval (the instant the column is judged at; intervals need not be
regular); per-group parameters are 1-D, per-kind parameters ``(groups, 4)``, the fixed kW of
kinds 1–3 ``(groups, 3)``, the time-period windows ``(groups, 8)``.

Exactness: sliding sums add values oldest first, skipping NaN, in the kernel and in its NumPy
twin alike (the twin adds 0.0 for a missing value, which leaves a float sum unchanged), so the
two agree bit for bit and the tests compare them with ``==``. The cost is O(intervals × window)
rather than a running sum whose rounding would depend on history; windows are ≤ 60 intervals
at the standard's one-minute resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit

__all__ = [
    "KIND_BUSINESS_SUSPENSION",
    "KIND_FACTORY_REST",
    "KIND_FLOAT_DOWN",
    "KIND_NAMES",
    "KIND_NONE",
    "KIND_TIME_PERIOD",
    "MAX_PERIODS",
    "N_FIXED_KINDS",
    "N_KINDS",
    "STATE_NAMES",
    "STATE_NO_DATA",
    "STATE_NO_LIMIT",
    "STATE_OVER",
    "STATE_UNDER",
    "STATE_WITHIN",
    "LimitSchedule",
    "effective_limits",
    "effective_limits_nb",
    "effective_limits_np",
    "float_down_reference",
    "float_down_reference_nb",
    "float_down_reference_np",
    "limit_states",
    "limit_states_nb",
    "limit_states_np",
    "sliding_mean",
    "sliding_mean_nb",
    "sliding_mean_np",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]

KIND_NONE: Final = 0
KIND_FLOAT_DOWN: Final = 1
KIND_BUSINESS_SUSPENSION: Final = 2
KIND_FACTORY_REST: Final = 3
KIND_TIME_PERIOD: Final = 4
N_KINDS: Final = 4
#: Kinds whose limit is one number (float-down, business suspension, factory rest).
N_FIXED_KINDS: Final = 3
MAX_PERIODS: Final = 8
KIND_NAMES: Final = ("none", "float_down", "business_suspension", "factory_rest", "time_period")

STATE_NO_LIMIT: Final = 0
STATE_UNDER: Final = 1
STATE_WITHIN: Final = 2
STATE_OVER: Final = 3
STATE_NO_DATA: Final = 4
STATE_NAMES: Final = ("no_limit", "under", "within", "over", "no_data")

_MINUTE_MS: Final = 60_000
_DAY_MIN: Final = 1440
# 1970-01-01 was a Thursday: weekday (Monday = 0) of local day d is (d + 3) % 7.
_EPOCH_WEEKDAY: Final = 3


# --------------------------------------------------------------------------------------------
# Sliding mean of group power
# --------------------------------------------------------------------------------------------


@njit
def sliding_mean_nb(power: F64, window: I64) -> F64:
    """Mean of the non-NaN values among intervals ``[i - window[g] + 1, i]`` of each group row
    (clipped at the first interval); NaN where none has a value."""
    groups, n_t = power.shape
    out = np.empty((groups, n_t), dtype=np.float64)
    for g in range(groups):
        w = window[g]
        for i in range(n_t):
            total = 0.0
            count = 0
            for j in range(max(i - w + 1, 0), i + 1):
                v = power[g, j]
                if v == v:
                    total += v
                    count += 1
            out[g, i] = total / count if count > 0 else np.nan
    return out


def sliding_mean_np(power: F64, window: I64) -> F64:
    """NumPy twin of :func:`sliding_mean_nb`: one pass per window offset, oldest first, over all
    groups and intervals at once (a front pad of NaN stands for "before the first interval")."""
    groups, n_t = power.shape
    if groups == 0 or n_t == 0:
        return np.empty((groups, n_t), dtype=np.float64)
    widest = int(window.max())
    padded = np.concatenate([np.full((groups, widest - 1), np.nan), power], axis=1)
    present_all = ~np.isnan(padded)
    values_all = np.where(present_all, padded, 0.0)
    total = np.zeros((groups, n_t), dtype=np.float64)
    count = np.zeros((groups, n_t), dtype=np.int64)
    for k in range(widest):
        in_window = (k >= widest - window)[:, None]  # offset k counts for groups with w > widest-1-k
        present = present_all[:, k : k + n_t] & in_window
        total += np.where(present, values_all[:, k : k + n_t], 0.0)
        count += present
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    result: F64 = np.where(count > 0, mean, np.nan)
    return result


def sliding_mean(power: F64, window: I64) -> F64:
    """Validated entry point of :func:`sliding_mean_nb` (windows in intervals, ≥ 1)."""
    power = _f64_2d(power, "power")
    window = _i64_1d(window, power.shape[0], "window")
    if window.size and int(window.min()) < 1:
        raise ValueError("window must be at least 1 interval for every group")
    return sliding_mean_nb(power, window)


# --------------------------------------------------------------------------------------------
# Float-down reference (当前功率下浮控定值)
# --------------------------------------------------------------------------------------------


@njit
def float_down_reference_nb(
    power: F64, end_index: I64, window: I64, coefficient: F64
) -> F64:
    """Float-down limit per group: ``max(mean, 0) × (1 + coefficient)`` where ``mean`` is the
    mean of the non-NaN values of intervals ``[end - window + 1, end]`` (clipped to the row).

    NaN when the window holds no value or ``end`` lies outside the row: a limit computed from no
    data would be a guess, and guessing is how customers get shed by mistake. The mean is
    clamped at 0 because a group exporting during the window (negative power) has no import to
    float down from.
    """
    groups, n_t = power.shape
    out = np.empty(groups, dtype=np.float64)
    for g in range(groups):
        end = end_index[g]
        if end < 0 or end >= n_t:
            out[g] = np.nan
            continue
        total = 0.0
        count = 0
        for j in range(max(end - window[g] + 1, 0), end + 1):
            v = power[g, j]
            if v == v:
                total += v
                count += 1
        if count == 0:
            out[g] = np.nan
        else:
            out[g] = max(total / count, 0.0) * (1.0 + coefficient[g])
    return out


def float_down_reference_np(
    power: F64, end_index: I64, window: I64, coefficient: F64
) -> F64:
    """NumPy twin of :func:`float_down_reference_nb` (the same sliding mean, read at ``end``)."""
    groups, n_t = power.shape
    out = np.full(groups, np.nan)
    if groups == 0 or n_t == 0:
        return out
    means = sliding_mean_np(power, window)
    inside = (end_index >= 0) & (end_index < n_t)
    rows = np.flatnonzero(inside)
    picked = means[rows, end_index[rows]]
    out[rows] = np.maximum(picked, 0.0) * (1.0 + coefficient[rows])  # NaN stays NaN
    return out


def float_down_reference(power: F64, end_index: I64, window: I64, coefficient: F64) -> F64:
    """Validated entry point of :func:`float_down_reference_nb`. ``coefficient`` is a fraction
    (−0.2 = "20 % below the reference")."""
    power = _f64_2d(power, "power")
    groups = power.shape[0]
    end_index = _i64_1d(end_index, groups, "end_index")
    window = _i64_1d(window, groups, "window")
    coefficient = _f64_1d(coefficient, groups, "coefficient")
    if window.size and int(window.min()) < 1:
        raise ValueError("window must be at least 1 interval for every group")
    return float_down_reference_nb(power, end_index, window, coefficient)


# --------------------------------------------------------------------------------------------
# Effective limit per group and instant
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitSchedule:
    """The limit parameters of ``groups`` groups, as the kernel reads them (module docstring).

    ``kind_from_ms`` / ``kind_until_ms`` ``(groups, 4)`` validity per kind (index = kind − 1);
    ``fixed_kw`` ``(groups, 3)`` limits of float-down, business suspension and factory rest
    (NaN = not installed); ``rest_weekdays`` (bit mask, Monday = bit 0), ``rest_start_min`` and
    ``rest_duration_min`` the factory-rest calendar; ``period_start_min`` / ``period_end_min`` /
    ``period_kw`` ``(groups, 8)`` the time-period windows (NaN kW = unused); ``floor_kw`` the
    security floor (NaN = none); ``utc_offset_ms`` the meters' local time zone.
    """

    kind_from_ms: I64
    kind_until_ms: I64
    fixed_kw: F64
    rest_weekdays: I64
    rest_start_min: I64
    rest_duration_min: I64
    period_start_min: I64
    period_end_min: I64
    period_kw: F64
    floor_kw: F64
    utc_offset_ms: int

    @property
    def groups(self) -> int:
        return int(self.floor_kw.shape[0])

    @classmethod
    def empty(cls, groups: int, utc_offset_ms: int = 0) -> LimitSchedule:
        """``groups`` groups with no kind installed and no floor."""
        never_from = np.full((groups, N_KINDS), np.iinfo(np.int64).max, dtype=np.int64)
        never_until = np.full((groups, N_KINDS), np.iinfo(np.int64).min, dtype=np.int64)
        return cls(
            kind_from_ms=never_from,
            kind_until_ms=never_until,
            fixed_kw=np.full((groups, N_FIXED_KINDS), np.nan),
            rest_weekdays=np.zeros(groups, dtype=np.int64),
            rest_start_min=np.zeros(groups, dtype=np.int64),
            rest_duration_min=np.zeros(groups, dtype=np.int64),
            period_start_min=np.zeros((groups, MAX_PERIODS), dtype=np.int64),
            period_end_min=np.zeros((groups, MAX_PERIODS), dtype=np.int64),
            period_kw=np.full((groups, MAX_PERIODS), np.nan),
            floor_kw=np.full(groups, np.nan),
            utc_offset_ms=utc_offset_ms,
        )


@njit
def effective_limits_nb(
    t_ms: I64,
    kind_from_ms: I64,
    kind_until_ms: I64,
    fixed_kw: F64,
    rest_weekdays: I64,
    rest_start_min: I64,
    rest_duration_min: I64,
    period_start_min: I64,
    period_end_min: I64,
    period_kw: F64,
    floor_kw: F64,
    utc_offset_ms: int,
) -> tuple[F64, U8]:
    """The limit in force ``(groups, intervals)`` (NaN = none) and the kind that set it
    (``KIND_*``, 0 = none), by the fixed priority of the module docstring, floored."""
    groups = floor_kw.shape[0]
    n_t = t_ms.shape[0]
    limit = np.full((groups, n_t), np.nan)
    kind = np.zeros((groups, n_t), dtype=np.uint8)
    for i in range(n_t):
        t = t_ms[i]
        minute = (t + utc_offset_ms) // _MINUTE_MS
        day = minute // _DAY_MIN
        minute_of_day = minute - day * _DAY_MIN
        for g in range(groups):
            chosen = np.nan
            chosen_kind = 0
            for k in range(N_KINDS):
                if not kind_from_ms[g, k] <= t < kind_until_ms[g, k]:
                    continue
                value = np.nan
                if k == 0 or k == 1:
                    value = fixed_kw[g, k]
                elif k == 2:
                    for d in range(day - 1, day + 1):
                        weekday = (d + _EPOCH_WEEKDAY) % 7
                        offset = minute - (d * _DAY_MIN + rest_start_min[g])
                        if (rest_weekdays[g] >> weekday) & 1 and 0 <= offset < rest_duration_min[g]:
                            value = fixed_kw[g, 2]
                else:
                    for p in range(period_kw.shape[1]):
                        start = period_start_min[g, p]
                        end = period_end_min[g, p]
                        inside = (
                            start <= minute_of_day < end
                            if start <= end
                            else (minute_of_day >= start or minute_of_day < end)
                        )
                        if inside and period_kw[g, p] == period_kw[g, p]:
                            value = period_kw[g, p]
                            break
                if value == value:
                    chosen = value
                    chosen_kind = k + 1
                    break
            if chosen_kind != 0:
                floor = floor_kw[g]
                limit[g, i] = max(chosen, floor) if floor == floor else chosen
                kind[g, i] = chosen_kind
    return limit, kind


def effective_limits_np(
    t_ms: I64,
    kind_from_ms: I64,
    kind_until_ms: I64,
    fixed_kw: F64,
    rest_weekdays: I64,
    rest_start_min: I64,
    rest_duration_min: I64,
    period_start_min: I64,
    period_end_min: I64,
    period_kw: F64,
    floor_kw: F64,
    utc_offset_ms: int,
) -> tuple[F64, U8]:
    """NumPy twin of :func:`effective_limits_nb`: one boolean ``(groups, intervals)`` mask per
    kind, then the kinds applied lowest priority first so the highest overwrites."""
    groups = floor_kw.shape[0]
    n_t = t_ms.shape[0]
    minute = (t_ms + np.int64(utc_offset_ms)) // _MINUTE_MS  # floor division, as the kernel
    day = minute // _DAY_MIN
    minute_of_day = minute - day * _DAY_MIN

    def valid(k: int) -> NDArray[np.bool_]:
        return (kind_from_ms[:, k, None] <= t_ms[None, :]) & (t_ms[None, :] < kind_until_ms[:, k, None])

    values = np.full((N_KINDS, groups, n_t), np.nan)
    for k in range(2):  # float-down and business suspension: a kW over the validity range
        values[k] = np.where(valid(k), fixed_kw[:, k, None], np.nan)

    resting = np.zeros((groups, n_t), dtype=bool)
    for d in (day - 1, day):
        weekday = (d + _EPOCH_WEEKDAY) % 7
        offset = minute[None, :] - (d[None, :] * _DAY_MIN + rest_start_min[:, None])
        on_day = ((rest_weekdays[:, None] >> weekday[None, :]) & 1) == 1
        resting |= on_day & (offset >= 0) & (offset < rest_duration_min[:, None])
    values[2] = np.where(valid(2) & resting, fixed_kw[:, 2, None], np.nan)

    period_value = np.full((groups, n_t), np.nan)
    for p in range(period_kw.shape[1] - 1, -1, -1):  # reverse: the first matching window wins
        start = period_start_min[:, p, None]
        end = period_end_min[:, p, None]
        m = minute_of_day[None, :]
        inside = np.where(start <= end, (start <= m) & (m < end), (m >= start) | (m < end))
        usable = inside & ~np.isnan(period_kw[:, p, None])
        period_value = np.where(usable, period_kw[:, p, None], period_value)
    values[3] = np.where(valid(3), period_value, np.nan)

    limit = np.full((groups, n_t), np.nan)
    kind = np.zeros((groups, n_t), dtype=np.uint8)
    for k in range(N_KINDS - 1, -1, -1):
        present = ~np.isnan(values[k])
        limit = np.where(present, values[k], limit)
        kind = np.where(present, np.uint8(k + 1), kind).astype(np.uint8)
    floored = np.where(np.isnan(floor_kw)[:, None], limit, np.fmax(limit, floor_kw[:, None]))
    limit = np.where(kind > 0, floored, np.nan)
    return limit, kind


def effective_limits(t_ms: I64, schedule: LimitSchedule) -> tuple[F64, U8]:
    """Validated entry point of :func:`effective_limits_nb` for ``t_ms`` (UTC ms, 1-D)."""
    t = np.ascontiguousarray(t_ms, dtype=np.int64)
    if t.ndim != 1:
        raise ValueError("t_ms must be a 1-D array of UTC milliseconds")
    g = schedule.groups
    s = schedule
    return effective_limits_nb(
        t,
        _i64_2d(s.kind_from_ms, (g, N_KINDS), "kind_from_ms"),
        _i64_2d(s.kind_until_ms, (g, N_KINDS), "kind_until_ms"),
        _f64_shaped(s.fixed_kw, (g, N_FIXED_KINDS), "fixed_kw"),
        _i64_1d(s.rest_weekdays, g, "rest_weekdays"),
        _i64_1d(s.rest_start_min, g, "rest_start_min"),
        _i64_1d(s.rest_duration_min, g, "rest_duration_min"),
        _i64_2d(s.period_start_min, (g, MAX_PERIODS), "period_start_min"),
        _i64_2d(s.period_end_min, (g, MAX_PERIODS), "period_end_min"),
        _f64_shaped(s.period_kw, (g, MAX_PERIODS), "period_kw"),
        _f64_1d(s.floor_kw, g, "floor_kw"),
        int(s.utc_offset_ms),
    )


# --------------------------------------------------------------------------------------------
# Over / within / under
# --------------------------------------------------------------------------------------------


@njit
def limit_states_nb(compared: F64, limit: F64, hysteresis: F64) -> U8:
    """``STATE_*`` per group and interval; ``hysteresis`` is a fraction per group (0.05 = a
    group must fall 5 % below its limit before anything is restored)."""
    groups, n_t = compared.shape
    out = np.empty((groups, n_t), dtype=np.uint8)
    for g in range(groups):
        band = 1.0 - hysteresis[g]
        for i in range(n_t):
            lim = limit[g, i]
            c = compared[g, i]
            if lim != lim:
                out[g, i] = STATE_NO_LIMIT
            elif c != c:
                out[g, i] = STATE_NO_DATA
            elif c > lim:
                out[g, i] = STATE_OVER
            elif c <= lim * band:
                out[g, i] = STATE_UNDER
            else:
                out[g, i] = STATE_WITHIN
    return out


def limit_states_np(compared: F64, limit: F64, hysteresis: F64) -> U8:
    """NumPy twin of :func:`limit_states_nb`."""
    band = (1.0 - hysteresis)[:, None]
    with np.errstate(invalid="ignore"):
        state = np.where(compared > limit, STATE_OVER,
                         np.where(compared <= limit * band, STATE_UNDER, STATE_WITHIN))
    state = np.where(np.isnan(compared), STATE_NO_DATA, state)
    state = np.where(np.isnan(limit), STATE_NO_LIMIT, state)
    result: U8 = state.astype(np.uint8)
    return result


def limit_states(compared: F64, limit: F64, hysteresis: F64) -> U8:
    """Validated entry point of :func:`limit_states_nb`."""
    compared = _f64_2d(compared, "compared")
    limit = _f64_shaped(limit, compared.shape, "limit")
    hysteresis = _f64_1d(hysteresis, compared.shape[0], "hysteresis")
    return limit_states_nb(compared, limit, hysteresis)


# --------------------------------------------------------------------------------------------
# Shape and dtype checks of the public entry points
# --------------------------------------------------------------------------------------------


def _f64_2d(array: F64, name: str) -> F64:
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (groups, intervals)")
    result: F64 = np.ascontiguousarray(array, dtype=np.float64)
    return result


def _f64_shaped(array: F64, shape: tuple[int, ...], name: str) -> F64:
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{name} must be an array of shape {shape}")
    result: F64 = np.ascontiguousarray(array, dtype=np.float64)
    return result


def _f64_1d(array: F64, groups: int, name: str) -> F64:
    return _f64_shaped(array, (groups,), name)


def _i64_1d(array: I64, groups: int, name: str) -> I64:
    return _i64_2d(array, (groups,), name)


def _i64_2d(array: I64, shape: tuple[int, ...], name: str) -> I64:
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{name} must be an integer array of shape {shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got {array.dtype}")
    result: I64 = np.ascontiguousarray(array, dtype=np.int64)
    return result
