"""The engine's mutable state, one small record per group and per meter, and its JSON form.

Everything the engine remembers lives here so that ``to_dict``/``from_dict`` can carry it across a
restart: a gateway that reboots in the middle of a shedding episode must come back knowing which
customers it holds open, in which rounds, and which restores it still owes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.control.load_control.limits import (
    LimitKind,
    MonthlyEnergyLimit,
    PowerLimit,
    limit_from_dict,
    limit_to_dict,
)
from gateway.control.load_control.phases import (
    PREPAID_TRANSITIONS,
    ROUND_TRANSITIONS,
    PrepaidEvent,
    PrepaidPhase,
    RoundEvent,
    RoundPhase,
    transition,
)

__all__ = [
    "CommandProgress",
    "Controller",
    "GroupState",
    "MeterState",
    "PendingRequest",
    "RecordDue",
    "TripStep",
]


@dataclass
class TripStep:
    """One executed round: which ``meters`` this controller took, when, and the value
    ``before`` the trip and ``after`` it (the shed estimate a restore under a limit relies on)."""

    round_no: int
    meters: list[str]
    tripped_at: float
    kind: str
    limit: float
    before: float | None
    after: float | None = None


@dataclass
class Controller:
    """The round sequencer of one control (power or energy) of one group.

    ``phase`` (:class:`~.phases.RoundPhase`, moved only by :meth:`fire`): ``idle`` (watching),
    ``alarm`` (round ``alarm_round`` announced at ``alarm_since`` to ``alarm_meters``), ``settle``
    (a round just tripped; nothing until ``settle_until``). ``steps`` is the stack of executed rounds — restores pop it, which is what
    makes them come back in reverse order. ``restore_since`` is when the restore condition
    started holding; ``restore_blocked_until`` keeps the next restore back until the previous
    one's customers are back on and have settled.
    """

    phase: RoundPhase = RoundPhase.IDLE
    alarm_round: int = -1
    alarm_since: float = 0.0
    alarm_meters: list[str] = field(default_factory=list)
    settle_until: float = 0.0
    steps: list[TripStep] = field(default_factory=list)
    restore_since: float | None = None
    restore_blocked_until: float = 0.0

    def fire(self, event: RoundEvent) -> None:
        """Move the phase by the table (:data:`~.phases.ROUND_TRANSITIONS`)."""
        self.phase = transition(ROUND_TRANSITIONS, self.phase, event)

    def allows(self, event: RoundEvent) -> bool:
        return (self.phase, event) in ROUND_TRANSITIONS

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["phase"] = self.phase.value
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Controller:
        values = dict(data)
        values["steps"] = [TripStep(**s) for s in values.get("steps", [])]
        values["phase"] = RoundPhase(values.get("phase", RoundPhase.IDLE))
        return cls(**values)


@dataclass
class RecordDue:
    """A round record waiting for its "after" value (``due`` = trip + after_record_s)."""

    control: str
    round_no: int
    kind: str
    tripped_at: float
    limit: float
    before: float | None
    meters: list[str]
    due: float


@dataclass
class GroupState:
    """Per group: installed ``limits`` (one per kind) and ``monthly`` limit, the two
    controllers, the power ``buckets`` (bucket index → [sum, count]), the last month-to-date
    energy, the group-level protect, and round records still waiting for their "after" value."""

    limits: dict[LimitKind, PowerLimit] = field(default_factory=dict)
    monthly: MonthlyEnergyLimit | None = None
    power: Controller = field(default_factory=Controller)
    energy: Controller = field(default_factory=Controller)
    buckets: dict[int, list[float]] = field(default_factory=dict)
    month_kwh: float | None = None
    protect: bool = False
    protect_until: float | None = None
    records_due: list[RecordDue] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "limits": [limit_to_dict(limit) for limit in self.limits.values()],
            "monthly": None if self.monthly is None else limit_to_dict(self.monthly),
            "power": self.power.to_dict(),
            "energy": self.energy.to_dict(),
            "buckets": {str(b): list(v) for b, v in sorted(self.buckets.items())},
            "month_kwh": self.month_kwh,
            "protect": self.protect,
            "protect_until": self.protect_until,
            "records_due": [asdict(r) for r in self.records_due],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupState:
        limits: dict[LimitKind, PowerLimit] = {}
        for item in data.get("limits", []):
            limit = limit_from_dict(item)
            if isinstance(limit, MonthlyEnergyLimit):
                raise ValueError("a monthly energy limit is stored under 'monthly', not 'limits'")
            limits[limit.kind] = limit
        monthly = data.get("monthly")
        monthly_limit = None if monthly is None else limit_from_dict(monthly)
        if monthly_limit is not None and not isinstance(monthly_limit, MonthlyEnergyLimit):
            raise ValueError("'monthly' holds a power limit")
        return cls(
            limits=limits,
            monthly=monthly_limit,
            power=Controller.from_dict(data.get("power", {})),
            energy=Controller.from_dict(data.get("energy", {})),
            buckets={int(b): [float(v[0]), float(v[1])] for b, v in data.get("buckets", {}).items()},
            month_kwh=data.get("month_kwh"),
            protect=bool(data.get("protect", False)),
            protect_until=data.get("protect_until"),
            records_due=[RecordDue(**r) for r in data.get("records_due", [])],
        )


@dataclass
class MeterState:
    """Per meter.

    ``holds``: why the engine keeps the relay open (``power:G``, ``energy:G``, ``remote``,
    ``prepaid``) → since when; the relay is wanted open while any hold remains.
    ``commanded_open``: the engine sent a trip and no close since. ``allow_close_only``: a
    prepaid trip happened since the relay opened, so whatever releases it last may only *allow*
    closing (never a direct close). ``pending_close``: ``[due, action]`` of a scheduled restore.
    ``alarm_sources`` → since: who wants the pre-trip alarm; ``alarm_frame_on``: a 2A frame was
    sent and not yet released. ``protect``/``exempt`` with their ``…_until`` (None = until
    revoked). ``remote_*``: a delayed remote trip and its automatic release. ``prepaid_*``: the
    prepaid phase (:class:`~.phases.PrepaidPhase`, moved only by :meth:`fire_prepaid`), its due
    time and the last balance. ``relay_open``: last reported relay bit.
    """

    holds: dict[str, float] = field(default_factory=dict)
    commanded_open: bool = False
    allow_close_only: bool = False
    pending_close: list[Any] | None = None
    alarm_sources: dict[str, float] = field(default_factory=dict)
    alarm_frame_on: bool = False
    protect: bool = False
    protect_until: float | None = None
    exempt: bool = False
    exempt_until: float | None = None
    remote_trip_due: float | None = None
    remote_trip_cmd: str | None = None
    remote_duration_s: float = 0.0
    remote_release_at: float | None = None
    prepaid_phase: PrepaidPhase = PrepaidPhase.NORMAL
    prepaid_due: float | None = None
    balance: float | None = None
    relay_open: bool | None = None

    def fire_prepaid(self, event: PrepaidEvent) -> None:
        """Move the prepaid phase by the table (:data:`~.phases.PREPAID_TRANSITIONS`)."""
        self.prepaid_phase = transition(PREPAID_TRANSITIONS, self.prepaid_phase, event)

    def prepaid_allows(self, event: PrepaidEvent) -> bool:
        return (self.prepaid_phase, event) in PREPAID_TRANSITIONS

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["prepaid_phase"] = self.prepaid_phase.value
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeterState:
        values = dict(data)
        values["prepaid_phase"] = PrepaidPhase(values.get("prepaid_phase", PrepaidPhase.NORMAL))
        return cls(**values)


@dataclass
class PendingRequest:
    """A :class:`~gateway.control.load_control.events.SendControl` awaiting its actuation result."""

    meter: str
    action: int
    cmd: str | None
    sent_at: float


@dataclass
class CommandProgress:
    """An accepted command not yet finished: request ids ``waiting`` for results, meters whose
    delayed trip is ``pending``, ``freeze_pending`` (a float-down not frozen yet), the
    ``failures`` so far and the ``done`` notes for the executed result."""

    waiting: list[int] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    freeze_pending: bool = False
    failures: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
