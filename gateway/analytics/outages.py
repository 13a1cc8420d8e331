"""Area outages from the gateway's own power-fail input (docs/outages.md).

A gateway in a transformer area loses mains together with its meters; a UPS or supercap HAT
keeps it up for ``[power] hold_up_s`` and says so on a GPIO line, read here as a file every
100 ms. The CRM must hear of the outage before the customers call, so the ``outage.area``
alarm is raised within seconds — but not for every flicker: a recloser's dip lasts a second or
two, and ``[outage] min_duration_s`` (IEEE 1366: momentary) says what is not an outage.

The rule that satisfies both (timelines in docs/outages.md):

- a loss is *reported* once it has lasted ``min(min_duration_s, REPORT_AFTER_S)``: one
  ``outage.area`` alarm per area the gateway serves (raised ≤ 5 s after the input flips);
- a loss that ends before it is reported raises nothing: one ``outage.momentary`` record per
  area (raised and cleared at once) says it happened;
- a reported loss is cleared on restore with ``end_ms`` and ``duration_s`` from the gateway's
  monotonic clock; when it lasted less than ``min_duration_s`` the clear says
  ``momentary: true`` (the suspicion withdrawn: it was no outage);
- a reported loss that lasts ``hold_up_s - stop_margin_s`` asks the daemon to stop (the hold-up
  rule, :meth:`PowerWatch.hold_up_due`): the battery runs out at ``hold_up_s``, and a clean stop
  (commit, spill, final drain, MQTT death message) needs the margin.

:class:`PowerWatch` holds the rules and no I/O (the tests drive it with a fake clock);
:func:`watch_power` is the supervised task that reads the file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.acquisition.base import is_dlt645_bus
from gateway.config.model import GatewayConfig
from gateway.errors import GatewayError
from protocols.dlt645 import ProtocolError, ReadRequest, Version
from protocols.dlt645.items import Reading

if TYPE_CHECKING:
    from gateway.acquisition.dlt645_bus import Dlt645Bus

log = logging.getLogger(__name__)

OUTAGE_AREA = "outage.area"
OUTAGE_MOMENTARY = "outage.momentary"
#: How often the power-fail input is read (the issue: every ≤ 100 ms).
POLL_INTERVAL_S = 0.1
#: A loss this long is reported even when min_duration_s is longer: the alarm must reach the
#: CRM ≤ 5 s after the input flips, and commit and publish take the rest of those 5 s.
REPORT_AFTER_S = 3.0
#: A hook that asks the daemon to stop cleanly, with the reason for its log (the runtime passes
#: the daemon's; analytics may not import gateway.app).
RequestStop = Callable[[str], None]
#: The area of a gateway without [[areas]]: every meter it polls.
GATEWAY_AREA = "gateway"


@dataclass(frozen=True, slots=True)
class ServedArea:
    """An area the gateway serves: its meters and their customers, in configuration order."""

    id: str
    meters: tuple[str, ...]
    customers: tuple[str, ...]


def served_areas(config: GatewayConfig) -> tuple[ServedArea, ...]:
    """The [[areas]] (master and the group's sub-meters), or one area of every meter."""
    customer = {meter.id: meter.customer for meter in config.meters}

    def area(area_id: str, meter_ids: Sequence[str]) -> ServedArea:
        meters = tuple(dict.fromkeys(meter_ids))
        customers = tuple(dict.fromkeys(c for m in meters if (c := customer.get(m)) is not None))
        return ServedArea(area_id, meters, customers)

    if not config.areas:
        return (area(GATEWAY_AREA, [meter.id for meter in config.meters]),)
    return tuple(
        area(a.id, [a.master, *(member.meter for member in config.group(a.subs).members)])
        for a in config.areas
    )


class PlannedWindows(Protocol):
    """Planned outages in force (gateway/control/commands/planned.py, wired by the runtime)."""

    def covers(self, area: str, meters: Sequence[str], t_ms: int) -> bool: ...


class AlarmSink(Protocol):
    """What the watch needs of the pipeline's alarm service (gateway/pipeline/alarms.py)."""

    def raise_(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
               t_ms: int) -> bool: ...

    def clear(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
              t_ms: int) -> bool: ...


@dataclass(slots=True)
class _Loss:
    start_mono: float
    start_ms: int
    reported: bool = False
    #: Where the battery's hold-up is counted from (monotonic): the loss start, or this
    #: process's start for a loss carried over from before it (see PowerWatch.resume).
    hold_up_from: float | None = None
    #: The stop was asked for (once per loss).
    stop_requested: bool = False


class PowerWatch:
    """The outage rules over observations of the power-fail input; no I/O of its own."""

    def __init__(self, areas: Sequence[ServedArea], alarms: AlarmSink, *, min_duration_s: float,
                 hold_up_s: float, report_after_s: float = REPORT_AFTER_S,
                 planned: PlannedWindows | None = None, stop_margin_s: float = 0.0,
                 request_stop: RequestStop | None = None) -> None:
        self.areas = tuple(areas)
        #: Asked once a reported loss has lasted hold_up_s - stop_margin_s; None: never stop.
        self.request_stop = request_stop
        self.stop_margin_s = stop_margin_s
        #: A loss that starts inside a planned window of its area is the utility's own work.
        self.planned = planned
        self.alarms = alarms
        self.min_duration_s = min_duration_s
        self.hold_up_s = hold_up_s
        self.report_after_s = min(min_duration_s, report_after_s)
        self.loss: _Loss | None = None
        #: Counters for logs and tests: losses seen, reported as outages, ended momentary.
        self.losses = 0
        self.momentary = 0

    @staticmethod
    def key(area: ServedArea) -> str:
        return f"{OUTAGE_AREA}/{area.id}"

    def resume(self, start_ms: int, now_mono: float, now_ms: int) -> None:
        """An ``outage.area`` alarm is still raised from before this start (a reload, or a
        gateway that ran out of hold-up): continue that loss. Its start is known only on the
        wall clock, so its duration is measured from there."""
        if self.loss is None:
            self.loss = _Loss(now_mono - max(0, now_ms - start_ms) / 1000, start_ms,
                              reported=True, hold_up_from=now_mono)

    def observe(self, lost: bool, now_mono: float, now_ms: int) -> None:
        """One reading of the input: ``lost`` True while mains is lost."""
        loss = self.loss
        if lost:
            if loss is None:
                self.loss = loss = _Loss(now_mono, now_ms)
                self.losses += 1
                log.warning("mains lost (power-fail input); running on hold-up for up to %g s",
                            self.hold_up_s)
            if not loss.reported and now_mono - loss.start_mono >= self.report_after_s:
                loss.reported = True
                for area in self.areas:
                    self.alarms.raise_(OUTAGE_AREA, self.key(area), None,
                                       self._raised_details(area, loss), now_ms)
            self._check_hold_up(loss, now_mono)
            return
        if loss is None:
            return
        self.loss = None
        duration_s = max(0.0, now_mono - loss.start_mono)
        end_ms = loss.start_ms + round(duration_s * 1000)
        momentary = duration_s < self.min_duration_s
        self.momentary += momentary
        log.warning("mains back after %.1f s (%s)", duration_s,
                    "momentary" if momentary else "outage")
        for area in self.areas:
            details = {**self._common(area, loss), "end_ms": end_ms,
                       "duration_s": round(duration_s, 1), "momentary": momentary}
            if loss.reported:
                hint = (f"area {area.id}: power back after {duration_s:.1f} s"
                        + (f", below [outage] min_duration_s {self.min_duration_s:g} s: "
                           "momentary, not an outage" if momentary else ""))
                self.alarms.clear(OUTAGE_AREA, self.key(area), None,
                                  {**details, "hint": hint}, now_ms)
            else:
                key = f"{OUTAGE_MOMENTARY}/{area.id}"
                details["hint"] = (f"area {area.id}: momentary power loss of "
                                   f"{duration_s:.1f} s, not an outage")
                self.alarms.raise_(OUTAGE_MOMENTARY, key, None, details, now_ms)
                self.alarms.clear(OUTAGE_MOMENTARY, key, None, details, now_ms)

    def hold_up_due(self, loss: _Loss, now_mono: float) -> bool:
        """Whether the clean stop is due: the loss was reported (so the CRM heard of it, even
        when the margin leaves no time before that) and has lasted ``hold_up_s -
        stop_margin_s``. A loss carried over from before this start counts from this start:
        the gateway cannot know how the battery fared while it was down, and stopping at once
        would leave no chance to clear the outage on restore."""
        since = loss.start_mono if loss.hold_up_from is None else loss.hold_up_from
        return loss.reported and now_mono - since >= self.hold_up_s - self.stop_margin_s

    def _check_hold_up(self, loss: _Loss, now_mono: float) -> None:
        if self.request_stop is None or loss.stop_requested or not self.hold_up_due(loss,
                                                                                    now_mono):
            return
        loss.stop_requested = True
        elapsed = now_mono - loss.start_mono
        reason = (f"mains lost for {elapsed:.1f} s: [power] hold_up_s {self.hold_up_s:g} s "
                  f"less stop_margin_s {self.stop_margin_s:g} s reached; stopping before the "
                  "battery runs out")
        log.warning("%s", reason)
        self.request_stop(reason)

    def _common(self, area: ServedArea, loss: _Loss) -> dict[str, object]:
        return {"area": area.id, "meters": list(area.meters), "customers": list(area.customers),
                "start_ms": loss.start_ms, "planned": self._planned(area, loss),
                "confirmed": False}

    def _planned(self, area: ServedArea, loss: _Loss) -> bool:
        return self.planned is not None and self.planned.covers(area.id, area.meters,
                                                                loss.start_ms)

    def _raised_details(self, area: ServedArea, loss: _Loss) -> dict[str, object]:
        return {**self._common(area, loss), "hold_up_s": self.hold_up_s,
                "hint": f"area {area.id}: mains lost at the gateway; {len(area.meters)} meters, "
                        f"{len(area.customers)} customers without power"}


def read_input(path: Path, fail_value: str) -> bool | None:
    """Whether the input says mains is lost; None when it cannot be read now."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() == fail_value.strip()
    except OSError:
        return None


async def watch_power(watch: PowerWatch, path: Path, fail_value: str,
                      recall: Callable[[str], int | None]) -> None:
    """The supervised task ("power"): read the input every POLL_INTERVAL_S and apply the rules.

    ``recall(key)`` gives the raise time of an ``outage.area`` alarm still active from before
    this start, so its restore is cleared (and not left raised forever). An input that cannot
    be read keeps the last state (logged once per failure): a missing reading is no restore.
    """
    now_ms = time.time_ns() // 1_000_000
    for area in watch.areas:
        start_ms = recall(watch.key(area))
        if start_ms is not None:
            watch.resume(start_ms, time.monotonic(), now_ms)
    unreadable = False
    while True:
        lost = read_input(path, fail_value)
        if lost is None:
            if not unreadable:
                log.error("power-fail input %s cannot be read; keeping the last state", path)
            unreadable = True
        else:
            unreadable = False
            watch.observe(lost, time.monotonic(), time.time_ns() // 1_000_000)
        await asyncio.sleep(POLL_INTERVAL_S)


# ---------------------------------------------------------------------------------------------------
# Restore verification (docs/outages.md, "Restore verification"): the meters' own power-down
# records confirm or contradict the gateway's times. Kept apart from PowerWatch: the watch only
# clears, and a sink around the alarm service (:class:`RestoreCheck`) sees the clear go out at
# once for the CRM and then asks the meters.

OUTAGE_VERIFIED = "outage.verified"
#: The verdict is due within this long of restore (issue 14).
VERIFY_WITHIN_S = 120.0
#: When the meters are asked, after restore: a meter boots for a few seconds after its supply
#: returns, so the first round waits; the later rounds ask only the meters that did not answer.
#: Three rounds at most, one read each of count and newest record: no retry storm on a bus that
#: is busy catching up after the outage.
VERIFY_ROUNDS_S = (5.0, 30.0, 90.0)
#: One read on the priority lane (the bus retries on the wire itself) may take this long.
READ_TIMEOUT_S = 5.0
#: A meter's record agrees with the gateway when its start and its end each lie within this of
#: the gateway's (F98 of Q/GDW 1376.1 marks a terminal's record valid or invalid the same way).
RECORD_TOLERANCE_S = 60.0
#: DL/T 645-2007 A.4: power-down count and the newest record (start, end; YYMMDDhhmmss).
POWER_DOWN_COUNT_DI = 0x03110000
POWER_DOWN_LAST_DI = 0x03110001


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """What one meter said about its newest power-down (``error`` when it did not answer)."""

    meter: str
    count: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    error: str | None = None


def record_agreement(record: MeterRecord, start_ms: int, end_ms: int,
                     tolerance_s: float = RECORD_TOLERANCE_S) -> str | None:
    """``"valid"`` when the meter's newest record starts and ends within ``tolerance_s`` of the
    gateway's loss, ``"invalid"`` when it answered otherwise (no record, an open record, an older
    one), None when it did not answer (no evidence either way)."""
    if record.error is not None:
        return None
    if record.start_ms is None or record.end_ms is None:
        return "invalid"
    limit = tolerance_s * 1000
    agrees = abs(record.start_ms - start_ms) <= limit and abs(record.end_ms - end_ms) <= limit
    return "valid" if agrees else "invalid"


def verification_details(area: str, records: Sequence[MeterRecord], start_ms: int, end_ms: int,
                         tolerance_s: float = RECORD_TOLERANCE_S) -> dict[str, object]:
    """The verdict on one area's loss. ``confirmed`` when more than half of the meters that
    answered hold a valid record: meters that stay silent prove nothing, and one meter with a
    wrong clock does not overturn the rest."""
    rows: list[dict[str, object]] = []
    valid = answered = 0
    for record in records:
        agreement = record_agreement(record, start_ms, end_ms, tolerance_s)
        row: dict[str, object] = {"meter": record.meter}
        if agreement is None:
            row["error"] = record.error or "no answer"
        else:
            answered += 1
            valid += agreement == "valid"
            row.update(count=record.count, start_ms=record.start_ms, end_ms=record.end_ms,
                       agreement=agreement)
        rows.append(row)
    confirmed = answered > 0 and 2 * valid > answered
    return {"area": area, "start_ms": start_ms, "end_ms": end_ms, "confirmed": confirmed,
            "records": rows, "answered": answered, "valid": valid, "tolerance_s": tolerance_s,
            "hint": f"area {area}: {valid} of {answered} answering meters hold a power-down "
                    f"record within {tolerance_s:g} s of the gateway's times"
                    + ("" if confirmed else "; the outage is not confirmed by the meters")}


#: Reads one DL/T 645 identifier from a meter; returns its readings, raises on no answer.
MeterRead = Callable[[str, int], Awaitable[Sequence[Reading]]]


def _local_ms(value: object, utc_offset_min: int) -> int | None:
    if not isinstance(value, dt.datetime):
        return None
    zone = dt.timezone(dt.timedelta(minutes=utc_offset_min))
    return int(value.replace(tzinfo=zone).timestamp() * 1000)


async def read_power_down(read: MeterRead, meter: str, utc_offset_min: int,
                          timeout_s: float = READ_TIMEOUT_S) -> MeterRecord:
    """The count and newest power-down record of ``meter``, each read bounded by ``timeout_s``."""
    try:
        count_readings = await asyncio.wait_for(read(meter, POWER_DOWN_COUNT_DI), timeout_s)
        last_readings = await asyncio.wait_for(read(meter, POWER_DOWN_LAST_DI), timeout_s)
    except (TimeoutError, GatewayError, ProtocolError, OSError) as exc:
        return MeterRecord(meter, error=str(exc) or type(exc).__name__)
    count = next((int(r.value) for r in count_readings if isinstance(r.value, Decimal)), None)
    times = {r.name.rsplit(".", 1)[-1]: r.value for r in last_readings}
    return MeterRecord(meter, count, _local_ms(times.get("start"), utc_offset_min),
                       _local_ms(times.get("end"), utc_offset_min))


@dataclass(frozen=True, slots=True)
class _Restore:
    area: str
    meters: tuple[str, ...]
    start_ms: int
    end_ms: int


class RestoreCheck:
    """An :class:`AlarmSink` around the alarm service: passes everything on, and after an
    ``outage.area`` clear that was an outage (not momentary) asks the area's meters
    (at most ``sample`` of those ``read`` can reach) for their power-down records, then records
    the verdict as an ``outage.verified`` event (raised and cleared at once, key
    ``outage.verified/<area>``). The clear itself goes out unchanged and at once."""

    def __init__(self, alarms: AlarmSink, read: MeterRead, readable: Callable[[str], bool], *,
                 sample: int, utc_offset_min: int, rounds_s: Sequence[float] = VERIFY_ROUNDS_S,
                 tolerance_s: float = RECORD_TOLERANCE_S,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.alarms = alarms
        self.read = read
        self.readable = readable
        self.sample = sample
        self.utc_offset_min = utc_offset_min
        self.rounds_s = tuple(rounds_s)
        self.tolerance_s = tolerance_s
        self.read_timeout_s = read_timeout_s
        self._pending: asyncio.Queue[_Restore] = asyncio.Queue(maxsize=64)
        #: Verdicts published (for logs and tests).
        self.verdicts: list[dict[str, object]] = []

    def raise_(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
               t_ms: int) -> bool:
        return self.alarms.raise_(kind, key, meter, details, t_ms)

    def clear(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
              t_ms: int) -> bool:
        done = self.alarms.clear(kind, key, meter, details, t_ms)
        if kind == OUTAGE_AREA and details.get("momentary") is False:
            self._schedule(details)
        return done

    def _schedule(self, details: Mapping[str, object]) -> None:
        meters = details.get("meters")
        start_ms, end_ms = details.get("start_ms"), details.get("end_ms")
        if not isinstance(meters, list) or not isinstance(start_ms, int) \
                or not isinstance(end_ms, int):
            return
        chosen = tuple(m for m in meters if isinstance(m, str) and self.readable(m))[:self.sample]
        try:
            self._pending.put_nowait(_Restore(str(details.get("area")), chosen, start_ms, end_ms))
        except asyncio.QueueFull:
            log.error("restore verification of area %s dropped: too many pending",
                      details.get("area"))

    async def run(self) -> None:
        """The supervised task ("power-verify"): verify each restore as it comes."""
        running: set[asyncio.Task[None]] = set()
        while True:
            restore = await self._pending.get()
            task = asyncio.get_running_loop().create_task(self.verify(restore))
            running.add(task)
            task.add_done_callback(running.discard)

    async def verify(self, restore: _Restore) -> None:
        """Ask the meters in bounded rounds, then publish the verdict within VERIFY_WITHIN_S."""
        began = time.monotonic()
        answers: dict[str, MeterRecord] = {m: MeterRecord(m, error="not asked")
                                           for m in restore.meters}
        for at_s in self.rounds_s:
            silent = [m for m, r in answers.items() if r.error is not None]
            if not silent or at_s >= VERIFY_WITHIN_S:
                break
            await asyncio.sleep(max(0.0, at_s - (time.monotonic() - began)))
            for meter in silent:
                answers[meter] = await read_power_down(self.read, meter, self.utc_offset_min,
                                                       self.read_timeout_s)
        details = verification_details(restore.area, list(answers.values()), restore.start_ms,
                                       restore.end_ms, self.tolerance_s)
        key = f"{OUTAGE_VERIFIED}/{restore.area}"
        now_ms = time.time_ns() // 1_000_000
        log.warning("area %s: restore %s by the meters (%s of %s valid)", restore.area,
                    "confirmed" if details["confirmed"] else "not confirmed", details["valid"],
                    details["answered"])
        self.alarms.raise_(OUTAGE_VERIFIED, key, None, details, now_ms)
        self.alarms.clear(OUTAGE_VERIFIED, key, None, details, now_ms)
        self.verdicts.append(details)


def priority_reader(buses: Iterable[object]) -> tuple[MeterRead, Callable[[str], bool]]:
    """A :data:`MeterRead` over the DL/T 645-2007 meters of ``buses`` through each bus's
    priority lane (off the routine poll), and which meters it can reach."""
    slots: dict[str, tuple[Dlt645Bus, str]] = {}
    for bus in buses:
        if is_dlt645_bus(bus):
            for slot in bus.meters:
                if slot.version == Version.V2007:
                    slots[slot.meter_id] = (bus, slot.address)

    async def read(meter: str, di: int) -> Sequence[Reading]:
        bus, address = slots[meter]
        answered = await bus.submit_priority(ReadRequest(address, di))
        return tuple(answered.readings)

    return read, slots.__contains__
