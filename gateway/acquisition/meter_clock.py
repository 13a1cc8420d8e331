"""Reading a meter's clock on its bus: when (a cadence per meter, staggered) and how.

The clock is not read on every poll: it takes three transactions (date, time, date again —
protocols/dlt645/clock.py says why), and a meter's quartz drifts by seconds a day, not minutes.
Each meter whose profile maps its clock (a DL/T 645 ``[clock]`` table, a Modbus ``clock``
table) carries a :class:`ClockCadence`; once it is due, its bus reads the clock after a poll the
meter answered and adds the offset to that poll as ``clock.offset`` (meter − gateway, seconds),
so it is validated, stored and published like any read and graded downstream by the VEE clock
rules (gateway/control/meter_clock/, docs/clock.md). Other values that rarely change (the CT and
PT ratios) use a profile read's own ``every_s`` cadence.

After a start the first reads are spread over ``[clock] read_spread_s``, meter by meter, so a
bus is not asked for every meter's clock in its first minute.
The same :func:`read_clock_offset` serves the time-sync policy's read-back on the priority lane.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from protocols.dlt645.clock import clock_offset_s, meter_clock, reading_value
from protocols.dlt645.items import Reading

#: The quantity the offset is published as (meter clock − gateway clock, seconds).
CLOCK_OFFSET: Final = "clock.offset"
#: After a clock read that got no usable answer, the next try waits at most this long.
RETRY_S: Final = 300.0

MeterRead = Callable[[int], Awaitable[Sequence[Reading]]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ClockCadence:
    """When one meter's clock is read next (``due``, monotonic seconds): ``dis`` are a DL/T
    645 meter's (date, time) data identifiers (None for a Modbus meter, whose profile says
    which registers), ``interval_s`` the cadence."""

    dis: tuple[int, int] | None
    interval_s: float
    due: float

    @classmethod
    def staggered(cls, dis: tuple[int, int] | None, interval_s: float, spread_s: float,
                  index: int, count: int, now: float) -> ClockCadence:
        """Meter ``index`` of ``count`` read first at its share of the spread after ``now``."""
        span = min(spread_s, interval_s)
        return cls(dis, interval_s, now + span * index / max(1, count))

    def is_due(self, now: float) -> bool:
        return now >= self.due

    def read(self, now: float) -> None:
        """The meter answered (a refusal will not change by asking again soon either)."""
        self.due = now + self.interval_s

    def soon(self, now: float, seconds: float) -> None:
        """Read again within ``seconds`` (a decision waits for a later reading)."""
        self.due = min(self.due, now + seconds)

    def failed(self, now: float) -> None:
        """No usable answer: try again soon, not at every poll."""
        self.due = now + min(self.interval_s, RETRY_S)


async def read_clock_offset(read: MeterRead, dis: tuple[int, int], utc_offset_min: int,
                            now_ms: Callable[[], int] = _now_ms) -> float:
    """Read date, time and date again through ``read`` and return meter − gateway in seconds.
    Raises what ``read`` raises, or :class:`protocols.dlt645.DataError` when the meter answers
    something that is not a date or a time."""
    date_di, time_di = dis
    before = reading_value(await read(date_di), dt.date)
    time_of_day = reading_value(await read(time_di), dt.time)
    received = now_ms()
    after = reading_value(await read(date_di), dt.date)
    assert isinstance(before, dt.date) and isinstance(after, dt.date)
    assert isinstance(time_of_day, dt.time)
    return clock_offset_s(meter_clock(before, time_of_day, after), received, utc_offset_min)
