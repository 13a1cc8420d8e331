"""``gwtool``: offline frame tools and reads of a simulated meter over a real pty."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from hil_tests.load_model import ManualClock
from hil_tests.sim import run_dlt645_line

REPO = Path(__file__).resolve().parent.parent


def gwtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_decode_prints_the_contract_json() -> None:
    result = gwtool("dlt645", "decode", "FE FE 68 25 04 03 02 01 00 68 91 08 33 33 34 33 75 39 45 33 8B 16")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["address"] == "000102030425"
    assert out["control"] == 0x91 and out["function"] == "read_data" and out["direction"] == "reply"
    assert out["error"] is None and out["more_follows"] is False
    assert out["di"] == "00010000" and out["values"] == ["1206.42"] and out["unit"] == "kWh"


def test_decode_without_spaces_and_error_reply() -> None:
    result = gwtool("dlt645", "decode", "68250403020100 68D10135 0616".replace(" ", ""))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["error"] == ["no_data"] and out["direction"] == "reply"


def test_bad_checksum_and_truncated_frames_exit_1_with_one_line() -> None:
    bad = gwtool("dlt645", "decode", "68 25 04 03 02 01 00 68 91 08 33 33 34 33 75 39 45 33 8C 16")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "gwtool: checksum mismatch: expected 8B, got 8C"
    cut = gwtool("dlt645", "decode", "68 25 04 03 02 01 00 68 91 08 33 33")
    assert cut.returncode == 1 and "missing 6 of 8 data bytes" in cut.stderr
    assert len(cut.stderr.strip().splitlines()) == 1


def test_unknown_di_decodes_raw_with_null_unit() -> None:
    result = gwtool("dlt645", "decode", "68 25 04 03 02 01 00 68 91 06 34 33 33 3F 34 35 D8 16")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["di"] == "0C000001" and out["unit"] is None and out["values"] == ["0102"]  # raw bytes as received


def test_read_request_matches_the_contract() -> None:
    result = gwtool("dlt645", "read-request", "--address", "000102030425", "--di", "00010000",
                    "--preamble", "4")
    assert result.stdout.strip() == "FE FE FE FE 68 25 04 03 02 01 00 68 11 04 33 33 34 33 E1 16"
    r97 = gwtool("dlt645", "read-request", "--address", "000102030425", "--di", "9010", "--version", "1997")
    assert r97.stdout.strip() == "68 25 04 03 02 01 00 68 01 02 43 C3 08 16"
    bad = gwtool("dlt645", "read-request", "--address", "12", "--di", "00010000")
    assert bad.returncode == 1 and "12 digits" in bad.stderr


def test_missing_serial_port_is_one_clear_line() -> None:
    result = gwtool("read", "--port", "/dev/ttyDOESNOTEXIST", "--address", "000102030425", "--di", "00010000")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open serial port /dev/ttyDOESNOTEXIST" in lines[0]


@pytest.fixture
def line():  # type: ignore[no-untyped-def]
    clock = ManualClock(0.0)
    with run_dlt645_line(["000000000011", "000000000012"], baudrate=2400, clock=clock) as rig:
        yield rig


def test_read_returns_the_simulators_register_exactly(line) -> None:  # type: ignore[no-untyped-def]
    expected = line.meters["000000000012"].sim.snapshot().values()["energy.active.import.total"]
    result = gwtool("read", "--port", line.device, "--address", "000000000012", "--di", "00010000",
                    "--parity", "N", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Decimal(out["readings"][0]["value"]) == expected
    assert str(expected) == out["readings"][0]["value"]  # same digits, not just equal value


def test_read_refusal_and_silence_are_reported(line) -> None:  # type: ignore[no-untyped-def]
    refused = gwtool("read", "--port", line.device, "--address", "000000000011", "--di", "0EEE0000",
                     "--parity", "N")
    assert refused.returncode == 1 and "no_data" in refused.stderr
    silent = gwtool("read", "--port", line.device, "--address", "000000000099", "--di", "00010000",
                    "--parity", "N", "--timeout-ms", "300")
    assert silent.returncode == 1 and (
        "meter 000000000099: no reply after 1 try at 2400 8N1 — check wiring, address and baud"
        in silent.stderr)


def test_discover_finds_every_meter_on_a_shared_line(line) -> None:  # type: ignore[no-untyped-def]
    result = gwtool("discover", "--port", line.device, "--parity", "N", "--bauds", "2400",
                    "--addresses", "000000000010-000000000013", "--timeout-ms", "300", "--json")
    assert result.returncode == 0, result.stderr
    found = {f["address"] for f in json.loads(result.stdout)}
    assert found == {"000000000011", "000000000012"}


def test_discover_single_meter_by_wildcard() -> None:
    with run_dlt645_line(["000000000042"], baudrate=2400, clock=ManualClock(0.0)) as rig:
        result = gwtool("discover", "--port", rig.device, "--parity", "N", "--bauds", "2400", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"address": "000000000042", "baud": 2400, "method": "wildcard"}]
