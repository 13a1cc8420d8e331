"""Daily line loss per transformer area and daily energy per summation group, in the daemon.

What happens, in production and in the test rigs alike (docs/reconciliation.md, *The daemon*):

1. **Frozen values arrive with ordinary polls.** A DL/T 645 meter whose profile reads the daily
   freeze (05060001 time, 05060101 import, 05060201 export; ``lastN`` for older days) reports
   the registers it froze at 00:00 and the stamp of that instant, so the day is the meter's
   own; a freeze is taken once two polls agree on it (a poll straddling the meter's midnight
   pairs yesterday's stamp with today's registers). A meter without a freeze register (Modbus)
   is read at 00:00 by the gateway's clock in
   ``[reconcile] utc_offset_min``: a read in the first minute after midnight is the actual
   frozen value, otherwise one is interpolated between the reads around midnight when both are
   within ``max_gap_min`` (quality E) — the same rule as ``gwtool reconcile``.
2. **They are kept in the store** (``daily_history``, per meter and day, the register at that
   day's 00:00), so a restart loses no day and the band keeps its history.
3. **A day is closed** for an area (or a group that is no area's sub-meters) when every one of
   its meters reported the next 00:00 freeze (or a later one), or ``freeze_wait_s`` after the
   first of them reported it; then the day is reconciled with what arrived (missing meters
   count against the coverage gate).
4. **The result is a durable outbox message** on ``P/G/groups/{subs group}``: the group's exact
   energy of the day (``totals``, with ``day``) and, for an area, the ``loss`` record — loss %,
   status, coverage, the learned band and the suspects with their evidence. The message and the
   record that the day is done (the area's status under its id in ``daily_history``) commit in
   one transaction: a crash neither loses nor repeats a day, and the statuses of past days are
   never re-judged (they are ``given_status`` to the pipeline).

The arithmetic is :func:`edge_rules.line_loss.reconcile_areas` — the composition
``gwtool reconcile`` runs — over up to ``history_days`` of stored freezes, in a worker thread
(the kernels release the GIL) so polling never waits for it. Importing this module loads numba;
the daemon imports it only when groups are configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import numpy as np

from edge_rules.codes import QUALITY_A, QUALITY_E, QUALITY_N
from edge_rules.groups import build_layout
from edge_rules.line_loss import LineLoss, reconcile_areas
from edge_rules.reconcile import STATUS_HIGH, STATUS_NAMES, UNCLASSIFIED
from edge_rules.reconcile_freeze import midnight_freeze
from edge_rules.theft import INDICATOR_WEIGHTS
from gateway.analytics.theft import KINDS as THEFT_KINDS
from gateway.analytics.theft import alarm_key
from gateway.config import AreaConfig, GatewayConfig, GroupConfig
from gateway.config.reconcile import band_settings, suspect_settings
from gateway.pipeline.committer import FLAG_ALARMS
from gateway.pipeline.feed import ValidatedPoll
from gateway.pipeline.outbox import OutboxWriter
from gateway.store.errors import StoreError
from gateway.store.records import DailyValue, OutboxMessage
from protocols.payload import AreaLoss, Envelope, GroupTotal, Suspect, build_group
from protocols.topics import QOS_DEFAULT, GatewayTopics

log = logging.getLogger(__name__)

IMPORT_Q: Final = "energy.active.import.total"
EXPORT_Q: Final = "energy.active.export.total"
#: Stored under an area's id: the status decided for the day (0..3, edge_rules.reconcile codes).
#: Its presence also records that the day's message was committed.
STATUS_Q: Final = "line_loss.status"
#: Stored under the id of a group that is no area's sub-meters: its published day energy.
GROUP_Q: Final = "group.energy.active.day"
FREEZE_TIME: Final = re.compile(r"freeze\.daily\.last(\d+)\.time")
DAY_MS: Final = 86_400_000
#: Days of frozen values held in memory to decide which days are complete; DL/T 645 meters
#: keep 62 daily freezes, so nothing older can still arrive.
RECENT_DAYS: Final = 62
_CODES: Final = {"A": QUALITY_A, "E": QUALITY_E}
#: Meter alarms that are evidence of tampering, and their ranking weight (added to the drop
#: score, 0..1; the weights of ``gwtool reconcile``'s indicators for the same conditions).
ALARM_EVIDENCE: Final = {
    "meter.voltage_loss": 1.0,
    "meter.cover_open": 0.75,
    "meter.terminal_cover_open": 0.75,
    # The daemon's own indicators on polled values (gateway/analytics/theft.py).
    **INDICATOR_WEIGHTS,
}


@dataclass(frozen=True, slots=True)
class Unit:
    """What gets one message per day: an area with its sub-meter group, or a group that is no
    area's sub-meters. ``meters``: every meter whose freezes it needs (master first)."""

    id: str
    group: GroupConfig
    area: AreaConfig | None
    meters: tuple[str, ...]

    @property
    def marker(self) -> str:
        return STATUS_Q if self.area is not None else GROUP_Q


@dataclass(frozen=True, slots=True)
class DayResult:
    """One unit's outcome for one day, ready to publish."""

    unit: Unit
    day: dt.date
    total: GroupTotal
    loss: AreaLoss | None
    status: int | None


def _units(config: GatewayConfig) -> list[Unit]:
    groups = {group.id: group for group in config.groups}
    units: list[Unit] = []
    for area in config.areas:
        group = groups[area.subs]
        members = tuple(dict.fromkeys(m.meter for m in group.members))
        units.append(Unit(area.id, group, area, (area.master, *members)))
    subs = {area.subs for area in config.areas}
    for group in config.groups:
        if group.id not in subs:
            units.append(Unit(group.id, group, None, tuple(dict.fromkeys(m.meter for m in group.members))))
    return units


def _day_index(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def _finite(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


class AreaReconciler:
    """Collects frozen values from polls, and publishes each closed day once (see module doc).

    ``clock`` (UTC seconds) stamps the messages (Modbus reads are placed around midnight by
    their own poll times); ``monotonic`` times ``freeze_wait_s``. Both are parameters so the
    tests can drive them.
    """

    def __init__(
        self,
        config: GatewayConfig,
        writer: OutboxWriter,
        topics: GatewayTopics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.settings = config.reconcile
        self.writer = writer
        self.store = writer.store
        self.topics = topics
        self._clock = clock
        self._monotonic = monotonic
        self.band = band_settings(config.reconcile)
        self.suspects = suspect_settings(config.reconcile)
        self.units = _units(config)
        self.meters = sorted({meter for unit in self.units for meter in unit.meters})
        self._scope = set(self.meters)
        meters = {m.id: m for m in config.meters}
        self.ratios = {m: meters[m].ct_ratio * meters[m].pt_ratio for m in self.meters}
        self._offset_ms = config.reconcile.utc_offset_min * 60_000
        self._gap_ms = round(config.reconcile.max_gap_min * 60_000)
        # (meter, quantity, day) -> (value, quality) of the recent frozen values in the store
        self._known: dict[tuple[str, str, dt.date], tuple[Decimal | None, str]] = {}
        self._first_seen: dict[dt.date, float] = {}
        self._done: set[tuple[str, dt.date]] = set()
        self._freeze_meters: set[str] = set()
        self._last_read: dict[tuple[str, str], tuple[int, Decimal]] = {}
        # (meter, n of freeze.daily.lastN, quantity) -> (day, register) of the previous poll
        self._last_freeze: dict[tuple[str, int, str], tuple[dt.date, Decimal]] = {}
        self._warned: set[str] = set()
        self._wake = asyncio.Event()
        self.published = 0
        self._load()

    # -- state from the store -----------------------------------------------------------------
    def _load(self) -> None:
        """The recent freezes and finished days, so a restart resumes where it stopped; a day
        frozen before the stop but not yet published waits ``freeze_wait_s`` from now (or less,
        if its meters are complete)."""
        now = self._monotonic()
        newest = self.store.newest_daily(IMPORT_Q)
        if newest is None:
            return
        # Relative to the newest freeze, not to the clock: meters' days are their own.
        since = newest - dt.timedelta(days=RECENT_DAYS + 1)
        for meter in self.meters:
            for quantity in (IMPORT_Q, EXPORT_Q):
                for row in self.store.get_daily(meter, quantity, since, dt.date.max):
                    self._known[(row.meter, row.quantity, row.day)] = (row.value, row.quality)
                    if row.quantity == IMPORT_Q:
                        self._first_seen.setdefault(row.day, now)
        for unit in self.units:
            for row in self.store.get_daily(unit.id, unit.marker, since, dt.date.max):
                self._done.add((unit.id, row.day))

    # -- frozen values from polls -------------------------------------------------------------
    def on_poll(self, result: ValidatedPoll) -> None:
        """Committer listener: keep any frozen value the poll carried (cheap when none)."""
        if result.meter_id not in self._scope or not result.ok:
            return
        values = {v.quantity: v for v in result.values}
        fresh = self._freezes(result.meter_id, values)
        if result.meter_id not in self._freeze_meters:
            for quantity in (IMPORT_Q, EXPORT_Q):
                read = values.get(quantity)
                if read is not None and isinstance(read.value, Decimal):
                    fresh.extend(self._register_freeze(result.meter_id, quantity, read.t_ms, read.value))
        if fresh:
            self.store.put_daily(fresh)
            now = self._monotonic()
            for value in fresh:
                self._known[(value.meter, value.quantity, value.day)] = (value.value, value.quality)
                if value.quantity == IMPORT_Q:
                    self._first_seen.setdefault(value.day, now)
            self._wake.set()

    def _freezes(self, meter: str, values: Mapping[str, object]) -> list[DailyValue]:
        """The DL/T 645 daily freezes in a poll: ``freeze.daily.lastN.time`` with the registers
        frozen then. Only 00:00 freezes are used: another freeze time would compare a different
        instant with the other meters'."""
        out: list[DailyValue] = []
        for quantity, polled in values.items():
            match = FREEZE_TIME.fullmatch(quantity)
            if match is None:
                continue
            self._freeze_meters.add(meter)
            stamp_text = getattr(polled, "value", None)
            try:
                stamp = dt.datetime.fromisoformat(str(stamp_text))
            except ValueError:
                continue  # an empty freeze record (a new meter): nothing frozen yet
            if (stamp.hour, stamp.minute) != (0, 0):
                if meter not in self._warned:
                    self._warned.add(meter)
                    log.warning(
                        "meter %s freezes its daily registers at %02d:%02d, not 00:00: its "
                        "freezes are not used for line loss — set the meter's daily freeze "
                        "time to 00:00", meter, stamp.hour, stamp.minute)
                continue
            n = int(match.group(1))
            prefix = f"freeze.daily.last{n}.energy.active"
            for quantity_out, source in ((IMPORT_Q, f"{prefix}.import.total"),
                                         (EXPORT_Q, f"{prefix}.export.total")):
                register = getattr(values.get(source), "value", None)
                if not (isinstance(register, Decimal) and register.is_finite()):
                    continue
                # The time and the registers of a freeze are separate transactions: a poll that
                # straddles the meter's midnight reads yesterday's stamp with today's registers
                # (seen on the simulated line, and real meters freeze while being polled). Such
                # a pair never repeats, so a freeze is taken only when two polls agree on it.
                pair = (stamp.date(), register)
                previous = self._last_freeze.get((meter, n, quantity_out))
                self._last_freeze[(meter, n, quantity_out)] = pair
                key = (meter, quantity_out, stamp.date())
                if previous == pair and self._known.get(key) != (register, "A"):
                    out.append(DailyValue(meter, quantity_out, stamp.date(), register, "A"))
        return out

    def _register_freeze(self, meter: str, quantity: str, t_ms: int,
                         value: Decimal) -> list[DailyValue]:
        """A meter without a freeze register: its register at local 00:00 from this read and
        the previous one, by :func:`edge_rules.reconcile_freeze.midnight_freeze` (the rule
        ``gwtool reconcile`` applies to a CSV). An interpolated value never replaces one the
        day already has (from the store after a restart, or a read of the same day)."""
        local = t_ms + self._offset_ms
        into = local % DAY_MS
        midnight = t_ms - into
        day = dt.date(1970, 1, 1) + dt.timedelta(days=local // DAY_MS)
        previous = self._last_read.get((meter, quantity))
        self._last_read[(meter, quantity)] = (t_ms, value)
        known = self._known.get((meter, quantity, day))
        freeze = midnight_freeze(midnight, previous, (t_ms, value), self._gap_ms)
        if freeze is None:
            return []
        if not freeze.interpolated:
            return [] if known == (value, "A") else [DailyValue(meter, quantity, day, value, "A")]
        if known is not None:
            return []
        return [DailyValue(meter, quantity, day, freeze.value, "E")]

    # -- which days are due ---------------------------------------------------------------------
    def _has(self, meter: str, day: dt.date) -> bool:
        return (meter, IMPORT_Q, day) in self._known

    def due(self) -> list[tuple[Unit, dt.date]]:
        """(unit, day) pairs ready to publish, oldest day first. Day X is due when a meter of
        the unit has X's opening freeze and X + 1 is closed (see the module doc)."""
        now = self._monotonic()
        days = sorted({day for (_m, q, day) in self._known if q == IMPORT_Q})
        out: list[tuple[Unit, dt.date]] = []
        for unit in self.units:
            reported = [d for d in days if any(self._has(m, d) for m in unit.meters)]
            for i, end in enumerate(reported):
                day = end - dt.timedelta(days=1)
                if (unit.id, day) in self._done or not any(self._has(m, day) for m in unit.meters):
                    continue
                # A later day complete means the meters still missing ``end`` will not bring
                # it any more (a backfill brings several days in one poll, so "later" must be
                # complete, not merely reported by one meter).
                closed = any(all(self._has(m, later) for m in unit.meters)
                             for later in reported[i:])
                waited = now - self._first_seen.get(end, now) >= self.settings.freeze_wait_s
                if closed or waited:
                    out.append((unit, day))
        out.sort(key=lambda pair: pair[1])
        return out

    # -- the daily results ----------------------------------------------------------------------
    def _history(self, meters: Sequence[str], first: dt.date, last: dt.date,
                 quantity: str) -> dict[str, dict[dt.date, DailyValue]]:
        return {m: {v.day: v for v in self.store.get_daily(m, quantity, first, last)}
                for m in meters}

    def _day_start_ms(self, day: dt.date) -> int:
        return _day_index(day) * DAY_MS - self._offset_ms

    def _group_total(self, group: GroupConfig, day: dt.date,
                     imports: Mapping[str, Mapping[dt.date, DailyValue]],
                     exports: Mapping[str, Mapping[dt.date, DailyValue]]) -> GroupTotal:
        """The group's energy of ``day``, exact: Σ sign × CT × PT × (register at the next 00:00
        − register at this 00:00). Only a complete total carries a value (a partial one would
        look like a drop in load); it is A when every freeze was actual, else E."""
        total = Decimal(0)
        missing: list[str] = []
        actual = 0
        estimated = False
        following = day + dt.timedelta(days=1)
        for member in group.members:
            source = imports if member.direction == "import" else exports
            start = source.get(member.meter, {}).get(day)
            end = source.get(member.meter, {}).get(following)
            if (start is None or end is None or start.value is None or end.value is None
                    or end.value < start.value):
                missing.append(member.meter)
                continue
            energy = (end.value - start.value) * self.ratios[member.meter]
            total += energy if member.sign == "+" else -energy
            if start.quality == "A" and end.quality == "A":
                actual += 1
            else:
                estimated = True
        complete = not missing
        return GroupTotal(
            q=IMPORT_Q, val=total if complete else None, unit="kWh", t=self._day_start_ms(day),
            quality=("E" if estimated else "A") if complete else "N",
            coverage=actual / len(group.members), missing=tuple(dict.fromkeys(missing)),
            day=day.isoformat())

    def compute(self, unit: Unit, day: dt.date) -> DayResult:
        """Everything published for ``unit`` on ``day``, from the stored freezes. Reads the
        store; the pipeline runs on plain arrays (safe in a worker thread: the store has its
        own lock)."""
        first = day - dt.timedelta(days=self.settings.history_days - 1)
        following = day + dt.timedelta(days=1)
        imports = self._history(unit.meters, first, following, IMPORT_Q)
        exports = self._history(unit.meters, first, following, EXPORT_Q)
        total = self._group_total(unit.group, day, imports, exports)
        if unit.area is None:
            return DayResult(unit, day, total, None, None)
        seen = [d for rows in imports.values() for d in rows]
        first = max(first, min(seen, default=day))
        n_days = (day - first).days + 1
        meters = list(unit.meters)
        shape = (len(meters), n_days + 1)
        import_values = np.full(shape, np.nan)
        import_quality = np.full(shape, QUALITY_N, dtype=np.uint8)
        export_values = np.full(shape, np.nan)
        export_quality = np.full(shape, QUALITY_N, dtype=np.uint8)
        for values, quality, rows in ((import_values, import_quality, imports),
                                      (export_values, export_quality, exports)):
            for i, meter in enumerate(meters):
                for when, stored in rows[meter].items():
                    j = (when - first).days
                    if 0 <= j <= n_days and stored.value is not None and stored.quality in _CODES:
                        values[i, j] = float(stored.value)
                        quality[i, j] = _CODES[stored.quality]
        given = np.full((1, n_days), UNCLASSIFIED, dtype=np.uint8)
        for stored in self.store.get_daily(unit.id, STATUS_Q, first, day - dt.timedelta(days=1)):
            if stored.value is not None:
                given[0, (stored.day - first).days] = int(stored.value)
        ratios = {m: float(r) for m, r in self.ratios.items()}
        names = [(first + dt.timedelta(days=j)).isoformat() for j in range(n_days)]
        result = reconcile_areas(
            [unit.area], build_layout([unit.group], ratios), ratios, meters, names,
            import_values, import_quality, export_values, export_quality,
            band=self.band, suspects=self.suspects, given_status=given)
        if result.status[0, n_days - 1] == STATUS_HIGH:
            # Suspects are named when the loss rises; a tamper alarm on that day adds to a
            # meter's rank (and names a meter whose drop alone would not).
            evidence = self._alarm_evidence(meters, day)
            if evidence:
                result = dataclasses.replace(
                    result, indicator_evidence={(m, n_days - 1): e for m, e in evidence.items()})
        record = result.record(0, n_days - 1)
        master = imports[unit.area.master]
        start, end = master.get(day), master.get(following)
        exact_input = None
        if start is not None and end is not None and start.value is not None and end.value is not None:
            exact_input = (end.value - start.value) * self.ratios[unit.area.master]
        loss = AreaLoss(
            area=unit.area.id, day=day.isoformat(), status=record.status,
            coverage=float(record.coverage),
            input=exact_input if record.input_kwh is not None else None,
            output=self._output(total, record.output_kwh),
            loss_pct=record.loss_pct,
            suspects=tuple(self._suspect(result, n_days - 1, s.meter, s.score, s.evidence)
                           for s in record.suspects),
            band_center_pct=_finite(record.band_center_pct)
            if record.band_center_pct is not None else None,
            band_halfwidth_pct=_finite(record.band_halfwidth_pct)
            if record.band_halfwidth_pct is not None else None,
        )
        return DayResult(unit, day, total, loss, STATUS_NAMES.index(record.status))

    def _alarm_evidence(self, meters: Sequence[str], day: dt.date) -> dict[str, list[tuple[str, float]]]:
        """Tamper alarms (status-word flags the committer raised, the theft monitor's alarms)
        active at some time during ``day``, as (evidence, weight) per meter."""
        start = self._day_start_ms(day)
        end = start + DAY_MS
        found: dict[str, list[tuple[str, float]]] = {}
        for meter in meters:
            keys = [(f"{kind}/{meter}/{flag}", kind, f" ({flag})")
                    for flag, kind in FLAG_ALARMS.items() if kind in ALARM_EVIDENCE]
            keys += [(alarm_key(kind, meter), kind, "") for kind in THEFT_KINDS]
            for key, kind, flag in keys:
                weight = ALARM_EVIDENCE[kind]
                state = self.store.alarm(key)
                if state is None or state.raised_ms >= end:
                    continue
                if state.cleared_ms is not None and state.cleared_ms < start:
                    continue
                raised = dt.datetime.fromtimestamp(state.raised_ms / 1000, dt.UTC)
                until = ("still active" if state.cleared_ms is None else "cleared "
                         + dt.datetime.fromtimestamp(state.cleared_ms / 1000, dt.UTC)
                         .strftime("%Y-%m-%dT%H:%MZ"))
                hint = state.details.get("hint")
                found.setdefault(meter, []).append(
                    (f"{kind}{flag} raised {raised.strftime('%Y-%m-%dT%H:%MZ')}, {until}"
                     + (f": {hint}" if hint else ""), weight))
        return found

    @staticmethod
    def _output(total: GroupTotal, pipeline_kwh: float | None) -> Decimal | None:
        """The sub-meters' energy: the exact sum when every member had both freezes, else the
        pipeline's (gaps bridged by estimates) at 0.001 kWh."""
        if isinstance(total.val, Decimal):
            return total.val
        if pipeline_kwh is None:
            return None
        return Decimal(f"{pipeline_kwh:.3f}")

    def _suspect(self, result: LineLoss, day: int, meter: str, score: float,
                 evidence: Iterable[str]) -> Suspect:
        """A suspect with its evidence as numbers: what it reported, what its share of the
        master predicts, over which window, and the thresholds it crossed."""
        details: dict[str, object] = {}
        rows = [r for r, m in enumerate(result.customer_meters) if m == meter]
        if rows:
            r = rows[0]
            s = result.settings
            details = {
                "recent_kwh_per_day": _finite(result.recent[r, day]),
                "expected_kwh_per_day": _finite(result.expected[r, day]),
                "deficit_kwh_per_day": _finite(result.deficit[r, day]),
                "area_excess_kwh_per_day": _finite(result.recent_excess[r, day]),
                "explains": _finite(result.explains[r, day]),
                "significance": _finite(result.significance[r, day]),
                "window_days": s.recent_days,
                "baseline_days": s.baseline_days,
                "min_drop_pct": round(100 * s.min_drop, 4),
                "min_deficit_kwh": s.min_deficit_kwh,
                "min_significance": s.min_significance,
                "min_explained": s.min_explained,
            }
        return Suspect(meter=meter, score=float(score), evidence=tuple(evidence),
                       details=details or None)

    def commit(self, result: DayResult) -> int:
        """Publish one day: the message and the record that the day is done, one transaction."""
        unit = result.unit
        if unit.area is not None:
            assert result.status is not None
            marker = DailyValue(unit.id, STATUS_Q, result.day, Decimal(result.status), "A")
        else:
            value = result.total.val if isinstance(result.total.val, Decimal) else None
            marker = DailyValue(unit.id, GROUP_Q, result.day, value,
                                result.total.quality if value is not None else "N")
        gateway = self.config.gateway.id
        now_ms = round(self._clock() * 1000)
        total, loss, group = result.total, result.loss, unit.group.id

        def build(seq: int) -> bytes:
            return build_group(Envelope(gateway, self.store.epoch, seq, now_ms), group,
                               totals=[total], loss=loss)

        message = OutboxMessage(topic=self.topics.groups(group), qos=QOS_DEFAULT, build=build)
        seq = self.writer.write_daily([marker], message, now_ms)
        self._done.add((unit.id, result.day))
        self.published += 1
        if loss is not None:
            log.info("area %s %s: %s, loss %s %%, coverage %.3f, suspects %s", loss.area,
                     loss.day, loss.status, loss.loss_pct, loss.coverage,
                     [s.meter for s in loss.suspects] or "none")
        return seq

    def _forget_old(self) -> None:
        """Keep the in-memory view to the days that can still change (bounded memory)."""
        days = [day for (_m, _q, day) in self._known]
        if not days:
            return
        oldest = max(days) - dt.timedelta(days=RECENT_DAYS + 1)
        self._known = {k: v for k, v in self._known.items() if k[2] >= oldest}
        self._first_seen = {d: t for d, t in self._first_seen.items() if d >= oldest}
        self._done = {(u, d) for (u, d) in self._done if d >= oldest}

    async def process(self) -> int:
        """Publish every due day, oldest first; returns how many."""
        count = 0
        self._forget_old()
        for unit, day in self.due():
            result = await asyncio.to_thread(self.compute, unit, day)
            self.commit(result)
            count += 1
        return count

    async def run(self) -> None:
        """Wake on new freezes, and at least every few seconds to honour ``freeze_wait_s``."""
        tick = min(60.0, max(1.0, self.settings.freeze_wait_s / 4))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            try:
                await self.process()
            except StoreError as exc:
                # A full disk or a damaged row: the day stays due and is tried again on the next
                # wake. Anything else is a bug and ends this task (the supervisor reports it).
                log.error("daily line loss not stored (%s); retrying on the next freeze or in "
                          "%.0f s", exc, tick)
                await asyncio.sleep(tick)
