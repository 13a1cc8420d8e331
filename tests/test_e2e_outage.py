"""Area outage from the gateway's power-fail input, end to end (issue 14, first slice): the
daemon as a real subprocess, simulated DL/T 645 meters on a pty, a real mosquitto; the test
plays the UPS HAT by writing the input file.

Small [outage] min_duration_s (2 s) so a dip, a reported outage and its restore fit in a
default test; the rules are the production ones (gateway/analytics/outages.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, wait_until, write_config
from tests.test_payload_cddl import CDDL, Validator, parse_rules

CUT_S = 6.0


def test_power_fail_input_raises_outage_per_area_and_restore_carries_duration(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=4, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        line = rig.lines["rs485-1"]
        ids = sorted(rig.meters)
        master, subs = ids[0], ids[1:]
        customers = {master: "C-MASTER", subs[0]: "C-1", subs[1]: "C-2"}  # subs[2]: none
        meters = [{"id": m, "bus": "rs485-1", "address": rig.meters[m].address,
                   "profile": "test-dlt645", "poll_interval_s": 1.0,
                   **({"customer": customers[m], "phase": "a"} if m in customers else {})}
                  for m in ids]
        bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 9600,
               "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 2}
        fail = tmp_path / "power-fail"
        fail.write_text("0\n")
        members = ", ".join(f'{{ meter = "{m}" }}' for m in subs)
        write_config(rig, [bus], meters, extra=f"""
[[groups]]
id = "tq-1-subs"
members = [{members}]

[[areas]]
id = "tq-1"
master = "{master}"
subs = "tq-1-subs"

[power]
fail_input = "{fail}"
fail_value = "1"
hold_up_s = 30

[outage]
min_duration_s = 2
""")
        with Observer(rig.broker, "mtr/v1/#", client_id="outage-observer") as observer:
            rig.start_daemon()

            def alarms(kind: str) -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if m.get("kind") == kind]

            assert wait_until(lambda: decoded(observer, rig.topic("reads/")), 20), rig.log_text()

            # A dip shorter than min_duration_s: no outage alarm, one momentary record.
            fail.write_text("1\n")
            time.sleep(1.0)
            fail.write_text("0\n")
            assert wait_until(lambda: len(alarms("outage.momentary")) >= 2, 5), rig.log_text()
            momentary = alarms("outage.momentary")
            assert [m["state"] for m in momentary] == ["raised", "cleared"]
            assert momentary[1]["details"]["momentary"] is True
            assert 0.8 <= momentary[1]["details"]["duration_s"] <= 1.5

            # An outage: outage.area within 5 s, listing every meter and customer of the area.
            fail.write_text("1")
            flipped = time.monotonic()
            assert wait_until(lambda: alarms("outage.area"), 5.0), rig.log_text()
            assert time.monotonic() - flipped <= 5.0
            (raised,) = alarms("outage.area")
            assert raised["state"] == "raised" and raised["key"] == "outage.area/tq-1"
            assert raised["severity"] == "critical"
            details = raised["details"]
            assert details["area"] == "tq-1"
            assert details["meters"] == [master, *subs]
            assert details["customers"] == ["C-MASTER", "C-1", "C-2"]
            assert details["planned"] is False
            time.sleep(max(0.0, CUT_S - (time.monotonic() - flipped)))
            fail.write_text("0")
            assert wait_until(lambda: len(alarms("outage.area")) >= 2, 5.0), rig.log_text()
            cleared = alarms("outage.area")[1]
            assert cleared["state"] == "cleared" and cleared["key"] == "outage.area/tq-1"
            assert abs(cleared["details"]["duration_s"] - CUT_S) <= 2.0
            assert cleared["details"]["momentary"] is False
            assert cleared["details"]["end_ms"] > cleared["details"]["start_ms"]
            assert cleared["details"]["start_ms"] == details["start_ms"]

            validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
            for message in [*momentary, raised, cleared]:
                validator.check("alarm-message", message, message["key"])
                validator.check(f"outage-{message['state']}-details", message["details"],
                                message["key"])
        assert rig.stop_daemon() == 0
