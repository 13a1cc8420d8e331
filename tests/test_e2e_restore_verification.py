"""Restore verification end to end (issue 14): the daemon as a real subprocess, simulated
DL/T 645 meters on a pty whose supply the test cuts together with the gateway's power-fail
input, a real mosquitto. After restore the gateway reads each meter's power-down records on the
bus priority lane and publishes ``outage.verified`` with ``confirmed: true`` and every meter's
record within 2 s of the cut (docs/outages.md, "Restore verification").

The meters' simulated clock is held at wall time (UTC+8, as the gateway's
``meter_utc_offset_min`` default), stepped to "now" before the cut and before the restore.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, wait_until, write_config
from tests.test_payload_cddl import CDDL, Validator, parse_rules

CUT_S = 5.0


def test_meters_power_down_records_confirm_the_outage(tmp_path: Path) -> None:
    epoch = float(int(time.time()))
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0, start_epoch=epoch) as rig:
        line = rig.lines["rs485-1"]
        ids = sorted(rig.meters)

        def sync_meter_clocks() -> None:
            rig.clock.advance(max(0.0, time.time() - epoch - rig.clock()))

        meters = [{"id": m, "bus": "rs485-1", "address": rig.meters[m].address,
                   "profile": "test-dlt645", "poll_interval_s": 1.0} for m in ids]
        bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 9600,
               "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 2}
        fail = tmp_path / "power-fail"
        fail.write_text("0\n")
        write_config(rig, [bus], meters, extra=f"""
[power]
fail_input = "{fail}"
hold_up_s = 30

[outage]
min_duration_s = 2
verify_sample = 5
""")
        with Observer(rig.broker, "mtr/v1/#", client_id="restore-observer") as observer:
            rig.start_daemon()

            def alarms(kind: str) -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if m.get("kind") == kind]

            assert wait_until(lambda: decoded(observer, rig.topic("reads/")), 20), rig.log_text()

            sync_meter_clocks()
            cut_ms = time.time_ns() // 1_000_000
            line.cut_power()
            fail.write_text("1")
            assert wait_until(lambda: alarms("outage.area"), 5.0), rig.log_text()
            time.sleep(max(0.0, CUT_S - (time.time_ns() // 1_000_000 - cut_ms) / 1000))
            sync_meter_clocks()
            restore_ms = time.time_ns() // 1_000_000
            line.restore_power()
            fail.write_text("0")
            assert wait_until(lambda: len(alarms("outage.area")) >= 2, 5.0), rig.log_text()
            assert alarms("outage.area")[1]["state"] == "cleared"
            assert not alarms("outage.verified")  # the clear does not wait for the meters

            assert wait_until(lambda: len(alarms("outage.verified")) >= 2, 120.0), rig.log_text()
            raised, cleared = alarms("outage.verified")[:2]
            assert (raised["state"], cleared["state"]) == ("raised", "cleared")
            assert raised["key"] == "outage.verified/gateway"
            details = raised["details"]
            assert details["confirmed"] is True, details
            assert details["answered"] == details["valid"] == len(ids)
            assert [r["meter"] for r in details["records"]] == ids
            for record in details["records"]:
                assert record["agreement"] == "valid"
                assert record["count"] >= 1
                assert abs(record["start_ms"] - cut_ms) <= 2000, record
                assert abs(record["end_ms"] - restore_ms) <= 2000, record

            validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
            for message in (raised, cleared):
                validator.check("alarm-message", message, message["key"])
                validator.check("outage-verified-details", message["details"], message["key"])
        assert rig.stop_daemon() == 0
