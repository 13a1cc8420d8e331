"""How a bus's workers share its schedule (gateway/acquisition/base.py): meters due together are
dispatched once each, in schedule order, at most ``concurrency`` at a time, without handing the
dispatch lock from worker to worker; the lock is for waiting, and a control frame still goes
before the meters due with it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from gateway.acquisition.base import BusSettings, MeterSlot, ScheduledBus
from gateway.acquisition.poll_result import PollResult
from gateway.acquisition.schedule import PollSchedule


class CountingLock(asyncio.Lock):
    """asyncio.Lock that counts its acquisitions."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired = 0

    async def acquire(self) -> Literal[True]:
        self.acquired += 1
        return await super().acquire()


class FakeBus(ScheduledBus[MeterSlot]):
    """Polls take ``poll_s``; what happened is in ``events``."""

    def __init__(self, meters: list[MeterSlot], workers: int, poll_s: float) -> None:
        super().__init__("fake", meters, asyncio.Queue(), BusSettings(concurrency=workers))
        self.poll_s = poll_s
        self.events: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def poll(self, meter: MeterSlot) -> PollResult:
        self.events.append(("poll", meter.meter_id))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.poll_s)
        self.in_flight -= 1
        return PollResult(meter.meter_id, self.name, 0, 0, True)

    async def send_priority(self, message: Any) -> Any:
        self.events.append(("priority", str(message)))
        return message


def _meters(count: int, interval: float) -> list[MeterSlot]:
    now = time.monotonic()
    return [MeterSlot(f"m{i:02}", str(i), PollSchedule(interval, now)) for i in range(count)]


def test_meters_due_together_go_once_each_in_order_without_passing_the_lock_around() -> None:
    async def main() -> tuple[FakeBus, CountingLock]:
        bus = FakeBus(_meters(40, 3600.0), workers=8, poll_s=0.01)
        lock = bus._dispatch = CountingLock()
        task = asyncio.create_task(bus.run())
        await asyncio.sleep(0.3)
        bus.stop()
        await task
        return bus, lock

    bus, lock = asyncio.run(main())
    assert bus.events == [("poll", f"m{i:02}") for i in range(40)]
    assert bus.most_in_flight == 8
    # each worker takes the lock to wait once the due meters are gone (and again at most when
    # the watchdog second or the stop wakes it), not once per poll
    assert lock.acquired <= 2 * 8 < 40


def test_a_control_frame_goes_before_the_meters_due_with_it() -> None:
    async def main() -> FakeBus:
        bus = FakeBus(_meters(20, 3600.0), workers=2, poll_s=0.01)
        task = asyncio.create_task(bus.serve())
        await asyncio.sleep(0)
        future = bus.submit_priority("trip")
        assert await asyncio.wait_for(future, 1.0) == "trip"
        await asyncio.sleep(0.2)
        bus.stop()
        await task
        return bus

    bus = asyncio.run(main())
    assert bus.events[0] == ("priority", "trip")
    assert sorted(bus.events[1:]) == [("poll", f"m{i:02}") for i in range(20)]
