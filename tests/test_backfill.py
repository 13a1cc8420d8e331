"""Backfill pieces: the board of owed intervals, interval ↔ record time, and the DL/T 645 bus task
reading a meter's load records back (in-process, a simulated meter on a real pty)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time

import pytest

from gateway.acquisition.backfill import BackfillBoard, boundary_local, interval_closed_by
from gateway.acquisition.base import BusSettings
from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter, PlannedRead
from gateway.acquisition.poll_result import IntervalRecords
from gateway.acquisition.schedule import PollSchedule
from gateway.acquisition.serial_port import AsyncSerialPort
from hil_tests.load_model import DEFAULT_START_EPOCH, ManualClock
from hil_tests.sim import MeterSpec, run_dlt645_line
from protocols import dlt645 as d

ADDRS = ["000000000301", "000000000302", "000000000303"]
START_LOCAL = dt.datetime(2025, 1, 1, 0, 0)  # DEFAULT_START_EPOCH in the meters' UTC+8


@pytest.mark.parametrize("moment", [dt.datetime(2026, 11, 21, 0, 15), dt.datetime(2026, 1, 1, 0, 0),
                                    dt.datetime(1970, 1, 1, 0, 15)])
def test_interval_and_record_time_are_inverse(moment: dt.datetime) -> None:
    interval = interval_closed_by(moment)
    assert interval is not None and boundary_local(interval) == moment
    # the engine's numbering: local day × 96 + quarter-hour of the interval's start
    start = moment - dt.timedelta(minutes=15)
    assert interval == (start.date() - dt.date(1970, 1, 1)).days * 96 + (
        start.hour * 4 + start.minute // 15)


def test_records_off_the_quarter_hour_name_no_interval() -> None:
    assert interval_closed_by(dt.datetime(2026, 1, 1, 0, 5)) is None


def test_board_owes_only_for_registered_meters_and_bounds_each_transaction() -> None:
    board = BackfillBoard(max_records=3, max_age_intervals=10)
    board.meters.add("m-1")
    for interval in (100, 101, 102, 103, 107):
        board.want("m-1", interval)
    assert board.next_span("m-2") is None
    assert board.next_span("m-1") == (100, 3)
    board.settle("m-1", 100, 3)
    assert board.next_span("m-1") == (103, 1)  # 107 is beyond max_records from 103
    board.settle("m-1", 103, 1)
    assert board.next_span("m-1") == (107, 1)
    board.forget_before(118)  # 107 < 118 - 10: too old, stays an estimate
    assert board.owed("m-1") == [] and board.next_span("m-1") is None


def _meter(address: str, index: int, load_records: bool) -> Dlt645Meter:
    return Dlt645Meter(meter_id=f"m{index}", address=address,
                       schedule=PollSchedule(1.0, time.monotonic()),
                       reads=[PlannedRead(d.ReadRequest(address, 0x0001FF00))],
                       load_records=load_records)


def test_bus_reads_owed_intervals_back_after_an_answered_poll() -> None:
    clock = ManualClock(0.0)
    specs = [MeterSpec(ADDRS[0]), MeterSpec(ADDRS[1]), MeterSpec(ADDRS[2], version=1997)]
    with run_dlt645_line(specs, baudrate=9600, clock=clock) as line:
        clock.advance(2 * 3600 + 30)  # two hours measured and recorded
        owed = [interval_closed_by(START_LOCAL + dt.timedelta(minutes=15 * k)) for k in (2, 3, 4, 5)]

        async def scenario() -> tuple[list[IntervalRecords], BackfillBoard, list[bool]]:
            queue: asyncio.Queue = asyncio.Queue(maxsize=100)  # type: ignore[type-arg]
            meters = [_meter(ADDRS[0], 0, True), _meter(ADDRS[1], 1, False),
                      _meter(ADDRS[2], 2, True)]
            meters[2].version = d.Version.V1997
            bus = Dlt645Bus("t", AsyncSerialPort(line.device, 9600, "N"), meters, queue,
                            BusSettings(timeout_s=0.3, retries=0))
            board = BackfillBoard(max_records=3)
            bus.attach_backfill(board)
            assert board.meters == {"m0"}  # -1997 and profiles without load records: never
            for interval in owed:
                assert interval is not None
                board.want("m0", interval)
            await bus.open()
            try:
                line.set_faults(ADDRS[0], no_reply=True)
                silent = await bus.poll(meters[0])  # silent: nothing read back, still owed
                line.set_faults(ADDRS[0])
                oks = [silent.ok]
                requests = [line.stats[ADDRS[0]].requests_seen]
                for _ in range(3):
                    oks.append((await bus.poll(meters[0])).ok)
                    requests.append(line.stats[ADDRS[0]].requests_seen)
            finally:
                await bus.close()
            # The longest poll read is the energy block (20 + 36 bytes on the wire): a read-back
            # of more than one record would hold the line longer, so each record is its own
            # exchange (the priority lane goes between them) and a poll still reads K of them.
            assert bus.longest_read_bytes == 56 and bus.records_per_read(ADDRS[0]) == 1
            assert [b - a for a, b in itertools.pairwise(requests)] == [1 + 3, 1 + 1, 1]
            found = []
            while not queue.empty():
                item = queue.get_nowait()
                assert isinstance(item, IntervalRecords)
                found.append(item)
            return found, board, oks

        found, board, oks = asyncio.run(scenario())
        assert oks == [False, True, True, True]
        # K = 3: two transactions for four owed intervals, none once they are settled
        assert [len(item.records) for item in found] == [3, 1]
        assert board.owed("m0") == []
        got = dict(r for item in found for r in item.records)
        sim = line.meters[ADDRS[0]].sim
        stored = {round(e.at): e.import_ for e in sim.load_records(DEFAULT_START_EPOCH, 100)}
        for interval in owed:
            assert interval is not None
            at = DEFAULT_START_EPOCH + (boundary_local(interval) - START_LOCAL).total_seconds()
            assert got[interval] == stored[round(at)]


def test_profiles_say_which_meters_keep_load_records() -> None:
    from protocols.profiles import ProfileError, load_named_profile, parse_profile

    assert getattr(load_named_profile("dlt645-2007"), "load_records", None) is True
    assert getattr(load_named_profile("dlt645-1997"), "load_records", None) is False
    text = 'kind = "dlt645"\nversion = "1997"\nload_records = true\n[[reads]]\ndi = "9010"\n'
    with pytest.raises(ProfileError, match=r"load_records: load records .* DL/T 645-2007 only"):
        parse_profile(text, name="old-meter")
