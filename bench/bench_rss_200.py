"""Daemon RSS at 200 meters with groups, areas and VEE configured: ≤ 100 MB after 10 minutes, and
flat (issue 18).

    .venv/bin/python bench/bench_rss_200.py [--minutes M] [--interval S] [--kernels numba|numpy|auto]

Set-up, all on 127.0.0.1: a private mosquitto; one simulator process (``python -m hil_tests.sim
--modbus-tcp-meters 200``, SDM630 register maps) and the daemon as a subprocess (``python -m
gateway.app.cli run``) polling the 200 meters every ``--interval`` seconds (default 5) with the
shipped ``sdm630`` profile (29 quantities in 2 requests). The configuration has four transformer
areas: each a master meter against a group of its 49 sub-meters (``[[groups]]``, ``[[areas]]``: the
group power and the daily line loss), and ``[vee] kernels = "numba"`` (``--kernels``): the rule
kernels compiled rather than run as their NumPy twins.

Measured from outside: VmRSS (``/proc/PID/status``) every 10 s for ``--minutes`` (default 10),
then the start (first sample after 30 s of start-up), end, maximum and the least-squares slope
after start-up. Whether numba's compiler and the kernels compiled ahead of time are in the daemon
is read from ``/proc/PID/maps`` (``libllvmlite``, ``_kernels_aot``) at the end: the figure means
something only next to it (``make aot`` builds the module; without it the kernels are JIT-compiled).

Exit status: 0 measured, 1 with ``--strict`` when the goal is missed, 2 when it could not measure.
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
    config_text,
    fail,
    note_start,
    print_table,
    private_broker,
    slope_per_min,
    start_simulator,
    verdict,
)

METERS = 200
AREAS = 4
STARTUP_S = 30.0
SAMPLE_EVERY_S = 10.0
GOAL_RSS_MB = 100.0
#: Flat: less than this many MiB per minute after start-up.
FLAT_MIB_PER_MIN = 0.1


def daemon_config(broker_port: int, modbus_port: int, interval_s: float, kernels: str) -> str:
    buses = [{"name": "tcp-1", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
              "max_concurrency": 8, "timeout_ms": 1000}]
    meters = [{"id": f"mb-{u:03d}", "bus": "tcp-1", "address": u, "profile": "sdm630",
               "poll_interval_s": interval_s} for u in range(1, METERS + 1)]
    text = config_text(broker_port, buses, meters, health_interval_s=30)
    per_area = METERS // AREAS
    lines = ["", "[vee]", f'kernels = "{kernels}"', ""]
    for a in range(AREAS):
        first = a * per_area + 1
        subs = ", ".join(f'{{ meter = "mb-{u:03d}" }}' for u in range(first + 1, first + per_area))
        lines += ["[[groups]]", f'id = "area-{a + 1}-subs"', f"members = [{subs}]", "",
                  "[[areas]]", f'id = "area-{a + 1}"', f'master = "mb-{first:03d}"',
                  f'subs = "area-{a + 1}-subs"', ""]
    return text + "\n".join(lines)


def mapped(pid: int) -> tuple[bool, bool]:
    """Whether the process has numba's compiler (libllvmlite) and the kernels compiled ahead of
    time (edge_rules/_kernels_aot*.so, edge_rules/aot.py) mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError as exc:
        raise MeasurementError(f"cannot read /proc/{pid}/maps: {exc}") from exc
    return "libllvmlite" in maps, "_kernels_aot" in maps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval, s (default 5)")
    parser.add_argument("--kernels", default="numba", choices=("numba", "numpy", "auto"),
                        help='[vee] kernels (default "numba")')
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    total_s = args.minutes * 60.0
    note_start()
    sim = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rss-200-") as tmp:
            workdir = Path(tmp)
            with private_broker(workdir) as broker:
                sim = start_simulator(["--modbus-tcp-meters", str(METERS), "--modbus-port", "0",
                                       "--seed", "18"], workdir / "sim-modbus.log")
                assert sim.modbus_port is not None
                daemon = Daemon(workdir)
                pid = daemon.start(daemon_config(broker.port, sim.modbus_port, args.interval,
                                                 args.kernels))
                listener = GatewayListener(broker.port, pid).start()
                sampler = Sampler(pid, SAMPLE_EVERY_S).start()
                try:
                    while (elapsed := time.monotonic() - sampler.t0) < total_s:
                        daemon.check_alive()
                        time.sleep(min(1.0, max(0.05, total_s - elapsed)))
                    end = sampler.sample()
                    sampler.stop()
                    if sampler.error:
                        raise MeasurementError(sampler.error)
                    llvm, aot = mapped(pid)
                    health = listener.latest()
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
        if sim is not None:
            sim.stop()

    if health is None:
        return fail("no health message from the daemon")
    rss = [(s.t, s.rss_kib / 1024) for s in sorted(sampler.samples, key=lambda s: s.t)]
    after_start = [p for p in rss if p[0] >= STARTUP_S]
    if len(after_start) < 2:
        return fail("the run is too short for a slope after start-up (use --minutes ≥ 1)")
    start_mib, end_mib = after_start[0][1], end.rss_kib / 1024
    max_mib = max(m for _, m in rss)
    slope = slope_per_min(after_start)
    # the second half alone: what is left once caches, the store and the VEE window have warmed up
    second_half = [p for p in rss if p[0] >= total_s / 2]
    late_slope = slope_per_min(second_half) if len(second_half) > 1 else float("nan")
    mb = 1_000_000 / 2**20  # the goal is in MB (10^6); RSS is shown in MiB
    ok = max_mib <= GOAL_RSS_MB * mb and abs(slope) < FLAT_MIB_PER_MIN
    stats = health.stats
    polls = int(stats["committer"]["polls"])
    lost = sorted({m for b in stats["buses"].values() for m in b["comm_lost"]})
    rows = [
        ("meters", f"{METERS} Modbus TCP (sdm630) every {args.interval:g} s, {AREAS} areas "
                   f"(master + group of {METERS // AREAS - 1})", ""),
        ("[vee] kernels; mapped at the end: numba's LLVM, AOT kernels",
         f"{args.kernels}; {'yes' if llvm else 'no'}, {'yes' if aot else 'no'}", ""),
        ("run length", f"{end.t:.0f} s", ""),
        ("polls committed (last health)", f"{polls}", ""),
        ("meters in comm loss", ", ".join(lost) or "none", "none"),
        ("RSS after start-up (30 s) / end / max", f"{start_mib:.1f} / {end_mib:.1f} / {max_mib:.1f} MiB",
         verdict(max_mib <= GOAL_RSS_MB * mb, f"max <= {GOAL_RSS_MB:.0f} MB ({GOAL_RSS_MB * mb:.1f} MiB)")),
        ("RSS slope after start-up", f"{slope:+.3f} MiB/min",
         verdict(abs(slope) < FLAT_MIB_PER_MIN, f"flat: |slope| < {FLAT_MIB_PER_MIN} MiB/min")),
        ("RSS slope over the second half of the run", f"{late_slope:+.3f} MiB/min", ""),
    ]
    print_table(f"RSS at {METERS} meters with groups, areas and VEE", rows,
                ["RSS samples (s: MiB): " + ", ".join(f"{t:.0f}: {m:.1f}" for t, m in rss)])
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
