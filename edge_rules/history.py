"""Per-meter history for VEE: ≥ 3 years of daily energy per register, 8 weeks of intervals.

What the rules and the estimation cascade look back at: like days (same day type, trailing
weeks), the same season last year, annual energy, class profiles. The daemon keeps it in memory
for every meter and persists it in its store; it must therefore be small. Budget for 2,000
meters (measured by ``bench/bench_vee.py --memory``, docs/vee.md):

=====================  =====================================  =========
daily energy           2,000 × 5 registers × 1,098 days × 2 B   21.96 MB
daily flags            2,000 × 1,098 days × 1 B                  2.20 MB
interval energy        2,000 × 56 days × 96 × 2 B               21.50 MB
scales, ring state     2,000 × (5 + 1 + 4) B                     0.02 MB
total                                                           45.7 MB ≤ 50 MB
=====================  =====================================  =========

**Compact values.** Energies are stored as ``uint16`` counts of a per-meter unit that is the
register LSB (0.01 kWh) × 2^shift. A residential meter's 15-minute energy (at most a few kWh) and
daily energy (tens of kWh) are exact at shift 0; a large consumer's row is shifted right as
soon as a value would not fit, doubling its unit — history feeds comparisons and estimates, for
which a resolution of 1/30,000 of the meter's largest value is ample, while billing values stay
exact in the store. For intervals the top bit marks an estimated value (excluded from like-day
averages), so 15 bits carry the count; the largest count of each kind marks "no value".

**Rings.** Days are kept in rings indexed by ``day % capacity`` with each meter's newest day
remembered, so meters need not advance together (an offline run walks one meter's year at a
time) and a day older than the ring is simply absent.

The like-day and day-mean reductions are kernels (numba + NumPy twin) because they run over every
meter on every evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit
from edge_rules.arrays import distinct
from edge_rules.calendar import INTERVALS_PER_DAY

__all__ = [
    "DAILY_DAYS",
    "DEFAULT_REGISTERS",
    "INTERVAL_DAYS",
    "History",
    "masked_mean",
    "masked_mean_nb",
    "masked_mean_np",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]

#: Three years of leap-year length: ≥ 3 years of daily values whatever the calendar.
DAILY_DAYS: Final = 3 * 366
#: Eight weeks: the longest trailing like-day window the rules allow.
INTERVAL_DAYS: Final = 56
#: Daily registers: the total and four tariffs (DL/T 645: sharp, peak, flat, valley).
DEFAULT_REGISTERS: Final = ("total", "t1", "t2", "t3", "t4")

_DAILY_NONE: Final = 0xFFFF
_DAILY_MAX: Final = 0xFFFE
_INTERVAL_NONE: Final = 0x7FFF
_INTERVAL_MAX: Final = 0x7FFE
_ESTIMATED_BIT: Final = 0x8000
_STATE: Final = ("daily_counts", "daily_shift", "daily_flags", "interval_counts",
                  "interval_shift", "newest_day")
#: Daily flag bits.
DAY_ESTIMATED: Final = 1  # the day's total contains estimated intervals
DAY_PRESENT: Final = 2  # the day was written


@njit
def masked_mean_nb(values: F64, use: U8) -> tuple[F64, I64]:
    """Mean over axis 1 of ``values`` (rows, days, k) where ``use[days]`` and not NaN."""
    rows, days, k = values.shape
    mean = np.empty((rows, k))
    mean[:] = np.nan  # not np.full: numba fills that element by element through an n-d index
    count = np.zeros((rows, k), dtype=np.int64)
    for r in range(rows):
        for j in range(k):
            acc = 0.0
            n = 0
            for d in range(days):
                v = values[r, d, j]
                if use[d] and v == v:
                    acc += v
                    n += 1
            if n:
                mean[r, j] = acc / n
            count[r, j] = n
    return mean, count


def masked_mean_np(values: F64, use: U8) -> tuple[F64, I64]:
    rows, days, k = values.shape
    ok = (use.astype(bool)[None, :, None]) & ~np.isnan(values)
    acc = np.zeros((rows, k))
    for d in range(days):  # day by day, the loop's summation order: means compare exactly
        acc += np.where(ok[:, d, :], values[:, d, :], 0.0)
    count = ok.sum(axis=1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, acc / count, np.nan)
    return mean, count


def masked_mean(values: F64, use: U8) -> tuple[F64, I64]:
    """Per row and position, the mean of the days selected by ``use`` that have a value (NaN
    when none) and how many went into it. ``values`` is ``(rows, days, positions)``: like-day
    profiles use positions = 96 intervals, day means use positions = 1."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"values must be 3-D (rows, days, positions), got shape {v.shape}")
    u = np.ascontiguousarray(use, dtype=np.uint8)
    if u.shape != (v.shape[1],):
        raise ValueError(f"use has shape {u.shape}, expected {(v.shape[1],)}")
    return masked_mean_nb(v, u)


class History:
    """Compact per-meter history (module docstring: layout and budget).

    Rows follow ``meter_ids``. ``put_day`` writes one day for some rows; ``daily`` and
    ``intervals`` read windows back as float kWh with NaN for absent values.
    """

    def __init__(self, meter_ids: Sequence[str], registers: Sequence[str] = DEFAULT_REGISTERS,
                 lsb_kwh: float = 0.01) -> None:
        self.meter_ids: tuple[str, ...] = tuple(meter_ids)
        if len(set(self.meter_ids)) != len(self.meter_ids):
            raise ValueError("meter ids must be unique")
        self.registers: tuple[str, ...] = tuple(registers)
        self.lsb_kwh = float(lsb_kwh)
        m, r = len(self.meter_ids), len(self.registers)
        self.daily_counts: U16 = np.full((m, r, DAILY_DAYS), _DAILY_NONE, dtype=np.uint16)
        self.daily_shift: U8 = np.zeros((m, r), dtype=np.uint8)
        self.daily_flags: U8 = np.zeros((m, DAILY_DAYS), dtype=np.uint8)
        self.interval_counts: U16 = np.full((m, INTERVAL_DAYS, INTERVALS_PER_DAY), _INTERVAL_NONE,
                                            dtype=np.uint16)
        self.interval_shift: U8 = np.zeros(m, dtype=np.uint8)
        self.newest_day: NDArray[np.int32] = np.full(m, -1, dtype=np.int32)
        self.row_of: dict[str, int] = {meter: i for i, meter in enumerate(self.meter_ids)}

    # ------------------------------------------------------------------ size and persistence

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the memory budget)."""
        return sum(int(getattr(self, name).nbytes) for name in _STATE)

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        """Everything as named arrays, for the daemon's store (e.g. one BLOB per array via
        ``np.save``) or ``np.savez``; :meth:`from_arrays` restores it."""
        return {
            "meter_ids": np.array(self.meter_ids, dtype=np.str_),
            "registers": np.array(self.registers, dtype=np.str_),
            "lsb_kwh": np.array([self.lsb_kwh]),
            "daily_counts": self.daily_counts,
            "daily_shift": self.daily_shift,
            "daily_flags": self.daily_flags,
            "interval_counts": self.interval_counts,
            "interval_shift": self.interval_shift,
            "newest_day": self.newest_day,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> History:
        """Rebuild from :meth:`to_arrays` output; shapes are checked so a truncated or foreign
        blob fails here, not inside a kernel."""
        try:
            meters = [str(x) for x in arrays["meter_ids"].tolist()]
            registers = [str(x) for x in arrays["registers"].tolist()]
            history = cls(meters, registers, float(np.asarray(arrays["lsb_kwh"]).ravel()[0]))
            for name in _STATE:
                current = getattr(history, name)
                loaded = np.asarray(arrays[name])
                if loaded.shape != current.shape or loaded.dtype != current.dtype:
                    raise ValueError(f"{name}: expected {current.dtype}{current.shape}, "
                                     f"got {loaded.dtype}{loaded.shape}")
                setattr(history, name, np.array(loaded, copy=True))
        except KeyError as exc:
            raise ValueError(f"history arrays lack {exc.args[0]!r}") from None
        return history

    def reindexed(self, meter_ids: Sequence[str]) -> History:
        """The same history for a new meter list (config reload): known meters keep their rows,
        new ones start empty, removed ones are dropped."""
        other = History(meter_ids, self.registers, self.lsb_kwh)
        pairs = [(other.row_of[m], self.row_of[m]) for m in other.meter_ids if m in self.row_of]
        if pairs:
            new_rows, old_rows = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
            for name in _STATE:
                getattr(other, name)[new_rows] = getattr(self, name)[old_rows]
        return other

    # ------------------------------------------------------------------ writing

    def put_day(
        self,
        rows: NDArray[np.int64],
        day: int,
        daily: F64,
        day_estimated: NDArray[np.bool_],
        intervals: F64,
        interval_estimated: NDArray[np.bool_],
    ) -> None:
        """Store one local day for meters ``rows``: ``daily`` (rows, registers) day energies
        (NaN: unknown), ``day_estimated`` whether the total contains estimates, ``intervals``
        (rows, 96) interval energies and which of them are estimates. Days between a meter's
        newest stored day and ``day`` are cleared (they are gaps, not old data). Writing a day
        older than a meter's newest day overwrites that day in place (a late correction)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = rows.size
        if daily.shape != (n, len(self.registers)) or intervals.shape != (n, INTERVALS_PER_DAY):
            raise ValueError("put_day: daily must be (rows, registers), intervals (rows, 96)")
        self._advance(rows, day)
        slot = day % DAILY_DAYS
        islot = day % INTERVAL_DAYS
        # daily
        unit = self.lsb_kwh * np.exp2(self.daily_shift[rows].astype(np.float64))
        counts = np.rint(np.maximum(daily, 0.0) / unit)
        need = self._shifts_needed(counts, _DAILY_MAX)
        if np.any(need):
            self._rescale_daily(rows, need)
            unit = self.lsb_kwh * np.exp2(self.daily_shift[rows].astype(np.float64))
            counts = np.rint(np.maximum(daily, 0.0) / unit)
        stored = np.where(np.isnan(daily), _DAILY_NONE, counts).astype(np.uint16)
        self.daily_counts[rows, :, slot] = stored
        self.daily_flags[rows, slot] = (DAY_PRESENT | np.where(day_estimated, DAY_ESTIMATED, 0)
                                        ).astype(np.uint8)
        # intervals
        iunit = self.lsb_kwh * np.exp2(self.interval_shift[rows].astype(np.float64))[:, None]
        icounts = np.rint(np.maximum(intervals, 0.0) / iunit)
        ineed = self._shifts_needed(icounts, _INTERVAL_MAX).max(axis=1) if n else \
            np.zeros(0, dtype=np.int64)
        if np.any(ineed):
            self._rescale_intervals(rows, ineed)
            iunit = self.lsb_kwh * np.exp2(self.interval_shift[rows].astype(np.float64))[:, None]
            icounts = np.rint(np.maximum(intervals, 0.0) / iunit)
        istored = np.where(np.isnan(intervals), _INTERVAL_NONE, icounts).astype(np.uint16)
        istored |= np.where(interval_estimated & ~np.isnan(intervals), _ESTIMATED_BIT,
                            0).astype(np.uint16)
        self.interval_counts[rows, islot, :] = istored

    def _advance(self, rows: I64, day: int) -> None:
        """Make ``day`` the newest day of ``rows``: clear the ring slots of the days skipped
        since each row's newest day (they are gaps, not old data). Rows that advance alike
        (the daemon's case: all of them, by one day) are cleared together."""
        newest = self.newest_day[rows].astype(np.int64)
        behind = newest < day
        if not np.any(behind):
            return
        for last in distinct(newest[behind]).tolist():
            group = rows[behind & (newest == last)]
            first_clear = day - DAILY_DAYS + 1 if last < 0 else max(last + 1, day - DAILY_DAYS + 1)
            idx = np.arange(first_clear, day + 1) % DAILY_DAYS
            self.daily_counts[group[:, None, None], np.arange(len(self.registers))[None, :, None],
                              idx[None, None, :]] = _DAILY_NONE
            self.daily_flags[group[:, None], idx[None, :]] = 0
            ifirst = (day - INTERVAL_DAYS + 1 if last < 0
                      else max(last + 1, day - INTERVAL_DAYS + 1))
            iidx = np.arange(ifirst, day + 1) % INTERVAL_DAYS
            self.interval_counts[group[:, None], iidx[None, :], :] = _INTERVAL_NONE
            self.newest_day[group] = day

    @staticmethod
    def _shifts_needed(counts: F64, limit: int) -> I64:
        finite = np.where(np.isnan(counts), 0.0, counts)
        need = np.zeros(finite.shape, dtype=np.int64)
        over = finite > limit
        if np.any(over):
            need[over] = np.ceil(np.log2(finite[over] / limit)).astype(np.int64)
            need[over] += (finite[over] / np.exp2(need[over]) > limit).astype(np.int64)
        return need

    def _rescale_daily(self, rows: I64, need: I64) -> None:
        for (i, r), shift in np.ndenumerate(need):
            if shift <= 0:
                continue
            row = int(rows[i])
            old = self.daily_counts[row, r]
            valid = old != _DAILY_NONE
            shifted = np.rint(old.astype(np.float64) / 2.0**shift).astype(np.uint16)
            self.daily_counts[row, r] = np.where(valid, shifted, _DAILY_NONE)
            self.daily_shift[row, r] += np.uint8(shift)

    def _rescale_intervals(self, rows: I64, need: I64) -> None:
        for i, shift in enumerate(need.tolist()):
            if shift <= 0:
                continue
            row = int(rows[i])
            old = self.interval_counts[row]
            valid = (old & 0x7FFF) != _INTERVAL_NONE
            estimated = old & _ESTIMATED_BIT
            shifted = np.rint((old & 0x7FFF).astype(np.float64) / 2.0**shift).astype(np.uint16)
            self.interval_counts[row] = np.where(valid, shifted | estimated, _INTERVAL_NONE)
            self.interval_shift[row] += np.uint8(shift)

    # ------------------------------------------------------------------ reading

    def _day_index(self, rows: I64, first_day: int, count: int, capacity: int
                   ) -> tuple[I64, NDArray[np.bool_]]:
        days = first_day + np.arange(count, dtype=np.int64)
        newest = self.newest_day[rows].astype(np.int64)[:, None]
        valid = (days[None, :] <= newest) & (days[None, :] > newest - capacity)
        return days % capacity, valid

    def daily(self, rows: I64, first_day: int, count: int, register: int = 0
              ) -> tuple[F64, NDArray[np.bool_]]:
        """Day energies of register ``register`` for ``count`` days from ``first_day``:
        ``(rows, count)`` kWh (NaN absent) and whether each contains estimates."""
        rows = np.asarray(rows, dtype=np.int64)
        idx, valid = self._day_index(rows, first_day, count, DAILY_DAYS)
        raw = self.daily_counts[rows[:, None], register, idx[None, :]]
        unit = self.lsb_kwh * np.exp2(self.daily_shift[rows, register].astype(np.float64))
        values = np.where(valid & (raw != _DAILY_NONE), raw * unit[:, None], np.nan)
        flags = self.daily_flags[rows[:, None], idx[None, :]]
        return values, valid & ((flags & DAY_ESTIMATED) != 0)

    def intervals(self, rows: I64, first_day: int, count: int
                  ) -> tuple[F64, NDArray[np.bool_]]:
        """Interval energies ``(rows, count, 96)`` kWh (NaN absent) and which are estimates."""
        rows = np.asarray(rows, dtype=np.int64)
        idx, valid = self._day_index(rows, first_day, count, INTERVAL_DAYS)
        raw = self.interval_counts[rows[:, None], idx[None, :], :]
        counts = raw & 0x7FFF
        unit = self.lsb_kwh * np.exp2(self.interval_shift[rows].astype(np.float64))
        present = valid[:, :, None] & (counts != _INTERVAL_NONE)
        values = np.where(present, counts * unit[:, None, None], np.nan)
        return values, present & ((raw & _ESTIMATED_BIT) != 0)
