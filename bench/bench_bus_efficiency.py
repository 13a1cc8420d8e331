"""Bus efficiency: achieved DL/T 645 transactions/s vs the wire limit of the frames exchanged.

    python bench/bench_bus_efficiency.py [--seconds 60] [--meters 8] [--baud 2400] [--delay-ms 20]

The simulator runs in its own process (``python -m hil_tests.sim``) on a pty, pacing bytes at
11 bits per character and answering after the response delay. The gateway's real bus task
(``gateway.acquisition.dlt645_bus.Dlt645Bus``) polls every meter as fast as it may (overloaded schedule),
so the line is never idle by choice. The wire limit of what was exchanged is

    sum over transactions of (request bytes + reply bytes) × 11 / baud + response delay + turnaround

(the 20 ms master turnaround is the standard's minimum, the response delay the meter's). Goal
(issue 3): efficiency = wire-limit time / elapsed time ≥ 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

from gateway.acquisition.base import BusSettings
from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter, PlannedRead
from gateway.acquisition.schedule import PollSchedule
from gateway.acquisition.serial_port import AsyncSerialPort
from protocols import dlt645 as d

REPO = Path(__file__).resolve().parent.parent
BITS_PER_CHAR = 11
READS = (0x0001FF00, 0x0201FF00, 0x0203FF00, 0x00010000)


def start_simulator(meters: int, baud: int, delay_ms: float) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil_tests.sim", "--dlt645-meters", str(meters), "--baud", str(baud),
         "--response-delay-ms", str(delay_ms), "--seed", "3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "dlt645":
        proc.kill()
        raise SystemExit(f"simulator did not start: {line}")
    device, first, last = line[1], *line[3].split("..")
    addresses = [f"{n:012d}" for n in range(int(first), int(last) + 1)]
    return proc, device, addresses


async def measure(device: str, addresses: list[str], baud: int, delay_ms: float, seconds: float) -> dict[str, float]:
    outbound: asyncio.Queue = asyncio.Queue(maxsize=1000)  # type: ignore[type-arg]
    now = time.monotonic()
    meters = [Dlt645Meter(meter_id=f"m{i}", address=a, schedule=PollSchedule(0.05, now),
                          reads=[PlannedRead(d.ReadRequest(a, di)) for di in READS])
              for i, a in enumerate(addresses)]
    settings = BusSettings(timeout_s=0.5, turnaround_s=0.020, retries=1)
    bus = Dlt645Bus("bench", AsyncSerialPort(device, baud, "N"), meters, outbound, settings)

    async def drain() -> None:
        while True:
            await outbound.get()

    drainer = asyncio.create_task(drain())
    task = asyncio.create_task(bus.run())
    await asyncio.sleep(3)  # warm-up: first frames, caches
    s0 = (bus.stats.transactions, bus.stats.bytes_out, bus.stats.bytes_in, bus.stats.timeouts)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    t1 = time.monotonic()
    s1 = (bus.stats.transactions, bus.stats.bytes_out, bus.stats.bytes_in, bus.stats.timeouts)
    bus.stop()
    await task
    drainer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await drainer
    n = s1[0] - s0[0]
    wire_bytes = (s1[1] - s0[1]) + (s1[2] - s0[2])
    limit_time = wire_bytes * BITS_PER_CHAR / baud + n * (delay_ms / 1000 + settings.turnaround_s)
    elapsed = t1 - t0
    return {"transactions": n, "elapsed_s": elapsed, "tx_per_s": n / elapsed,
            "limit_tx_per_s": n / limit_time, "efficiency": limit_time / elapsed,
            "bytes_per_tx": wire_bytes / max(n, 1), "timeouts": s1[3] - s0[3]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--meters", type=int, default=8)
    parser.add_argument("--baud", type=int, default=2400)
    parser.add_argument("--delay-ms", type=float, default=20)
    args = parser.parse_args()
    proc, device, addresses = start_simulator(args.meters, args.baud, args.delay_ms)
    try:
        r = asyncio.run(measure(device, addresses, args.baud, args.delay_ms, args.seconds))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"bus efficiency at {args.baud} baud, response delay {args.delay_ms:.0f} ms, "
          f"{args.meters} meters, {args.seconds:.0f} s")
    print(f"  transactions        {r['transactions']:.0f} ({r['timeouts']:.0f} timeouts)")
    print(f"  bytes/transaction   {r['bytes_per_tx']:.1f} (request + reply, FE preambles included)")
    print(f"  achieved            {r['tx_per_s']:.3f} transactions/s")
    print(f"  wire limit          {r['limit_tx_per_s']:.3f} transactions/s")
    print(f"  efficiency          {r['efficiency']:.4f}  (goal >= 0.95)")
    return 0 if r["efficiency"] >= 0.95 and r["timeouts"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
