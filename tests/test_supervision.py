"""Supervision: each long-running part of the daemon is made to fail in turn (a planted bug, see
tests/faulty_daemon.py). The daemon must log the failure, show it in health (``stats.tasks`` and
``stats.healthy``) and stop feeding the systemd watchdog, so systemd restarts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Observer
from tests.gateway_rig import REPO, GatewayRig, decoded, gateway_rig

COMPONENTS = ["groups", "areas", "theft", "load-control", "commands", "bus:rs485-1", "committer",
              "outbox-pump"]
WATCHDOG_USEC = 1_500_000
#: Seconds without a ping that count as starved: six times the ping interval.
STARVED_S = 3.0

EXTRA = """
[[groups]]
id = "all"
members = [{ meter = "m-0101", sign = "+", direction = "import" },
           { meter = "m-0102", sign = "+", direction = "import" }]

[[areas]]
id = "tq-1"
master = "mb-1"
subs = "all"

[theft]
evaluate_interval_s = 0.5
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayRig]:
    with gateway_rig(tmp_path_factory.mktemp("supervision"), dlt645_buses=1, meters_per_bus=2,
                     modbus_meters=1, poll_interval_s=1.0) as rig:
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + EXTRA)
        yield rig


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket that records what arrives, and when."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []

    def receive(self) -> None:
        try:
            self.got.append((time.monotonic(), self.sock.recv(4096).decode()))
        except TimeoutError:
            pass

    @property
    def pings(self) -> list[float]:
        return [t for t, m in self.got if "WATCHDOG=1" in m]


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_failed_component_is_logged_shown_in_health_and_starves_the_watchdog(
        rig: GatewayRig, tmp_path: Path, component: str) -> None:
    assert rig.config_path is not None
    notify = NotifySocket(tmp_path / "notify.sock")
    log_path = tmp_path / "daemon.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
               WATCHDOG_USEC=str(WATCHDOG_USEC))
    with Observer(rig.broker, rig.topic("health"), client_id=f"sup-{component}") as observer, \
            open(log_path, "wb") as log:

        def failed_health() -> list[dict[str, object]]:
            return [m["stats"] for _, m in decoded(observer, rig.topic("health"))
                    if str(m["stats"].get("tasks", {}).get(component, "")).startswith("failed")]

        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faulty_daemon", component, "run", "--config",
             str(rig.config_path)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            # Until health shows the failure and no ping has come for STARVED_S (a healthy
            # daemon pings every WATCHDOG_USEC / 3 = 0.5 s), or the deadline.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                notify.receive()
                pings = notify.pings
                if failed_health() and pings and time.monotonic() - pings[-1] >= STARVED_S:
                    break
            window_end = time.monotonic()
            health = failed_health()
        finally:
            proc.terminate()
            proc.wait(20)
            notify.sock.close()
    got = notify.got
    text = log_path.read_text(errors="replace")
    assert any(m.startswith("READY=1") for _, m in got), (got, text[-3000:])
    pings = [t for t, m in got if "WATCHDOG=1" in m]
    assert len(pings) >= 2, f"the watchdog was not fed before the fault\n{text[-3000:]}"
    # Fed every 0.5 s before the fault, starved after it.
    assert window_end - pings[-1] >= STARVED_S, \
        f"{component}: the watchdog was still fed after the failure\n{text[-3000:]}"
    assert "planted fault" in text and component in text, text[-3000:]
    assert "watchdog not fed" in text, text[-3000:]
    assert health, f"{component}: no health message showed the failure\n{text[-3000:]}"
    assert health[-1]["healthy"] is False
