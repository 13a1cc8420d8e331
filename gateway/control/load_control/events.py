"""What goes into the load-control engine (commands) and what comes out of it (actions).

Outputs are frozen, slotted dataclasses; the daemon dispatches on their type:

* :class:`SendControl` — put one 1CH frame (or a Modbus relay write) on the meter's bus priority
  lane, verify it (``gateway.control.actuation``) and report back with
  ``engine.on_actuation(request_id, t, ok, reason)``.
* :class:`PublishAlarm` — one raise/clear event for ``P/G/alarms`` (``to_alarm_event`` maps it to
  the payload type). Per customer: ``customer.pre_trip`` raised before a trip (the alarm delay),
  cleared at the trip or when the alarm is called off; ``customer.trip`` raised at the trip and
  cleared at the restore — what the customer service centre watches.
* :class:`RecordRound` — a trip round record (1376.1 ERC6 功控跳闸记录: power before and 2 min after).
* :class:`CommandOutcome` — the ``executed``/``failed`` result of an accepted command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol, TypeAlias

from protocols.dlt645.messages import ControlAction
from protocols.payload import AlarmEvent

__all__ = [
    "CommandOutcome",
    "ControlCommand",
    "Output",
    "PublishAlarm",
    "RecordRound",
    "SendControl",
    "VerifiedLike",
]

Severity = Literal["critical", "major", "minor", "warning"]


class VerifiedLike(Protocol):
    """The attributes of ``gateway.control.commands.VerifiedCommand`` the engine reads."""

    @property
    def id(self) -> bytes: ...
    @property
    def action(self) -> str: ...
    @property
    def group(self) -> str | None: ...
    @property
    def meters(self) -> tuple[str, ...]: ...
    @property
    def params(self) -> Mapping[str, object]: ...


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """An accepted command: ``id`` (16 bytes), ``action`` (DESIGN §6 vocabulary), ``meters``
    (targets expanded), ``group`` (when targeted by group), ``params``."""

    id: bytes
    action: str
    meters: tuple[str, ...]
    group: str | None = None
    params: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_verified(cls, command: VerifiedLike) -> ControlCommand:
        return cls(command.id, command.action, tuple(command.meters), command.group,
                   command.params)


@dataclass(frozen=True, slots=True)
class SendControl:
    """Send ``action`` to ``meter``; the frame's deadline is ``valid_until`` (UTC seconds).
    ``request_id`` ties the actuation result back; ``reason`` says why (for logs and alarms);
    ``cmd_id`` is the command it serves, if any."""

    request_id: int
    meter: str
    action: ControlAction
    valid_until: float
    reason: str
    cmd_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class PublishAlarm:
    """One alarm event: ``kind``, ``key`` (kind/object), ``state`` raised|cleared,
    ``severity``, ``t`` (UTC seconds), ``meter``/``group`` concerned, ``details``, and on a
    clear the time it was ``raised_at``."""

    kind: str
    key: str
    state: Literal["raised", "cleared"]
    severity: Severity
    t: float
    meter: str | None = None
    group: str | None = None
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    raised_at: float | None = None

    def to_alarm_event(self) -> AlarmEvent:
        details = dict(self.details)
        if self.group is not None:
            details.setdefault("group", self.group)
        return AlarmEvent(
            kind=self.kind, key=self.key, state=self.state, severity=self.severity,
            details=details, meter=self.meter,
            raised=None if self.raised_at is None else round(self.raised_at * 1000),
        )


@dataclass(frozen=True, slots=True)
class RecordRound:
    """A completed trip round: ``group``, ``control`` (``power`` or ``energy``), ``round_no``
    (1-based), ``kind`` (the limit kind in force), ``tripped_at``, ``limit`` and the value
    ``before`` the trip and ``after`` (``after_record_s`` later; None without data) in ``unit``
    (kW for power, kWh for energy), and the ``meters`` tripped."""

    group: str
    control: Literal["power", "energy"]
    round_no: int
    kind: str
    tripped_at: float
    limit: float
    before: float | None
    after: float | None
    unit: str
    meters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The execution result of an accepted command: ``status`` executed|failed, ``reason``."""

    cmd_id: bytes
    status: Literal["executed", "failed"]
    reason: str


Output: TypeAlias = SendControl | PublishAlarm | RecordRound | CommandOutcome
