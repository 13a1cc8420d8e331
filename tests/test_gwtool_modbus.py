"""``gwtool modbus read|scan`` as a subprocess against the project's Modbus simulator: pymodbus
servers over real TCP on 127.0.0.1 and over real pseudo-terminals (RTU), whose registers come
from the load model, so the decoded values are compared with the model's snapshot exactly."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hil_tests.load_model import LoadModel, ManualClock
from hil_tests.modbus_sim import (
    ModbusMetersHandle,
    SimulatedModbusMeter,
    start_modbus_rtu_meters,
    start_modbus_tcp_meters,
)
from protocols.modbus import ModbusProfile
from protocols.profiles import load_named_profile
from tests.gateway_rig import BackgroundLoop

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent


def gwtool(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", "modbus", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gwtool: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def profile(name: str) -> ModbusProfile:
    loaded = load_named_profile(name)
    assert isinstance(loaded, ModbusProfile)
    return loaded


def meters() -> list[SimulatedModbusMeter]:
    model = LoadModel(seed=16, clock=ManualClock())  # a still clock: values do not move between reads
    return [SimulatedModbusMeter(3, profile("sdm630"), model.meter("sdm", base_kw=7.5)),
            SimulatedModbusMeter(7, profile("dtsu666"), model.meter("dtsu"))]


@pytest.fixture
def sim() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


def serve(sim: BackgroundLoop, start: Callable[[], Coroutine[Any, Any, ModbusMetersHandle]]) -> Any:
    return sim.run(start(), timeout=30)


def assert_snapshot(out: dict[str, Any], meter: SimulatedModbusMeter) -> None:
    snapshot = meter.meter.snapshot().values()
    readings = {r["quantity"]: r for r in out["readings"]}
    assert set(readings) == set(meter.profile.quantities)
    for spec in meter.profile.registers:
        value = snapshot.get(spec.quantity, Decimal(0))
        expected = value if spec.is_register else float(value)
        got = readings[spec.quantity]["value"]
        assert (Decimal(got) if spec.is_register else float(got)) == expected, spec.quantity
        assert readings[spec.quantity]["unit"] == spec.unit


def test_tcp_read_with_a_profile_equals_the_load_model(sim: BackgroundLoop) -> None:
    units = meters()
    handle = serve(sim, lambda: start_modbus_tcp_meters(units))
    try:
        result = gwtool("read", "--tcp", f"127.0.0.1:{handle.port}", "--unit", "7",
                        "--profile", "dtsu666", "--json")
        assert result.returncode == 0, result.stderr
        assert_snapshot(json.loads(result.stdout), units[1])
        text = gwtool("read", "--tcp", f"127.0.0.1:{handle.port}", "--unit", "3", "--profile", "sdm630")
        assert text.returncode == 0, text.stderr
        energy = units[0].meter.snapshot().values()["energy.active.import.total"]
        assert f"energy.active.import.total = {energy} kWh" in text.stdout.splitlines()
    finally:
        sim.run(handle.close())


def test_tcp_raw_read_and_errors_are_one_line(sim: BackgroundLoop) -> None:
    units = meters()
    handle = serve(sim, lambda: start_modbus_tcp_meters(units))
    try:
        host = f"127.0.0.1:{handle.port}"
        spec = units[0].profile.spec("energy.active.import.total")
        raw = gwtool("read", "--tcp", host, "--unit", "3", f"--{spec.function.value}",
                     str(spec.address), "--count", str(spec.words), "--json")
        assert raw.returncode == 0, raw.stderr
        assert len(json.loads(raw.stdout)["registers"]) == spec.words
        illegal = one_line_error(gwtool("read", "--tcp", host, "--unit", "3", "--holding", "60000"))
        assert "exception 02: illegal data address" in illegal
        absent = one_line_error(gwtool("read", "--tcp", host, "--unit", "9", "--profile", "sdm630"))
        assert "exception 0B" in absent
        wrong_kind = one_line_error(gwtool("read", "--tcp", host, "--unit", "3",
                                           "--profile", "dlt645-2007"))
        assert "not a Modbus register map" in wrong_kind
    finally:
        sim.run(handle.close())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_bad_port_and_bad_host_are_one_line() -> None:
    refused = one_line_error(gwtool("read", "--tcp", f"127.0.0.1:{free_port()}", "--unit", "1",
                                    "--holding", "0"))
    assert "refused" in refused
    bad_port = one_line_error(gwtool("read", "--tcp", "127.0.0.1:99999", "--unit", "1", "--holding", "0"))
    assert "port must be a number 1..65535" in bad_port
    no_device = one_line_error(gwtool("read", "--serial", "/dev/ttyDOESNOTEXIST", "--unit", "1",
                                      "--holding", "0"))
    assert "cannot open serial port /dev/ttyDOESNOTEXIST" in no_device and "no such device" in no_device
    bad_url = one_line_error(gwtool("scan", "--serial", "bogus://x", "--units", "1"))
    assert "cannot open serial port bogus://x" in bad_url


def test_tcp_scan_finds_the_units_and_reads_silence_as_absence(sim: BackgroundLoop) -> None:
    units = meters()
    handle = serve(sim, lambda: start_modbus_tcp_meters(units))
    try:
        found = gwtool("scan", "--tcp", f"127.0.0.1:{handle.port}", "--units", "1-10", "--json")
        assert found.returncode == 0, found.stderr
        assert [f["unit"] for f in json.loads(found.stdout)] == [3, 7]
    finally:
        sim.run(handle.close())
    silent = serve(sim, lambda: start_modbus_tcp_meters(units, silent_absent_units=True))
    try:
        found = gwtool("scan", "--tcp", f"127.0.0.1:{silent.port}", "--units", "2-4,6-8",
                       "--timeout-ms", "300")
        assert found.returncode == 0, found.stderr
        assert found.stdout.splitlines() == ["unit 3: answered (exception 02)",
                                             "unit 7: answered (exception 02)"]
        none = one_line_error(gwtool("scan", "--tcp", f"127.0.0.1:{silent.port}", "--units", "1,2",
                                     "--timeout-ms", "300"))
        assert "no unit answered" in none
    finally:
        sim.run(silent.close())


def test_rtu_read_and_scan_over_a_pty(sim: BackgroundLoop) -> None:
    units = meters()
    handle = serve(sim, lambda: start_modbus_rtu_meters(units, baudrate=19200))
    try:
        port = handle.device_path
        read = gwtool("read", "--serial", port, "--baud", "19200", "--unit", "3",
                      "--profile", "sdm630", "--json")
        assert read.returncode == 0, read.stderr
        assert_snapshot(json.loads(read.stdout), units[0])
        # 8E1 asked on a pty: opened 8N1 with one warning, as the daemon does.
        even = gwtool("read", "--serial", port, "--baud", "19200", "--parity", "E", "--unit", "7",
                      "--profile", "dtsu666", "--json")
        assert even.returncode == 0, even.stderr
        assert even.stderr.count("warning") == 1 and "pseudo-terminal" in even.stderr
        found = gwtool("scan", "--serial", port, "--baud", "19200", "--units", "1-8",
                       "--profile", "sdm630", "--json")
        assert found.returncode == 0, found.stderr
        assert [f["unit"] for f in json.loads(found.stdout)] == [3, 7]
        silent = one_line_error(gwtool("read", "--serial", port, "--baud", "19200", "--unit", "5",
                                       "--holding", "0", "--timeout-ms", "300"))
        assert "unit 5: no reply" in silent
    finally:
        sim.run(handle.close())


def test_unit_lists_and_host_ports_parse_or_say_what_is_wrong() -> None:
    from firmware_tools.errors import ToolError
    from firmware_tools.modbus_commands import parse_units
    from firmware_tools.modbus_link import parse_host

    assert parse_units("1-3, 5,7..8") == [1, 2, 3, 5, 7, 8]
    for bad, words in (("0-5", "within 1..247"), ("5-3", "low to high"), ("x", "not a unit id"),
                       ("248", "within 1..247"), (",", "no unit ids")):
        with pytest.raises(ToolError, match=words):
            parse_units(bad)
    assert parse_host("meter.local") == ("meter.local", 502)
    assert parse_host("10.0.0.9:5020") == ("10.0.0.9", 5020)
    assert parse_host("[fe80::1]:1502") == ("fe80::1", 1502)
    assert parse_host("[fe80::1]") == ("fe80::1", 502)
    for bad in ("host:", ":502", "[fe80::1", "h:70000"):
        with pytest.raises(ToolError):
            parse_host(bad)
