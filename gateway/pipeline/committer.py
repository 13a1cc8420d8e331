"""From poll results to committed outbox rows: validation, read records, alarms, one transaction.

The committer drains what the bus tasks produced, classifies every value
(:mod:`gateway.pipeline.validation`), lets VEE grade the interval reads
(:mod:`gateway.pipeline.vee_stage`), and commits everything available in one SQLite transaction
through the outbox writer (reads + their outbox rows), which wakes the outbox pump. Bus events
(comm loss) become alarm raise/clear rows through the alarm service, after the bus-fault
classifier (:mod:`gateway.pipeline.bus_faults`) folded those of a silent bus into one
``comm.bus`` alarm. Then — and only then — the
validated polls go to the subscribers of the feed (groups, areas, theft, load control).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain

from edge_rules.codes import Reason
from gateway.acquisition.poll_result import BusEvent, IntervalRecords, PollResult
from gateway.pipeline.alarms import Alarms
from gateway.pipeline.bus_faults import AlarmChange, BusFaults, BusLine
from gateway.pipeline.clock import ClockWatch
from gateway.pipeline.corrections import Corrections
from gateway.pipeline.feed import ValidatedFeed, ValidatedPoll
from gateway.pipeline.meter_outages import MeterOutages, MeterSite, RecordCheck
from gateway.pipeline.outbox import OutboxWriter
from gateway.pipeline.validation import FLOAT_WINDOWS, RegisterMemory, float_window
from gateway.pipeline.vee_stage import GRID_QUANTITY, VeeStage
from gateway.store import Store, wall_ms
from gateway.store.disk import Ballast
from gateway.store.errors import StoreError
from gateway.store.records import OutboxMessage
from protocols.frozen import frozen_maker
from protocols.payload import Binding, ReadRecord
from protocols.topics import GatewayTopics

log = logging.getLogger(__name__)

#: VEE's "ask for a field read" (rule prolonged_estimation, NEM12 reason 9 under investigation).
FIELD_READ_ALARM = "vee.field_read"

#: Status flags that become alarms when a meter reports them (the rest are published as data).
FLAG_ALARMS = {
    "cover_open": "meter.cover_open", "terminal_cover_open": "meter.terminal_cover_open",
    "a.voltage_loss": "meter.voltage_loss", "b.voltage_loss": "meter.voltage_loss",
    "c.voltage_loss": "meter.voltage_loss", "relay_open": "meter.relay_open",
}


@dataclass
class CommitterStats:
    polls: int = 0
    commits: int = 0
    reads: int = 0
    flagged: int = 0
    alarms: int = 0
    held: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class PipelineServices:
    """What every producer of the daemon shares: the one outbox writer, the one alarm service
    and the validated feed. Built once per store (they outlive a configuration reload)."""

    store: Store
    topics: GatewayTopics
    writer: OutboxWriter
    alarms: Alarms
    feed: ValidatedFeed

    @classmethod
    def open(cls, store: Store, topics: GatewayTopics, *, on_commit: object = None,
             max_held_messages: int = 10_000, ballast: Ballast | None = None) -> PipelineServices:
        writer = OutboxWriter(store, on_commit=on_commit if callable(on_commit) else None,
                              max_held_messages=max_held_messages, ballast=ballast)
        return cls(store, topics, writer, Alarms(store, writer, topics), ValidatedFeed())


class Committer:
    """Consumes the bus tasks' queue; owns writing reads and alarms to the store."""

    def __init__(self, services: PipelineServices, inbound: asyncio.Queue[PollResult | BusEvent],
                 *, vee: VeeStage | None = None, max_batch: int = 256,
                 coalesce_s: float = 0.0, clock: ClockWatch | None = None,
                 buses: Sequence[BusLine] = (), sites: Sequence[MeterSite] = (),
                 aliases: Mapping[str, Binding] | None = None) -> None:
        self.services = services
        self.store = services.store
        self.topics = services.topics
        self.gateway_id = services.topics.gateway_id
        self.writer = services.writer
        self.alarms = services.alarms
        self.feed = services.feed
        self.inbound = inbound
        self.max_batch = max_batch
        self.coalesce_s = coalesce_s
        self.registers = RegisterMemory()
        self.stats = CommitterStats()
        self._flag_state: dict[tuple[str, str], bool] = {}
        self._gathering: list[PollResult | BusEvent] = []
        self._field_read: set[str] | None = None  # meters with vee.field_read raised
        self._read_topics: dict[str, str] = {}
        #: Payload-v2 alias binding of each meter; a meter without one is published in v1.
        self.aliases: Mapping[str, Binding] = aliases or {}
        #: VEE for the configured meters; None: basic validation only.
        self.vee = vee
        #: Consulted at every batch (gateway/pipeline/clock.py): a wall-clock step is raised
        #: and its listeners (VEE, theft) are told before the batch's reads reach them.
        self.clock = clock
        #: Comm-loss events of the configured ``buses`` pass through the bus-fault classifier
        #: (a whole silent bus is one ``comm.bus`` alarm); events of other buses go straight on.
        self.bus_faults = BusFaults(buses)
        self._bus_faults_seeded = not buses and not sites
        #: Meters with a ``phase``: outage.meter / outage.phase from their silences
        #: (gateway/pipeline/meter_outages.py). ``record_checks`` is set by the runtime to read
        #: a meter's power-down record when it answers again; unset, the check fails at once.
        self.meter_outages = MeterOutages(sites)
        self.record_checks: Callable[[RecordCheck], None] | None = None
        self.corrections = Corrections(self.store, self.gateway_id, self._read_topic)

    def seed_registers(self) -> int:
        """Load the last actual register values so a decrease after a restart is still caught."""
        count = 0
        for meter, quantity, value in self.store.last_actual_registers():
            self.registers.seed(meter, quantity, value)
            count += 1
        return count

    async def run(self) -> None:
        """Commit what the buses produce. With ``coalesce_s`` > 0 the committer gathers results
        for that long after the first one, so many meters polled at once cost one transaction
        (one fsync), not one each (measured: Modbus CPU per poll 1.42 → ~0.9 ms).

        Results taken off the queue are kept in ``_gathering`` until committed, so a stop that
        cancels this task while it gathers still commits them in :meth:`drain`."""
        while True:
            self._gathering.append(await self.inbound.get())
            if self.coalesce_s > 0:
                await asyncio.sleep(self.coalesce_s)
            while len(self._gathering) < self.max_batch and not self.inbound.empty():
                self._gathering.append(self.inbound.get_nowait())
            batch, self._gathering = self._gathering, []
            self.commit(batch)

    def drain(self) -> None:
        """Commit whatever was gathered or is queued now (shutdown path)."""
        batch, self._gathering = self._gathering, []
        while not self.inbound.empty():
            batch.append(self.inbound.get_nowait())
        if batch:
            self.commit(batch)

    def commit(self, batch: list[PollResult | BusEvent]) -> None:
        if self.clock is not None:
            self.clock.check()
        messages: list[OutboxMessage] = []
        polled: list[tuple[PollResult, list[ReadRecord]]] = []
        backfilled: list[IntervalRecords] = []
        self._seed_bus_faults()
        for item in batch:
            if isinstance(item, IntervalRecords):  # meters' own records, for VEE (backfill.py)
                backfilled.append(item)
                continue
            if isinstance(item, BusEvent):
                self._changes(self.bus_faults.on_comm_loss(item, self._mains_lost))
                continue
            self._changes(self.bus_faults.on_poll(item.meter_id, item.bus, item.ok,
                                                  item.finished_ms))
            self._changes(self.meter_outages.on_poll(item.meter_id, item.ok, item.finished_ms,
                                                     item.flags, self._mains_lost))
            self._record_checks()
            self.stats.polls += 1
            polled.append((item, self._records(item)))
            self._flags(item)
        # --- VEE stage (gateway/pipeline/vee_stage.py): grades grid reads in place, adds the interval
        # records that came due (estimates, re-published intervals) as messages of their own.
        vee_reads: list[tuple[str, list[ReadRecord]]] = []
        vee_now = wall_ms()
        if self.vee is not None:
            try:
                if backfilled:
                    vee_reads = self.vee.backfill_records(backfilled, vee_now)
                vee_reads += self.vee.apply(polled, vee_now)
            except Exception:  # a VEE bug (any error) must not stop reads from being stored
                log.exception("VEE failed on a batch of %d polls; their reads go out with basic "
                              "validation only — please report this with the log", len(polled))
            self._field_reads(polled, vee_reads, vee_now)
        # --- end VEE stage
        for item, records in polled:
            if records:
                messages.append(self._reads_message(item.meter_id, item.finished_ms, records))
        if vee_reads:  # each re-published interval names what it supersedes (corrections.py)
            messages += self.corrections.messages(messages, vee_reads, vee_now)
            self._withdraw_rejected(vee_reads)
        writer = self.writer
        writer.write(messages)
        self.stats.commits, self.stats.held = writer.stats.commits, writer.held
        self.stats.dropped = writer.stats.dropped
        if polled and self.feed.wanted:
            self.feed.publish(self._validated(item, records) for item, records in polled)

    def _withdraw_rejected(self, vee_reads: list[tuple[str, list[ReadRecord]]]) -> None:
        """Reads VEE rejected after they went out as actual (``S``/``N`` with the meter's value
        in ``raw``) stop being the reference of the basic decrease check (validation.py)."""
        for meter, records in vee_reads:
            for record in records:
                if record.rev and record.quality in ("S", "N") and isinstance(record.raw, Decimal):
                    substitute = record.val if isinstance(record.val, Decimal) else None
                    self.registers.withdraw(meter, record.q, record.raw, substitute)

    def _changes(self, changes: list[AlarmChange]) -> None:
        for change in changes:
            for c in self.meter_outages.filter(change):
                self._alarm(c.kind, c.key, c.state, c.meter, c.details, c.t_ms)

    def _record_checks(self) -> None:
        checks, self.meter_outages.checks = self.meter_outages.checks, []
        for check in checks:
            if self.record_checks is not None:
                self.record_checks(check)
            else:
                self.power_down_record(check, None, None, "no power-down record reader")

    def power_down_record(self, check: RecordCheck, start_ms: int | None, end_ms: int | None,
                          error: str | None) -> None:
        """The record a :class:`RecordCheck` asked for (the runtime's reader calls this)."""
        for c in self.meter_outages.on_record(check, start_ms, end_ms, error, wall_ms()):
            self._alarm(c.kind, c.key, c.state, c.meter, c.details, c.t_ms)

    def _seed_bus_faults(self) -> None:
        """``comm.bus``, ``outage.meter`` and ``outage.phase`` alarms raised before a restart or
        reload are cleared by the first answer of their bus, meter or phase (read once, at the
        first commit)."""
        if self._bus_faults_seeded:
            return
        self._bus_faults_seeded = True
        try:
            active = self.store.active_alarms()
            self.bus_faults.seed(a.key for a in active)
            self.meter_outages.seed(
                (a.key, start if isinstance(start := a.details.get("start_ms"), int)
                 else a.raised_ms) for a in active)
        except StoreError as exc:
            log.warning("raised comm.bus / outage alarms cannot be read (%s): a bus cut or "
                        "outage before the restart is cleared only if it happens again first",
                        exc)

    def _mains_lost(self) -> bool:
        """Whether the gateway's power-fail input reported mains lost: an ``outage.area``
        alarm is raised (gateway/analytics/outages.py). No input, or nothing raised: present."""
        try:
            return any(a.kind == "outage.area" for a in self.store.active_alarms())
        except StoreError:
            return False

    @staticmethod
    def _validated(item: PollResult, records: list[ReadRecord]) -> ValidatedPoll:
        return _validated_poll(item.meter_id, item.bus, item.finished_ms, item.ok,
                               tuple(records), item.values, item.flags)

    def _field_reads(self, polled: list[tuple[PollResult, list[ReadRecord]]],
                     vee_reads: list[tuple[str, list[ReadRecord]]], t_ms: int) -> None:
        """The ``prolonged_estimation`` rule's reason 9 on a meter's reads means "send someone
        to read this meter": raise ``vee.field_read`` for it (once), and clear it when the meter
        delivers an actual, unflagged interval read again. Kept in memory (seeded from the
        store's active alarms) so the common poll costs no query."""
        if self._field_read is None:
            self._field_read = {a.key.split("/", 1)[1] for a in self.store.active_alarms()
                                if a.kind == FIELD_READ_ALARM}
        needing = {meter for meter, records in chain(((p.meter_id, r) for p, r in polled), vee_reads)
                   if _under_investigation(records)}
        for meter in needing - self._field_read:
            self._field_read.add(meter)
            self._alarm(FIELD_READ_ALARM, f"{FIELD_READ_ALARM}/{meter}", "raised", meter,
                       {"reason": Reason.UNDER_INVESTIGATION,
                        "hint": f"meter {meter}: its intervals have been estimated for too long "
                                "(VEE rule prolonged_estimation) — send a field read"}, t_ms)
        if not self._field_read:
            return
        for poll, records in polled:
            meter = poll.meter_id
            if meter in self._field_read and meter not in needing and any(
                    r.q == GRID_QUANTITY and r.quality == "A" and not r.reasons
                    for r in records):
                self._field_read.discard(meter)
                self._alarm(FIELD_READ_ALARM, f"{FIELD_READ_ALARM}/{meter}", "cleared", meter,
                           {"hint": f"meter {meter} delivers actual reads again"}, t_ms)

    def _read_topic(self, meter_id: str) -> str:
        topic = self._read_topics.get(meter_id)
        if topic is None:
            topic = self._read_topics[meter_id] = self.topics.reads(meter_id)
        return topic

    def _reads_message(self, meter_id: str, ts: int, records: list[ReadRecord]) -> OutboxMessage:
        topic = self._read_topics.get(meter_id)
        if topic is None:
            topic = self._read_topic(meter_id)
        return OutboxMessage.for_reads(
            topic=topic, gw=self.gateway_id, epoch=self.store.epoch,
            ts=ts, meter=meter_id, reads=records, binding=self.aliases.get(meter_id))

    def _records(self, result: PollResult) -> list[ReadRecord]:
        records: list[ReadRecord] = []
        classify = self.registers.classify
        actual = ReadRecord.actual
        meter = result.meter_id
        flagged = 0
        windows = FLOAT_WINDOWS
        for pv in result.values:
            value = pv.value
            kind = type(value)
            if kind is float:
                # Most values: an instantaneous float inside its physical bounds is actual.
                window = windows.get(pv.quantity, ()) or float_window(pv.quantity)
                if window is not None and window[0] <= value <= window[1]:  # type: ignore[operator]
                    records.append(actual(pv.quantity, value, pv.unit or "", pv.t_ms))  # type: ignore[arg-type]
                    continue
            elif kind is int:
                value = Decimal(value)  # type: ignore[arg-type]
            elif kind is not float and kind is not Decimal:
                continue  # text (status words, clock) is published through alarms / flags
            quality, reasons, _rollover = classify(meter, pv.quantity, value)
            if quality == "A":
                records.append(actual(pv.quantity, value, pv.unit or "", pv.t_ms))  # type: ignore[arg-type]
                continue
            flagged += 1
            rejected = quality == "N"
            records.append(ReadRecord(q=pv.quantity, val=None if rejected else value,  # type: ignore[arg-type]
                                      unit=pv.unit or "", t=pv.t_ms, quality=quality,
                                      reasons=reasons, raw=value if rejected else None))  # type: ignore[arg-type]
        self.stats.flagged += flagged
        self.stats.reads += len(records)
        return records

    def _flags(self, result: PollResult) -> None:
        if not result.flags:
            return  # a Modbus poll has none
        for flag, kind in FLAG_ALARMS.items():
            if flag not in result.flags:
                continue
            on = result.flags[flag]
            key = (result.meter_id, flag)
            if self._flag_state.get(key) == on:
                continue
            self._flag_state[key] = on
            self._alarm(kind, f"{kind}/{result.meter_id}/{flag}", "raised" if on else "cleared",
                        result.meter_id, {"flag": flag}, result.finished_ms)

    def _alarm(self, kind: str, key: str, state: str, meter: str | None,
               details: dict[str, object], t_ms: int) -> None:
        if self.alarms.transition(kind, key, state, meter, details, t_ms):
            self.stats.alarms += 1


#: ValidatedPoll(...) with every field given, without the frozen dataclass's __init__
#: (one per poll, protocols/frozen.py).
_validated_poll = frozen_maker(ValidatedPoll)


def _under_investigation(records: list[ReadRecord]) -> bool:
    """Whether a record carries reason 9 (a plain loop: nearly every record has no reasons,
    and this runs for every poll)."""
    for record in records:
        if record.reasons and Reason.UNDER_INVESTIGATION in record.reasons:
            return True
    return False
