"""The daemon's VEE stage (gateway/pipeline/vee_stage.py): what it adds per poll and per interval boundary.

    .venv/bin/python bench/bench_vee_stage.py [--meters 200] [--kernels numpy|numba]

A stage for ``--meters`` meters on the production grid (15 minutes, snap 60 s), twelve intervals:
each boundary gets one grid read per meter (5 s after it, one committer batch), then the tick
that grades every meter (61 s after it). Reported: the batch of grid reads (placement only), the
boundary tick (the engine over every meter, yesterday + today), and one poll whose register read
is off the grid — what almost every poll costs: its voltages and tariff registers through the
engine's sparse checks (best of 5 × 2,000, the least disturbed by other load on the machine).
Polls carry what the shipped DL/T 645 profile reads: total + 4 tariffs, 3 voltages, power.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.config.vee import vee_config_from_table
from gateway.pipeline.vee_stage import GRID_QUANTITY, VeeStage
from protocols.payload import ReadRecord

INTERVAL_MS = 900_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--kernels", choices=("numpy", "numba"), default="numpy")
    args = parser.parse_args()
    ids = [f"m-{i}" for i in range(args.meters)]
    start = 1_800_000_000_000 - 1_800_000_000_000 % INTERVAL_MS + 40 * INTERVAL_MS
    stage = VeeStage(vee_config_from_table({"kernels": args.kernels}), ids, start)

    def batch(t_ms: int, k: int) -> list[tuple[PollResult, list[ReadRecord]]]:
        out = []
        for i, meter in enumerate(ids):
            value = Decimal(1000 + i) + Decimal(k) / 4
            tariff = (value / 4).quantize(Decimal("0.01"))
            records = [ReadRecord(GRID_QUANTITY, value, "kWh", t_ms)]
            records += [ReadRecord(f"energy.active.import.t{n}", tariff, "kWh", t_ms)
                        for n in range(1, 5)]
            records += [ReadRecord(f"voltage.{p}", 229.5, "V", t_ms) for p in "abc"]
            records.append(ReadRecord("power.active.total", 1.25, "kW", t_ms))
            values = tuple(PolledValue(r.q, r.val, r.unit, t_ms) for r in records)
            out.append((PollResult(meter, "rs485-1", t_ms, t_ms, True, values), records))
        return out

    placing, ticks = [], []
    for k in range(12):
        boundary = start + k * INTERVAL_MS
        polled = batch(boundary + 5_000, k)
        t0 = time.perf_counter()
        stage.apply(polled, boundary + 5_000)
        placing.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stage.apply([], boundary + 61_000)
        ticks.append(time.perf_counter() - t0)
    off_grid = batch(start + 12 * INTERVAL_MS + 300_000, 99)[:1]
    now = start + 12 * INTERVAL_MS + 300_000
    stage.apply(off_grid, now)
    per_poll = min(timeit.repeat(lambda: stage.apply(off_grid, now), number=2000, repeat=5)) / 2000
    tick = statistics.median(ticks)
    print(f"VEE stage, {args.meters} meters, {args.kernels} kernels "
          f"({stage.stats.evaluations} evaluations)")
    print(f"  grid reads of all meters, one batch: median {statistics.median(placing) * 1e3:.2f} ms"
          f" ({statistics.median(placing) / args.meters * 1e6:.1f} µs per read)")
    print(f"  boundary tick (grade every meter):   median {tick * 1e3:.1f} ms, "
          f"max {max(ticks) * 1e3:.1f} ms — {tick / 900 * 100:.4f} % of a core at one per 15 min")
    print(f"  one poll off the grid:               {per_poll * 1e6:.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
