"""What a bus task hands to the rest of the daemon: the readings of one meter poll, or its failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, NamedTuple

ValueType = Decimal | float | int | str | bool | None


class PolledValue(NamedTuple):
    """One quantity as read: ``quantity`` name, ``value`` (Decimal for registers), ``unit``, ``t_ms``
    (gateway UTC time of the reply that carried it). A named tuple, not a frozen dataclass:
    immutable all the same, and a poller creates a thousand a second (0.23 µs each instead of
    0.49 µs)."""

    quantity: str
    value: ValueType
    unit: str | None
    t_ms: int


@dataclass(frozen=True, slots=True)
class PollResult:
    """Outcome of one poll of one meter.

    ``ok`` means the meter answered (some optional items may still be refused); ``values`` is what
    it said; ``errors`` lists what went wrong, for the operator.
    """

    meter_id: str
    bus: str
    started_ms: int
    finished_ms: int
    ok: bool
    values: tuple[PolledValue, ...] = ()
    errors: tuple[str, ...] = ()
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BusEvent:
    """A bus-level event for the alarm table (comm loss raised/cleared)."""

    kind: Literal["comm_loss"]
    meter_id: str
    bus: str
    state: Literal["raised", "cleared"]
    t_ms: int
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IntervalRecords:
    """Interval register values a meter stored itself (DL/T 645-2007 load records), read back for
    intervals VEE estimated while the meter was silent (gateway/acquisition/backfill.py).

    ``records`` pairs a VEE grid interval with the import register (kWh, exact) at its end;
    ``t_ms`` is when they were read."""

    meter_id: str
    bus: str
    t_ms: int
    records: tuple[tuple[int, Decimal], ...]
