"""Day types, seasons and the interval grid: how VEE knows which days are alike.

Consumption on a Sunday looks like other Sundays, not like the Friday before it; a public
holiday looks like a Sunday; and a working Saturday (China moves weekend days to make long
holidays, 调休) looks like a weekday. History comparisons and like-day estimates therefore
group days by **day type** (weekday, Saturday, Sunday, holiday) and by **season**.

Everything here works in the *local* day of the meters: billing days, tariff periods and daily
freezes start at local midnight. The offset is fixed (China has no daylight saving time); zones
with DST are not supported, because a 23- or 25-hour day breaks the 96-interval grid the kernels
rely on.

The interval grid follows NEM12: a day has 96 intervals of 15 minutes, interval ``k`` of a day
runs from ``00:00 + 15k min`` to ``00:15 + 15k min`` and its energy is closed by the register
read taken at its *end*. The read at 24:00 (the next day's 00:00) therefore belongs to the last
interval of the day that ends there. Intervals are numbered absolutely (local time, since
1970-01-01) so that a day is ``interval // 96`` and a slot within it ``interval % 96``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CN_HOLIDAYS",
    "CN_WORKDAYS",
    "DAY_MS",
    "INTERVALS_PER_DAY",
    "INTERVAL_MS",
    "Calendar",
    "DayType",
    "Season",
    "day_number",
    "parse_utc_offset",
]

INTERVAL_MS: Final = 15 * 60 * 1000
INTERVALS_PER_DAY: Final = 96
DAY_MS: Final = 24 * 3600 * 1000
_EPOCH: Final = dt.date(1970, 1, 1)


class DayType(IntEnum):
    """How a day behaves: the key for like-day averages and history comparisons."""

    WEEKDAY = 0
    SATURDAY = 1
    SUNDAY = 2
    HOLIDAY = 3


class Season(IntEnum):
    """Meteorological seasons (whole months), the key for seasonal factors."""

    WINTER = 0
    SPRING = 1
    SUMMER = 2
    AUTUMN = 3


#: Northern-hemisphere meteorological seasons: Dec–Feb winter, Mar–May spring, ...
NORTH_SEASONS: Final = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0)


def _ranges(*spans: str) -> frozenset[dt.date]:
    days: set[dt.date] = set()
    for span in spans:
        first, _, last = span.partition("..")
        start = dt.date.fromisoformat(first)
        end = dt.date.fromisoformat(last) if last else start
        while start <= end:
            days.add(start)
            start += dt.timedelta(days=1)
    return frozenset(days)


#: Public holidays of mainland China as announced by the State Council General Office for each
#: year (the notice is published in the autumn before). Data, not logic: extend it each year,
#: or override it per deployment with ``[vee] holidays`` / ``workdays`` (docs/vee.md).
CN_HOLIDAYS: Final = _ranges(
    # 2024
    "2024-01-01", "2024-02-10..2024-02-17", "2024-04-04..2024-04-06", "2024-05-01..2024-05-05",
    "2024-06-10", "2024-09-15..2024-09-17", "2024-10-01..2024-10-07",
    # 2025
    "2025-01-01", "2025-01-28..2025-02-04", "2025-04-04..2025-04-06", "2025-05-01..2025-05-05",
    "2025-05-31..2025-06-02", "2025-10-01..2025-10-08",
    # 2026
    "2026-01-01..2026-01-03", "2026-02-15..2026-02-23", "2026-04-04..2026-04-06",
    "2026-05-01..2026-05-05", "2026-06-19..2026-06-21", "2026-09-25..2026-09-27",
    "2026-10-01..2026-10-07",
)

#: Weekend days that are working days in exchange for a long holiday (调休): they behave like
#: weekdays.
CN_WORKDAYS: Final = _ranges(
    "2024-02-04", "2024-02-18", "2024-04-07", "2024-04-28", "2024-05-11", "2024-09-14",
    "2024-09-29", "2024-10-12",
    "2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11",
    "2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10",
)


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01 (the kernels' day index)."""
    return (day - _EPOCH).days


def parse_utc_offset(text: str) -> int:
    """``"+08:00"`` → 480 (minutes). Raises ``ValueError`` with what is expected."""
    sign = {"+": 1, "-": -1}.get(text[:1])
    hours, colon, minutes = text[1:].partition(":")
    if sign is None or not colon or not (hours.isdigit() and minutes.isdigit()) or len(minutes) != 2:
        raise ValueError(f"UTC offset {text!r} is not of the form +HH:MM or -HH:MM")
    total = sign * (int(hours) * 60 + int(minutes))
    if total % 15 or abs(total) > 14 * 60:
        raise ValueError(
            f"UTC offset {text!r} must be a whole number of quarter hours within ±14:00 "
            "(the 15-minute interval grid must start at local midnight)"
        )
    return total


@dataclass(frozen=True, slots=True)
class Calendar:
    """Local days of the meters: offset from UTC, holidays, make-up working days, seasons.

    ``utc_offset_minutes`` local time minus UTC (China: +480); ``holidays`` dates that behave
    like holidays; ``workdays`` weekend dates that behave like weekdays; ``season_of_month``
    season index (0–3) for each month January..December.
    """

    utc_offset_minutes: int = 480
    holidays: frozenset[dt.date] = CN_HOLIDAYS
    workdays: frozenset[dt.date] = CN_WORKDAYS
    season_of_month: tuple[int, ...] = NORTH_SEASONS
    _cache: dict[int, int] = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def offset_ms(self) -> int:
        return self.utc_offset_minutes * 60_000

    # ---------------------------------------------------------------- day types and seasons

    def day_type(self, day: dt.date) -> DayType:
        if day in self.holidays:
            return DayType.HOLIDAY
        if day in self.workdays:
            return DayType.WEEKDAY
        weekday = day.weekday()
        if weekday == 5:
            return DayType.SATURDAY
        if weekday == 6:
            return DayType.SUNDAY
        return DayType.WEEKDAY

    def season(self, day: dt.date) -> Season:
        return Season(self.season_of_month[day.month - 1])

    def day_types(self, first_day: int, count: int) -> NDArray[np.uint8]:
        """Day types of ``count`` consecutive day numbers from ``first_day`` (for history windows)."""
        out = np.empty(max(count, 0), dtype=np.uint8)
        for i in range(out.size):
            number = first_day + i
            cached = self._cache.get(number)
            if cached is None:
                cached = int(self.day_type(_EPOCH + dt.timedelta(days=number)))
                self._cache[number] = cached
            out[i] = cached
        return out

    def seasons(self, first_day: int, count: int) -> NDArray[np.uint8]:
        months = [(_EPOCH + dt.timedelta(days=first_day + i)).month for i in range(max(count, 0))]
        return np.array([self.season_of_month[m - 1] for m in months], dtype=np.uint8)

    def date(self, number: int) -> dt.date:
        return _EPOCH + dt.timedelta(days=number)

    # ---------------------------------------------------------------- interval grid

    def interval_of_read(self, t_ms: int, tolerance_ms: int = 0) -> int | None:
        """The absolute interval a register read at UTC ``t_ms`` closes, or None when the read is
        more than ``tolerance_ms`` away from an interval boundary (off the grid)."""
        local = t_ms + self.offset_ms
        boundary = (local + INTERVAL_MS // 2) // INTERVAL_MS
        if abs(local - boundary * INTERVAL_MS) > tolerance_ms:
            return None
        return int(boundary) - 1

    def read_time_ms(self, interval: int) -> int:
        """UTC time (ms) of the read that closes absolute interval ``interval``."""
        return (interval + 1) * INTERVAL_MS - self.offset_ms

    def local_day(self, t_ms: int) -> int:
        """Local day number of an instant."""
        return (t_ms + self.offset_ms) // DAY_MS

    @classmethod
    def from_tables(
        cls,
        utc_offset_minutes: int,
        holidays: Iterable[dt.date],
        workdays: Iterable[dt.date],
        season_of_month: Mapping[int, int] | None = None,
    ) -> Calendar:
        months: tuple[int, ...] = NORTH_SEASONS
        if season_of_month is not None:
            months = tuple(season_of_month.get(m, NORTH_SEASONS[m - 1]) for m in range(1, 13))
        return cls(utc_offset_minutes, frozenset(holidays), frozenset(workdays), months)
