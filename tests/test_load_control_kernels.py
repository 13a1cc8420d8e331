"""edge_rules/load_limits.py: each numba kernel equals its NumPy twin on generated inputs (NaN,
empty, single-element, extreme values), and the semantics hold on hand-checked cases: kind
priority, the security floor, local-time calendars, hysteresis states, float-down reference."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_rules.load_limits import (
    KIND_BUSINESS_SUSPENSION,
    KIND_FACTORY_REST,
    KIND_FLOAT_DOWN,
    KIND_NONE,
    KIND_TIME_PERIOD,
    MAX_PERIODS,
    N_FIXED_KINDS,
    N_KINDS,
    STATE_NO_DATA,
    STATE_NO_LIMIT,
    STATE_OVER,
    STATE_UNDER,
    STATE_WITHIN,
    LimitSchedule,
    effective_limits,
    effective_limits_nb,
    effective_limits_np,
    float_down_reference,
    float_down_reference_nb,
    float_down_reference_np,
    limit_states_nb,
    limit_states_np,
    sliding_mean,
    sliding_mean_nb,
    sliding_mean_np,
)

CST = dt.timezone(dt.timedelta(hours=8))
OFFSET_MS = 8 * 3600 * 1000


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    """Compile every kernel once for the module (a cold numba cache compiles here, not inside
    a hypothesis example's deadline)."""
    power = np.ones((1, 2))
    sliding_mean(power, np.array([1]))
    float_down_reference(power, np.array([1]), np.array([1]), np.array([0.0]))
    effective_limits(np.array([0]), LimitSchedule.empty(1))
    limit_states_nb(power, power, np.array([0.0]))


def ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=CST).timestamp() * 1000)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

_power_values = st.one_of(
    st.just(np.nan),
    st.floats(min_value=-1e6, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e15]),
)


@st.composite
def power_and_window(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    groups = draw(st.integers(0, 4))
    n_t = draw(st.integers(0, 30))
    power = draw(hnp.arrays(np.float64, (groups, n_t), elements=_power_values))
    window = draw(hnp.arrays(np.int64, (groups,), elements=st.integers(1, 40)))
    return power, window


_times = st.integers(min_value=-(2**40), max_value=2**42)
_validity = st.one_of(st.just(np.iinfo(np.int64).min), st.just(np.iinfo(np.int64).max), _times)
_kw = st.one_of(st.just(np.nan), st.floats(0, 1e6, allow_nan=False))


@st.composite
def schedules(draw: Any) -> tuple[np.ndarray, LimitSchedule]:
    groups = draw(st.integers(0, 3))
    n_t = draw(st.integers(0, 12))
    t_ms = draw(hnp.arrays(np.int64, (n_t,), elements=_times))
    schedule = LimitSchedule(
        kind_from_ms=draw(hnp.arrays(np.int64, (groups, N_KINDS), elements=_validity)),
        kind_until_ms=draw(hnp.arrays(np.int64, (groups, N_KINDS), elements=_validity)),
        fixed_kw=draw(hnp.arrays(np.float64, (groups, N_FIXED_KINDS), elements=_kw)),
        rest_weekdays=draw(hnp.arrays(np.int64, (groups,), elements=st.integers(0, 127))),
        rest_start_min=draw(hnp.arrays(np.int64, (groups,), elements=st.integers(0, 1439))),
        rest_duration_min=draw(hnp.arrays(np.int64, (groups,), elements=st.integers(0, 1440))),
        period_start_min=draw(hnp.arrays(np.int64, (groups, MAX_PERIODS),
                                         elements=st.integers(0, 1439))),
        period_end_min=draw(hnp.arrays(np.int64, (groups, MAX_PERIODS),
                                       elements=st.integers(0, 1440))),
        period_kw=draw(hnp.arrays(np.float64, (groups, MAX_PERIODS), elements=_kw)),
        floor_kw=draw(hnp.arrays(np.float64, (groups,), elements=_kw)),
        utc_offset_ms=draw(st.sampled_from([0, OFFSET_MS, -5 * 3600 * 1000, 345 * 60 * 1000])),
    )
    return t_ms, schedule


def _args(t_ms: np.ndarray, s: LimitSchedule) -> tuple[Any, ...]:
    return (t_ms, s.kind_from_ms, s.kind_until_ms, s.fixed_kw, s.rest_weekdays, s.rest_start_min,
            s.rest_duration_min, s.period_start_min, s.period_end_min, s.period_kw, s.floor_kw,
            s.utc_offset_ms)


# --------------------------------------------------------------------------------------------
# numba == NumPy
# --------------------------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(power_and_window())
def test_sliding_mean_twins_agree(case: tuple[np.ndarray, np.ndarray]) -> None:
    power, window = case
    # Exact: both add the same values in the same order (the twin adds 0.0 for a gap).
    np.testing.assert_array_equal(sliding_mean_nb(power, window), sliding_mean_np(power, window))


@settings(max_examples=250, deadline=None)
@given(power_and_window(), st.data())
def test_float_down_reference_twins_agree(case: tuple[np.ndarray, np.ndarray], data: Any) -> None:
    power, window = case
    groups, n_t = power.shape
    end = data.draw(hnp.arrays(np.int64, (groups,), elements=st.integers(-2, n_t + 2)))
    coefficient = data.draw(hnp.arrays(np.float64, (groups,),
                                       elements=st.floats(-0.99, 1.0, allow_nan=False)))
    np.testing.assert_array_equal(float_down_reference_nb(power, end, window, coefficient),
                                  float_down_reference_np(power, end, window, coefficient))


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_effective_limits_twins_agree(case: tuple[np.ndarray, LimitSchedule]) -> None:
    t_ms, schedule = case
    limit_nb, kind_nb = effective_limits_nb(*_args(t_ms, schedule))
    limit_np, kind_np = effective_limits_np(*_args(t_ms, schedule))
    np.testing.assert_array_equal(kind_nb, kind_np)
    np.testing.assert_array_equal(limit_nb, limit_np)
    assert kind_nb.dtype == np.uint8 and limit_nb.dtype == np.float64


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_limit_states_twins_agree(data: Any) -> None:
    groups = data.draw(st.integers(0, 4))
    n_t = data.draw(st.integers(0, 20))
    values = st.one_of(st.just(np.nan), st.floats(-1e6, 1e6, allow_nan=False),
                       st.sampled_from([0.0, 100.0, 95.0]))
    compared = data.draw(hnp.arrays(np.float64, (groups, n_t), elements=values))
    limit = data.draw(hnp.arrays(np.float64, (groups, n_t), elements=values))
    hysteresis = data.draw(hnp.arrays(np.float64, (groups,),
                                      elements=st.sampled_from([0.0, 0.05, 0.5, 0.999])))
    np.testing.assert_array_equal(limit_states_nb(compared, limit, hysteresis),
                                  limit_states_np(compared, limit, hysteresis))


# --------------------------------------------------------------------------------------------
# Semantics
# --------------------------------------------------------------------------------------------


def test_sliding_mean_skips_gaps_and_clips_at_the_start() -> None:
    power = np.array([[10.0, np.nan, 30.0, 50.0, np.nan, np.nan, np.nan]])
    out = sliding_mean(power, np.array([3]))
    np.testing.assert_array_equal(out[0, :6], [10.0, 10.0, 20.0, 40.0, 40.0, 50.0])
    assert np.isnan(out[0, 6])  # three empty intervals: no power, no judgement


def test_float_down_reference_is_window_mean_times_coefficient() -> None:
    power = np.array([[100.0, 120.0, 140.0, 160.0, 999.0]])
    # Window of 3 ending at index 3: mean(120, 140, 160) = 140; coefficient -20 % → 112.
    out = float_down_reference(power, np.array([3]), np.array([3]), np.array([-0.2]))
    assert out[0] == pytest.approx(112.0, rel=1e-15)
    exporting = float_down_reference(np.array([[-50.0, -10.0]]), np.array([1]), np.array([2]),
                                     np.array([0.1]))
    assert exporting[0] == 0.0  # an exporting group has nothing to float down from
    empty = float_down_reference(np.array([[np.nan, np.nan]]), np.array([1]), np.array([2]),
                                 np.array([0.0]))
    assert np.isnan(empty[0])


def _schedule_all_kinds() -> LimitSchedule:
    """One group with all four kinds installed around Monday 2025-03-03 (local)."""
    s = LimitSchedule.empty(1, OFFSET_MS)
    s.kind_from_ms[0, :] = np.iinfo(np.int64).min
    s.kind_until_ms[0, :] = np.iinfo(np.int64).max
    # float-down only 10:00-11:00 Monday; business suspension only Monday 09:00-12:00.
    s.kind_from_ms[0, 0], s.kind_until_ms[0, 0] = ms(2025, 3, 3, 10), ms(2025, 3, 3, 11)
    s.kind_from_ms[0, 1], s.kind_until_ms[0, 1] = ms(2025, 3, 3, 9), ms(2025, 3, 3, 12)
    s.fixed_kw[0, :] = [40.0, 60.0, 80.0]
    s.rest_weekdays[0] = 0b0000001  # Mondays
    s.rest_start_min[0] = 8 * 60
    s.rest_duration_min[0] = 6 * 60  # 08:00-14:00
    s.period_start_min[0, 0], s.period_end_min[0, 0], s.period_kw[0, 0] = 7 * 60, 22 * 60, 100.0
    return s


@pytest.mark.parametrize(
    ("hour", "minute", "kind", "limit"),
    [
        (6, 59, KIND_NONE, None),                        # nothing in force yet
        (7, 30, KIND_TIME_PERIOD, 100.0),                # only the time period
        (8, 0, KIND_FACTORY_REST, 80.0),                 # factory rest beats time period
        (9, 0, KIND_BUSINESS_SUSPENSION, 60.0),          # business suspension beats factory rest
        (10, 0, KIND_FLOAT_DOWN, 40.0),                  # float-down beats everything
        (10, 59, KIND_FLOAT_DOWN, 40.0),
        (11, 0, KIND_BUSINESS_SUSPENSION, 60.0),         # float-down over
        (12, 0, KIND_FACTORY_REST, 80.0),                # business suspension over
        (14, 0, KIND_TIME_PERIOD, 100.0),                # factory rest over
        (22, 0, KIND_NONE, None),                        # window end is exclusive
    ],
)
def test_priority_among_limit_kinds(hour: int, minute: int, kind: int, limit: float | None) -> None:
    limits, kinds = effective_limits(np.array([ms(2025, 3, 3, hour, minute)]), _schedule_all_kinds())
    assert kinds[0, 0] == kind
    if limit is None:
        assert np.isnan(limits[0, 0])
    else:
        assert limits[0, 0] == limit


def test_security_floor_raises_the_limit_but_never_creates_one() -> None:
    s = _schedule_all_kinds()
    s.floor_kw[0] = 70.0
    t = np.array([ms(2025, 3, 3, 10, 30), ms(2025, 3, 3, 9), ms(2025, 3, 3, 12), ms(2025, 3, 3, 23)])
    limits, kinds = effective_limits(t, s)
    assert limits[0, 0] == 70.0 and kinds[0, 0] == KIND_FLOAT_DOWN  # 40 floored to 70
    assert limits[0, 1] == 70.0  # business suspension 60 → 70
    assert limits[0, 2] == 80.0  # factory rest already above the floor
    assert np.isnan(limits[0, 3]) and kinds[0, 3] == KIND_NONE


def test_factory_rest_runs_past_midnight_on_its_weekdays_in_local_time() -> None:
    s = LimitSchedule.empty(1, OFFSET_MS)
    s.kind_from_ms[0, 2], s.kind_until_ms[0, 2] = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    s.fixed_kw[0, 2] = 50.0
    s.rest_weekdays[0] = 1 << 4  # Friday
    s.rest_start_min[0] = 22 * 60
    s.rest_duration_min[0] = 8 * 60  # Friday 22:00 → Saturday 06:00 (local)
    # 2025-03-07 is a Friday.
    inside = [ms(2025, 3, 7, 22), ms(2025, 3, 8, 0), ms(2025, 3, 8, 5, 59)]
    outside = [ms(2025, 3, 7, 21, 59), ms(2025, 3, 8, 6), ms(2025, 3, 8, 22), ms(2025, 3, 6, 23)]
    _, kinds = effective_limits(np.array(inside + outside), s)
    assert list(kinds[0]) == [KIND_FACTORY_REST] * 3 + [KIND_NONE] * 4


def test_time_period_window_over_midnight_and_validity() -> None:
    s = LimitSchedule.empty(1, OFFSET_MS)
    s.kind_from_ms[0, 3] = ms(2025, 3, 1, 0)
    s.kind_until_ms[0, 3] = ms(2025, 3, 10, 0)
    s.period_start_min[0, 0], s.period_end_min[0, 0], s.period_kw[0, 0] = 23 * 60, 2 * 60, 30.0
    s.period_start_min[0, 1], s.period_end_min[0, 1], s.period_kw[0, 1] = 18 * 60, 1440, 90.0
    t = np.array([ms(2025, 3, 5, 23, 30), ms(2025, 3, 5, 1), ms(2025, 3, 5, 19), ms(2025, 3, 5, 3),
                  ms(2025, 3, 11, 23, 30)])
    limits, kinds = effective_limits(t, s)
    assert limits[0, 0] == 30.0  # both windows cover 23:30: the first listed wins
    assert limits[0, 1] == 30.0
    assert limits[0, 2] == 90.0
    assert np.isnan(limits[0, 3])
    assert kinds[0, 4] == KIND_NONE  # past the validity range


def test_limit_states_with_hysteresis_band() -> None:
    compared = np.array([[101.0, 100.0, 96.0, 95.0, 10.0, np.nan, 50.0]])
    limit = np.array([[100.0, 100.0, 100.0, 100.0, 100.0, 100.0, np.nan]])
    states = limit_states_nb(compared, limit, np.array([0.05]))
    assert list(states[0]) == [STATE_OVER, STATE_WITHIN, STATE_WITHIN, STATE_UNDER, STATE_UNDER,
                               STATE_NO_DATA, STATE_NO_LIMIT]


def test_entry_points_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="window must be at least 1"):
        sliding_mean(np.ones((1, 3)), np.array([0]))
    with pytest.raises(ValueError, match="2-D"):
        sliding_mean(np.ones(3), np.array([1]))
    with pytest.raises(ValueError, match="integer array of shape"):
        float_down_reference(np.ones((2, 3)), np.array([1]), np.array([1, 1]), np.zeros(2))
    good = LimitSchedule.empty(2)
    fields = {f: getattr(good, f) for f in LimitSchedule.__dataclass_fields__}
    with pytest.raises(ValueError, match="period_kw"):
        effective_limits(np.array([0]), LimitSchedule(**{**fields, "period_kw": np.zeros((2, 3))}))
