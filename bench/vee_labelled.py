"""A labelled register data set, run through ``gwtool vee``, scored against its labels (issue 13).

    python bench/vee_labelled.py --meters 40 --days 35 --seed 1 [--seed 2 ...]

The generator is independent of the rules it scores: it knows nothing of the engine's
parameters. Per meter: a daily level (log-normal across meters), a weekly shape (Saturday and
Sunday × 0.8–1.3 of a weekday, drawn per meter), a season (a yearly sinusoid of ±10–25 % with a
random phase), the calendar's public holidays behaving like Sundays, an intraday profile (morning
and evening peaks of random weight and time over a base load), and AR(1) noise on the log of each
interval's energy (φ 0.6–0.9) plus a day-level AR(1) (weather). The register is the running sum,
rounded to 0.01 kWh. The start date is drawn from the seed, so the season and holidays move.

Labelled faults, on actual reads at random positions, each with clean reads around it:

* ``spike`` — one read 2–40 kWh (and ≥ 10 intervals' worth) above the true register;
* ``dip`` — one read 1–20 kWh below the previous read; the next reads are true;
* ``decrease`` — the register steps back 5–50 kWh for good (a register preset or rollback);
* ``rollover`` — meters ``r-*`` have a 6-digit register that wraps at 10^6 kWh;
* ``duplicate`` — a second row for the same meter and time, 0.05–2 kWh off;
* ``gap_short`` (1–8 reads), ``gap_long`` (9–80 reads), ``gap_day`` (a whole local day): rows
  that are not there.

Scores (what issue 13 asks to show): spikes flagged as the bad read (``N`` with reason 74 and an
``S`` row at the same time); reads after a spike left ``A`` (the next three reads); estimates and
substitutes outside the actual reads around them (count); the clean-read flag rate (reads that
are not faults, nor the reads a decrease takes to re-baseline: any reason or a quality other
than ``A``); recall per fault type (spike/dip/decrease/duplicate: the fault's read is not
``A``; rollover: the wrapping read is ``A`` without reason 18; gaps: every missing interval has
an ``E`` row); whole-day estimate error against a straight line between the bracketing reads
(Σ|estimate − truth| / Σ|line − truth| over the intervals of whole missing days).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_rules.calendar import INTERVAL_MS, Calendar, DayType, day_number
from firmware_tools.vee_command import run_vee

S = 96
PRIMARY = "energy.active.import.total"
MODULUS = 1_000_000.0
RULES_TOML = """[vee]
[vee.classes.wrapping]
register_digits = 6
members = ["r-*"]
"""
KINDS = ("spike", "dip", "decrease", "rollover", "duplicate", "gap_short", "gap_long", "gap_day")


@dataclass
class Labelled:
    """The generated set: CSV rows, the labels, and the truth to score estimates against."""

    rows: list[tuple[str, int, float]] = field(default_factory=list)  # meter, t_ms, value
    faults: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    missing: dict[str, list[tuple[str, list[int]]]] = field(
        default_factory=lambda: defaultdict(list))
    excluded: set[tuple[str, int]] = field(default_factory=set)  # not clean, not faults
    after_spike: list[tuple[str, int]] = field(default_factory=list)
    truth: dict[str, dict[int, float]] = field(default_factory=dict)  # register, unwrapped


def _profile(rng: np.random.Generator) -> np.ndarray:
    hours = (np.arange(S) + 0.5) / 4
    base = rng.uniform(0.3, 0.7)
    morning = rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((hours - rng.uniform(6.5, 9)) / 1.2) ** 2)
    evening = rng.uniform(0.6, 1.5) * np.exp(-0.5 * ((hours - rng.uniform(18, 21)) / 1.8) ** 2)
    shape = base + morning + evening
    return np.asarray(shape / shape.sum())


def _place(rng: np.random.Generator, busy: np.ndarray, width: int, margin: int) -> int | None:
    """A free position for a fault ``width`` reads wide, ``margin`` clean reads either side."""
    for _ in range(50):
        k = int(rng.integers(S, busy.size - width - margin))
        if not busy[k - margin:k + width + margin].any():
            busy[k - margin:k + width + margin] = True
            return k
    return None


def generate(meters: int, days: int, seed: int, calendar: Calendar) -> Labelled:
    rng = np.random.default_rng(seed)
    first = dt.date(2025, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    first_day = day_number(first)
    types = calendar.day_types(first_day, days)
    out = Labelled()
    for n in range(meters):
        wrapping = n % 10 == 9
        meter = f"r-{n:03d}" if wrapping else f"m-{n:03d}"
        level = float(rng.lognormal(np.log(12.0), 0.6))
        week = {DayType.WEEKDAY: 1.0, DayType.SATURDAY: rng.uniform(0.8, 1.3),
                DayType.SUNDAY: rng.uniform(0.8, 1.3)}
        week[DayType.HOLIDAY] = week[DayType.SUNDAY]
        amplitude, phase = rng.uniform(0.1, 0.25), rng.uniform(0, 2 * np.pi)
        shape = _profile(rng)
        phi, sigma = rng.uniform(0.6, 0.9), rng.uniform(0.15, 0.35)
        noise = np.empty(days * S)
        e = 0.0
        for k in range(noise.size):
            e = phi * e + sigma * np.sqrt(1 - phi * phi) * rng.standard_normal()
            noise[k] = e
        weather = 0.0
        energy = np.empty(days * S)
        for d in range(days):
            weather = 0.7 * weather + 0.08 * rng.standard_normal()
            season = 1 + amplitude * np.sin(2 * np.pi * (first_day + d) / 365.25 + phase)
            day_kwh = level * week[DayType(int(types[d]))] * season * np.exp(weather)
            energy[d * S:(d + 1) * S] = day_kwh * shape * np.exp(noise[d * S:(d + 1) * S])
        start = MODULUS - rng.uniform(5, 25) * level if wrapping else rng.uniform(1e3, 9e4)
        truth = np.round(start + np.cumsum(energy), 2)
        read = truth.copy()
        present = np.ones(truth.size, dtype=bool)
        t0 = calendar.read_time_ms(first_day * S)
        out.truth[meter] = {t0 + k * INTERVAL_MS: float(truth[k]) for k in range(truth.size)}
        busy = np.zeros(truth.size, dtype=bool)  # slots a fault already uses, with margins
        busy[:S // 2] = True  # the first read is the baseline: leave the start alone
        extra: list[tuple[int, float]] = []
        for kind in ("decrease", "spike", "dip", "duplicate", "gap_short", "gap_long", "gap_day"):
            count = {"spike": 2, "dip": 1, "duplicate": 1, "gap_short": 2, "gap_long": 1,
                     "gap_day": 1 if rng.random() < 0.5 else 0, "decrease": 1 if rng.random() < 0.3
                     else 0}[kind]
            for _ in range(count):
                if kind == "gap_day":
                    d = int(rng.integers(8, days - 2))
                    if busy[d * S - 4:(d + 1) * S + 4].any():
                        continue
                    busy[d * S - 4:(d + 1) * S + 4] = True
                    present[d * S:(d + 1) * S] = False
                    out.missing[kind].append((meter, [t0 + j * INTERVAL_MS
                                                      for j in range(d * S, (d + 1) * S)]))
                    continue
                width = {"gap_short": int(rng.integers(1, 9)), "gap_long": int(rng.integers(9, 81))
                         }.get(kind, 1)
                k = _place(rng, busy, width, margin=8 if kind == "decrease" else 4)
                if k is None:
                    continue
                t = t0 + k * INTERVAL_MS
                if kind == "spike":
                    size = round(max(rng.uniform(2, 40), 10 * level / S * rng.uniform(1, 3)), 2)
                    if truth[k] + size >= MODULUS > truth[k]:
                        continue  # a spike that wraps the register is a rollover, not scored
                    read[k] = truth[k] + size
                    out.after_spike.extend((meter, t + j * INTERVAL_MS) for j in (1, 2, 3))
                elif kind == "dip":
                    read[k] = round(truth[k - 1] - rng.uniform(1, 20), 2)
                elif kind == "duplicate":
                    extra.append((k, round(truth[k] + rng.uniform(0.05, 2.0), 2)))
                elif kind == "decrease":
                    step = round(rng.uniform(5, 50), 2)
                    read[k:] -= step
                    truth[k:] -= step  # the register really is lower from here on
                    out.truth[meter].update({t0 + j * INTERVAL_MS: float(truth[j])
                                             for j in range(k, truth.size)})
                    out.excluded.update((meter, t + j * INTERVAL_MS) for j in range(1, 8))
                    # the day's intervals no longer add up to its register delta (reason 45)
                    closing = (k // S) * S + S - 1
                    out.excluded.add((meter, t0 + closing * INTERVAL_MS))
                else:
                    present[k:k + width] = False
                    out.missing[kind].append((meter, [t + j * INTERVAL_MS for j in range(width)]))
                    continue
                out.faults[kind].append((meter, t))
        if wrapping:
            wraps = np.flatnonzero(np.diff(np.floor(read / MODULUS)) > 0) + 1
            out.faults["rollover"].extend((meter, t0 + int(k) * INTERVAL_MS) for k in wraps
                                          if present[k] and not busy[k])
        shown = np.mod(read, MODULUS)
        for k in np.flatnonzero(present).tolist():
            out.rows.append((meter, t0 + k * INTERVAL_MS, float(np.round(shown[k], 2))))
        for k, value in extra:
            out.rows.append((meter, t0 + k * INTERVAL_MS, float(np.mod(value, MODULUS))))
    return out


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(labelled: Labelled, workdir: Path) -> dict[tuple[str, str], list[tuple[str, float, str]]]:
    """Write the rows, run ``gwtool vee`` on them; returns (meter, iso time) → [(quality,
    value, reasons)] for the primary register."""
    source, target, rules = workdir / "reads.csv", workdir / "out.csv", workdir / "rules.toml"
    rules.write_text(RULES_TOML)
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["meter", "time", "quantity", "value"])
        for meter, t_ms, value in sorted(labelled.rows, key=lambda r: (r[1], r[0])):
            writer.writerow([meter, _iso(t_ms), PRIMARY, f"{value:.2f}"])
    with (workdir / "stderr.txt").open("w") as errors:
        run_vee(source, target, rules, errors)
    verdicts: dict[tuple[str, str], list[tuple[str, float, str]]] = defaultdict(list)
    with target.open(newline="") as handle:
        for row in csv.DictReader(handle):
            verdicts[(row["meter"], row["time"])].append(
                (row["quality"], float(row["value"]), row["reasons"]))
    return verdicts


def key(meter: str, t_ms: int) -> tuple[str, str]:
    return meter, _iso(t_ms)


def score(labelled: Labelled, verdicts: dict[tuple[str, str], list[tuple[str, float, str]]]
          ) -> dict[str, float]:
    result: dict[str, float] = {}
    spikes = labelled.faults["spike"]
    caught = sum(1 for m, t in spikes if any(q == "N" and "74" in r.split(";")
                                            for q, _, r in verdicts[key(m, t)])
                 and any(q == "S" for q, _, _ in verdicts[key(m, t)]))
    result["spike_as_bad_read_pct"] = 100.0 * caught / max(1, len(spikes))
    after = [all(q == "A" and not r for q, _, r in verdicts[key(m, t)])
             for m, t in labelled.after_spike if verdicts.get(key(m, t))]
    result["after_spike_A_pct"] = 100.0 * sum(after) / max(1, len(after))
    # recall per fault type
    for kind in ("spike", "dip", "decrease", "duplicate"):
        hits = [any(q != "A" for q, _, _ in verdicts[key(m, t)]) for m, t in labelled.faults[kind]]
        result[f"recall_{kind}_pct"] = 100.0 * sum(hits) / max(1, len(hits))
        result[f"n_{kind}"] = len(hits)
    rolls = [all(q == "A" and "18" not in r.split(";") for q, _, r in verdicts[key(m, t)])
             for m, t in labelled.faults["rollover"]]
    result["recall_rollover_pct"] = 100.0 * sum(rolls) / max(1, len(rolls))
    result["n_rollover"] = len(rolls)
    for kind in ("gap_short", "gap_long", "gap_day"):
        slots = [any(q == "E" for q, _, _ in verdicts[key(m, t)])
                 for m, ts in labelled.missing[kind] for t in ts]
        result[f"recall_{kind}_pct"] = 100.0 * sum(slots) / max(1, len(slots))
        result[f"n_{kind}"] = len(labelled.missing[kind])
    # clean reads
    fault_keys = {key(m, t) for kind in labelled.faults for m, t in labelled.faults[kind]}
    excluded = {key(m, t) for m, t in labelled.excluded}
    clean = flagged = 0
    for meter, t_ms, _ in labelled.rows:
        k = key(meter, t_ms)
        if k in fault_keys or k in excluded:
            continue
        clean += 1
        flagged += any(q != "A" or r for q, _, r in verdicts[k] if q in ("A", "N"))
    result["clean_reads"] = clean
    result["clean_flag_rate_pct"] = 100.0 * flagged / max(1, clean)
    # estimates and substitutes against the actual reads around them (per meter, in time)
    outside = estimates = 0
    by_meter: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for (meter, iso), items in verdicts.items():
        for q, value, _ in items:
            by_meter[meter].append((iso, q, value))
    for items in by_meter.values():
        items.sort()
        actual = [(i, v) for i, q, v in items if q == "A"]
        times = [i for i, _ in actual]
        for iso, q, value in items:
            if q not in ("E", "S"):
                continue
            estimates += 1
            j = bisect.bisect_left(times, iso)
            lo = actual[j - 1][1] if j > 0 else None
            hi_j = bisect.bisect_right(times, iso)
            hi = actual[hi_j][1] if hi_j < len(actual) else None
            if lo is None or hi is None:
                continue
            eps = 0.006
            inside = (lo - eps <= value <= hi + eps) if lo <= hi else (
                value >= lo - eps or value <= hi + eps)
            outside += not inside
    result["estimates"] = estimates
    result["estimates_outside_bracket"] = outside
    # whole-day estimates against a straight line between the bracketing reads
    err = line_err = 0.0
    for meter, ts in labelled.missing["gap_day"]:
        truth = labelled.truth[meter]
        before, after = ts[0] - INTERVAL_MS, ts[-1] + INTERVAL_MS
        values = []
        for t in [before, *ts, after]:
            got = [v for q, v, _ in verdicts.get(key(meter, t), []) if q in ("A", "E")]
            values.append(got[0] if got else np.nan)
        est = np.unwrap(np.asarray(values), period=MODULUS)
        if np.isnan(est).any():
            continue
        true = np.array([truth[t] for t in [before, *ts, after]])
        est_e, true_e = np.diff(est), np.diff(true)
        line_e = np.full(true_e.size, (est[-1] - est[0]) / true_e.size)
        err += float(np.abs(est_e - true_e).sum())
        line_err += float(np.abs(line_e - true_e).sum())
    result["whole_day_error_ratio"] = err / line_err if line_err else float("nan")
    return result


GOALS = {
    "spike_as_bad_read_pct": (">=", 99.0),
    "after_spike_A_pct": (">=", 99.9),
    "estimates_outside_bracket": ("<=", 0),
    "clean_flag_rate_pct": ("<=", 0.1),
    "recall_spike_pct": (">=", 99.0),
    "recall_dip_pct": (">=", 99.0),
    "recall_decrease_pct": (">=", 99.0),
    "recall_duplicate_pct": (">=", 99.0),
    "recall_rollover_pct": (">=", 99.0),
    "recall_gap_short_pct": (">=", 99.0),
    "recall_gap_long_pct": (">=", 99.0),
    "recall_gap_day_pct": (">=", 99.0),
    "whole_day_error_ratio": ("<=", 0.85),
}


def misses(result: dict[str, float]) -> list[str]:
    """The goals a result misses, as text (empty: every goal met)."""
    bad = []
    for name, (op, goal) in GOALS.items():
        value = result[name]
        ok = value >= goal if op == ">=" else value <= goal
        if not ok:
            bad.append(f"{name} = {value:g} (goal {op} {goal:g})")
    return bad


def evaluate(meters: int, days: int, seed: int) -> dict[str, float]:
    calendar = Calendar()
    labelled = generate(meters, days, seed, calendar)
    with tempfile.TemporaryDirectory() as tmp:
        verdicts = run(labelled, Path(tmp))
    return score(labelled, verdicts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=40)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--seed", type=int, action="append", help="repeat for several seeds")
    args = parser.parse_args()
    failed = False
    for seed in args.seed or [1]:
        result = evaluate(args.meters, args.days, seed)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
        bad = misses(result)
        failed |= bool(bad)
        print("  goals: " + ("all met" if not bad else "MISSED " + "; ".join(bad)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
