"""Theft and tamper indicators: numba equals the NumPy twin exactly, and each indicator fires on
the condition the standard describes — and not just short of it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_rules import theft as th

EXAMPLES = settings(max_examples=100, deadline=None)
T0 = 1_735_660_800_000  # 2025-01-01 00:00 +08:00
MIN = 60_000


def same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, (x, y)
        assert np.array_equal(x, y, equal_nan=True), (x, y)


@pytest.fixture(scope="module", autouse=True)
def warm_up() -> None:
    v = np.zeros((1, 3, 2))
    t = np.zeros((1, 2), np.int64)
    one = np.ones(1)
    th.loss_of_voltage_nb(v, v, t, one, one, 0.78, 0.005, 1)
    th.phase_break_nb(v, v, t, one, one, 0.6, 0.005, 0.78, 1)
    th.loss_of_current_nb(v, v, t, one, one, 0.005, 0.05, 0.78, 1)
    th.current_imbalance_nb(v, t, one, 0.3, 0.1, 1)
    th.reverse_energy_nb(v[:, 0], v, t, np.zeros(1, np.uint8), 0.02, 0.01, 1)
    th.counter_events_nb(v[:, 0], t)
    th.flag_events_nb(np.zeros((1, 2), np.uint8), t)
    th.meter_stopped_nb(v[:, 0], v[:, 0], t, 0.1)
    th.running_fast_nb(v[:, 0], v[:, 0], t, 10.0, 0.1)
    e = np.zeros((1, 3))
    th.deficit_scores_nb(
        e, e.astype(np.uint8), np.zeros(1, np.int64), e, e, e.astype(np.uint8),
        np.full((1, 3), -1, np.int64), 2, 1, 1, 2, 0,
    )  # fmt: skip


@st.composite
def times(draw: st.DrawFn, meters: int, samples: int) -> np.ndarray:
    steps = draw(arrays(np.int64, (meters, samples), elements=st.integers(1_000, 90_000)))
    return T0 + np.cumsum(steps, axis=1)


@st.composite
def phase_window(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    meters, samples = draw(st.integers(0, 4)), draw(st.integers(0, 12))
    volts = st.sampled_from([0.0, 50.0, 120.0, 160.0, 171.6, 200.0, 230.0, np.nan])
    amps = st.sampled_from([0.0, 0.01, 0.025, 0.03, 0.2, 0.5, 3.0, np.nan])
    v = draw(arrays(np.float64, (meters, 3, samples), elements=volts))
    i = draw(arrays(np.float64, (meters, 3, samples), elements=amps))
    t = draw(times(meters, samples))
    un = draw(arrays(np.float64, (meters,), elements=st.sampled_from([220.0, 230.0, 57.7])))
    ib = draw(arrays(np.float64, (meters,), elements=st.sampled_from([5.0, 1.5, 10.0])))
    return v, i, t, un, ib


@EXAMPLES
@given(phase_window(), st.sampled_from([0, MIN, 3 * MIN]))
def test_phase_indicators_twins_agree(case: tuple[np.ndarray, ...], min_ms: int) -> None:
    v, i, t, un, ib = case
    same(
        th.loss_of_voltage_nb(v, i, t, un, ib, 0.78, 0.005, min_ms),
        th.loss_of_voltage_np(v, i, t, un, ib, 0.78, 0.005, min_ms),
    )
    same(
        th.phase_break_nb(v, i, t, un, ib, 0.6, 0.005, 0.78, min_ms),
        th.phase_break_np(v, i, t, un, ib, 0.6, 0.005, 0.78, min_ms),
    )
    same(
        th.loss_of_current_nb(v, i, t, un, ib, 0.005, 0.05, 0.78, min_ms),
        th.loss_of_current_np(v, i, t, un, ib, 0.005, 0.05, 0.78, min_ms),
    )
    same(
        th.current_imbalance_nb(i, t, ib, 0.3, 0.1, min_ms),
        th.current_imbalance_np(i, t, ib, 0.3, 0.1, min_ms),
    )


@st.composite
def register_window(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    meters, samples = draw(st.integers(0, 4)), draw(st.integers(0, 12))
    steps = draw(
        arrays(
            np.float64, (meters, samples), elements=st.sampled_from([0.0, 0.0, 0.01, 0.5, np.nan])
        )
    )
    register = 1000.0 + np.nancumsum(steps, axis=1)
    register[np.isnan(steps)] = np.nan
    power = draw(
        arrays(
            np.float64, (meters, samples), elements=st.sampled_from([0.0, -1.0, 0.3, 6.0, np.nan])
        )
    )
    phase_power = draw(
        arrays(
            np.float64,
            (meters, 3, samples),
            elements=st.sampled_from([0.5, -0.005, -0.02, -2.0, np.nan]),
        )
    )
    t = draw(times(meters, samples))
    generating = draw(arrays(np.uint8, (meters,), elements=st.integers(0, 1)))
    return register, power, phase_power, t, generating


@EXAMPLES
@given(register_window())
def test_register_indicators_twins_agree(case: tuple[np.ndarray, ...]) -> None:
    register, power, phase_power, t, generating = case
    same(th.meter_stopped_nb(register, power, t, 0.1), th.meter_stopped_np(register, power, t, 0.1))
    same(
        th.running_fast_nb(register, power, t, 10.0, 0.1),
        th.running_fast_np(register, power, t, 10.0, 0.1),
    )
    same(
        th.reverse_energy_nb(register, phase_power, t, generating, 0.02, 0.01, MIN),
        th.reverse_energy_np(register, phase_power, t, generating, 0.02, 0.01, MIN),
    )
    counts = np.floor(register / 10.0)
    same(th.counter_events_nb(counts, t), th.counter_events_np(counts, t))
    flags = np.where(np.isnan(power), 255, power > 1).astype(np.uint8)
    same(th.flag_events_nb(flags, t), th.flag_events_np(flags, t))


@st.composite
def deficit_case(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    areas = draw(st.integers(1, 3))
    customers, days = draw(st.integers(0, 5)), draw(st.integers(0, 40))
    energy = draw(
        arrays(np.float64, (customers, days), elements=st.one_of(st.floats(0, 50), st.just(np.nan)))
    )
    actual = draw(arrays(np.uint8, (customers, days), elements=st.sampled_from([1, 1, 1, 0])))
    area = draw(arrays(np.int64, (customers,), elements=st.integers(0, areas - 1)))
    master = draw(
        arrays(np.float64, (areas, days), elements=st.one_of(st.floats(0, 900), st.just(np.nan)))
    )
    excess = draw(
        arrays(np.float64, (areas, days), elements=st.one_of(st.floats(-20, 40), st.just(np.nan)))
    )
    learn = draw(arrays(np.uint8, (areas, days), elements=st.sampled_from([1, 1, 0])))
    match_start = draw(arrays(np.int64, (areas, days), elements=st.integers(-1, max(days - 1, 0))))
    return energy, actual, area, master, excess, learn, match_start


@EXAMPLES
@given(deficit_case(), st.sampled_from([(5, 2, 3, 9, 0), (3, 1, 1, 3, 0), (10, 4, 7, 30, 5)]))
def test_deficit_scores_twins_agree(case: tuple[np.ndarray, ...], knobs: tuple[int, ...]) -> None:
    same(th.deficit_scores_nb(*case, *knobs), th.deficit_scores_np(*case, *knobs))


# ---- behaviour ------------------------------------------------------------------------------


def phase_series(samples: int, every_s: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = T0 + np.arange(samples, dtype=np.int64) * every_s * 1000
    v = np.full((1, 3, samples), 228.0)
    i = np.full((1, 3, samples), 4.0)
    return v, i, t


def test_loss_of_voltage_needs_current_and_sixty_seconds() -> None:
    v, i, t = phase_series(10)
    v[0, 1, 3:5] = 120.0  # 30 s only
    assert not th.loss_of_voltage(v, i, t).arrays.fired[0]
    v[0, 1, 3:6] = 120.0  # 60 s: three samples 30 s apart
    found = th.loss_of_voltage(v, i, t)
    assert found.arrays.fired[0] and found.arrays.phases[0] == 0b010
    assert found.arrays.start_ms[0] == t[3] and found.arrays.end_ms[0] == t[5]
    assert found.arrays.value[0] == 120.0 and found.arrays.reference[0] == pytest.approx(171.6)
    text = found.describe(0)
    assert "phase b" in text and "120.0 V < 171.6 V" in text and "4.000 A" in text
    i[0, 1, :] = 0.02  # below 0.5 % Ib (0.025 A): nothing flows, nothing is stolen
    assert not th.loss_of_voltage(v, i, t).arrays.fired[0]
    v[0, 1, 3:6] = 171.7  # just above 78 % of 220 V
    i[0, 1, :] = 4.0
    assert not th.loss_of_voltage(v, i, t).arrays.fired[0]


def test_phase_break_is_a_dead_phase_beside_a_live_one() -> None:
    v, i, t = phase_series(6)
    v[0, 2, :] = 0.0
    i[0, 2, :] = 0.0
    found = th.phase_break(v, i, t)
    assert found.arrays.fired[0] and found.arrays.phases[0] == 0b100
    assert found.arrays.detail[0] == 228.0
    v[0, :, :] = 0.0  # every phase dead: a supply outage
    i[0, :, :] = 0.0
    assert not th.phase_break(v, i, t).arrays.fired[0]


def test_loss_of_current_is_a_live_phase_carrying_nothing_beside_a_loaded_one() -> None:
    v, i, t = phase_series(6)
    i[0, 0, :] = 0.0
    found = th.loss_of_current(v, i, t)
    assert found.arrays.fired[0] and found.arrays.phases[0] == 0b001
    i[0, 1:, :] = 0.2  # the others at 4 % Ib: a light load, not a bypassed CT
    assert not th.loss_of_current(v, i, t).arrays.fired[0]


def test_current_imbalance_over_thirty_percent_under_load() -> None:
    v, i, t = phase_series(6)
    i[0, :, :] = [[4.0], [4.0], [2.9]]  # (4 − 2.9) / 4 = 27.5 %
    assert not th.current_imbalance(i, t).arrays.fired[0]
    i[0, 2, :] = 2.7  # 32.5 %
    found = th.current_imbalance(i, t)
    assert found.arrays.fired[0] and found.arrays.value[0] == pytest.approx(32.5)
    assert found.arrays.phases[0] == 0b100
    single = i.copy()
    single[0, 1:, :] = np.nan  # a single-phase meter has no imbalance
    assert not th.current_imbalance(single, t).arrays.fired[0]
    assert not th.current_imbalance(i * 0.1, t).arrays.fired[0]  # 0.4 A < 10 % Ib


def test_reverse_energy_only_on_non_generating_meters() -> None:
    t = T0 + np.arange(4, dtype=np.int64) * MIN
    export = np.array([[5.00, 5.00, 5.01, 5.03], [5.00, 5.00, 5.01, 5.03]])
    found = th.reverse_energy(export, None, t, [False, True])
    assert found.arrays.fired.tolist() == [1, 0]
    assert found.arrays.value[0] == pytest.approx(0.03) and found.arrays.start_ms[0] == t[3]
    power = np.full((1, 3, 4), 1.0)
    power[0, 0, 1:] = -0.8  # phase a reversed for two minutes, register untouched
    found = th.reverse_energy(np.full((1, 4), 5.0), power, t, [False])
    assert found.arrays.fired[0] and found.arrays.phases[0] == 0b001
    assert "phase a at -0.800 kW" in found.describe(0)


def test_cover_events_from_counters_and_flags() -> None:
    t = T0 + np.arange(5, dtype=np.int64) * MIN
    counts = np.array([[3.0, 3.0, np.nan, 4.0, 4.0], [7.0, 7.0, 7.0, 7.0, 7.0]])
    found = th.counter_events(counts, t, name="tamper.terminal_cover_open")
    assert found.arrays.fired.tolist() == [1, 0] and found.arrays.start_ms[0] == t[3]
    assert "terminal cover open: 1 new event(s), counter 3 → 4" in found.describe(0)
    flags = np.array([[0, 0, 1, 255, 1]], dtype=np.uint8)
    found = th.flag_events(flags, t)
    assert found.arrays.fired[0] and found.arrays.start_ms[0] == t[2]
    assert found.arrays.value[0] == 2 and found.arrays.reference[0] == 4


def test_meter_stopped_against_the_power_it_measures() -> None:
    t = T0 + np.arange(8, dtype=np.int64) * MIN
    register = np.full((1, 8), 1234.56)
    power = np.full((1, 8), 0.9)  # 7 minutes at 0.9 kW = 0.105 kWh unregistered
    found = th.meter_stopped(register, power, t)
    assert found.arrays.fired[0] and found.arrays.value[0] == pytest.approx(0.105)
    assert found.arrays.detail[0] == 1234.56
    assert "frozen at 1234.56 kWh" in found.describe(0)
    assert not th.meter_stopped(register, power * 0.8, t).arrays.fired[0]  # 0.084 kWh
    moving = register + np.arange(8) * 0.02
    assert not th.meter_stopped(moving, power, t).arrays.fired[0]


def test_running_fast_more_than_ten_times_the_power() -> None:
    t = T0 + np.arange(7, dtype=np.int64) * 10 * MIN  # one hour
    power = np.full((1, 7), 0.1)  # 0.1 kWh expected
    fast = 100.0 + np.arange(7)[None, :] * 0.2  # 1.2 kWh registered: 12×
    found = th.running_fast(fast, power, t)
    assert found.arrays.fired[0] and found.arrays.value[0] == pytest.approx(1.2)
    assert not th.running_fast(100.0 + np.arange(7)[None, :] * 0.15, power, t).arrays.fired[0]


def test_deficit_explains_the_area_excess() -> None:
    """Two customers; one halves its reported energy from day 40 while the area's excess loss
    rises by exactly that. Its deficit explains the excess; the honest one's does not."""
    days = 60
    master = np.full((1, days), 1000.0)
    energy = np.vstack([np.full(days, 20.0), np.full(days, 30.0)])
    energy[0, 40:] = 10.0
    excess = np.zeros((1, days))
    excess[0, 40:] = 10.0
    learn = np.ones((1, days), np.uint8)
    learn[0, 40:] = 0
    expected, recent, deficit, explains, area_excess, significance = th.deficit_scores(
        energy, np.ones(energy.shape, np.uint8), np.zeros(2, np.int64), master, excess, learn
    )
    assert expected[0, 50] == pytest.approx(20.0) and recent[0, 50] == pytest.approx(10.0)
    assert deficit[0, 50] == pytest.approx(10.0) and explains[0, 50] == pytest.approx(1.0)
    assert area_excess[0, 50] == pytest.approx(10.0)
    assert explains[1, 50] == 0.0
    assert significance[0, 50] == np.inf  # a perfectly steady customer: any drop stands out
    # Three days in, the 5-day means of both have caught 3 × 10 kWh: still a match.
    assert deficit[0, 42] == pytest.approx(6.0) and explains[0, 42] == pytest.approx(1.0)
    # A customer whose drop is twice the area's rise explains half of it.
    energy[1, 40:] = 10.0
    excess[0, 40:] = 10.0
    _, _, deficit, explains, _, _ = th.deficit_scores(
        energy, np.ones(energy.shape, np.uint8), np.zeros(2, np.int64), master, excess, learn
    )
    assert deficit[1, 50] == pytest.approx(20.0) and explains[1, 50] == pytest.approx(0.5)


def test_signed_currents_are_compared_as_magnitudes() -> None:
    """DL/T 645-2007 currents carry the direction as a sign: −0.789 A is 0.789 A flowing back
    on that phase. An exporting phase is no loss of current, imbalance is on magnitudes, and a
    dead phase whose current reads negative still carries current (no phase break)."""
    v, i, t = phase_series(6)
    i[0, :, :] = [[5.123], [5.0], [-0.789]]  # phase c exporting
    assert not th.loss_of_current(v, i, t).arrays.fired[0]
    i[0, :, :] = [[4.0], [-4.0], [-2.9]]  # magnitudes 4, 4, 2.9: 27.5 %, not 172 %
    assert not th.current_imbalance(i, t).arrays.fired[0]
    i[0, 2, :] = -2.7  # 32.5 % on magnitudes
    found = th.current_imbalance(i, t)
    assert found.arrays.fired[0] and found.arrays.value[0] == pytest.approx(32.5)
    i[0, :, :] = [[-5.0], [-0.01], [-5.0]]  # exporting on a and c, nothing on b: a real loss
    found = th.loss_of_current(v, i, t)
    assert found.arrays.fired[0] and found.arrays.phases[0] == 0b010
    assert found.arrays.detail[0] == pytest.approx(5.0)  # evidence as a magnitude
    dead = v.copy()
    dead[0, 0, :] = 10.0
    i[0, :, :] = [[-3.0], [2.0], [2.0]]  # phase a low voltage but 3 A flowing back
    assert not th.phase_break(dead, i, t).arrays.fired[0]


def test_signed_powers_are_judged_by_direction() -> None:
    """Power is signed too (import positive). The register indicators count import power only
    (an exporting meter whose import register stands still is not stopped), and reverse energy
    is the direction itself, only on meters that do not generate."""
    t = T0 + np.arange(8, dtype=np.int64) * MIN
    register = np.full((1, 8), 1234.56)
    exporting = np.full((1, 8), -0.9)
    assert not th.meter_stopped(register, exporting, t).arrays.fired[0]
    assert th.meter_stopped(register, -exporting, t).arrays.fired[0]
    moving = 100.0 + np.arange(8)[None, :] * 0.2
    assert th.running_fast(moving, exporting, t).arrays.fired[0]  # import counted, none drawn
    power = np.full((2, 3, 8), -0.8)  # every phase exporting
    found = th.reverse_energy(np.full((2, 8), 5.0), power, t, [False, True])
    assert found.arrays.fired.tolist() == [1, 0]
    assert found.arrays.phases[0] == 0b111
