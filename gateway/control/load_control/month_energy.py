"""Month-to-date energy of summation groups, for monthly energy limits (月电控), from the
validated register reads.

Q/GDW 1376.1's monthly energy control compares the energy a group has used *this calendar
month* with the limit. A meter's register is cumulative, so month-to-date is the register now
minus the register at the month's start, in the gateway's configured local time
(``[load_control] utc_offset_min``): the first of the month at 00:00 there. No read falls
exactly on that instant, so the register at the boundary is interpolated linearly between the
last read of the old month and the first read of the new one (polls minutes apart: the error is
the shape of the load within one poll interval). When the daemon did not see the old month's
end (started mid-month, or down across the boundary), the first read it has is the baseline:
month-to-date is then *under*-counted, which can delay a trip but never cause one early.

The per-member month-to-date values are totalled by the same group kernel as power and daily
energy (:func:`edge_rules.groups.group_totals`: sign × CT × PT per member, the member's import
or export register), and a group total exists only when every member has a read this month —
the engine decides nothing on missing data.

The baselines are saved (``data_dir/month_energy.json``) whenever one is set, so a restart in
the middle of a month keeps counting from the month's start instead of from the restart.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_rules.groups import EXPORT, IMPORT, GroupLayout, gather_channels, group_totals

__all__ = ["REGISTERS", "MonthToDate"]

#: The register each member direction reads (the validated feed's quantity names).
REGISTERS: Mapping[str, str] = {IMPORT: "energy.active.import.total",
                                EXPORT: "energy.active.export.total"}


@dataclass(slots=True)
class _Baseline:
    month: int  # local year * 12 + month - 1
    base_kwh: float
    last_t: float
    last_kwh: float


class MonthToDate:
    """Month-to-date registers per (meter, direction) and group totals; see the module
    docstring. ``layout`` is the group layout of the configuration (the one power uses)."""

    def __init__(self, layout: GroupLayout, utc_offset_min: int,
                 saved: Mapping[str, Any] | None = None) -> None:
        self.layout = layout
        self.zone = dt.timezone(dt.timedelta(minutes=utc_offset_min))
        self.meters = sorted({meter for meter, _ in layout.channels})
        self._state: dict[tuple[str, str], _Baseline] = {}
        for key, row in (saved or {}).items():
            meter, _, direction = key.rpartition("/")
            if (meter, direction) in layout.channels:
                self._state[(meter, direction)] = _Baseline(
                    int(row[0]), float(row[1]), float(row[2]), float(row[3]))

    def month_of(self, t: float) -> int:
        local = dt.datetime.fromtimestamp(t, self.zone)
        return local.year * 12 + local.month - 1

    def month_start(self, month: int) -> float:
        """UTC seconds of local 00:00 on the first day of ``month``."""
        year, index = divmod(month, 12)
        return dt.datetime(year, index + 1, 1, tzinfo=self.zone).timestamp()

    def observe(self, meter: str, direction: str, t: float, kwh: float) -> bool:
        """A validated register read; True when a baseline was set (time to save)."""
        if not math.isfinite(kwh):
            return False
        key = (meter, direction)
        month = self.month_of(t)
        state = self._state.get(key)
        if state is None:
            self._state[key] = _Baseline(month, kwh, t, kwh)
            return True
        if month < state.month or t < state.last_t:
            return False  # the wall clock went back: keep the month already counted
        changed = False
        if month > state.month:
            boundary = self.month_start(month)
            if month == state.month + 1 and state.last_t < boundary <= t and t > state.last_t:
                share = (boundary - state.last_t) / (t - state.last_t)
                base = state.last_kwh + share * (kwh - state.last_kwh)
            else:
                base = kwh  # the old month's end was not seen: count from this read
            state.month, state.base_kwh = month, base
            changed = True
        state.last_t, state.last_kwh = t, kwh
        return changed

    def member_kwh(self, meter: str, direction: str, now: float) -> float:
        """This month's energy on one register so far, NaN without a read this month."""
        state = self._state.get((meter, direction))
        if state is None or state.month != self.month_of(now):
            return math.nan
        return max(state.last_kwh - state.base_kwh, 0.0)

    def group_kwh(self, groups: Sequence[str], now: float) -> dict[str, float]:
        """Month-to-date energy of each of ``groups`` whose every member has a read this
        month (others are left out)."""
        imports = np.array([[self.member_kwh(m, IMPORT, now)] for m in self.meters],
                           dtype=np.float64).reshape(len(self.meters), 1)
        exports = np.array([[self.member_kwh(m, EXPORT, now)] for m in self.meters],
                           dtype=np.float64).reshape(len(self.meters), 1)
        values, quality = gather_channels(self.layout, self.meters, imports, exports)
        totals = group_totals(values, quality, self.layout)
        complete = totals.complete()
        out: dict[str, float] = {}
        for group in groups:
            g = self.layout.group_index(group)
            if bool(complete[g, 0]):
                out[group] = float(totals.total[g, 0])
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {f"{meter}/{direction}": [s.month, s.base_kwh, s.last_t, s.last_kwh]
                for (meter, direction), s in sorted(self._state.items())}
