"""The load-control engine: a sans-IO state machine the daemon feeds and obeys.

Inputs carry their own timestamps (UTC seconds); the engine has no clock, does no I/O and draws
randomness only from the :class:`random.Random` it was given. Every input method returns the
actions it caused (:mod:`gateway.control.load_control.events`); :meth:`LoadControlEngine.to_dict` /
:meth:`LoadControlEngine.from_dict` carry the whole state across a restart. Time never runs
backwards inside the engine: an input stamped earlier than one already seen is handled "now".

Per group there are two controls, each a round sequencer (:class:`~.state.Controller`):

* **power** (功控): the four limit kinds of :mod:`.limits`, judged by the kernels of
  ``edge_rules.load_limits`` on the sliding-window group power. Over the limit → the next round's
  customers get the pre-trip alarm → still over when that round's alarm delay has run → the
  round trips, its power before is noted (and the power ``after_record_s`` later, 1376.1 ERC6)
  → nothing for ``settle_s`` → if still over, the next round's alarm, and so on up to 8 rounds.
  Back under the limit by the hysteresis *and* by the load the last round shed, for
  ``settle_s`` → that round is restored; when no limit is in force any more → every round is
  restored. Restores go in reverse round order, each customer after a random delay in
  ``[restore_delay_min_s, restore_delay_max_s]`` (cold-load pickup); the delays are drawn for
  all customers at once and handed out smallest first to the last round, so both the bounds and
  the order hold.
* **energy** (月电控): a monthly kWh limit. Over it, rounds trip one after another, each after its
  alarm delay; they come back when the month-to-date energy is under the limit again (a new
  month) or the limit is cancelled or raised.

Per meter: remote trip/close commands, prepaid balance (alarm at or below the alarm threshold,
trip after ``trip_delay_s`` at or below the trip threshold, *allow close* — never a direct
close — when the balance is recharged above it), protect (保电) and exempt (剔除).

What can open a relay is tracked as *holds* per meter; the relay is wanted open while any hold
remains, and only the removal of the last one closes it. Protect (保电) — commanded for meters or
a group, automatic for ``power_up_protect_s`` after :meth:`power_up` and after the link to the
central system has been down for ``link_loss_protect_after_s`` — stops new trips and calls off
pending pre-trip alarms; it does not close relays already open (a reboot must not change what
customers see), and when it ends the engine simply carries on from the state it had.

A meter configured ``protected`` is never tripped: rounds never contain it, commands naming it
fail, and the one function that emits trips refuses it (:meth:`LoadControlEngine._send`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from edge_rules.load_limits import (
    KIND_NAMES,
    STATE_NAMES,
    STATE_NO_DATA,
    STATE_NO_LIMIT,
    STATE_OVER,
    STATE_UNDER,
    effective_limits,
    float_down_reference,
    limit_states,
    sliding_mean,
)
from gateway.control.load_control.events import (
    CommandOutcome,
    ControlCommand,
    Output,
    PublishAlarm,
    RecordRound,
    SendControl,
    Severity,
)
from gateway.control.load_control.limits import (
    MONTHLY_ENERGY,
    FloatDownLimit,
    Limit,
    LimitKind,
    LimitParamsError,
    MonthlyEnergyLimit,
    build_schedule,
    parse_limit,
)
from gateway.control.load_control.phases import (
    PrepaidEvent,
    PrepaidPhase,
    RoundEvent,
    RoundPhase,
)
from gateway.control.load_control.settings import (
    MAX_ROUNDS,
    EngineSettings,
    GroupSpec,
    SettingsError,
    Topology,
)
from gateway.control.load_control.state import (
    CommandProgress,
    Controller,
    GroupState,
    MeterState,
    PendingRequest,
    RecordDue,
    TripStep,
)
from protocols.dlt645.messages import ControlAction

__all__ = ["STATE_VERSION", "GroupView", "LoadControlEngine", "default_rounds"]

STATE_VERSION: Final = 1
_RECENT_COMMANDS: Final = 256
_POWER: Final = "power"
_ENERGY: Final = "energy"
_REMOTE: Final = "remote"
_PREPAID: Final = "prepaid"
_OPERATOR: Final = "operator"
_CLOSE_ACTIONS: Final = {"direct_close": ControlAction.DIRECT_CLOSE,
                         "allow_close": ControlAction.ALLOW_CLOSE}


def default_rounds(group: GroupSpec, topology: Topology) -> tuple[tuple[str, ...], ...]:
    """Rounds when none are configured: the group's sheddable, unprotected members in file
    order, cut into at most 8 contiguous rounds of near-equal size (customers listed first are
    shed first)."""
    members = [m for m in group.sheddable if not topology.is_protected(m)]
    if not members:
        return ()
    n = min(MAX_ROUNDS, len(members))
    size, extra = divmod(len(members), n)
    rounds: list[tuple[str, ...]] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        rounds.append(tuple(members[start:end]))
        start = end
    return tuple(rounds)


@dataclass(frozen=True, slots=True)
class GroupView:
    """Where a group stands: compared power, limit in force and its kind, the state name
    (``no_limit``/``under``/``within``/``over``/``no_data``), the power control's phase and the
    rounds it holds tripped, and the month-to-date energy against the monthly limit."""

    compared_kw: float | None
    limit_kw: float | None
    kind: str
    state: str
    phase: str
    tripped_rounds: tuple[int, ...]
    energy_phase: str
    energy_tripped_rounds: tuple[int, ...]
    month_kwh: float | None
    monthly_limit_kwh: float | None


class LoadControlEngine:
    """See the module docstring. ``rng`` draws the restore delays (inject a seeded one in tests
    and simulations; the default is seeded from the OS)."""

    def __init__(
        self,
        topology: Topology,
        settings: EngineSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings or EngineSettings()
        self._rng = rng or random.Random()
        self._check_group_settings()
        self._now = -math.inf
        self._groups: dict[str, GroupState] = {g: GroupState() for g in topology.groups}
        self._meters: dict[str, MeterState] = {m: MeterState() for m in topology.meters}
        self._alarms: dict[str, float] = {}
        self._requests: dict[int, PendingRequest] = {}
        self._commands: dict[str, CommandProgress] = {}
        self._recent: list[str] = []
        self._next_request = 1
        self._power_up_until: float | None = None
        self._link_down_since: float | None = None
        self._link_protect = False
        self._out: list[Output] = []

    # ================================================================== inputs

    def power_up(self, t: float) -> list[Output]:
        """The gateway (re)started: automatic protect for ``power_up_protect_s``. Actuations in
        flight when the process stopped have an unknown outcome: their commands fail with a
        reason saying so (the relay state is read again by the next status poll)."""
        self._begin(t)
        if self.settings.power_up_protect_s > 0:
            self._power_up_until = self._now + self.settings.power_up_protect_s
        for request_id in sorted(self._requests):
            request = self._requests.pop(request_id)
            if request.cmd is not None and request.cmd in self._commands:
                progress = self._commands[request.cmd]
                progress.waiting = [r for r in progress.waiting if r != request_id]
                progress.failures.append(
                    f"{request.meter}: outcome of {ControlAction(request.action).name} unknown — "
                    "the gateway restarted while it was in flight; check status word 3"
                )
                self._maybe_finish(request.cmd)
        self._housekeeping()
        return self._end()

    def on_power(self, group: str, t: float, kw: float) -> list[Output]:
        """A total active power sample of ``group`` (kW) taken at ``t``."""
        g = self._group(group)
        self._begin(t)
        if math.isfinite(kw):
            step = self.settings.power_step_s
            bucket = math.floor(t / step)
            cell = g.buckets.setdefault(bucket, [0.0, 0.0])
            cell[0] += kw
            cell[1] += 1.0
            horizon = math.floor(self._now / step) - self.settings.history_buckets
            for old in [b for b in g.buckets if b < horizon]:
                del g.buckets[old]
        self._evaluate_power(group)
        return self._end()

    def on_energy(self, group: str, t: float, month_kwh: float) -> list[Output]:
        """Month-to-date energy of ``group`` (kWh, local calendar month) as of ``t``."""
        g = self._group(group)
        self._begin(t)
        if math.isfinite(month_kwh):
            g.month_kwh = month_kwh
        self._evaluate_energy(group)
        return self._end()

    def on_balance(self, meter: str, t: float, balance: float) -> list[Output]:
        """The prepaid balance of ``meter`` (remaining money or energy) as of ``t``."""
        ms = self._meter(meter)
        self._begin(t)
        if math.isfinite(balance):
            ms.balance = balance
        self._evaluate_prepaid(meter)
        return self._end()

    def on_meter_status(self, meter: str, t: float, *, relay_open: bool) -> list[Output]:
        """Relay bit of status word 3 as last read. A relay the engine holds open that reads
        closed (with no frame in flight) raises ``customer.relay_mismatch`` — a bypass or a
        meter that ignored the trip; it clears when the relay reads open again or the hold ends."""
        ms = self._meter(meter)
        self._begin(t)
        ms.relay_open = relay_open
        in_flight = any(r.meter == meter for r in self._requests.values())
        if ms.holds and ms.commanded_open and not relay_open and not in_flight:
            self._raise("customer.relay_mismatch", meter, "major", meter=meter,
                        details={"expected": "open", "holds": sorted(ms.holds)})
        else:
            self._clear("customer.relay_mismatch", meter)
        return self._end()

    def on_operator_relay(self, meter: str, t: float, *, opened: bool,
                          cmd: bytes | None = None) -> list[Output]:
        """An operator's trip, close or allow-close that the daemon carried out itself (a signed
        command naming meters, confirmed on the meter). Nothing is sent from here.

        ``opened``: the operator's trip becomes the ``remote`` hold, so that restoring a round or
        ending a limit later never closes a relay an operator opened — only removing the last
        hold closes a relay. Closed (or allowed to close): the operator's word overrides every
        hold, as for a close command the engine carries out itself."""
        ms = self._meter(meter)
        self._begin(t)
        source = f"operator {'trip' if opened else 'close'}"
        if cmd is not None:
            source += f" {cmd.hex()[:8]}"
        self._drop_pending_remote(meter, f"superseded by {source}")
        ms.remote_release_at = None
        if opened:
            if not self.topology.is_protected(meter):  # the verifier refuses those; belt and braces
                ms.holds[_REMOTE] = self._now
                ms.commanded_open = True
                ms.pending_close = None
            return self._end()
        ms.holds.clear()
        if ms.prepaid_allows(PrepaidEvent.CALLED_OFF):
            ms.fire_prepaid(PrepaidEvent.CALLED_OFF)
            ms.prepaid_due = None
            self._alarm_off(meter, _PREPAID, "called_off")
        ms.commanded_open = False
        ms.allow_close_only = False
        ms.pending_close = None
        self._clear("customer.trip", meter, meter=meter, severity="major",
                    details={"restore": "operator", "reason": source})
        self._clear("customer.relay_mismatch", meter, meter=meter)
        return self._end()

    def on_link(self, t: float, up: bool) -> list[Output]:
        """The MQTT link to the central system went up or down (call with ``up=False`` at start
        when not connected: a gateway that never reaches its master also protects)."""
        self._begin(t)
        if up:
            self._link_down_since = None
            self._link_protect = False
        elif self._link_down_since is None:
            self._link_down_since = self._now
        self._housekeeping()
        return self._end()

    def on_actuation(self, request_id: int, t: float, ok: bool, reason: str = "") -> list[Output]:
        """The verified outcome of a :class:`SendControl` (``ok``: the relay reached the
        expected state; ``reason`` otherwise)."""
        self._begin(t)
        request = self._requests.pop(request_id, None)
        if request is None:
            return self._end()
        meter = request.meter
        action = ControlAction(request.action)
        ms = self._meters.get(meter)
        if ok:
            self._clear("customer.actuation_failed", meter)
        else:
            self._raise("customer.actuation_failed", meter, "major", meter=meter,
                        details={"action": action.name.lower(), "reason": reason})
            if action is ControlAction.TRIP and ms is not None:
                # The relay most likely did not open: the next hold must send a trip again.
                ms.commanded_open = False
        if request.cmd is not None and request.cmd in self._commands:
            progress = self._commands[request.cmd]
            progress.waiting = [r for r in progress.waiting if r != request_id]
            if not ok:
                progress.failures.append(f"{meter}: {action.name.lower()} failed: {reason}")
            self._maybe_finish(request.cmd)
        return self._end()

    def on_command(self, command: ControlCommand, t: float) -> list[Output]:
        """Execute an accepted command. The outcome comes as a :class:`CommandOutcome` now or
        later (after the actuations, a delayed trip, or a float-down freeze). A command id seen
        before does nothing (the journal, not the engine, answers replays)."""
        self._begin(t)
        key = command.id.hex()
        if key in self._commands or key in self._recent:
            return self._end()
        self._commands[key] = CommandProgress()
        handler = _HANDLERS.get(command.action)
        if handler is None:
            self._fail(key, f"action {command.action!r} is not a load-control action")
        else:
            try:
                handler(self, command, key)
            except LimitParamsError as exc:
                self._fail(key, str(exc))
        self._maybe_finish(key)
        return self._end()

    def tick(self, t: float) -> list[Output]:
        """Advance to ``t``: timers (alarm delays, settle times, restores, delayed and
        time-limited trips, prepaid delays, protect expiry, limit validity, float-down freeze)."""
        self._begin(t)
        self._housekeeping()
        return self._end()

    # ================================================================== views

    def group_view(self, group: str) -> GroupView:
        """Where ``group`` stands now (for health reports and tests)."""
        g = self._group(group)
        compared, limit, kind, state = self._power_view(group)
        return GroupView(
            compared_kw=None if math.isnan(compared) else compared,
            limit_kw=None if math.isnan(limit) else limit,
            kind=KIND_NAMES[kind], state=STATE_NAMES[state], phase=g.power.phase.value,
            tripped_rounds=tuple(s.round_no for s in g.power.steps),
            energy_phase=g.energy.phase.value,
            energy_tripped_rounds=tuple(s.round_no for s in g.energy.steps),
            month_kwh=g.month_kwh,
            monthly_limit_kwh=None if g.monthly is None else g.monthly.limit_kwh,
        )

    def wanted_open(self, meter: str) -> bool:
        """True while something holds ``meter``'s relay open (or its restore is still due)."""
        ms = self._meter(meter)
        return bool(ms.holds) or ms.pending_close is not None

    def holds(self, meter: str) -> tuple[str, ...]:
        return tuple(sorted(self._meter(meter).holds))

    def protect_reasons(self) -> tuple[str, ...]:
        """Why the whole gateway is in protect (保电) now: ``power_up``, ``link_loss``."""
        reasons = []
        if self._power_up_until is not None and self._now < self._power_up_until:
            reasons.append("power_up")
        if self._link_protect:
            reasons.append("link_loss")
        return tuple(reasons)

    @property
    def active_alarms(self) -> Mapping[str, float]:
        return dict(self._alarms)

    # ================================================================== persistence

    def to_dict(self) -> dict[str, Any]:
        """The whole state, JSON-compatible (the daemon persists it after every change)."""
        version, internal, gauss = self._rng.getstate()
        return {
            "v": STATE_VERSION,
            "now": None if self._now == -math.inf else self._now,
            "next_request": self._next_request,
            "power_up_until": self._power_up_until,
            "link_down_since": self._link_down_since,
            "link_protect": self._link_protect,
            "alarms": dict(self._alarms),
            "requests": {str(r): vars(p).copy() for r, p in self._requests.items()},
            "commands": {c: vars(p).copy() for c, p in self._commands.items()},
            "recent": list(self._recent),
            # Only what differs from a fresh start: most meters are never touched.
            "groups": {gid: g.to_dict() for gid, g in self._groups.items() if g != GroupState()},
            "meters": {mid: m.to_dict() for mid, m in self._meters.items() if m != MeterState()},
            "rng": [version, list(internal), gauss],
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        topology: Topology,
        settings: EngineSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> LoadControlEngine:
        """Rebuild an engine from :meth:`to_dict`. Groups and meters no longer in ``topology``
        are dropped (the configuration changed); new ones start fresh. ``rng`` replaces the
        persisted random state when given."""
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"load-control state version {data.get('v')!r} is not "
                             f"{STATE_VERSION}; start with a fresh state")
        engine = cls(topology, settings, rng=rng)
        if rng is None and data.get("rng") is not None:
            version, internal, gauss = data["rng"]
            engine._rng.setstate((version, tuple(internal), gauss))
        now = data.get("now")
        engine._now = -math.inf if now is None else float(now)
        engine._next_request = int(data["next_request"])
        engine._power_up_until = data.get("power_up_until")
        engine._link_down_since = data.get("link_down_since")
        engine._link_protect = bool(data.get("link_protect", False))
        engine._alarms = {str(k): float(v) for k, v in data.get("alarms", {}).items()}
        engine._requests = {
            int(r): PendingRequest(**p) for r, p in data.get("requests", {}).items()
            if p["meter"] in topology.meters
        }
        engine._commands = {c: CommandProgress(**p) for c, p in data.get("commands", {}).items()}
        engine._recent = list(data.get("recent", []))
        for gid, g in data.get("groups", {}).items():
            if gid in topology.groups:
                engine._groups[gid] = GroupState.from_dict(g)
        for mid, m in data.get("meters", {}).items():
            if mid in topology.meters:
                engine._meters[mid] = MeterState.from_dict(m)
        return engine

    # ================================================================== plumbing

    def _begin(self, t: float) -> None:
        if not math.isfinite(t):
            raise ValueError(f"input time must be finite UTC seconds, got {t!r}")
        self._now = max(self._now, t)
        self._out = []

    def _end(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def _group(self, group: str) -> GroupState:
        try:
            return self._groups[group]
        except KeyError:
            raise ValueError(f"load control: unknown group {group!r} (not in [[groups]])") from None

    def _meter(self, meter: str) -> MeterState:
        try:
            return self._meters[meter]
        except KeyError:
            raise ValueError(f"load control: unknown meter {meter!r} (not in [[meters]])") from None

    def _check_group_settings(self) -> None:
        problems: list[tuple[str, str]] = []
        for gid, gs in self.settings.groups.items():
            where = f"load_control.groups.{gid}"
            spec = self.topology.groups.get(gid)
            if spec is None:
                problems.append((where, "no such group in [[groups]]"))
                continue
            if gs.rounds is not None:
                for problem in self._round_problems(spec, gs.rounds):
                    problems.append((f"{where}.rounds", problem))
        if problems:
            raise SettingsError(problems)

    def _round_problems(self, spec: GroupSpec, rounds: Iterable[Iterable[str]]) -> list[str]:
        problems = []
        for r, members in enumerate(rounds, start=1):
            for meter in members:
                if self.topology.is_protected(meter):
                    problems.append(f"round {r}: meter {meter} is protected and is never tripped; "
                                    "remove it from the rounds")
                elif meter not in spec.sheddable:
                    problems.append(f"round {r}: meter {meter} is not an added import member of "
                                    f"group {spec.id}; tripping it would not reduce the group total")
        return problems

    # ---- alarms -----------------------------------------------------------------------------

    def _raise(self, kind: str, obj: str, severity: Severity, *, meter: str | None = None,
               group: str | None = None, details: Mapping[str, object] | None = None) -> None:
        key = f"{kind}/{obj}"
        if key in self._alarms:
            return
        self._alarms[key] = self._now
        self._out.append(PublishAlarm(kind, key, "raised", severity, self._now, meter, group,
                                      dict(details or {})))

    def _clear(self, kind: str, obj: str, *, meter: str | None = None, group: str | None = None,
               severity: Severity = "minor", details: Mapping[str, object] | None = None) -> None:
        key = f"{kind}/{obj}"
        raised = self._alarms.pop(key, None)
        if raised is None:
            return
        self._out.append(PublishAlarm(kind, key, "cleared", severity, self._now, meter, group,
                                      dict(details or {}), raised_at=raised))

    # ---- frames -----------------------------------------------------------------------------

    def _send(self, meter: str, action: ControlAction, reason: str, cmd: str | None = None) -> None:
        """The only place a frame is emitted — and so the place that guarantees a protected
        meter never gets a trip, whatever path asked for one."""
        if action is ControlAction.TRIP and self.topology.is_protected(meter):
            self._raise("load.protected_trip_blocked", meter, "critical", meter=meter,
                        details={"reason": reason})
            if cmd is not None and cmd in self._commands:
                self._commands[cmd].failures.append(f"{meter}: protected, never tripped")
            return
        request_id = self._next_request
        self._next_request += 1
        self._requests[request_id] = PendingRequest(meter, int(action), cmd, self._now)
        if cmd is not None and cmd in self._commands:
            self._commands[cmd].waiting.append(request_id)
        self._out.append(SendControl(request_id, meter, action,
                                     self._now + self.settings.frame_validity_s, reason,
                                     None if cmd is None else bytes.fromhex(cmd)))

    # ---- holds and relays ---------------------------------------------------------------------

    def _hold(self, meter: str, key: str, reason: str, details: Mapping[str, object],
              cmd: str | None = None, always_send: bool = False) -> bool:
        """Add hold ``key``; trip the relay if nothing held it open yet (or ``always_send``)."""
        if self.topology.is_protected(meter):
            return False
        ms = self._meters[meter]
        ms.holds[key] = self._now
        ms.pending_close = None
        if key == _PREPAID:
            ms.allow_close_only = True
        if not ms.commanded_open or always_send:
            ms.commanded_open = True
            self._send(meter, ControlAction.TRIP, reason, cmd)
            spec = self.topology.meters[meter]
            self._raise("customer.trip", meter, "major", meter=meter,
                        details={"reason": reason, **dict(details),
                                 **({"contract_kw": spec.contract_kw} if spec.contract_kw else {})})
        return True

    def _release(self, meter: str, key: str, delay: float, action: ControlAction, reason: str,
                 cmd: str | None = None) -> None:
        """Remove hold ``key``; when it was the last, close after ``delay`` seconds."""
        ms = self._meters[meter]
        if ms.holds.pop(key, None) is None or ms.holds:
            return
        if not ms.commanded_open:
            # The trip was never confirmed (its actuation failed): nothing to close, but the
            # customer's trip event must not stay raised forever.
            self._clear("customer.trip", meter, meter=meter, severity="major",
                        details={"restore": "none", "reason": f"{reason}; the trip was not confirmed"})
            self._clear("customer.relay_mismatch", meter, meter=meter)
            return
        if ms.allow_close_only:
            action = ControlAction.ALLOW_CLOSE
        if delay <= 0:
            self._close(meter, action, reason, cmd)
        else:
            ms.pending_close = [self._now + delay, int(action), reason]

    def _close(self, meter: str, action: ControlAction, reason: str, cmd: str | None = None) -> None:
        ms = self._meters[meter]
        ms.commanded_open = False
        ms.allow_close_only = False
        ms.pending_close = None
        self._send(meter, action, reason, cmd)
        self._clear("customer.trip", meter, meter=meter, severity="major",
                    details={"restore": action.name.lower(), "reason": reason})
        self._clear("customer.relay_mismatch", meter, meter=meter)
        if ms.alarm_frame_on and not ms.alarm_sources:
            ms.alarm_frame_on = False
            self._send(meter, ControlAction.ALARM_RELEASE, "pre-trip alarm over", None)

    # ---- pre-trip alarms ------------------------------------------------------------------------

    def _alarm_on(self, meter: str, source: str, details: Mapping[str, object],
                  cmd: str | None = None, always_send: bool = False) -> None:
        ms = self._meters[meter]
        first = not ms.alarm_sources
        ms.alarm_sources[source] = self._now
        if first:
            spec = self.topology.meters[meter]
            self._raise("customer.pre_trip", meter, "warning", meter=meter,
                        details={**dict(details),
                                 **({"contract_kw": spec.contract_kw} if spec.contract_kw else {})})
        if always_send or (first and self.settings.meter_alarm_frames and not ms.alarm_frame_on):
            ms.alarm_frame_on = True
            self._send(meter, ControlAction.ALARM, f"pre-trip alarm ({source})", cmd)

    def _alarm_off(self, meter: str, source: str, outcome: str) -> None:
        ms = self._meters[meter]
        if ms.alarm_sources.pop(source, None) is None or ms.alarm_sources:
            return
        self._clear("customer.pre_trip", meter, meter=meter, severity="warning",
                    details={"outcome": outcome})
        if ms.alarm_frame_on and not ms.commanded_open:
            ms.alarm_frame_on = False
            self._send(meter, ControlAction.ALARM_RELEASE, f"pre-trip alarm {outcome}", None)
        # While the relay is held open the release waits for the close (_close): one frame
        # fewer on the bus at the moment of shedding.

    # ---- protect ------------------------------------------------------------------------------

    def _meter_protected(self, meter: str) -> bool:
        ms = self._meters[meter]
        return self.topology.is_protected(meter) or ms.protect

    def _trippable(self, meter: str, group_addressed: bool) -> bool:
        """May a trip reach ``meter`` now? Never when configured protected or under meter
        protect; group-addressed controls also skip exempt (剔除) meters."""
        if meter not in self._meters or self._meter_protected(meter):
            return False
        return not (group_addressed and self._meters[meter].exempt)

    def _suspended(self, group: str) -> bool:
        return bool(self.protect_reasons()) or self._groups[group].protect

    # ================================================================== housekeeping

    def _housekeeping(self) -> None:
        now = self._now
        s = self.settings
        # Automatic protect: link loss.
        if (self._link_down_since is not None and not self._link_protect
                and now - self._link_down_since >= s.link_loss_protect_after_s):
            self._link_protect = True
        reasons = self.protect_reasons()
        if reasons:
            self._raise("gateway.protect", "gateway", "minor", details={"reasons": list(reasons)})
        else:
            self._clear("gateway.protect", "gateway")
        # Restores that came due, earliest first: the delays were handed out so that the last
        # round comes back first, and a tick coarser than the delays between customers must not
        # turn that into meter-id order.
        due = sorted((ms.pending_close[0], mid) for mid, ms in self._meters.items()
                     if ms.pending_close is not None and now >= ms.pending_close[0])
        for _at, mid in due:
            pending = self._meters[mid].pending_close
            assert pending is not None
            self._close(mid, ControlAction(pending[1]), pending[2])
        for mid in sorted(self._meters):
            self._meter_timers(mid)
        for gid in sorted(self._groups):
            g = self._groups[gid]
            if g.protect and g.protect_until is not None and now >= g.protect_until:
                g.protect = False
                g.protect_until = None
                self._clear("group.protect", gid, group=gid)
            self._expire_limits(gid)
            self._freeze_float_down(gid)
            self._evaluate_power(gid)
            self._evaluate_energy(gid)

    def _meter_timers(self, meter: str) -> None:
        ms = self._meters[meter]
        now = self._now
        if ms.protect and ms.protect_until is not None and now >= ms.protect_until:
            ms.protect = False
            ms.protect_until = None
            self._clear("customer.protect", meter, meter=meter)
            self._send(meter, ControlAction.PROTECT_RELEASE, "protect period over")
        if ms.exempt and ms.exempt_until is not None and now >= ms.exempt_until:
            ms.exempt = False
            ms.exempt_until = None
        if ms.remote_trip_due is not None and now >= ms.remote_trip_due:
            self._remote_trip_due(meter)
        if ms.remote_release_at is not None and now >= ms.remote_release_at:
            ms.remote_release_at = None
            # Q/GDW 1376.1 遥控跳闸 限电时间: when it runs out the terminal *allows* closing.
            self._release(meter, _REMOTE, 0.0, ControlAction.ALLOW_CLOSE, "remote trip period over")
        self._evaluate_prepaid(meter)

    def _expire_limits(self, group: str) -> None:
        g = self._groups[group]
        for kind in [k for k, lim in g.limits.items()
                     if lim.valid_until is not None and self._now >= lim.valid_until]:
            del g.limits[kind]
        if g.monthly is not None and g.monthly.valid_until is not None and self._now >= g.monthly.valid_until:
            g.monthly = None

    # ================================================================== power control

    def _bucket_means(self, group: str, last: int, count: int) -> NDArray[np.float64]:
        g = self._groups[group]
        values = np.full((1, count), np.nan)
        for i, b in enumerate(range(last - count + 1, last + 1)):
            cell = g.buckets.get(b)
            if cell is not None and cell[1] > 0:
                values[0, i] = cell[0] / cell[1]
        return values

    def _power_view(self, group: str) -> tuple[float, float, int, int]:
        """(compared kW, limit kW, kernel kind, kernel state) of ``group`` now."""
        s = self.settings
        g = self._groups[group]
        now = self._now if math.isfinite(self._now) else 0.0
        k = s.window_buckets
        values = self._bucket_means(group, math.floor(now / s.power_step_s), k)
        compared = sliding_mean(values, np.array([k], dtype=np.int64))[:, -1:]
        floor = s.group(group).security_floor_kw
        schedule = build_schedule([g.limits], [floor], s.utc_offset_min)
        limit, kind = effective_limits(np.array([math.floor(now * 1000)], dtype=np.int64), schedule)
        state = limit_states(compared, limit, np.array([s.hysteresis(group)]))
        return float(compared[0, 0]), float(limit[0, 0]), int(kind[0, 0]), int(state[0, 0])

    def _freeze_float_down(self, group: str) -> None:
        g = self._groups[group]
        limit = g.limits.get(LimitKind.FLOAT_DOWN)
        if not isinstance(limit, FloatDownLimit) or limit.limit_kw is not None:
            return
        if self._now < limit.freeze_at:
            return
        step = self.settings.power_step_s
        window = max(1, limit.window_min * 60 // step)
        end = math.floor(limit.freeze_at / step) - 1  # the buckets wholly before the freeze
        values = self._bucket_means(group, end, window)
        kw = float(float_down_reference(values, np.array([window - 1], dtype=np.int64),
                                        np.array([window], dtype=np.int64),
                                        np.array([limit.coefficient]))[0])
        progress = self._commands.get(limit.cmd)
        if progress is not None:
            progress.freeze_pending = False
        if math.isnan(kw):
            del g.limits[LimitKind.FLOAT_DOWN]
            if progress is not None:
                progress.failures.append(
                    f"float_down on {group}: no group power in the {limit.window_min} min before "
                    "the freeze; nothing to float down from — send it again once the group "
                    "power is being read")
        else:
            reference = kw / (1.0 + limit.coefficient)
            g.limits[LimitKind.FLOAT_DOWN] = limit.frozen(reference, kw)
            if progress is not None:
                progress.done.append(
                    f"float_down on {group}: {kw:.3f} kW = reference {reference:.3f} kW × "
                    f"{1.0 + limit.coefficient:.3f} (mean of {limit.window_min} min)")
        self._maybe_finish(limit.cmd)

    def _limit_of_kind(self, group: str, kernel_kind: int) -> Limit | None:
        g = self._groups[group]
        for kind, limit in g.limits.items():
            if kind.priority == kernel_kind:
                return limit
        return None

    def _evaluate_power(self, group: str) -> None:
        g = self._groups[group]
        ctl = g.power
        if (not g.limits and not ctl.steps and ctl.phase is RoundPhase.IDLE and not g.records_due
                and f"group.over_limit/{group}" not in self._alarms
                and f"group.shedding_exhausted/{group}" not in self._alarms):
            return  # nothing installed, nothing held: no kernel call for idle groups
        compared, limit_kw, kind, state = self._power_view(group)
        self._complete_records(group, _POWER, None if math.isnan(compared) else compared)
        key = f"{_POWER}:{group}"
        if state == STATE_NO_LIMIT:
            self._call_off(group, ctl, key)
            self._clear("group.over_limit", group, group=group)
            self._clear("group.shedding_exhausted", group, group=group)
            if ctl.steps:
                self._release_all(group, ctl, key, "limit no longer in force")
            ctl.fire(RoundEvent.STOP)
            return
        if self._suspended(group):
            self._call_off(group, ctl, key)
            ctl.restore_since = None
            return
        if state == STATE_NO_DATA:
            return  # timers wait: never trip or restore on no data
        limit = self._limit_of_kind(group, kind)
        rounds = self._rounds(group, limit)
        delays = self._delays(group, limit, len(rounds))
        over = state == STATE_OVER
        if ctl.phase is RoundPhase.SETTLE:
            if self._now < ctl.settle_until:
                return
            ctl.fire(RoundEvent.SETTLED)
        if over:
            self._raise("group.over_limit", group, "warning", group=group,
                        details={"power_kw": compared, "limit_kw": limit_kw,
                                 "kind": KIND_NAMES[kind]})
        else:
            self._clear("group.over_limit", group, group=group)
            self._clear("group.shedding_exhausted", group, group=group)
        if ctl.phase is RoundPhase.ALARM:
            if not over:
                self._call_off(group, ctl, key)
                return
            if self._now >= ctl.alarm_since + delays[min(ctl.alarm_round, len(delays) - 1)]:
                if self._trip_round(group, ctl, key, rounds, KIND_NAMES[kind], limit_kw, compared,
                                    "power"):
                    ctl.fire(RoundEvent.ROUND_TRIPPED)
                    ctl.settle_until = self._now + self.settings.settle_s
                else:
                    ctl.fire(RoundEvent.ROUND_DONE)
            return
        # idle
        if over:
            ctl.restore_since = None
            announced = self._announce_next(group, ctl, key, rounds, delays, limit_kw, compared,
                                            "kW")
            if announced and delays[ctl.alarm_round] <= 0:
                self._evaluate_power(group)  # zero alarm delay: trip in the same instant
            return
        if state == STATE_UNDER and ctl.steps:
            self._restore_under_limit(group, ctl, key, compared, limit_kw)
        else:
            ctl.restore_since = None

    def _restore_under_limit(self, group: str, ctl: Controller, key: str, compared: float,
                             limit_kw: float) -> None:
        """Bring the last round back while the limit is still in force — only when the power now
        plus what that round shed stays under the limit by the hysteresis, for ``settle_s``."""
        if self._now < ctl.restore_blocked_until:
            return
        top = ctl.steps[-1]
        if top.before is None or top.after is None:
            ctl.restore_since = None  # no shed estimate yet: wait for the record or the limit's end
            return
        shed = max(top.before - top.after, 0.0)
        if compared + shed > limit_kw * (1.0 - self.settings.hysteresis(group)):
            ctl.restore_since = None
            return
        if ctl.restore_since is None:
            ctl.restore_since = self._now
        if self._now - ctl.restore_since < self.settings.settle_s:
            return
        ctl.restore_since = None
        last_due = self._release_steps(group, ctl, key, [ctl.steps.pop()],
                                       "load back under the limit with room for this round")
        ctl.restore_blocked_until = last_due + self.settings.settle_s

    # ================================================================== energy control

    def _evaluate_energy(self, group: str) -> None:
        g = self._groups[group]
        ctl = g.energy
        key = f"{_ENERGY}:{group}"
        limit = g.monthly
        if limit is not None and not limit.active_range(self._now):
            limit = None
        self._complete_records(group, _ENERGY, g.month_kwh)
        if limit is None:
            self._call_off(group, ctl, key)
            self._clear("group.energy_alarm", group, group=group)
            if ctl.steps:
                self._release_all(group, ctl, key, "monthly energy limit no longer in force")
            ctl.fire(RoundEvent.STOP)
            return
        if g.month_kwh is None:
            return
        kwh = g.month_kwh
        if kwh >= limit.limit_kwh * limit.alarm_pct / 100.0:
            self._raise("group.energy_alarm", group, "warning", group=group,
                        details={"month_kwh": kwh, "limit_kwh": limit.limit_kwh,
                                 "alarm_pct": limit.alarm_pct})
        else:
            self._clear("group.energy_alarm", group, group=group)
        if kwh < limit.limit_kwh:
            self._call_off(group, ctl, key)
            self._clear("group.shedding_exhausted", f"{group}:energy", group=group)
            if ctl.steps:
                self._release_all(group, ctl, key, "month-to-date energy under the monthly limit")
            ctl.fire(RoundEvent.STOP)
            return
        if self._suspended(group):
            self._call_off(group, ctl, key)
            return
        rounds = self._rounds(group, limit)
        delays = self._delays(group, limit, len(rounds))
        for _ in range(MAX_ROUNDS + 1):  # zero delays may trip several rounds in one instant
            if ctl.phase is RoundPhase.ALARM:
                if self._now < ctl.alarm_since + delays[min(ctl.alarm_round, len(delays) - 1)]:
                    return
                self._trip_round(group, ctl, key, rounds, MONTHLY_ENERGY, limit.limit_kwh, kwh,
                                 "energy")
                ctl.fire(RoundEvent.ROUND_DONE)  # energy does not come down by itself: no settle
            self._announce_next(group, ctl, key, rounds, delays, limit.limit_kwh, kwh, "kWh",
                                exhausted_key=f"{group}:energy")
            if ctl.phase is not RoundPhase.ALARM:
                return

    # ================================================================== rounds

    def _rounds(self, group: str, limit: Limit | None) -> tuple[tuple[str, ...], ...]:
        if limit is not None and limit.rounds is not None:
            return limit.rounds
        configured = self.settings.group(group).rounds
        if configured is not None:
            return configured
        return default_rounds(self.topology.groups[group], self.topology)

    def _delays(self, group: str, limit: Limit | None, n: int) -> tuple[float, ...]:
        source = (
            (limit.alarm_delay_s if limit is not None else None)
            or self.settings.group(group).alarm_delay_s
            or (self.settings.alarm_delay_s,)
        )
        n = max(n, 1)
        if len(source) >= n:
            return tuple(source[:n])
        return tuple(source) + (source[-1],) * (n - len(source))

    def _next_round(self, ctl_key: str, rounds: tuple[tuple[str, ...], ...]) -> int | None:
        """The lowest round with a customer this control could still trip."""
        for index, members in enumerate(rounds):
            if any(self._trippable(m, True) and ctl_key not in self._meters[m].holds
                   for m in members):
                return index
        return None

    def _announce_next(self, group: str, ctl: Controller, key: str,
                       rounds: tuple[tuple[str, ...], ...], delays: tuple[float, ...],
                       limit: float, value: float, unit: str,
                       exhausted_key: str | None = None) -> bool:
        """Announce the next round (its customers get the pre-trip alarm); False when no
        customer is left to trip (``group.shedding_exhausted``)."""
        index = self._next_round(key, rounds)
        if index is None:
            self._raise("group.shedding_exhausted", exhausted_key or group, "critical", group=group,
                        details={"value": value, "limit": limit, "unit": unit,
                                 "rounds_tripped": len(ctl.steps)})
            return False
        meters = [m for m in rounds[index]
                  if self._trippable(m, True) and key not in self._meters[m].holds]
        ctl.fire(RoundEvent.ANNOUNCE)
        ctl.alarm_round = index
        ctl.alarm_since = self._now
        ctl.alarm_meters = meters
        trip_at = self._now + delays[min(index, len(delays) - 1)]
        for meter in meters:
            self._alarm_on(meter, key, {"group": group, "control": key.split(":")[0],
                                        "round": index + 1, "limit": limit, "value": value,
                                        "unit": unit, "trip_at": trip_at})
        return True

    def _call_off(self, group: str, ctl: Controller, key: str) -> None:
        """Withdraw a pending round alarm (back under, suspended, or no limit any more)."""
        if not ctl.allows(RoundEvent.CALL_OFF):
            return
        for meter in ctl.alarm_meters:
            if meter in self._meters:
                self._alarm_off(meter, key, "called_off")
        ctl.alarm_meters = []
        ctl.alarm_round = -1
        ctl.fire(RoundEvent.CALL_OFF)

    def _trip_round(self, group: str, ctl: Controller, key: str,
                    rounds: tuple[tuple[str, ...], ...], kind: str, limit: float, value: float,
                    control: str) -> bool:
        index = ctl.alarm_round
        announced = ctl.alarm_meters
        ctl.alarm_meters = []
        ctl.alarm_round = -1
        members = rounds[index] if 0 <= index < len(rounds) else ()
        # Judged again at the moment of the trip: a meter protected meanwhile stays on.
        meters = [m for m in members if self._trippable(m, True) and key not in self._meters[m].holds]
        reason = f"{control} control of {group}: round {index + 1} ({kind})"
        details = {"group": group, "round": index + 1, "kind": kind, "limit": limit,
                   "value": value}
        tripped = [m for m in meters if self._hold(m, key, reason, details)]
        for meter in announced:
            if meter in self._meters:
                self._alarm_off(meter, key, "tripped" if meter in tripped else "called_off")
        if not tripped:
            return False
        ctl.steps.append(TripStep(index + 1, tripped, self._now, kind, limit, value))
        self._groups[group].records_due.append(RecordDue(
            control, index + 1, kind, self._now, limit, value, tripped,
            self._now + self.settings.after_record_s))
        return True

    def _complete_records(self, group: str, control: str, value: float | None) -> None:
        g = self._groups[group]
        remaining = []
        for record in g.records_due:
            late = self._now >= record.due + self.settings.after_record_grace_s
            if record.control != control or self._now < record.due or (value is None and not late):
                remaining.append(record)
                continue
            after = value
            for step in (g.power if control == _POWER else g.energy).steps:
                if step.round_no == record.round_no and step.tripped_at == record.tripped_at:
                    step.after = after
            self._out.append(RecordRound(group, _POWER if control == _POWER else _ENERGY,
                                         record.round_no, record.kind, record.tripped_at,
                                         record.limit, record.before, after,
                                         "kW" if control == _POWER else "kWh",
                                         tuple(record.meters)))
        g.records_due = remaining

    def _release_all(self, group: str, ctl: Controller, key: str, reason: str) -> None:
        steps = list(reversed(ctl.steps))
        ctl.steps = []
        ctl.restore_since = None
        ctl.restore_blocked_until = 0.0
        self._release_steps(group, ctl, key, steps, reason)

    def _release_steps(self, group: str, ctl: Controller, key: str, steps: list[TripStep],
                       reason: str) -> float:
        """Release ``steps`` (last round first) with random per-customer delays, smallest delays
        to the first listed; returns the last due time."""
        s = self.settings
        ordered: list[tuple[str, int]] = []
        for step in steps:
            meters = list(step.meters)
            self._rng.shuffle(meters)  # nobody is always first back within a round
            ordered.extend((m, step.round_no) for m in meters)
        delays = sorted(self._rng.uniform(s.restore_delay_min_s, s.restore_delay_max_s)
                        for _ in ordered)
        action = _CLOSE_ACTIONS[s.restore_action]
        last = self._now
        for (meter, round_no), delay in zip(ordered, delays, strict=True):
            if meter not in self._meters:
                continue
            self._release(meter, key, delay, action, f"{reason} (round {round_no} of {group})")
            last = max(last, self._now + delay)
        return last

    # ================================================================== prepaid

    def _evaluate_prepaid(self, meter: str) -> None:
        ms = self._meters[meter]
        if ms.balance is None:
            return
        p = self.settings.prepaid
        balance = ms.balance
        details = {"balance": balance, "alarm_threshold": p.alarm_threshold,
                   "trip_threshold": p.trip_threshold}
        can_trip = not self.topology.is_protected(meter)
        if balance <= p.trip_threshold:
            if ms.prepaid_allows(PrepaidEvent.EXHAUSTED):
                ms.fire_prepaid(PrepaidEvent.EXHAUSTED)
                ms.prepaid_due = self._now + p.trip_delay_s
                self._raise("prepaid.low", meter, "warning", meter=meter, details=details)
                if can_trip:
                    self._alarm_on(meter, _PREPAID, {**details, "trip_at": ms.prepaid_due,
                                                     "reason": "prepaid balance exhausted"})
            if (ms.prepaid_allows(PrepaidEvent.TRIP_DUE) and ms.prepaid_due is not None
                    and self._now >= ms.prepaid_due and not self._meter_protected(meter)
                    and not self.protect_reasons()):
                ms.fire_prepaid(PrepaidEvent.TRIP_DUE)
                ms.prepaid_due = None
                self._hold(meter, _PREPAID, "prepaid balance exhausted", details)
                self._alarm_off(meter, _PREPAID, "tripped")
            return
        if ms.prepaid_phase is PrepaidPhase.TRIPPED:
            # Recharged: the customer may close the relay (1B); the gateway never closes it.
            self._release(meter, _PREPAID, 0.0, ControlAction.ALLOW_CLOSE, "prepaid recharged")
        if balance <= p.alarm_threshold:
            if ms.prepaid_allows(PrepaidEvent.LOW):
                ms.fire_prepaid(PrepaidEvent.LOW)
                ms.prepaid_due = None
                self._raise("prepaid.low", meter, "warning", meter=meter, details=details)
                if can_trip:
                    self._alarm_on(meter, _PREPAID, {**details, "reason": "prepaid balance low"})
            return
        if ms.prepaid_allows(PrepaidEvent.RECHARGED):
            ms.fire_prepaid(PrepaidEvent.RECHARGED)
            ms.prepaid_due = None
            self._alarm_off(meter, _PREPAID, "recharged")
            self._clear("prepaid.low", meter, meter=meter, severity="warning", details=details)

    # ================================================================== commands

    def _fail(self, cmd: str, reason: str) -> None:
        self._commands[cmd].failures.append(reason)

    def _maybe_finish(self, cmd: str) -> None:
        progress = self._commands.get(cmd)
        if progress is None or progress.waiting or progress.pending or progress.freeze_pending:
            return
        del self._commands[cmd]
        self._recent.append(cmd)
        del self._recent[:-_RECENT_COMMANDS]
        if progress.failures:
            reason = "; ".join(progress.failures)
            if progress.done:
                reason += " (done: " + "; ".join(progress.done) + ")"
            self._out.append(CommandOutcome(bytes.fromhex(cmd), "failed", reason))
        else:
            self._out.append(CommandOutcome(bytes.fromhex(cmd), "executed",
                                            "; ".join(progress.done) or "done"))

    def _targets(self, command: ControlCommand, cmd: str) -> list[str]:
        """Known target meters; group-addressed commands skip exempt (剔除) meters."""
        out = []
        for meter in command.meters:
            if meter not in self._meters:
                self._fail(cmd, f"{meter}: unknown meter")
            elif command.group is not None and self._meters[meter].exempt:
                self._commands[cmd].done.append(f"{meter} skipped (exempt from group commands)")
            else:
                out.append(meter)
        return out

    def _cmd_trip(self, command: ControlCommand, cmd: str) -> None:
        params = command.params
        delay = _number(params.get("alarm_delay_s", 0.0))
        duration = _number(params.get("duration_s", 0.0))
        reasons = self.protect_reasons()
        if reasons:
            self._fail(cmd, f"gateway is in protect (保电: {', '.join(reasons)}); no trips until "
                            "it ends")
            return
        if command.group is not None and self._groups.get(command.group, GroupState()).protect:
            self._fail(cmd, f"group {command.group} is in protect (保电)")
            return
        for meter in self._targets(command, cmd):
            if self.topology.is_protected(meter):
                self._fail(cmd, f"{meter}: protected customer, never tripped")
                continue
            ms = self._meters[meter]
            if ms.protect:
                self._fail(cmd, f"{meter}: in protect (保电); unprotect it first")
                continue
            if delay > 0:
                if ms.remote_trip_cmd is not None and ms.remote_trip_cmd in self._commands:
                    self._drop_pending_remote(meter, f"superseded by command {cmd[:8]}")
                ms.remote_trip_due = self._now + delay
                ms.remote_trip_cmd = cmd
                ms.remote_duration_s = duration
                self._commands[cmd].pending.append(meter)
                self._alarm_on(meter, f"{_REMOTE}:{cmd}", {"reason": "remote trip",
                                                           "trip_at": ms.remote_trip_due})
            else:
                self._remote_trip_now(meter, cmd, duration)

    def _remote_trip_now(self, meter: str, cmd: str | None, duration: float) -> None:
        ms = self._meters[meter]
        if self._hold(meter, _REMOTE, "remote trip", {"command": cmd}, cmd, always_send=True):
            ms.remote_release_at = self._now + duration if duration > 0 else None
            if cmd is not None and cmd in self._commands:
                self._commands[cmd].done.append(f"{meter} tripped")

    def _remote_trip_due(self, meter: str) -> None:
        ms = self._meters[meter]
        cmd = ms.remote_trip_cmd
        duration = ms.remote_duration_s
        ms.remote_trip_due = None
        ms.remote_trip_cmd = None
        progress = self._commands.get(cmd) if cmd is not None else None
        if progress is not None:
            progress.pending = [m for m in progress.pending if m != meter]
        source = f"{_REMOTE}:{cmd}"
        blocked = self.protect_reasons() or ms.protect or self.topology.is_protected(meter)
        if blocked:
            self._alarm_off(meter, source, "called_off")
            if progress is not None and cmd is not None:
                progress.failures.append(f"{meter}: in protect (保电) when the alarm delay ended")
        else:
            self._remote_trip_now(meter, cmd, duration)
            self._alarm_off(meter, source, "tripped")
        if cmd is not None:
            self._maybe_finish(cmd)

    def _drop_pending_remote(self, meter: str, why: str) -> None:
        ms = self._meters[meter]
        cmd = ms.remote_trip_cmd
        if cmd is None:
            return
        ms.remote_trip_due = None
        ms.remote_trip_cmd = None
        self._alarm_off(meter, f"{_REMOTE}:{cmd}", "called_off")
        progress = self._commands.get(cmd)
        if progress is not None:
            progress.pending = [m for m in progress.pending if m != meter]
            progress.failures.append(f"{meter}: {why}")
            self._maybe_finish(cmd)

    def _cmd_close(self, command: ControlCommand, cmd: str) -> None:
        action = (ControlAction.ALLOW_CLOSE if command.action == "allow_close"
                  else ControlAction.DIRECT_CLOSE)
        for meter in self._targets(command, cmd):
            ms = self._meters[meter]
            self._drop_pending_remote(meter, f"cancelled by {command.action} {cmd[:8]}")
            # The operator's word overrides every hold; a prepaid customer still low on balance
            # is armed again by the next balance report (with the full trip delay).
            ms.holds.clear()
            ms.remote_release_at = None
            if ms.prepaid_allows(PrepaidEvent.CALLED_OFF):
                ms.fire_prepaid(PrepaidEvent.CALLED_OFF)
                ms.prepaid_due = None
                self._alarm_off(meter, _PREPAID, "called_off")
            self._close(meter, action, f"operator {command.action}", cmd)
            self._commands[cmd].done.append(f"{meter} {command.action}")

    def _cmd_alarm(self, command: ControlCommand, cmd: str) -> None:
        release = bool(command.params.get("release", False))
        for meter in self._targets(command, cmd):
            ms = self._meters[meter]
            if not release:
                self._alarm_on(meter, _OPERATOR, {"reason": "operator alarm"}, cmd, always_send=True)
                self._commands[cmd].done.append(f"{meter} alarm on")
                continue
            if set(ms.alarm_sources) - {_OPERATOR}:
                self._fail(cmd, f"{meter}: a trip is pending ({', '.join(sorted(ms.alarm_sources))}); "
                                "its pre-trip alarm stays")
                continue
            ms.alarm_sources.pop(_OPERATOR, None)
            self._clear("customer.pre_trip", meter, meter=meter, severity="warning",
                        details={"outcome": "released by operator"})
            ms.alarm_frame_on = False
            self._send(meter, ControlAction.ALARM_RELEASE, "operator alarm release", cmd)
            self._commands[cmd].done.append(f"{meter} alarm released")

    def _cmd_limit(self, command: ControlCommand, cmd: str) -> None:
        group = command.group
        if group is None or group not in self._groups:
            self._fail(cmd, "a limit targets one configured group: targets = {group: id}")
            return
        s = self.settings
        limit = parse_limit(command.params, self._now, cmd, monthly_alarm_pct=s.monthly_alarm_pct,
                            float_down_window_min=s.float_down_window_min)
        if limit.rounds is not None:
            problems = self._round_problems(self.topology.groups[group], limit.rounds)
            if problems:
                raise LimitParamsError("params.rounds: " + "; ".join(problems))
        g = self._groups[group]
        if isinstance(limit, MonthlyEnergyLimit):
            g.monthly = limit
            self._commands[cmd].done.append(
                f"monthly energy limit {limit.limit_kwh:g} kWh on {group} (alarm at "
                f"{limit.alarm_pct:g} %)")
            self._evaluate_energy(group)
            return
        self._drop_limit(group, limit.kind, f"superseded by command {cmd[:8]}")
        g.limits[limit.kind] = limit
        if isinstance(limit, FloatDownLimit):
            self._commands[cmd].freeze_pending = True
            self._freeze_float_down(group)
        else:
            self._commands[cmd].done.append(f"{limit.kind.value} limit installed on {group}")
        self._evaluate_power(group)

    def _drop_limit(self, group: str, kind: LimitKind, why: str) -> None:
        """Remove ``group``'s limit of ``kind``; a float-down still waiting for its freeze gets
        its outcome now (it would otherwise wait forever)."""
        limit = self._groups[group].limits.pop(kind, None)
        if isinstance(limit, FloatDownLimit) and limit.limit_kw is None:
            progress = self._commands.get(limit.cmd)
            if progress is not None:
                progress.freeze_pending = False
                progress.failures.append(f"float_down on {group} {why} before its freeze")
                self._maybe_finish(limit.cmd)

    def _cmd_cancel(self, command: ControlCommand, cmd: str) -> None:
        kind = command.params.get("kind")
        if command.group is not None and command.group in self._groups:
            g = self._groups[command.group]
            removed = []
            for k in list(g.limits):
                if kind is None or kind == k.value:
                    self._drop_limit(command.group, k, f"cancelled by command {cmd[:8]}")
                    removed.append(k.value)
            if g.monthly is not None and kind in (None, MONTHLY_ENERGY):
                g.monthly = None
                removed.append(MONTHLY_ENERGY)
            self._commands[cmd].done.append(
                f"cancelled on {command.group}: {', '.join(removed) or 'nothing was installed'}")
            self._evaluate_power(command.group)
            self._evaluate_energy(command.group)
            return
        for meter in self._targets(command, cmd):
            had = self._meters[meter].remote_trip_cmd is not None
            self._drop_pending_remote(meter, f"cancelled by {cmd[:8]}")
            self._commands[cmd].done.append(
                f"{meter}: {'pending trip cancelled' if had else 'no pending trip'}")

    def _cmd_protect(self, command: ControlCommand, cmd: str) -> None:
        params = command.params
        mode = params.get("mode", "protect")
        on = command.action == "protect"
        duration = _number(params.get("duration_s", 0.0)) if on else 0.0
        until = self._now + duration if duration > 0 else None
        if mode == "protect" and command.group is not None and command.group in self._groups:
            g = self._groups[command.group]
            g.protect, g.protect_until = on, until
            if on:
                self._raise("group.protect", command.group, "minor", group=command.group,
                            details={"until": until, "command": cmd})
            else:
                self._clear("group.protect", command.group, group=command.group)
            self._commands[cmd].done.append(f"group {command.group} {command.action}")
            self._evaluate_power(command.group)
            self._evaluate_energy(command.group)
            return
        for meter in command.meters:
            if meter not in self._meters:
                self._fail(cmd, f"{meter}: unknown meter")
                continue
            ms = self._meters[meter]
            if mode == "exempt":
                ms.exempt, ms.exempt_until = on, until
                self._commands[cmd].done.append(f"{meter} {'exempt' if on else 'no longer exempt'}")
                continue
            ms.protect, ms.protect_until = on, until
            if on:
                self._drop_pending_remote(meter, "meter put in protect (保电)")
                self._raise("customer.protect", meter, "minor", meter=meter,
                            details={"until": until, "command": cmd})
            else:
                self._clear("customer.protect", meter, meter=meter)
            self._send(meter, ControlAction.PROTECT if on else ControlAction.PROTECT_RELEASE,
                       f"operator {command.action}", cmd)
            self._commands[cmd].done.append(f"{meter} {command.action}")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            return float(value)  # type: ignore[arg-type]  # Decimal from CBOR tag 4
        except (TypeError, ValueError):
            raise LimitParamsError(f"expected a number, got {value!r}") from None
    return float(value)


_Handler = Callable[[LoadControlEngine, ControlCommand, str], None]
_HANDLERS: Final[Mapping[str, _Handler]] = {
    "trip": LoadControlEngine._cmd_trip,
    "close": LoadControlEngine._cmd_close,
    "allow_close": LoadControlEngine._cmd_close,
    "alarm": LoadControlEngine._cmd_alarm,
    "limit": LoadControlEngine._cmd_limit,
    "cancel": LoadControlEngine._cmd_cancel,
    "protect": LoadControlEngine._cmd_protect,
    "unprotect": LoadControlEngine._cmd_protect,
}
