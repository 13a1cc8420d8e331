"""The systemd unit: required settings present, hardening that would break us absent, and
`systemd-analyze verify` clean when the tool exists."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edge-gateway.service"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_has_notify_watchdog_restart_and_directories() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["Restart"] == "on-failure"
    # Not restarted: a bad configuration (2), the hold-up stop on battery (3, docs/outages.md).
    from gateway.app.daemon import EXIT_BAD_CONFIG, EXIT_HOLD_UP

    assert set(service["RestartPreventExitStatus"].split()) == {str(EXIT_BAD_CONFIG),
                                                                 str(EXIT_HOLD_UP)}
    assert service["StateDirectory"] == "edge-gateway"
    assert service["CacheDirectory"] == "edge-gateway"
    assert "NUMBA_CACHE_DIR=/var/cache/edge-gateway" in service["Environment"]
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["DevicePolicy"] == "closed"


def test_unit_avoids_settings_that_break_serial_ports_or_numba() -> None:
    text = UNIT.read_text()
    assert "PrivateDevices" not in text.replace("Not PrivateDevices", "")
    assert "MemoryDenyWriteExecute=yes" not in text
    assert "DeviceAllow=char-ttyUSB rw" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "edge-gateway.service"
    # verify checks that ExecStart exists; point it at a binary that does.
    unit.write_text(UNIT.read_text().replace("/usr/bin/edge-gateway", shutil.which("true") or "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if "Unknown" in line or "Invalid" in line or "bad-setting" in line]
    assert result.returncode == 0 and not problems, result.stderr
