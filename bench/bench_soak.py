"""Soak with 200 simulated meters at 60 s: daemon RSS after 10 minutes (goal ≤ 120 MB) and daemon
CPU (goal ≤ 5 % of one core).

    .venv/bin/python bench/bench_soak.py [--quick] [--minutes M]

Set-up, all on 127.0.0.1: a private mosquitto; five simulator processes
(``python -m hil_tests.sim``): four DL/T 645 lines of 25 meters each on ptys at 9600 baud 8E1,
and one Modbus TCP server with 100 SDM630 meters; the daemon as a subprocess
(``python -m gateway.app.cli run``) polling all 200 meters every 60 s with the shipped profiles
(``dlt645-2007``: 9 transactions per meter, about 25 s of wire time per line per cycle, well
inside the 60 s; ``sdm630``: 29 quantities in 2 requests).

Measured from outside: RSS from ``/proc/PID/status`` (VmRSS) every 10 s (and, for scale, the RSS
of a fresh interpreter that only imports ``gateway.app.daemon``); CPU from
``/proc/PID/stat`` (utime + stime) over the run minus its first 30 s of start-up. The full run
measures CPU over exactly ``M`` poll intervals after those 30 s (default M = 10, i.e. 10.5 minutes
in all), so it holds the same number of poll cycles whatever the wall-clock phase at start. The
``--quick`` run (55 s) has a 25 s CPU window, shorter than one poll interval: its CPU figure
depends on whether a cycle falls inside and is indicative only.

Exit status: 0 measured, 1 with ``--strict`` when a goal is missed, 2 when it could not measure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_rig import (
    Daemon,
    GatewayListener,
    MeasurementError,
    Sampler,
    Simulator,
    config_text,
    fail,
    import_rss_kib,
    note_start,
    print_table,
    private_broker,
    slope_per_min,
    start_simulator,
    verdict,
)

LINES = 4
METERS_PER_LINE = 25
MODBUS_METERS = 100
BAUD = 9600
INTERVAL_S = 60.0
STARTUP_S = 30.0
SAMPLE_EVERY_S = 10.0
GOAL_RSS_MB = 120.0
GOAL_CPU_PCT = 5.0


def start_simulators(workdir: Path) -> list[Simulator]:
    sims: list[Simulator] = []
    try:
        for line in range(LINES):
            sims.append(start_simulator(
                ["--dlt645-meters", str(METERS_PER_LINE), "--baud", str(BAUD),
                 "--first-address", f"{(line + 1) * 1000 + 1:012d}", "--seed", str(line + 1)],
                workdir / f"sim-dlt645-{line + 1}.log"))
        sims.append(start_simulator(["--modbus-tcp-meters", str(MODBUS_METERS), "--modbus-port", "0",
                                     "--seed", "9"], workdir / "sim-modbus.log"))
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    return sims


def daemon_config(broker_port: int, sims: list[Simulator]) -> str:
    buses: list[dict[str, object]] = []
    meters: list[dict[str, object]] = []
    for i, sim in enumerate(sims):
        if sim.dlt645_device is not None:
            name = f"rs485-{i + 1}"
            buses.append({"name": name, "protocol": "dlt645", "port": sim.dlt645_device,
                          "baudrate": BAUD, "parity": "E", "timeout_ms": 500})
            meters += [{"id": f"m-{a[-5:]}", "bus": name, "address": a, "profile": "dlt645-2007",
                        "poll_interval_s": INTERVAL_S} for a in sim.dlt645_addresses]
        if sim.modbus_port is not None:
            buses.append({"name": "tcp-1", "protocol": "modbus-tcp", "host": "127.0.0.1",
                          "port": sim.modbus_port, "max_concurrency": 8, "timeout_ms": 1000})
            meters += [{"id": f"mb-{u:03d}", "bus": "tcp-1", "address": u, "profile": "sdm630",
                        "poll_interval_s": INTERVAL_S} for u in range(1, MODBUS_METERS + 1)]
    return config_text(broker_port, buses, meters, health_interval_s=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--quick", action="store_true", help="55 s of daemon run (smoke check)")
    parser.add_argument("--minutes", type=int, default=10,
                        help="poll intervals measured after start-up (default 10)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    total_s = 55.0 if args.quick else STARTUP_S + args.minutes * INTERVAL_S
    note_start()
    sims: list[Simulator] = []
    try:
        # What the daemon holds before it has done anything: its imports.
        imports = dict(import_rss_kib(["gateway.app.daemon", "edge_rules.groups", "numba"]))
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            workdir = Path(tmp)
            with private_broker(workdir) as broker:
                sims = start_simulators(workdir)
                daemon = Daemon(workdir)
                pid = daemon.start(daemon_config(broker.port, sims))
                listener = GatewayListener(broker.port, pid).start()
                sampler = Sampler(pid, SAMPLE_EVERY_S).start()
                cpu_start: tuple[float, float] | None = None
                try:
                    while (elapsed := time.monotonic() - sampler.t0) < total_s:
                        daemon.check_alive()
                        if cpu_start is None and elapsed >= STARTUP_S:
                            s = sampler.sample()  # the CPU window opens at exactly 30 s
                            cpu_start = (s.t, s.cpu_s)
                        time.sleep(min(1.0, max(0.05, (STARTUP_S if cpu_start is None else total_s)
                                                - elapsed)))
                    end = sampler.sample()
                    sampler.stop()
                    if sampler.error:
                        raise MeasurementError(sampler.error)
                    health = listener.latest()
                    reads = listener.reads_messages
                finally:
                    sampler.stop()
                    listener.stop()
                    code = daemon.stop()
                if code != 0:
                    raise MeasurementError(f"the daemon exited with {code} on SIGTERM; log tail:\n"
                                           f"{daemon.log_tail()}")
    except MeasurementError as exc:
        return fail(str(exc))
    finally:
        for sim in sims:
            sim.stop()

    if cpu_start is None or health is None:
        return fail("the run ended before the CPU window opened or before any health message")
    samples = sorted(sampler.samples, key=lambda s: s.t)
    rss = [(s.t, s.rss_kib / 1024) for s in samples]
    at_10s = min(rss, key=lambda p: abs(p[0] - 10.0))
    after_start = [p for p in rss if p[0] >= STARTUP_S]
    max_mib = max(m for _, m in rss)
    end_mib = end.rss_kib / 1024
    cpu_pct = 100 * (end.cpu_s - cpu_start[1]) / (end.t - cpu_start[0])
    stats = health.stats
    buses = stats["buses"]
    polls = int(stats["committer"]["polls"])
    lost = sorted({m for b in buses.values() for m in b["comm_lost"]})
    overruns = sum(int(b["overruns"]) for b in buses.values())
    ratio = min(float(b["success_ratio"]) for b in buses.values())
    mb = 1_000_000 / 2**20  # the goal is in MB (10^6); RSS is shown in MiB
    rss_ok = end_mib <= GOAL_RSS_MB * mb and max_mib <= GOAL_RSS_MB * mb
    cpu_ok = cpu_pct <= GOAL_CPU_PCT
    rows = [
        ("meters", f"{LINES}×{METERS_PER_LINE} DL/T 645 at {BAUD} baud + {MODBUS_METERS} Modbus TCP, "
                   f"every {INTERVAL_S:.0f} s", ""),
        ("run length", f"{end.t:.0f} s", ""),
        ("polls committed (last health), reads msgs", f"{polls}, {reads}", ""),
        ("worst bus success ratio, overruns", f"{ratio:.4f}, {overruns}", "1.0, 0"),
        ("meters in comm loss", ", ".join(lost) or "none", "none"),
        ("RSS of `import gateway.app.daemon` alone",
         f"{imports['gateway.app.daemon'] / 1024:.1f} MiB; numba, which a config with groups loads "
         f"at its first group computation, adds {(imports['numba'] - imports['gateway.app.daemon']) / 1024:.1f} MiB",
         ""),
        ("RSS at 10 s / 30 s", f"{at_10s[1]:.1f} / {after_start[0][1]:.1f} MiB" if after_start
         else "n/a", ""),
        ("RSS max / end", f"{max_mib:.1f} / {end_mib:.1f} MiB",
         verdict(rss_ok, f"<= {GOAL_RSS_MB:.0f} MB ({GOAL_RSS_MB * mb:.1f} MiB)")),
        ("RSS slope after 30 s", f"{slope_per_min(after_start):+.3f} MiB/min" if len(after_start) > 1
         else "n/a", ""),
        ("daemon CPU after the first 30 s",
         f"{end.cpu_s - cpu_start[1]:.2f} s in {end.t - cpu_start[0]:.0f} s = {cpu_pct:.2f} % of a core",
         f"<= {GOAL_CPU_PCT:.0f} % (not judged: window < one poll interval)" if args.quick
         else verdict(cpu_ok, f"<= {GOAL_CPU_PCT:.0f} %")),
        ("loop lag (last health)", f"{stats['loop_lag_ms']} ms", ""),
    ]
    print_table("Soak: 200 meters at 60 s, daemon RSS and CPU", rows,
                ["RSS samples (s: MiB): " + ", ".join(f"{t:.0f}: {m:.1f}" for t, m in rss)]
                + (["--quick: the 25 s CPU window is shorter than one 60 s poll interval, so the CPU "
                    "figure depends on whether a poll cycle fell inside it: indicative only"]
                   if args.quick else []))
    return 1 if args.strict and not (rss_ok and (cpu_ok or args.quick)) else 0


if __name__ == "__main__":
    sys.exit(main())
