"""What one day of the daemon's reconciliation costs at production scale.

    .venv/bin/python -m bench.bench_area_reconciler [--customers 100] [--days 400]

One synthetic area (hil_tests.synthetic_areas) with a year of daily freezes in a real store;
the daemon's :class:`gateway.analytics.areas.AreaReconciler` computes the newest day (the
pipeline over ``history_days`` of freezes, the store reads included) — what the gateway does
once a day per area, in a worker thread. Prints the time per area-day after a warm-up call
(the first call also loads numba's cached machine code).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

from gateway.analytics.areas import EXPORT_Q, IMPORT_Q, AreaReconciler
from gateway.config import load_config
from gateway.pipeline.outbox import OutboxWriter
from gateway.store import Store
from gateway.store.records import DailyValue
from hil_tests.synthetic_areas import SyntheticSettings, generate
from protocols.topics import GatewayTopics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = generate(3, SyntheticSettings(areas=1, days=args.days,
                                         customers=(args.customers, args.customers)))
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        data.write_toml(site / "gateway.toml")
        config = load_config(site / "gateway.toml")
        store = Store.open(site / "var" / "gateway.sqlite")
        first = dt.date.fromisoformat(data.days[0])
        rows = []
        letters = {0: "A", 1: "E"}
        for quantity, freezes, quality in ((IMPORT_Q, data.import_freezes, data.import_quality),
                                           (EXPORT_Q, data.export_freezes, data.export_quality)):
            for i, meter in enumerate(data.meter_ids):
                for j in range(len(data.days) + 1):
                    value, code = freezes[i, j], int(quality[i, j])
                    if np.isfinite(value) and code in letters:
                        rows.append(DailyValue(meter, quantity, first + dt.timedelta(days=j),
                                               Decimal(f"{value:.2f}"), letters[code]))
        store.put_daily(rows)
        reconciler = AreaReconciler(config, OutboxWriter(store), GatewayTopics(config.mqtt.topic_prefix, config.gateway.id))
        (unit,) = [u for u in reconciler.units if u.area is not None]
        last = first + dt.timedelta(days=len(data.days) - 1)
        started = time.perf_counter()
        reconciler.compute(unit, last)
        warm = time.perf_counter() - started
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = reconciler.compute(unit, last)
            times.append(time.perf_counter() - started)
        store.close()
    assert result.loss is not None
    print(f"{len(unit.meters) - 1} customers, {len(data.days)} days of freezes: first call "
          f"{warm * 1000:.0f} ms, then median {sorted(times)[len(times) // 2] * 1000:.0f} ms "
          f"per area-day (status {result.loss.status}, loss {result.loss.loss_pct} %)")


if __name__ == "__main__":
    main()
