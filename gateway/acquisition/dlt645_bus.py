"""The DL/T 645 bus task: one coroutine owns one RS-485 line and runs its transactions back to back.

Wire discipline (the bus is the bottleneck: 2400 baud is ~218 bytes/s):

* the next request goes out as soon as the previous reply has ended plus the master turnaround
  (``turnaround_ms``, 20 ms by default — DL/T 645-2007 §4.1.3 asks for ≥ 20 ms between a received
  frame and the next transmission); no other sleeps between meters;
* a silent meter costs one reply timeout per attempt, and a meter that does not answer its first
  item is not asked the rest of its items in that poll;
* the reply timeout starts when the request has left the wire (its bytes take 11 bit-times each).

A read with a cadence (profile ``every_s``) is skipped in polls where it is not due, unless a
quantity it is refreshed on (``refresh_on``) changed earlier in the same poll: a prepaid meter's
balance block every few minutes, and at once when its purchase counter moved.

A priority lane (bounded) carries control frames (load control's trip/close): it is served before the
next routine transaction, even in the middle of a meter's poll, and a frame queued while the line
waits out the turnaround before a routine request still goes before that request
(:meth:`ScheduledBus.yield_line`). It never interrupts an exchange: a control frame waits for at most
the routine exchange in flight (the half-duplex bound, docs/performance.md).

Backfill (gateway/acquisition/backfill.py): after a poll a meter answered, if VEE estimated intervals of it
while it was silent and its profile keeps load records, it reads back up to ``[vee.backfill]
max_records`` of its stored records, in exchanges no longer than the line's longest poll read
(:meth:`Dlt645Bus.records_per_read`, one record with the shipped profiles). Once per poll of that
meter, inside its own slot and after its regular reads: other meters' polls and the priority lane
never wait behind a backlog, and a long outage is read back over successive polls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.acquisition.backfill import BackfillBoard, boundary_local, interval_closed_by
from gateway.acquisition.base import BusSettings, MeterSlot, ScheduledBus, now_ms
from gateway.acquisition.meter_clock import CLOCK_OFFSET, ClockCadence, read_clock_offset
from gateway.acquisition.poll_result import (
    BusEvent,
    IntervalRecords,
    PolledValue,
    PollResult,
    ValueType,
)
from gateway.acquisition.serial_port import AsyncSerialPort
from protocols import dlt645 as d
from protocols.dlt645.load_records import ENERGY_RECORD_BYTES
from protocols.dlt645.transaction import Answered, Exchange, ExchangePolicy, Transmit, Wait

log = logging.getLogger(__name__)

PREAMBLE = 4  # FE bytes before each request: many meters need them to wake their UART


@dataclass(frozen=True)
class PlannedRead:
    """One request of a meter's poll: the request, whether refusal is normal, naming, and its
    cadence (``every_s``: read only that often; ``refresh_on``: read at once when one of these
    quantities changed earlier in the poll — see :class:`protocols.profiles.Dlt645Read`)."""

    request: d.ReadRequest
    optional: bool = False
    name: str | None = None
    names: tuple[str, ...] = ()
    every_s: float | None = None
    refresh_on: tuple[str, ...] = ()


@dataclass
class Dlt645Meter(MeterSlot):
    """A meter on the bus with its poll plan and catalogue (profile overrides)."""

    version: d.Version = d.Version.V2007
    reads: list[PlannedRead] = field(default_factory=list)
    catalogue: d.Catalogue = field(default_factory=lambda: d.CATALOGUE_2007)
    load_records: bool = False  # the profile says the meter keeps class-4 load records
    #: When the meter clock is read (gateway/acquisition/meter_clock.py); None: not read.
    clock: ClockCadence | None = None
    #: DI → monotonic time it last answered (reads with a cadence only).
    read_at: dict[int, float] = field(default_factory=dict)
    #: Last value of each quantity some read is refreshed on (to notice a change).
    watched: dict[str, ValueType] = field(default_factory=dict)

    @property
    def reads_clock(self) -> bool:
        return self.clock is not None

    def read_due(self, read: PlannedRead, now: float, changed: set[str]) -> bool:
        """Whether ``read`` belongs in this poll: always without a cadence; otherwise when one
        of its ``refresh_on`` quantities changed in this poll, or its cadence has run."""
        if read.every_s is None or changed.intersection(read.refresh_on):
            return True
        last = self.read_at.get(read.request.di)
        return last is None or now - last >= read.every_s


def polled_value(name: str, value: d.Value) -> ValueType:
    """Reading values as the daemon carries them: Decimals stay exact, flags become their names."""
    if value is None or isinstance(value, Decimal | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, Mapping):
        return ",".join(sorted(k for k, on in value.items() if on))
    return str(value)


class Dlt645Bus(ScheduledBus[Dlt645Meter]):
    """Owns one serial line running DL/T 645."""

    def __init__(self, name: str, port: AsyncSerialPort, meters: list[Dlt645Meter],
                 outbound: asyncio.Queue[PollResult | BusEvent], settings: BusSettings) -> None:
        super().__init__(name, meters, outbound, settings)
        self.port = port
        self.splitter = d.FrameSplitter()
        self.backfill: BackfillBoard | None = None
        #: The meters' zone east of UTC ([commands] meter_utc_offset_min), for clock reads.
        self.meter_utc_offset_min = 480
        #: Bytes on the wire (request and reply) of the longest poll read answered at its first
        #: attempt on this line: the length a load-record read-back is cut to (:meth:`_read_back`).
        self.longest_read_bytes = 0

    def attach_backfill(self, board: BackfillBoard | None) -> None:
        """Share VEE's board of owed intervals; registers the meters that keep load records."""
        self.backfill = board
        if board is not None:
            board.meters.update(m.meter_id for m in self.meters
                                if m.load_records and m.version == d.Version.V2007)

    def describe_link(self) -> str:
        return f"{self.port.baudrate} 8{self.port.parity}1 on {self.port.port_name}"

    async def open(self) -> None:
        self.port.open()

    async def close(self) -> None:
        self.port.close()

    async def send_priority(self, message: Any) -> Answered:
        return await self._exchange(message, None, 1 + self.settings.retries)

    def _policy(self, attempts: int) -> ExchangePolicy:
        settings = self.settings
        return ExchangePolicy(reply_timeout_s=settings.timeout_s, attempts=attempts,
                              retry_backoff_s=settings.retry_backoff_s,
                              turnaround_s=settings.turnaround_s,
                              char_time_s=self.port.wire_time(1), link=self.describe_link())

    async def _exchange(self, request: d.Message, meter: Dlt645Meter | None, attempts: int,
                        yield_line: Callable[[Callable[[], float]], Awaitable[None]] | None = None,
                        ) -> Answered:
        """Run one exchange (with follow-ups and retries) on the wire: the I/O shell around
        :class:`~protocols.dlt645.transaction.Exchange`, which makes every decision.

        Besides the driver's ``not_before``, a frame never goes out within ``turnaround_s`` of the
        last byte this port heard. Before each attempt's first frame (never before a follow-up:
        that is the middle of the exchange) a routine exchange hands the wait for the line to
        ``yield_line`` (:meth:`ScheduledBus.yield_line`): control frames queued before or
        during that wait go first, and may run exchanges the driver does not know about.
        """
        port = self.port
        exchange = Exchange(request, self._policy(attempts),
                            catalogue=meter.catalogue if meter else None, splitter=self.splitter,
                            preamble=PREAMBLE)
        action = exchange.start(time.monotonic())
        started: float | None = None
        try:
            while True:
                if isinstance(action, Transmit):
                    if action.retry_after is not None:
                        self._attempt_over(started, meter, action.retry_after, retry=True)
                        started = None
                    if yield_line is not None and action.flush_input:
                        # Between exchanges (or attempts): a waiting control frame goes first.
                        await yield_line(functools.partial(self._free_at, action.not_before))
                    wait = self._free_at(action.not_before) - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if action.flush_input:
                        port.discard_input()
                        started = time.monotonic()
                    port.write(action.frame)
                    self.stats.bytes_out += len(action.frame)
                    action = exchange.sent(time.monotonic())
                elif isinstance(action, Wait):
                    remaining = action.deadline - time.monotonic()
                    chunk = await port.read_some(remaining) if remaining > 0 else b""
                    if chunk:
                        self.stats.bytes_in += len(chunk)
                        action = exchange.receive(chunk, time.monotonic())
                    else:
                        action = exchange.tick(time.monotonic())
                elif isinstance(action, Answered):
                    self._attempt_over(started, meter, None)
                    started = None
                    return action
                else:
                    self._attempt_over(started, meter, action.error)
                    started = None
                    raise action.error
        finally:
            if started is not None:  # cancelled, or the port failed mid-attempt
                self._attempt_over(started, meter, None, ok=False)
            self.stats.garbage_bytes = self.splitter.garbage_bytes
            self.stats.checksum_errors = self.splitter.checksum_errors
            if meter is not None:
                meter.stats.bad_frames += exchange.undecodable_frames

    def _free_at(self, not_before: float) -> float:
        """When the next frame may go out: not before the driver's time, nor within the master
        turnaround of the last byte this port heard."""
        return max(not_before, self.port.last_rx + self.settings.turnaround_s)

    def _attempt_over(self, started: float | None, meter: Dlt645Meter | None,
                      error: Exception | None, *, retry: bool = False, ok: bool | None = None) -> None:
        """Bus and meter counters for one attempt (one request and its follow-ups)."""
        now = time.monotonic()
        if started is not None:
            self.stats.busy_s += now - started
        self.stats.record(now, error is None if ok is None else ok)
        if isinstance(error, d.NoReply):
            self.stats.timeouts += 1
        if meter is not None:
            meter.stats.transactions += 1
            if isinstance(error, d.NoReply):
                meter.stats.timeouts += 1
            if retry:
                meter.stats.retries += 1

    async def poll(self, meter: Dlt645Meter) -> PollResult:
        started_ms = now_ms()
        t0 = time.monotonic()
        values: list[PolledValue] = []
        errors: list[str] = []
        flags: dict[str, bool] = {}
        answered = False
        settings = self.settings
        meter.stats.polls += 1
        changed: set[str] = set()
        for read in meter.reads:
            if not meter.read_due(read, time.monotonic(), changed):
                continue
            wire_before = self.stats.bytes_out + self.stats.bytes_in
            try:
                tx = await self._exchange(read.request, meter, 1 + settings.retries,
                                          self.yield_line)
            except d.ExceptionReply as exc:
                answered = True
                meter.stats.refusals += 1
                if read.every_s is not None:  # a refusal is an answer: not asked again at once
                    meter.read_at[read.request.di] = time.monotonic()
                if not read.optional:
                    errors.append(f"DI {read.request.di:08X}: {exc}")
                continue
            except d.NoReply as exc:
                errors.append(str(exc))
                if not answered:
                    break  # silent meter: do not spend a timeout on each remaining item
                continue
            except d.TransactionError as exc:  # garbled: the meter is there
                answered = True
                errors.append(f"DI {read.request.di:08X}: {exc}")
                continue
            answered = True
            if tx.attempts == 1:
                wire = self.stats.bytes_out + self.stats.bytes_in - wire_before
                self.longest_read_bytes = max(self.longest_read_bytes, wire)
            t_ms = now_ms()
            for i, reading in enumerate(tx.readings):
                name = (read.names[i] if i < len(read.names) else
                        read.name if (read.name and len(tx.readings) == 1) else reading.name)
                if isinstance(reading.value, Mapping):
                    for flag, on in reading.value.items():
                        flags[flag] = bool(on)
                value = polled_value(name, reading.value)
                values.append(PolledValue(name, value, reading.unit, t_ms))
                if name in meter.watched or any(name in r.refresh_on for r in meter.reads):
                    if name in meter.watched and meter.watched[name] != value:
                        changed.add(name)
                    meter.watched[name] = value
            if read.every_s is not None:
                meter.read_at[read.request.di] = time.monotonic()
        if answered and meter.clock is not None and meter.clock.is_due(time.monotonic()):
            offset = await self._read_clock(meter, meter.clock)
            if offset is not None:
                values.append(offset)
        elapsed = time.monotonic() - t0
        meter.stats.last_poll_s = elapsed
        ok = answered and bool(values)
        if ok:
            meter.stats.polls_ok += 1
            meter.stats.last_ok_ms = now_ms()
        else:
            meter.stats.polls_failed += 1
            meter.stats.last_error = "; ".join(errors) or "no usable reply"
        if errors:
            meter.stats.last_error = "; ".join(errors)
        result = PollResult(meter.meter_id, self.name, started_ms, now_ms(), ok, tuple(values),
                            tuple(errors), flags)
        if ok and self.backfill is not None and meter.meter_id in self.backfill.meters:
            await self._read_back(meter, self.backfill)
        return result

    async def _read_clock(self, meter: Dlt645Meter, cadence: ClockCadence) -> PolledValue | None:
        """The meter clock's offset as a value of this poll, when the cadence says it is due
        (gateway/acquisition/meter_clock.py). Its transactions give way to the priority lane
        like the poll's own; a meter that refuses or garbles them still answered the poll."""

        async def read(di: int) -> tuple[d.Reading, ...]:
            tx = await self._exchange(d.ReadRequest(meter.address, di, meter.version), meter,
                                      1 + self.settings.retries, self.yield_line)
            return tuple(tx.readings)

        assert cadence.dis is not None
        try:
            offset = await read_clock_offset(read, cadence.dis, self.meter_utc_offset_min)
        except d.ExceptionReply as exc:
            log.warning("bus %s: meter %s (address %s) refuses its clock (DI %04X/%04X): %s — "
                        "check the profile's [clock] items", self.name, meter.meter_id,
                        meter.address, *cadence.dis, exc)
            cadence.read(time.monotonic())
            return None
        except d.ProtocolError as exc:
            log.info("bus %s: meter %s: clock not read (%s); trying again later", self.name,
                     meter.meter_id, exc)
            cadence.failed(time.monotonic())
            return None
        cadence.read(time.monotonic())
        return PolledValue(CLOCK_OFFSET, round(offset, 3), "s", now_ms())

    def records_per_read(self, address: str) -> int:
        """How many load records one read-back exchange may ask for: as many as keep it no
        longer on the wire than the longest poll read this line has carried, and at least one.

        A control frame can never interrupt an exchange, so the longest routine exchange is what
        a trip waits for at worst (docs/performance.md, issue 17). Four records in one reply (the
        default ``max_records``) are 170 bytes on the wire, an exchange of 0.80 s at 2400 baud
        against 0.28 s for the energy block; cut to one record per exchange they come close to
        a read of the poll, and the priority lane goes between them. Same records per poll; the
        cost is a request and a response delay per record, paid only while intervals are owed.
        Before any read was measured, one record."""
        if self.longest_read_bytes == 0:
            return 1
        request = len(d.encode(d.ReadRequest(address, d.ENERGY_RECORDS_DI, count=1,
                                             start=dt.datetime(2000, 1, 1)), preamble=PREAMBLE))
        reply_overhead = 12 + 4  # the reply frame around its data, and the DI it echoes
        room = self.longest_read_bytes - request - reply_overhead
        return max(1, room // ENERGY_RECORD_BYTES)

    async def _read_back(self, meter: Dlt645Meter, board: BackfillBoard) -> None:
        """Read back the oldest intervals ``meter`` owes (module docstring), in exchanges of
        :meth:`records_per_read` records with the priority lane between them; the records go to
        the committer ahead of this poll's reads."""
        span = board.next_span(meter.meter_id)
        if span is None:
            return
        first, count = span
        per_read = self.records_per_read(meter.address)
        found: list[tuple[int, Decimal]] = []
        for start in range(first, first + count, per_read):
            n = min(per_read, first + count - start)
            owed = board.owed(meter.meter_id)
            if not any(start <= i < start + n for i in owed):
                continue  # a gap between owed intervals: nothing to ask for
            records = await self._read_records(meter, board, start, n)
            if records is None:
                break  # no reply: the rest is still owed, the next answered poll asks again
            found.extend(records)
        if found:
            await self.outbound.put(IntervalRecords(  # type: ignore[arg-type]
                meter.meter_id, self.name, now_ms(), tuple(found)))

    async def _read_records(self, meter: Dlt645Meter, board: BackfillBoard, first: int,
                            count: int) -> list[tuple[int, Decimal]] | None:
        """One load-record exchange for intervals ``first`` .. ``first + count - 1``: the valid
        records found, or None when the meter did not answer (the span stays owed)."""
        request = d.ReadRequest(meter.address, d.ENERGY_RECORDS_DI, count=count,
                                start=boundary_local(first))
        try:
            tx = await self._exchange(request, meter, 1, self.yield_line)
            records = d.decode_load_records(tx.data)
        except d.NoReply:
            return None
        except d.ExceptionReply as exc:
            log.info("bus %s: meter %s has no load records from %s (%s): its estimates stay",
                     self.name, meter.meter_id, request.start, exc)
            board.settle(meter.meter_id, first, count)
            return []
        except d.RemoteProtocolError as exc:
            log.warning("bus %s: meter %s (address %s) sent unusable load records from %s: %s — "
                        "its estimates stay; check the meter's load-record settings (04000901)",
                        self.name, meter.meter_id, meter.address, request.start, exc)
            board.settle(meter.meter_id, first, count)
            return []
        board.settle(meter.meter_id, first, count)
        found: list[tuple[int, Decimal]] = []
        for record in records:
            interval = interval_closed_by(record.time)
            if (record.valid and record.active_import is not None and interval is not None
                    and first <= interval < first + count):
                found.append((interval, record.active_import))
        return found
