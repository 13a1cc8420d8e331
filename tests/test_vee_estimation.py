"""Estimation cascade, history and the engine's window cycle.

The cascade is tested source by source on the kernel (what wins, when scaling applies, that an
actual is never overwritten); the engine is tested as the daemon will drive it: committed days
feed history, a silent meter gets estimates, and reads that arrive late replace them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from edge_rules import vee_kernels as vk
from edge_rules.calendar import Calendar, DayType, day_number, parse_utc_offset
from edge_rules.codes import Method
from edge_rules.estimation import fill_gaps
from edge_rules.history import DAILY_DAYS, INTERVAL_DAYS, History
from edge_rules.vee_engine import VeeEngine
from edge_rules.vee_rules import MeterClass, VeeConfig

NAN = float("nan")


def one(values: list[float]) -> np.ndarray:
    return np.array([values], dtype=np.float64)


def fill(anchors: list[float], *, energy: np.ndarray | None = None,
         no_scale: np.ndarray | None = None, start: float = 100.0, **sources: Any
         ) -> tuple[np.ndarray, ...]:
    a = one(anchors)
    n = a.shape[1]
    result = fill_gaps(a, np.full((1, n), NAN) if energy is None else energy,
                       np.zeros((1, n), np.uint8) if no_scale is None else no_scale,
                       np.array([start]), np.array([-1]), np.array([NAN]), np.array([1e6]),
                       **sources)
    return result.value[0], result.energy[0], result.method[0]


def test_short_gap_is_interpolated_linearly_and_sums_to_the_register() -> None:
    anchors = [101.0, NAN, NAN, NAN, 105.0, 106.0]
    energy = one([1.0, NAN, NAN, NAN, NAN, 1.0])
    value, energies, method = fill(anchors, energy=energy)
    assert method.tolist() == [0, 17, 17, 17, 0, 0]
    assert np.isnan(value[[0, 4, 5]]).all()  # actual reads are never overwritten
    assert np.all(np.diff(value[1:4]) > 0) and value[1] > 101.0 and value[3] < 105.0
    assert energies[1:5].sum() == pytest.approx(4.0, abs=1e-12)  # exactly the register delta


def test_longer_gaps_use_like_days_scaled_to_the_register() -> None:
    anchors = [101.0] + [NAN] * 9 + [111.0]
    like = one([NAN] + [1.0, 3.0] * 5)
    count = np.full((1, 11), 4, dtype=np.int64)
    value, energies, method = fill(anchors, like=like, like_count=count)
    assert set(method[1:10].tolist()) == {Method.DATA_SCALING}
    assert energies[1:11].sum() == pytest.approx(10.0)
    assert energies[2] == pytest.approx(3 * energies[1])  # the like-day shape is kept
    # unbracketed (the meter is still silent): the like-day average as it is, method 15
    value, energies, method = fill(anchors[:-1], like=like[:, :-1], like_count=count[:, :-1])
    assert set(method[1:].tolist()) == {Method.AVERAGE_LIKE_DAY}
    assert energies[1:].tolist() == like[0, 1:10].tolist()
    single = np.ones((1, 10), dtype=np.int64)
    _, _, method = fill(anchors[:-1], like=like[:, :-1], like_count=single)
    assert set(method[1:].tolist()) == {Method.LIKE_DAY}


def test_cascade_order() -> None:
    anchors = [100.0] + [NAN] * 10
    full = one([NAN] + [0.5] * 10)
    check = full.copy()
    _, _, method = fill(anchors, check=check, like=full, previous_year=full, calculated=full)
    assert method[1] == Method.CHECK_METER
    _, _, method = fill(anchors, previous_year=full, calculated=full)
    assert method[1] == Method.PREVIOUS_YEAR
    _, _, method = fill(anchors, calculated=full)
    assert method[1] == Method.CALCULATED
    partial = full.copy()
    partial[0, 5] = NAN  # a source must cover the whole gap
    _, _, method = fill(anchors, like=partial, calculated=full)
    assert method[1] == Method.CALCULATED
    value, _, method = fill(anchors)  # open gap, nothing known: no estimate
    assert (method == 0).all() and np.isnan(value).all()
    value, energies, method = fill([*anchors, 110.0])  # bracketed: spread evenly
    assert set(method[1:11].tolist()) == {Method.DATA_SCALING}
    assert energies[1:12] == pytest.approx(np.full(11, 10.0 / 11))


def test_a_stopped_register_is_not_a_bracket() -> None:
    anchors = [100.0] + [NAN] * 9 + [100.5]
    like = one([NAN] + [2.0] * 10)
    no_scale = np.zeros((1, 11), np.uint8)
    no_scale[0, 1:10] = 1
    _, energies, method = fill(
        anchors, like=like, like_count=np.full((1, 11), 3), no_scale=no_scale
    )
    assert set(method[1:10].tolist()) == {Method.AVERAGE_LIKE_DAY}
    assert energies[1:10] == pytest.approx(np.full(9, 2.0))


def test_registers_wrap_in_estimates() -> None:
    anchors = [999_999.0, NAN, NAN, 1.0]
    value, _, method = fill(anchors, start=999_998.0)
    assert method.tolist() == [0, 17, 17, 0]
    assert value[1] > 999_999.0 and value[2] < 1.0


# ------------------------------------------------------------------ history and calendar


def test_history_round_trips_compactly() -> None:
    history = History(["a", "b"])
    day = day_number(dt.date(2025, 3, 1))
    intervals = np.vstack([np.linspace(0.0, 2.0, 96), np.full(96, 900.0)])
    estimated = np.zeros((2, 96), bool)
    estimated[0, 5] = True
    daily = np.array([[12.34, 1.0, 2.0, 3.0, 6.34], [86_400.0, NAN, NAN, NAN, NAN]])
    history.put_day(np.array([0, 1]), day, daily, np.array([True, False]), intervals, estimated)
    values, est = history.intervals(np.array([0, 1]), day, 1)
    assert values[0, 0] == pytest.approx(np.round(intervals[0] / 0.01) * 0.01, abs=1e-9)
    assert est[0, 0, 5] and est[0, 0].sum() == 1
    # 900 kWh per interval does not fit 15 bits of 0.01 kWh: the row's unit doubled, not clipped
    assert values[1, 0] == pytest.approx(intervals[1], rel=1e-4)
    d, d_est = history.daily(np.array([0, 1]), day, 1)
    assert d[0, 0] == pytest.approx(12.34) and d_est[0, 0] and not d_est[1, 0]
    assert d[1, 0] == pytest.approx(86_400.0, rel=1e-4)
    # older than the ring, or later than written: absent
    assert np.isnan(history.daily(np.array([0]), day - DAILY_DAYS, 1)[0]).all()
    assert np.isnan(history.intervals(np.array([0]), day - INTERVAL_DAYS, 1)[0]).all()
    # a later day clears the days skipped in between
    history.put_day(
        np.array([0]), day + 2, daily[:1], np.array([False]), intervals[:1], estimated[:1]
    )
    assert np.isnan(history.daily(np.array([0]), day + 1, 1)[0]).all()
    restored = History.from_arrays(history.to_arrays())
    for name in ("daily_counts", "interval_counts", "newest_day", "daily_shift"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(history, name))
    moved = restored.reindexed(["b", "c"])
    assert moved.daily(np.array([0]), day, 1)[0][0, 0] == pytest.approx(86_400.0, rel=1e-4)
    assert np.isnan(moved.daily(np.array([1]), day, 1)[0]).all()
    with pytest.raises(ValueError, match="daily_counts"):
        broken = history.to_arrays()
        broken["daily_counts"] = broken["daily_counts"][:, :, :10]
        History.from_arrays(broken)


def test_history_budget_for_2000_meters() -> None:
    history = History([f"m-{i}" for i in range(2000)])
    assert history.nbytes <= 50 * 1000 * 1000  # issue 4: ≤ 50 MB
    assert history.daily_counts.shape[2] >= 3 * 365 and history.interval_counts.shape[1] >= 56


def test_calendar_day_types_and_grid() -> None:
    cal = Calendar()
    assert cal.day_type(dt.date(2025, 10, 1)) == DayType.HOLIDAY
    assert cal.day_type(dt.date(2025, 9, 28)) == DayType.WEEKDAY  # a Sunday worked (调休)
    assert cal.day_type(dt.date(2025, 11, 22)) == DayType.SATURDAY
    assert cal.day_type(dt.date(2025, 11, 23)) == DayType.SUNDAY
    midnight = int(dt.datetime(2025, 3, 2, tzinfo=dt.UTC).timestamp() * 1000) - 8 * 3600_000
    day = day_number(dt.date(2025, 3, 2))
    # the read at local 00:15 closes the day's first interval; at 00:00 the previous day's last
    assert cal.interval_of_read(midnight + 15 * 60_000) == day * 96
    assert cal.interval_of_read(midnight) == day * 96 - 1
    assert cal.interval_of_read(midnight + 30_000, 60_000) == day * 96 - 1
    assert cal.interval_of_read(midnight + 7 * 60_000, 60_000) is None
    assert cal.read_time_ms(day * 96) == midnight + 15 * 60_000
    assert parse_utc_offset("-05:30") == -330
    with pytest.raises(ValueError, match="quarter hours"):
        parse_utc_offset("+05:40")


# ------------------------------------------------------------------ the engine's cycle


def regular_day(k: int) -> np.ndarray:
    """A commercial-looking day: 0.5 kWh per interval at night, 2 kWh by day."""
    base = np.full(96, 0.5)
    base[32:72] = 2.0
    return base * (1.0 + 0.01 * (k % 3))


def engine_with_history(days: int = 35) -> tuple[VeeEngine, int, float]:
    config = VeeConfig(classes={"default": MeterClass("default", contract_kw=50.0)})
    engine = VeeEngine(config, ["m-1", "m-2"])
    first = day_number(dt.date(2025, 3, 3))
    register = 1000.0
    for k in range(days):
        window = engine.window(first + k)
        energy = regular_day(k)
        reads = register + np.cumsum(energy)
        window.reads[:] = np.round(reads, 2)
        window.power[:] = energy * 4
        register = float(reads[-1])
        verdict = engine.evaluate(window)
        assert (verdict.quality == 0).all()
        engine.commit(verdict)
    return engine, first + days, register


def test_a_silent_meter_gets_estimates_and_late_reads_supersede_them() -> None:
    engine, today, register = engine_with_history()
    energy = regular_day(0)
    reads = np.round(register + np.cumsum(energy), 2)
    window = engine.window(today)
    window.reads[0] = reads
    window.reads[1, :40] = reads[:40]  # m-2 goes silent at 10:00
    window.power[:] = energy * 4
    verdict = engine.evaluate(window, due=60)
    assert (verdict.quality[0, :60] == 0).all()
    assert (verdict.quality[1, 40:60] == 1).all()  # estimated: E
    assert set(verdict.method[1, 40:60].tolist()) == {Method.AVERAGE_LIKE_DAY}
    assert verdict.published[1, 40] & vk.BIT_MISSING  # reason 76 by default (warn)
    estimates = verdict.value[1, 40:60]
    assert np.all(np.diff(estimates) > 0)
    assert estimates[-1] == pytest.approx(reads[59], rel=0.02)  # like days know the shape
    # the meter answers again: its reads are actual, under the same (meter, interval) keys
    window.reads[1, 40:] = reads[40:]
    later = engine.evaluate(window, due=96)
    assert (later.quality[1] == 0).all()
    np.testing.assert_array_equal(later.value[1], reads)


def test_whole_day_gap_is_scaled_to_the_read_that_ends_it() -> None:
    engine, today, register = engine_with_history()
    energy = np.concatenate([regular_day(0), regular_day(1)])
    reads = np.round(register + np.cumsum(energy), 2)
    window = engine.window(today, days=2)
    window.reads[:] = reads
    window.reads[1, :96] = NAN  # m-2 silent for the whole first day
    window.power[:] = energy * 4
    verdict = engine.evaluate(window)
    assert (verdict.quality[1, :96] == 1).all()
    assert set(verdict.method[1, :96].tolist()) == {Method.DATA_SCALING}
    # the day's intervals add up to what the register proves (last read before → first after)
    assert verdict.energy[1, :97].sum() == pytest.approx(reads[96] - register, abs=1e-6)
    assert not (verdict.flags[1, :96] & vk.BIT_INTERVAL_SUM).any()
    engine.commit(verdict, days=1)
    daily, estimated = engine.hist.daily(np.array([1]), today, 1)
    assert estimated[0, 0] and daily[0, 0] == pytest.approx(energy[:96].sum(), rel=0.01)


def test_engine_flags_and_substitutes_a_decrease() -> None:
    engine, today, register = engine_with_history(5)
    energy = regular_day(0)
    reads = np.round(register + np.cumsum(energy), 2)
    reads[50] = reads[49] - 10.0
    window = engine.window(today)
    window.reads[0] = reads
    window.power[:] = energy * 4
    verdict = engine.evaluate(window, due=96)
    assert verdict.quality[0, 50] == 2  # S: substituted
    assert verdict.flags[0, 50] & vk.BIT_DECREASE
    assert verdict.method[0, 50] == Method.LINEAR
    assert reads[49] < verdict.value[0, 50] < reads[51]
    assert (np.delete(verdict.quality[0], 50) == 0).all()


def test_engine_state_round_trips_and_refuses_stale_windows() -> None:
    engine, today, _ = engine_with_history(3)
    with pytest.raises(ValueError, match="starts before"):
        engine.evaluate(engine.window(today - 1))
    arrays = engine.state.to_arrays()
    assert (
        engine.state.__class__.from_arrays(arrays, 2).last_value.tolist()
        == engine.state.last_value.tolist()
    )


def test_engine_persists_and_restores_by_meter_id() -> None:
    engine, today, register = engine_with_history(30)
    saved = engine.to_arrays()
    # the config now lists a new meter first and m-2 is gone
    restored = VeeEngine(engine.config, ["m-new", "m-1"])
    restored.restore(saved)
    energy = regular_day(0)
    reads = np.round(register + np.cumsum(energy), 2)
    reads[10:20] = NAN  # a gap the like days fill

    def run(e: VeeEngine, row: int) -> tuple[np.ndarray, ...]:
        window = e.window(today, rows=[row])
        window.reads[0] = reads
        window.power[0] = energy * 4
        verdict = e.evaluate(window)
        return verdict.quality[0], verdict.method[0], verdict.value[0]

    before = run(engine, 0)
    after = run(restored, 1)
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.isnan(restored.state.last_value[0]) and restored.hist.newest_day[0] == -1
    with pytest.raises(ValueError, match="lacks"):
        restored.restore({k: v for k, v in saved.items() if k != "state.meter_ids"})
