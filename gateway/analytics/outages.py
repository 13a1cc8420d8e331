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
  ``momentary: true`` (the suspicion withdrawn: it was no outage).

:class:`PowerWatch` holds the rules and no I/O (the tests drive it with a fake clock);
:func:`watch_power` is the supervised task that reads the file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.config.model import GatewayConfig

log = logging.getLogger(__name__)

OUTAGE_AREA = "outage.area"
OUTAGE_MOMENTARY = "outage.momentary"
#: How often the power-fail input is read (the issue: every ≤ 100 ms).
POLL_INTERVAL_S = 0.1
#: A loss this long is reported even when min_duration_s is longer: the alarm must reach the
#: CRM ≤ 5 s after the input flips, and commit and publish take the rest of those 5 s.
REPORT_AFTER_S = 3.0
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


class PowerWatch:
    """The outage rules over observations of the power-fail input; no I/O of its own."""

    def __init__(self, areas: Sequence[ServedArea], alarms: AlarmSink, *, min_duration_s: float,
                 hold_up_s: float, report_after_s: float = REPORT_AFTER_S,
                 planned: PlannedWindows | None = None) -> None:
        self.areas = tuple(areas)
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
                              reported=True)

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
