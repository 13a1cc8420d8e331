"""Meter clocks end to end (issue 13): the daemon as a subprocess, a real mosquitto, simulated
DL/T 645 meters on a pty whose clocks run on this machine's time plus their own offset.

* A meter 10 minutes fast raises ``clock.drift``, gets exactly one broadcast time sync (08H)
  under ``[clock] mode = "broadcast"``, the alarm clears on the read-back, and the sync is in
  the audit journal (accepted, then executed with the residual).
* The meters' CT ratio, read on its own cadence (``every_s``), raises ``meter.ratio`` when
  it changes away from the configured ratio and clears when it is back (check_ratios).
* Near midnight nothing is sent: the daemon runs under libfaketime at 23:58 in the meters'
  zone and the simulators' clocks are set to the same instant, so the step from 23:58 to the
  meter's 00:08 would cross the daily freeze; the alarm says why no sync was sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.control.commands.journal import Journal
from hil_tests.dlt645_sim import MeterSpec
from hil_tests.load_model import LoadModel, ManualClock
from hil_tests.modbus_sim import SimulatedModbusMeter, start_modbus_tcp_meters
from hil_tests.sim import run_dlt645_line
from protocols.modbus.profile import ModbusProfile
from protocols.payload import decode_message
from protocols.profiles import parse_profile
from tests.broker import MosquittoBroker, Observer
from tests.gateway_rig import (
    REPO,
    TEST_PROFILE,
    BackgroundLoop,
    GatewayRig,
    decoded,
    wait_until,
    write_config,
)
from tests.test_e2e_clock_step import LIBFAKETIME, _start_under_faketime
from tests.test_payload_cddl import CDDL, Validator, parse_rules

FAST, RIGHT = "000000000101", "000000000102"
#: [clock] read_interval_s and the ratio reads' every_s: twice the 1 s poll interval, so both
#: run on their own cadence, and short, since every step below waits for a few of them.
CLOCK_EVERY_S = 2
CONFIG = """
[clock]
mode = "{mode}"
read_interval_s = {every}
read_spread_s = 0

[commands]
clock_trusted = true
"""
SLOW_READS = """
[[reads]]
di = "04000306"
every_s = {every}

[[reads]]
di = "04000307"
every_s = {every}

[clock]
"""
ZONE = dt.timezone(dt.timedelta(hours=8))  # the simulators' and the daemon's meter zone


@contextlib.contextmanager
def _rig(tmp_path: Path, start_epoch: float, mode: str = "broadcast"):  # type: ignore[no-untyped-def]
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    rig = GatewayRig(tmp_path, broker, ManualClock(0.0))
    specs = [MeterSpec(FAST, base_kw=3.0, clock_offset_s=600.0), MeterSpec(RIGHT, base_kw=4.0)]
    with contextlib.ExitStack() as stack:
        stack.callback(broker.kill)
        line = stack.enter_context(run_dlt645_line(specs, baudrate=9600, seed=5,
                                                   clock=time.monotonic,
                                                   start_epoch=start_epoch))
        write_config(rig, [{"name": "rs485-1", "protocol": "dlt645", "port": line.device,
                            "baudrate": 9600, "parity": "N", "timeout_ms": 200, "retries": 1}],
                     [{"id": f"m-{a[-4:]}", "bus": "rs485-1", "address": a,
                       "profile": "test-clock", "poll_interval_s": 1.0} for a in (FAST, RIGHT)],
                     CONFIG.format(mode=mode, every=CLOCK_EVERY_S))
        (tmp_path / "profiles" / "test-clock.toml").write_text(
            TEST_PROFILE + SLOW_READS.format(every=CLOCK_EVERY_S))
        observer = stack.enter_context(Observer(broker, "mtr/v1/#", client_id="clock-obs"))
        stack.callback(lambda: rig.process is not None and rig.kill_daemon())
        yield rig, line, observer


def _clock_alarms(observer: Observer, rig: GatewayRig) -> list[dict[str, Any]]:
    return [m for _t, m in decoded(observer, rig.topic("alarms")) if m.get("kind") == "clock.drift"]


def _conform(observer: Observer, rig: GatewayRig) -> None:
    """Every clock.drift and meter.ratio alarm published is what docs/payloads.cddl says."""
    validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
    rules = {("clock.drift", "raised"): "clock-drift-raised-details",
             ("clock.drift", "cleared"): "clock-drift-cleared-details",
             ("meter.ratio", "raised"): "meter-ratio-details",
             ("meter.ratio", "cleared"): "meter-ratio-details"}
    for _t, message in decoded(observer, rig.topic("alarms")):
        rule = rules.get((message.get("kind"), message.get("state")))
        if rule is not None:
            validator.check("alarm-message", message, message["key"])
            validator.check(rule, message["details"], message["key"])
    clock_reads = [m for _t, m in decoded(observer, rig.topic("reads/"))
                   if any(r["q"] == "clock.offset" for r in m["reads"])]
    assert clock_reads, "no clock.offset read was published"
    # The bytes as published: schema 2 (the default) or 1, each against its own rule.
    carrying = {m["id"] for m in clock_reads}
    for _topic, payload, _retained in observer.messages(rig.topic("reads/")):
        message = decode_message(payload)
        if message["id"] in carrying:
            rule = "reads-message-v2" if message["v"] == 2 else "reads-message"
            validator.check_message(rule, payload, str(message["id"]))


def test_a_meter_ten_minutes_fast_is_synced_once_and_its_alarm_clears(tmp_path: Path) -> None:
    with _rig(tmp_path, time.time()) as (rig, line, observer):
        rig.start_daemon()
        fast = line.meters[FAST]

        def states() -> list[str]:
            return [a["state"] for a in _clock_alarms(observer, rig)]

        assert wait_until(lambda: "cleared" in states(), 60), (states(), rig.log_text()[-3000:])
        raised = [a for a in _clock_alarms(observer, rig) if a["state"] == "raised"]
        assert len(raised) == 1 and raised[0]["meter"] == "m-0101", raised
        details = raised[0]["details"]
        assert details["level"] == "resync" and details["sync"] == "send", details
        assert abs(details["offset_s"] - 600) <= 3, details
        # Several more clock reads: the meter stays right and nothing is sent again.
        reads_before = len(_offsets(observer, rig, "m-0101"))
        assert wait_until(lambda: len(_offsets(observer, rig, "m-0101")) >= reads_before + 3,
                          30), rig.log_text()[-3000:]
        assert fast.clock_syncs == 1 and line.meters[RIGHT].clock_syncs == 1  # one broadcast
        assert abs(fast.offset_at(line.model.now())) <= 2
        assert all(abs(o) <= 3 for o in _offsets(observer, rig, "m-0101")[-3:])
        assert states() == ["raised", "cleared"], states()

        # check_ratios in the daemon: the other meter is reprogrammed to a CT of 40 (the
        # configuration keeps 1), then back.
        def ratio_states() -> list[tuple[str, Any]]:
            return [(a["state"], a["details"].get("reported"))
                    for _t, a in decoded(observer, rig.topic("alarms"))
                    if a.get("kind") == "meter.ratio"]

        assert ratio_states() == []
        line.meters[RIGHT].ct_ratio = Decimal(40)
        assert wait_until(lambda: ratio_states() == [("raised", 40.0)], 30), ratio_states()
        line.meters[RIGHT].ct_ratio = Decimal(1)
        assert wait_until(lambda: [s for s, _ in ratio_states()] == ["raised", "cleared"], 30), \
            ratio_states()
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        _conform(observer, rig)

    with Journal.open(tmp_path / "var" / "audit.db") as journal:
        records = [r for r in journal.records() if r.kid == "gateway"]
    assert [r.kind for r in records] == ["accepted", "executed"], records
    accepted, executed = (r.details for r in records)
    assert accepted["action"] == "time_sync" and accepted["mode"] == "broadcast"
    assert accepted["meter"] == "m-0101" and sorted(accepted["meters"]) == ["m-0101", "m-0102"]
    assert abs(float(executed["residual_s"])) <= 3, executed
    assert records[0].cmd == records[1].cmd


def _offsets(observer: Observer, rig: GatewayRig, meter: str) -> list[float]:
    return [float(r["val"]) for _t, m in decoded(observer, rig.topic(f"reads/{meter}"))
            for r in m["reads"] if r["q"] == "clock.offset"]


# A daemon under libfaketime waiting for four clock reads: `make slow`. The default run guards
# the same verdict in tests/test_meter_clock.py (test_each_verdict's NEAR_FREEZE cases,
# test_a_broadcast_steps_every_meter_on_the_bus, test_send_never_lets_the_span_touch_a_freeze).
@pytest.mark.slow
def test_no_sync_is_sent_near_midnight(tmp_path: Path) -> None:
    if LIBFAKETIME is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    # 23:58:00 in the meters' zone, today: the daemon (faketime) and the simulators alike.
    now = dt.datetime.now(ZONE)
    target = dt.datetime.combine(now.date(), dt.time(23, 58), ZONE).timestamp()
    shift = round(target - time.time())
    with _rig(tmp_path, time.time() + shift) as (rig, line, observer):
        offset_file = tmp_path / "faketime"
        offset_file.write_text(f"{shift:+d}\n")
        _start_under_faketime(rig, offset_file)
        assert wait_until(lambda: len(_offsets(observer, rig, "m-0101")) >= 4, 60), \
            rig.log_text()[-3000:]
        raised = [a for a in _clock_alarms(observer, rig) if a["state"] == "raised"]
        assert len(raised) == 1, raised
        assert raised[0]["details"]["sync"] == "near_freeze", raised
        assert "midnight" in raised[0]["details"]["hint"]
        assert line.meters[FAST].clock_syncs == 0 and line.meters[RIGHT].clock_syncs == 0
        assert all(abs(o - 600) <= 3 for o in _offsets(observer, rig, "m-0101"))
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        _conform(observer, rig)
    with Journal.open(tmp_path / "var" / "audit.db") as journal:
        assert [r for r in journal.records() if r.kid == "gateway"] == []


def test_addressed_mode_writes_the_one_meter_with_its_password(tmp_path: Path) -> None:
    with _rig(tmp_path, time.time(), mode="addressed") as (rig, line, observer):
        rig.start_daemon()
        assert wait_until(lambda: [a["state"] for a in _clock_alarms(observer, rig)] ==
                          ["raised", "cleared"], 60), rig.log_text()[-3000:]
        assert line.meters[FAST].clock_syncs == 2  # its date, then its time (14H)
        assert line.meters[RIGHT].clock_syncs == 0  # nobody else is touched
        assert abs(line.meters[FAST].offset_at(line.model.now())) <= 2
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        _conform(observer, rig)
    with Journal.open(tmp_path / "var" / "audit.db") as journal:
        records = [r for r in journal.records() if r.kid == "gateway"]
    assert [r.kind for r in records] == ["accepted", "executed"], records
    assert records[0].details["mode"] == "addressed" and records[0].details["meters"] == ["m-0101"]


def test_a_modbus_meter_whose_profile_maps_its_clock_is_graded_but_not_set(
        tmp_path: Path) -> None:
    """A Modbus profile's ``clock`` registers are read at the cadence and graded like a DL/T
    645 meter's; Modbus has no standard clock write, so the verdict is ``no_route``."""
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    rig = GatewayRig(tmp_path, broker, ManualClock(0.0))
    text = (REPO / "configs" / "profiles" / "sdm630.toml").read_text()
    text = text.replace('kind = "modbus"\n', 'kind = "modbus"\nclock = { holding = 0x0F00 }\n', 1)
    profile = parse_profile(text, name="sdm630-clock")
    assert isinstance(profile, ModbusProfile) and profile.clock is not None
    model = LoadModel(seed=3, start_epoch=time.time(), clock=time.monotonic)
    sim = SimulatedModbusMeter(1, profile, model.meter("mb-1", phases=3), clock_offset_s=-700.0)
    bg = BackgroundLoop()
    with contextlib.ExitStack() as stack:
        stack.callback(broker.kill)
        stack.callback(bg.close)
        handle = bg.run(start_modbus_tcp_meters([sim], "127.0.0.1", 0))
        stack.callback(lambda: bg.run(handle.close()))
        write_config(rig, [{"name": "tcp-1", "protocol": "modbus-tcp", "host": "127.0.0.1",
                            "port": handle.port, "timeout_ms": 1000}],
                     [{"id": "mb-1", "bus": "tcp-1", "address": 1, "profile": "sdm630-clock",
                       "poll_interval_s": 1.0}], CONFIG.format(mode="broadcast", every=CLOCK_EVERY_S))
        (tmp_path / "profiles" / "sdm630-clock.toml").write_text(text)
        observer = stack.enter_context(Observer(broker, "mtr/v1/#", client_id="mb-clock-obs"))
        stack.callback(lambda: rig.process is not None and rig.kill_daemon())
        rig.start_daemon()
        assert wait_until(lambda: len(_offsets(observer, rig, "mb-1")) >= 2, 60), \
            rig.log_text()[-3000:]
        assert all(abs(o + 700) <= 3 for o in _offsets(observer, rig, "mb-1"))
        raised = [a for a in _clock_alarms(observer, rig) if a["state"] == "raised"]
        assert len(raised) == 1 and raised[0]["meter"] == "mb-1", raised
        assert raised[0]["details"]["sync"] == "no_route" and \
            raised[0]["details"]["level"] == "resync", raised
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        _conform(observer, rig)
