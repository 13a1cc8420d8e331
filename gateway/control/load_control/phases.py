"""The engine's two phase machines, each as an enum and one transition table.

Everything that moves a phase lives in these tables (the h11 way): the engine never assigns a
phase, it fires an event, and an event the table does not list for the current phase raises
:class:`TransitionError` and changes nothing. ``tests/test_load_control_phases.py`` walks every
(phase, event) pair.

Phases are :class:`enum.StrEnum` with the strings older versions saved in
``data_dir/load_control.json`` (``"idle"``, ``"trip_pending"``, …), so a saved state written before
the enums existed loads unchanged and a new one reads the same.

**Round sequencer** (:class:`RoundPhase`, one per control — power and energy — of each group)::

    idle   --ANNOUNCE-->       alarm    the next round's customers got the pre-trip alarm
    alarm  --CALL_OFF-->       idle     back under, suspended (保电) or no limit any more
    alarm  --ROUND_TRIPPED-->  settle   power: a round tripped; nothing for settle_s
    alarm  --ROUND_DONE-->     idle     energy: a round tripped (energy does not come down by
                                        itself: no settle); power: nobody left to trip
    settle --SETTLED-->        idle     settle_s over
    idle | settle --STOP-->    idle     the limit is no longer in force (a pending alarm is
                                        called off first: STOP from alarm is a bug)

**Prepaid** (:class:`PrepaidPhase`, one per meter)::

    normal | alarm                  --EXHAUSTED-->  trip_pending   balance ≤ trip threshold
    trip_pending                    --TRIP_DUE-->   tripped        trip_delay_s over
    normal | trip_pending | tripped --LOW-->        alarm          alarm ≥ balance > trip
    alarm | trip_pending | tripped  --RECHARGED-->  normal         balance above the alarm
    trip_pending | tripped          --CALLED_OFF--> normal         an operator closed the relay
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, TypeVar

from gateway.control.errors import ControlError

__all__ = [
    "PREPAID_TRANSITIONS",
    "ROUND_TRANSITIONS",
    "PrepaidEvent",
    "PrepaidPhase",
    "RoundEvent",
    "RoundPhase",
    "TransitionError",
    "transition",
]


class TransitionError(ControlError, RuntimeError):
    """The engine fired an event its phase table has no row for — an engine bug, never bad
    input; the phase is left as it was."""


class RoundPhase(enum.StrEnum):
    IDLE = "idle"
    ALARM = "alarm"
    SETTLE = "settle"


class RoundEvent(enum.Enum):
    ANNOUNCE = enum.auto()
    CALL_OFF = enum.auto()
    ROUND_TRIPPED = enum.auto()
    ROUND_DONE = enum.auto()
    SETTLED = enum.auto()
    STOP = enum.auto()


class PrepaidPhase(enum.StrEnum):
    NORMAL = "normal"
    ALARM = "alarm"
    TRIP_PENDING = "trip_pending"
    TRIPPED = "tripped"


class PrepaidEvent(enum.Enum):
    EXHAUSTED = enum.auto()
    TRIP_DUE = enum.auto()
    LOW = enum.auto()
    RECHARGED = enum.auto()
    CALLED_OFF = enum.auto()


_R, _RE = RoundPhase, RoundEvent
ROUND_TRANSITIONS: Final[Mapping[tuple[RoundPhase, RoundEvent], RoundPhase]] = {
    (_R.IDLE, _RE.ANNOUNCE): _R.ALARM,
    (_R.ALARM, _RE.CALL_OFF): _R.IDLE,
    (_R.ALARM, _RE.ROUND_TRIPPED): _R.SETTLE,
    (_R.ALARM, _RE.ROUND_DONE): _R.IDLE,
    (_R.SETTLE, _RE.SETTLED): _R.IDLE,
    (_R.IDLE, _RE.STOP): _R.IDLE,
    (_R.SETTLE, _RE.STOP): _R.IDLE,
}

_P, _PE = PrepaidPhase, PrepaidEvent
PREPAID_TRANSITIONS: Final[Mapping[tuple[PrepaidPhase, PrepaidEvent], PrepaidPhase]] = {
    (_P.NORMAL, _PE.EXHAUSTED): _P.TRIP_PENDING,
    (_P.ALARM, _PE.EXHAUSTED): _P.TRIP_PENDING,
    (_P.TRIP_PENDING, _PE.TRIP_DUE): _P.TRIPPED,
    (_P.NORMAL, _PE.LOW): _P.ALARM,
    (_P.TRIP_PENDING, _PE.LOW): _P.ALARM,
    (_P.TRIPPED, _PE.LOW): _P.ALARM,
    (_P.ALARM, _PE.RECHARGED): _P.NORMAL,
    (_P.TRIP_PENDING, _PE.RECHARGED): _P.NORMAL,
    (_P.TRIPPED, _PE.RECHARGED): _P.NORMAL,
    (_P.TRIP_PENDING, _PE.CALLED_OFF): _P.NORMAL,
    (_P.TRIPPED, _PE.CALLED_OFF): _P.NORMAL,
}

Phase = TypeVar("Phase", RoundPhase, PrepaidPhase)
Event = TypeVar("Event", RoundEvent, PrepaidEvent)


def transition(table: Mapping[tuple[Phase, Event], Phase], phase: Phase, event: Event) -> Phase:
    """The phase after ``event`` in ``phase``, or :class:`TransitionError`."""
    try:
        return table[(phase, event)]
    except KeyError:
        raise TransitionError(f"load control: {event.name} is not a transition from phase "
                              f"{phase.value!r}") from None
