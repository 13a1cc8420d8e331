"""A cut RS-485 pair end to end: one comm.bus alarm, no outage, the other bus unaffected (issue 14).

The real daemon, mosquitto and two DL/T 645 lines on ptys; the rig cuts one line's pair
(hil_tests.serial_line.Dlt645Line.set_cut: the pty stays open, nothing answers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, reads_by_meter, wait_until
from tests.test_payload_cddl import CDDL, Validator, parse_rules


def test_cut_bus_is_one_comm_bus_alarm_and_no_outage(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=2, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0, timeout_ms=200) as rig:
        cut = rig.lines["rs485-1"]
        cut_meters = {m for m, ref in rig.meters.items() if ref.bus == "rs485-1"}
        other_meters = set(rig.meters) - cut_meters
        with Observer(rig.broker, "mtr/v1/#", client_id="e2e-bus-fault") as observer:
            rig.start_daemon()

            def alarms() -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))]

            assert wait_until(lambda: set(reads_by_meter(observer, rig)) >= set(rig.meters), 20), \
                rig.log_text()[-2000:]
            cut.set_cut(True)
            cut_at_ms = time.time_ns() // 1_000_000

            def comm_bus(state: str) -> list[dict[str, Any]]:
                return [m for m in alarms() if m.get("kind") == "comm.bus" and m["state"] == state]

            assert wait_until(lambda: comm_bus("raised"), 10), rig.log_text()[-3000:]
            time.sleep(2)  # late per-meter alarms would show up here
            raised = comm_bus("raised")
            assert len(raised) == 1, raised
            alarm = raised[0]
            assert alarm["key"] == "comm.bus/rs485-1" and alarm["severity"] == "major"
            assert set(alarm["details"]["meters"]) == cut_meters
            assert alarm["details"]["bus"] == "rs485-1" and alarm["details"]["link"]
            assert "check the RS-485 pair, the adapter and its cable" in alarm["details"]["hint"]
            # The other bus keeps publishing while the first is cut.
            fresh = {m for m, msgs in reads_by_meter(observer, rig).items()
                     if any(msg["reads"][0]["t"] > cut_at_ms + 2000 for msg in msgs)}
            assert fresh >= other_meters, fresh

            cut.set_cut(False)
            assert wait_until(lambda: comm_bus("cleared"), 12), rig.log_text()[-3000:]
            cleared = comm_bus("cleared")[0]
            assert cleared["key"] == "comm.bus/rs485-1" and cleared["details"]["meter"] in cut_meters
            time.sleep(1.5)  # folded per-meter clears would show up here
            every = alarms()
            assert not [m for m in every if str(m.get("kind", "")).startswith("outage.")], every
            assert not [m for m in every if m.get("kind") == "comm_loss"], every

            validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
            for message in (alarm, cleared):
                validator.check("alarm-message", message, message["key"])
                validator.check(f"comm-bus-{message['state']}-details", message["details"],
                                message["key"])
        assert rig.stop_daemon() == 0
