"""``edge-central export nem12``: one day of interval energy per meter, as AEMO NEM12 files.

NEM12 carries *interval energy* (kWh consumed in each 5/15/30-minute interval of a day), while a
gateway publishes the *register* read at each interval boundary (docs/vee.md): interval k's energy
is the register at its end minus the register at its start, and its quality, method and reason
are those of the read that closes it (the gateway's VEE grades an interval by its closing read).
An interval without both reads, or whose closing read is null, is written as null: value 0,
quality ``N`` — what NEM12 prescribes for missing data — with the null read's reason code when
it has one. A read belongs to a boundary when it is
the one closest to it within half an interval.

The files are written with ``nemwriter`` (a maintained NEM12 writer, not ours), fed every interval
of the day: it infers the interval length from the spacing of what it is given, so a day with
holes handed over as-is would be mis-positioned. Its 300/400 rows carry the quality-method
(``E14``, ``S53`` …) and one reason code per interval — NEM12 has room for one, so a read with
several reasons contributes the lowest code.

Suffixes: ``E1`` import (``energy.active.import.total``), ``B1`` export
(``energy.active.export.total``); the NMI is the meter id. One file per gateway and meter.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from central.errors import CentralError
from central.storage.database import Database
from central.storage.queries import IntervalRead, interval_reads

__all__ = ["NEM12_SUFFIXES", "IntervalValue", "day_intervals", "export_nem12"]

NEM12_SUFFIXES = {"energy.active.import.total": "E1", "energy.active.export.total": "B1"}
_INTERVAL_MINUTES = (5, 15, 30)


@dataclass(frozen=True, slots=True)
class IntervalValue:
    """One NEM12 interval: ``end`` (local, naive, as NEM12 writes it), ``value`` kWh,
    ``quality_method`` (``A``, ``E14``, ``N`` …) and ``reason`` (a NEM12 reason code or None)."""

    end: dt.datetime
    value: Decimal
    quality_method: str
    reason: int | None


def _quality_method(read: IntervalRead) -> str:
    if read.quality in ("A", "N") or read.method is None:
        return read.quality
    return f"{read.quality}{read.method:02d}"


def day_intervals(reads: Sequence[IntervalRead], day: dt.date, tz: ZoneInfo,
                  minutes: int) -> list[IntervalValue]:
    """Every interval of ``day`` (local to ``tz``) from the register reads of one channel."""
    # Boundaries are stepped in UTC: aware-datetime arithmetic in a zone is wall-clock
    # arithmetic, which would skip or repeat an hour on a daylight-saving day.
    start = dt.datetime.combine(day, dt.time(0), tz).astimezone(dt.UTC)
    end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz).astimezone(dt.UTC)
    step = dt.timedelta(minutes=minutes)
    count = round((end_of_day - start) / step)
    boundaries = [int((start + k * step).timestamp() * 1000) for k in range(count + 1)]
    half = minutes * 30_000
    at: dict[int, IntervalRead] = {}
    for read in reads:
        k = round((read.t_ms - boundaries[0]) / (minutes * 60_000))
        if not 0 <= k <= count or abs(read.t_ms - boundaries[k]) > half:
            continue
        best = at.get(k)
        if best is None or abs(read.t_ms - boundaries[k]) < abs(best.t_ms - boundaries[k]):
            at[k] = read
    out = []
    for k in range(1, count + 1):
        end = (start + k * step).astimezone(tz).replace(tzinfo=None)
        opening, closing = at.get(k - 1), at.get(k)
        reason = min(closing.reasons) if closing is not None and closing.reasons else None
        if opening is None or opening.value is None or closing is None or closing.value is None:
            # A null closing read keeps its reason (why the gateway rejected the value).
            null_reason = reason if closing is not None and closing.value is None else None
            out.append(IntervalValue(end, Decimal(0), "N", null_reason))
            continue
        out.append(IntervalValue(end, closing.value - opening.value, _quality_method(closing),
                                 reason))
    return out


def export_nem12(db: Database, day: dt.date, out_dir: Path, *, tz: ZoneInfo,
                 minutes: int = 15, from_participant: str = "EDGECTRL",
                 to_participant: str = "BILLING") -> list[Path]:
    """Write one NEM12 file per (gateway, meter) with reads on ``day``; the paths written."""
    if minutes not in _INTERVAL_MINUTES:
        raise CentralError(f"NEM12 intervals are 5, 15 or 30 minutes, not {minutes}")
    try:
        from nemwriter import NEM12
    except ImportError:
        raise CentralError("NEM12 export needs nemwriter: pip install 'edge-gateway[central]'") \
            from None
    start = dt.datetime.combine(day, dt.time(0), tz)
    margin = minutes * 30_000
    lo = int(start.timestamp() * 1000) - margin
    hi = int((start + dt.timedelta(days=1)).timestamp() * 1000) + margin
    channels: dict[tuple[str, str], dict[str, list[IntervalRead]]] = defaultdict(dict)
    for read in interval_reads(db, tuple(NEM12_SUFFIXES), lo, hi):
        channels[(read.gw, read.meter)].setdefault(read.quantity, []).append(read)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CentralError(f"cannot create {out_dir}: {exc.strerror}") from None
    written = []
    for (gw, meter), by_quantity in sorted(channels.items()):
        nem = NEM12(to_participant=to_participant, from_participant=from_participant)
        suffixes = [NEM12_SUFFIXES[q] for q in sorted(by_quantity)]
        for quantity, reads in sorted(by_quantity.items()):
            values = day_intervals(reads, day, tz, minutes)
            nem.add_readings(
                nmi=meter, nmi_configuration="".join(suffixes),
                nmi_suffix=NEM12_SUFFIXES[quantity], uom=reads[0].unit,
                readings=[(v.end, v.value, v.quality_method, v.reason, None) for v in values],
            )
        path = out_dir / f"NEM12_{gw}_{meter}_{day:%Y%m%d}.csv"
        try:
            nem.output_csv(str(path))
        except OSError as exc:
            raise CentralError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written
