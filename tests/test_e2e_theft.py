"""Theft and tamper alarms end to end: simulated DL/T 645 meters on a pty with their faults
switched on and off (hil_tests/load_model.py), the daemon as a real subprocess, a real
mosquitto; the alarms and their evidence are read back from the broker."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from hil_tests.dlt645_sim import MeterSpec
from hil_tests.load_model import ManualClock
from hil_tests.sim import run_dlt645_line
from tests.broker import MosquittoBroker, Observer
from tests.gateway_rig import GatewayRig, decoded, wait_until, write_config
from tests.test_payload_cddl import CDDL, Validator, parse_rules

POLL_S = 1.0
SUSTAIN_S = 3.0
STOPPED_MIN_KWH = 0.03
#: [theft] window_samples: half the default 16, so running fast (judged over the window) is
#: raised and cleared in half the polls; the judgement is the same at any window length.
WINDOW = 8
#: Start-up, a poll cycle of slack on a shared machine, and the poll that completes a window.
SLACK_S = 3 * POLL_S + 2.0

THEFT = f"""
[theft]
sustain_s = {SUSTAIN_S}
stopped_min_kwh = {STOPPED_MIN_KWH}
evaluate_interval_s = 0.5
window_samples = {WINDOW}
"""


def test_lost_voltage_imbalance_stopped_and_fast_registers_raise_with_evidence_and_clear(
        tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    rig = GatewayRig(tmp_path, broker, ManualClock(0.0))
    addresses = ["000000000101", "000000000102", "000000000103", "000000000104"]
    # Real time on the meters: registers advance as the gateway's clock says they should.
    # m-0103 draws heavily so 0.03 kWh go unregistered within seconds once its register stops.
    specs = [MeterSpec(addresses[0], base_kw=4.0), MeterSpec(addresses[1], base_kw=6.0),
             MeterSpec(addresses[2], base_kw=60.0), MeterSpec(addresses[3], base_kw=5.0)]
    with contextlib.ExitStack() as stack:
        stack.callback(broker.kill)
        line = stack.enter_context(run_dlt645_line(specs, baudrate=9600, seed=5,
                                                   clock=time.monotonic))
        write_config(rig, [{"name": "rs485-1", "protocol": "dlt645", "port": line.device,
                            "baudrate": 9600, "parity": "N", "timeout_ms": 200, "retries": 1}],
                     [{"id": f"m-{a[-4:]}", "bus": "rs485-1", "address": a,
                       "profile": "test-dlt645", "poll_interval_s": POLL_S} for a in addresses],
                     THEFT)
        profile = tmp_path / "profiles" / "test-dlt645.toml"
        profile.write_text(profile.read_text() + '\n[[reads]]\ndi = "0202FF00"\n')  # currents
        sims = {f"m-{a[-4:]}": line.meters[a].sim for a in addresses}
        with Observer(broker, "mtr/v1/#", client_id="theft-observer") as observer:
            stack.callback(lambda: rig.process is not None and rig.kill_daemon())
            rig.start_daemon()

            def alarms() -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if str(m.get("kind", "")).startswith("theft.")]

            def event(kind: str, meter: str, state: str) -> dict[str, Any] | None:
                return next((m for m in alarms() if (m["kind"], m["meter"], m["state"])
                             == (kind, meter, state)), None)

            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/m-0104"))) >= 3,
                              30), rig.log_text()[-3000:]
            assert alarms() == [], "honest meters raised theft alarms"

            t0 = time.monotonic()
            sims["m-0101"].set_loss_of_voltage("a", True)
            sims["m-0102"].set_phase_current_factor("b", 0.4)
            sims["m-0103"].set_register_stopped(True)
            sims["m-0104"].set_register_speed(40)
            power_kw = float(sims["m-0103"].sample().active_kw)
            frozen = sims["m-0103"].sample().energy_import.total
            stopped_s = STOPPED_MIN_KWH / power_kw * 3600

            # Running fast is judged over the window: it shows once enough of the window is
            # fast, and clears once little enough of it still is.
            window_s = WINDOW * POLL_S
            expected = {("theft.loss_of_voltage", "m-0101"): (SUSTAIN_S, 0.0),
                        ("theft.current_imbalance", "m-0102"): (SUSTAIN_S, 0.0),
                        ("theft.meter_stopped", "m-0103"): (stopped_s, 0.0),
                        ("theft.running_fast", "m-0104"): (window_s, window_s)}
            for (kind, meter), (needed, _) in expected.items():
                assert wait_until(lambda k=kind, m=meter: event(k, m, "raised"),
                                  needed + SLACK_S - (time.monotonic() - t0)), (
                    f"{kind} on {meter} not raised within {needed + SLACK_S:.1f} s\n"
                    + rig.log_text()[-3000:])

            voltage = event("theft.loss_of_voltage", "m-0101", "raised")
            assert voltage is not None
            d = voltage["details"]
            assert d["phases"] == "a" and d["lowest_voltage_v"] == 0.0
            assert d["highest_current_a"] > d["thresholds"]["current_above_a"] == 0.025
            assert d["thresholds"]["voltage_below_v"] == 171.6
            assert d["thresholds"]["sustain_s"] == SUSTAIN_S
            assert d["end_ms"] - d["start_ms"] >= SUSTAIN_S * 1000
            assert d["window_start_ms"] <= d["start_ms"] <= d["end_ms"] == d["window_end_ms"]

            imbalance = event("theft.current_imbalance", "m-0102", "raised")
            assert imbalance is not None
            d = imbalance["details"]
            assert d["phases"] == "b" and d["imbalance_pct"] > d["thresholds"][
                "imbalance_above_pct"] == 30.0
            assert d["end_ms"] - d["start_ms"] >= SUSTAIN_S * 1000

            stopped = event("theft.meter_stopped", "m-0103", "raised")
            assert stopped is not None
            d = stopped["details"]
            assert d["frozen_register_kwh"] == float(frozen)
            assert d["unregistered_kwh"] >= STOPPED_MIN_KWH == d["thresholds"][
                "unregistered_at_least_kwh"]

            fast = event("theft.running_fast", "m-0104", "raised")
            assert fast is not None
            d = fast["details"]
            assert d["registered_kwh"] > 10 * d["expected_kwh"]
            assert d["registered_kwh"] >= d["thresholds"]["min_registered_kwh"] == 0.1

            t1 = time.monotonic()
            polls_before = len(decoded(observer, rig.topic("reads/m-0104")))
            sims["m-0101"].set_loss_of_voltage("a", False)
            sims["m-0102"].set_phase_current_factor("b", 1)
            sims["m-0103"].set_register_stopped(False)
            sims["m-0104"].set_register_speed(1)
            for (kind, meter), (_, clearing) in expected.items():
                if kind == "theft.running_fast":
                    continue
                assert wait_until(lambda k=kind, m=meter: event(k, m, "cleared"),
                                  clearing + SLACK_S + 2 - (time.monotonic() - t1)), (
                    f"{kind} on {meter} not cleared\n" + rig.log_text()[-3000:])
            # Running fast is judged over the last WINDOW polls, so it clears once the fast
            # samples have slid out of the window: counted in polls, not seconds, because a
            # loaded machine stretches the poll cycle (and the window with it).
            assert wait_until(lambda: event("theft.running_fast", "m-0104", "cleared"),
                              4 * window_s + SLACK_S), (
                "theft.running_fast on m-0104 not cleared\n" + rig.log_text()[-3000:])
            polls_after = len(decoded(observer, rig.topic("reads/m-0104"))) - polls_before
            assert polls_after <= WINDOW + 3, polls_after
            raised = [(m["kind"], m["meter"]) for m in alarms() if m["state"] == "raised"]
            assert sorted(raised) == sorted(expected), raised  # once each, nothing else
            validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
            for message in alarms():
                validator.check("alarm-message", message, message["key"])
                validator.check(f"theft-{message['state']}-details", message["details"],
                                message["key"])
            assert rig.stop_daemon() == 0
