"""Synthetic meter reads with labelled faults, deterministic by seed (issue 4).

A fleet of residential, commercial and industrial meters, each with a daily shape by day type
(weekday, Saturday, Sunday, holiday — holidays and make-up working days from
:mod:`edge_rules.calendar`), a seasonal swing, day-to-day "weather" that persists for a few days,
per-interval noise and household appliance bursts. Registers count true energy and show it
truncated to 0.01 kWh, as a meter display does; tariff registers (sharp/peak/flat/valley, China
time-of-use periods) are read at midnight with the total; power, a phase voltage and the meter
clock offset are read as well.

Faults are injected into what is *read*, never into the truth, and labelled:

=================  ==========================================================================
``rollover``       the register passes 10^digits and starts again (not a fault for billing:
                   validation must *not* call it a decrease)
``decrease``       one read below the previous one (a corrupted read)
``impossible``     one read far above what the contract power allows (a corrupted read)
``spike``          one interval with at least 3× the day's third-highest energy (the register
                   really counted it)
``stuck``          the register repeats its value for hours while power flows, then catches up
``stopped``        the meter stops counting for hours while power flows (the energy is lost)
``gap``            reads missing: short gaps (≤ 2 h) and whole days
``clock_shift``    the meter clock jumps by minutes for a few days
``ct_ratio``       from one day on every interval is scaled by 2 or ½ (a wrong CT multiplier)
``duplicate``      a second read for the same interval with a different value
=================  ==========================================================================

Days are generated in order with one random stream per (seed, day), so the same seed always
gives the same fleet. ``python -m hil_tests.synthetic_reads --meters 20 --days 60 --out reads.csv
--labels labels.csv`` writes the ``gwtool vee`` input format and a labels file.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

import numpy as np
from numpy.typing import NDArray

from edge_rules.calendar import INTERVALS_PER_DAY, Calendar, day_number

__all__ = [
    "FAULTS",
    "DayReads",
    "FleetSpec",
    "SyntheticFleet",
    "write_csv",
]

F64 = NDArray[np.float64]

FAULTS: Final = ("rollover", "decrease", "impossible", "spike", "stuck", "stopped", "gap_short",
                 "gap_day", "clock_shift", "ct_ratio", "duplicate")
#: Fault codes in the label arrays (0 = clean).
FAULT_CODE: Final = {name: i + 1 for i, name in enumerate(FAULTS)}
CLASSES: Final = ("residential", "commercial", "industrial")
LSB: Final = 0.01
S: Final = INTERVALS_PER_DAY

PRIMARY: Final = "energy.active.import.total"
EXPORT: Final = "energy.active.export.total"
POWER: Final = "power.active.total"
VOLTAGE: Final = "voltage.a"
CLOCK: Final = "clock.offset"
TARIFFS: Final = ("energy.active.import.t1", "energy.active.import.t2",
                  "energy.active.import.t3", "energy.active.import.t4")


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What to generate. ``fault_rate`` is the chance per meter-day of one injected fault (the
    kind drawn uniformly from the per-day kinds); ``ct_share``/``rollover_share`` the share of
    meters that get a CT ratio error / start close to their register's wrap."""

    meters: int = 100
    start: dt.date = dt.date(2025, 1, 1)
    days: int = 365
    seed: int = 1
    fault_rate: float = 0.02
    ct_share: float = 0.02
    rollover_share: float = 0.02
    class_mix: tuple[float, float, float] = (0.7, 0.2, 0.1)
    calendar: Calendar = field(default_factory=Calendar)


@dataclass(slots=True)
class DayReads:
    """One local day of the fleet (arrays are ``(meters, 96)`` unless noted).

    ``day`` day number; ``true_energy`` interval energies as consumed; ``register`` the primary
    register as read at the end of each interval (NaN: no read); ``true_register`` what an honest
    meter would show; ``power`` kW at each read; ``duplicate`` the value of a second, different
    read of the same interval (NaN: none); ``voltage`` (meters, 24) hourly phase voltage;
    ``clock_offset`` (meters,) meter − gateway seconds at 00:00; ``tariffs`` (meters, 4) tariff
    registers read at 00:00 (start of the day) with ``total_at_midnight`` the primary register then;
    ``export`` export register (NaN for meters without generation); ``labels`` (meters, 96) fault
    codes per interval read; ``clock_label`` (meters,) 1 where the clock reading is a fault;
    ``spike_ratio`` (meters, 96) the injected spike's ratio to the day's third-highest interval.
    """

    day: int
    true_energy: F64
    register: F64
    true_register: F64
    power: F64
    duplicate: F64
    voltage: F64
    clock_offset: F64
    tariffs: F64
    total_at_midnight: F64
    export: F64
    labels: NDArray[np.uint8]
    clock_label: NDArray[np.uint8]
    spike_ratio: F64


def _bump(center_h: float, width_h: float) -> F64:
    hours = (np.arange(S) + 0.5) / 4.0
    bump: F64 = np.exp(-0.5 * ((hours - center_h) / width_h) ** 2)
    return bump


def _plateau(start_h: float, end_h: float, edge_h: float = 0.5) -> F64:
    hours = (np.arange(S) + 0.5) / 4.0
    plateau: F64 = 1.0 / (1.0 + np.exp(-(hours - start_h) / edge_h * 4)) / (
        1.0 + np.exp((hours - end_h) / edge_h * 4))
    return plateau


def _shapes() -> F64:
    """(class, day type, 96) normalised daily shapes."""
    shapes = np.zeros((3, 4, S))
    res_week = 0.35 + 0.9 * _bump(7.5, 1.0) + 0.5 * _bump(12.5, 1.5) + 2.0 * _bump(19.5, 1.8)
    res_end = 0.4 + 0.7 * _bump(9.5, 1.5) + 1.0 * _bump(13.0, 2.0) + 2.0 * _bump(19.5, 2.0)
    shapes[0] = [res_week, res_end, res_end, res_end * 1.05]
    com_week = 0.15 + _plateau(8.0, 18.5)
    com_sat = 0.15 + 0.45 * _plateau(9.0, 15.0)
    com_sun = 0.15 + 0.05 * _plateau(10.0, 14.0)
    shapes[1] = [com_week, com_sat, com_sun, com_sun]
    ind_week = 0.4 + 0.6 * _plateau(6.0, 22.0)
    ind_sat = 0.4 + 0.3 * _plateau(6.0, 14.0)
    shapes[2] = [ind_week, ind_sat, np.full(S, 0.45), np.full(S, 0.35)]
    normalised: F64 = shapes / shapes.sum(axis=2, keepdims=True)
    return normalised


def _tariff_of_slot() -> NDArray[np.int64]:
    """Tariff index (0 sharp, 1 peak, 2 flat, 3 valley) of each interval, local time."""
    hour = np.arange(S) // 4
    tariff = np.full(S, 2)
    tariff[(hour >= 23) | (hour < 7)] = 3
    tariff[((hour >= 8) & (hour < 11)) | ((hour >= 18) & (hour < 23))] = 1
    tariff[(hour >= 19) & (hour < 21)] = 0
    return tariff


class SyntheticFleet:
    """Generate days in order (:meth:`days`); everything derives from ``spec.seed``."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        m = spec.meters
        rng = np.random.default_rng([spec.seed, 0])
        self.meter_ids = tuple(f"m-{i:05d}" for i in range(m))
        self.kind = rng.choice(3, size=m, p=np.array(spec.class_mix) / sum(spec.class_mix))
        self.classes = tuple(CLASSES[k] for k in self.kind)
        base = np.array([9.0, 320.0, 2600.0])[self.kind]
        self.daily_kwh = base * rng.lognormal(0.0, 0.45, m)
        self.noise = np.array([0.28, 0.10, 0.07])[self.kind]
        self.digits = np.where(self.kind == 0, 6, 8).astype(np.int64)
        self.modulus = 10.0 ** self.digits
        # contract power: comfortably above the meter's own peak (what a utility contracts)
        peak_share = _shapes().max(axis=(1, 2))[self.kind]
        self.contract_kw = np.ceil(self.daily_kwh * peak_share * 4 * 4.0 + 6.0)
        self.generating = (self.kind == 0) & (rng.random(m) < 0.05)
        self.shapes = _shapes()
        self.tariff_slot = _tariff_of_slot()
        # registers start anywhere in their first half; rollover meters just below the wrap
        start = rng.uniform(0.0, 0.5, m) * self.modulus
        self.rollover = rng.random(m) < spec.rollover_share
        wrap_in = rng.uniform(5.0, max(6.0, spec.days - 5.0), m) * self.daily_kwh
        start = np.where(self.rollover, self.modulus - wrap_in, start)
        self.cum = start.astype(np.float64)  # true register, unwrapped
        self.tariff_cum = np.outer(start, [0.1, 0.3, 0.35, 0.25])
        self.export_cum = np.where(self.generating, rng.uniform(0, 5000, m), np.nan)
        self.lost = np.zeros(m)  # energy a stopped meter never counted
        self.catch = np.zeros(m, dtype=bool)
        self.weather = np.zeros(m)
        self.clock = rng.normal(0.0, 5.0, m)
        self.clock_fault_left = np.zeros(m, dtype=np.int64)
        self.clock_shift = np.zeros(m)
        self.voltage_bias = rng.normal(0.0, 0.012, m)
        self.ct_day = np.where((self.kind > 0) & (rng.random(m) < spec.ct_share * 5),
                               rng.integers(60, max(61, spec.days - 7), m), -1)
        self.ct_factor = np.where(rng.random(m) < 0.5, 2.0, 0.5)
        self.first_day = day_number(spec.start)

    def _shown(self, counted: F64) -> F64:
        """What the display shows for counted energy: wrapped at 10^digits, truncated to LSB."""
        wrapped = np.mod(counted, self.modulus.reshape((-1,) + (1,) * (counted.ndim - 1)))
        shown: F64 = np.floor(wrapped / LSB + 1e-7) * LSB
        return shown

    # ------------------------------------------------------------------ days

    def days(self) -> Iterator[DayReads]:
        for offset in range(self.spec.days):
            yield self._day(self.first_day + offset, offset)

    def _day(self, day: int, offset: int) -> DayReads:
        spec = self.spec
        m = spec.meters
        rng = np.random.default_rng([spec.seed, 1 + offset])
        cal = spec.calendar
        date = cal.date(day)
        dtype = int(cal.day_type(date))
        doy = date.timetuple().tm_yday
        # -- truth
        season = np.select(
            [self.kind == 0, self.kind == 1],
            [1.0 + 0.22 * math.cos(2 * math.pi * (doy - 15) / 365.25)
             + 0.25 * max(0.0, math.cos(2 * math.pi * (doy - 205) / 365.25)) ** 2,
             1.0 + 0.3 * max(0.0, math.cos(2 * math.pi * (doy - 205) / 365.25)) ** 2],
            1.0 + 0.04 * math.cos(2 * math.pi * doy / 365.25))
        self.weather = 0.7 * self.weather + rng.normal(0.0, 0.06, m)
        energy_day = self.daily_kwh * season * np.exp(self.weather)
        shape = self.shapes[self.kind, dtype]
        noise = rng.lognormal(-0.5 * self.noise[:, None] ** 2, self.noise[:, None], (m, S))
        energy = energy_day[:, None] * shape * noise
        # household appliance bursts: a kettle, an oven, a washing machine
        bursts = (self.kind == 0)[:, None] & (rng.random((m, S)) < 2.0 / S)
        energy += np.where(bursts, rng.uniform(0.05, 0.35, (m, S)), 0.0)
        ct_active = (self.ct_day >= 0) & (offset >= self.ct_day)
        labels = np.zeros((m, S), dtype=np.uint8)
        labels[ct_active & (offset < self.ct_day + 7), :] = FAULT_CODE["ct_ratio"]
        measured = energy * np.where(ct_active, self.ct_factor, 1.0)[:, None]
        # -- faults drawn for the day (one per meter-day at most)
        per_day = ("decrease", "impossible", "spike", "stuck", "stopped", "gap_short", "gap_day",
                   "clock_shift", "duplicate")
        faulty = rng.random(m) < spec.fault_rate
        kind = np.where(faulty & ~ct_active, rng.integers(0, len(per_day), m), -1)
        spike_ratio = np.zeros((m, S))
        stuck_slots = np.zeros((m, S), dtype=bool)
        stopped_slots = np.zeros((m, S), dtype=bool)
        start_slot = rng.integers(4, S - 12, m)
        length = rng.integers(4, 12, m)  # 1–3 hours
        for i in np.flatnonzero(kind == per_day.index("spike")):
            # a spike the meter can really count: at least 3.2× the day's third-highest interval,
            # yet within what the contract power allows (beyond it, it is an impossible delta)
            day_e = measured[i].copy()
            k = int(rng.integers(0, S))
            third = np.sort(np.delete(day_e, k))[-3]
            limit = self.contract_kw[i] * 0.25 * 1.2
            target = max(float(rng.uniform(3.2, 8.0)) * third, day_e[k] + 1.0, 3.2 * third + 0.6)
            if target > 0.9 * limit:
                continue
            measured[i, k] = target
            spike_ratio[i, k] = measured[i, k] / np.sort(measured[i])[-3]
            labels[i, k] = FAULT_CODE["spike"]
        for name, slots in (("stuck", stuck_slots), ("stopped", stopped_slots)):
            for i in np.flatnonzero(kind == per_day.index(name)):
                a = int(start_slot[i])
                slots[i, a:a + int(length[i])] = True
                labels[i, a:a + int(length[i])] = FAULT_CODE[name]
                if name == "stuck":  # the read after the stuck run catches up: part of the fault
                    labels[i, min(S - 1, a + int(length[i]))] = FAULT_CODE[name]
        # -- registers: true energy counted (minus what a stopped meter missed), wrapped at
        # 10^digits and truncated to the display resolution
        counted_start = self.cum - self.lost
        true_cum = self.cum[:, None] + np.cumsum(measured, axis=1)
        lost = self.lost[:, None] + np.cumsum(np.where(stopped_slots, measured, 0.0), axis=1)
        true_register = self._shown(true_cum - lost)
        start_shown = self._shown(counted_start[:, None])[:, 0]
        previous = np.concatenate([start_shown[:, None], true_register[:, :-1]], axis=1)
        labels[true_register < previous - 0.5 * self.modulus[:, None]] = FAULT_CODE["rollover"]
        self.cum = true_cum[:, -1]
        self.lost = lost[:, -1]
        register = true_register.copy()
        # stuck: reads repeat the value before the run
        for i in np.flatnonzero(stuck_slots.any(axis=1)):
            run = np.flatnonzero(stuck_slots[i])
            held = register[i, run[0] - 1]
            register[i, run] = held
        # single corrupted reads
        for name in ("decrease", "impossible"):
            for i in np.flatnonzero(kind == per_day.index(name)):
                k = int(rng.integers(1, S))
                if name == "decrease":
                    # below the read before it (not merely a smaller step up)
                    step = register[i, k] - register[i, k - 1]
                    drop = step + float(rng.uniform(0.5, 100.0))
                    if not register[i, k] - drop > 0.0:
                        continue
                    register[i, k] = np.round(register[i, k] - drop, 2)
                else:
                    limit = self.contract_kw[i] * 0.25 * 1.2
                    register[i, k] = np.round(register[i, k] + float(
                        rng.uniform(5.0, 500.0)) * limit, 2)
                    if register[i, k] >= self.modulus[i]:
                        register[i, k] = np.round(true_register[i, k] + 3.0 * limit, 2)
                labels[i, k] = FAULT_CODE[name]
        # duplicates that disagree
        duplicate = np.full((m, S), np.nan)
        for i in np.flatnonzero(kind == per_day.index("duplicate")):
            k = int(rng.integers(0, S))
            duplicate[i, k] = np.round(register[i, k] + float(rng.uniform(0.01, 5.0)), 2)
            labels[i, k] = FAULT_CODE["duplicate"]
        # gaps
        for i in np.flatnonzero(kind == per_day.index("gap_short")):
            a = int(rng.integers(0, S - 8))
            n = int(rng.integers(1, 9))
            register[i, a:a + n] = np.nan
            labels[i, a:a + n] = FAULT_CODE["gap_short"]
        for i in np.flatnonzero(kind == per_day.index("gap_day")):
            register[i, :] = np.nan
            labels[i, :] = FAULT_CODE["gap_day"]
        # -- power at each read: the interval's mean power with a little instrument noise
        power = measured / 0.25 * rng.lognormal(0.0, 0.05, (m, S))
        # -- clock
        self.clock += rng.normal(0.0, 0.4, m)
        clock_label = np.zeros(m, dtype=np.uint8)
        jump = kind == per_day.index("clock_shift")
        self.clock_fault_left = np.where(jump, rng.integers(1, 4, m), self.clock_fault_left)
        shift = rng.choice([-1.0, 1.0], m) * rng.uniform(120.0, 1800.0, m)
        self.clock_shift = np.where(jump, shift, self.clock_shift)
        in_fault = self.clock_fault_left > 0
        clock_offset = self.clock + np.where(in_fault, self.clock_shift, 0.0)
        clock_label[in_fault] = 1
        self.clock_fault_left = np.maximum(self.clock_fault_left - 1, 0)
        # -- tariffs at 00:00 (start of the day): the registers before today's energy, which
        # add up to the total shown then (each truncated on its own)
        tariffs = self._shown(self.tariff_cum)
        counted_energy = np.where(stopped_slots, 0.0, measured)
        for t in range(4):
            self.tariff_cum[:, t] += counted_energy[:, self.tariff_slot == t].sum(axis=1)
        # -- export (generating meters only: midday solar)
        solar = np.clip(np.sin((np.arange(S) / 4.0 - 6.0) / 12.0 * math.pi), 0.0, None)
        pv_energy = np.where(self.generating[:, None], 0.6 * solar[None, :] * rng.uniform(
            0.3, 1.0, (m, 1)), 0.0)
        export_cum = self.export_cum[:, None] + np.cumsum(pv_energy, axis=1)
        self.export_cum = export_cum[:, -1]
        export = np.where(self.generating[:, None], np.floor(export_cum / LSB + 1e-9) * LSB,
                          np.nan)
        voltage = 220.0 * (1.0 + self.voltage_bias[:, None] + rng.normal(0.0, 0.01, (m, 24)))
        voltage = np.clip(voltage, 220.0 * 0.93, 220.0 * 1.05)
        return DayReads(day, measured, register, true_register, power, duplicate,
                        np.round(voltage, 1), np.round(clock_offset, 1), tariffs, start_shown,
                        export, labels, clock_label, spike_ratio)


def write_csv(fleet: SyntheticFleet, reads: TextIO, labels: TextIO | None = None) -> int:
    """Write every day of ``fleet`` as ``meter,time,quantity,value`` rows (time-major: all meters
    of one read time, then the next) and, when given, ``meter,time,quantity,fault`` labels.
    Returns the number of read rows."""
    cal = fleet.spec.calendar
    out = csv.writer(reads, lineterminator="\n")
    out.writerow(["meter", "time", "quantity", "value"])
    lab = csv.writer(labels, lineterminator="\n") if labels is not None else None
    if lab is not None:
        lab.writerow(["meter", "time", "quantity", "fault"])
    names = {code: name for name, code in FAULT_CODE.items()}
    count = 0
    for data in fleet.days():
        first = data.day * S
        midnight = _iso(cal.read_time_ms(first - 1))
        for i, meter in enumerate(fleet.meter_ids):
            for t, name in enumerate(TARIFFS):
                out.writerow([meter, midnight, name, f"{data.tariffs[i, t]:.2f}"])
            out.writerow([meter, midnight, CLOCK, f"{data.clock_offset[i]:.1f}"])
            count += len(TARIFFS) + 1
            if lab is not None and data.clock_label[i]:
                lab.writerow([meter, midnight, CLOCK, "clock_shift"])
        for k in range(S):
            when = _iso(cal.read_time_ms(first + k))
            for i, meter in enumerate(fleet.meter_ids):
                value = data.register[i, k]
                if not math.isnan(value):
                    out.writerow([meter, when, PRIMARY, f"{value:.2f}"])
                    count += 1
                if not math.isnan(data.duplicate[i, k]):
                    out.writerow([meter, when, PRIMARY, f"{data.duplicate[i, k]:.2f}"])
                    count += 1
                out.writerow([meter, when, POWER, f"{data.power[i, k]:.3f}"])
                count += 1
                if not math.isnan(data.export[i, k]):
                    out.writerow([meter, when, EXPORT, f"{data.export[i, k]:.2f}"])
                    count += 1
                if k % 4 == 3:
                    out.writerow([meter, when, VOLTAGE, f"{data.voltage[i, k // 4]:.1f}"])
                    count += 1
                if lab is not None and data.labels[i, k]:
                    lab.writerow([meter, when, PRIMARY, names[int(data.labels[i, k])]])
    return count


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate synthetic meter reads with faults.")
    parser.add_argument("--meters", type=int, default=20)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=Path)
    args = parser.parse_args(argv)
    fleet = SyntheticFleet(FleetSpec(meters=args.meters, start=args.start, days=args.days,
                                     seed=args.seed, fault_rate=args.fault_rate))
    with args.out.open("w", encoding="utf-8", newline="") as reads:
        if args.labels:
            with args.labels.open("w", encoding="utf-8", newline="") as labels:
                rows = write_csv(fleet, reads, labels)
        else:
            rows = write_csv(fleet, reads)
    print(f"wrote {rows} reads for {args.meters} meters × {args.days} days to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

