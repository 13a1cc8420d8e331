"""The shared load model: deterministic, physically consistent, exact registers, and every
command, event and fault knob visible in the snapshot."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil_tests.load_model import (
    DEFAULT_START_EPOCH,
    DEFAULT_TARIFF_WINDOWS,
    LoadModel,
    ManualClock,
    MeterSnapshot,
    RelayOutcome,
    SimMeter,
    Tariff,
    TariffSchedule,
    TariffWindow,
)
from protocols.profiles import canonical_unit, check_quantity_name

T0 = DEFAULT_START_EPOCH  # 2025-01-01 00:00 local (UTC+8), a Wednesday
HOUR = 3600.0
DAY = 86400.0


def model(seed: int = 11, **kwargs: object) -> LoadModel:
    return LoadModel(seed=seed, clock=ManualClock(), **kwargs)  # type: ignore[arg-type]


def at(meter: SimMeter, t: float) -> MeterSnapshot:
    meter.advance_to(t)
    return meter.snapshot()


def minute_powers(meter: SimMeter, start: float, minutes: int) -> list[Decimal]:
    """Active power of each simulated minute from ``start`` (the meter is advanced through them)."""
    return [at(meter, start + 60 * i).active_kw for i in range(minutes)]


# ---- determinism ----------------------------------------------------------------------------


def test_same_seed_same_answers_other_seed_other_answers() -> None:
    a, b, c = model(5), model(5), model(6)
    meters = [m.meter("m-1") for m in (a, b, c)]
    for t in (T0 + 17, T0 + 9 * HOUR + 0.5, T0 + 2 * DAY + 1234.567):
        snaps = [at(m, t) for m in meters]
        assert snaps[0] == snaps[1]
        assert snaps[0].phase_values != snaps[2].phase_values


@given(st.lists(st.integers(1, 4 * 3_600_000), min_size=1, max_size=25))
@settings(max_examples=40, deadline=None)
def test_registers_do_not_depend_on_how_time_was_stepped(steps_ms: list[int]) -> None:
    stepped, jumped = model(3).meter("m", generating=True), model(3).meter("m", generating=True)
    t_ms = int(T0 * 1000) + 8 * 3_600_000  # PV hours: import and export both move
    for step in steps_ms:
        t_ms += step
        stepped.advance_to(t_ms / 1000)
    jumped.advance_to(t_ms / 1000)
    assert stepped.snapshot() == jumped.snapshot()


def test_time_only_moves_forward() -> None:
    meter = model().meter("m")
    later = at(meter, T0 + HOUR)
    assert at(meter, T0 + 60) == later


def test_meter_values_use_the_shared_vocabulary() -> None:
    for snap in (at(model().meter("m3"), T0 + HOUR), at(model().meter("m1", phases=1), T0 + HOUR)):
        for quantity, value in snap.values().items():
            assert check_quantity_name(quantity) is None, quantity
            assert isinstance(value, Decimal)
            assert canonical_unit(quantity) is not None
    single = at(model().meter("m1", phases=1), T0)
    keys = single.values()
    assert "voltage.a" in keys and "voltage.b" not in keys and "voltage.ab" not in keys


# ---- electrical consistency -----------------------------------------------------------------


@pytest.mark.parametrize("phases", [1, 3])
def test_power_is_v_times_i_times_pf_at_meter_resolution(phases: int) -> None:
    meter = model(seed=phases).meter("m", phases=phases, base_kw=5.0)
    half_step = Decimal("0.00005")
    for minute in range(0, 1440, 37):
        snap = at(meter, T0 + 60 * minute)
        assert snap.active_kw == sum(p.active_kw for p in snap.phase_values)
        assert snap.reactive_kvar == sum(p.reactive_kvar for p in snap.phase_values)
        assert Decimal("49.95") <= snap.frequency_hz <= Decimal("50.05")
        for phase in snap.phase_values:
            assert Decimal("205") <= phase.voltage_v <= Decimal("228")
            assert phase.current_a > 0
            assert Decimal("0.85") <= phase.power_factor <= Decimal("0.99")
            assert abs(phase.active_kw - phase.voltage_v * phase.current_a * phase.power_factor / 1000) <= half_step
            assert abs(phase.apparent_kva - phase.voltage_v * phase.current_a / 1000) <= half_step
            assert float(phase.active_kw ** 2 + phase.reactive_kvar ** 2) == pytest.approx(
                float(phase.apparent_kva) ** 2, rel=2e-3)
        expected_pf = (snap.active_kw / snap.apparent_kva).quantize(Decimal("0.001"), ROUND_HALF_UP)
        assert snap.power_factor == expected_pf


def test_three_phase_line_voltages_follow_from_120_degrees() -> None:
    snap = at(model().meter("m"), T0 + 5 * HOUR)
    va, vb, _ = (p.voltage_v for p in snap.phase_values)
    uab = (va * va + vb * vb + va * vb).sqrt()
    assert abs(snap.line_voltages_v[0] - uab) <= Decimal("0.05")


def test_load_follows_the_daily_shape() -> None:
    meter = model().meter("m", base_kw=4.0)
    night = at(meter, T0 + 3 * HOUR).active_kw  # 03:00
    evening = at(meter, T0 + 19.5 * HOUR).active_kw  # 19:30
    assert evening > 2 * night


# ---- energy registers -----------------------------------------------------------------------


def test_energy_registers_integrate_power_per_tariff() -> None:
    meter = model().meter("m", base_kw=6.0)
    start = T0 + 17 * HOUR  # 17:00-21:00 crosses flat -> sharp
    before = at(meter, start)
    expected = dict.fromkeys(Tariff, Decimal(0))
    for i, power in enumerate(minute_powers(meter, start, 240)):
        expected[meter._model.tariff_at(start + 60 * i)] += power / 60
    after = at(meter, start + 240 * 60)
    for tariff in Tariff:
        delta = after.energy_import.tariff(tariff) - before.energy_import.tariff(tariff)
        assert abs(delta - expected[tariff]) < Decimal("0.01"), tariff
    assert expected[Tariff.FLAT] > 0 and expected[Tariff.SHARP] > 0
    assert expected[Tariff.PEAK] == expected[Tariff.VALLEY] == 0
    assert after.energy_import.total == sum(after.energy_import.tariffs)
    assert after.energy_export.total == 0
    assert after.reactive_import.total > before.reactive_import.total


def test_tariff_schedule_is_data_and_is_checked() -> None:
    schedule = TariffSchedule(DEFAULT_TARIFF_WINDOWS)
    assert schedule.tariff_at(0) is Tariff.VALLEY
    assert schedule.tariff_at(19 * 60 + 30) is Tariff.SHARP
    assert schedule.tariff_at(10 * 60) is Tariff.PEAK
    assert schedule.tariff_at(12 * 60) is Tariff.FLAT
    with pytest.raises(ValueError, match="overlap at 07:00"):
        TariffSchedule([TariffWindow("00:00", "08:00", Tariff.VALLEY), TariffWindow("07:00", "24:00", Tariff.FLAT)])
    with pytest.raises(ValueError, match="leave 08:00 uncovered"):
        TariffSchedule([TariffWindow("00:00", "08:00", Tariff.VALLEY), TariffWindow("09:00", "24:00", Tariff.FLAT)])
    with pytest.raises(ValueError, match="not HH:MM"):
        TariffSchedule([TariffWindow("midnight", "24:00", Tariff.FLAT)])
    custom = model(tariff_windows=[TariffWindow("00:00", "24:00", Tariff.FLAT)]).meter("m")
    snap = at(custom, T0 + DAY)
    assert snap.energy_import.tariff(Tariff.FLAT) > at(model().meter("m"), T0).energy_import.tariff(Tariff.FLAT)


def test_daily_freeze_at_local_midnight() -> None:
    meter = model(freeze_days=2).meter("m")
    at_midnight = at(meter, T0 + DAY)
    freeze = at_midnight.daily_freezes[0]
    assert freeze.day == dt.date(2025, 1, 2) and freeze.at == T0 + DAY
    assert at_midnight.local_time == dt.datetime(2025, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert freeze.import_ == at_midnight.energy_import
    assert freeze.max_demand == at_midnight.max_demand
    snap = at(meter, T0 + 3 * DAY + HOUR)
    assert [f.day for f in snap.daily_freezes] == [dt.date(2025, 1, 4), dt.date(2025, 1, 3)]
    assert snap.daily_freezes[0].import_.total > snap.daily_freezes[1].import_.total


def test_max_demand_is_the_largest_15_minute_sliding_average() -> None:
    meter = model().meter("m", base_kw=8.0)
    start = T0 + 18 * HOUR
    powers = [int(p * 10_000) for p in minute_powers(meter, start, 90)]
    snap = at(meter, start + 90 * 60)
    windows = [(sum(powers[i - 15:i]), i) for i in range(15, 91)]
    best_sum, best_end = max(windows, key=lambda w: (w[0], -w[1]))
    expected = (Decimal(best_sum) / 15).quantize(Decimal(1), ROUND_HALF_UP).scaleb(-4)
    assert snap.max_demand.kw == expected
    assert snap.max_demand.at == start + 60 * best_end
    assert snap.demand_kw == (Decimal(sum(powers[-15:])) / 15).quantize(Decimal(1), ROUND_HALF_UP).scaleb(-4)
    tariff = meter._model.tariff_at(snap.max_demand.at - 60)
    assert snap.max_demand_by_tariff[tariff - 1].kw <= snap.max_demand.kw
    meter.reset_max_demand(at=start + 90 * 60)
    assert meter.snapshot().max_demand.kw == 0


# ---- commands and events --------------------------------------------------------------------


def test_trip_stops_load_and_registers_close_resumes() -> None:
    meter = model().meter("m")
    t_trip, t_close = T0 + 10 * HOUR, T0 + 12 * HOUR
    assert meter.trip(at=t_trip) is RelayOutcome.EXECUTED
    tripped = meter.snapshot()
    later = at(meter, t_close)
    assert later.status.relay_open and all(p.current_a == 0 and p.active_kw == 0 for p in later.phase_values)
    assert all(p.voltage_v > 200 for p in later.phase_values)  # supply side of the relay
    assert later.energy_import == tripped.energy_import
    assert later.relay_trips.count == 1 and later.relay_trips.last_start == t_trip
    assert later.relay_trips.last_end is None
    meter.close(at=t_close)
    resumed = at(meter, t_close + HOUR)
    assert not resumed.status.relay_open and resumed.active_kw > 0
    assert resumed.energy_import.total > later.energy_import.total
    assert resumed.relay_trips.last_end == t_close


def test_protect_refuses_trips_and_alarm_is_a_flag() -> None:
    meter = model().meter("m")
    meter.set_protect(True, at=T0 + 60)
    assert meter.trip(at=T0 + 120) is RelayOutcome.REFUSED_PROTECTED
    snap = meter.snapshot()
    assert snap.status.protected and not snap.status.relay_open and snap.relay_trips.count == 0
    meter.set_protect(False, at=T0 + 180)
    meter.set_alarm(True, at=T0 + 180)
    assert meter.snapshot().status.pre_trip_alarm
    assert meter.trip(at=T0 + 240) is RelayOutcome.EXECUTED


def test_allow_close_waits_for_the_customer() -> None:
    meter = model().meter("m")
    meter.trip(at=T0 + 60)
    assert meter.customer_close(at=T0 + 120) is RelayOutcome.REFUSED_NOT_ALLOWED
    meter.allow_close(at=T0 + 180)
    snap = meter.snapshot()
    assert snap.status.relay_open and snap.status.close_allowed
    assert meter.customer_close(at=T0 + 240) is RelayOutcome.EXECUTED
    assert not meter.snapshot().status.relay_open


def test_power_down_events_and_frozen_registers() -> None:
    meter = model().meter("m")
    meter.power_off(at=T0 + HOUR)
    dark = at(meter, T0 + 3 * HOUR)
    assert not dark.powered and all(p.voltage_v == 0 for p in dark.phase_values)
    assert dark.power_downs.count == 1 and dark.power_downs.last_start == T0 + HOUR
    assert dark.power_downs.last_end is None
    assert dark.energy_import == at(meter, T0 + HOUR).energy_import
    meter.power_on(at=T0 + 3 * HOUR)
    meter.power_off(at=T0 + 4 * HOUR)
    meter.power_on(at=T0 + 5 * HOUR)
    snap = meter.snapshot()
    assert snap.powered and snap.power_downs == type(snap.power_downs)(2, T0 + 4 * HOUR, T0 + 5 * HOUR)


def test_cover_open_events() -> None:
    meter = model().meter("m")
    meter.open_cover(at=T0 + 100)
    assert meter.snapshot().status.cover_open
    meter.close_cover(at=T0 + 200)
    snap = meter.snapshot()
    assert not snap.status.cover_open
    assert (snap.cover_openings.count, snap.cover_openings.last_start, snap.cover_openings.last_end) == (
        1, T0 + 100, T0 + 200)


def test_commands_default_to_the_clock() -> None:
    clock = ManualClock()
    m = LoadModel(seed=1, clock=clock, acceleration=60)
    meter = m.meter("m")
    clock.advance(10)  # ten wall seconds = ten simulated minutes
    assert m.now() == T0 + 600
    meter.trip()
    assert meter.snapshot().relay_trips.last_start == T0 + 600
    assert meter.sample().t == T0 + 600


# ---- faults ---------------------------------------------------------------------------------


def twins(**kwargs: object) -> tuple[SimMeter, SimMeter]:
    return model(21).meter("m", **kwargs), model(21).meter("m", **kwargs)  # type: ignore[arg-type]


def test_theft_factor_scales_what_the_meter_sees_not_the_load() -> None:
    honest, shunted = twins(base_kw=6.0)
    shunted.set_theft_factor(0.3, at=T0)
    for t in (T0 + 60, T0 + 9 * HOUR, T0 + 20 * HOUR):
        a, b = at(honest, t), at(shunted, t)
        assert b.true_active_kw == a.true_active_kw == a.active_kw
        assert float(b.active_kw) == pytest.approx(0.3 * float(a.active_kw), rel=0.01)
        for pa, pb in zip(a.phase_values, b.phase_values, strict=True):
            assert abs(pb.current_a - pa.current_a * Decimal("0.3")) <= Decimal("0.001")
    used_honest = a.energy_import.total - at(model(21).meter("m", base_kw=6.0), T0).energy_import.total
    assert float(b.energy_import.total - (a.energy_import.total - used_honest)) == pytest.approx(
        0.3 * float(used_honest), rel=0.02)


def test_master_meter_sees_true_load_plus_losses() -> None:
    m = model(8)
    subs = [m.meter(f"s{i}", phases=1) for i in range(4)]
    master = m.master_meter("master", subs, loss_fraction=0.05)
    subs[0].set_theft_factor(0.3, at=T0)
    for t in (T0 + 7 * HOUR, T0 + 19 * HOUR):
        m.advance_all(t)
        true_total = sum(float(s.snapshot().true_active_kw) for s in subs)
        metered_total = sum(float(s.snapshot().active_kw) for s in subs)
        assert float(master.snapshot().active_kw) == pytest.approx(true_total * 1.05, rel=0.005)
        assert metered_total < true_total  # the area now shows excess loss
    subs[1].trip(at=T0 + 19 * HOUR)
    m.advance_all(T0 + 19 * HOUR + 60)
    true_total = sum(float(s.snapshot().true_active_kw) for s in subs)
    assert float(master.snapshot().active_kw) == pytest.approx(true_total * 1.05, rel=0.005)


def test_loss_of_voltage_on_one_phase() -> None:
    healthy, faulty = twins()
    faulty.set_loss_of_voltage("b", True, at=T0)
    a, b = at(healthy, T0 + 10 * HOUR), at(faulty, T0 + 10 * HOUR)
    phase_b = b.phase_values[1]
    assert phase_b.voltage_v == 0 and phase_b.active_kw == 0 and phase_b.current_a == a.phase_values[1].current_a
    assert b.status.loss_of_voltage == (False, True, False)
    assert b.true_active_kw == a.true_active_kw and b.active_kw < a.active_kw
    with pytest.raises(ValueError, match="no phase 'b'"):
        model().meter("single", phases=1).set_loss_of_voltage("b", True)


def test_reversed_ct_reads_negative_power_on_that_phase() -> None:
    meter = model().meter("m")
    meter.set_reversed_ct("a", True, at=T0)
    snap = at(meter, T0 + 11 * HOUR)
    assert snap.phase_values[0].active_kw < 0 and snap.phase_values[0].power_factor < 0
    assert snap.status.reverse_phase == (True, False, False)


def test_stopped_register_keeps_measuring_power() -> None:
    meter = model().meter("m")
    meter.set_register_stopped(True, at=T0 + HOUR)
    before = meter.snapshot()
    after = at(meter, T0 + 5 * HOUR)
    assert after.active_kw > 0 and after.demand_kw > 0
    assert after.energy_import == before.energy_import


def test_phase_current_factor_scales_one_phase_only() -> None:
    honest, faulty = twins(base_kw=6.0)
    faulty.set_phase_current_factor("c", 0, at=T0)
    faulty.set_phase_current_factor("a", 0.5, at=T0)
    a, b = at(honest, T0 + 10 * HOUR), at(faulty, T0 + 10 * HOUR)
    assert b.phase_values[2].current_a == 0 and b.phase_values[2].active_kw == 0
    assert abs(b.phase_values[0].current_a - a.phase_values[0].current_a / 2) <= Decimal("0.001")
    assert b.phase_values[1] == a.phase_values[1]
    assert b.true_active_kw == a.true_active_kw and b.active_kw < a.active_kw
    with pytest.raises(ValueError, match=r"outside 0\.\.10"):
        faulty.set_phase_current_factor("a", 11)


def test_phase_break_kills_voltage_current_and_load_of_that_phase() -> None:
    healthy, broken = twins(base_kw=6.0)
    broken.set_phase_break("b", True, at=T0)
    a, b = at(healthy, T0 + 10 * HOUR), at(broken, T0 + 10 * HOUR)
    assert b.phase_values[1].voltage_v == 0 and b.phase_values[1].current_a == 0
    assert b.phase_values[0] == a.phase_values[0] and b.phase_values[2] == a.phase_values[2]
    assert b.true_active_kw < a.true_active_kw  # unlike loss of voltage, the load is gone
    broken.set_phase_break("b", False, at=T0 + 10 * HOUR)
    assert at(broken, T0 + 11 * HOUR).phase_values[1] == at(healthy, T0 + 11 * HOUR).phase_values[1]


def test_register_speed_runs_the_registers_fast_not_the_power() -> None:
    honest, fast = twins(base_kw=6.0)
    fast.set_register_speed(12, at=T0)
    start = at(honest, T0).energy_import.total
    a, b = at(honest, T0 + 2 * HOUR), at(fast, T0 + 2 * HOUR)
    assert a.active_kw == b.active_kw and a.phase_values == b.phase_values
    assert float(b.energy_import.total - start) == pytest.approx(
        12 * float(a.energy_import.total - start), rel=0.01)
    assert b.demand_kw == a.demand_kw


def test_generating_meter_exports_at_midday() -> None:
    meter = model(4).meter("pv", phases=1, base_kw=1.0, pv_kw=6.0, generating=True)
    noon = at(meter, T0 + 12 * HOUR)
    assert noon.active_kw < 0 and noon.status.reverse_power and noon.power_factor < 0
    later = at(meter, T0 + 13 * HOUR)
    assert later.energy_export.total > noon.energy_export.total
    assert later.energy_import == noon.energy_import
    night = at(meter, T0 + DAY + 2 * HOUR)
    assert night.active_kw > 0


# ---- construction ---------------------------------------------------------------------------


def test_bad_construction_is_refused() -> None:
    m = model()
    m.meter("m")
    with pytest.raises(ValueError, match="already exists"):
        m.meter("m")
    with pytest.raises(ValueError, match="phases must be 1 or 3"):
        m.meter("two", phases=2)
    with pytest.raises(ValueError, match="acceleration must be positive"):
        model(acceleration=0)
    with pytest.raises(ValueError, match="whole number of minutes"):
        model(utc_offset_s=30)
    with pytest.raises(ValueError, match=r"outside 0\.\.10"):
        m.meters["m"].set_theft_factor(-1)
    with pytest.raises(ValueError, match="cannot go backwards"):
        ManualClock().advance(-1)
