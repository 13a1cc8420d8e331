"""Whether a meter's clock may be set now: the time-sync rule, pure (no I/O, no clocks).

The runner (runner.py) asks :func:`decide` with everything the answer depends on and acts on
the :class:`SyncVerdict`. The rule, in the order it is checked (the first that applies wins, so
the reason given is the most basic one):

===================  ========================================================================
``not_needed``       the offset is below the ``clock_drift`` rule's ``resync_s``
``mode``             ``[clock] mode`` is ``off`` or ``alarm-only``: alarms only
``no_route``         the meter is not on a DL/T 645 bus (Modbus profiles map no clock)
``untrusted``        the gateway's own clock is not trusted (gateway/control/commands/clock.py):
                     setting meters from a wrong clock spreads the error to every meter
``too_far``          the step would exceed ``max_step_s``: a fault for a person to look at
``synced_today``     the meter — for a broadcast, any meter on the bus — was set today
                     (gateway-local date): at most one sync per meter per day
``near_freeze``      the step's span, widened by ``guard_minutes``, contains the meters'
                     local midnight or a configured freeze time: the freeze would be skipped
                     or repeated
``send``             sync now
===================  ========================================================================

A broadcast (08H) sets every meter on the bus to the gateway's time, so its span covers the
largest offset last read on that bus, not only the meter that asked.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000


class SyncVerdict(enum.Enum):
    """What the rule says; the value is the word journals and alarm details carry."""

    NOT_NEEDED = "not_needed"
    MODE = "mode"
    NO_ROUTE = "no_route"
    UNTRUSTED = "untrusted"
    TOO_FAR = "too_far"
    SYNCED_TODAY = "synced_today"
    NEAR_FREEZE = "near_freeze"
    SEND = "send"


@dataclass(frozen=True, slots=True)
class SyncRule:
    """The configured part of the rule: ``mode``, ``max_step_s``, ``guard_ms`` and the
    meters' freeze times as minutes after local midnight (midnight itself is always one),
    ``utc_offset_ms`` the meters' zone."""

    mode: str
    max_step_s: float
    guard_ms: int
    freeze_minutes: tuple[int, ...]
    utc_offset_ms: int

    @classmethod
    def create(cls, mode: str, max_step_s: float, guard_minutes: int,
               freeze_times: Sequence[str], utc_offset_min: int) -> SyncRule:
        minutes = {0} | {int(t[:2]) * 60 + int(t[3:5]) for t in freeze_times}
        return cls(mode, max_step_s, guard_minutes * MINUTE_MS, tuple(sorted(minutes)),
                   utc_offset_min * MINUTE_MS)

    def local_day(self, gateway_ms: int) -> int:
        """The meters' local date (days since 1970-01-01) at gateway UTC time ``gateway_ms``."""
        return (gateway_ms + self.utc_offset_ms) // DAY_MS

    def crosses_freeze(self, gateway_ms: int, offsets_s: Sequence[float]) -> bool:
        """Whether the local times from the gateway's to each meter's (gateway + offset),
        widened by the guard on both ends, contain midnight or a freeze time."""
        local = gateway_ms + self.utc_offset_ms
        low = local + int(min([0.0, *offsets_s]) * 1000) - self.guard_ms
        high = local + int(max([0.0, *offsets_s]) * 1000) + self.guard_ms
        for day in range(low // DAY_MS, high // DAY_MS + 1):
            for minute in self.freeze_minutes:
                if low <= day * DAY_MS + minute * MINUTE_MS <= high:
                    return True
        return False


def clear_after_s(rule: SyncRule, offsets_s: Sequence[float]) -> float:
    """After a ``near_freeze`` verdict, how long until the same span has moved past the freeze
    it touched: its width, the guard on both ends, and a minute. The runner asks for the clock
    again then — otherwise a meter whose daily read falls near midnight would be asked at the
    same time of day, and refused, every day."""
    width = max([0.0, *offsets_s]) - min([0.0, *offsets_s])
    return width + 2 * rule.guard_ms / 1000 + 60.0


def decide(rule: SyncRule, *, resync: bool, offset_s: float, routable: bool, trusted: bool,
           gateway_ms: int, last_sync_day: int | None, bus_offsets_s: Sequence[float] = ()
           ) -> SyncVerdict:
    """The verdict on syncing a meter whose clock is ``offset_s`` off (meter − gateway) now
    (``gateway_ms``, UTC). ``resync`` is the kernel's verdict (drift above ``resync_s``);
    ``last_sync_day`` the local day of the last sync that reached the meter (for a broadcast:
    the latest of the bus's meters); ``bus_offsets_s`` the last offsets read on the meter's bus
    (a broadcast steps them all)."""
    if not resync:
        return SyncVerdict.NOT_NEEDED
    if rule.mode not in ("broadcast", "addressed"):
        return SyncVerdict.MODE
    if not routable:
        return SyncVerdict.NO_ROUTE
    if not trusted:
        return SyncVerdict.UNTRUSTED
    if abs(offset_s) > rule.max_step_s:
        return SyncVerdict.TOO_FAR
    if last_sync_day is not None and last_sync_day >= rule.local_day(gateway_ms):
        return SyncVerdict.SYNCED_TODAY
    stepped = [offset_s]
    if rule.mode == "broadcast":
        stepped += list(bus_offsets_s)
    if rule.crosses_freeze(gateway_ms, stepped):
        return SyncVerdict.NEAR_FREEZE
    return SyncVerdict.SEND
