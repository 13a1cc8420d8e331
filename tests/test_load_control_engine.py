"""The load-control engine on simulated timelines.

Most scenarios run the engine against real simulated DL/T 645 meters (tests/load_control_rig.py):
every trip and close is a real 1CH frame, verified from status word 3, and a tripped meter's load
really disappears from the group total. The rest feed the engine synthetic power where a scenario
needs exact values (hysteresis edges, float-down arithmetic).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.control.load_control import (
    CommandOutcome,
    ControlCommand,
    EngineSettings,
    LoadControlEngine,
    Output,
    PrepaidSettings,
    PublishAlarm,
    RecordRound,
    SendControl,
    SettingsError,
    Topology,
    check_params,
)
from gateway.control.load_control.settings import GroupSettings, GroupSpec, MeterSpec
from protocols.dlt645.messages import ControlAction
from tests.load_control_rig import EVENING, Rig

TRIP = ControlAction.TRIP
T0 = EVENING


def scenario_settings(**overrides: Any) -> EngineSettings:
    values: dict[str, Any] = dict(alarm_delay_s=120.0, settle_s=180.0, restore_delay_min_s=60.0,
                                  restore_delay_max_s=900.0, power_up_protect_s=0.0)
    values.update(overrides)
    return EngineSettings(**values)


def engine_for(n: int = 4, protected: tuple[str, ...] = (), seed: int = 1,
               **overrides: Any) -> LoadControlEngine:
    ids = [f"m{i}" for i in range(n)] + list(protected)
    topology = Topology.build([MeterSpec(m, protected=m in protected) for m in ids],
                              [GroupSpec("g", tuple(ids), tuple(ids))])
    return LoadControlEngine(topology, scenario_settings(**overrides), rng=random.Random(seed))


def cmd(action: str, meters: tuple[str, ...] = (), group: str | None = None,
        cid: int = 1, **params: Any) -> ControlCommand:
    return ControlCommand(bytes([cid]) * 16, action, meters, group, params)


def run(engine: LoadControlEngine, t0: float, seconds: float, kw: Callable[[float], float],
        step: float = 10.0) -> list[tuple[float, Output]]:
    """Feed power ``kw(t)`` every ``step`` and tick; every SendControl succeeds at once."""
    log: list[tuple[float, Output]] = []
    t = t0
    while t < t0 + seconds:
        t += step
        pending = engine.on_power("g", t, kw(t)) + engine.tick(t)
        while pending:
            out = pending.pop(0)
            log.append((t, out))
            if isinstance(out, SendControl):
                pending.extend(engine.on_actuation(out.request_id, t, True))
    return log


def sends(log: list[tuple[float, Output]], action: ControlAction | None = None) -> list[tuple[float, SendControl]]:
    return [(t, o) for t, o in log if isinstance(o, SendControl) and (action is None or o.action is action)]


# --------------------------------------------------------------------------------------------
# Rounds: alarm → delay → trip → settle → next round; reverse-order restore
# --------------------------------------------------------------------------------------------


def test_rounds_alarm_then_trip_then_next_round_only_after_settle_then_reverse_restore() -> None:
    rig = Rig(protected=("p",), settings=scenario_settings(alarm_delay_s=120.0))
    start = rig.now
    total = rig.group_kw()
    assert 44 < total < 52, total  # 5 meters of ~10 kW at the evening peak
    # Round 1 (m0) leaves ~38 kW > 34, round 2 (m1) ~29 kW < 34·0.95: two rounds, no third.
    rig.command("limit", group="g", params={"limit_kw": 34, "end": start + 1800,
                                            "alarm_delay_s": [120, 60, 60, 60]})
    rig.advance(3000)

    pre = rig.alarms("customer.pre_trip")
    trips = rig.sends(TRIP)
    assert [o.meter for _, o in pre] == ["m0", "m1"]
    assert [o.meter for _, o in trips] == ["m0", "m1"]
    alarm1, trip1 = pre[0][0], trips[0][0]
    alarm2, trip2 = pre[1][0], trips[1][0]
    assert alarm1 <= start + 10  # the first sample over the limit alarms
    assert pre[0][1].details["trip_at"] == alarm1 + 120
    assert trip1 - alarm1 == pytest.approx(120, abs=10)  # round 1's own alarm delay
    assert alarm2 - trip1 >= 180  # nothing before the settle time
    assert alarm2 - trip1 == pytest.approx(180, abs=10)  # and then, still over → round 2
    assert trip2 - alarm2 == pytest.approx(60, abs=10)  # round 2's own alarm delay
    assert all(o.meter != "p" for _, o in rig.sends())  # the protected customer: nothing
    # CRM sees the trip per customer, and each was verified on the meter.
    assert [o.meter for _, o in rig.alarms("customer.trip")] == ["m0", "m1"]
    assert all(ok for _, meter, action, ok in rig.frames)

    records = [o for _, o in rig.log if isinstance(o, RecordRound)]
    assert [r.round_no for r in records] == [1, 2]
    r1 = records[0]
    assert r1.before is not None and r1.after is not None
    assert r1.before - r1.after == pytest.approx(10, abs=2.5)  # m0's load left the group
    assert r1.kind == "business_suspension" and r1.limit == 34 and r1.unit == "kW"

    # The limit ended at start + 1800: restores in reverse order, delays inside the bounds.
    closes = rig.sends(ControlAction.DIRECT_CLOSE)
    assert [o.meter for _, o in closes] == ["m1", "m0"]
    for t, _ in closes:
        assert 60 <= t - (start + 1800) <= 900 + 10
    assert [o.meter for _, o in rig.alarms("customer.trip", "cleared")] == ["m1", "m0"]
    assert not any(rig.relay_open(m) for m in rig.ids)
    assert rig.group_kw() > 40  # everyone is back on


def test_next_round_only_if_still_over_after_the_settle_time() -> None:
    rig = Rig(settings=scenario_settings())
    total = rig.group_kw()
    # One round (~10 kW of ~38) brings the group under 0.85 × total: round 2 must not trip.
    rig.command("limit", group="g", params={"limit_kw": round(total * 0.85, 1)})
    rig.advance(1800)
    assert [o.meter for _, o in rig.sends(TRIP)] == ["m0"]
    assert [o.meter for _, o in rig.alarms("customer.pre_trip")] == ["m0"]
    assert rig.engine.group_view("g").tripped_rounds == (1,)


def test_alarm_is_called_off_when_the_load_drops_before_the_delay() -> None:
    engine = engine_for()
    engine.on_command(cmd("limit", group="g", limit_kw=100), T0)
    load = {"kw": 120.0}
    log = run(engine, T0, 60, lambda t: load["kw"])
    assert [o.meter for _, o in log if isinstance(o, PublishAlarm) and o.kind == "customer.pre_trip"] == ["m0"]
    load["kw"] = 90.0
    log += run(engine, T0 + 60, 600, lambda t: load["kw"])
    assert not sends(log, TRIP)
    cleared = [o for _, o in log if isinstance(o, PublishAlarm) and o.kind == "customer.pre_trip"
               and o.state == "cleared"]
    assert cleared and cleared[0].details["outcome"] == "called_off"
    assert [o.meter for _, o in sends(log, ControlAction.ALARM_RELEASE)] == ["m0"]


def test_restore_under_a_limit_needs_the_hysteresis_and_room_for_the_shed_load() -> None:
    engine = engine_for(hysteresis_pct=10.0, alarm_delay_s=0.0, settle_s=60.0,
                        restore_delay_min_s=0.0, restore_delay_max_s=0.0, after_record_s=60.0)
    engine.on_command(cmd("limit", group="g", limit_kw=100), T0)
    base = {"kw": 110.0}

    def kw(t: float) -> float:
        return base["kw"] - (20.0 if engine.holds("m0") else 0.0)  # m0 carries 20 kW

    log = run(engine, T0, 300, kw)
    assert [o.meter for _, o in sends(log, TRIP)] == ["m0"]  # 110 → 90: one round
    # Other customers' load falls to 85 (65 with m0 off): 65 + 20 shed = 85 ≤ 90 (100 − 10 %).
    base["kw"] = 85.0
    log = run(engine, T0 + 300, 50, kw)
    assert not sends(log, ControlAction.DIRECT_CLOSE)  # holds for settle_s first
    log = run(engine, T0 + 350, 60, kw)
    assert [o.meter for _, o in sends(log, ControlAction.DIRECT_CLOSE)] == ["m0"]
    # With 75 kW + 20 shed = 95 > 90 the round would stay off: check the edge on a fresh episode.
    engine2 = engine_for(hysteresis_pct=10.0, alarm_delay_s=0.0, settle_s=60.0,
                         restore_delay_min_s=0.0, restore_delay_max_s=0.0, after_record_s=60.0)
    engine2.on_command(cmd("limit", group="g", limit_kw=100), T0)
    base2 = {"kw": 110.0}
    log = run(engine2, T0, 300, lambda t: base2["kw"] - (20.0 if engine2.holds("m0") else 0.0))
    base2["kw"] = 95.0
    log = run(engine2, T0 + 300, 900, lambda t: base2["kw"] - (20.0 if engine2.holds("m0") else 0.0))
    assert not sends(log, ControlAction.DIRECT_CLOSE)
    assert engine2.group_view("g").state == "under"  # 75 ≤ 90 — but no room for the 20 kW


def test_restore_delays_are_random_per_customer_and_seeded() -> None:
    def closes(seed: int) -> list[tuple[float, str]]:
        # Power judged on each 10 s sample, so every round's effect is seen before the next.
        engine = engine_for(n=8, seed=seed, alarm_delay_s=0.0, settle_s=10.0, power_step_s=10,
                            power_window_s=10, restore_delay_min_s=100.0,
                            restore_delay_max_s=1800.0)
        engine.on_command(cmd("limit", group="g", limit_kw=10, end=T0 + 600), T0)
        log = run(engine, T0, 4000, lambda t: 8.0 * sum(not engine.holds(f"m{i}") for i in range(8)))
        return [(t, o.meter) for t, o in sends(log, ControlAction.DIRECT_CLOSE)]

    first = closes(3)
    assert closes(3) == first  # same seed, same timeline
    assert closes(4) != first
    assert len(first) == 7  # 8 rounds of one meter; 64 → 8 kW needs 7 of them
    meters = [m for _, m in first]
    assert meters == [f"m{i}" for i in range(6, -1, -1)]  # last tripped, first restored
    delays = [t - (T0 + 600) for t, _ in first]
    assert all(100 <= d <= 1800 + 10 for d in delays)
    assert len({round(d) for d in delays}) > 3  # spread out, not one moment


# --------------------------------------------------------------------------------------------
# Protected customers: never tripped, whatever the input
# --------------------------------------------------------------------------------------------

_METERS = ("m0", "m1", "m2", "p0", "p1")
_actions = st.sampled_from(["trip", "close", "allow_close", "alarm", "limit", "cancel", "protect",
                            "unprotect"])


@st.composite
def _inputs(draw: Any) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["power", "tick", "balance", "link", "command", "status",
                                     "actuation", "energy"]))
        dt = draw(st.sampled_from([0.0, 1.0, 30.0, 200.0, 2000.0]))
        if kind == "command":
            action = draw(_actions)
            targets = tuple(draw(st.lists(st.sampled_from(_METERS), min_size=1, max_size=5,
                                          unique=True)))
            group = draw(st.sampled_from([None, "g"]))
            params: dict[str, Any] = draw(st.sampled_from([
                {}, {"alarm_delay_s": 0}, {"alarm_delay_s": 30}, {"duration_s": 60},
                {"limit_kw": 1.0}, {"limit_kw": 0.0, "alarm_delay_s": 0},
                {"kind": "monthly_energy", "limit_kwh": 1.0, "alarm_delay_s": 0},
                {"kind": "float_down", "coefficient_pct": -50, "duration_s": 3600},
                {"kind": "time_period", "windows": [{"start": "00:00", "end": "24:00",
                                                     "limit_kw": 0.5}]},
                {"rounds": [["p0"], ["m0"]], "limit_kw": 1.0},
                {"mode": "exempt"}, {"release": True},
            ]))
            steps.append((kind, (dt, action, targets, group, params)))
        else:
            steps.append((kind, (dt, draw(st.sampled_from(_METERS)),
                                 draw(st.floats(-10, 500, allow_nan=False)),
                                 draw(st.booleans()))))
    return steps


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_inputs())
def test_no_input_sequence_ever_trips_a_protected_meter(steps: list[tuple[str, Any]]) -> None:
    ids = list(_METERS)
    topology = Topology.build([MeterSpec(m, protected=m.startswith("p")) for m in ids],
                              [GroupSpec("g", tuple(ids), tuple(ids))])
    engine = LoadControlEngine(topology, scenario_settings(
        alarm_delay_s=0.0, settle_s=60.0, prepaid=PrepaidSettings(10.0, 5.0, 0.0),
        link_loss_protect_after_s=100.0), rng=random.Random(0))
    t = T0
    outputs: list[Output] = list(engine.power_up(t))
    open_requests: list[int] = []
    answered: set[int] = set()
    for n, (kind, args) in enumerate(steps):
        t += args[0]
        if kind == "command":
            _, action, targets, group, params = args
            outputs += engine.on_command(ControlCommand(n.to_bytes(16, "big"), action, targets,
                                                        group, params), t)
        else:
            _, meter, value, flag = args
            if kind == "power":
                outputs += engine.on_power("g", t, value)
            elif kind == "energy":
                outputs += engine.on_energy("g", t, value)
            elif kind == "balance":
                outputs += engine.on_balance(meter, t, value - 20)
            elif kind == "link":
                outputs += engine.on_link(t, flag)
            elif kind == "status":
                outputs += engine.on_meter_status(meter, t, relay_open=flag)
            elif kind == "actuation" and open_requests:
                answered.add(open_requests[0])
                outputs += engine.on_actuation(open_requests.pop(0), t, flag, "simulated")
            else:
                outputs += engine.tick(t)
        seen = set(open_requests) | answered
        open_requests += [o.request_id for o in outputs
                          if isinstance(o, SendControl) and o.request_id not in seen]
    trips = [o for o in outputs if isinstance(o, SendControl) and o.action is TRIP]
    assert not [o for o in trips if o.meter.startswith("p")]
    assert not [o for o in outputs if isinstance(o, PublishAlarm)
                and o.kind == "load.protected_trip_blocked"]  # not even attempted
    json.dumps(engine.to_dict())  # the state stays serialisable whatever happened


def test_rounds_naming_a_protected_meter_are_refused() -> None:
    engine = engine_for(protected=("p",))
    out = engine.on_command(cmd("limit", group="g", limit_kw=1, rounds=[["m0"], ["p"]]), T0)
    assert isinstance(out[-1], CommandOutcome) and out[-1].status == "failed"
    assert "p is protected" in out[-1].reason
    out = engine.on_command(cmd("trip", ("m0", "p"), cid=2), T0)
    outcome = [o for o in out if isinstance(o, CommandOutcome)]
    assert [o.meter for o in out if isinstance(o, SendControl)] == ["m0"]
    assert not outcome  # waits for m0's actuation
    request = next(o for o in out if isinstance(o, SendControl))
    done = engine.on_actuation(request.request_id, T0 + 1, True)
    assert isinstance(done[-1], CommandOutcome) and done[-1].status == "failed"
    assert "p: protected customer, never tripped" in done[-1].reason
    assert "m0 tripped" in done[-1].reason
    with pytest.raises(SettingsError, match="protected"):
        LoadControlEngine(engine.topology, EngineSettings(groups={"g": GroupSettings(rounds=(("p",),))}))


# --------------------------------------------------------------------------------------------
# Protect (保电): at power-up, on link loss, on command
# --------------------------------------------------------------------------------------------


def test_protect_at_power_up_then_control_resumes() -> None:
    engine = engine_for(power_up_protect_s=600.0, alarm_delay_s=60.0)
    engine.power_up(T0)
    assert engine.protect_reasons() == ("power_up",)
    engine.on_command(cmd("limit", group="g", limit_kw=100), T0)
    log = run(engine, T0, 590, lambda t: 150.0)
    assert not sends(log)  # over the limit all along, but protected: no alarm frame, no trip
    assert not [o for _, o in log if isinstance(o, PublishAlarm) and o.kind == "customer.pre_trip"]
    log = run(engine, T0 + 590, 200, lambda t: 150.0)
    alarm_t = next(t for t, o in log if isinstance(o, PublishAlarm) and o.kind == "customer.pre_trip")
    trip_t = sends(log, TRIP)[0][0]
    assert alarm_t >= T0 + 600 and trip_t - alarm_t == pytest.approx(60, abs=10)
    cleared = [o for _, o in log if isinstance(o, PublishAlarm) and o.key == "gateway.protect/gateway"]
    assert cleared and cleared[0].state == "cleared"


def test_protect_on_link_loss_calls_off_alarms_and_restores_the_previous_state() -> None:
    engine = engine_for(link_loss_protect_after_s=300.0, alarm_delay_s=600.0)
    engine.on_command(cmd("limit", group="g", limit_kw=100), T0)
    engine.on_command(cmd("protect", ("m3",), cid=2, duration_s=0), T0)  # operator protect
    log = run(engine, T0, 60, lambda t: 150.0)
    assert engine.group_view("g").phase == "alarm"
    engine.on_link(T0 + 60, False)
    log = run(engine, T0 + 60, 290, lambda t: 150.0)
    assert engine.protect_reasons() == ()  # down 290 s < 300 s: not yet
    assert engine.group_view("g").phase == "alarm"
    log = run(engine, T0 + 350, 1200, lambda t: 150.0)
    assert engine.protect_reasons() == ("link_loss",)
    assert not sends(log, TRIP)  # 20 minutes over the limit: nothing shed while protected
    called_off = [o for _, o in log if isinstance(o, PublishAlarm) and o.kind == "customer.pre_trip"
                  and o.state == "cleared"]
    assert called_off and called_off[0].details["outcome"] == "called_off"
    out = engine.on_link(T0 + 1600, True)
    assert any(isinstance(o, PublishAlarm) and o.key == "gateway.protect/gateway"
               and o.state == "cleared" for o in out)
    log = run(engine, T0 + 1600, 700, lambda t: 150.0)
    assert [o.meter for _, o in sends(log, TRIP)][:1] == ["m0"]  # control resumed
    # The operator's protect of m3 was there before the link loss and still is.
    assert engine.to_dict()["meters"]["m3"]["protect"] is True


def test_protect_command_on_meters_sends_3a_and_the_meter_refuses_trips() -> None:
    rig = Rig(settings=scenario_settings(alarm_delay_s=0.0))
    rig.command("protect", meters=["m0"], params={"duration_s": 600}, cmd_id=b"\x01" * 16)
    assert [(m, a) for _, m, a, ok in rig.frames] == [("m0", ControlAction.PROTECT)]
    assert rig.sims["m0"].sample().status.protected
    rig.command("trip", meters=["m0"], cmd_id=b"\x02" * 16)
    outcome = [o for _, o in rig.log if isinstance(o, CommandOutcome) and o.cmd_id == b"\x02" * 16]
    assert outcome[0].status == "failed" and "protect" in outcome[0].reason
    assert not rig.sends(TRIP)
    rig.advance(610)  # the protect period ends: 3B goes out by itself
    assert rig.frames[-1][1:3] == ("m0", ControlAction.PROTECT_RELEASE)
    assert not rig.sims["m0"].sample().status.protected


def test_group_protect_suspends_its_rounds_only() -> None:
    engine = engine_for(alarm_delay_s=0.0)
    engine.on_command(cmd("protect", ("m0", "m1", "m2", "m3"), "g"), T0)
    engine.on_command(cmd("limit", group="g", cid=2, limit_kw=100), T0)
    log = run(engine, T0, 300, lambda t: 150.0)
    assert not sends(log)
    out = engine.on_command(cmd("unprotect", ("m0", "m1", "m2", "m3"), "g", cid=3), T0 + 300)
    assert [o.meter for o in out if isinstance(o, SendControl) and o.action is TRIP] == ["m0"]


def test_exempt_meters_are_skipped_by_group_control_but_obey_direct_commands() -> None:
    engine = engine_for(alarm_delay_s=0.0, settle_s=300.0)
    engine.on_command(cmd("protect", ("m0",), mode="exempt"), T0)
    engine.on_command(cmd("limit", group="g", cid=2, limit_kw=100), T0)
    log = run(engine, T0, 20, lambda t: 150.0)
    assert [o.meter for _, o in sends(log, TRIP)] == ["m1"]  # m0 exempt: round 2 first
    out = engine.on_command(cmd("trip", ("m0",), cid=3), T0 + 30)
    assert [o.meter for o in out if isinstance(o, SendControl)] == ["m0"]


# --------------------------------------------------------------------------------------------
# Prepaid
# --------------------------------------------------------------------------------------------


def test_prepaid_alarm_then_trip_after_delay_then_recharge_allows_close_only() -> None:
    rig = Rig(settings=scenario_settings(prepaid=PrepaidSettings(alarm_threshold=10.0,
                                                                 trip_threshold=0.0,
                                                                 trip_delay_s=300.0)))
    e = rig.engine
    rig.dispatch(e.on_balance("m2", rig.now, 25.0))
    assert not rig.log[1:]
    rig.dispatch(e.on_balance("m2", rig.now, 8.0))  # at or below the alarm threshold
    assert [o.key for _, o in rig.alarms("prepaid.low")] == ["prepaid.low/m2"]
    assert rig.frames[-1][1:] == ("m2", ControlAction.ALARM, True)
    assert rig.sims["m2"].sample().status.pre_trip_alarm
    rig.dispatch(e.on_balance("m2", rig.now, 0.0))  # at the trip threshold: trip after the delay
    rig.advance(290)
    assert not rig.sends(TRIP)
    rig.advance(20)
    assert [o.meter for _, o in rig.sends(TRIP)] == ["m2"]
    assert rig.relay_open("m2")
    rig.dispatch(e.on_balance("m2", rig.now, 50.0))  # recharged
    assert [o.action for _, o in rig.sends() if o.meter == "m2"][-2:] == [
        ControlAction.ALLOW_CLOSE, ControlAction.ALARM_RELEASE]
    assert not rig.sends(ControlAction.DIRECT_CLOSE)  # never an automatic close
    assert rig.relay_open("m2")  # open until the customer presses the button
    rig.sims["m2"].customer_close()
    assert not rig.relay_open("m2")
    rig.advance(3600)
    assert not rig.sends(ControlAction.DIRECT_CLOSE)


def test_prepaid_exhausted_is_raised_and_cleared_and_a_protected_customer_never_tripped() -> None:
    rig = Rig(protected=("p",), settings=scenario_settings(
        prepaid=PrepaidSettings(alarm_threshold=10.0, trip_threshold=0.0, trip_delay_s=60.0)))
    e = rig.engine
    for meter in ("m1", "p"):
        rig.dispatch(e.on_balance(meter, rig.now, -2.0))
    raised = {o.meter: o for _, o in rig.alarms("prepaid.exhausted")}
    assert set(raised) == {"m1", "p"}
    assert raised["p"].details["protected"] is True and raised["p"].details["trip_at"] is None
    assert raised["m1"].details["trip_at"] == pytest.approx(rig.now + 60.0)
    assert raised["m1"].severity == "major"
    rig.advance(3600)
    assert [o.meter for _, o in rig.sends(TRIP)] == ["m1"]
    assert not [o for _, o in rig.sends() if o.meter == "p"]  # not even an alarm frame
    assert not rig.alarms("load.protected_trip_blocked")
    rig.dispatch(e.on_balance("m1", rig.now, 5.0))  # above the trip threshold, still low
    assert [o.meter for _, o in rig.alarms("prepaid.exhausted", "cleared")] == ["m1"]
    assert not rig.alarms("prepaid.low", "cleared")


def test_prepaid_trip_is_released_by_allow_close_even_when_power_control_lets_go_last() -> None:
    engine = engine_for(alarm_delay_s=0.0, settle_s=60.0, restore_delay_max_s=0.0,
                        restore_delay_min_s=0.0,
                        prepaid=PrepaidSettings(alarm_threshold=5.0, trip_threshold=0.0,
                                                trip_delay_s=0.0))
    engine.on_balance("m0", T0, 0.0)
    engine.on_command(cmd("limit", group="g", limit_kw=100, end=T0 + 120), T0)
    log = run(engine, T0, 60, lambda t: 150.0 - 40.0 * sum(bool(engine.holds(m)) for m in ("m0", "m1")))
    assert engine.holds("m0") == ("power:g", "prepaid")
    engine.on_balance("m0", T0 + 60, 100.0)  # recharged: power control still holds it
    log = run(engine, T0 + 60, 300, lambda t: 100.0)
    closes = [o for _, o in sends(log) if o.meter == "m0" and o.action in
              (ControlAction.ALLOW_CLOSE, ControlAction.DIRECT_CLOSE)]
    assert [o.action for o in closes] == [ControlAction.ALLOW_CLOSE]


# --------------------------------------------------------------------------------------------
# Limit kinds in the engine
# --------------------------------------------------------------------------------------------


def test_priority_among_limit_kinds_decides_the_limit_in_force() -> None:
    engine = engine_for()
    local_noon = T0 - 7 * 3600  # 2025-01-01 12:00 local, a Wednesday
    engine.on_command(cmd("limit", group="g", cid=1, kind="time_period",
                          windows=[{"start": "00:00", "end": "24:00", "limit_kw": 100}]), local_noon)
    engine.on_power("g", local_noon, 50.0)
    view = engine.group_view("g")
    assert (view.kind, view.limit_kw) == ("time_period", 100.0)
    engine.on_command(cmd("limit", group="g", cid=2, kind="factory_rest", limit_kw=90,
                          weekdays=["wed"], start_time="08:00", duration_min=600), local_noon)
    assert engine.group_view("g").kind == "factory_rest"
    engine.on_command(cmd("limit", group="g", cid=3, limit_kw=120, end=local_noon + 3600), local_noon)
    view = engine.group_view("g")
    assert (view.kind, view.limit_kw) == ("business_suspension", 120.0)  # higher kind wins, not lower kW
    engine.tick(local_noon + 3600)
    assert engine.group_view("g").kind == "factory_rest"  # business suspension ended
    engine.tick(local_noon + 6 * 3600)  # 18:00: factory rest 08:00-18:00 over
    assert engine.group_view("g").kind == "time_period"


def test_float_down_freezes_the_window_mean_times_the_coefficient() -> None:
    engine = engine_for(power_step_s=60, power_window_s=60)
    for k in range(30):  # 30 minutes at 100 kW then 15 at 200 kW
        engine.on_power("g", T0 + 60 * k + 30, 100.0 if k < 15 else 200.0)
    out = engine.on_command(cmd("limit", group="g", kind="float_down", coefficient_pct=-20,
                                window_min=30, freeze_delay_min=0, duration_s=3600), T0 + 1800)
    outcome = next(o for o in out if isinstance(o, CommandOutcome))
    assert outcome.status == "executed"
    view = engine.group_view("g")
    assert view.kind == "float_down" and view.limit_kw == pytest.approx(150.0 * 0.8)
    assert "reference 150.000 kW" in outcome.reason
    # No data in the window: the command fails, nothing is installed.
    engine2 = engine_for()
    out = engine2.on_command(cmd("limit", group="g", kind="float_down", coefficient_pct=-20,
                                 duration_s=3600), T0)
    assert [o.status for o in out if isinstance(o, CommandOutcome)] == ["failed"]
    assert engine2.group_view("g").kind == "none"


def test_float_down_with_freeze_delay_reports_when_frozen() -> None:
    engine = engine_for()
    out = engine.on_command(cmd("limit", group="g", kind="float_down", coefficient_pct=10,
                                window_min=5, freeze_delay_min=10, duration_s=7200), T0)
    assert not [o for o in out if isinstance(o, CommandOutcome)]
    log = run(engine, T0, 900, lambda t: 80.0)
    outcomes = [(t, o) for t, o in log if isinstance(o, CommandOutcome)]
    assert len(outcomes) == 1 and outcomes[0][0] == pytest.approx(T0 + 600, abs=10)
    assert engine.group_view("g").limit_kw == pytest.approx(88.0)


def test_a_float_down_cancelled_before_its_freeze_still_gets_an_outcome() -> None:
    engine = engine_for()
    engine.on_command(cmd("limit", group="g", kind="float_down", coefficient_pct=-10,
                          freeze_delay_min=5, duration_s=3600), T0)
    out = engine.on_command(cmd("cancel", ("m0",), "g", cid=2, kind="float_down"), T0 + 60)
    outcomes = {o.cmd_id[0]: o for o in out if isinstance(o, CommandOutcome)}
    assert outcomes[1].status == "failed" and "cancelled by command 02020202" in outcomes[1].reason
    assert outcomes[2].status == "executed"


def test_monthly_energy_trips_rounds_in_turn_and_a_new_month_restores_them() -> None:
    engine = engine_for(alarm_delay_s=60.0, restore_delay_max_s=0.0, restore_delay_min_s=0.0)
    engine.on_command(cmd("limit", group="g", kind="monthly_energy", limit_kwh=1000,
                          alarm_pct=90), T0)
    out = engine.on_energy("g", T0, 920.0)
    assert [o.kind for o in out if isinstance(o, PublishAlarm)] == ["group.energy_alarm"]
    log: list[tuple[float, Output]] = []
    for k in range(1, 30):
        t = T0 + 10 * k
        for o in engine.on_energy("g", t, 1001.0) + engine.tick(t):
            log.append((t, o))
            if isinstance(o, SendControl):
                engine.on_actuation(o.request_id, t, True)
    trips = sends(log, TRIP)
    assert [o.meter for _, o in trips] == ["m0", "m1", "m2", "m3"]
    assert [round(t - T0) for t, _ in trips] == [70, 130, 190, 250]  # one alarm delay each
    assert engine.group_view("g").energy_tripped_rounds == (1, 2, 3, 4)
    out = engine.on_energy("g", T0 + 400, 3.0)  # a new month began
    assert [o.meter for o in out if isinstance(o, SendControl) and o.action is
            ControlAction.DIRECT_CLOSE] == ["m3", "m2", "m1", "m0"]


# --------------------------------------------------------------------------------------------
# Remote commands
# --------------------------------------------------------------------------------------------


def test_immediate_trip_goes_out_in_the_same_call_and_reports_after_verification() -> None:
    engine = engine_for(power_up_protect_s=0.0)
    out = engine.on_command(cmd("trip", ("m1", "m2")), T0)
    frames = [o for o in out if isinstance(o, SendControl)]
    assert [(o.meter, o.action) for o in frames] == [("m1", TRIP), ("m2", TRIP)]
    assert frames[0].cmd_id == b"\x01" * 16 and frames[0].valid_until == T0 + 300
    assert not [o for o in out if isinstance(o, CommandOutcome)]
    assert engine.on_actuation(frames[0].request_id, T0 + 0.2, True) == []
    out = engine.on_actuation(frames[1].request_id, T0 + 0.3, False, "no reply after 3 frames")
    outcome = next(o for o in out if isinstance(o, CommandOutcome))
    assert outcome.status == "failed" and "m2: trip failed: no reply after 3 frames" in outcome.reason
    assert any(isinstance(o, PublishAlarm) and o.key == "customer.actuation_failed/m2" for o in out)


def test_unconfirmed_trip_is_tripped_again_and_its_event_cleared_at_the_end() -> None:
    engine = engine_for(alarm_delay_s=0.0, settle_s=60.0)
    engine.on_command(cmd("limit", group="g", limit_kw=100, end=T0 + 300), T0)
    out = engine.on_power("g", T0 + 1, 150.0)
    trip = next(o for o in out if isinstance(o, SendControl) and o.action is TRIP)
    out = engine.on_actuation(trip.request_id, T0 + 2, False, "no reply after 3 frames")
    assert any(isinstance(o, PublishAlarm) and o.key == "customer.actuation_failed/m0" for o in out)
    # Still over after the settle: the next round trips (the unconfirmed one shed nothing).
    def kw(t: float) -> float:
        return 90.0 if engine.holds("m1") else 150.0  # m0's relay never opened

    log = run(engine, T0 + 2, 120, kw)
    assert [o.meter for _, o in sends(log, TRIP)] == ["m1"]
    log = run(engine, T0 + 122, 400, kw)
    cleared = {o.meter: o.details for _, o in log if isinstance(o, PublishAlarm)
               and o.kind == "customer.trip" and o.state == "cleared"}
    assert cleared["m0"]["restore"] == "none"  # nothing to close, but the event ends
    assert [o.meter for _, o in sends(log, ControlAction.DIRECT_CLOSE)] == ["m1"]


def test_a_held_relay_reading_closed_raises_a_mismatch() -> None:
    engine = engine_for()
    out = engine.on_command(cmd("trip", ("m0",)), T0)
    trip = next(o for o in out if isinstance(o, SendControl))
    assert engine.on_meter_status("m0", T0 + 1, relay_open=False) == []  # frame in flight
    engine.on_actuation(trip.request_id, T0 + 2, True)
    out = engine.on_meter_status("m0", T0 + 60, relay_open=False)  # closed behind our back
    assert [(o.key, o.state) for o in out if isinstance(o, PublishAlarm)] == [
        ("customer.relay_mismatch/m0", "raised")]
    out = engine.on_meter_status("m0", T0 + 120, relay_open=True)
    assert [(o.key, o.state) for o in out if isinstance(o, PublishAlarm)] == [
        ("customer.relay_mismatch/m0", "cleared")]


def test_delayed_trip_alarms_first_and_a_time_limited_trip_allows_close_after() -> None:
    engine = engine_for()
    out = engine.on_command(cmd("trip", ("m0",), alarm_delay_s=120, duration_s=600), T0)
    assert [o.action for o in out if isinstance(o, SendControl)] == [ControlAction.ALARM]
    log = run(engine, T0, 900, lambda t: 10.0)
    assert [(round(t - T0), o.action) for t, o in sends(log)] == [
        (120, TRIP), (720, ControlAction.ALLOW_CLOSE), (720, ControlAction.ALARM_RELEASE)]
    assert [o.status for _, o in log if isinstance(o, CommandOutcome)] == ["executed"]


def test_trip_during_protect_fails_without_a_frame() -> None:
    engine = engine_for(power_up_protect_s=600.0)
    engine.power_up(T0)
    out = engine.on_command(cmd("trip", ("m0",)), T0 + 10)
    assert not [o for o in out if isinstance(o, SendControl)]
    assert [o.status for o in out if isinstance(o, CommandOutcome)] == ["failed"]
    assert "protect" in out[-1].reason  # type: ignore[union-attr]


def test_close_overrides_every_hold_and_a_replayed_command_does_nothing() -> None:
    engine = engine_for(alarm_delay_s=0.0)
    engine.on_command(cmd("limit", group="g", limit_kw=100), T0)
    run(engine, T0, 20, lambda t: 150.0)
    assert engine.holds("m0") == ("power:g",)
    out = engine.on_command(cmd("close", ("m0",), cid=9), T0 + 30)
    assert next(o.action for o in out if isinstance(o, SendControl)) is ControlAction.DIRECT_CLOSE
    assert engine.holds("m0") == ()
    assert engine.on_command(cmd("close", ("m0",), cid=9), T0 + 31) == []


def test_an_operator_trip_outlives_the_round_restore_and_an_operator_close_ends_it() -> None:
    engine = engine_for(alarm_delay_s=0.0, restore_delay_min_s=0.0, restore_delay_max_s=0.0)
    engine.on_command(cmd("limit", group="g", limit_kw=100), T0)
    log = run(engine, T0, 20, lambda t: 150.0)
    assert [o.meter for _, o in sends(log, TRIP)] == ["m0"]
    # The operator trips m0 (already open for round 1) and m3 directly; the daemon sent the
    # frames, so the engine sends nothing.
    assert engine.on_operator_relay("m0", T0 + 25, opened=True, cmd=bytes(16)) == []
    assert engine.on_operator_relay("m3", T0 + 25, opened=True) == []
    assert engine.holds("m0") == ("power:g", "remote") and engine.holds("m3") == ("remote",)
    # The limit is cancelled: the round's hold goes, the operator's stays, nothing closes.
    log = [(T0 + 30, o) for o in engine.on_command(cmd("cancel", group="g", cid=2), T0 + 30)]
    log += run(engine, T0 + 30, 600, lambda t: 20.0)
    assert any(isinstance(o, CommandOutcome) and o.status == "executed" for _, o in log)
    assert sends(log, ControlAction.DIRECT_CLOSE) == sends(log, ControlAction.ALLOW_CLOSE) == []
    assert engine.holds("m0") == ("remote",) and engine.wanted_open("m0")
    # Saved and restored mid-way, the operator's hold is still there.
    engine = LoadControlEngine.from_dict(json.loads(json.dumps(engine.to_dict())),
                                         engine.topology, engine.settings)
    assert engine.holds("m0") == ("remote",)
    # The operator's close lifts every hold without a frame from the engine.
    assert not any(isinstance(o, SendControl)
                   for o in engine.on_operator_relay("m0", T0 + 700, opened=False))
    assert engine.holds("m0") == () and not engine.wanted_open("m0")
    # A protected meter is never held open, whatever the caller says.
    guarded = engine_for(protected=("p",))
    guarded.on_operator_relay("p", T0, opened=True)
    assert guarded.holds("p") == ()


def test_params_check_for_the_verifier() -> None:
    assert check_params("limit", {"limit_kw": 50}) is None
    assert check_params("limit", {"kind": "float_down", "coefficient_pct": -20}) is not None
    assert "limit_kw is required" in (check_params("limit", {"kind": "factory_rest",
                                                             "weekdays": [1], "start_time": "08:00",
                                                             "duration_min": 60}) or "")
    assert "overlaps" in (check_params("limit", {"kind": "time_period", "windows": [
        {"start": "08:00", "end": "12:00", "limit_kw": 1},
        {"start": "11:00", "end": "13:00", "limit_kw": 1}]}) or "")
    assert "unknown params ['limt_kw']" in (check_params("limit", {"limt_kw": 5}) or "")
    assert check_params("trip", {"alarm_delay_s": -1}) is not None
    assert check_params("protect", {"mode": "exempt", "duration_s": 60}) is None
    assert check_params("cancel", {"kind": "weekly"}) is not None
    assert "1..8" in (check_params("limit", {"limit_kw": 1,
                                             "rounds": [[f"m{i}"] for i in range(9)]}) or "")
    assert check_params("limit", {"limit_kw": 1, "rounds": [["a"], ["a"]]}) is not None


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------


def test_state_round_trip_mid_episode_continues_identically() -> None:
    def build() -> LoadControlEngine:
        return engine_for(n=6, alarm_delay_s=60.0, settle_s=60.0, restore_delay_max_s=600.0,
                          prepaid=PrepaidSettings(5.0, 0.0, 120.0))

    engine = build()
    engine.on_command(cmd("limit", group="g", limit_kw=60, end=T0 + 900), T0)
    engine.on_command(cmd("limit", group="g", cid=2, kind="monthly_energy", limit_kwh=500), T0)
    engine.on_balance("m5", T0, 0.0)

    def kw(e: LoadControlEngine) -> Callable[[float], float]:
        return lambda t: 15.0 * sum(not e.holds(f"m{i}") for i in range(6))

    run(engine, T0, 400, kw(engine))
    assert engine.group_view("g").tripped_rounds  # mid-episode: rounds held, restores owed
    saved = json.loads(json.dumps(engine.to_dict()))
    clone = LoadControlEngine.from_dict(saved, engine.topology, engine.settings)
    assert clone.to_dict() == engine.to_dict()
    log_a = run(engine, T0 + 400, 2000, kw(engine))
    log_b = run(clone, T0 + 400, 2000, kw(clone))
    assert log_a == log_b
    assert sends(log_a, ControlAction.DIRECT_CLOSE)  # the restores really happened after the trip
    with pytest.raises(ValueError, match="state version"):
        LoadControlEngine.from_dict({**saved, "v": 99}, engine.topology)


def test_restart_reports_actuations_in_flight_as_unknown() -> None:
    engine = engine_for()
    out = engine.on_command(cmd("trip", ("m0",)), T0)
    assert [o for o in out if isinstance(o, SendControl)]
    clone = LoadControlEngine.from_dict(json.loads(json.dumps(engine.to_dict())),
                                        engine.topology, engine.settings)
    out = clone.power_up(T0 + 5)
    outcome = next(o for o in out if isinstance(o, CommandOutcome))
    assert outcome.status == "failed" and "unknown" in outcome.reason
    assert clone.holds("m0") == ("remote",)  # still wanted open: no double action, no release


def _load_control_errors(tmp_path: Path, table: str) -> str:
    """The config errors of the minimal config with a [load_control] table added."""
    from gateway.config import ConfigError, load_config

    minimal = (Path(__file__).resolve().parents[1] / "configs" / "minimal.toml").read_text()
    path = tmp_path / "gateway.toml"
    path.write_text(minimal + "\n" + table)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_settings_errors_name_the_key(tmp_path: Path) -> None:
    from gateway.config import load_config

    text = _load_control_errors(
        tmp_path,
        '[load_control]\nalarm_delay_s = "soon"\nrestore_delay_max_s = -1\ncolour = 1\n'
        "[load_control.groups.g]\nround = []\n",
    )
    assert "load_control.alarm_delay_s: expected a number" in text
    assert "load_control.restore_delay_max_s: expected a number" in text
    assert "load_control.groups.g.round: unknown key" in text
    assert "load_control.colour: unknown key" in text
    path = tmp_path / "ok.toml"
    path.write_text(
        (Path(__file__).resolve().parents[1] / "configs" / "minimal.toml").read_text()
        + '\n[load_control]\nalarm_delay_s = 60\n[load_control.prepaid]\ntrip_delay_s = 0\n'
        '[load_control.groups.g]\nrounds = [["m0"]]\nalarm_delay_s = 30\n'
    )
    ok = load_config(path).load_control
    assert ok.alarm_delay_s == 60.0 and ok.groups["g"].rounds == (("m0",),)
    assert ok.groups["g"].alarm_delay_s == (30.0,) and ok.prepaid.trip_delay_s == 0.0
    text = _load_control_errors(
        tmp_path, "[load_control]\nrestore_delay_min_s = 100\nrestore_delay_max_s = 10\n"
    )
    assert "load_control.restore_delay_min_s: must not exceed restore_delay_max_s" in text


def test_commands_come_from_the_verifier_unchanged() -> None:
    from gateway.control.commands import ParamsCheck, VerifiedCommand

    verified = VerifiedCommand(
        id=b"\x07" * 16, issuer="op-1", signers=("op-1",), role="OPERATOR", action="limit",
        group="g", meters=("m0", "m1", "m2", "m3"), trippable=("m0", "m1", "m2", "m3"),
        params={"limit_kw": 100}, iat=0, exp=60, ctr=1, freshness_checked=True,
        message_sha256=b"\x00" * 32)
    command = ControlCommand.from_verified(verified)
    assert (command.id, command.action, command.group, command.meters) == (
        b"\x07" * 16, "limit", "g", ("m0", "m1", "m2", "m3"))
    hook: ParamsCheck = check_params  # what the verifier runs before accepting
    assert hook("limit", {"limit_kw": -1}) == "params.limit_kw must be in [0, 1e+09], got -1"
    out = engine_for().on_command(command, T0)
    assert [o.status for o in out if isinstance(o, CommandOutcome)] == ["executed"]


def test_restores_due_in_the_same_tick_still_come_back_last_round_first() -> None:
    """Restore delays shorter than the engine's tick (here 0–1 s against a 10 s tick) fall due
    together; they must go out in due order — last round first — not in meter-id order."""
    rig = Rig(settings=scenario_settings(alarm_delay_s=30.0, settle_s=60.0,
                                         restore_delay_min_s=0.0, restore_delay_max_s=1.0))
    start = rig.now
    rig.command("limit", group="g", params={"limit_kw": 0.001, "end": start + 600})
    rig.advance(1200)
    trips = [o.meter for _, o in rig.sends(TRIP)]
    assert trips[:2] == ["m0", "m1"] and len(trips) >= 2
    closes = [o.meter for _, o in rig.sends(ControlAction.DIRECT_CLOSE)]
    assert closes == list(reversed(trips)), (trips, closes)
