"""gwtool's blocking link and the daemon's asyncio bus task run the same exchange driver, so on the
same byte stream they must write the same frames and end the same way (issue 11: they had drifted).

Each fake port replays a script: for the n-th request written, which chunks arrive and when.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal

import pytest

from firmware_tools.meter_link import SerialSettings, run_transaction
from gateway.acquisition.base import BusSettings
from gateway.acquisition.dlt645_bus import Dlt645Bus
from protocols import dlt645 as d
from protocols.dlt645.transaction import Answered

ADDR = "000102030425"
OTHER = "000102030426"
DI = 0x00010000
BAUD = 9600
TIMEOUT_S = 0.15
GOOD = d.encode(d.build_read_reply(ADDR, DI, [Decimal("12.34")]))
STRAY = d.encode(d.build_read_reply(OTHER, DI, [Decimal("56.78")]))
GARBLED = d.encode(d.ReadReply(ADDR, DI, b"\x12"))
REFUSAL = d.encode(d.ErrorReply(ADDR, "read_data", 0x02, ("no_data",)))
NOISE = b"\x00\xff\x68\x12\x34\x16\x55\x68"

Script = Sequence[Sequence[tuple[float, bytes]]]  # per request written: (delay after the write, bytes)

SCENARIOS: dict[str, Script] = {
    "stray frame, then silence": [[(0.01, STRAY)], [(0.01, STRAY)]],
    "timeout": [[], []],
    "garbage then good reply": [[(0.005, NOISE), (0.02, GOOD)]],
    "garbled reply, good on retry": [[(0.01, GARBLED)], [(0.01, GOOD)]],
    "garbled reply twice": [[(0.01, GARBLED)], [(0.01, GARBLED)]],
    "timeout, then reply split in two": [[], [(0.01, GOOD[:6]), (0.03, GOOD[6:])]],
    "refusal": [[(0.01, REFUSAL)]],
}


class ScriptedLine:
    """The far end of the wire, shared by both fake ports."""

    def __init__(self, script: Script) -> None:
        self.script = list(script)
        self.written: list[bytes] = []
        self.pending: list[tuple[float, bytes]] = []

    def on_write(self, frame: bytes) -> None:
        now = time.monotonic()
        replies = self.script[len(self.written)] if len(self.written) < len(self.script) else []
        self.written.append(frame)
        self.pending += [(now + delay, chunk) for delay, chunk in replies]
        self.pending.sort(key=lambda item: item[0])

    def take_due(self) -> bytes:
        now = time.monotonic()
        due = [chunk for at, chunk in self.pending if at <= now]
        self.pending = [(at, chunk) for at, chunk in self.pending if at > now]
        return b"".join(due)

    def next_due(self) -> float:
        return self.pending[0][0] if self.pending else float("inf")


class BlockingPort:
    """What meter_link uses of a pyserial port (20 ms read timeout, as open_port sets)."""

    def __init__(self, line: ScriptedLine) -> None:
        self.line = line

    def reset_input_buffer(self) -> None:
        self.line.take_due()

    def write(self, frame: bytes) -> None:
        self.line.on_write(frame)

    def flush(self) -> None:
        pass

    def read(self, size: int) -> bytes:
        time.sleep(max(0.0, min(0.02, self.line.next_due() - time.monotonic())))
        return self.line.take_due()


class AsyncPort:
    """What the bus task uses of AsyncSerialPort."""

    baudrate = BAUD
    parity = "E"
    port_name = "fake"

    def __init__(self, line: ScriptedLine) -> None:
        self.line = line
        self.last_rx = 0.0

    def wire_time(self, nbytes: int) -> float:
        return nbytes * 11 / self.baudrate

    def discard_input(self) -> int:
        return len(self.line.take_due())

    def write(self, frame: bytes) -> None:
        self.line.on_write(frame)

    async def read_some(self, timeout: float) -> bytes:
        await asyncio.sleep(max(0.0, min(timeout, self.line.next_due() - time.monotonic())))
        data = self.line.take_due()
        if data:
            self.last_rx = time.monotonic()
        return data


def _outcome(run: object) -> tuple[object, ...]:
    if isinstance(run, Exception):
        text = str(run).replace(" on fake", "")
        return (type(run).__name__, getattr(run, "attempts", None), text)
    assert isinstance(run, Answered)
    return ("answered", run.attempts, tuple(r.value for r in run.readings))


def _via_gwtool(script: Script) -> tuple[tuple[object, ...], list[bytes]]:
    line = ScriptedLine(script)
    settings = SerialSettings(port="fake", baudrate=BAUD, parity="E", timeout_s=TIMEOUT_S, retries=1)
    try:
        outcome = _outcome(run_transaction(BlockingPort(line), d.ReadRequest(ADDR, DI), settings))  # type: ignore[arg-type]
    except (d.ExceptionReply, d.TransactionError) as exc:
        outcome = _outcome(exc)
    return outcome, line.written


def _via_bus(script: Script) -> tuple[tuple[object, ...], list[bytes]]:
    line = ScriptedLine(script)
    bus = Dlt645Bus("t", AsyncPort(line), [], asyncio.Queue(), BusSettings(  # type: ignore[arg-type]
        timeout_s=TIMEOUT_S, retries=1, retry_backoff_s=0.05, turnaround_s=0.02))
    try:
        outcome = _outcome(asyncio.run(bus.send_priority(d.ReadRequest(ADDR, DI))))
    except (d.ExceptionReply, d.TransactionError) as exc:
        outcome = _outcome(exc)
    return outcome, line.written


EXPECTED = {
    "stray frame, then silence": ("StrayReply", 2, "meter 000102030425: no reply after 2 tries at "
                                  "9600 8E1, but 000102030426 answered — check the address"),
    "timeout": ("NoReply", 2, "meter 000102030425: no reply after 2 tries at 9600 8E1 — check "
                "wiring, address and baud"),
    "garbage then good reply": ("answered", 1, (Decimal("12.34"),)),
    "garbled reply, good on retry": ("answered", 2, (Decimal("12.34"),)),
    "timeout, then reply split in two": ("answered", 2, (Decimal("12.34"),)),
    "garbled reply twice": ("GarbledReply", 2, "meter 000102030425: unusable reply after 2 tries at "
                            "9600 8E1: DI 00010000 (energy.active.import.total) needs 4 bytes, got 1 "
                            "— check baud, parity and line noise"),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_both_shells_end_the_same_way_on_the_same_byte_stream(name: str) -> None:
    gwtool_outcome, gwtool_written = _via_gwtool(SCENARIOS[name])
    bus_outcome, bus_written = _via_bus(SCENARIOS[name])
    assert gwtool_outcome == bus_outcome
    assert gwtool_written == bus_written  # same requests, same retries
    if name in EXPECTED:
        assert gwtool_outcome == EXPECTED[name]
    else:
        assert gwtool_outcome[0] == "ExceptionReply" and "no_data" in str(gwtool_outcome[2])
