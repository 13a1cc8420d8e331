"""Synthetic transformer areas with labelled theft, for reconciliation tests and benchmarks.

Deterministic by seed: area ``a`` is drawn from ``numpy.random.default_rng([seed, a])``, so it
is the same whatever else is generated and however many areas are asked for.

What an area is made of
    A master meter (three-phase, behind a CT: its registers are secondary values, ``ct_ratio``
    40–120) and 30–100 customers (85 % residential, 15 % commercial; 5 % of the residential
    customers have rooftop PV and an export register). Consumption is built per 15-minute
    interval: a class day shape with a per-customer shift, weekday and holiday factors, a
    seasonal swing (winter heating, summer cooling) each customer follows with its own
    sensitivity, area-wide weather (an AR(1) series), per-customer daily noise, and honest
    changes that look like theft to a naive rule: holidays away (3–14 days at 15 %), customers
    moving out or in.
Technical loss
    A fixed (iron) part plus a part quadratic in the area's load per interval (copper), scaled
    so the area loses 2–5 % at its average load: loss % falls on light days and rises on heavy
    ones, as a real transformer area's does.
Reads
    Each meter's registers at the local midnight freeze, floored to 0.01 kWh, with a clock skew
    per meter (σ 90 s plus a slow drift), so master and sub-meters never freeze at exactly the
    same instant. Some freezes are late (the 00:00 read is missing; reads at 23:40 and 00:20
    exist and interpolation gives an *estimated* freeze) or missing (communication outages of
    1–5 days and single lost reads).
Labelled anomalies (never before day ``first_anomaly_day``, so every area has a clean history)
    Theft on 1–3 customers of 35 % of the areas, one of the standard attack models
    (:data:`ATTACK_MODELS`): zeroing (a full bypass), α·e scaling (a shunt), partial-day windows
    (bypass a few hours a day), capping, progressive reduction, time shifting (the day's profile
    reported twelve hours late: the daily energy is unchanged) and profile substitution (a small
    class profile reported instead). And faults that lower the loss (:data:`FAULT_KINDS`): a
    master CT fault (the master under-registers) and a customer meter running fast.
Truth per area and day (``truth``)
    ``uncalculable`` when the master's two freezes are not both actual or fewer than 98 % of the
    sub-meter channels have both freezes actual; otherwise from the loss *exact reads would
    show*: above 10 % ``high``, below −1 % ``negative``; else from the anomaly, the loss minus
    the technical loss: ≥ ``high_pp`` high, ≤ −``high_pp`` negative, none at all (no theft or
    fault changes the day's energy) qualified, and a smaller anomaly :data:`AMBIGUOUS` (a
    theft too small to call either way on that day; scored apart).

Outputs: :class:`SyntheticAreas` in memory (arrays in the layout ``edge_rules.line_loss``
takes), and writers for the ``meter,time,quantity,value`` CSV of ``gwtool reconcile`` /
``gwtool vee``, a gateway TOML with ``[[meters]]``, ``[[groups]]`` and ``[[areas]]``, and a JSON
labels file. Run ``python -m hil_tests.synthetic_areas --help``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from hil_tests.load_model import RESIDENTIAL_DAY_SHAPE

__all__ = [
    "AMBIGUOUS",
    "ATTACK_MODELS",
    "FAULT_KINDS",
    "Attack",
    "Fault",
    "SyntheticAreas",
    "SyntheticSettings",
    "generate",
]

F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

ATTACK_MODELS: Final = (
    "zeroing",
    "scaling",
    "partial_day",
    "capping",
    "progressive",
    "time_shift",
    "profile_substitution",
)
FAULT_KINDS: Final = ("master_ct_fault", "fast_meter")

#: Truth codes follow edge_rules.reconcile: 0 qualified, 1 high, 2 negative, 3 uncalculable.
QUALIFIED: Final = 0
HIGH: Final = 1
NEGATIVE: Final = 2
UNCALCULABLE: Final = 3
AMBIGUOUS: Final = 255
TRUTH_NAMES: Final = {0: "qualified", 1: "high", 2: "negative", 3: "uncalculable", 255: "ambiguous"}

Q_A: Final = 0
Q_E: Final = 1
Q_N: Final = 4

IMPORT_Q: Final = "energy.active.import.total"
EXPORT_Q: Final = "energy.active.export.total"

# Chinese public holidays of 2025 (Spring Festival, Qingming, Labour Day, Dragon Boat, National
# Day) as day-of-year ranges; the generator repeats them every 365 days.
_HOLIDAYS_2025: Final = ((28, 35), (94, 96), (121, 125), (151, 153), (274, 281))


@dataclass(frozen=True, slots=True)
class SyntheticSettings:
    """Knobs of :func:`generate` (defaults are what docs/reconciliation.md reports)."""

    areas: int = 200
    days: int = 365
    start: dt.date = dt.date(2025, 1, 1)
    utc_offset_h: int = 8
    customers: tuple[int, int] = (30, 100)
    intervals_per_day: int = 96
    theft_area_share: float = 0.35
    max_thieves: int = 3
    fault_area_share: float = 0.08
    pv_share: float = 0.05
    missing_read_rate: float = 0.0005
    late_read_rate: float = 0.001
    outages_per_meter_year: float = 0.1
    first_anomaly_day: int = 45
    high_pp: float = 1.0


@dataclass(frozen=True, slots=True)
class Attack:
    """A labelled theft: ``meter`` of ``area`` reports ``model`` from ``start`` (day index) to
    ``end`` (exclusive); ``params`` as drawn; ``mean_deficit_pp`` the stolen energy over the
    attack as a share of the area's input (percentage points), i.e. how much it raises the
    area's loss."""

    meter: str
    area: str
    model: str
    start: int
    end: int
    params: dict[str, float]
    mean_deficit_pp: float


@dataclass(frozen=True, slots=True)
class Fault:
    """A labelled fault that lowers the area's loss: ``kind`` on ``meter`` over [start, end),
    registering ``factor`` × the true energy."""

    meter: str
    area: str
    kind: str
    start: int
    end: int
    factor: float


@dataclass(frozen=True, slots=True)
class _Member:
    meter: str
    sign: str = "+"
    direction: str = "import"


@dataclass(frozen=True, slots=True)
class _Group:
    id: str
    members: tuple[_Member, ...]


@dataclass(frozen=True, slots=True)
class _Area:
    id: str
    master: str
    subs: str


@dataclass(frozen=True, slots=True)
class _Meter:
    id: str
    area: int
    role: str  # "master" | "residential" | "commercial"
    generating: bool
    ct_ratio: int


@dataclass(eq=False)
class SyntheticAreas:
    """A generated data set. Meter arrays are (meters, days + 1) in :attr:`meter_ids` order:
    column j is the register at 00:00 local of day j (secondary kWh for the masters), with
    quality codes 0 = A, 1 = E (interpolated from reads at 23:40 and 00:20), 4 = N (no read).
    ``truth``, ``anomaly_pp``, ``tech_loss_pct`` and ``exact_loss_pct`` are (areas, days)."""

    seed: int
    settings: SyntheticSettings
    days: tuple[str, ...]
    meters: tuple[_Meter, ...]
    groups: tuple[_Group, ...]
    areas: tuple[_Area, ...]
    import_freezes: F64
    import_quality: U8
    export_freezes: F64
    export_quality: U8
    near_midnight: dict[tuple[int, int, str], tuple[float, float]]
    truth: U8
    anomaly_pp: F64
    tech_loss_pct: F64
    exact_loss_pct: F64
    attacks: tuple[Attack, ...]
    faults: tuple[Fault, ...]
    customer_true_kwh: F64 = field(repr=False)
    customer_reported_kwh: F64 = field(repr=False)

    @property
    def meter_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.meters)

    @property
    def area_ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.areas)

    def ratios(self) -> dict[str, float]:
        """CT × PT per meter (PT is 1: low-voltage areas)."""
        return {m.id: float(m.ct_ratio) for m in self.meters}

    def customer_ids(self) -> tuple[str, ...]:
        """Customer meters in meter order (every meter but the masters)."""
        return tuple(m.id for m in self.meters if m.role != "master")

    # ---- writers -----------------------------------------------------------------------------

    def freeze_time(self, day: int) -> dt.datetime:
        """00:00 local of day index ``day`` (aware, in the meters' UTC offset)."""
        zone = dt.timezone(dt.timedelta(hours=self.settings.utc_offset_h))
        return dt.datetime.combine(self.settings.start + dt.timedelta(days=day), dt.time(), zone)

    def write_csv(self, path: Path) -> int:
        """The freezes as ``meter,time,quantity,value`` rows (ISO 8601 with the meters' UTC
        offset, value in kWh with two decimals): the 00:00 read when it was actual, the reads at
        23:40 and 00:20 when it was late, nothing when it was lost. Returns the row count."""
        rows = 0
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["meter", "time", "quantity", "value"])
            for j in range(len(self.days) + 1):
                t0 = self.freeze_time(j)
                for i, meter in enumerate(self.meters):
                    channels = [(IMPORT_Q, self.import_freezes, self.import_quality)]
                    if meter.generating:
                        channels.append((EXPORT_Q, self.export_freezes, self.export_quality))
                    for quantity, freezes, quality in channels:
                        q = int(quality[i, j])
                        if q == Q_A:
                            writer.writerow([meter.id, _iso(t0), quantity, f"{freezes[i, j]:.2f}"])
                            rows += 1
                        elif q == Q_E:
                            before, after = self.near_midnight[(i, j, quantity)]
                            for t, value in ((t0 - _LATE, before), (t0 + _LATE, after)):
                                writer.writerow([meter.id, _iso(t), quantity, f"{value:.2f}"])
                                rows += 1
        return rows

    def write_toml(self, path: Path) -> None:
        """A gateway config ``gateway.config.load_config`` accepts: one DL/T 645 bus per area,
        the meters, one sub-meter group and one area per transformer."""
        lines = [
            "# Generated by hil_tests.synthetic_areas: synthetic transformer areas.",
            f"# seed = {self.seed}",
            "[gateway]",
            'id = "gw-synthetic"',
            'data_dir = "var"',
            "",
            "[mqtt]",
            'host = "127.0.0.1"',
            "",
        ]
        for a in range(len(self.areas)):
            lines += [
                "[[buses]]",
                f'name = "bus-{a:03d}"',
                'protocol = "dlt645"',
                f'port = "/dev/ttySYN{a}"',
                "",
            ]
        for n, meter in enumerate(self.meters):
            lines += [
                "[[meters]]",
                f'id = "{meter.id}"',
                f'bus = "bus-{meter.area:03d}"',
                f'address = "{n + 1:012d}"',
                'profile = "dlt645-2007"',
            ]
            if meter.ct_ratio != 1:
                lines.append(f"ct_ratio = {meter.ct_ratio}")
            if meter.generating:
                lines.append("generating = true")
            lines.append(
                f'meter_class = "{"transformer" if meter.role == "master" else meter.role}"'
            )
            lines.append("")
        for group in self.groups:
            lines += ["[[groups]]", f'id = "{group.id}"', "members = ["]
            for member in group.members:
                lines.append(
                    f'  {{ meter = "{member.meter}", sign = "{member.sign}", '
                    f'direction = "{member.direction}" }},'
                )
            lines += ["]", ""]
        for area in self.areas:
            lines += [
                "[[areas]]",
                f'id = "{area.id}"',
                f'master = "{area.master}"',
                f'subs = "{area.subs}"',
                "",
            ]
        path.write_text("\n".join(lines), encoding="utf-8")

    def write_labels(self, path: Path) -> None:
        """Truth and anomalies as JSON: per area the daily truth, anomaly (pp) and technical
        loss (%); every attack and fault with its parameters."""
        labels = {
            "seed": self.seed,
            "settings": {
                k: (str(v) if isinstance(v, dt.date) else v)
                for k, v in asdict(self.settings).items()
            },
            "days": list(self.days),
            "truth_codes": {str(k): v for k, v in TRUTH_NAMES.items()},
            "areas": {
                area.id: {
                    "truth": [TRUTH_NAMES[int(x)] for x in self.truth[a]],
                    "anomaly_pp": [round(float(x), 4) for x in self.anomaly_pp[a]],
                    "tech_loss_pct": [round(float(x), 4) for x in self.tech_loss_pct[a]],
                }
                for a, area in enumerate(self.areas)
            },
            "attacks": [asdict(x) for x in self.attacks],
            "faults": [asdict(x) for x in self.faults],
        }
        path.write_text(json.dumps(labels, indent=1), encoding="utf-8")


_LATE: Final = dt.timedelta(minutes=20)
#: An anomaly this small is float rounding (time shifting moves energy within the day).
_CLEAN: Final = 1e-6


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _day_shape(intervals: int, base: Sequence[float]) -> F64:
    hours = np.arange(intervals) * 24.0 / intervals
    shape = np.interp(hours, np.arange(25), [*base, base[0]])
    result: F64 = shape / shape.sum()
    return result


_COMMERCIAL_SHAPE: Final = (
    0.15, 0.15, 0.15, 0.15, 0.15, 0.2, 0.35, 0.6, 0.9, 1.0, 1.0, 1.0,
    0.95, 1.0, 1.0, 1.0, 0.95, 0.85, 0.6, 0.4, 0.3, 0.25, 0.2, 0.15,
)  # fmt: skip


def _holiday_mask(days: int, start: dt.date) -> NDArray[np.bool_]:
    doy = (np.arange(days) + start.timetuple().tm_yday - 1) % 365
    mask = np.zeros(days, dtype=bool)
    for lo, hi in _HOLIDAYS_2025:
        mask |= (doy >= lo - 1) & (doy <= hi - 1)
    return mask


def _seasons(days: int, start: dt.date) -> tuple[F64, F64]:
    doy = (np.arange(days) + start.timetuple().tm_yday - 1).astype(np.float64)
    phase = 2 * math.pi * doy / 365.0
    winter = np.clip(np.cos(phase - 2 * math.pi * 15 / 365), 0, None) ** 2
    summer = np.clip(np.cos(phase - 2 * math.pi * 205 / 365), 0, None) ** 3
    return winter, summer


@dataclass
class _AreaData:
    meters: list[_Meter]
    group: _Group
    area: _Area
    import_freezes: F64
    import_quality: U8
    export_freezes: F64
    export_quality: U8
    near: dict[tuple[int, int, str], tuple[float, float]]
    truth: U8
    anomaly_pp: F64
    tech_pct: F64
    exact_pct: F64
    attacks: list[Attack]
    faults: list[Fault]
    true_kwh: F64
    reported_kwh: F64


def _attack_intervals(
    rng: np.random.Generator,
    model: str,
    true: F64,
    start: int,
    end: int,
    class_shape: F64,
    clean_daily: float,
) -> tuple[F64, dict[str, float]]:
    """Reported intervals (days, intervals) of one customer under ``model`` over [start, end)."""
    reported = true.copy()
    span = slice(start, end)
    per_day = true.shape[1]
    params: dict[str, float] = {}
    if model == "zeroing":
        reported[span] = 0.0
    elif model == "scaling":
        alpha = float(rng.uniform(0.1, 0.7))
        params["alpha"] = alpha
        reported[span] *= alpha
    elif model == "partial_day":
        first = int(rng.integers(0, 24))
        hours = int(rng.integers(4, 11))
        params.update(start_hour=first, hours=hours)
        idx = (np.arange(hours * per_day // 24) + first * per_day // 24) % per_day
        reported[span, idx] = 0.0
    elif model == "capping":
        clean = true[:start].ravel()
        clean = clean[clean > 0]
        q = float(rng.uniform(0.3, 0.6))
        cap = float(np.quantile(clean, q)) if clean.size else 0.0
        params.update(quantile=q, cap_kwh=cap)
        reported[span] = np.minimum(reported[span], cap)
    elif model == "progressive":
        alpha_min = float(rng.uniform(0.1, 0.5))
        ramp = int(rng.integers(30, 91))
        params.update(alpha_min=alpha_min, ramp_days=ramp)
        k = np.arange(end - start, dtype=np.float64)
        alpha = 1.0 - (1.0 - alpha_min) * np.clip((k + 1) / ramp, 0.0, 1.0)
        reported[span] *= alpha[:, None]
    elif model == "time_shift":
        shift = per_day // 2
        params["shift_hours"] = 12.0
        reported[span] = np.roll(true[span], shift, axis=1)
    elif model == "profile_substitution":
        level = float(rng.uniform(0.2, 0.5))
        params["level"] = level
        reported[span] = class_shape[None, :] * (clean_daily * level)
    else:  # pragma: no cover - the model list is fixed
        raise ValueError(model)
    return reported, params


def _generate_area(seed: int, a: int, s: SyntheticSettings) -> _AreaData:
    rng = np.random.default_rng([seed, a])
    days, per_day = s.days, s.intervals_per_day
    area_id = f"tq-{a:03d}"
    n = int(rng.integers(s.customers[0], s.customers[1] + 1))
    commercial = rng.random(n) < 0.15
    generating = ~commercial & (rng.random(n) < s.pv_share)
    base = np.where(
        commercial, rng.lognormal(math.log(35.0), 0.6, n), rng.lognormal(math.log(7.0), 0.55, n)
    )
    base = np.clip(base, 1.0, 300.0)

    # Daily energy per customer: season × weather × weekday × holiday × noise × honest changes.
    winter, summer = _seasons(days, s.start)
    heat = rng.uniform(0.0, 0.6, n)
    cool = rng.uniform(0.0, 0.6, n)
    weather = np.zeros(days)
    for d in range(1, days):
        weather[d] = 0.8 * weather[d - 1] + rng.normal(0.0, 0.04)
    weekday = (np.arange(days) + s.start.weekday()) % 7
    weekend = weekday >= 5
    holiday = _holiday_mask(days, s.start)
    day_factor = (
        1.0
        + heat[:, None] * winter[None, :]
        + cool[:, None] * summer[None, :]
        + (0.5 + heat[:, None] + cool[:, None]) * weather[None, :]
    )
    day_factor *= np.where(
        commercial[:, None],
        np.where(weekend, 0.55, 1.0)[None, :] * np.where(holiday, 0.35, 1.0)[None, :],
        np.where(weekend, 1.08, 1.0)[None, :] * np.where(holiday, 1.12, 1.0)[None, :],
    )
    day_factor *= rng.lognormal(0.0, 0.12, (n, days))
    for c in range(n):
        if commercial[c]:
            continue
        for _ in range(rng.poisson(1.0)):
            d0 = int(rng.integers(0, days))
            day_factor[c, d0 : d0 + int(rng.integers(3, 15))] *= 0.15
    movers = rng.random(n)
    for c in np.flatnonzero(movers < 0.02):  # moves out
        day_factor[c, int(rng.integers(30, days)) :] *= 0.05
    for c in np.flatnonzero((movers >= 0.02) & (movers < 0.04)):  # moves in
        day_factor[c, : int(rng.integers(30, days))] *= 0.05
    daily = base[:, None] * np.maximum(day_factor, 0.0)

    # Intervals: class shape shifted per customer, multiplicative noise, scaled to the day.
    res_shape = _day_shape(per_day, RESIDENTIAL_DAY_SHAPE)
    com_shape = _day_shape(per_day, _COMMERCIAL_SHAPE)
    shifts = rng.integers(-4, 5, n)
    shapes = np.stack(
        [np.roll(com_shape if commercial[c] else res_shape, int(shifts[c])) for c in range(n)]
    )
    noise = rng.lognormal(0.0, 0.3, (n, days, per_day)) * shapes[:, None, :]
    noise /= noise.sum(axis=2, keepdims=True)
    true = daily[:, :, None] * noise  # (customers, days, intervals) kWh

    # Rooftop PV: export around midday, larger in summer, cut by cloudy days.
    export_true = np.zeros((n, days, per_day))
    hours = np.arange(per_day) * 24.0 / per_day
    bell = np.clip(np.cos((hours - 12.5) / 4.0 * math.pi / 2), 0, None) ** 2
    bell /= bell.sum()
    clouds = np.clip(rng.normal(0.75, 0.2, days), 0.1, 1.0)
    for c in np.flatnonzero(generating):
        size = rng.uniform(3.0, 10.0)
        export_true[c] = (size * (0.7 + 0.5 * summer) * clouds)[:, None] * bell[None, :]

    # Attacks and faults.
    reported = true.copy()
    attacks: list[Attack] = []
    faults: list[Fault] = []
    earliest = s.first_anomaly_day
    latest = max(earliest + 1, days - 30)
    if rng.random() < s.theft_area_share and days > earliest + 30:
        # Larger consumers have more to gain: thieves are drawn in proportion to consumption.
        candidates = np.flatnonzero(~generating)
        weight = base[candidates] / base[candidates].sum()
        count = min(len(candidates), int(rng.integers(1, s.max_thieves + 1)))
        thieves = rng.choice(candidates, size=count, replace=False, p=weight)
        for c in thieves:
            model = ATTACK_MODELS[int(rng.integers(0, len(ATTACK_MODELS)))]
            start = int(rng.integers(earliest, latest))
            end = days if rng.random() < 0.5 else min(days, start + int(rng.integers(30, 201)))
            shape = com_shape if commercial[c] else res_shape
            clean_daily = float(np.median(true[c, :start].sum(axis=1)))
            reported[c], params = _attack_intervals(
                rng, model, true[c], start, end, shape, clean_daily
            )
            attacks.append(
                Attack(f"{area_id}-c{c:03d}", area_id, model, start, end, params, math.nan)
            )
    master_factor = np.ones(days)
    if rng.random() < s.fault_area_share and days > earliest + 30:
        start = int(rng.integers(earliest, latest))
        if rng.random() < 0.5:
            end = min(days, start + int(rng.integers(5, 61)))
            factor = float(rng.uniform(0.6, 0.9))
            master_factor[start:end] = factor
            faults.append(Fault(f"{area_id}-m", area_id, "master_ct_fault", start, end, factor))
        else:
            c = int(rng.choice(np.flatnonzero(~generating)))
            end = min(days, start + int(rng.integers(10, 121)))
            factor = float(rng.uniform(1.5, 3.0))
            if not any(x.meter == f"{area_id}-c{c:03d}" for x in attacks):
                reported[c, start:end] *= factor
                faults.append(
                    Fault(f"{area_id}-c{c:03d}", area_id, "fast_meter", start, end, factor)
                )

    # Technical loss on the area's net load per interval.
    net = true.sum(axis=0) - export_true.sum(axis=0)  # (days, intervals)
    mean_day = float(net.sum(axis=1).mean())
    f0 = float(rng.uniform(0.02, 0.05))
    iron_share = float(rng.uniform(0.3, 0.5))
    iron = iron_share * f0 * mean_day / per_day
    copper_k = (1.0 - iron_share) * f0 * mean_day / float((net**2).sum(axis=1).mean())
    master_true = net + iron + copper_k * net**2
    master_measured = master_true * master_factor[:, None]

    master_day_true = master_true.sum(axis=1)
    master_day = master_measured.sum(axis=1)
    sub_true = true.sum(axis=2).sum(axis=0) - export_true.sum(axis=2).sum(axis=0)
    sub_reported = reported.sum(axis=2).sum(axis=0) - export_true.sum(axis=2).sum(axis=0)
    tech_pct = (master_day_true - sub_true) / master_day_true * 100.0
    exact_pct = (master_day - sub_reported) / master_day * 100.0
    anomaly = exact_pct - tech_pct
    stolen = (true.sum(axis=2) - reported.sum(axis=2)) / master_day_true[None, :] * 100.0
    attacks = [
        Attack(
            x.meter, x.area, x.model, x.start, x.end, x.params,
            float(stolen[int(x.meter[-3:]), x.start : x.end].mean()),
        )
        for x in attacks
    ]  # fmt: skip

    # Registers at each freeze: cumulative energy at the meter's skewed midnight.
    ct = int(rng.choice([40, 60, 80, 100, 120]))
    meters = [_Meter(f"{area_id}-m", a, "master", False, ct)] + [
        _Meter(
            f"{area_id}-c{c:03d}",
            a,
            "commercial" if commercial[c] else "residential",
            bool(generating[c]),
            1,
        )
        for c in range(n)
    ]
    series = np.concatenate([master_measured[None] / ct, reported], axis=0)  # (meters, days, k)
    exports = np.concatenate([np.zeros((1, days, per_day)), export_true], axis=0)
    skew_min = (
        rng.normal(0.0, 1.5, len(meters))[:, None]
        + rng.normal(0, 0.01, len(meters))[:, None] * np.arange(days + 1)[None, :]
    )
    start_reg = rng.uniform(1000.0, 50000.0, len(meters))
    imp, imp_before, imp_after = _freezes(series, skew_min, start_reg, per_day)
    exp_, exp_before, exp_after = _freezes(exports, skew_min, start_reg * 0.1, per_day)

    # Which freezes arrived: lost reads, communication outages, late reads (interpolated).
    imp_q = _read_quality(rng, len(meters), days + 1, s)
    exp_q = np.where(np.asarray([m.generating for m in meters])[:, None], imp_q, Q_N).astype(
        np.uint8
    )
    near: dict[tuple[int, int, str], tuple[float, float]] = {}
    import_freezes = np.floor(imp * 100.0) / 100.0
    export_freezes = np.floor(exp_ * 100.0) / 100.0
    for i, j in zip(*np.nonzero(imp_q == Q_E), strict=True):
        for quantity, values, before, after, q in (
            (IMPORT_Q, import_freezes, imp_before, imp_after, imp_q),
            (EXPORT_Q, export_freezes, exp_before, exp_after, exp_q),
        ):
            if q[i, j] != Q_E:
                continue
            b = math.floor(before[i, j] * 100.0) / 100.0
            f = math.floor(after[i, j] * 100.0) / 100.0
            near[(int(i) + 0, int(j), quantity)] = (b, f)
            values[i, j] = b + (f - b) * 0.5  # what linear interpolation to 00:00 gives
    import_freezes = np.where(imp_q == Q_N, np.nan, import_freezes)
    export_freezes = np.where(exp_q == Q_N, np.nan, export_freezes)

    # Truth.
    actual = imp_q == Q_A
    channel_ok = actual[1:, :-1] & actual[1:, 1:]  # customers' import channels
    exp_ok = (exp_q[1:, :-1] == Q_A) & (exp_q[1:, 1:] == Q_A)
    channels = n + int(generating.sum())
    covered = channel_ok.sum(axis=0) + exp_ok[generating].sum(axis=0)
    coverage = covered / channels
    master_ok = actual[0, :-1] & actual[0, 1:]
    truth = np.full(days, AMBIGUOUS, dtype=np.uint8)
    truth[np.abs(anomaly) < _CLEAN] = QUALIFIED
    truth[anomaly >= s.high_pp] = HIGH
    truth[anomaly <= -s.high_pp] = NEGATIVE
    truth[exact_pct > 10.0] = HIGH
    truth[exact_pct < -1.0] = NEGATIVE
    truth[~master_ok | (coverage < 0.98)] = UNCALCULABLE

    members = [_Member(f"{area_id}-c{c:03d}") for c in range(n)] + [
        _Member(f"{area_id}-c{c:03d}", "-", "export") for c in np.flatnonzero(generating)
    ]
    return _AreaData(
        meters=meters,
        group=_Group(f"{area_id}-subs", tuple(members)),
        area=_Area(area_id, f"{area_id}-m", f"{area_id}-subs"),
        import_freezes=import_freezes,
        import_quality=imp_q,
        export_freezes=export_freezes,
        export_quality=exp_q,
        near=near,
        truth=truth,
        anomaly_pp=anomaly,
        tech_pct=tech_pct,
        exact_pct=exact_pct,
        attacks=attacks,
        faults=faults,
        true_kwh=true.sum(axis=2),
        reported_kwh=reported.sum(axis=2),
    )


def _freezes(series: F64, skew_min: F64, start: F64, per_day: int) -> tuple[F64, F64, F64]:
    """Registers (meters, days + 1) at each midnight shifted by the meter's clock skew
    (minutes), and at 23:40 / 00:20 (for late reads), from interval energies (meters, days, k)."""
    meters, days, _ = series.shape
    flat = series.reshape(meters, days * per_day)
    cum = np.concatenate([np.zeros((meters, 1)), np.cumsum(flat, axis=1)], axis=1)
    minutes_per_interval = 1440.0 / per_day
    boundary = np.arange(days + 1) * per_day

    def at(offset_min: F64) -> F64:
        pos = boundary[None, :] + offset_min / minutes_per_interval
        pos = np.clip(pos, 0, days * per_day)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, days * per_day)
        frac = pos - lo
        lo_v = np.take_along_axis(cum, lo, axis=1)
        hi_v = np.take_along_axis(cum, hi, axis=1)
        result: F64 = start[:, None] + lo_v + (hi_v - lo_v) * frac
        return result

    return at(skew_min), at(skew_min - 20.0), at(skew_min + 20.0)


def _read_quality(rng: np.random.Generator, meters: int, columns: int, s: SyntheticSettings) -> U8:
    quality = np.zeros((meters, columns), dtype=np.uint8)
    quality[rng.random((meters, columns)) < s.late_read_rate] = Q_E
    quality[rng.random((meters, columns)) < s.missing_read_rate] = Q_N
    for i in range(meters):
        for _ in range(rng.poisson(s.outages_per_meter_year * columns / 365.0)):
            j = int(rng.integers(0, columns))
            quality[i, j : j + int(rng.integers(1, 6))] = Q_N
    return quality


def generate(seed: int, settings: SyntheticSettings | None = None) -> SyntheticAreas:
    """Generate ``settings.areas`` areas over ``settings.days`` days, deterministically."""
    s = settings or SyntheticSettings()
    if s.days < 2 or s.areas < 1:
        raise ValueError("need at least 1 area and 2 days")
    parts = [_generate_area(seed, a, s) for a in range(s.areas)]
    return SyntheticAreas(
        seed=seed,
        settings=s,
        days=tuple(str(s.start + dt.timedelta(days=d)) for d in range(s.days)),
        meters=tuple(m for p in parts for m in p.meters),
        groups=tuple(p.group for p in parts),
        areas=tuple(p.area for p in parts),
        import_freezes=np.concatenate([p.import_freezes for p in parts]),
        import_quality=np.concatenate([p.import_quality for p in parts]),
        export_freezes=np.concatenate([p.export_freezes for p in parts]),
        export_quality=np.concatenate([p.export_quality for p in parts]),
        near_midnight=_offset_near(parts),
        truth=np.stack([p.truth for p in parts]),
        anomaly_pp=np.stack([p.anomaly_pp for p in parts]),
        tech_loss_pct=np.stack([p.tech_pct for p in parts]),
        exact_loss_pct=np.stack([p.exact_pct for p in parts]),
        attacks=tuple(x for p in parts for x in p.attacks),
        faults=tuple(x for p in parts for x in p.faults),
        customer_true_kwh=np.concatenate([p.true_kwh for p in parts]),
        customer_reported_kwh=np.concatenate([p.reported_kwh for p in parts]),
    )


def _offset_near(parts: Sequence[_AreaData]) -> dict[tuple[int, int, str], tuple[float, float]]:
    out: dict[tuple[int, int, str], tuple[float, float]] = {}
    offset = 0
    for p in parts:
        for (i, j, q), value in p.near.items():
            out[(i + offset, j, q)] = value
        offset += len(p.meters)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hil_tests.synthetic_areas",
        description="Write synthetic transformer areas: reads CSV, gateway TOML, labels JSON.",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--areas", type=int, default=3)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--theft-area-share", type=float, default=SyntheticSettings.theft_area_share
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    data = generate(
        args.seed,
        SyntheticSettings(areas=args.areas, days=args.days, theft_area_share=args.theft_area_share),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = data.write_csv(args.out / "reads.csv")
    data.write_toml(args.out / "gateway.toml")
    data.write_labels(args.out / "labels.json")
    print(
        f"{len(data.areas)} areas, {len(data.meters)} meters, {len(data.days)} days, {rows} reads, "
        f"{len(data.attacks)} attacks, {len(data.faults)} faults → {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
