"""Daemon lifecycle: systemd notify and watchdog, SIGHUP reload (good and bad), SIGTERM without the
last will, the disk alarm."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, reads_by_meter, wait_until


def test_systemd_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0) as rig:
        sock_path = tmp_path / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.settimeout(0.5)
        os.environ["NOTIFY_SOCKET"] = str(sock_path)
        os.environ["WATCHDOG_USEC"] = "1500000"
        try:
            rig.start_daemon()
        finally:
            del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
        got: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in got) < 3:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        assert any(m.startswith("READY=1") for m in got), got
        ready_at = next(i for i, m in enumerate(got) if m.startswith("READY=1"))
        assert sum("WATCHDOG=1" in m for m in got[ready_at:]) >= 3, got
        assert rig.stop_daemon() == 0
        rest = []
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in rest), rest
        sock.close()


def test_sighup_reload_applies_a_good_config_and_keeps_running_on_a_bad_one(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0) as rig:
        assert rig.config_path is not None
        full = rig.config_path.read_text()
        # Start with only the first two meters configured.
        blocks = full.split("[[meters]]")
        rig.config_path.write_text("[[meters]]".join(blocks[:3]))
        third = sorted(rig.meters)[2]
        with Observer(rig.broker, "mtr/v1/#", client_id="reload-observer") as observer:
            proc = rig.start_daemon()
            assert wait_until(lambda: len(reads_by_meter(observer, rig)) == 2, 30)
            assert third not in reads_by_meter(observer, rig)
            rig.config_path.write_text(full + "\n[[meters]]\nid = 'broken'\n")  # bad: missing keys
            proc.send_signal(1)  # SIGHUP
            time.sleep(3)
            assert proc.poll() is None, "an invalid new config must not stop the daemon"
            assert "reload rejected" in rig.log_text()
            n = len(decoded(observer, rig.topic("reads/")))
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) > n + 2, 15)
            rig.config_path.write_text(full)
            proc.send_signal(1)
            assert wait_until(lambda: third in reads_by_meter(observer, rig), 30), rig.log_text()[-2000:]
            assert rig.stop_daemon() == 0


def test_sigterm_disconnects_cleanly_without_the_last_will(tmp_path: Path) -> None:
    from protocols.payload import decode_message

    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="term-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 2, 30)
            births = [decode_message(p) for t, p, _ in observer.messages(rig.topic("state"))]
            assert births and births[-1]["online"] is True
            assert rig.stop_daemon() == 0
            assert wait_until(lambda: any(
                decode_message(p).get("online") is False
                for _t, p, _r in observer.messages(rig.topic("state"))), 5)
            death = [decode_message(p) for _t, p, _r in observer.messages(rig.topic("state"))][-1]
            assert death["bdseq"] == births[-1]["bdseq"]
        log = rig.broker.log_text()
        assert f"Client {rig.gateway_id} disconnected." in log, log[-2000:]
        assert "will" not in log.lower().split(f"client {rig.gateway_id} disconnected")[-1]


def test_disk_alarm_is_raised_before_space_runs_out(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=1, modbus_meters=0) as rig:
        assert rig.config_path is not None
        # Demand more free space than any disk has: the alarm must fire at start.
        text = rig.config_path.read_text()
        rig.config_path.write_text(text.replace("[mqtt]", "[store]\ndisk_alarm_free_pct = 99\n\n[mqtt]"))
        with Observer(rig.broker, "mtr/v1/#", client_id="disk-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: any(
                m.get("kind") == "disk.low" and m.get("state") == "raised"
                for _t, m in decoded(observer, rig.topic("alarms"))), 30), rig.log_text()[-2000:]
            assert rig.stop_daemon() == 0
