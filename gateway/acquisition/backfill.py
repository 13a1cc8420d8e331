"""Backfill: the intervals VEE estimated for a silent meter, read back from the meter's own records.

A DL/T 645-2007 meter keeps a load record (appendix A.7) every 15 minutes whether or not its bus
works, so a comm fault loses nothing the meter measured. While a meter is silent the VEE stage
publishes estimates (``E``); when the meter answers again, its bus task reads the records of
those intervals and the VEE stage re-publishes them as actuals (``A``, ``rev`` + 1, ``hist``).

Who does what — the bus task owns the line and the VEE stage owns the intervals, so they meet
here rather than calling each other:

* the VEE stage :meth:`BackfillBoard.want`\\ s every interval it estimates (and, at start,
  every estimated interval of the restored window);
* the bus task of a meter whose profile says it keeps load records (``load_records = true``),
  after a poll the meter answered, takes the oldest owed intervals
  (:meth:`BackfillBoard.next_span`, at most ``[vee.backfill] max_records``), asks for them in one
  routine transaction and hands the records over as :class:`gateway.acquisition.poll_result.IntervalRecords`;
* the VEE stage supersedes the estimates (:meth:`gateway.pipeline.vee_stage.VeeStage.backfill`).

Intervals and meter time. An interval is named by its number on the VEE grid (the engine's
numbering: local day × 96 + quarter-hour). Its record carries the *end* of the interval in the
meter's local clock, to the minute; :func:`boundary_local` and :func:`interval_closed_by` convert.
On a compressed test grid (``[vee] interval_seconds`` < 900) grid time runs faster than the wall
clock, and a simulated meter whose clock follows grid time records on the same boundaries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

#: Local midnight of interval 0's day (the grid numbers local days from the epoch).
LOCAL_EPOCH: Final = dt.datetime(1970, 1, 1)
INTERVAL: Final = dt.timedelta(minutes=15)


def boundary_local(interval: int) -> dt.datetime:
    """The meter-local time (naive) that ends ``interval``: where its load record is stamped."""
    return LOCAL_EPOCH + (interval + 1) * INTERVAL


def interval_closed_by(moment: dt.datetime) -> int | None:
    """The interval a record stamped ``moment`` closes; None when it is not on a 15-minute
    boundary (a meter recording every 5 minutes: only its quarter-hour records are used)."""
    elapsed = moment - LOCAL_EPOCH
    if elapsed % INTERVAL:
        return None
    return elapsed // INTERVAL - 1


@dataclass
class BackfillBoard:
    """Owed intervals per meter. ``max_records`` bounds one transaction; ``max_age_intervals``
    how far back an owed interval is kept (older ones are forgotten: they stay estimates)."""

    max_records: int = 4
    max_age_intervals: int = 96
    #: meters whose profile keeps load records, registered by their bus tasks
    meters: set[str] = field(default_factory=set)
    _owed: dict[str, set[int]] = field(default_factory=dict)

    def want(self, meter: str, interval: int) -> None:
        """Note that ``interval`` of ``meter`` was estimated. Noted for every meter (the VEE stage
        may restore its window before any bus has registered its meters); only meters in
        :attr:`meters` are ever asked, and :meth:`forget_before` bounds what the others leave."""
        self._owed.setdefault(meter, set()).add(interval)

    def owed(self, meter: str) -> list[int]:
        return sorted(self._owed.get(meter, ()))

    def forget_before(self, interval: int) -> None:
        """Drop owed intervals older than ``max_age_intervals`` before ``interval`` (now)."""
        oldest = interval - self.max_age_intervals
        for meter, owed in list(self._owed.items()):
            owed.difference_update([i for i in owed if i < oldest])
            if not owed:
                del self._owed[meter]

    def next_span(self, meter: str) -> tuple[int, int] | None:
        """(first interval, record count) of the next transaction for ``meter``: from its oldest
        owed interval, at most ``max_records`` records, ending at its last owed one."""
        owed = self._owed.get(meter)
        if not owed:
            return None
        first = min(owed)
        last = max(i for i in owed if i < first + self.max_records)
        return first, last - first + 1

    def settle(self, meter: str, first: int, count: int) -> None:
        """The span was asked for (answered, refused or broken): not owed any more. A record the
        meter does not have stays an estimate; asking again would only repeat the refusal."""
        owed = self._owed.get(meter)
        if owed is None:
            return
        owed.difference_update(range(first, first + count))
        if not owed:
            del self._owed[meter]


__all__ = ["BackfillBoard", "boundary_local", "interval_closed_by"]
