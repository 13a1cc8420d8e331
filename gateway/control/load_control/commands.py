"""Accepted commands the engine carries out: trip, close, alarm, limit, cancel, protect.

Each handler takes the verified command and its progress key; it records what it did in the
command's :class:`~.state.CommandProgress`, and the engine reports the outcome once nothing is
left waiting (actuations, delayed trips, a float-down freeze). :data:`COMMAND_HANDLERS` maps the
envelope's action to its handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from gateway.control.load_control.core import OPERATOR, PREPAID, REMOTE
from gateway.control.load_control.customers import CustomerControl
from gateway.control.load_control.events import ControlCommand
from gateway.control.load_control.limits import (
    MONTHLY_ENERGY,
    FloatDownLimit,
    LimitKind,
    LimitParamsError,
    MonthlyEnergyLimit,
    parse_limit,
)
from gateway.control.load_control.phases import PrepaidEvent
from gateway.control.load_control.state import GroupState
from protocols.dlt645.messages import ControlAction

__all__ = ["COMMAND_HANDLERS", "CommandControl"]


class CommandControl(CustomerControl):
    """Command handlers, on top of every control."""

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
                self._alarm_on(meter, f"{REMOTE}:{cmd}", {"reason": "remote trip",
                                                           "trip_at": ms.remote_trip_due})
            else:
                self._remote_trip_now(meter, cmd, duration)

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
                self._alarm_off(meter, PREPAID, "called_off")
            self._close(meter, action, f"operator {command.action}", cmd)
            self._commands[cmd].done.append(f"{meter} {command.action}")

    def _cmd_alarm(self, command: ControlCommand, cmd: str) -> None:
        release = bool(command.params.get("release", False))
        for meter in self._targets(command, cmd):
            ms = self._meters[meter]
            if not release:
                self._alarm_on(meter, OPERATOR, {"reason": "operator alarm"}, cmd, always_send=True)
                self._commands[cmd].done.append(f"{meter} alarm on")
                continue
            if set(ms.alarm_sources) - {OPERATOR}:
                self._fail(cmd, f"{meter}: a trip is pending ({', '.join(sorted(ms.alarm_sources))}); "
                                "its pre-trip alarm stays")
                continue
            ms.alarm_sources.pop(OPERATOR, None)
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


_Handler = Callable[[CommandControl, ControlCommand, str], None]
COMMAND_HANDLERS: Final[Mapping[str, _Handler]] = {
    "trip": CommandControl._cmd_trip,
    "close": CommandControl._cmd_close,
    "allow_close": CommandControl._cmd_close,
    "alarm": CommandControl._cmd_alarm,
    "limit": CommandControl._cmd_limit,
    "cancel": CommandControl._cmd_cancel,
    "protect": CommandControl._cmd_protect,
    "unprotect": CommandControl._cmd_protect,
}
