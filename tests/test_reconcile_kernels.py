"""Reconciliation kernels: numba equals the NumPy twin (exactly), and the statuses, the
differential check (1376.1 F15) and the check-meter tolerance behave as specified."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_rules import reconcile as r
from edge_rules import reconcile_checks as rc
from edge_rules.reconcile import (
    STATUS_HIGH,
    STATUS_NEGATIVE,
    STATUS_QUALIFIED,
    STATUS_UNCALCULABLE,
    UNCLASSIFIED,
    BandSettings,
)

EXAMPLES = settings(max_examples=120, deadline=None)

energy = st.one_of(st.floats(0, 5e3, allow_nan=False), st.just(np.nan), st.just(0.0))
anything = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(np.nan))


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True), (a, b)


@pytest.fixture(scope="module", autouse=True)
def warm_up() -> None:
    z = np.zeros((1, 1))
    u = np.zeros((1, 1), dtype=np.uint8)
    r.area_loss_nb(z, z, u, z, 0.98)
    r.classify_losses_nb(z, u, u, u, z, z, True, 6.0, 3, 10, 2, 0.5, -1.0, 10.0, 2, 0.5)
    rc.differential_check_nb(z, z, 1, True, 1.0)
    rc.check_meter_compare_nb(z, z, np.ones(1), 0.0)
    r.expected_day_energy_nb(z, u, z, 2, 2, 5)


shapes = st.tuples(st.integers(0, 4), st.integers(0, 10))


@EXAMPLES
@given(st.data(), shapes, st.floats(0, 1))
def test_area_loss_twins_agree(data: st.DataObject, shape: tuple[int, int], gate: float) -> None:
    master = data.draw(arrays(np.float64, shape, elements=anything))
    subs = data.draw(arrays(np.float64, shape, elements=anything))
    actual = data.draw(arrays(np.uint8, shape, elements=st.integers(0, 1)))
    coverage = data.draw(arrays(np.float64, shape, elements=st.floats(0, 1)))
    for a, b in zip(
        r.area_loss_nb(master, subs, actual, coverage, gate),
        r.area_loss_np(master, subs, actual, coverage, gate),
        strict=True,
    ):
        same(a, b)


@st.composite
def loss_history(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    areas = draw(st.integers(0, 3))
    days = draw(st.integers(0, 40))
    base = draw(st.floats(-2, 12))
    noise = draw(arrays(np.float64, (areas, days), elements=st.floats(-1, 1)))
    step = draw(st.sampled_from([0.0, 1.5, -2.0, 8.0]))
    loss = base + noise * draw(st.sampled_from([0.05, 0.3, 2.0]))
    if days:
        loss[:, draw(st.integers(0, days - 1)) :] += step
    loss[draw(arrays(np.bool_, (areas, days)))] = np.nan
    calculable = draw(arrays(np.uint8, (areas, days), elements=st.sampled_from([1, 1, 1, 0])))
    given_ = draw(arrays(np.uint8, (areas, days), elements=st.sampled_from([255] * 6 + [0, 1, 3])))
    learnable = draw(arrays(np.uint8, (areas, days), elements=st.sampled_from([1, 1, 0])))
    allowance = draw(arrays(np.float64, (areas, days), elements=st.sampled_from([0.0, 0.0, 0.4])))
    load = draw(
        arrays(
            np.float64,
            (areas, days),
            elements=st.one_of(st.floats(1, 2e3), st.just(np.nan), st.just(0.0)),
        )
    )
    return loss, calculable, given_, learnable, allowance, load


@EXAMPLES
@given(
    loss_history(),
    st.booleans(),
    st.sampled_from([(3, 10, 2), (8, 8, 5), (20, 40, 1)]),
    st.integers(0, 5),
)
def test_classify_losses_twins_agree(
    case: tuple[np.ndarray, ...], load_dependent: bool, window: tuple[int, int, int], sustained: int
) -> None:
    window_days, lookback, min_history = window
    args = (
        *case,
        load_dependent,
        5.0,
        window_days,
        lookback,
        min_history,
        0.3,
        -1.0,
        10.0,
        sustained,
        0.5,
    )
    for a, b in zip(r.classify_losses_nb(*args), r.classify_losses_np(*args), strict=True):
        same(a, b)


@EXAMPLES
@given(st.data(), st.integers(0, 3), st.integers(0, 13), st.integers(1, 4), st.booleans())
def test_differential_check_twins_agree(
    data: st.DataObject, pairs: int, n: int, window: int, relative: bool
) -> None:
    compared = data.draw(arrays(np.float64, (pairs, n), elements=energy))
    reference = data.draw(arrays(np.float64, (pairs, n), elements=energy))
    limit = data.draw(st.floats(0, 50))
    for a, b in zip(
        rc.differential_check_nb(compared, reference, window, relative, limit),
        rc.differential_check_np(compared, reference, window, relative, limit),
        strict=True,
    ):
        same(a, b)


@EXAMPLES
@given(st.data(), shapes)
def test_check_meter_twins_agree(data: st.DataObject, shape: tuple[int, int]) -> None:
    main = data.draw(arrays(np.float64, shape, elements=energy))
    check = data.draw(arrays(np.float64, shape, elements=energy))
    tolerance = data.draw(arrays(np.float64, (shape[0],), elements=st.floats(0.1, 3)))
    minimum = data.draw(st.sampled_from([0.0, 0.5]))
    for a, b in zip(
        rc.check_meter_compare_nb(main, check, tolerance, minimum),
        rc.check_meter_compare_np(main, check, tolerance, minimum),
        strict=True,
    ):
        same(a, b)


@EXAMPLES
@given(st.data(), shapes, st.integers(0, 4), st.integers(1, 8), st.integers(1, 30))
def test_expected_day_energy_twins_agree(
    data: st.DataObject, shape: tuple[int, int], weeks: int, typical: int, search: int
) -> None:
    e = data.draw(arrays(np.float64, shape, elements=energy))
    q = data.draw(arrays(np.uint8, shape, elements=st.sampled_from([0, 0, 0, 1, 4])))
    m = data.draw(arrays(np.float64, shape, elements=energy))
    same(
        r.expected_day_energy_nb(e, q, m, weeks, typical, search),
        r.expected_day_energy_np(e, q, m, weeks, typical, search),
    )


# ---- behaviour ------------------------------------------------------------------------------


def test_loss_and_the_coverage_gate() -> None:
    master = np.array([[1000.0, 1000.0, 1000.0, 0.0, 1000.0]])
    subs = np.array([[960.0, 960.0, 1020.0, 10.0, np.nan]])
    actual = np.array([[1, 0, 1, 1, 1]], dtype=np.uint8)
    coverage = np.array([[0.98, 1.0, 0.97, 1.0, 1.0]])
    loss, calculable = r.area_loss(master, subs, actual, coverage)
    assert loss[0, 0] == pytest.approx(4.0) and loss[0, 2] == pytest.approx(-2.0)
    assert np.isnan(loss[0, 3]) and np.isnan(loss[0, 4])
    # 98 % passes, 97 % does not; an estimated master never does.
    assert calculable[0].tolist() == [1, 0, 0, 0, 0]


def steady(days: int, level: float = 4.0, wobble: float = 0.1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level + rng.uniform(-wobble, wobble, days))[None, :]


def statuses(loss: np.ndarray, **band: float) -> list[int]:
    settings_ = BandSettings(load_dependent=False, **band)  # type: ignore[arg-type]
    status, _, _ = r.classify_losses(loss, np.ones(loss.shape, np.uint8), settings_)
    return status[0].tolist()


def test_guards_apply_before_any_history() -> None:
    loss = np.array([[4.0, 11.0, -1.5, -0.5, 9.9]])
    assert statuses(loss) == [
        STATUS_QUALIFIED,
        STATUS_HIGH,
        STATUS_NEGATIVE,
        STATUS_QUALIFIED,
        STATUS_QUALIFIED,
    ]
    assert statuses(loss, upper_guard_pct=9.0, lower_guard_pct=-0.2)[3:] == [
        STATUS_NEGATIVE,
        STATUS_HIGH,
    ]


def test_learned_band_catches_a_step_the_guards_miss() -> None:
    loss = steady(80)
    loss[0, 50:] += 1.5  # a theft worth 1.5 points: far inside 0..10 %
    got = statuses(loss)
    assert set(got[:50]) == {STATUS_QUALIFIED}
    assert set(got[50:]) == {STATUS_HIGH}  # the band keeps its pre-theft level throughout
    low = steady(80)
    low[0, 60:] -= 1.2
    assert set(statuses(low)[60:]) == {STATUS_NEGATIVE}


def test_sustained_shift_inside_the_daily_band_is_high() -> None:
    loss = steady(90, wobble=0.1)  # MAD ≈ 0.05: the band is its 0.5-point minimum
    loss[0, 60:] += 0.4  # inside the daily band, beyond half of it for a week
    got = statuses(loss)
    assert STATUS_QUALIFIED in got[60:63]  # the week's mean needs a few days to move
    assert set(got[66:]) == {STATUS_HIGH}
    # Without the rule the shift passes as qualified and is learned as normal.
    assert statuses(loss, sustained_days=0)[60:].count(STATUS_HIGH) < 5


def test_uncalculable_days_are_judged_uncalculable_and_never_learned() -> None:
    loss = steady(40)
    calculable = np.ones(loss.shape, np.uint8)
    calculable[0, 30] = 0
    status, center, _ = r.classify_losses(loss, calculable, BandSettings(load_dependent=False))
    assert status[0, 30] == STATUS_UNCALCULABLE
    assert np.isnan(center[0, :20]).all() and not np.isnan(center[0, 20])


def test_given_history_is_kept_and_teaches_the_band() -> None:
    loss = steady(30)
    given_ = np.full(loss.shape, UNCLASSIFIED, np.uint8)
    given_[0, :29] = STATUS_QUALIFIED
    given_[0, 5] = STATUS_HIGH
    status, center, _ = r.classify_losses(
        loss, np.ones(loss.shape, np.uint8), BandSettings(load_dependent=False), given_
    )
    assert status[0, 5] == STATUS_HIGH and status[0, 29] == STATUS_QUALIFIED
    assert center[0, 29] == pytest.approx(np.median(np.delete(loss[0, :29], 5)))
    with pytest.raises(ValueError, match=r"0\.\.3"):
        r.classify_losses(
            loss, np.ones(loss.shape, np.uint8), given=np.full(loss.shape, 7, np.uint8)
        )


def test_load_dependent_band_follows_copper_loss() -> None:
    """Loss % of a transformer: fixed iron kWh plus copper ∝ load². A heat wave that doubles
    the load raises loss % by a point — qualified with the load model, high with a flat band."""
    rng = np.random.default_rng(3)
    load = rng.uniform(800, 1200, 120)
    load[90:] = rng.uniform(1800, 2200, 30)
    loss_kwh = 12.0 + 2e-5 * load**2
    loss = (loss_kwh / load * 100 + rng.normal(0, 0.03, load.size))[None, :]
    ones = np.ones(loss.shape, np.uint8)
    with_load, center, _ = r.classify_losses(loss, ones, BandSettings(), load=load[None, :])
    flat, _, _ = r.classify_losses(loss, ones, BandSettings(load_dependent=False))
    assert set(with_load[0, 90:].tolist()) == {STATUS_QUALIFIED}
    assert flat[0, 90:].tolist().count(STATUS_HIGH) > 20
    assert center[0, 100] == pytest.approx(loss[0, 100], abs=0.15)
    with pytest.raises(ValueError, match="load"):
        r.classify_losses(loss, ones, BandSettings())


def test_fixed_band_baseline() -> None:
    loss = np.array([[-0.5, 4.0, 10.5, np.nan]])
    got = r.classify_fixed_band(loss, np.array([[1, 1, 1, 1]], np.uint8))
    assert got[0].tolist() == [STATUS_NEGATIVE, STATUS_QUALIFIED, STATUS_HIGH, STATUS_UNCALCULABLE]


def test_band_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="lower_guard_pct"):
        BandSettings(lower_guard_pct=5, upper_guard_pct=2)
    with pytest.raises(ValueError, match="min_history"):
        BandSettings(window_days=30, min_history=40)
    with pytest.raises(ValueError, match="k"):
        BandSettings(k=-1)


def test_differential_check_windows_and_limits() -> None:
    """F15: compared group against reference group over 15/30/60-minute windows."""
    reference = np.full((1, 8), 10.0)
    compared = reference.copy()
    compared[0, 2] = 10.8  # +8 % in one 15-minute interval
    diff, deviation, flag = rc.differential_check(
        compared, reference, interval_minutes=15, window_minutes=15, limit=5.0
    )
    assert flag[0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert deviation[0, 2] == pytest.approx(8.0)
    _, deviation, flag = rc.differential_check(
        compared, reference, interval_minutes=15, window_minutes=60, limit=5.0
    )
    assert flag[0].tolist() == [0, 0] and deviation[0, 0] == pytest.approx(2.0)
    _, _, flag = rc.differential_check(
        compared, reference, interval_minutes=15, window_minutes=30, limit=0.5, relative=False
    )
    assert flag[0].tolist() == [0, 1, 0, 0]
    compared[0, 5] = np.nan
    _, _, flag = rc.differential_check(
        compared, reference, interval_minutes=15, window_minutes=30, limit=5
    )
    assert flag[0, 2] == rc.DIFF_UNCALCULABLE
    zero = np.zeros((1, 2))
    _, _, flag = rc.differential_check(
        zero + [[0, 1]], zero, interval_minutes=15, window_minutes=15, limit=5
    )
    assert flag[0].tolist() == [0, 1]  # a zero reference: any energy at all exceeds
    with pytest.raises(ValueError, match="15, 30 or 60"):
        rc.differential_check(zero, zero, interval_minutes=15, window_minutes=45, limit=1)
    with pytest.raises(ValueError, match="whole number"):
        rc.differential_check(zero, zero, interval_minutes=20, window_minutes=30, limit=1)


def test_check_meter_tolerance_from_accuracy_classes() -> None:
    tol = rc.check_tolerance_pct([0.5, 0.2, 0.5, 0.2])
    assert tol == pytest.approx(math.sqrt(0.58))
    assert rc.check_tolerance_pct([1.0, 1.0], k=2) == pytest.approx(2 * math.sqrt(2))
    main = np.array([[100.5, 101.0, 0.2, np.nan]])
    check = np.array([[100.0, 100.0, 0.25, 100.0]])
    deviation, flag = rc.check_meter_compare(main, check, np.array([tol]), min_energy=1.0)
    assert deviation[0, 0] == pytest.approx(0.5) and flag[0, :2].tolist() == [0, 1]
    assert flag[0, 2:].tolist() == [rc.DIFF_UNCALCULABLE] * 2
    with pytest.raises(ValueError, match="positive"):
        rc.check_tolerance_pct([0.5, 0.0])


def test_expected_day_energy_uses_like_days_scaled_by_the_master() -> None:
    """A shop: 50 kWh on weekdays, 10 on Sundays. Its missing Sunday is estimated from its
    last Sundays, scaled by how much busier the area was."""
    days = 36
    shop = np.where(np.arange(days) % 7 == 6, 10.0, 50.0)[None, :]
    master = np.full((1, days), 1000.0)
    master[0, 34] = 1100.0  # a colder Sunday for everyone
    shop[0, 34] = np.nan
    quality = np.zeros((1, days), np.uint8)
    quality[0, 34] = 4
    expected = r.expected_day_energy(shop, quality, master)
    assert expected[0, 34] == pytest.approx(11.0)
    assert expected[0, 33] == pytest.approx(50.0)
    # Too little like-day history: the share of the master over recent actual days.
    fresh = r.expected_day_energy(shop[:, 25:], quality[:, 25:], master[:, 25:])
    assert fresh[0, 9] == pytest.approx(np.median(shop[0, 25:34] / 1000.0) * 1100.0)
