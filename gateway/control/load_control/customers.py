"""Per-customer controls: prepaid balance, delayed and time-limited remote trips, meter timers.

Prepaid (:class:`~.phases.PrepaidPhase`, moved only through :data:`~.phases.PREPAID_TRANSITIONS`):
alarm at or below the alarm threshold (``prepaid.low``), ``prepaid.exhausted`` and the trip
after ``trip_delay_s`` at or below the trip threshold (the alarm is raised for a protected
customer too — the CRM must call — but the trip never comes), and *allow close* — never a direct close — once recharged. A remote trip with an alarm
delay trips when the delay has run (unless protect began meanwhile); one with a duration allows
closing when it runs out (Q/GDW 1376.1 遥控跳闸 限电时间).
"""

from __future__ import annotations

from gateway.control.load_control.core import PREPAID, REMOTE
from gateway.control.load_control.phases import PrepaidEvent, PrepaidPhase
from gateway.control.load_control.rounds import RoundControl
from protocols.dlt645.messages import ControlAction

__all__ = ["CustomerControl"]


class CustomerControl(RoundControl):
    """The per-meter controls, on top of the group controls."""

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
            self._release(meter, REMOTE, 0.0, ControlAction.ALLOW_CLOSE, "remote trip period over")
        self._evaluate_prepaid(meter)

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
                self._raise("prepaid.exhausted", meter, "major", meter=meter,
                            details={**details, "trip_delay_s": p.trip_delay_s,
                                     "trip_at": ms.prepaid_due if can_trip else None,
                                     "protected": not can_trip})
                if can_trip:
                    self._alarm_on(meter, PREPAID, {**details, "trip_at": ms.prepaid_due,
                                                     "reason": "prepaid balance exhausted"})
            if (ms.prepaid_allows(PrepaidEvent.TRIP_DUE) and ms.prepaid_due is not None
                    and self._now >= ms.prepaid_due and not self._meter_protected(meter)
                    and not self.protect_reasons()):
                ms.fire_prepaid(PrepaidEvent.TRIP_DUE)
                ms.prepaid_due = None
                self._hold(meter, PREPAID, "prepaid balance exhausted", details)
                self._alarm_off(meter, PREPAID, "tripped")
            return
        self._clear("prepaid.exhausted", meter, meter=meter, severity="major", details=details)
        if ms.prepaid_phase is PrepaidPhase.TRIPPED:
            # Recharged: the customer may close the relay (1B); the gateway never closes it.
            self._release(meter, PREPAID, 0.0, ControlAction.ALLOW_CLOSE, "prepaid recharged")
        if balance <= p.alarm_threshold:
            if ms.prepaid_allows(PrepaidEvent.LOW):
                ms.fire_prepaid(PrepaidEvent.LOW)
                ms.prepaid_due = None
                self._raise("prepaid.low", meter, "warning", meter=meter, details=details)
                if can_trip:
                    self._alarm_on(meter, PREPAID, {**details, "reason": "prepaid balance low"})
            return
        if ms.prepaid_allows(PrepaidEvent.RECHARGED):
            ms.fire_prepaid(PrepaidEvent.RECHARGED)
            ms.prepaid_due = None
            self._alarm_off(meter, PREPAID, "recharged")
            self._clear("prepaid.low", meter, meter=meter, severity="warning", details=details)

    def _remote_trip_now(self, meter: str, cmd: str | None, duration: float) -> None:
        ms = self._meters[meter]
        if self._hold(meter, REMOTE, "remote trip", {"command": cmd}, cmd, always_send=True):
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
        source = f"{REMOTE}:{cmd}"
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
