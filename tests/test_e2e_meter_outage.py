"""Meter and phase outages inferred from the meters, end to end (issue 14): the daemon as a real
subprocess, mosquitto, six DL/T 645 meters on one pty, two per phase, each with a customer.

* a1's supply is cut: ``outage.meter`` suspected (its phase neighbour a2 answers), then, after
  restore, cleared ``confirmed: true`` with the duration from the meter's power-down record;
* b1 only stops answering (``Dlt645Rig.mute``: no power-down record): suspected too, then the
  suspicion is withdrawn and its ``comm_loss`` (held meanwhile) is published;
* phase c is cut (c1 and c2): ``outage.phase`` for phase c with both meters and customers.

Polling every 2 s keeps the test short. The bound the issue sets — suspected ≤ 75 s after the
cut at 60 s polling — follows from the same sequence: the first poll after the cut comes at most
one interval later (≤ 60 s), the re-probe REPROBE_DELAY_S (1 s) after that miss, each miss costs
the bus timeout and retries (here 0.2 s × 2; 1 s × 2 at most with usual settings), and commit and
publish take well under a second: ≤ 60 + 1 + 2 × 2 + 1 ≈ 66 s. Here the same sequence must end
within one interval plus 5 s of the cut.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, wait_until, write_config
from tests.test_payload_cddl import CDDL, Validator, parse_rules

INTERVAL_S = 2.0
PHASES = {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "c2": "c"}


def test_meter_and_phase_outages_from_silent_meters(tmp_path: Path) -> None:
    epoch = float(int(time.time()))
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=6, modbus_meters=0,
                     poll_interval_s=INTERVAL_S, start_epoch=epoch) as rig:
        line = rig.lines["rs485-1"]
        ids = sorted(rig.meters)
        name = dict(zip(ids, PHASES, strict=True))          # rig meter id -> a1, a2, ...
        by_name = {v: k for k, v in name.items()}
        address = {n: rig.meters[by_name[n]].address for n in PHASES}

        def sync_meter_clocks() -> None:
            rig.clock.advance(max(0.0, time.time() - epoch - rig.clock()))

        meters = [{"id": m, "bus": "rs485-1", "address": rig.meters[m].address,
                   "profile": "test-dlt645", "poll_interval_s": INTERVAL_S,
                   "phase": PHASES[name[m]], "customer": f"C-{name[m]}"} for m in ids]
        bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 9600,
               "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 3}
        write_config(rig, [bus], meters)
        validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
        with Observer(rig.broker, "mtr/v1/#", client_id="meter-outage-observer") as observer:
            rig.start_daemon()

            def alarms(kind: str, key: str | None = None) -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if m.get("kind") == kind and (key is None or m["key"] == key)]

            assert wait_until(lambda: decoded(observer, rig.topic("reads/")), 20), rig.log_text()
            time.sleep(INTERVAL_S)  # every meter answered at least once

            # --- a1 loses its supply, b1 only goes quiet: both suspected
            sync_meter_clocks()
            cut_ms = time.time_ns() // 1_000_000
            line.cut_power(address["a1"])
            line.mute(address["b1"])
            a1_key, b1_key = f"outage.meter/{by_name['a1']}", f"outage.meter/{by_name['b1']}"
            assert wait_until(lambda: alarms("outage.meter", a1_key)
                              and alarms("outage.meter", b1_key), INTERVAL_S + 5), \
                rig.log_text()[-3000:]
            suspected = alarms("outage.meter", a1_key)[0]
            assert suspected["state"] == "raised" and suspected["severity"] == "major"
            details = suspected["details"]
            assert details["confirmed"] is False and details["meter"] == by_name["a1"]
            assert details["customers"] == ["C-a1"] and details["phase"] == "a"
            assert cut_ms <= details["start_ms"] <= cut_ms + (INTERVAL_S + 2) * 1000
            time.sleep(INTERVAL_S + 0.5)  # b1's third miss (poll, probe, poll): comm_loss held
            assert not alarms("comm_loss"), alarms("comm_loss")
            sync_meter_clocks()
            restore_ms = time.time_ns() // 1_000_000
            line.restore_power(address["a1"])
            line.mute(address["b1"], muted=False)

            def cleared(key: str) -> list[dict[str, Any]]:
                return [m for m in alarms("outage.meter", key) if m["state"] == "cleared"]

            assert wait_until(lambda: cleared(a1_key) and cleared(b1_key), 15), \
                rig.log_text()[-3000:]
            confirmed = cleared(a1_key)[0]["details"]
            assert confirmed["confirmed"] is True, confirmed
            assert abs(confirmed["start_ms"] - cut_ms) <= 2000, confirmed
            assert abs(confirmed["end_ms"] - restore_ms) <= 2000, confirmed
            assert abs(confirmed["duration_s"] - (restore_ms - cut_ms) / 1000) <= 2, confirmed
            withdrawn = cleared(b1_key)[0]["details"]
            assert withdrawn["withdrawn"] is True and withdrawn["confirmed"] is False
            assert withdrawn["reason"] == "no power-down record: it was a communication loss"
            assert wait_until(lambda: len(alarms("comm_loss")) >= 2, 5), rig.log_text()[-3000:]
            assert {m["key"] for m in alarms("comm_loss")} == {f"comm_loss/{by_name['b1']}"}
            assert [m["state"] for m in alarms("comm_loss")] == ["raised", "cleared"]
            assert not alarms("outage.phase")

            # --- phase c cut: one outage.phase, no outage.meter for c1 or c2
            line.cut_power(address["c1"], address["c2"])
            assert wait_until(lambda: alarms("outage.phase"), INTERVAL_S + 6), \
                rig.log_text()[-3000:]
            phase = alarms("outage.phase")[0]
            assert phase["state"] == "raised" and phase["key"] == "outage.phase/rs485-1/c"
            assert phase["details"]["phase"] == "c"
            assert phase["details"]["meters"] == [by_name["c1"], by_name["c2"]]
            assert phase["details"]["customers"] == ["C-c1", "C-c2"]
            line.restore_power(address["c1"], address["c2"])
            assert wait_until(lambda: len(alarms("outage.phase")) >= 2, INTERVAL_S + 5)
            assert alarms("outage.phase")[1]["state"] == "cleared"
            time.sleep(0.5)
            assert {m["key"] for m in alarms("outage.meter")} == {a1_key, b1_key}
            assert not alarms("outage.area") and not alarms("comm.bus")

            for message in [*alarms("outage.meter"), *alarms("outage.phase")]:
                validator.check("alarm-message", message, message["key"])
                kind = message["kind"].replace(".", "-")
                validator.check(f"{kind}-{message['state']}-details", message["details"],
                                message["key"])
        assert rig.stop_daemon() == 0


STATUS_PROFILE = """\
kind = "dlt645"
version = "2007"
description = "test profile with the status words: energy block, voltages, power, status"

[[reads]]
di = "0001FF00"

[[reads]]
di = "0201FF00"

[[reads]]
di = "0203FF00"

[[reads]]
di = "040005FF"
"""


def test_phase_cut_seen_by_silent_meters_and_a_three_phase_meter(tmp_path: Path) -> None:
    """Phase b of the supply is lost: b1 and b2 (single-phase, on b) go dark with a power-down
    record, t1 (three-phase) answers on from a and c and reports 断相 on b (status word 5 bit 7).
    One ``outage.phase`` for b, listing b1, b2 and t1 and their customers; a1 is untouched."""
    names = {"t1": "abc", "a1": "a", "b1": "b", "b2": "b"}
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=4, modbus_meters=0,
                     poll_interval_s=INTERVAL_S) as rig:
        line = rig.lines["rs485-1"]
        ids = sorted(rig.meters)
        by_name = dict(zip(names, ids, strict=True))
        address = {n: rig.meters[m].address for n, m in by_name.items()}
        meters = [{"id": by_name[n], "bus": "rs485-1", "address": address[n],
                   "profile": "test-dlt645-status" if n == "t1" else "test-dlt645",
                   "poll_interval_s": INTERVAL_S, "phase": phase, "customer": f"C-{n}"}
                  for n, phase in names.items()]
        bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 9600,
               "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 3}
        write_config(rig, [bus], meters)
        (tmp_path / "profiles" / "test-dlt645-status.toml").write_text(STATUS_PROFILE)
        validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
        with Observer(rig.broker, "mtr/v1/#", client_id="phase-cut-observer") as observer:
            rig.start_daemon()

            def alarms(kind: str) -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if m.get("kind") == kind]

            assert wait_until(lambda: decoded(observer, rig.topic("reads/")), 20), rig.log_text()
            time.sleep(INTERVAL_S)
            cut = time.monotonic()
            line.cut_phase("b", on_phase=[address["b1"], address["b2"]],
                           three_phase=[address["t1"]])
            assert wait_until(lambda: alarms("outage.phase"), INTERVAL_S + 5), \
                rig.log_text()[-3000:]
            latency = time.monotonic() - cut
            [raised] = alarms("outage.phase")
            assert raised["state"] == "raised" and raised["key"] == "outage.phase/rs485-1/b"
            details = raised["details"]
            assert details["phase"] == "b"
            assert details["meters"] == [by_name["b1"], by_name["b2"], by_name["t1"]], details
            assert details["customers"] == ["C-b1", "C-b2", "C-t1"]
            assert f"{by_name['t1']}:b.phase_break" in details["evidence"], details
            print(f"phase b cut at {INTERVAL_S} s polling: outage.phase after {latency:.1f} s, "
                  f"evidence {details['evidence']}")
            time.sleep(2 * INTERVAL_S + 1)  # b1 and b2 miss polls and probes: the phase is dark

            line.cut_phase("b", on_phase=[address["b1"], address["b2"]],
                           three_phase=[address["t1"]], cut=False)
            assert wait_until(lambda: len(alarms("outage.phase")) >= 2, INTERVAL_S + 5), \
                rig.log_text()[-3000:]
            cleared = alarms("outage.phase")[1]
            assert cleared["state"] == "cleared" and "withdrawn" not in cleared["details"]
            time.sleep(INTERVAL_S)
            assert len(alarms("outage.phase")) == 2, alarms("outage.phase")
            assert not alarms("outage.meter"), ([(m["key"], m["state"], m["details"]) for m in alarms("outage.meter")], by_name, rig.log_text()[-6000:])
            assert not alarms("comm.bus") and not alarms("outage.area")
            for message in alarms("outage.phase"):
                validator.check("alarm-message", message, message["key"])
                validator.check(f"outage-phase-{message['state']}-details", message["details"],
                                message["key"])
        assert rig.stop_daemon() == 0
