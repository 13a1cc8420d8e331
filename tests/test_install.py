"""The Pi install path, end to end, from an installed copy and never from the checkout.

`make install` (DESTDIR-staged, PREFIX=/opt/edge-gateway) runs on a copy of the source tree: it
builds the wheels, makes a fresh venv, installs the production wheel, the unit, sysusers.d and
tmpfiles.d. The installed copy must then validate a config naming only shipped profiles (package
data), carry no rig, take `edge-gateway[rig]` from the built wheels, and run the daemon for 30 s
against the rig's simulators (an 8E1 DL/T 645 line on a pty and a Modbus TCP meter), publishing
to a real mosquitto. Every command runs from a temporary directory without PYTHONPATH, so nothing
can be imported from the checkout.

Needs network access (or a pip cache) for the wheel's dependencies: the venv is really fresh.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.broker import MosquittoBroker, Observer
from tests.gateway_rig import decoded, wait_until

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/opt/edge-gateway"
RUN_S = 30.0

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    """The environment of a user on the gateway: no PYTHONPATH, no venv of ours."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NOTIFY_SOCKET",
                        "WATCHDOG_USEC")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def _copy_source(dest: Path) -> Path:
    """The source tree as a release tarball would hold it (no venvs, caches, build output)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".*_cache", "var",
                                    "build", "dist", "*.egg-info", ".hypothesis")
    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)
    return dest


def _run(cmd: list[str], cwd: Path, timeout: float = 900,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env or _clean_env(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (cmd, result.stdout[-3000:], result.stderr[-3000:])
    return result


def _config(path: Path, data_dir: Path, broker_port: int, pty: str, modbus_port: int) -> Path:
    path.write_text(f"""
[gateway]
id = "gw-installed"
data_dir = "{data_dir}"
health_interval_s = 5

[mqtt]
host = "127.0.0.1"
port = {broker_port}
reconnect_min_s = 0.2
reconnect_max_s = 2

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "{pty}"
baudrate = 2400
parity = "E"
timeout_ms = 500

[[buses]]
name = "mb-1"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {modbus_port}

[[meters]]
id = "m-001"
bus = "rs485-1"
address = "000000000001"
profile = "dlt645-2007"
poll_interval_s = 5

[[meters]]
id = "m-002"
bus = "rs485-1"
address = "000000000002"
profile = "dlt645-2007-single-phase"
poll_interval_s = 5

[[meters]]
id = "mb-001"
bus = "mb-1"
address = 1
profile = "sdm630"
poll_interval_s = 5
""")
    return path


def test_make_install_then_check_config_and_a_30_s_run_from_the_installed_copy(
        tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    source = _copy_source(tmp_path / "src")
    root = tmp_path / "root"
    # The interpreter that builds the wheel and the venv: this one's base Python (pip for the
    # build comes from it; the venv gets its own).
    python = getattr(sys, "_base_executable", sys.executable)
    # AOT=no: the kernels' ahead-of-time build takes minutes; tests/test_aot_kernels.py covers it.
    _run(["make", "install", f"DESTDIR={root}", f"PREFIX={PREFIX}", f"PYTHON={python}", "AOT=no"],
         source)
    timings["make install"] = time.monotonic() - started

    venv = root / PREFIX.lstrip("/") / "venv"
    vpy = str(venv / "bin" / "python")
    unit = (root / "usr/lib/systemd/system/edge-gateway.service").read_text()
    assert f"ExecStart={PREFIX}/venv/bin/edge-gateway run --config /etc/edge-gateway/gateway.toml" in unit
    assert (venv / "bin" / "edge-gateway").read_text().startswith(f"#!{PREFIX}/venv/bin/python")
    assert "m edge-gateway dialout" in (root / "usr/lib/sysusers.d/edge-gateway.conf").read_text()
    assert "/etc/edge-gateway" in (root / "usr/lib/tmpfiles.d/edge-gateway.conf").read_text()
    assert (root / "etc/edge-gateway/gateway.toml.example").is_file()
    wheels = sorted(p.name for p in (source / "dist").glob("*.whl"))
    assert wheels == ["edge_gateway-0.1.0-py3-none-any.whl",
                      "edge_gateway_rig-0.1.0-py3-none-any.whl"], wheels

    work = tmp_path / "cwd"  # never the checkout
    work.mkdir()
    # Production install: no rig, no rich; the installed gateway package is the one imported.
    probe = _run([vpy, "-c", "import importlib.util as u, gateway, protocols.profiles as p;"
                  "print(gateway.__file__); print(p.builtin_profile_dir());"
                  "print(u.find_spec('hil_tests'), u.find_spec('rich'))"], work).stdout.split("\n")
    assert probe[0].startswith(str(venv)) and probe[1].startswith(str(venv)), probe
    assert probe[2] == "None None", probe

    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    sim: subprocess.Popen[str] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    try:
        # The rig from the built wheels: `edge-gateway[rig]` resolves edge-gateway-rig there.
        t0 = time.monotonic()
        _run([vpy, "-m", "pip", "install", "-q", "--find-links", str(source / "dist"),
              "edge-gateway[rig]"], work)
        timings["pip install edge-gateway[rig]"] = time.monotonic() - t0
        sim = subprocess.Popen([vpy, str(venv / "bin" / "edge-gateway-sim"), "--dlt645-meters", "2",
                                "--baud", "2400", "--modbus-tcp-meters", "1", "--modbus-port", "0"],
                               cwd=work, env=_clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        assert sim.stdout is not None
        lines = [sim.stdout.readline(), sim.stdout.readline()]
        pty = re.search(r"dlt645 (\S+) addresses", "".join(lines))
        modbus = re.search(r"modbus-tcp 127\.0\.0\.1:(\d+)", "".join(lines))
        assert pty and modbus, lines

        config = _config(work / "gateway.toml", work / "var", broker.port, pty.group(1),
                         int(modbus.group(1)))
        gateway = [vpy, str(venv / "bin" / "edge-gateway")]
        checked = _run([*gateway, "check-config", str(config)], work)
        assert "OK — gateway gw-installed, 2 buses, 3 meters" in checked.stdout

        with Observer(broker, "mtr/v1/#", client_id="install-observer") as observer:
            log_path = work / "daemon.log"
            with log_path.open("wb") as log:
                daemon = subprocess.Popen([*gateway, "run", "--config", str(config)], cwd=work,
                                          env=_clean_env(), stdout=log, stderr=subprocess.STDOUT)
            time.sleep(RUN_S)
            assert daemon.poll() is None, log_path.read_text()[-3000:]
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0, log_path.read_text()[-3000:]
            daemon = None
            topic = "mtr/v1/gw-installed/reads/"
            wait_until(lambda: len({m["meter"] for _t, m in decoded(observer, topic)}) == 3, 5)
            reads: dict[str, int] = {}
            for _topic, message in decoded(observer, topic):
                reads[message["meter"]] = reads.get(message["meter"], 0) + 1
        log_text = log_path.read_text()
        print(f"timings: {timings}; reads per meter in {RUN_S:.0f} s: {reads}")
        assert set(reads) == {"m-001", "m-002", "mb-001"}, (reads, log_text[-3000:])
        assert min(reads.values()) >= 3, reads  # polled every 5 s for 30 s
        assert "Traceback" not in log_text, log_text[-3000:]
        assert log_text.count("opened 8N1 instead of 8E1") == 1, log_text[-3000:]
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait(10)
        if sim is not None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
        broker.stop()
