"""Overload: polls due about 10× faster than the bus can carry them. Memory must stay flat and
the overrun counter must grow (the schedule skips slots instead of queueing them).

    .venv/bin/python bench/bench_overload.py [--quick] [--seconds S]

Set-up, all on 127.0.0.1: a private mosquitto; ``python -m hil_tests.sim`` with 8 DL/T 645 meters
on one pty at 2400 baud 8E1 (its own process); the daemon as a subprocess polling each meter every
0.2 s through a bench-local profile of one transaction (forward active energy total, DI
00010000). One poll is about 45 bytes on the wire (≈ 0.21 s at 2400 baud) plus the meter's
response delay and the master's turnaround, so the line carries ≈ 4 polls/s while 40 polls/s
are due: ≈ 10× overload (the figure printed is measured, not assumed).

Measured from outside: RSS from ``/proc/PID/status`` every 5 s over the window after a warm-up,
with its least-squares slope; ``buses.rs485-1.overruns`` and ``committer.polls`` from the health
messages on ``P/G/health`` (every 5 s) at the window's ends.

Why the full window is 40 minutes: bounded caches that are still filling slope upwards exactly
like a leak. The big one is SQLite's page cache (``cache_size`` default: 2 MiB), which fills as
the store grows — here about 0.1 MiB of store per minute, so it takes some 20-25 minutes. "Flat"
is therefore judged on the slope over the window's last third, once such caches are full; the
slope over the whole window is shown too. Shorter windows (``--seconds``, ``--quick``) are
indicative only.

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
    note_start,
    print_table,
    private_broker,
    slope_per_min,
    start_simulator,
    verdict,
)

METERS = 8
BAUD = 2400
INTERVAL_S = 0.2
BUS = "rs485-1"
PROFILE_NAME = "bench-energy-only"
PROFILE = """\
# One transaction per poll (written by bench/bench_overload.py): forward active energy total.
kind = "dlt645"
version = "2007"
description = "bench: forward active energy total only"

[[reads]]
di = "00010000"
"""
#: "Flat": the fitted slope would add less than this over an hour.
FLAT_MIB_PER_HOUR = 5.0


def store_bytes(data_dir: Path) -> int:
    """The SQLite store's size on disk, WAL included: what SQLite's page cache can grow with."""
    return sum(p.stat().st_size for p in data_dir.glob("gateway.sqlite*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--quick", action="store_true",
                        help="5 s warm-up + 35 s window (smoke check, under a minute)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measuring window (default 2400; at least 120)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    window_s = args.seconds or (35.0 if args.quick else 2400.0)
    warmup_s = 5.0 if args.quick else 30.0
    if window_s < 20:
        return fail("--seconds must be at least 20 (four RSS samples)")
    note_start()
    sim: Simulator | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
            workdir = Path(tmp)
            (workdir / "profiles").mkdir()
            (workdir / "profiles" / f"{PROFILE_NAME}.toml").write_text(PROFILE)
            with private_broker(workdir) as broker:
                sim = start_simulator(["--dlt645-meters", str(METERS), "--baud", str(BAUD),
                                       "--seed", "5"], workdir / "sim.log")
                buses = [{"name": BUS, "protocol": "dlt645", "port": sim.dlt645_device,
                          "baudrate": BAUD, "parity": "E", "timeout_ms": 500}]
                meters = [{"id": f"m-{a[-4:]}", "bus": BUS, "address": a, "profile": PROFILE_NAME,
                           "poll_interval_s": INTERVAL_S} for a in sim.dlt645_addresses]
                daemon = Daemon(workdir)
                pid = daemon.start(config_text(broker.port, buses, meters, health_interval_s=5))
                listener = GatewayListener(broker.port, pid).start()
                try:
                    listener.wait_health(lambda s: s["committer"]["polls"] > 0, 60, daemon)
                    time.sleep(warmup_s)
                    first = listener.wait_next_health(time.monotonic(), 30, daemon)
                    store0 = store_bytes(workdir / "var")
                    sampler = Sampler(pid, 5.0).start()
                    try:
                        while time.monotonic() - sampler.t0 < window_s:
                            daemon.check_alive()
                            time.sleep(1.0)
                        last = listener.wait_next_health(first.received + window_s - 1.0, 30, daemon)
                        sampler.sample()
                        store1 = store_bytes(workdir / "var")
                    finally:
                        sampler.stop()
                    if sampler.error:
                        raise MeasurementError(sampler.error)
                finally:
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

    wall = last.received - first.received
    b0, b1 = first.stats["buses"][BUS], last.stats["buses"][BUS]
    polls = int(last.stats["committer"]["polls"]) - int(first.stats["committer"]["polls"])
    achieved = polls / wall
    due = METERS / INTERVAL_S
    overruns0, overruns1 = int(b0["overruns"]), int(b1["overruns"])
    grew = overruns1 > overruns0
    samples = sorted(sampler.samples, key=lambda s: s.t)
    rss = [(s.t, s.rss_kib / 1024) for s in samples]
    slope = slope_per_min(rss)
    # A bounded cache that is still filling (SQLite's page cache, the bus's recent-transactions
    # deque) also slopes upwards: judge on the last third, once they are full.
    late_slope = slope_per_min([p for p in rss if p[0] >= rss[-1][0] * 2 / 3])
    flat = late_slope * 60 <= FLAT_MIB_PER_HOUR
    cpu_pct = 100 * (samples[-1].cpu_s - samples[0].cpu_s) / (samples[-1].t - samples[0].t)
    rows = [
        ("line, meters, profile", f"{BAUD} baud 8E1, {METERS} DL/T 645 meters, 1 transaction/poll", ""),
        ("polls due / carried", f"{due:.0f}/s / {achieved:.2f}/s "
         f"(overload {due / achieved:.1f}×)", "≈ 10×"),
        ("bus transactions, success ratio", f"{b1['transactions_per_s']}/s, {b1['success_ratio']}", ""),
        ("overruns at window start / end", f"{overruns0:,} / {overruns1:,} "
         f"(+{(overruns1 - overruns0) / wall:.1f}/s)", verdict(grew, "growing")),
        ("RSS start / max / end", f"{rss[0][1]:.1f} / {max(m for _, m in rss):.1f} / {rss[-1][1]:.1f} MiB", ""),
        (f"RSS slope over the window ({rss[-1][0]:.0f} s, {len(rss)} samples)",
         f"{slope:+.3f} MiB/min ({slope * 60:+.1f} MiB/h)", ""),
        ("RSS slope over its last third", f"{late_slope:+.3f} MiB/min ({late_slope * 60:+.1f} MiB/h)",
         verdict(flat, f"flat (< {FLAT_MIB_PER_HOUR:.0f} MiB/h)")
         + ("" if rss[-1][0] >= 1800 else " (window < 30 min: indicative)")),
        ("store on disk (db + WAL) grew by", f"{(store1 - store0) / 2**20:.2f} MiB in the window "
         "(SQLite's page cache, 2 MiB by default, fills with it)", ""),
        ("outbox depth, loop lag (last health)",
         f"{last.stats['outbox_depth']}, {last.stats['loop_lag_ms']} ms", ""),
        ("daemon CPU over the window", f"{cpu_pct:.1f} % of a core", "informational"),
    ]
    print_table("Overload: polls due ≈10× faster than a 2400-baud DL/T 645 line carries", rows,
                ["RSS samples (s: MiB): " + ", ".join(f"{t:.0f}: {m:.2f}" for t, m in rss)])
    return 1 if args.strict and not (grew and flat) else 0


if __name__ == "__main__":
    sys.exit(main())
