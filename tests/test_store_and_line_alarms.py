"""Alarms that used to stay silent (issue 12, item 9), through the daemon and a real mosquitto:
``store.corrupt`` when a damaged store was moved aside at start, and ``bus.unavailable`` while a
bus's serial port cannot be opened (health shows the bus down), cleared when the port appears."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, reads_by_meter, wait_until


def _alarms(observer: Observer, rig: GatewayRig, kind: str) -> list[dict[str, Any]]:
    return [m for _t, m in decoded(observer, rig.topic("alarms")) if m.get("kind") == kind]


def test_store_corrupt_alarm_reaches_the_broker(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="corrupt-1") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(reads_by_meter(observer, rig)) == 2, 30), \
                rig.log_text()[-2000:]
            assert rig.stop_daemon() == 0
            assert _alarms(observer, rig, "store.corrupt") == []
        # Between the runs the header is destroyed: SQLite no longer recognises the file.
        with rig.store_path.open("r+b") as f:
            f.write(b"\xa5" * 100)
        with Observer(rig.broker, "mtr/v1/#", client_id="corrupt-2") as observer:
            rig.start_daemon()
            assert wait_until(lambda: _alarms(observer, rig, "store.corrupt"), 20), \
                rig.log_text()[-3000:]
            (alarm,) = _alarms(observer, rig, "store.corrupt")
            assert alarm["state"] == "raised" and alarm["key"] == "store.corrupt"
            moved = Path(alarm["details"]["moved_to"])
            assert moved.exists() and moved.name.startswith("gateway.sqlite.corrupt-")
            assert ".recover" in alarm["details"]["hint"]
            assert wait_until(lambda: len(reads_by_meter(observer, rig)) == 2, 30)  # still polls
            assert rig.stop_daemon() == 0


def test_bus_whose_port_cannot_be_opened_raises_an_alarm_and_shows_down(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=2, meters_per_bus=2, modbus_meters=0) as rig:
        assert rig.config_path is not None
        later = tmp_path / "ttyLATER"  # the adapter of rs485-2 is not plugged in yet
        real = rig.lines["rs485-2"].device
        rig.config_path.write_text(rig.config_path.read_text().replace(real, str(later)))
        missing = {m for m, ref in rig.meters.items() if ref.bus == "rs485-2"}
        with Observer(rig.broker, "mtr/v1/#", client_id="line-down") as observer:
            started = time.monotonic()
            rig.start_daemon()
            assert wait_until(lambda: _alarms(observer, rig, "bus.unavailable"), 15), \
                rig.log_text()[-3000:]
            raised_after = time.monotonic() - started
            (alarm,) = _alarms(observer, rig, "bus.unavailable")
            assert alarm["state"] == "raised" and alarm["key"] == "bus.unavailable/rs485-2"
            assert str(later) in alarm["details"]["link"] and alarm["details"]["hint"]
            assert raised_after < 10, raised_after  # seconds, not the 70 s it used to take

            def bus_health(name: str) -> dict[str, Any] | None:
                reports = decoded(observer, rig.topic("health"))
                return reports[-1][1]["stats"]["buses"].get(name) if reports else None

            assert wait_until(lambda: (bus_health("rs485-2") or {}).get("state") == "down", 10)
            down = bus_health("rs485-2")
            assert down is not None
            assert down["success_ratio"] == 0.0 and sorted(down["unreachable"]) == sorted(missing)
            assert str(later) in down["line_error"]
            assert (bus_health("rs485-1") or {}).get("state") == "up"
            assert not missing & set(reads_by_meter(observer, rig))
            # A dead adapter is one bus alarm (docs/outages.md, "Bus faults are not outages"):
            # no per-meter comm_loss, no comm.bus beside it, never an outage.
            others = [m for _t, m in decoded(observer, rig.topic("alarms"))
                      if m.get("kind") != "bus.unavailable"]
            assert not [m for m in others if str(m.get("kind")).startswith(("outage.", "comm"))], \
                others
            # The adapter appears: the alarm clears and its meters are read.
            later.symlink_to(real)
            assert wait_until(lambda: any(a["state"] == "cleared"
                                          for a in _alarms(observer, rig, "bus.unavailable")),
                              30), rig.log_text()[-3000:]
            assert wait_until(lambda: missing <= set(reads_by_meter(observer, rig)), 30)
            assert wait_until(lambda: (bus_health("rs485-2") or {}).get("state") == "up", 10)
            assert rig.stop_daemon() == 0
