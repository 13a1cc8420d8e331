"""``gwtool vee``: offline validation, estimation and editing of reads with the daemon's kernels.

    gwtool vee --input reads.csv --output out.csv [--rules rules.toml]

Input rows are ``meter,time,quantity,value`` (ISO 8601 UTC time, register values in kWh; a
header naming the columns is optional and may order them differently or add columns, which are
kept). The output keeps every input row in input order and appends ``quality,method,reasons``
(reasons ``;``-separated NEM12 codes), plus one row per estimated missing interval (``E``) and
one substitute row after a read that failed validation (``S``, same meter, time and quantity;
the failed read itself is kept with quality ``N``). Malformed rows are reported on stderr with
their line number and do not stop the run: a row with the four fields but an unreadable time or
value is kept with quality ``N``; a row with a different number of fields cannot be a row of the
output and is left out.

What is validated (docs/vee.md has the rules and codes):

* ``energy.active.import.total`` on the 15-minute grid (reads within ``snap_seconds`` of a
  boundary) — every grid rule and the estimation cascade;
* ``energy.active.export.total`` — the register rules, and reverse energy on the import side;
* tariff registers ``energy.*.t1`` … and other ``energy.*`` registers — decrease vs rollover;
  tariffs also against the total read at the same instant;
* ``voltage.a``/``.b``/``.c`` — the supply band; ``clock.offset`` (meter − gateway, s) — drift;
  ``ratio.ct``/``ratio.pt`` — multiplier changes; ``power.active.total`` (kW) feeds the
  meter-stopped rule. Other quantities pass through as actual.

Streaming. The file is read twice: the first pass notes, per meter and local day, the last line
holding a read of that day; the second pass validates each meter-day as soon as that day and
the next one with rows of the meter are complete (that day closes a gap that runs over midnight,
or over silent days: up to ``MAX_LOOKAHEAD_DAYS``) and writes every row whose fate is known.
Memory therefore follows how the file is ordered: a file sorted by meter holds about two days of
one meter, a file sorted by time about two days of all meters (more behind a meter's silent
days); only a shuffled file is held whole. Either way the meter-days are validated one at a time
with the next day as lookahead, as the daemon does, so the verdicts do not depend on the order.
Unlike the daemon, a gap longer than a day is scaled to the read that ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import math
import os
import re
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

import numpy as np

from edge_rules import vee_kernels as vk
from edge_rules.calendar import DAY_MS, INTERVALS_PER_DAY, Calendar
from edge_rules.codes import QUALITY_LETTERS
from edge_rules.vee_engine import SparseVerdict, VeeEngine, Verdict
from edge_rules.vee_rules import VeeConfig, reasons_of
from gateway.config import ConfigError
from gateway.config.vee import load_vee_rules

from .errors import ToolError

__all__ = ["register", "run_vee"]

S: Final = INTERVALS_PER_DAY
PRIMARY: Final = "energy.active.import.total"
EXPORT: Final = "energy.active.export.total"
POWER: Final = "power.active.total"
COLUMNS: Final = ("meter", "time", "quantity", "value")
#: Lines read between attempts to validate the meter-days that became complete.
CHUNK_LINES: Final = 20_000
#: Days validated per engine call (plus the next day, which brackets gaps over midnight). One,
#: like the daemon's window: with longer windows a day's like-day history would lack the days
#: just before it, and the verdicts would depend on how the file is sorted.
MAX_WINDOW_DAYS: Final = 1
#: How far a window looks past the day validated for the read that ends a gap. Offline the
#: whole series is known, so a gap over several silent days is scaled to the read that closes
#: it (its estimates then lie between the reads around them) rather than extrapolated.
MAX_LOOKAHEAD_DAYS: Final = 14
#: Malformed rows reported one by one before only counting them.
MAX_REPORTED: Final = 100

_TARIFF = re.compile(r"energy\.[a-z.]+\.t\d+$")
_PHASE_VOLTAGE = re.compile(r"voltage\.[abc]$")

# Row kinds
BAD, OTHER, GRID, EXPORT_GRID, POWER_GRID, VOLTAGE, CLOCK, TARIFF, REGISTER, RATIO = range(10)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "vee", help="validate and estimate a CSV of reads offline (DESIGN §2)",
        description="Validate, estimate and edit meter reads with the gateway's VEE kernels. "
                    "Output: every input row plus quality,method,reasons, and one row per "
                    "estimated missing interval (quality E).")
    parser.add_argument("--input", required=True, type=Path, help="CSV: meter,time,quantity,value")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write")
    parser.add_argument("--rules", type=Path,
                        help="TOML file with a [vee] table (a gateway config works too); "
                             "default: the documented defaults")
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    stats = run_vee(args.input, args.output, args.rules, sys.stderr)
    print(f"gwtool vee: {stats.rows} rows in, {stats.estimated} estimated (E) and "
          f"{stats.substituted} substitute (S) rows added, {stats.flagged} rows flagged, "
          f"{stats.malformed} malformed, {stats.off_grid} off the 15-minute grid (passed as "
          f"read) → {args.output}", file=sys.stderr)
    return 0


@dataclass
class RunStats:
    rows: int = 0
    estimated: int = 0
    substituted: int = 0
    flagged: int = 0
    malformed: int = 0
    off_grid: int = 0


@dataclass(slots=True, eq=False)
class Row:
    """One input row on its way through: parsed fields and, once known, its verdict."""

    line: int
    fields: list[str]
    kind: int = BAD
    meter: int = -1
    quantity: str = ""
    t_ms: int = 0
    interval: int = -1
    day: int = 0
    value: float = math.nan
    quality: str | None = None
    method: str = ""
    reasons: str = ""
    hold: bool = False
    before: list[list[str]] | None = None
    after: list[list[str]] | None = None


@dataclass
class _Survey:
    """First pass: meters, which lines close each meter-day, the last interval in the file."""

    meters: dict[str, int] = field(default_factory=dict)
    last_line: list[dict[int, int]] = field(default_factory=list)
    meter_last_line: list[int] = field(default_factory=list)
    last_interval: int = -1
    last_day: int = -1
    first_day: list[int] = field(default_factory=list)


class _TimeParser:
    """ISO 8601 → UTC ms, memoised: a file sorted by time repeats each stamp for every meter."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        value = text.strip()
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        stamp = dt.datetime.fromisoformat(value)  # ValueError for anything else
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        ms = int(stamp.timestamp() * 1000)
        if len(self.cache) > 200_000:
            self.cache.clear()
        self.cache[text] = ms
        return ms


def _classify(quantity: str) -> int:
    if quantity == PRIMARY:
        return GRID
    if quantity == EXPORT:
        return EXPORT_GRID
    if quantity == POWER:
        return POWER_GRID
    if _PHASE_VOLTAGE.match(quantity):
        return VOLTAGE
    if quantity == "clock.offset":
        return CLOCK
    if quantity in ("ratio.ct", "ratio.pt"):
        return RATIO
    if _TARIFF.match(quantity):
        return TARIFF
    if quantity.startswith("energy."):
        return REGISTER
    return OTHER


class _Reader:
    """CSV rows with line numbers and the column order from an optional header."""

    def __init__(self, handle: TextIO) -> None:
        self.reader = csv.reader(handle)
        self.order = [0, 1, 2, 3]
        self.width = 4
        self.header: list[str] | None = None

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        for fields in self.reader:
            line = self.reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if self.header is None and line == 1 and {f.strip().lower() for f in fields} >= set(
                    COLUMNS):
                names = [f.strip().lower() for f in fields]
                self.order = [names.index(c) for c in COLUMNS]
                self.width = len(fields)
                self.header = fields
                continue
            yield line, fields


class _VeeRun:
    def __init__(self, config: VeeConfig, survey: _Survey, output: TextIO, errors: TextIO,
                 source: str) -> None:
        self.config = config
        self.calendar: Calendar = config.calendar
        self.survey = survey
        self.source = source
        meter_ids = list(survey.meters)
        self.meter_ids = meter_ids
        self.engine = VeeEngine(config, meter_ids)
        self.out = csv.writer(output, lineterminator="\n")
        self.errors = errors
        self.stats = RunStats()
        self.queue: deque[Row] = deque()
        m = len(meter_ids)
        self.buffers: list[dict[int, list[Row]]] = [{} for _ in range(m)]
        self.next_day = list(survey.first_day)
        self.done = [False] * m
        self.pending_e: list[list[tuple[int, list[str]]]] = [[] for _ in range(m)]
        self.last_row: list[Row | None] = [None] * m
        self.tariff_end: list[dict[str, float]] = [{} for _ in range(m)]
        self.last_day = survey.last_day
        self.header_order: list[int] = [0, 1, 2, 3]
        self.width = 4
        self.tolerance_ms = config.estimation.snap_seconds * 1000
        self.line = 0
        self.decimals = max(0, round(-math.log10(min(
            c.lsb_kwh for c in config.classes.values()))))

    # -------------------------------------------------------------- reporting

    def malformed(self, line: int, message: str) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= MAX_REPORTED:
            print(f"gwtool vee: {self.source} line {line}: {message}", file=self.errors)
        elif self.stats.malformed == MAX_REPORTED + 1:
            print(f"gwtool vee: {self.source}: more malformed rows; only counting them now",
                  file=self.errors)

    # -------------------------------------------------------------- second pass

    def feed(self, line: int, fields: list[str], order: Sequence[int], width: int,
             parse_time: _TimeParser) -> None:
        self.line = line
        self.stats.rows += 1
        row = Row(line, fields)
        if len(fields) != width:
            self.malformed(line, f"expected {width} fields ({','.join(COLUMNS)}), got "
                           f"{len(fields)}: row left out")
            self.stats.rows -= 1
            return
        meter, time_text, quantity, value_text = (fields[i].strip() for i in order)
        self.queue.append(row)
        row.quantity = quantity
        row.quality = "N"  # until proven otherwise
        if not meter:
            self.malformed(line, "empty meter id: kept with quality N")
            return
        try:
            row.t_ms = parse_time(time_text)
        except ValueError:
            self.malformed(line, f"time {time_text!r} is not an ISO 8601 time "
                           "(e.g. 2025-01-01T00:15:00Z): kept with quality N")
            return
        row.meter = self.survey.meters[meter]
        if line == self.survey.meter_last_line[row.meter]:
            # the meter's last row carries estimates for intervals after its last read
            row.hold = True
            self.last_row[row.meter] = row
        row.kind = _classify(quantity)
        if row.kind == OTHER:  # not validated (status words, text): passed on as read
            row.quality = "A"
            return
        try:
            row.value = float(value_text)
        except ValueError:
            row.value = math.nan
        if not math.isfinite(row.value):
            self.malformed(line, f"value {value_text!r} is not a number: kept with quality N")
            return
        row.quality = None
        interval = self.calendar.interval_of_read(row.t_ms, self.tolerance_ms)
        grid_kind = row.kind in (GRID, EXPORT_GRID, POWER_GRID)
        if interval is None:
            row.day = (row.t_ms + self.calendar.offset_ms - 1) // DAY_MS
            if grid_kind:
                row.kind = OTHER
                if quantity != POWER:
                    self.stats.off_grid += 1
        else:
            row.interval = interval
            row.day = interval // S
        if row.kind == OTHER:
            row.quality = "A"
            return
        if row.day < self.next_day[row.meter]:
            # the first pass saw this meter-day closed already: the file changed under us
            self.malformed(line, "row belongs to a day already validated (was the file "
                           "changed during the run?): kept with quality N")
            row.quality = "N"
            return
        self.buffers[row.meter].setdefault(row.day, []).append(row)

    def complete(self, meter: int, day: int) -> bool:
        last = self.survey.last_line[meter].get(day)
        return last is None or self.line >= last

    def ready_days(self, meter: int, at_end: bool) -> int:
        """How many consecutive days of ``meter`` can be validated now."""
        day = self.next_day[meter]
        count = 0
        while day + count <= self.last_day and count < MAX_WINDOW_DAYS:
            d = day + count
            if not (at_end or (self.complete(meter, d)
                               and self.complete(meter, d + self.lookahead(meter, d)))):
                break
            count += 1
        return count

    def lookahead(self, meter: int, day: int) -> int:
        """Days after ``day`` up to the next one holding rows of ``meter`` (at least one, at
        most :data:`MAX_LOOKAHEAD_DAYS`): the days between have nothing to wait for."""
        days = self.survey.last_line[meter]
        n = 1
        while n < MAX_LOOKAHEAD_DAYS and day + n < self.last_day and day + n not in days:
            n += 1
        return n

    def process(self, at_end: bool = False) -> None:
        while True:
            groups: dict[tuple[int, int], list[int]] = {}
            for meter in range(len(self.meter_ids)):
                if self.done[meter]:
                    continue
                count = self.ready_days(meter, at_end)
                if count:
                    groups.setdefault((self.next_day[meter], count), []).append(meter)
                elif self.next_day[meter] > self.last_day:
                    self.finish(meter)
            if not groups:
                break
            for (first_day, count), meters in sorted(groups.items()):
                self.validate(first_day, count, np.array(meters, dtype=np.int64))
        self.flush()

    def finish(self, meter: int) -> None:
        self.done[meter] = True
        last = self.last_row[meter]
        if last is not None:
            if self.pending_e[meter]:
                last.after = (last.after or []) + [extra for _, extra in self.pending_e[meter]]
                self.pending_e[meter] = []
            last.hold = False
        for rows in self.buffers[meter].values():
            for row in rows:
                if row.quality is None:
                    row.quality = "A"
        self.buffers[meter].clear()

    def flush(self) -> None:
        queue = self.queue
        while queue and queue[0].quality is not None and not queue[0].hold:
            row = queue.popleft()
            for extra in row.before or ():
                self.out.writerow(extra)
            self.out.writerow([*row.fields, row.quality, row.method, row.reasons])
            if row.quality != "A" or row.reasons:
                self.stats.flagged += 1
            for extra in row.after or ():
                self.out.writerow(extra)

    # -------------------------------------------------------------- validation of meter-days

    def validate(self, first_day: int, count: int, meters: np.ndarray) -> None:
        last = first_day + count - 1
        lookahead = max(0, min(self.last_day - last,
                               max(self.lookahead(meter, last) for meter in meters.tolist())))
        days = count + lookahead
        window = self.engine.window(first_day, days, meters)
        grid_rows: list[list[Row]] = [[] for _ in range(meters.size)]
        for j, meter in enumerate(meters.tolist()):
            for d in range(days):
                grid_rows[j].extend(r for r in self.buffers[meter].get(first_day + d, ())
                                    if r.kind in (GRID, EXPORT_GRID, POWER_GRID))
        start = first_day * S
        for kind, target in ((GRID, window.reads), (EXPORT_GRID, window.export),
                             (POWER_GRID, window.power)):
            sel = [(j, r.interval - start, r.value) for j, rows in enumerate(grid_rows)
                   for r in rows if r.kind == kind]
            if not sel:
                continue
            rows_idx, slots, values = (np.array(x) for x in zip(*sel, strict=True))
            grid, conflict = vk.bin_slots(rows_idx.astype(np.int64), slots.astype(np.int64),
                                          values.astype(np.float64), meters.size, days * S)
            target[:] = grid
            if kind == GRID:
                window.conflict[:] = conflict
        window.tariff_energy = self._tariff_energy(meters, first_day, count, days)
        # nothing is estimated after the last register read of the file
        due = max(0, min(days * S, self.survey.last_interval - start + 1))
        verdict = self.engine.evaluate(window, due=due)
        self.engine.commit(verdict, days=count, partial=True)
        self._decide_grid(verdict, meters, count, grid_rows)
        self._decide_sparse(meters, first_day, count)
        for meter in meters.tolist():
            for d in range(count):
                self.buffers[meter].pop(first_day + d, None)
            self.next_day[meter] = first_day + count

    def _tariff_energy(self, meters: np.ndarray, first_day: int, count: int, days: int
                       ) -> np.ndarray:
        """Daily tariff energies for history: each tariff register's read closing the day
        minus the one closing the day before."""
        registers = self.engine.hist.registers[1:]
        out = np.full((meters.size, days, len(registers)), np.nan)
        for j, meter in enumerate(meters.tolist()):
            ends = self.tariff_end[meter]
            for d in range(count):
                for row in self.buffers[meter].get(first_day + d, ()):
                    if row.kind != TARIFF or row.interval != (first_day + d) * S + S - 1:
                        continue
                    name = row.quantity.rsplit(".", 1)[1]
                    if name in registers:
                        t = registers.index(name)
                        before = ends.get(name)
                        if before is not None and row.value >= before:
                            out[j, d, t] = row.value - before
                        ends[name] = row.value
        return out

    def _format(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"

    def _decide_grid(self, verdict: Verdict, meters: np.ndarray, count: int,
                     grid_rows: list[list[Row]]) -> None:
        start = verdict.window.first_interval
        end = count * S
        cal = self.calendar
        for j, meter in enumerate(meters.tolist()):
            meter_id = self.meter_ids[meter]
            by_slot: dict[int, list[Row]] = {}
            for row in grid_rows[j]:
                slot = row.interval - start
                if slot >= end:
                    continue
                if row.kind == GRID:
                    by_slot.setdefault(slot, []).append(row)
                elif row.kind == EXPORT_GRID:
                    self._decide(row, int(verdict.export_flags[j, slot]),
                                 verdict.window.first_day)
                else:
                    row.quality = "A"
            quality = verdict.quality[j, :end]
            extra_slots = np.flatnonzero((quality == 1) | (quality == 2)).tolist()
            for slot, rows in by_slot.items():
                q = int(quality[slot])
                bits = int(verdict.published[j, slot])
                reasons = ";".join(map(str, reasons_of(bits)))
                for row in rows:
                    row.quality = "A" if q == 0 else "N"
                    row.reasons = reasons
            pending = self.pending_e[meter]
            primary = sorted((r for rows in by_slot.values() for r in rows),
                             key=lambda r: r.interval)
            for slot in extra_slots:
                q = int(quality[slot])
                bits = int(verdict.published[j, slot])
                extra = [meter_id, _iso(cal.read_time_ms(start + slot)), PRIMARY,
                         self._format(float(verdict.value[j, slot])), QUALITY_LETTERS[q],
                         str(int(verdict.method[j, slot])),
                         ";".join(map(str, reasons_of(bits)))]
                extra = self._fit(extra)
                if q == 2 and slot in by_slot:  # substitute right after the failed read(s)
                    anchor = by_slot[slot][-1]
                    anchor.after = (anchor.after or []) + [extra]
                    self.stats.substituted += 1
                else:
                    pending.append((start + slot, extra))
                    self.stats.estimated += 1
            # estimated rows go just before the next read of the meter's register
            if pending and primary:
                self._attach(meter, primary)

    def _fit(self, extra: list[str]) -> list[str]:
        """An added row in the input's column order (extra input columns left empty)."""
        if self.header_order == [0, 1, 2, 3] and self.width == 4:
            return extra
        row = [""] * self.width
        for value, index in zip(extra[:4], self.header_order, strict=True):
            row[index] = value
        return row + extra[4:]

    def _attach(self, meter: int, primary: list[Row]) -> None:
        """Hand pending estimated rows to the first read of the register after them."""
        keep: list[tuple[int, list[str]]] = []
        for interval, extra in self.pending_e[meter]:
            target = next((r for r in primary if r.interval > interval), None)
            if target is None:
                keep.append((interval, extra))
            else:
                target.before = (target.before or []) + [extra]
        self.pending_e[meter] = keep

    def _decide(self, row: Row, bits: int, day: int) -> None:
        verdict = self.engine.grade_sparse(np.array([row.meter]),
                                           np.array([bits & ~vk.BIT_MISSING], dtype=np.uint32),
                                           day)
        self._apply(row, verdict, 0)

    def _apply(self, row: Row, verdict: SparseVerdict, index: int) -> None:
        row.quality = QUALITY_LETTERS[int(verdict.quality[index])]
        row.reasons = ";".join(map(str, reasons_of(int(verdict.published[index]))))

    def _decide_sparse(self, meters: np.ndarray, first_day: int, count: int) -> None:
        rows: list[Row] = []
        for meter in meters.tolist():
            for d in range(count):
                rows.extend(r for r in self.buffers[meter].get(first_day + d, ())
                            if r.quality is None and r.kind not in (GRID, EXPORT_GRID,
                                                                    POWER_GRID))
        if not rows:
            return
        rows.sort(key=lambda r: (r.t_ms, r.line))
        day = first_day
        for kind, check in ((VOLTAGE, self.engine.check_voltage),
                            (CLOCK, self.engine.check_clock)):
            sel = [r for r in rows if r.kind == kind]
            if sel:
                verdict = check(np.array([r.meter for r in sel]),
                                np.array([r.value for r in sel]), day)
                for i, r in enumerate(sel):
                    self._apply(r, verdict, i)
        for kind in (TARIFF, REGISTER):
            sel = [r for r in rows if r.kind == kind]
            for quantity in sorted({r.quantity for r in sel}):
                group = [r for r in sel if r.quantity == quantity]
                verdict = self.engine.check_register(
                    quantity, np.array([r.meter for r in group]),
                    np.array([r.value for r in group]),
                    np.array([r.interval if r.interval >= 0 else
                              (r.t_ms + self.calendar.offset_ms) // (DAY_MS // S)
                              for r in group], dtype=np.int64), day)
                for i, r in enumerate(group):
                    self._apply(r, verdict, i)
        self._tariff_sums([r for r in rows if r.kind == TARIFF], day)
        sel = [r for r in rows if r.kind == RATIO]
        for quantity in sorted({r.quantity for r in sel}):
            group = [r for r in sel if r.quantity == quantity]
            verdict = self.engine.check_ratios(quantity, np.array([r.meter for r in group]),
                                               np.array([r.value for r in group]), day)
            for i, r in enumerate(group):
                self._apply(r, verdict, i)

    def _tariff_sums(self, tariffs: list[Row], day: int) -> None:
        """Tariff registers read at one instant against the total read at that instant."""
        if not tariffs:
            return
        instants: dict[tuple[int, int], list[Row]] = {}
        for row in tariffs:
            instants.setdefault((row.meter, row.t_ms), []).append(row)
        totals: dict[tuple[int, int], float] = {}
        for (meter, t_ms), _ in instants.items():
            for row in self.buffers[meter].get((t_ms + self.calendar.offset_ms - 1) // DAY_MS,
                                               ()):
                if row.kind == GRID and row.t_ms == t_ms:
                    totals[(meter, t_ms)] = row.value
            interval = self.calendar.interval_of_read(t_ms, self.tolerance_ms)
            if interval is not None:
                for row in self.buffers[meter].get(interval // S, ()):
                    if row.kind == GRID and row.t_ms == t_ms:
                        totals[(meter, t_ms)] = row.value
        keys = [k for k in instants if k in totals]
        if not keys:
            return
        width = max(len(instants[k]) for k in keys)
        table = np.full((len(keys), width), np.nan)
        for i, key in enumerate(keys):
            for t, row in enumerate(instants[key]):
                table[i, t] = row.value
        verdict = self.engine.check_tariffs(np.array([k[0] for k in keys]),
                                            np.array([totals[k] for k in keys]), table, day)
        for i, key in enumerate(keys):
            if not verdict.flags[i]:
                continue
            for row in instants[key]:
                codes = set(filter(None, row.reasons.split(";")))
                codes.update(str(c) for c in reasons_of(int(verdict.published[i])))
                row.reasons = ";".join(sorted(codes, key=int))
                if verdict.quality[i] == 4:
                    row.quality = "N"


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _survey(path: Path, calendar: Calendar, tolerance_ms: int) -> _Survey:
    survey = _Survey()
    parse_time = _TimeParser()
    with path.open(encoding="utf-8", newline="") as handle:
        reader = _Reader(handle)
        for line, fields in reader:
            if len(fields) != reader.width:
                continue
            meter, time_text, quantity = (fields[i].strip() for i in reader.order[:3])
            if not meter:
                continue
            try:
                t_ms = parse_time(time_text)
            except ValueError:
                continue
            index = survey.meters.get(meter)
            if index is None:
                index = survey.meters[meter] = len(survey.meters)
                survey.last_line.append({})
                survey.meter_last_line.append(line)
                survey.first_day.append(2**62)
            interval = calendar.interval_of_read(t_ms, tolerance_ms)
            kind = _classify(quantity)
            if interval is not None:
                day = interval // S
                if kind == GRID and interval > survey.last_interval:
                    survey.last_interval = interval
            else:
                day = (t_ms + calendar.offset_ms - 1) // DAY_MS
            survey.last_line[index][day] = line
            survey.meter_last_line[index] = line
            survey.last_day = max(survey.last_day, day)
            if day < survey.first_day[index]:
                survey.first_day[index] = day
    return survey


def run_vee(input_path: Path, output_path: Path, rules_path: Path | None,
            errors: TextIO) -> RunStats:
    """Validate ``input_path`` into ``output_path`` (written atomically). Raises
    :class:`ToolError` for a missing input, unusable rules or an unwritable output."""
    try:
        config = load_vee_rules(rules_path) if rules_path is not None else VeeConfig()
    except ConfigError as exc:
        raise ToolError("rules: " + "; ".join(str(issue) for issue in exc.errors)) from None
    if not input_path.is_file():
        raise ToolError(f"input {input_path}: no such file")
    tolerance_ms = config.estimation.snap_seconds * 1000
    try:
        survey = _survey(input_path, config.calendar, tolerance_ms)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ToolError(f"input {input_path}: cannot read: {exc}") from None
    temporary = output_path.with_name(output_path.name + ".partial")
    try:
        with input_path.open(encoding="utf-8", newline="") as source, \
                temporary.open("w", encoding="utf-8", newline="") as sink:
            reader = _Reader(source)
            parse_time = _TimeParser()
            run = _VeeRun(config, survey, sink, errors, input_path.name)
            first = True
            for line, fields in reader:
                if first:
                    run.header_order = reader.order
                    run.width = reader.width
                    header = reader.header or list(COLUMNS)
                    run.out.writerow([*header, "quality", "method", "reasons"])
                    first = False
                run.feed(line, fields, reader.order, reader.width, parse_time)
                if line % CHUNK_LINES == 0:
                    run.process()
            if first:
                run.out.writerow([*(reader.header or COLUMNS), "quality", "method", "reasons"])
            run.line = sys.maxsize
            run.process(at_end=True)
            for meter in range(len(run.meter_ids)):
                if not run.done[meter]:
                    run.finish(meter)
            run.flush()
        os.replace(temporary, output_path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise ToolError(f"cannot write {output_path}: {exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return run.stats
