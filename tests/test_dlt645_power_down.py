"""Power-down records (DL/T 645-2007 A.4: 03110000 count, 03110001..0311000A the last 10 records,
start and end YYMMDDhhmmss): the codec round trip, and the simulated meters keeping them across
power cuts made with the line's cut/restore knob (issue 14)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from hil_tests.load_model import ManualClock
from hil_tests.sim import Dlt645Rig, run_dlt645_line
from protocols import dlt645 as d
from tests.dlt645_client import Dlt645Client

ADDR = "000000000007"
A1, A2 = "000000000001", "000000000002"
START_LOCAL = dt.datetime(2025, 1, 1, 0, 0, 0)  # DEFAULT_START_EPOCH in the meters' UTC+8


def test_power_down_count_round_trips() -> None:
    reply = d.decode(d.encode(d.build_read_reply(ADDR, 0x03110000, [Decimal(123456)])))
    assert isinstance(reply, d.ReadReply)
    assert reply.data == bytes([0x56, 0x34, 0x12])  # XXXXXX, LSB first
    assert [(r.name, r.value, r.unit) for r in reply.readings] == [
        ("events.power_down.count", Decimal(123456), "count")]


@pytest.mark.parametrize("n", range(1, 11))
def test_power_down_records_round_trip(n: int) -> None:
    start, end = dt.datetime(2026, 3, 9, 23, 59, 58), dt.datetime(2026, 3, 10, 0, 1, 2)
    di = 0x03110000 | n
    reply = d.decode(d.encode(d.build_read_reply(ADDR, di, [start, end])))
    assert isinstance(reply, d.ReadReply) and reply.di == di
    # YYMMDDhhmmss, sent least significant byte (seconds) first.
    assert reply.data == bytes.fromhex("58 59 23 09 03 26 02 01 00 10 03 26")
    assert [(r.name, r.value) for r in reply.readings] == [
        (f"events.power_down.last{n}.start", start), (f"events.power_down.last{n}.end", end)]


def test_only_ten_records_are_declared() -> None:
    assert d.CATALOGUE_2007.lookup(0x0311000A) is not None
    assert d.CATALOGUE_2007.lookup(0x0311000B) is None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rig(clock: ManualClock) -> Iterator[Dlt645Rig]:
    with run_dlt645_line([A1, A2], baudrate=9600, response_delay_ms=20, seed=3,
                         clock=clock) as running:
        yield running


def record(rig: Dlt645Rig, address: str, n: int) -> list[object]:
    data = rig.meters[address].read(0x03110000 | n)
    assert data is not None
    return [r.value for r in d.CATALOGUE_2007.decode(0x03110000 | n, data)]


def test_cut_meters_are_silent_and_keep_ten_records_across_cuts(rig: Dlt645Rig,
                                                                clock: ManualClock) -> None:
    with Dlt645Client(rig.device, 9600) as client:
        assert client.request(d.ReadRequest(A1, 0x04000401), timeout=0.5) is not None
        clock.advance(100)
        rig.cut_power()  # the whole line
        assert client.request(d.ReadRequest(A1, 0x04000401), timeout=0.3) is None
        assert client.request(d.ReadRequest(A2, 0x04000401), timeout=0.3) is None
        clock.advance(50)
        rig.restore_power()
        reply = client.request(d.ReadRequest(A1, 0x03110001), timeout=0.5)
        assert isinstance(reply, d.ReadReply)
        assert [r.value for r in reply.readings] == [START_LOCAL + dt.timedelta(seconds=100),
                                                     START_LOCAL + dt.timedelta(seconds=150)]
    # Eleven more cuts of A1 alone, 10 minutes apart, each 60 s long.
    for _ in range(11):
        clock.advance(540)
        rig.cut_power(A1)
        clock.advance(60)
        rig.restore_power(A1)
    count = rig.meters[A1].read(0x03110000)
    assert count is not None
    assert d.CATALOGUE_2007.decode(0x03110000, count)[0].value == Decimal(12)
    assert record(rig, A2, 0)[0] == Decimal(1)  # A2 was cut once, with the line
    first_cut_end = 150
    for n in range(1, 11):  # newest first: record n is cut 12 - n + 1 (1-based)
        cut = 11 - n  # index of the later cuts, 10 .. 1
        start = first_cut_end + cut * 600 + 540
        assert record(rig, A1, n) == [START_LOCAL + dt.timedelta(seconds=start),
                                      START_LOCAL + dt.timedelta(seconds=start + 60)]
    assert record(rig, A2, 2) == [None, None]  # never happened
