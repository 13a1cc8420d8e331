"""Meter clocks in the daemon: grade each clock read, raise and clear ``clock.drift``, and set
clocks under the time-sync rule (policy.py), journaled like a command.

Where the pieces are. The bus reads a meter's clock on its cadence and adds ``clock.offset``
to that poll (gateway/acquisition/meter_clock.py); the poll is validated and committed like any
other and reaches :meth:`MeterClockWatch.on_poll` through the validated feed. There the offset
is graded by the VEE engine's ``check_clock`` (the ``clock_drift`` / ``clock_fail`` rules and
their per-class thresholds — the same call ``gwtool vee`` makes for a ``clock.offset`` row) and
the alarm raised or cleared through the one alarm service. A meter the kernel says needs a
resync is put to :func:`~gateway.control.meter_clock.policy.decide`; a ``send`` verdict queues a
sync for the supervised ``clock-sync`` task, which:

1. journals an ``accepted`` record (action ``time_sync``, key id ``gateway``: the gateway acts
   on its own policy, not on a signed command) — before anything is sent;
2. sends on the meter's bus priority lane, the lane trip/close frames and power-down record
   reads use: a broadcast time sync (08H, every meter on the bus) or the meter's date and time
   written with its password (14H, ``addressed``);
3. reads the clock back through the same lane and grades the residual: the alarm clears when
   it is within ``warn_s``;
4. journals the outcome (``executed`` with the residual, or ``failed`` with the reason).

At most one sync per meter per gateway-local day: the days of the last syncs are taken from
the journal at start, so a restart does not sync a meter twice in a day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from edge_rules import vee_kernels as vk
from gateway.acquisition.base import PriorityLaneFull, ScheduledBus, is_dlt645_bus
from gateway.acquisition.meter_clock import CLOCK_OFFSET, read_clock_offset
from gateway.config import GatewayConfig
from gateway.control.commands.clock import TrustedClock
from gateway.control.commands.journal import Journal, JournalEntry, JournalRecord
from gateway.control.meter_clock.policy import SyncRule, SyncVerdict, clear_after_s, decide
from gateway.errors import GatewayError
from gateway.pipeline.alarms import Alarms
from gateway.pipeline.feed import ValidatedPoll
from gateway.pipeline.vee_stage import S_DAY, VeeStage
from protocols import dlt645 as d

if TYPE_CHECKING:
    # Only a gateway with DL/T 645 buses loads them (the factory does): docs/performance.md, Memory.
    from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter
    from protocols.dlt645.transaction import Answered

log = logging.getLogger(__name__)

ALARM_KIND: Final = "clock.drift"
ACTION: Final = "time_sync"
#: The journal's key id for what the gateway does on its own policy.
GATEWAY_KID: Final = "gateway"
LEVELS: Final = ("ok", "warn", "resync", "fail")
#: Syncs waiting for the bus; more are dropped with a log line (the next clock read asks again).
QUEUE_LIMIT: Final = 64
#: How far back the journal is searched at start for today's syncs.
JOURNAL_LOOKBACK: Final = 5000
READ_TIMEOUT_S: Final = 30.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SyncJob:
    """One sync the rule allowed: ``meter`` (the one whose drift asked for it), its ``bus``
    and the ``offset_s`` read."""

    meter: str
    bus: Dlt645Bus
    slot: Dlt645Meter
    offset_s: float


def synced_days(records: Iterable[JournalRecord], rule: SyncRule) -> dict[str, int]:
    """Meter → local day of its latest sync, from the ``accepted`` time-sync records the
    gateway journaled (a sync counts once it is accepted: an interrupted one may have gone
    out)."""
    days: dict[str, int] = {}
    for record in records:
        if record.kind != "accepted" or record.kid != GATEWAY_KID:
            continue
        details = record.details
        meters = details.get("meters")
        if details.get("action") != ACTION or not isinstance(meters, list | tuple):
            continue
        day = rule.local_day(record.ts_ms)
        for meter in meters:
            days[str(meter)] = max(day, days.get(str(meter), day))
    return days


class MeterClockWatch:
    """The feed subscriber ``meter-clock`` and the task ``clock-sync`` (module docstring)."""

    def __init__(self, config: GatewayConfig, vee: VeeStage, alarms: Alarms, journal: Journal,
                 trusted: TrustedClock, buses: Sequence[ScheduledBus]) -> None:  # type: ignore[type-arg]
        self.config = config
        self.vee = vee
        self.alarms = alarms
        self.journal = journal
        self.trusted = trusted
        section = config.clock
        self.utc_offset_min = config.commands.meter_utc_offset_min
        self.rule = SyncRule.create(section.mode, section.max_step_s, section.guard_minutes,
                                    section.freeze_times, self.utc_offset_min)
        self.route: dict[str, tuple[Dlt645Bus, Dlt645Meter]] = {
            slot.meter_id: (bus, slot) for bus in buses if is_dlt645_bus(bus)
            for slot in bus.meters}
        self.meters = {m.id: m for m in config.meters}
        #: Meters whose clock their bus reads (the only polls looked at).
        self.clocked = frozenset(slot.meter_id for bus in buses for slot in bus.meters
                                 if getattr(slot, "reads_clock", False)
                                 and slot.meter_id in vee.row_of)
        #: The last offset read per meter (s), for the span a broadcast steps, and its level.
        self.offsets: dict[str, float] = {}
        self.levels: dict[str, int] = {}
        #: Local day of the last sync that reached each meter.
        self.synced_day: dict[str, int] = {}
        self.queue: asyncio.Queue[SyncJob] = asyncio.Queue(QUEUE_LIMIT)
        self._queued: set[str] = set()
        self.syncs = 0

    # -- grading --------------------------------------------------------------------------------
    def grade(self, meter: str, offset_s: float) -> tuple[int, bool]:
        """(level 0..3, resync) of one offset by the VEE engine's clock rules."""
        row = self.vee.row_of[meter]
        day = self.vee.grid.due_end(_now_ms()) // S_DAY
        verdict = self.vee.engine.check_clock(np.array([row], dtype=np.int64),
                                              np.array([offset_s], dtype=np.float64), day)
        # Published bits, not raw flags: a class that disables a clock rule gets no alarm.
        published = int(verdict.published[0])
        resync = verdict.resync is not None and bool(verdict.resync[0])
        if published & vk.BIT_CLOCK_FAIL:
            return 3, resync
        if published & vk.BIT_CLOCK_DRIFT:
            return (2 if resync else 1), resync
        return 0, False

    def on_poll(self, poll: ValidatedPoll) -> None:
        """Feed subscriber: a poll that carries a clock read is graded and acted on."""
        if poll.meter_id not in self.clocked:
            return
        value = poll.value(CLOCK_OFFSET)
        if value is None or not isinstance(value.value, float | int):
            return
        offset = float(value.value)
        self.offsets[poll.meter_id] = offset
        level, resync = self.grade(poll.meter_id, offset)
        self.levels[poll.meter_id] = level
        verdict = self._decide(poll.meter_id, offset, resync)
        self._alarm(poll.meter_id, offset, level, verdict, value.t_ms)
        if verdict is SyncVerdict.SEND:
            self._queue(poll.meter_id, offset)
        elif verdict is SyncVerdict.NEAR_FREEZE and poll.meter_id in self.route:
            # Ask again once the span is past the freeze, not at this time tomorrow.
            slot = self.route[poll.meter_id][1]
            if slot.clock is not None:
                slot.clock.soon(time.monotonic(), clear_after_s(self.rule, [
                    offset, *self.offsets.values()] if self.rule.mode == "broadcast"
                    else [offset]))

    def _decide(self, meter: str, offset: float, resync: bool) -> SyncVerdict:
        route = self.route.get(meter)
        bus_meters = [s.meter_id for s in route[0].meters] if route else [meter]
        broadcast = self.rule.mode == "broadcast"
        days = [self.synced_day[m] for m in (bus_meters if broadcast else [meter])
                if m in self.synced_day]
        return decide(self.rule, resync=resync, offset_s=offset, routable=route is not None,
                      trusted=self.trusted.trusted() if resync else True,
                      gateway_ms=_now_ms(), last_sync_day=max(days) if days else None,
                      bus_offsets_s=[self.offsets[m] for m in bus_meters
                                     if m in self.offsets and m != meter] if broadcast else ())

    def _alarm(self, meter: str, offset: float, level: int, verdict: SyncVerdict,
               t_ms: int) -> None:
        key = f"{ALARM_KIND}/{meter}"
        if level == 0:
            self.alarms.clear(ALARM_KIND, key, meter, {"offset_s": offset}, t_ms)
            return
        hint = {
            SyncVerdict.SEND: "a time sync is being sent",
            SyncVerdict.NOT_NEEDED: "below the resync threshold; the meter keeps its clock",
            SyncVerdict.MODE: f"[clock] mode = \"{self.rule.mode}\": no automatic sync — "
                              "set the clock with gwtool time-sync or enable a sync mode",
            SyncVerdict.NO_ROUTE: "the meter is not on a DL/T 645 bus: set its clock by hand",
            SyncVerdict.UNTRUSTED: "the gateway's own clock is not trusted "
                                   f"({self.trusted.why_untrusted()})",
            SyncVerdict.TOO_FAR: f"more than [clock] max_step_s = {self.rule.max_step_s:g} s "
                                 "off: check the meter (battery, zone, tampering), then set it "
                                 "with gwtool time-sync",
            SyncVerdict.SYNCED_TODAY: "already synced today; the next day's read decides",
            SyncVerdict.NEAR_FREEZE: "too close to midnight or a freeze time; the next read "
                                     "decides",
        }[verdict]
        self.alarms.raise_(ALARM_KIND, key, meter, {
            "offset_s": offset, "level": LEVELS[level], "sync": verdict.value,
            "hint": f"meter {meter}: clock {offset:+.0f} s off the gateway ({LEVELS[level]}); "
                    f"{hint}"}, t_ms)

    def _queue(self, meter: str, offset: float) -> None:
        if meter in self._queued or meter not in self.route:
            return
        bus, slot = self.route[meter]
        try:
            self.queue.put_nowait(SyncJob(meter, bus, slot, offset))
        except asyncio.QueueFull:
            log.warning("clock: %d syncs waiting; meter %s asks again at its next clock read",
                        QUEUE_LIMIT, meter)
            return
        self._queued.add(meter)

    # -- syncing --------------------------------------------------------------------------------
    def recall(self) -> None:
        """The local days of recent syncs, from the journal (so a restart does not sync again)."""
        head = self.journal.head().seq
        self.synced_day.update(synced_days(
            self.journal.records(after_seq=max(0, head - JOURNAL_LOOKBACK)), self.rule))

    async def run(self) -> None:
        """The ``clock-sync`` task: carry out queued syncs one at a time."""
        self.recall()
        while True:
            job = await self.queue.get()
            try:
                await self.sync(job)
            finally:
                self._queued.discard(job.meter)

    async def sync(self, job: SyncJob) -> None:
        """Journal, send, read back, journal the outcome (module docstring)."""
        broadcast = self.rule.mode == "broadcast"
        meters = [s.meter_id for s in job.bus.meters] if broadcast else [job.meter]
        cmd = os.urandom(16)
        now = _now_ms()
        self.journal.append([JournalEntry("accepted", cmd=cmd, kid=GATEWAY_KID, details={
            "action": ACTION, "mode": self.rule.mode, "meter": job.meter, "meters": meters,
            "bus": job.bus.name, "offset_s": job.offset_s,
            "reason": f"automatic: meter clock {job.offset_s:+.1f} s off"})], now_ms=now)
        day = self.rule.local_day(now)
        for m in meters:
            self.synced_day[m] = day
        try:
            await self._send(job, broadcast)
        except (GatewayError, d.ProtocolError, TimeoutError, OSError) as exc:
            reason = f"not sent: {exc or type(exc).__name__}"
            self.journal.record_outcome(cmd, "failed", reason, now_ms=_now_ms())
            log.warning("clock: time sync for meter %s on bus %s failed: %s", job.meter,
                        job.bus.name, reason)
            return
        self.syncs += 1
        if broadcast:  # the bus's other drifting meters were set too: their next poll says so
            for slot in job.bus.meters:
                if slot.meter_id != job.meter and self.levels.get(slot.meter_id, 0) \
                        and slot.clock is not None:
                    slot.clock.soon(time.monotonic(), 0.0)
        residual = await self._read_back(job)
        details: dict[str, object] = {"residual_s": residual}
        if residual is None:
            reason = "sent; the clock could not be read back (the next clock read grades it)"
        else:
            reason = f"sent; meter clock now {residual:+.1f} s off"
        self.journal.record_outcome(cmd, "executed", reason, now_ms=_now_ms(), details=details)
        log.info("clock: %s time sync for meter %s on bus %s: %s",
                 "broadcast" if broadcast else "addressed", job.meter, job.bus.name, reason)

    def _moment(self) -> dt.datetime:
        """The meters' local time now, to the nearest second (a meter counts whole seconds)."""
        zone = dt.timezone(dt.timedelta(minutes=self.utc_offset_min))
        return (dt.datetime.now(zone) + dt.timedelta(milliseconds=500)).replace(
            microsecond=0, tzinfo=None)

    async def _send(self, job: SyncJob, broadcast: bool) -> None:
        if broadcast:
            await self._submit(job.bus, d.TimeSyncRequest(self._moment(),
                                                          version=job.slot.version))
            return
        assert job.slot.clock is not None and job.slot.clock.dis is not None  # queued: clocked
        date_di, time_di = job.slot.clock.dis
        meter = self.meters[job.meter]
        credentials = (meter.control_password_level, meter.control_password.upper(),
                       meter.operator_code.upper())
        # The date first, then the time computed as late as possible: the guard keeps both
        # writes away from midnight, so they cannot straddle a change of date.
        for di in (date_di, time_di):
            moment = self._moment()
            value: dt.date | dt.time = moment.date() if di == date_di else moment.time()
            data = d.encode_values(job.slot.catalogue, di, [value])
            await self._submit(job.bus, d.WriteRequest(job.slot.address, di, data, *credentials,
                                                       version=job.slot.version))

    async def _submit(self, bus: Dlt645Bus, message: d.Message) -> Answered:
        try:
            future = bus.submit_priority(message)
        except PriorityLaneFull:
            await asyncio.sleep(1.0)
            future = bus.submit_priority(message)
        return await asyncio.wait_for(future, READ_TIMEOUT_S)

    async def _read_back(self, job: SyncJob) -> float | None:
        """The meter's clock after the sync, graded and its alarm updated; None when it could
        not be read."""
        dis = job.slot.clock.dis if job.slot.clock is not None else None
        if dis is None:
            return None

        async def read(di: int) -> Sequence[d.Reading]:
            answered = await self._submit(job.bus, d.ReadRequest(job.slot.address, di,
                                                                 job.slot.version))
            return tuple(answered.readings)

        try:
            residual = await read_clock_offset(read, dis, self.utc_offset_min)
        except (GatewayError, d.ProtocolError, TimeoutError, OSError) as exc:
            log.info("clock: meter %s: clock not read back after the sync (%s)", job.meter, exc)
            return None
        self.offsets[job.meter] = residual
        level, _ = self.grade(job.meter, residual)
        self.levels[job.meter] = level
        self._alarm(job.meter, residual, level, SyncVerdict.SYNCED_TODAY, _now_ms())
        return round(residual, 3)
