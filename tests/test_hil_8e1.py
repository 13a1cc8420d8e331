"""8E1 on pseudo-terminal rigs: the daemon restarts (SIGTERM, kill -9) and polls again within 15 s,
and ``gwtool`` answers every serial failure with one line, never a traceback.

Linux ptys carry no parity bit; before the fallback (gateway/config/serial_line.py) the first open
of a pty with parity E worked and every later one failed with ``termios.error (22, 'Invalid
argument')``, so a rig could not restart the daemon without restarting its simulators.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from hil_tests.load_model import ManualClock
from hil_tests.sim import run_dlt645_line
from tests.broker import Observer, free_port
from tests.gateway_rig import decoded, gateway_rig, wait_until

REPO = Path(__file__).resolve().parent.parent
RESUME_WITHIN_S = 15.0
FALLBACK = "opened 8N1 instead of 8E1"


def _resume_time(rig, observer) -> float:  # type: ignore[no-untyped-def]
    """Start the daemon and return the seconds until it publishes a read polled by this run
    (payload ``ts`` after the start: an outbox re-send of an earlier poll keeps its old ``ts``)."""
    started_ms = time.time() * 1000
    started = time.monotonic()
    rig.start_daemon()
    assert wait_until(lambda: any(m["ts"] >= started_ms
                                  for _t, m in decoded(observer, rig.topic("reads/"))), 30), \
        rig.log_text()[-3000:]
    return time.monotonic() - started


def test_daemon_restarts_on_an_8e1_pty_rig_after_sigterm_and_kill(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     parity="E") as rig, \
            Observer(rig.broker, "mtr/v1/#", client_id="hil-8e1-observer") as observer:
        first = _resume_time(rig, observer)
        assert rig.stop_daemon() == 0
        after_sigterm = _resume_time(rig, observer)
        rig.kill_daemon()
        after_kill = _resume_time(rig, observer)
        assert rig.stop_daemon() == 0
        log = rig.log_text()
        print(f"first poll published {first:.1f} s after start; after SIGTERM {after_sigterm:.1f} s; "
              f"after kill -9 {after_kill:.1f} s")
        assert after_sigterm < RESUME_WITHIN_S and after_kill < RESUME_WITHIN_S
        assert "Invalid argument" not in log and "Traceback" not in log, log[-3000:]
        # One warning per daemon run (three runs), not one per re-open.
        assert log.count(FALLBACK) == 3, log[-3000:]


# --- gwtool on 8E1 and on every serial failure tried ------------------------------------------------


def gwtool(*args: str, timeout: float = 60,
           prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*prefix, sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The failure is exit 1, no traceback and one error line (after the pty warning, if any)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("gwtool: warning:")]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def line():  # type: ignore[no-untyped-def]
    with run_dlt645_line(["000000000011"], baudrate=2400, clock=ManualClock(0.0)) as rig:
        yield rig


def test_gwtool_reads_an_8e1_pty_again_and_again(line) -> None:  # type: ignore[no-untyped-def]
    # Twice is again: before the fallback the first open worked and every later one failed
    # (and discover below opens the pty once per baud rate).
    for _ in range(2):
        result = gwtool("read", "--port", line.device, "--address", "000000000011", "--di",
                        "00010000")  # default parity E
        assert result.returncode == 0, result.stderr
        assert "kWh" in result.stdout
        assert result.stderr.count(FALLBACK) == 1, result.stderr
        assert "Traceback" not in result.stderr
    found = gwtool("discover", "--port", line.device, "--bauds", "1200,2400", "--all-bauds")
    assert "000000000011  2400 baud" in found.stdout, found.stderr
    assert found.stderr.count(FALLBACK) == 1, found.stderr  # once, though opened per baud rate


READ = ("--address", "000000000011", "--di", "00010000")


def test_missing_device(tmp_path: Path) -> None:
    _one_line(gwtool("read", "--port", str(tmp_path / "ttyUSB9"), *READ), "No such file",
              "check the path")


def test_not_a_serial_device(tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("")
    _one_line(gwtool("read", "--port", str(plain), *READ), "not a serial device")
    _one_line(gwtool("read", "--port", "/dev/null", *READ), "not a serial device")


def test_device_busy(line) -> None:  # type: ignore[no-untyped-def]
    holder = serial.Serial(line.device, 2400, exclusive=True)
    try:
        _one_line(gwtool("read", "--port", line.device, "--parity", "N", *READ), "in use by another process")
    finally:
        holder.close()


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                    reason="needs root and setpriv to drop the capability that bypasses file modes")
def test_permission_denied(line) -> None:  # type: ignore[no-untyped-def]
    """A device the user may not open (mode 000, run without CAP_DAC_OVERRIDE: what a user
    outside the dialout group meets)."""
    os.chmod(line.device, 0)
    drop = (SETPRIV, "--bounding-set=-dac_override,-dac_read_search")
    _one_line(gwtool("read", "--port", line.device, *READ, prefix=drop), "Permission denied",
              "dialout")


def test_bad_urls_and_refused_connections() -> None:
    _one_line(gwtool("read", "--port", "foo://nowhere", *READ), "pyserial URL")
    _one_line(gwtool("read", "--port", f"socket://127.0.0.1:{free_port()}", *READ),
              "nothing listens")


def test_invalid_baud_rate(line) -> None:  # type: ignore[no-untyped-def]
    _one_line(gwtool("read", "--port", line.device, "--baud", "-5", *READ), "line settings")


def test_parity_refused_by_a_pty_is_no_longer_an_error() -> None:
    """What a rig saw before: a second 8E1 open of a pty. Now both opens work."""
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        for _ in range(2):
            result = gwtool("read", "--port", path, *READ, "--timeout-ms", "200")
            _one_line(result, "no reply")  # nobody answers on this pty: a protocol answer, not EINVAL
    finally:
        os.close(master)
        os.close(slave)


def test_line_lost_during_the_exchange() -> None:
    """The simulator (the pty master) goes away while gwtool waits for a reply: EIO on read."""
    master, slave = os.openpty()  # our slave stays open: a master read is EIO while none is
    path = os.ttyname(slave)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "firmware_tools.cli", "read", "--port", path,
                             *READ, "--timeout-ms", "20000"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The request on the line means gwtool has the port open and now waits for the reply.
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "gwtool sent no request"
        os.read(master, 256)
    finally:
        os.close(master)
        os.close(slave)
    stdout, stderr = proc.communicate(timeout=60)
    _one_line(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr),
              "cannot use serial port", "simulator stopped")


# --- which ports fall back -------------------------------------------------------------------------


def test_only_pseudo_terminals_fall_back(tmp_path: Path) -> None:
    from gateway.config.serial_line import parity_for_port

    master, slave = os.openpty()
    try:
        pty = os.ttyname(slave)
        link = tmp_path / "ttyRIG"
        link.symlink_to(pty)  # rigs often give the pty a stable name
        for port in (pty, str(link)):
            line = parity_for_port(port, "E")
            assert line.applied == "N" and line.warning is not None and FALLBACK in line.warning
        assert parity_for_port(pty, "O").applied == "N"
        assert parity_for_port(pty, "N").warning is None
        # Not ptys: a character device that is not one, URLs, paths that do not exist (yet).
        for port in ("/dev/null", "socket://127.0.0.1:4001", str(tmp_path / "ttyUSB0")):
            assert parity_for_port(port, "E").applied == "E", port
    finally:
        os.close(master)
        os.close(slave)


def test_modbus_rtu_bus_on_a_pty_is_opened_8n1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pymodbus opens RTU ports itself: the factory hands it the parity to apply."""
    import asyncio

    from gateway.acquisition.factory import build_buses
    from gateway.acquisition.modbus_bus import ModbusBus
    from gateway.config import load_config

    master, slave = os.openpty()
    try:
        config = tmp_path / "gateway.toml"
        config.write_text(f"""
[gateway]
id = "gw-rtu"
data_dir = "var"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "rtu-1"
protocol = "modbus-rtu"
port = "{os.ttyname(slave)}"
baudrate = 9600
parity = "E"

[[meters]]
id = "mb-1"
bus = "rtu-1"
address = 1
profile = "sdm630"
""")
        buses = build_buses(load_config(config), asyncio.Queue())
        assert isinstance(buses[0], ModbusBus) and buses[0].serial is not None
        assert buses[0].serial["parity"] == "N"
        assert sum(FALLBACK in r.getMessage() for r in caplog.records) == 1
    finally:
        os.close(master)
        os.close(slave)
