"""What the daemon's theft and tamper stage costs per poll and per committer batch.

    .venv/bin/python -m bench.bench_theft_monitor [--meters 200] [--batches 1,8,32] [--rounds 100]
                                                  [--no-screen]

``--meters`` three-phase DL/T 645 meters (honest: no alarm may fire) recorded by the real
:class:`gateway.analytics.theft.TheftMonitor`, attached to a real committer and store, and
evaluated in batches of each ``--batches`` size (the meters polled within one
``evaluate_interval_s``). Prints the median CPU time of recording one poll
(:meth:`TheftMonitor.on_poll`, what every poll pays) and of evaluating one batch (the nine
NumPy kernels over the batch's meters × ``window_samples`` polls), and whether numba was
imported (it must not be).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from gateway.acquisition.poll_result import PolledValue
from gateway.analytics.theft import TheftMonitor
from gateway.config import load_config
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.pipeline.feed import ValidatedPoll
from gateway.store import Store
from protocols.payload import ReadRecord
from protocols.topics import GatewayTopics

HEAD = """[gateway]
id = "gw-bench"
data_dir = "var"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/null"
"""


def config_text(meters: int) -> str:
    rows = [HEAD]
    for m in range(meters):
        rows.append(f'[[meters]]\nid = "m-{m}"\nbus = "rs485-1"\naddress = "{m + 1:012d}"\n'
                    'profile = "dlt645-2007"\n')
    return "\n".join(rows)


def poll(meter: int, k: int, t_ms: int) -> ValidatedPoll:
    """An honest three-phase poll: 13 quantities, Decimals as the DL/T 645 codec gives them, as
    the monitor receives it: graded records (all actual here) after validation."""
    v = [Decimal(f"{220 + (meter + p) % 5}.{k % 10}") for p in range(3)]
    i = [Decimal(f"{4 + 0.1 * ((meter + p) % 3):.1f}{k % 100:02d}") for p in range(3)]
    p_kw = [Decimal(f"{float(a) * float(b) * 0.95 / 1000:.4f}") for a, b in zip(v, i, strict=True)]
    values = [PolledValue(f"voltage.{ph}", x, "V", t_ms) for ph, x in zip("abc", v, strict=True)]
    values += [PolledValue(f"current.{ph}", x, "A", t_ms) for ph, x in zip("abc", i, strict=True)]
    values += [PolledValue(f"power.active.{ph}", x, "kW", t_ms)
               for ph, x in zip("abc", p_kw, strict=True)]
    values.append(PolledValue("power.active.total", sum(p_kw, Decimal(0)), "kW", t_ms))
    values.append(PolledValue("energy.active.import.total",
                              Decimal(f"{1000 + k * 0.05:.2f}"), "kWh", t_ms))
    values.append(PolledValue("energy.active.export.total", Decimal("0.00"), "kWh", t_ms))
    records = tuple(ReadRecord.actual(pv.quantity, pv.value, pv.unit, pv.t_ms) for pv in values)
    return ValidatedPoll(f"m-{meter}", "rs485-1", t_ms, True, records=records,
                         polled=tuple(values))


async def run(monitor: TheftMonitor, meters: int, batch: int, rounds: int
              ) -> tuple[list[float], list[float]]:
    per_poll: list[float] = []
    per_batch: list[float] = []
    t0 = 1_767_225_600_000
    for k in range(rounds):
        for first in range(0, meters, batch):
            results = [poll(m, k, t0 + k * 60_000) for m in range(first, min(meters, first + batch))]
            start = time.process_time_ns()
            for result in results:
                monitor.on_poll(result)
            per_poll.append((time.process_time_ns() - start) / len(results))
            start = time.process_time_ns()
            monitor.evaluate()
            per_batch.append(time.process_time_ns() - start)
            await asyncio.sleep(0)  # the scheduled evaluation finds nothing left to do
    return per_poll, per_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--no-screen", action="store_true",
                        help="call every kernel on every batch (what screening saves)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # an alarm here is reported in the summary line
    print(f"{args.meters} meters, {args.rounds} rounds")
    for batch in (int(b) for b in args.batches.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp)
            (site / "profiles").mkdir()
            (site / "profiles" / "dlt645-2007.toml").write_text("# bench profile\n")
            (site / "gateway.toml").write_text(config_text(args.meters))
            config = load_config(site / "gateway.toml")
            store = Store.open(site / "var" / "gateway.sqlite")
            committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", "gw-bench")), asyncio.Queue())
            monitor = TheftMonitor(config, committer.alarms)
            monitor.screen = not args.no_screen
            per_poll, per_batch = asyncio.run(run(monitor, args.meters, batch, args.rounds))
            alarms = len(store.active_alarms())
            store.close()
        skip = len(per_poll) // 10  # warm-up: the window fills during the first rounds
        evaluate_us = statistics.median(per_batch[skip:]) / 1000
        print(f"batch {batch:3d} (window {config.theft.window_samples} polls): record one poll "
              f"{statistics.median(per_poll[skip:]) / 1000:5.1f} us, evaluate the batch "
              f"{evaluate_us:7.1f} us = {evaluate_us / batch:6.1f} us per meter (CPU, median); "
              f"alarms {alarms}")
    print(f"numba imported: {'numba' in sys.modules}")


if __name__ == "__main__":
    main()
