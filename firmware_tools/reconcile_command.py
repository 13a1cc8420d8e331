"""``gwtool reconcile``: line loss of every transformer area, per day, from a CSV of reads.

    gwtool reconcile --config gateway.toml --reads reads.csv [--format csv|json]

The config names the areas (``[[areas]]``: master meter and sub-meter group), the groups
(``[[groups]]``: members with sign and direction) and each meter's CT/PT ratios; it is loaded
with the daemon's loader, so a config the daemon rejects is rejected here with the same
messages. The reads are the ``gwtool vee`` columns ``meter,time,quantity,value`` (ISO 8601,
register values in kWh; a header may reorder the columns or add ``quality``, as ``gwtool vee``
writes it, in which case only ``A`` reads count as actual).

The day's frozen value is the register read at 00:00 of that day, local time: the offset is
``--utc-offset``, else the config's ``[vee] utc_offset``, else ``[reconcile] utc_offset_min``
(+480, i.e. +08:00, by default). The rule is the daemon's, one function
(:func:`edge_rules.reconcile_freeze.midnight_freeze`, exact decimal arithmetic): a read
within the first minute after midnight counts (a Modbus poll lands a few seconds late); a
meter without one gets a value interpolated linearly between the reads around midnight when
both are within ``--max-gap-min`` minutes and the register did not go backwards — quality E,
so it does not count towards coverage.
Energy of day D = freeze(D + 1) − freeze(D); the first day reported is the first with a
freeze, the last the day before the last freeze.

Output, one row per area and day (areas in config order): ``area, date, loss_pct, status``
(``qualified`` | ``high`` | ``negative`` | ``uncalculable``), ``coverage`` (fraction of the
sub-meter channels whose two freezes were actual) and ``suspects``: meter ids, most likely
first, each with its evidence. CSV packs the suspects into one field
(``meter (score): evidence; evidence | meter …``); JSON gives them as objects and adds the
energies and the band.

When the file also carries a meter's samples through the day, the theft and tamper
indicators of :mod:`edge_rules.theft` run on them and add their evidence: voltages and
currents per phase (loss of voltage, phase break, loss of current, imbalance), the import
register with ``power.active.total`` (meter stopped, running fast), the export register with
phase powers (reverse energy), and the cover event counters.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from edge_rules.reconcile_freeze import FREEZE_SLACK_MS, midnight_freeze
from edge_rules.theft import INDICATOR_WEIGHTS

from .errors import ToolError

__all__ = ["register", "run_reconcile"]

IMPORT_Q: Final = "energy.active.import.total"
EXPORT_Q: Final = "energy.active.export.total"
COLUMNS: Final = ("meter", "time", "quantity", "value")
DAY_MS: Final = 86_400_000
#: Quantities whose exact decimal values are kept for the midnight freeze.
REGISTERS: Final = frozenset({IMPORT_Q, EXPORT_Q})
MAX_REPORTED: Final = 50

Q_A: Final = 0
Q_E: Final = 1
Q_N: Final = 4



def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="line loss, status and theft suspects per transformer area and day (DESIGN §2)",
        description="Reconcile each [[areas]] master meter against its sub-meter group for every "
        "day in the reads: loss %%, status, coverage and theft suspects with evidence.",
    )
    parser.add_argument("--config", required=True, type=Path, help="gateway TOML with [[areas]]")
    parser.add_argument("--reads", required=True, type=Path, help="CSV: meter,time,quantity,value")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format")
    parser.add_argument(
        "--utc-offset",
        help='local time of the meters, e.g. "+08:00" (default: [vee] utc_offset, else '
        "[reconcile] utc_offset_min)",
    )
    parser.add_argument(
        "--max-gap-min",
        type=float,
        help="interpolate a missing midnight read from reads at most this many minutes away "
        "(default: [reconcile] max_gap_min, 60)",
    )
    parser.add_argument(
        "--lower-guard", type=float, help="negative below this loss %% ([reconcile], -1)"
    )
    parser.add_argument(
        "--upper-guard", type=float, help="high above this loss %% ([reconcile], 10)"
    )
    parser.add_argument("--band-k", type=float, help="band half-width in MADs ([reconcile], 6)")
    parser.add_argument(
        "--window-days", type=int, help="qualified days the band learns from ([reconcile], 60)"
    )
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for option, name in (
        ("lower_guard", "lower_guard_pct"),
        ("upper_guard", "upper_guard_pct"),
        ("band_k", "k"),
        ("window_days", "window_days"),
    ):
        value = getattr(args, option)
        if value is not None:
            overrides[name] = value
    if args.max_gap_min is not None and not args.max_gap_min > 0:
        raise ToolError(f"--max-gap-min must be positive, got {args.max_gap_min}")
    try:
        run_reconcile(
            args.config,
            args.reads,
            sys.stdout,
            output_format=args.format,
            utc_offset=args.utc_offset,
            max_gap_ms=None if args.max_gap_min is None else int(args.max_gap_min * 60_000),
            band_overrides=overrides,
            warnings=sys.stderr,
        )
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, less) stopped reading: not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# --------------------------------------------------------------------------------------------
# Reading the CSV
# --------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One meter's reads of one quantity, in time order after :meth:`sort`."""

    t_ms: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    #: The exact decimal value of each read, kept for the energy registers only: their midnight
    #: freezes are interpolated in Decimal like the daemon's (:mod:`edge_rules.reconcile_freeze`).
    registers: list[Decimal] = field(default_factory=list)

    def sort(self) -> None:
        if any(b < a for a, b in zip(self.t_ms, self.t_ms[1:], strict=False)):
            order = sorted(range(len(self.t_ms)), key=self.t_ms.__getitem__)
            self.t_ms = [self.t_ms[i] for i in order]
            self.values = [self.values[i] for i in order]
            self.quality = [self.quality[i] for i in order]
            if self.registers:
                self.registers = [self.registers[i] for i in order]


def _parse_time(text: str) -> int:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return round(stamp.timestamp() * 1000)


def read_series(
    path: Path, wanted: Callable[[str], bool], warnings: TextIO
) -> dict[tuple[str, str], Series]:
    """Reads of the meters ``wanted`` accepts, by (meter, quantity). Malformed rows are
    reported with their line number and skipped; a quality column, when present, marks reads
    other than ``A`` as estimated (``N`` or an empty value: no read)."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from None
    series: dict[tuple[str, str], Series] = defaultdict(Series)
    bad = 0
    with handle:
        reader = csv.reader(handle)
        order = [0, 1, 2, 3]
        quality_col = -1
        for line, fields in enumerate(reader, start=1):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            names = [f.strip().lower() for f in fields]
            if line == 1 and "meter" in names and "quantity" in names:
                missing = [c for c in COLUMNS if c not in names]
                if missing:
                    raise ToolError(
                        f"{path}:1: header lacks column(s) {', '.join(missing)}; expected "
                        "meter,time,quantity,value"
                    )
                order = [names.index(c) for c in COLUMNS]
                quality_col = names.index("quality") if "quality" in names else -1
                continue
            try:
                meter, time_text, quantity, value_text = (fields[i].strip() for i in order)
            except IndexError:
                bad += 1
                if bad <= MAX_REPORTED:
                    print(
                        f"gwtool reconcile: {path}:{line}: expected meter,time,quantity,value, "
                        f"got {len(fields)} field(s); row skipped",
                        file=warnings,
                    )
                continue
            if not wanted(meter):
                continue
            letter = fields[quality_col].strip().upper() if 0 <= quality_col < len(fields) else "A"
            if letter == "N" or not value_text:
                continue
            try:
                t_ms = _parse_time(time_text)
                exact = Decimal(value_text)
                if not exact.is_finite():
                    raise ValueError(value_text)
                value = float(exact)
            except (ValueError, InvalidOperation):
                bad += 1
                if bad <= MAX_REPORTED:
                    print(
                        f"gwtool reconcile: {path}:{line}: cannot read time {time_text!r} or "
                        f"value {value_text!r} (ISO 8601 time, decimal value); row skipped",
                        file=warnings,
                    )
                continue
            s = series[(meter, quantity)]
            s.t_ms.append(t_ms)
            s.values.append(value)
            s.quality.append(Q_A if letter == "A" else Q_E)
            if quantity in REGISTERS:
                s.registers.append(exact)
    if bad > MAX_REPORTED:
        print(f"gwtool reconcile: {bad} malformed rows in all", file=warnings)
    for s in series.values():
        s.sort()
    return dict(series)


# --------------------------------------------------------------------------------------------
# Midnight freezes
# --------------------------------------------------------------------------------------------


def freeze_at(series: Series, t0: int, max_gap_ms: int) -> tuple[float, int]:
    """The register at local midnight ``t0`` by the daemon's rule,
    :func:`edge_rules.reconcile_freeze.midnight_freeze`, on the reads around it: the read
    itself (its own quality) or an interpolation (quality E); (NaN, N) when the rule gives
    none. ``series`` must be an energy register (its exact values are kept)."""
    t = series.t_ms
    i = bisect.bisect_left(t, t0)
    before = (t[i - 1], series.registers[i - 1]) if i > 0 else None
    after = (t[i], series.registers[i]) if i < len(t) else None
    freeze = midnight_freeze(t0, before, after, max_gap_ms)
    if freeze is None:
        return math.nan, Q_N
    return float(freeze.value), Q_E if freeze.interpolated else series.quality[i]


def _freeze_days(series: Mapping[tuple[str, str], Series], offset_ms: int) -> list[int]:
    """Local day numbers (days since 1970-01-01 local) that have a read near their midnight."""
    days: set[int] = set()
    for (_, quantity), s in series.items():
        if quantity != IMPORT_Q:
            continue
        for t in s.t_ms:
            local = t + offset_ms
            day, into = divmod(local, DAY_MS)
            if into < FREEZE_SLACK_MS:
                days.add(day)
    return sorted(days)


# --------------------------------------------------------------------------------------------
# Indicators over each meter-day of samples
# --------------------------------------------------------------------------------------------


def _window(s: Series, lo: int, hi: int) -> tuple[list[int], list[float]]:
    i, j = bisect.bisect_left(s.t_ms, lo), bisect.bisect_left(s.t_ms, hi)
    return s.t_ms[i:j], s.values[i:j]


def _aligned(
    series: Mapping[tuple[str, str], Series],
    meter: str,
    required: Sequence[str],
    optional: Sequence[str],
    lo: int,
    hi: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Samples of one meter in [lo, hi) on the times the ``required`` quantities share, rows
    in ``required + optional`` order (NaN where an optional quantity has no sample then);
    None unless every required quantity has at least two shared samples."""
    windows: list[dict[int, float] | None] = []
    common: set[int] | None = None
    for q in required:
        s = series.get((meter, q))
        if s is None:
            return None
        times, values = _window(s, lo, hi)
        windows.append(dict(zip(times, values, strict=True)))
        common = set(times) if common is None else common & set(times)
    if not common or len(common) < 2:
        return None
    for q in optional:
        s = series.get((meter, q))
        windows.append(None if s is None else dict(zip(*_window(s, lo, hi), strict=True)))
    times_sorted = sorted(common)
    rows = [
        [math.nan] * len(times_sorted)
        if lookup is None
        else [lookup.get(t, math.nan) for t in times_sorted]
        for lookup in windows
    ]
    return np.asarray(times_sorted, dtype=np.int64), np.asarray(rows, dtype=np.float64)


def indicator_evidence(
    series: Mapping[tuple[str, str], Series],
    meters: Sequence[tuple[str, bool]],
    day_starts: Sequence[int],
) -> dict[tuple[str, int], list[tuple[str, float]]]:
    """Run every indicator the data allows over each (meter, day); (meter, day index) → the
    evidence lines and their ranking weights."""
    from edge_rules import theft

    evidence: dict[tuple[str, int], list[tuple[str, float]]] = defaultdict(list)
    phases = ("a", "b", "c")
    for meter, generating in meters:
        for d, lo in enumerate(day_starts):
            hi = lo + DAY_MS + FREEZE_SLACK_MS  # the next midnight read closes the day
            found: list[theft.Indicator] = []
            vi = _aligned(
                series,
                meter,
                ["voltage.a", "current.a"],
                ["voltage.b", "voltage.c", "current.b", "current.c"],
                lo,
                hi,
            )
            if vi is not None:
                t, rows = vi
                v = rows[[0, 2, 3]][None]
                i = rows[[1, 4, 5]][None]
                found += [
                    theft.loss_of_voltage(v, i, t),
                    theft.phase_break(v, i, t),
                    theft.loss_of_current(v, i, t),
                    theft.current_imbalance(i, t),
                ]
            rp = _aligned(series, meter, [IMPORT_Q, "power.active.total"], [], lo, hi)
            if rp is not None:
                t, rows = rp
                found += [
                    theft.meter_stopped(rows[0:1], rows[1:2], t),
                    theft.running_fast(rows[0:1], rows[1:2], t),
                ]
            if not generating:
                ep = _aligned(
                    series, meter, [EXPORT_Q], [f"power.active.{p}" for p in phases], lo, hi
                )
                if ep is not None:
                    t, rows = ep
                    found.append(theft.reverse_energy(rows[0:1], rows[1:][None], t, [False]))
            for name in ("cover_open", "terminal_cover_open"):
                counts = _aligned(series, meter, [f"events.{name}.count"], [], lo, hi)
                if counts is not None:
                    t, rows = counts
                    found.append(theft.counter_events(rows, t, name=f"tamper.{name}"))
            for indicator in found:
                if indicator.arrays.fired[0]:
                    weight = INDICATOR_WEIGHTS.get(indicator.name, 0.5)
                    evidence[(meter, d)].append((indicator.describe(0), weight))
    return dict(evidence)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _offset_ms(text: str | None, config_vee_offset: str | None, default_min: int) -> int:
    from edge_rules.calendar import parse_utc_offset

    source = text if text is not None else config_vee_offset
    if source is None:
        return default_min * 60_000
    try:
        return parse_utc_offset(source) * 60_000
    except ValueError as exc:
        raise ToolError(f"utc offset {source!r}: {exc}") from None


def run_reconcile(
    config_path: Path,
    reads_path: Path,
    out: TextIO,
    *,
    output_format: str = "csv",
    utc_offset: str | None = None,
    max_gap_ms: int | None = None,
    band: Any = None,
    band_overrides: Mapping[str, Any] | None = None,
    warnings: TextIO = sys.stderr,
) -> list[Any]:
    """Everything ``gwtool reconcile`` does; returns the :class:`AreaDayResult` records.

    The band, guards, suspect rules and ``max_gap_ms`` come from the config's ``[reconcile]``
    table (as the daemon uses them) unless given; ``band_overrides`` replaces single
    ``BandSettings`` fields (the command-line flags)."""
    import dataclasses

    from edge_rules.groups import build_layout
    from edge_rules.line_loss import reconcile_areas
    from gateway.config import ConfigError, format_errors, load_config
    from gateway.config.reconcile import band_settings, suspect_settings

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise ToolError(f"the config is not valid:\n{format_errors(exc)}") from None
    except OSError as exc:
        raise ToolError(f"cannot read {config_path}: {exc.strerror or exc}") from None
    if not config.areas:
        raise ToolError(f"{config_path} has no [[areas]]: nothing to reconcile")
    offset_ms = _offset_ms(utc_offset, config.vee.utc_offset, config.reconcile.utc_offset_min)
    if max_gap_ms is None:
        max_gap_ms = round(config.reconcile.max_gap_min * 60_000)
    try:
        band = dataclasses.replace(
            band if band is not None else band_settings(config.reconcile),
            **dict(band_overrides or {}),
        )
    except ValueError as exc:
        raise ToolError(f"band settings (flags over [reconcile]): {exc}") from None

    groups = {g.id: g for g in config.groups}
    used_groups = [groups[a.subs] for a in config.areas]
    meter_ids: list[str] = []
    for area in config.areas:
        for meter in (area.master, *(m.meter for m in groups[area.subs].members)):
            if meter not in meter_ids:
                meter_ids.append(meter)
    wanted = set(meter_ids)
    series = read_series(reads_path, wanted.__contains__, warnings)

    days = _freeze_days(series, offset_ms)
    if len(days) < 2:
        raise ToolError(
            f"{reads_path}: fewer than two local midnights with an {IMPORT_Q} read of the area "
            f"meters (local time UTC{_offset_text(offset_ms)}); each day needs the 00:00 reads "
            "that begin and end it — check the quantity names and --utc-offset"
        )
    first, last = days[0], days[-1]
    boundaries = [(first + j) * DAY_MS - offset_ms for j in range(last - first + 1)]
    n_days = len(boundaries) - 1

    def freezes(quantity: str) -> tuple[np.ndarray, np.ndarray]:
        values = np.full((len(meter_ids), len(boundaries)), np.nan)
        quality = np.full((len(meter_ids), len(boundaries)), Q_N, dtype=np.uint8)
        for i, meter in enumerate(meter_ids):
            s = series.get((meter, quantity))
            if s is None:
                continue
            for j, t0 in enumerate(boundaries):
                values[i, j], quality[i, j] = freeze_at(s, t0, max_gap_ms)
        return values, quality

    imports, import_quality = freezes(IMPORT_Q)
    exports, export_quality = freezes(EXPORT_Q)
    unread = [m for i, m in enumerate(meter_ids) if np.all(np.isnan(imports[i]))]
    if unread:
        shown = ", ".join(unread[:10]) + (" …" if len(unread) > 10 else "")
        print(
            f"gwtool reconcile: {len(unread)} area meter(s) have no midnight {IMPORT_Q} read "
            f"in {reads_path}: {shown}",
            file=warnings,
        )

    ratios = {m.id: float(m.ct_ratio * m.pt_ratio) for m in config.meters}
    generating = {m.id: m.generating for m in config.meters}
    layout = build_layout(used_groups, ratios)
    day_names = [str(dt.date(1970, 1, 1) + dt.timedelta(days=first + j)) for j in range(n_days)]
    evidence = indicator_evidence(
        series, [(m, generating.get(m, False)) for m in meter_ids], boundaries[:-1]
    )
    result = reconcile_areas(
        config.areas,
        layout,
        ratios,
        meter_ids,
        day_names,
        imports,
        import_quality,
        exports,
        export_quality,
        band=band,
        suspects=suspect_settings(config.reconcile),
        indicator_evidence=evidence,
    )
    records = result.records()
    if output_format == "json":
        json.dump([_json_record(r) for r in records], out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["area", "date", "loss_pct", "status", "coverage", "suspects"])
        for r in records:
            writer.writerow(
                [
                    r.area,
                    r.day,
                    "" if r.loss_pct is None else f"{r.loss_pct:.3f}",
                    r.status,
                    f"{r.coverage:.4f}",
                    " | ".join(
                        f"{s.meter} ({s.score:.2f}): {'; '.join(s.evidence)}" for s in r.suspects
                    ),
                ]
            )
    return records


def _offset_text(offset_ms: int) -> str:
    minutes = offset_ms // 60_000
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _json_record(r: Any) -> dict[str, object]:
    return {
        "area": r.area,
        "date": r.day,
        "loss_pct": r.loss_pct,
        "status": r.status,
        "coverage": round(r.coverage, 6),
        "input_kwh": None if r.input_kwh is None else round(r.input_kwh, 4),
        "output_kwh": None if r.output_kwh is None else round(r.output_kwh, 4),
        "band": {
            "center_pct": None if r.band_center_pct is None else round(r.band_center_pct, 4),
            "halfwidth_pct": None
            if r.band_halfwidth_pct is None
            else round(r.band_halfwidth_pct, 4),
        },
        "suspects": [
            {"meter": s.meter, "score": s.score, "evidence": list(s.evidence)} for s in r.suspects
        ],
    }
