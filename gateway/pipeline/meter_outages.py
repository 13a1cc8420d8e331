"""Meter and phase outages inferred from the meters while the gateway has mains.

The gateway's power-fail input covers the transformer area; a blown fuse at one premise, a
meter taken out, or one phase of the feeder lost leaves the gateway powered and says nothing
there. The meters say it by falling silent — but so does a meter with a loose RS-485 wire. The
rules (docs/outages.md, "Meter and phase outages"):

* a meter of a ``phase`` that misses a poll is re-probed at once with its phase neighbours and
  a witness of each other phase (the bus task, gateway/acquisition/base.py). Once it has missed
  two polls (the poll and the probe) and a neighbour of its phase answered after its first miss,
  it is **suspected** of an outage: ``outage.meter`` raised with ``confirmed: false``;
* when it answers again its power-down record decides (read on the bus priority lane with
  :func:`gateway.analytics.outages.read_power_down`, by the runtime): a record within the
  silence confirms the outage (the clear says ``confirmed: true`` with the meter's own start,
  end and duration); no such record withdraws the suspicion (``withdrawn: true``): it was a
  communication loss, and the ``comm_loss`` alarms the bus task raised meanwhile, held while
  the suspicion stood, are published then;
* every meter of a phase silent (two misses each) while a meter of another phase of the bus
  answered after the first miss → ``outage.phase`` for that bus and phase; a three-phase meter
  that answers but reports that phase broken (断相, status flag ``a.phase_break`` …: no voltage
  and no current there) raises it too — unless a meter of that phase on the bus answers after
  the flag appeared: then the phase is live and the loss lies in that meter's own service, and
  a raise that rested on the flag alone is withdrawn;
* never an outage while the gateway's mains is reported lost (``outage.area`` covers it) or the
  whole bus is silent (``comm.bus``): a silent bus has no answering neighbour or witness.

Pure bookkeeping like :mod:`gateway.pipeline.bus_faults`: it returns alarm transitions and the
record reads to make, and is tested without a daemon (tests/test_meter_outages.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.pipeline.bus_faults import COMM_LOSS, AlarmChange

OUTAGE_METER = "outage.meter"
OUTAGE_PHASE = "outage.phase"
#: Misses (poll + re-probe) after which a silent meter is classified.
SILENT_AFTER = 2
#: How far a power-down record may lie outside the silence (meter clocks drift; the silence is
#: known only between polls): as restore verification's tolerance.
RECORD_TOLERANCE_S = 60.0
WITHDRAWN_REASON = "no power-down record: it was a communication loss"
#: The three-phase status flags that say a phase of the supply is gone: 断相, bit 7 of status
#: words 4/5/6 (voltage below the critical voltage AND no current). Not 失压 (bit 0,
#: ``x.voltage_loss``): that is a voltage lost while current flows — the load is supplied and
#: the meter's voltage input is at fault (a metering or theft matter: ``meter.voltage_loss``).
PHASE_LOSS_FLAGS = {"a.phase_break": "a", "b.phase_break": "b", "c.phase_break": "c"}
#: Whether a loss of an area (its meters) starting at a time (UTC ms) lies in a planned outage
#: window (``PlannedOutages.covers``, gateway/control/commands/planned.py, wired by the runtime).
PlannedCheck = Callable[[str, Sequence[str], int], bool]
FLAG_WITHDRAWN_REASON = "meters of the phase answer: the loss is in the reporting meter's service"


@dataclass(frozen=True, slots=True)
class MeterSite:
    """Where a meter is supplied from, as configured: bus, ``phase``, customer and area."""

    meter: str
    bus: str
    phase: str
    customer: str | None = None
    area: str | None = None


@dataclass(frozen=True, slots=True)
class RecordCheck:
    """A meter that answered again after a suspected outage: read its newest power-down record
    and hand it to :meth:`MeterOutages.on_record`."""

    meter: str
    silent_from_ms: int   # its last answer before the silence
    back_ms: int          # its first answer after it


@dataclass
class _Meter:
    site: MeterSite
    last_t_ms: int = 0
    last_ok: bool = True
    last_ok_ms: int = 0
    steady_ms: int = 0                # its last answer that followed an answer (no miss between)
    misses: int = 0
    first_miss_ms: int = 0
    suspected_ms: int | None = None   # outage.meter raised (start_ms)
    checking: bool = False            # answered again, its record being read
    held: list[AlarmChange] = field(default_factory=list)   # comm_loss held while suspected


@dataclass
class _Phase:
    bus: str
    phase: str
    silent_ms: int | None = None              # every meter silent since (outage.phase cause)
    flagged: dict[str, int] = field(default_factory=dict)   # three-phase meters reporting loss
    raised_ms: int | None = None
    dark_seen: bool = False                   # a meter of the phase missed a poll meanwhile
    listed: list[str] = field(default_factory=list)         # the raise's meters, for its clear


class MeterOutages:
    """The classifier: feed it every poll outcome (:meth:`on_poll`), route comm-loss changes
    through :meth:`filter`, and hand it the records read for :meth:`RecordCheck` requests."""

    def __init__(self, sites: Iterable[MeterSite], planned: PlannedCheck | None = None) -> None:
        #: Planned windows: an outage starting inside one says ``planned: true`` (raise and
        #: clear ask about the same start, as outage.area does).
        self.planned = planned
        self._meters = {s.meter: _Meter(s) for s in sites}
        self._phases: dict[tuple[str, str], _Phase] = {}
        for m in self._meters.values():
            key = (m.site.bus, m.site.phase)
            self._phases.setdefault(key, _Phase(*key))
        #: Record reads to make (the committer hands them to the runtime's reader).
        self.checks: list[RecordCheck] = []

    def seed(self, raised: Iterable[tuple[str, int]]) -> None:
        """``(key, start_ms)`` of outage.meter / outage.phase alarms still raised from before a
        restart or reload: taken up as if the silence had just been classified, so the meter's
        answer (its record read) or the phase's first answer clears them."""
        for key, start_ms in raised:
            kind, _, rest = key.partition("/")
            if kind == OUTAGE_METER and rest in self._meters:
                m = self._meters[rest]
                m.suspected_ms = m.first_miss_ms = m.last_ok_ms = start_ms
                m.misses, m.last_ok = SILENT_AFTER, False
            elif kind == OUTAGE_PHASE:
                bus, _, phase = rest.rpartition("/")
                ph = self._phases.get((bus, phase))
                if ph is None:
                    continue
                ph.silent_ms = ph.raised_ms = start_ms
                for m in self._meters.values():
                    if (m.site.bus, m.site.phase) == (bus, phase):
                        m.first_miss_ms, m.misses, m.last_ok = start_ms, SILENT_AFTER, False

    # -- inputs ---------------------------------------------------------------------------------
    def on_poll(self, meter: str, ok: bool, t_ms: int, flags: Mapping[str, bool],
                mains_lost: Callable[[], bool]) -> list[AlarmChange]:
        """A poll's outcome. ``mains_lost`` is asked only when a silence would become an outage."""
        state = self._meters.get(meter)
        if state is None:
            return []
        changes: list[AlarmChange] = []
        state.last_t_ms = t_ms
        if ok:
            if state.misses and state.suspected_ms is not None and not state.checking:
                state.checking = True
                self.checks.append(RecordCheck(meter, state.last_ok_ms, t_ms))
            if state.misses == 0:
                state.steady_ms = t_ms
            state.last_ok, state.last_ok_ms, state.misses = True, t_ms, 0
        else:
            if state.misses == 0:
                state.first_miss_ms = t_ms
            state.last_ok = False
            state.misses += 1
        changes += self._flags(state, flags, t_ms, mains_lost)
        changes += self._classify(state.site.bus, state.site.phase, t_ms, mains_lost)
        ph = self._phases[(state.site.bus, state.site.phase)]
        if ph.flagged:  # a meter of a flagged phase polled: is the flag still believed?
            ph.dark_seen = ph.dark_seen or not ok
            changes += self._phase_change(ph, t_ms)
        return changes

    def filter(self, change: AlarmChange) -> list[AlarmChange]:
        """A ``comm_loss`` transition of a meter suspected of an outage is held until its
        record decides (a confirmed outage drops it: the meter lost its supply, not its wire)."""
        state = self._meters.get(change.meter or "")
        if change.kind != COMM_LOSS or state is None or state.suspected_ms is None:
            return [change]
        state.held.append(change)
        return []

    def on_record(self, check: RecordCheck, start_ms: int | None, end_ms: int | None,
                  error: str | None, t_ms: int) -> list[AlarmChange]:
        """The newest power-down record of a meter that answered again (``error``: unread)."""
        state = self._meters.get(check.meter)
        if state is None or state.suspected_ms is None:
            return []
        site, started = state.site, state.suspected_ms
        state.suspected_ms, state.checking = None, False
        held, state.held = state.held, []
        details = self._common(site, started)
        limit = int(RECORD_TOLERANCE_S * 1000)
        if error is not None:
            details.update(confirmed=False, end_ms=check.back_ms, error=error,
                           hint=f"meter {site.meter} answers again; its power-down record could "
                                f"not be read ({error}): the outage is not confirmed")
            return [self._change(site, "cleared", details, t_ms), *held]
        if start_ms is not None and end_ms is not None and start_ms <= end_ms \
                and check.silent_from_ms - limit <= start_ms and end_ms <= check.back_ms + limit:
            details.update(confirmed=True, start_ms=start_ms, end_ms=end_ms,
                           duration_s=round((end_ms - start_ms) / 1000, 1),
                           hint=f"meter {site.meter} lost its supply: its power-down record "
                                "confirms the outage")
            return [self._change(site, "cleared", details, t_ms)]  # held comm_loss dropped
        details.update(confirmed=False, withdrawn=True, reason=WITHDRAWN_REASON,
                       end_ms=check.back_ms,
                       hint=f"meter {site.meter} answers again and holds no power-down record of "
                            "the silence: it was a communication loss, not an outage")
        return [self._change(site, "cleared", details, t_ms), *held]

    # -- rules ----------------------------------------------------------------------------------
    def _classify(self, bus: str, phase: str, t_ms: int,
                  mains_lost: Callable[[], bool]) -> list[AlarmChange]:
        group = [m for m in self._meters.values() if m.site.bus == bus and m.site.phase == phase]
        silent = [m for m in group if m.misses >= SILENT_AFTER]
        ph = self._phases[(bus, phase)]
        changes: list[AlarmChange] = []
        if len(group) > 1 and len(silent) == len(group):
            since = min(m.first_miss_ms for m in group)
            witness = any(m.last_ok and m.last_t_ms >= since for m in self._meters.values()
                          if m.site.bus == bus and m.site.phase != phase)
            if ph.silent_ms is None and witness and not mains_lost():
                ph.silent_ms = since
                changes += self._phase_change(ph, t_ms)
            return changes
        if ph.silent_ms is not None and any(m.last_ok for m in group):
            ph.silent_ms = None
            changes += self._phase_change(ph, t_ms)
            for m in group:  # still silent: judged afresh once the phase is back (two new misses)
                m.misses = 0
            return changes
        for m in silent:
            if m.suspected_ms is not None or ph.raised_ms is not None:
                continue  # suspected already, or its phase's outage explains the silence
            answering = any(n.last_ok and n.last_t_ms >= m.first_miss_ms
                            for n in group if n is not m)
            if answering and not mains_lost():
                m.suspected_ms = m.first_miss_ms
                details = self._common(m.site, m.first_miss_ms)
                details.update(confirmed=False,
                               hint=f"meter {m.site.meter} is silent while its phase "
                                    f"{phase} neighbours answer: suspected outage at the "
                                    "premise (or a lost wire: its power-down record decides)")
                changes.append(self._change(m.site, "raised", details, t_ms))
        return changes

    def _flags(self, state: _Meter, flags: Mapping[str, bool], t_ms: int,
               mains_lost: Callable[[], bool]) -> list[AlarmChange]:
        changes: list[AlarmChange] = []
        for flag, phase in PHASE_LOSS_FLAGS.items():
            if flag not in flags:
                continue
            ph = self._phases.setdefault((state.site.bus, phase), _Phase(state.site.bus, phase))
            meter = state.site.meter
            if flags[flag] and meter not in ph.flagged and not mains_lost():
                ph.flagged[meter] = t_ms
                changes += self._phase_change(ph, t_ms)
            elif not flags[flag] and meter in ph.flagged:
                del ph.flagged[meter]
                ph.dark_seen = ph.dark_seen and bool(ph.flagged)
                changes += self._phase_change(ph, t_ms)
        return changes

    def _believed(self, ph: _Phase) -> dict[str, int]:
        """The flags of ``ph`` no meter of that phase on the bus has contradicted: one that
        answers after the flag appeared, without a miss since its answer before, while no meter
        of the phase has missed a poll since the flag, shows the phase live (the loss is in the
        flagging meter's own fuse or service). Once a meter of the phase went dark the flags are
        believed until they clear (a cut shorter than the silence rule, or a restore)."""
        if ph.dark_seen or ph.silent_ms is not None:
            return dict(ph.flagged)
        group = [m for m in self._meters.values()
                 if (m.site.bus, m.site.phase) == (ph.bus, ph.phase)]
        return {meter: since for meter, since in ph.flagged.items()
                if not any(m.last_ok and m.steady_ms > since for m in group)}

    def _phase_change(self, ph: _Phase, t_ms: int) -> list[AlarmChange]:
        """Raise or clear ``outage.phase`` as its causes (silence, flags) come and go."""
        flagged = self._believed(ph)
        active = ph.silent_ms is not None or bool(flagged)
        if active == (ph.raised_ms is not None):
            return []
        group = [m.site for m in self._meters.values()
                 if m.site.bus == ph.bus and m.site.phase == ph.phase]
        listed = list(flagged) if active else [*ph.listed, *ph.flagged]
        sites = group + [self._meters[m].site for m in listed if m in self._meters]
        meters = list(dict.fromkeys(s.meter for s in sites))
        customers = list(dict.fromkeys(s.customer for s in sites if s.customer is not None))
        areas = list(dict.fromkeys(s.area for s in sites if s.area is not None))
        evidence = (["silent"] if ph.silent_ms is not None else []) + \
            [f"{meter}:{ph.phase}.phase_break" for meter in flagged]
        details: dict[str, object] = {"bus": ph.bus, "phase": ph.phase, "meters": meters,
                                      "customers": customers}
        if areas:
            details["area"] = areas[0]
        key = f"{OUTAGE_PHASE}/{ph.bus}/{ph.phase}"
        if active:
            starts = [*flagged.values(), *([ph.silent_ms] if ph.silent_ms is not None else [])]
            ph.raised_ms, ph.listed = min(starts), meters
            details.update(start_ms=ph.raised_ms, evidence=evidence,
                           planned=self._is_planned(areas[0] if areas else None, meters,
                                                    ph.raised_ms),
                           hint=f"phase {ph.phase} of bus {ph.bus} lost: "
                                f"{len(meters)} meters, {len(customers)} customers")
            return [AlarmChange(OUTAGE_PHASE, key, "raised", None, details, t_ms)]
        start = ph.raised_ms or t_ms
        ph.raised_ms = None
        details.update(start_ms=start, end_ms=t_ms, duration_s=round((t_ms - start) / 1000, 1),
                       planned=self._is_planned(areas[0] if areas else None, meters, start),
                       hint=f"phase {ph.phase} of bus {ph.bus} is back")
        if ph.flagged and not flagged:
            details.update(withdrawn=True, reason=FLAG_WITHDRAWN_REASON,
                           hint=f"phase {ph.phase} of bus {ph.bus} is live (its meters answer): "
                                f"{', '.join(ph.flagged)} lost it in their own service")
        ph.dark_seen = False
        return [AlarmChange(OUTAGE_PHASE, key, "cleared", None, details, t_ms)]

    def _is_planned(self, area: str | None, meters: Sequence[str], start_ms: int) -> bool:
        return self.planned is not None and self.planned(area or "", meters, start_ms)

    def _common(self, site: MeterSite, start_ms: int) -> dict[str, object]:
        details: dict[str, object] = {
            "meter": site.meter, "bus": site.bus, "phase": site.phase,
            "customers": [site.customer] if site.customer is not None else [],
            "start_ms": start_ms,
            "planned": self._is_planned(site.area, [site.meter], start_ms)}
        if site.area is not None:
            details["area"] = site.area
        return details

    @staticmethod
    def _change(site: MeterSite, state: str, details: dict[str, object],
                t_ms: int) -> AlarmChange:
        return AlarmChange(OUTAGE_METER, f"{OUTAGE_METER}/{site.meter}", state, site.meter,
                           details, t_ms)
