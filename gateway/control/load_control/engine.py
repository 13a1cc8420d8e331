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
fail, and the one function that emits trips refuses it (:meth:`~.core.EngineCore._send`).

The class is layered by concern, one module each, every layer using only those below it:
:mod:`.core` (state, alarms, frames, holds, protect, command progress) → :mod:`.rounds` (power and
energy control) → :mod:`.customers` (prepaid, remote trips, meter timers) → :mod:`.commands`
(command handlers) → this module (the public inputs, views and persistence). Phases are enums
moved only through the transition tables of :mod:`.phases`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from edge_rules.load_limits import KIND_NAMES, STATE_NAMES
from gateway.control.load_control.commands import COMMAND_HANDLERS, CommandControl
from gateway.control.load_control.core import PREPAID, REMOTE
from gateway.control.load_control.events import ControlCommand, Output
from gateway.control.load_control.limits import LimitParamsError
from gateway.control.load_control.phases import PrepaidEvent
from gateway.control.load_control.rounds import default_rounds
from gateway.control.load_control.settings import EngineSettings, Topology
from gateway.control.load_control.state import (
    CommandProgress,
    GroupState,
    MeterState,
    PendingRequest,
)
from protocols.dlt645.messages import ControlAction

__all__ = ["STATE_VERSION", "GroupView", "LoadControlEngine", "default_rounds"]

STATE_VERSION: Final = 1


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


class LoadControlEngine(CommandControl):
    """See the module docstring. ``rng`` draws the restore delays (inject a seeded one in tests
    and simulations; the default is seeded from the OS)."""

    # ==== inputs --------------------------------------------------------------------------

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
                ms.holds[REMOTE] = self._now
                ms.commanded_open = True
                ms.pending_close = None
            return self._end()
        ms.holds.clear()
        if ms.prepaid_allows(PrepaidEvent.CALLED_OFF):
            ms.fire_prepaid(PrepaidEvent.CALLED_OFF)
            ms.prepaid_due = None
            self._alarm_off(meter, PREPAID, "called_off")
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
        handler = COMMAND_HANDLERS.get(command.action)
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

    # ---- views ---------------------------------------------------------------------------

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

    @property
    def active_alarms(self) -> Mapping[str, float]:
        return dict(self._alarms)

    # ---- persistence ---------------------------------------------------------------------

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

    # ---- housekeeping --------------------------------------------------------------------

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
