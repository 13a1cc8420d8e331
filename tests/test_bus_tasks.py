"""Bus tasks in-process against simulated meters: priority lane, follow-ups, Modbus RTU, overruns."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal

import pytest

from gateway.acquisition.base import BusSettings
from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter, PlannedRead
from gateway.acquisition.modbus_bus import ModbusBus, make_meter
from gateway.acquisition.poll_result import PollResult
from gateway.acquisition.schedule import PollSchedule
from gateway.acquisition.serial_port import AsyncSerialPort, SerialPortError
from hil_tests.load_model import LoadModel, ManualClock
from hil_tests.modbus_sim import SimulatedModbusMeter, start_modbus_rtu_meters
from hil_tests.sim import run_dlt645_line
from protocols import dlt645 as d
from protocols.dlt645.transaction import Answered
from protocols.profiles import load_named_profile

ADDRS = ["000000000201", "000000000202", "000000000203"]


def _bus(device: str, interval: float, baud: int = 9600) -> tuple[Dlt645Bus, asyncio.Queue]:  # type: ignore[type-arg]
    queue: asyncio.Queue = asyncio.Queue(maxsize=100)  # type: ignore[type-arg]
    now = time.monotonic()
    meters = [Dlt645Meter(meter_id=f"m{i}", address=a, schedule=PollSchedule(interval, now),
                          reads=[PlannedRead(d.ReadRequest(a, 0x0001FF00)),
                                 PlannedRead(d.ReadRequest(a, 0x0201FF00))])
              for i, a in enumerate(ADDRS)]
    bus = Dlt645Bus("t", AsyncSerialPort(device, baud, "N"), meters, queue,
                    BusSettings(timeout_s=0.3, retries=1))
    return bus, queue


def test_priority_frame_goes_out_before_the_next_routine_read() -> None:
    clock = ManualClock(0.0)
    with run_dlt645_line(ADDRS, baudrate=9600, clock=clock) as line:
        async def scenario() -> tuple[float, Answered]:
            bus, queue = _bus(line.device, 0.01)  # overloaded: routine reads always due
            task = asyncio.create_task(bus.run())
            await asyncio.sleep(1.0)
            start_tx = bus.stats.transactions
            t0 = time.monotonic()
            valid = dt.datetime(2000 + 26, 1, 1) + dt.timedelta(days=3650)
            future = bus.submit_priority(d.ControlRequest(ADDRS[1], d.ControlAction.TRIP, valid))
            tx = await asyncio.wait_for(future, 5)
            waited = time.monotonic() - t0
            routine_between = bus.stats.transactions - start_tx - 1
            bus.stop()
            await task
            assert routine_between <= 1, "at most the in-flight routine read may go first"
            return waited, tx

        waited, tx = asyncio.run(scenario())
        assert isinstance(tx, Answered) and tx.attempts == 1 and tx.replies
        assert waited < 0.5
        assert line.meters[ADDRS[1]].sim.snapshot().status.relay_open
        assert not line.meters[ADDRS[0]].sim.snapshot().status.relay_open


def test_confirmation_read_follows_its_control_frame_with_no_routine_read_between() -> None:
    """A trip is confirmed by reading status word 3 right after it; the bus must let the caller
    queue that read before it starts another routine exchange (~0.3 s at 2400 baud)."""
    with run_dlt645_line(ADDRS, baudrate=9600, clock=ManualClock(0.0)) as line:
        async def scenario() -> list[int]:
            bus, _queue = _bus(line.device, 0.01)  # overloaded: routine reads always due
            task = asyncio.create_task(bus.run())
            await asyncio.sleep(0.5)
            valid = dt.datetime(2026, 1, 1) + dt.timedelta(days=3650)
            between = []
            for action in (d.ControlAction.TRIP, d.ControlAction.DIRECT_CLOSE) * 3:
                await asyncio.sleep(0.05)  # somewhere inside a routine exchange
                await bus.submit_priority(d.ControlRequest(ADDRS[1], action, valid))
                after_control = bus.stats.transactions
                await bus.submit_priority(d.ReadRequest(ADDRS[1], 0x04000503))
                between.append(bus.stats.transactions - after_control - 1)
            bus.stop()
            await task
            return between

        assert asyncio.run(scenario()) == [0] * 6


def test_control_frame_queued_during_the_turnaround_goes_before_the_routine_request() -> None:
    """The gap between two exchanges belongs to the priority lane: a frame queued while the bus
    waits out the master turnaround before its next routine request goes before that request
    (before issue 17 it waited for the whole routine exchange as well)."""
    with run_dlt645_line(ADDRS, baudrate=9600, clock=ManualClock(0.0)) as line:
        def requests_seen() -> int:
            return sum(s.requests_seen for s in line.stats.values())

        async def scenario() -> list[int]:
            bus, _queue = _bus(line.device, 0.01)  # overloaded: routine reads always due
            bus.settings.turnaround_s = 0.25  # a wide gap, so the test lands in it every time
            task = asyncio.create_task(bus.run())
            await asyncio.sleep(0.5)
            between = []
            for _ in range(4):
                done = bus.stats.transactions
                while bus.stats.transactions == done:  # a routine exchange has just ended ...
                    await asyncio.sleep(0.001)
                before = requests_seen()  # ... and the bus waits out the turnaround
                await bus.submit_priority(d.ReadRequest(ADDRS[1], 0x04000503))
                between.append(requests_seen() - before - 1)
            bus.stop()
            await task
            return between

        assert asyncio.run(scenario()) == [0] * 4


def test_control_frame_waits_for_one_silent_attempt_not_for_its_retry() -> None:
    """A silent meter costs a timeout per attempt; a trip queued during the first attempt goes
    out before the retry, so it waits one timeout at most, not timeouts x attempts."""
    with run_dlt645_line(ADDRS, baudrate=9600, clock=ManualClock(0.0)) as line:
        line.set_faults(ADDRS[0], no_reply=True)

        async def scenario() -> tuple[int, int]:
            queue: asyncio.Queue = asyncio.Queue(maxsize=100)  # type: ignore[type-arg]
            silent = Dlt645Meter(meter_id="m0", address=ADDRS[0],
                                 schedule=PollSchedule(0.01, time.monotonic()),
                                 reads=[PlannedRead(d.ReadRequest(ADDRS[0], 0x0001FF00))])
            bus = Dlt645Bus("t", AsyncSerialPort(line.device, 9600, "N"), [silent], queue,
                            BusSettings(timeout_s=0.3, retries=1))
            task = asyncio.create_task(bus.run())
            # Wait for a first attempt: polls make two attempts, so an odd count is a first one.
            seen = 0
            while seen % 2 == 0:
                await asyncio.sleep(0.002)
                seen = line.stats[ADDRS[0]].requests_seen
            valid = dt.datetime(2026, 1, 1) + dt.timedelta(days=3650)
            await bus.submit_priority(d.ControlRequest(ADDRS[1], d.ControlAction.TRIP, valid))
            sent = line.stats[ADDRS[0]].requests_seen
            bus.stop()
            await task
            return seen, sent

        seen, sent = asyncio.run(scenario())
        assert sent == seen, "the retry of the silent meter went out before the trip"


def test_polls_report_values_and_overruns_are_counted_not_queued() -> None:
    clock = ManualClock(0.0)
    with run_dlt645_line(ADDRS, baudrate=2400, clock=clock) as line:
        async def scenario() -> tuple[list[PollResult], int, int]:
            bus, queue = _bus(line.device, 0.05, baud=2400)  # due ~10x faster than the bus allows
            task = asyncio.create_task(bus.run())
            results: list[PollResult] = []
            t_end = time.monotonic() + 4
            while time.monotonic() < t_end:
                try:
                    results.append(await asyncio.wait_for(queue.get(), 0.5))
                except TimeoutError:
                    pass
            bus.stop()
            await task
            return results, bus.overruns, queue.qsize()

        results, overruns, left = asyncio.run(scenario())
        assert results and all(r.ok for r in results)
        expected = line.meters[ADDRS[0]].sim.snapshot().values()["energy.active.import.total"]
        first = next(r for r in results if r.meter_id == "m0")
        values = {v.quantity: v.value for v in first.values}
        assert values["energy.active.import.total"] == expected
        assert overruns > 10  # counted ...
        assert left <= 1      # ... not queued (at most the poll finished after we stopped reading)


def test_missing_serial_port_is_a_clear_error() -> None:
    async def scenario() -> None:
        port = AsyncSerialPort("/dev/ttyNOSUCH", 2400, "E")
        port.open()

    with pytest.raises(SerialPortError, match="cannot open serial port /dev/ttyNOSUCH"):
        asyncio.run(scenario())


def test_modbus_rtu_bus_reads_merged_blocks() -> None:
    async def scenario() -> tuple[PollResult, dict[str, Decimal], int]:
        model = LoadModel(seed=5, clock=ManualClock(0.0))
        profile = load_named_profile("sdm630")
        sim = SimulatedModbusMeter(3, profile, model.meter("rtu-3"))  # type: ignore[arg-type]
        handle = await start_modbus_rtu_meters([sim], 9600)
        try:
            queue: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
            meter = make_meter("rtu-3", 3, profile, PollSchedule(3600, time.monotonic()))  # type: ignore[arg-type]
            bus = ModbusBus("rtu", [meter], queue, BusSettings(timeout_s=1.0, retries=1),
                            serial={"port": handle.device_path, "baudrate": 9600, "parity": "N",
                                    "bytesize": 8, "stopbits": 1})
            await bus.open()
            try:
                result = await bus.poll(meter)
            finally:
                await bus.close()
            return result, sim.meter.snapshot().values(), len(handle.requests_for(3))
        finally:
            await handle.close()

    result, expected, requests = asyncio.run(scenario())
    assert result.ok, result.errors
    values = {v.quantity: v.value for v in result.values}
    assert values["energy.active.import.total"] == expected["energy.active.import.total"]
    assert requests <= 3  # merged register reads, not one request per quantity
