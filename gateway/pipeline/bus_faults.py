"""A whole bus gone silent is a wiring or adapter fault (``comm.bus``), not N lost meters.

A cut RS-485 pair or a dead USB adapter that still enumerates silences every meter of one bus at
once. Reported meter by meter, that is N ``comm_loss`` alarms that look like a blackout to CRM.
This classifier sits between the bus tasks' events and the alarm service (the committer feeds it
every poll outcome and every comm-loss event) and decides (docs/outages.md, "Bus faults are not
outages"):

* a meter's comm loss while at least one other meter of its bus answers is the meter's own:
  ``comm_loss`` is published at once, as before;
* a meter's comm loss while no other meter of its bus answers is **held**: the bus may be cut;
* when every meter of the bus is lost and the fault is the bus's (:func:`bus_fault`), ONE
  ``comm.bus`` alarm is raised and the held per-meter alarms are **folded** into it: never
  published. Otherwise (every bus silent, or the gateway's mains reported lost: that is an
  outage, not a wiring fault) the held alarms are published as ordinary ``comm_loss``;
* the first meter of the bus that answers again clears ``comm.bus``. A held meter whose next
  poll succeeds is dropped silently (its raise was never published, so is its clear); one whose
  next poll fails while its bus answers is published then as its own ``comm_loss``.

Pure bookkeeping: it returns the alarm transitions to make and touches no store, so the rule is
tested without a daemon (tests/test_bus_faults.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gateway.acquisition.poll_result import BusEvent

#: The alarm of a bus whose line opens but whose meters all stopped answering.
COMM_BUS = "comm.bus"
COMM_LOSS = "comm_loss"
COMM_BUS_HINT = "check the RS-485 pair, the adapter and its cable"


@dataclass(frozen=True, slots=True)
class BusLine:
    """One bus as the classifier sees it: its name, link (port or host) and meters."""

    name: str
    link: str
    meters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm transition the caller hands to the alarm service."""

    kind: str
    key: str
    state: str
    meter: str | None
    details: dict[str, object]
    t_ms: int


def bus_fault(bus: str, answering: Mapping[str, bool], mains_lost: bool) -> bool:
    """Whether a bus whose meters are all silent has a fault of its own (cut pair, dead adapter).

    ``answering`` says, for every bus of the gateway, whether any of its meters answered its
    latest poll. The fault is the bus's when mains is not reported lost and either another bus
    answers or the bus is the gateway's only one (nothing else to compare with: the power-fail
    input, or its absence, is the only witness)."""
    if mains_lost or answering.get(bus, False):
        return False
    others = [name for name in answering if name != bus]
    return not others or any(answering[name] for name in others)


@dataclass
class _BusState:
    line: BusLine
    last_ok: dict[str, bool] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    held: dict[str, BusEvent] = field(default_factory=dict)
    cut: bool = False

    @property
    def answering(self) -> bool:
        return any(self.last_ok.values())


class BusFaults:
    """Folds the comm-loss events of a silent bus into one ``comm.bus`` alarm."""

    def __init__(self, lines: Iterable[BusLine]) -> None:
        self._buses = {line.name: _BusState(line) for line in lines}

    def seed(self, raised_keys: Iterable[str]) -> None:
        """``comm.bus`` alarms still raised from before a restart or reload: the first meter of
        the bus that answers clears them."""
        for key in raised_keys:
            kind, _, bus = key.partition("/")
            if kind == COMM_BUS and bus in self._buses:
                self._buses[bus].cut = True

    def on_poll(self, meter: str, bus: str, ok: bool, t_ms: int) -> list[AlarmChange]:
        """A poll's outcome (call before the comm-loss event it may cause)."""
        state = self._buses.get(bus)
        if state is None:
            return []
        state.last_ok[meter] = ok
        changes: list[AlarmChange] = []
        if ok and state.cut:
            state.cut = False
            line = state.line
            changes.append(AlarmChange(COMM_BUS, f"{COMM_BUS}/{bus}", "cleared", None, {
                "bus": bus, "link": line.link, "meter": meter,
                "hint": f"bus {bus} ({line.link}): meter {meter} answers again"}, t_ms))
        elif not ok and meter in state.held and state.answering and not state.cut:
            # Its bus works (another meter answers) but this meter still does not: its own loss.
            changes.append(self._publish(state.held.pop(meter)))
        return changes

    def on_comm_loss(self, event: BusEvent, mains_lost: Callable[[], bool]) -> list[AlarmChange]:
        """A meter's comm loss raised or cleared by its bus task. ``mains_lost`` is asked only
        when a whole bus has gone silent (it may query the store)."""
        state = self._buses.get(event.bus)
        if state is None:
            return [self._publish(event)]
        meter = event.meter_id
        if event.state == "cleared":
            state.lost.discard(meter)
            if state.held.pop(meter, None) is not None:
                return []  # its raise was held or folded: nothing was published to clear
            return [self._publish(event)]
        state.lost.add(meter)
        others_answer = any(ok for m, ok in state.last_ok.items() if m != meter)
        if not state.cut and others_answer:
            return [self._publish(event)]
        state.held[meter] = event
        if state.cut or not state.lost.issuperset(state.line.meters):
            return []
        answering = {name: s.answering for name, s in self._buses.items()}
        if bus_fault(event.bus, answering, mains_lost()):
            state.cut = True
            line = state.line
            return [AlarmChange(COMM_BUS, f"{COMM_BUS}/{line.name}", "raised", None, {
                "bus": line.name, "link": line.link, "meters": list(line.meters),
                "folded": sorted(state.held),
                "hint": f"every meter of bus {line.name} ({line.link}) stopped answering while "
                        f"the gateway has mains: {COMM_BUS_HINT}"}, event.t_ms)]
        held, state.held = state.held, {}
        return [self._publish(e) for e in sorted(held.values(), key=lambda e: e.t_ms)]

    @staticmethod
    def _publish(event: BusEvent) -> AlarmChange:
        return AlarmChange(event.kind, f"{event.kind}/{event.meter_id}", event.state,
                           event.meter_id, dict(event.details, bus=event.bus), event.t_ms)
