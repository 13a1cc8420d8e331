"""The engine's state and the primitives every control builds on: alarms, frames, holds.

:class:`EngineCore` owns what the engine remembers (groups, meters, requests in flight, commands
in progress) and the few operations through which anything leaves it: :meth:`~EngineCore._raise`
/ :meth:`~EngineCore._clear` (alarm events), :meth:`~EngineCore._send` (the only place a relay
frame is emitted — so the one place that refuses to trip a protected meter), holds and releases
(what keeps a relay open, and the close when the last hold goes), pre-trip alarms, protect, and
command bookkeeping. The controls are layered on top, each in its own module: rounds
(:mod:`.rounds`), per-customer controls (:mod:`.customers`), commands (:mod:`.commands`), and the
public inputs and persistence (:mod:`.engine`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Final

from gateway.control.load_control.events import (
    CommandOutcome,
    Output,
    PublishAlarm,
    SendControl,
    Severity,
)
from gateway.control.load_control.settings import EngineSettings, GroupSpec, SettingsError, Topology
from gateway.control.load_control.state import (
    CommandProgress,
    GroupState,
    MeterState,
    PendingRequest,
)
from protocols.dlt645.messages import ControlAction

__all__ = ["EngineCore"]

RECENT_COMMANDS: Final = 256
#: Hold keys (``MeterState.holds``) and alarm sources: a group's power or energy control is
#: ``power:G``/``energy:G``; a remote trip, a prepaid trip and the operator's alarm are these.
POWER: Final = "power"
ENERGY: Final = "energy"
REMOTE: Final = "remote"
PREPAID: Final = "prepaid"
OPERATOR: Final = "operator"
CLOSE_ACTIONS: Final = {"direct_close": ControlAction.DIRECT_CLOSE,
                        "allow_close": ControlAction.ALLOW_CLOSE}


class EngineCore:
    """State and primitives of :class:`~.engine.LoadControlEngine` (see the module docstring)."""

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

    def protect_reasons(self) -> tuple[str, ...]:
        """Why the whole gateway is in protect (保电) now: ``power_up``, ``link_loss``."""
        reasons = []
        if self._power_up_until is not None and self._now < self._power_up_until:
            reasons.append("power_up")
        if self._link_protect:
            reasons.append("link_loss")
        return tuple(reasons)

    # ---- plumbing ------------------------------------------------------------------------

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

    # ---- alarms --------------------------------------------------------------------------

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

    # ---- frames --------------------------------------------------------------------------

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

    # ---- holds and relays ----------------------------------------------------------------

    def _hold(self, meter: str, key: str, reason: str, details: Mapping[str, object],
              cmd: str | None = None, always_send: bool = False) -> bool:
        """Add hold ``key``; trip the relay if nothing held it open yet (or ``always_send``)."""
        if self.topology.is_protected(meter):
            return False
        ms = self._meters[meter]
        ms.holds[key] = self._now
        ms.pending_close = None
        if key == PREPAID:
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

    # ---- pre-trip alarms -----------------------------------------------------------------

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

    # ---- protect -------------------------------------------------------------------------

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

    # ---- command progress ----------------------------------------------------------------

    def _fail(self, cmd: str, reason: str) -> None:
        self._commands[cmd].failures.append(reason)

    def _maybe_finish(self, cmd: str) -> None:
        progress = self._commands.get(cmd)
        if progress is None or progress.waiting or progress.pending or progress.freeze_pending:
            return
        del self._commands[cmd]
        self._recent.append(cmd)
        del self._recent[:-RECENT_COMMANDS]
        if progress.failures:
            reason = "; ".join(progress.failures)
            if progress.done:
                reason += " (done: " + "; ".join(progress.done) + ")"
            self._out.append(CommandOutcome(bytes.fromhex(cmd), "failed", reason))
        else:
            self._out.append(CommandOutcome(bytes.fromhex(cmd), "executed",
                                            "; ".join(progress.done) or "done"))

    def _drop_pending_remote(self, meter: str, why: str) -> None:
        ms = self._meters[meter]
        cmd = ms.remote_trip_cmd
        if cmd is None:
            return
        ms.remote_trip_due = None
        ms.remote_trip_cmd = None
        self._alarm_off(meter, f"{REMOTE}:{cmd}", "called_off")
        progress = self._commands.get(cmd)
        if progress is not None:
            progress.pending = [m for m in progress.pending if m != meter]
            progress.failures.append(f"{meter}: {why}")
            self._maybe_finish(cmd)
