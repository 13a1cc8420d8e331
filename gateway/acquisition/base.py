"""What every bus task shares: the schedule loop, the priority lane, comm-loss alarms, shutdown.

A subclass says how to open its line, poll one meter and send one priority frame; this class decides
*when*. ``concurrency`` is 1 for a half-duplex serial line (one transaction at a time) and > 1 for
Modbus TCP, where independent devices can be polled in parallel, with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar

from gateway.acquisition.errors import AcquisitionError
from gateway.acquisition.poll_result import BusEvent, PollResult
from gateway.acquisition.schedule import PollSchedule, probe_set
from gateway.acquisition.stats import BusStats, MeterStats

if TYPE_CHECKING:
    from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter

#: Imported by the factory when it builds a DL/T 645 bus, and only then (docs/performance.md, Memory).
_DLT645_BUS = "gateway.acquisition.dlt645_bus"


def is_dlt645_bus(bus: object) -> TypeGuard[Dlt645Bus]:
    """``isinstance(bus, Dlt645Bus)`` without importing the DL/T 645 bus and codec (about 4 MiB) in
    a gateway that has none: no object can be a ``Dlt645Bus`` before its module is imported."""
    module = sys.modules.get(_DLT645_BUS)
    return module is not None and isinstance(bus, module.Dlt645Bus)


def is_dlt645_meter(slot: object) -> TypeGuard[Dlt645Meter]:
    """``isinstance(slot, Dlt645Meter)``, the same way as :func:`is_dlt645_bus`."""
    module = sys.modules.get(_DLT645_BUS)
    return module is not None and isinstance(slot, module.Dlt645Meter)


class BusTimeout(AcquisitionError):
    """No (usable) reply before the deadline."""


class PriorityLaneFull(AcquisitionError):
    """The bus's priority lane is full; the caller must retry later (never queued unboundedly)."""


@dataclass
class BusSettings:
    timeout_s: float = 0.5
    turnaround_s: float = 0.020
    retries: int = 1
    retry_backoff_s: float = 0.05
    comm_loss_after: int = 3
    priority_limit: int = 16
    concurrency: int = 1


@dataclass
class MeterSlot:
    """Scheduling state of one meter on a bus (subclasses add protocol details)."""

    meter_id: str
    address: str
    schedule: PollSchedule
    stats: MeterStats = field(default_factory=MeterStats)
    comm_lost: bool = False
    in_flight: bool = False


M = TypeVar("M", bound=MeterSlot)

#: How soon a meter that missed a poll is polled again (with its phase neighbours): long enough
#: for a frame lost to noise to pass, short enough that a meter outage is suspected within
#: seconds of the missed poll (docs/outages.md, "Meter and phase outages").
REPROBE_DELAY_S = 1.0


@dataclass
class PriorityItem:
    message: Any
    future: asyncio.Future[Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ScheduledBus(ABC, Generic[M]):
    """Owns one bus. ``outbound`` receives :class:`PollResult` and :class:`BusEvent` items (bounded:
    when the committer falls behind, the bus waits rather than grows a backlog in memory)."""

    def __init__(self, name: str, meters: list[M], outbound: asyncio.Queue[PollResult | BusEvent],
                 settings: BusSettings) -> None:
        self.name = name
        self.meters = meters
        self.outbound = outbound
        self.settings = settings
        self.stats = BusStats()
        self._priority: asyncio.Queue[PriorityItem] = asyncio.Queue(settings.priority_limit)
        self._wakeup = asyncio.Event()
        self._dispatch = asyncio.Lock()
        self._stopping = False
        self.progress = time.monotonic()  # last time the loop did something (for the watchdog)
        # Idle meters by next due time: picking the next poll costs O(log n), not a scan of every
        # meter per dispatch (100 Modbus meters at 1 s = 100 dispatches/s). The index breaks
        # ties in configuration order. Meters in flight are not in it; they return when done.
        self._index = {id(m): i for i, m in enumerate(meters)}
        self._idle: list[tuple[float, int, M]] = []
        self._overruns = 0
        #: Why the line cannot be used now (None while it is open or not tried yet): health
        #: shows the bus down while this is set.
        self.line_error: str | None = None
        #: ``phase`` of the bus's meters that have one, in configuration order (set by the
        #: runtime): a meter that misses a poll is re-probed with its phase neighbours.
        self.phases: dict[str, str] = {}

    # -- subclass interface ---------------------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def poll(self, meter: M) -> PollResult: ...

    @abstractmethod
    async def send_priority(self, message: Any) -> Any: ...

    def describe_link(self) -> str:
        return self.name

    def attach_backfill(self, board: Any) -> None:
        """VEE's board of estimated intervals to read back (gateway/acquisition/backfill.py). Only DL/T
        645-2007 meters keep load records; buses of other protocols keep today's estimates."""

    # -- public ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish in-flight transactions, then return from :meth:`run`."""
        self._stopping = True
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def line_down(self, error: str) -> None:
        """The line cannot be used (open failed, or it failed while serving): the bus shows as
        down in health — success ratio 0, every meter unreachable — until :meth:`line_up`."""
        self.line_error = error

    def line_up(self) -> None:
        self.line_error = None

    async def pause(self, seconds: float) -> None:
        """Wait before retrying the line; returns early when the bus is asked to stop. The wait
        counts as progress: the retry loop is alive."""
        self.progress = time.monotonic()
        await self._sleep(seconds)
        self.progress = time.monotonic()

    def submit_priority(self, message: Any) -> asyncio.Future[Any]:
        """Queue a control frame ahead of routine reads; the future resolves with its outcome."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            self._priority.put_nowait(PriorityItem(message, future))
        except asyncio.QueueFull:
            raise PriorityLaneFull(f"bus {self.name}: priority lane full "
                                   f"({self.settings.priority_limit} frames waiting)") from None
        self._wakeup.set()
        return future

    @property
    def overruns(self) -> int:
        """Slots that passed unserved, over all meters (kept as a running total)."""
        return self._overruns

    def health(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        rate, ratio = self.stats.rate(now)
        down = self.line_error is not None
        return {
            # A bus whose line cannot be opened has made no transaction, and none succeeded.
            "state": "down" if down else "up", "line_error": self.line_error,
            "transactions_per_s": round(rate, 3), "success_ratio": 0.0 if down else round(ratio, 4),
            "transactions": self.stats.transactions, "timeouts": self.stats.timeouts,
            "overruns": self.overruns, "priority_frames": self.stats.priority_frames,
            "comm_lost": sorted(m.meter_id for m in self.meters if m.comm_lost),
            "unreachable": sorted(m.meter_id for m in self.meters) if down else [],
            # Per-meter counters, compact: [polls, ok, failed, timeouts, retries, poll ms].
            "meters": {m.meter_id: [m.stats.polls, m.stats.polls_ok, m.stats.polls_failed,
                                    m.stats.timeouts, m.stats.retries,
                                    round(m.stats.last_poll_s * 1000)] for m in self.meters},
        }

    async def run(self) -> None:
        """Open the line and serve the schedule until stopped."""
        await self.open()
        await self.serve()

    async def serve(self) -> None:
        """Serve the schedule on an opened line until stopped; closes the line when it ends."""
        self._idle = [(m.schedule.next_due, i, m) for i, m in enumerate(self.meters)
                      if not m.in_flight]
        heapq.heapify(self._idle)
        self._overruns = sum(m.schedule.overruns for m in self.meters)
        try:
            # ``concurrency`` workers share the schedule: one for a half-duplex line, a bounded
            # few for Modbus TCP. A worker per slot, not a task per poll, keeps a hundred polls a
            # second from creating a hundred tasks a second.
            workers = max(1, self.settings.concurrency)
            if workers == 1:
                await self._worker()
            else:
                await asyncio.gather(*(self._worker() for _ in range(workers)))
        finally:
            self._fail_pending_priority()
            await self.close()

    async def _worker(self) -> None:
        while not self._stopping:
            now = self.progress = time.monotonic()
            # A meter already due is taken at once. Only waiting for one needs the lock: one
            # worker at a time watches the schedule; the others wait for the lock with no timer
            # of their own. Without it every idle worker slept until the same due time, all
            # woke, one took the meter and the rest went back to sleep: eight wake-ups per poll
            # on a Modbus TCP bus with eight connections. Taking the lock when meters are due
            # back to back (a hundred at each second on a 1 s schedule) handed it from worker
            # to worker, a future and a wake-up per poll.
            meter = self._take_due(now)
            if meter is None:
                async with self._dispatch:
                    meter = await self._next_due()
            if meter is not None:
                await self._poll_and_report(meter)
            elif not self._priority.empty():
                await self._serve_priority()

    async def _next_due(self) -> M | None:
        """Wait for the next meter that falls due and take it off the schedule; None when a
        control frame waits (it goes first) or the bus is stopping."""
        while not self._stopping:
            now = self.progress = time.monotonic()
            if not self._priority.empty():
                return None
            if not self._idle:
                await self._sleep(1.0)
                continue
            due = self._idle[0][0]
            if due > now:
                await self._sleep(min(due - now, 1.0))  # wake at least each second: watchdog
                continue
            return self._take_due(now)
        return None

    def _take_due(self, now: float) -> M | None:
        """The first meter on the schedule, taken off it, when it is due at ``now`` and no
        control frame waits (it goes first) and the bus is not stopping; else None."""
        idle = self._idle
        if self._stopping or not idle or idle[0][0] > now or not self._priority.empty():
            return None
        meter = heapq.heappop(idle)[2]
        schedule = meter.schedule
        before = schedule.overruns
        schedule.start_poll(now)
        self._overruns += schedule.overruns - before
        meter.in_flight = True
        return meter

    # -- internals ------------------------------------------------------------------------------------
    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):  # no task per sleep, unlike wait_for
                await self._wakeup.wait()

    async def _poll_and_report(self, meter: M) -> None:
        try:
            result = await self.poll(meter)
        except Exception as exc:  # noqa: BLE001 - a bug in one poll must not kill the bus: reported as a failure
            result = PollResult(meter.meter_id, self.name, now_ms(), now_ms(), False, (),
                                (f"internal error: {type(exc).__name__}: {exc}",))
        finally:
            meter.in_flight = False
        meter.schedule.finish_poll(time.monotonic(), result.ok)
        if not result.ok and meter.schedule.consecutive_failures == 1 and meter.meter_id in self.phases:
            self._reprobe(meter)
        entry = (meter.schedule.next_due, self._index[id(meter)], meter)
        earliest = self._idle[0][0] if self._idle else None
        heapq.heappush(self._idle, entry)
        if earliest is not None and entry[0] < earliest:
            self._wakeup.set()  # sleeping workers wait for a later meter: this one comes first
        self.stats.overruns = self._overruns
        # put_nowait while there is room: what Queue.put does then, without its coroutine
        outbound = self.outbound
        if outbound.full():
            await outbound.put(result)
        else:
            outbound.put_nowait(result)
        if bool(result.ok) == meter.comm_lost:  # answered after a comm loss, or failed before one
            await self._comm_loss_bookkeeping(meter, result)
        self.progress = time.monotonic()

    def _reprobe(self, meter: M) -> None:
        """The meter's failure run begins: poll it again within seconds, with its phase
        neighbours that still answered and a witness of each other phase
        (:func:`~gateway.acquisition.schedule.probe_set`), so the pipeline can tell a meter
        outage from a phase outage or a bus fault long before the next interval. Bounded: one
        probe pending per meter, asked once per run of failures; meters already failing are
        not pulled along."""
        at = time.monotonic() + REPROBE_DELAY_S
        wanted = set(probe_set(meter.meter_id, self.phases))
        moved = meter.schedule.reprobe(at)
        for other in self.meters:
            if other is not meter and other.meter_id in wanted and not other.in_flight \
                    and other.schedule.consecutive_failures == 0:
                moved = other.schedule.reprobe(at) or moved
        if moved:  # entries of the idle heap carry their due time: rebuild (rare, O(n))
            self._idle = [(m.schedule.next_due, i, m) for (_, i, m) in self._idle]
            heapq.heapify(self._idle)
            self._wakeup.set()

    def _fail_pending_priority(self) -> None:
        while not self._priority.empty():
            item = self._priority.get_nowait()
            if not item.future.done():
                item.future.set_exception(BusTimeout(f"bus {self.name} stopped before sending"))

    async def serve_priority_now(self) -> None:
        """Called by subclasses between transactions of a poll: control frames do not wait for it."""
        while not self._priority.empty():
            await self._serve_priority()

    async def yield_line(self, free_at: Callable[[], float]) -> None:
        """Wait until the line may carry the next routine exchange (``free_at()``, monotonic
        seconds: the master turnaround after the last byte heard, or a retry's back-off),
        serving every control frame queued meanwhile.

        The gap between two exchanges is where the priority lane goes, and only there: once a
        request is on the wire its reply (and follow-ups) cannot be talked over on a half-duplex
        line. Without this, a trip queued during the 20 ms turnaround before a routine request
        waited for the whole of that exchange too: the tail of the trip latency was the
        half-duplex bound plus up to one turnaround (docs/performance.md, issue 17)."""
        while True:
            await self.serve_priority_now()
            wait = free_at() - time.monotonic()
            if wait <= 0:
                return
            await self._sleep(wait)  # submit_priority sets the wake-up: the frame goes first

    async def _serve_priority(self) -> None:
        item = self._priority.get_nowait()
        self.stats.priority_frames += 1
        try:
            outcome = await self.send_priority(item.message)
        except Exception as exc:  # noqa: BLE001 - handed to the caller awaiting the future
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(outcome)
        # Let the waiting caller run before this loop picks a routine transaction: a trip is
        # followed by its confirmation read (status word 3), which must not wait for a whole
        # routine exchange (~0.3 s at 2400 baud) queued in between.
        await asyncio.sleep(0)

    async def _comm_loss_bookkeeping(self, meter: M, result: PollResult) -> None:
        failures = meter.schedule.consecutive_failures
        if not result.ok and not meter.comm_lost and failures >= self.settings.comm_loss_after:
            meter.comm_lost = True
            await self.outbound.put(BusEvent(
                "comm_loss", meter.meter_id, self.name, "raised", now_ms(),
                {"address": meter.address, "consecutive_failures": failures,
                 "last_error": meter.stats.last_error,
                 "hint": f"meter {meter.meter_id} (address {meter.address}) on {self.name}: no reply "
                         f"after {failures} polls at {self.describe_link()} — check wiring, address "
                         "and line settings"}))
        elif result.ok and meter.comm_lost:
            meter.comm_lost = False
            await self.outbound.put(BusEvent("comm_loss", meter.meter_id, self.name, "cleared",
                                             now_ms(), {"address": meter.address}))
