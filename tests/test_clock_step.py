"""Wall-clock steps (gateway/pipeline/clock.py) in process: the step detector on injected clocks,
the ``clock.step`` alarm through the real committer and store, theft windows discarded across a
step, and VEE estimating nothing the clock jumped over (tests/test_e2e_clock_step.py does the
same to the daemon under libfaketime)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from gateway.analytics.theft import TheftMonitor
from gateway.config import load_config
from gateway.pipeline.clock import CLOCK_STEP_ALARM, ClockStep, ClockWatch
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.pipeline.vee_stage import VeeStage
from gateway.store import Store
from protocols.topics import GatewayTopics
from tests.test_theft_monitor import CONFIG, T0, Rig, alarm_messages, poll
from tests.test_vee_stage import T0 as VEE_T0
from tests.test_vee_stage import Fleet, seeded_stage

DAY_S = 86_400
HOUR_S = 3_600


class Clocks:
    """A wall clock and a monotonic clock in ns: :meth:`advance` moves both (time passes),
    :meth:`step` only the wall clock (an NTP / RTC correction, ``date -s``)."""

    def __init__(self, wall_ms: int) -> None:
        self.wall = wall_ms * 1_000_000
        self.mono = 5_000 * 1_000_000_000

    def advance(self, seconds: float) -> None:
        self.wall += int(seconds * 1e9)
        self.mono += int(seconds * 1e9)

    def step(self, seconds: float) -> None:
        self.wall += int(seconds * 1e9)

    @property
    def wall_ms(self) -> int:
        return self.wall // 1_000_000

    def watch(self, threshold_s: float = 300.0, alarms: object = None) -> ClockWatch:
        return ClockWatch(threshold_s, alarms,  # type: ignore[arg-type]
                          wall_ns=lambda: self.wall, monotonic_ns=lambda: self.mono)


# -- the detector --------------------------------------------------------------------------------

def test_drift_below_the_threshold_is_followed_and_a_step_either_way_is_seen_once() -> None:
    clocks = Clocks(T0)
    watch = clocks.watch(threshold_s=300)
    seen: list[ClockStep] = []
    watch.subscribe(seen.append)
    for _ in range(20):  # NTP slewing: 20 s off in total, never more than 1 s at a time
        clocks.advance(30)
        clocks.step(1)
        assert watch.check() is None
    clocks.advance(2)
    clocks.step(DAY_S)
    step = watch.check()
    assert step is not None and step.step_ms == DAY_S * 1000
    assert step.after_ms == clocks.wall_ms and step.before_ms == clocks.wall_ms - DAY_S * 1000
    assert watch.check() is None  # seen once: the new offset is the clock now
    clocks.advance(5)
    clocks.step(-HOUR_S)
    back = watch.check()
    assert back is not None and back.step_ms == -HOUR_S * 1000
    assert seen == [step, back] and watch.steps == 2
    details = back.details()
    assert details["step_s"] == -3600.0 and details["before_ms"] == back.before_ms
    assert "-3600 s" in str(details["hint"])


def test_a_step_just_under_the_threshold_is_not_a_step() -> None:
    clocks = Clocks(T0)
    watch = clocks.watch(threshold_s=300)
    clocks.step(299)
    assert watch.check() is None
    clocks.step(301)
    assert watch.check() is not None


def _committer(site: Path, clocks: Clocks) -> tuple[Committer, Store, ClockWatch]:
    (site / "profiles").mkdir(exist_ok=True)
    (site / "profiles" / "dlt645-2007.toml").write_text("# test profile\n")
    store = Store.open(site / "var" / "gateway.sqlite")
    services = PipelineServices.open(store, GatewayTopics("mtr/v1", "gw-t"))
    watch = clocks.watch(alarms=services.alarms)
    return Committer(services, asyncio.Queue(), clock=watch), store, watch


def test_each_step_is_one_clock_step_alarm_with_its_size_before_and_after(tmp_path: Path) -> None:
    clocks = Clocks(T0)
    committer, store, _watch = _committer(tmp_path, clocks)
    try:
        committer.commit([])
        clocks.advance(10)
        clocks.step(DAY_S)
        committer.commit([])
        committer.commit([])
        clocks.advance(10)
        clocks.step(-HOUR_S)
        committer.commit([])
        alarms = [a for a in alarm_messages(store) if a["kind"] == CLOCK_STEP_ALARM]
        raised = [a for a in alarms if a["state"] == "raised"]
        assert [a["details"]["step_s"] for a in raised] == [86400.0, -3600.0]
        first = raised[0]["details"]
        assert first["after_ms"] - first["before_ms"] == DAY_S * 1000
        # the second step supersedes the first: cleared, so one alarm is active at a time
        assert [a["state"] for a in alarms] == ["raised", "cleared", "raised"]
    finally:
        store.close()


# -- theft ---------------------------------------------------------------------------------------

POWER_KW = 0.19  # a small load: the 0.01 kWh register stays put for several 30-s polls


def _theft_run(tmp_path: Path, *, with_clock: bool) -> list[str]:
    """An honest, lightly loaded meter polled every 30 s by a gateway whose wall clock steps
    forward a day and then back an hour; returns the theft.meter_stopped states raised."""
    site = tmp_path / ("clock" if with_clock else "wall")
    site.mkdir()
    (site / "gateway.toml").write_text(CONFIG)
    clocks = Clocks(T0)
    committer, store, watch = _committer(site, clocks)
    if not with_clock:
        committer.clock = None
    monitor = TheftMonitor(load_config(site / "gateway.toml"), committer.alarms,
                           clock=committer.clock)
    committer.feed.subscribe("theft", monitor.on_poll)
    start = clocks.mono
    i = (0.3, 0.3, 0.3)
    try:
        for k in range(30):
            if k == 11:  # the register reads 1000.02 at polls 10 and 11 (30 s of 0.19 kW)
                clocks.step(DAY_S)
            if k == 20:
                clocks.step(-HOUR_S)
            hours = (clocks.mono - start) / 3.6e12
            committer.commit([poll("m-1", clocks.wall_ms, i=i,
                                       imported=f"{1000 + POWER_KW * hours:.2f}")])
            clocks.advance(30)
        return [a["state"] for a in alarm_messages(store) if a["kind"] == "theft.meter_stopped"]
    finally:
        store.close()


def test_a_clock_step_raises_no_theft_alarm_where_wall_time_windows_did(tmp_path: Path) -> None:
    # Wall time as the window's time base (no clock watch): a day of power against a register
    # that moved for 30 s is "meter stopped" — the false alarm of issue 12.
    assert "raised" in _theft_run(tmp_path, with_clock=False)
    assert _theft_run(tmp_path, with_clock=True) == []


def test_windows_spanning_a_step_are_discarded_and_polls_stamped_before_it_dropped(
        tmp_path: Path) -> None:
    clocks = Clocks(T0)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "dlt645-2007.toml").write_text("# test profile\n")
    (tmp_path / "gateway.toml").write_text(CONFIG)
    rig = Rig(tmp_path)
    watch = clocks.watch()
    monitor = TheftMonitor(rig.config, rig.committer.alarms, clock=watch)
    try:
        for _ in range(4):
            monitor.on_poll(_validated(poll("m-1", clocks.wall_ms)))
            clocks.advance(30)
        row = monitor.meters.index("m-1")
        assert monitor.filled[row] == 4
        stale = poll("m-1", clocks.wall_ms)  # polled just before the step, committed after it
        clocks.step(DAY_S)
        assert watch.check() is not None
        monitor.on_poll(_validated(stale))
        assert monitor.filled[row] == 0 and monitor.settling[row]  # discarded, stale dropped
        assert monitor.evaluate([row]) == 0
        monitor.on_poll(_validated(poll("m-1", clocks.wall_ms)))
        clocks.advance(30)
        monitor.on_poll(_validated(poll("m-1", clocks.wall_ms)))
        assert monitor.filled[row] == 2 and not monitor.settling[row]
        _data, times, wall = monitor.window(np.array([row], dtype=np.intp))
        assert wall[0, -1] == clocks.wall_ms and times[0, -1] == clocks.mono // 1_000_000
        assert times[0, -1] - times[0, -2] == 30_000
    finally:
        rig.close()


def _validated(result: object) -> object:
    from gateway.pipeline.feed import ValidatedPoll

    assert hasattr(result, "values")
    from protocols.payload import ReadRecord

    records = tuple(ReadRecord.actual(pv.quantity, pv.value, pv.unit, pv.t_ms)
                    for pv in result.values)  # type: ignore[attr-defined]
    return ValidatedPoll(result.meter_id, result.bus, result.finished_ms,  # type: ignore[attr-defined]
                         result.ok, records, result.values, result.flags)  # type: ignore[attr-defined]


# -- VEE -----------------------------------------------------------------------------------------

def _vee_run(stage: VeeStage, fleet: Fleet, steps: dict[int, int], tell: bool
             ) -> list[tuple[str, object]]:
    """Poll every (monotonic) second for 300 s; at the seconds in ``steps`` the wall clock
    steps by that many seconds. Registers follow real time; reads carry the wall time."""
    out: list[tuple[str, object]] = []
    offset_s = 0
    for second in range(100, 400):
        if second in steps:
            before = VEE_T0 + (second + offset_s) * 1000 + 100
            offset_s += steps[second]
            if tell:
                stage.on_clock_step(ClockStep(before, before + steps[second] * 1000))
        real = VEE_T0 + second * 1000 + 100
        wall = real + offset_s * 1000
        polled = []
        for meter in fleet.base:
            result, records = fleet.poll(meter, real)
            polled.append((result, [type(r)(r.q, r.val, r.unit, wall) for r in records]))
        for meter, records in stage.apply(polled, wall + 50):
            out += [(meter, r) for r in records]
    return out


def test_vee_estimates_nothing_a_forward_step_jumped_over() -> None:
    fleet = Fleet(["m-1", "m-2"])
    blind = _vee_run(seeded_stage(list(fleet.base)), fleet, {200: 60}, tell=False)
    assert any(r.quality == "E" for _, r in blind)  # type: ignore[attr-defined]
    stage = seeded_stage(list(fleet.base))
    told = _vee_run(stage, fleet, {200: 60}, tell=True)
    assert [r for _, r in told if r.quality != "A"] == []  # type: ignore[attr-defined]
    assert stage.stats.estimates == 0 and stage.skipped


def test_after_a_step_back_vee_places_no_read_until_the_clock_is_past_it_again() -> None:
    fleet = Fleet(["m-1", "m-2"])
    blind = _vee_run(seeded_stage(list(fleet.base)), fleet, {200: -60}, tell=False)
    assert any(r.quality != "A" or r.rev for _, r in blind)  # type: ignore[attr-defined]
    stage = seeded_stage(list(fleet.base))
    told = _vee_run(stage, fleet, {200: -60}, tell=True)
    assert told == [] and stage.stats.estimates == 0
    # every interval of the window that came due was graded from a read in its own time
    keys = [(m, r.t) for m, r in told]  # type: ignore[attr-defined]
    assert len(keys) == len(set(keys))


def test_skipped_intervals_survive_a_save_and_load(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        fleet = Fleet(["m-1"])
        stage = seeded_stage(list(fleet.base), store)
        _vee_run(stage, fleet, {200: 60}, tell=True)
        stage.save()
        again = seeded_stage(list(fleet.base), store)
        assert again.load() and again.skipped == stage.skipped
