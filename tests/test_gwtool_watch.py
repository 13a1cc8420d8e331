"""``gwtool watch``: the read-only live view, on a real mosquitto with the daemon as a subprocess."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import Observer
from tests.gateway_rig import REPO, gateway_rig, reads_by_meter, simulator_registers, wait_until

pytestmark = pytest.mark.timeout(180)


def gwtool(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_watch_shows_the_gateway_its_buses_and_each_meters_reads(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=1) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="watch-ready") as observer:
            rig.start_daemon()
            # Once every meter has been polled, the view needs only a few polls (2 s) and health
            # messages (2 s) of its own: it does not have to sit through the daemon's start.
            assert wait_until(lambda: set(reads_by_meter(observer, rig)) >= set(rig.meters), 30)
        result = gwtool("watch", "--broker", f"127.0.0.1:{rig.broker.port}", "--gateway",
                        rig.gateway_id, "--interval", "2", "--duration", "8")
        assert result.returncode == 0, result.stderr
        assert rig.stop_daemon() == 0
    views = re.split(r"^(?=\[watch )", result.stdout, flags=re.MULTILINE)
    assert views[0].startswith(f"watching mtr/v1/{rig.gateway_id}/# on 127.0.0.1:")
    last = views[-1]
    assert f"gateway {rig.gateway_id} online" in last, result.stdout
    assert "3/3 meters read" in last, result.stdout
    assert re.search(r"^  bus rs485-1 .* transactions \d+", last, flags=re.MULTILINE)
    assert re.search(r"^  bus tcp-1 ", last, flags=re.MULTILINE)
    for meter_id, ref in rig.meters.items():  # the simulators' clock stands still: exact values
        energy = simulator_registers(ref)["energy.active.import.total"]
        assert re.search(rf"^  {re.escape(meter_id)} .* import {energy} kWh", last,
                         flags=re.MULTILINE), (meter_id, energy, last)
    assert "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_watch_errors_are_one_line() -> None:
    port = free_port()
    refused = gwtool("watch", "--broker", f"127.0.0.1:{port}", "--gateway", "gw-1")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"gwtool: cannot connect to the broker at 127.0.0.1:{port}: [Errno 111] Connection refused "
        "— check host, port and TLS options"]
    bad_port = gwtool("watch", "--broker", "127.0.0.1:0", "--gateway", "gw-1")
    assert bad_port.returncode == 1 and len(bad_port.stderr.strip().splitlines()) == 1
    assert "--broker '127.0.0.1:0': the port must be a number 1..65535" in bad_port.stderr
    no_ca = gwtool("watch", "--broker", "127.0.0.1", "--gateway", "gw-1", "--cafile", "/nonexistent.pem")
    assert no_ca.returncode == 1 and len(no_ca.stderr.strip().splitlines()) == 1
    assert "cannot load the TLS files" in no_ca.stderr
