"""Daemon CPU per Modbus meter poll (goal ≤ 0.4 ms) and idle CPU (goal ≤ 1 % of a core).

    .venv/bin/python bench/bench_modbus_cpu.py [--quick] [--seconds S] [--idle-seconds S]
                                               [--event-loop uvloop|asyncio] [--config-extra TOML]
                                               [--payload-version 1|2]
                                               [--profile FILE.prof] [--py-spy FILE]

Set-up, all on 127.0.0.1: a private mosquitto; ``python -m hil_tests.sim --modbus-tcp-meters 100``
in its own process (a pymodbus TCP server serving SDM630 register maps, so its CPU is not the
daemon's); the daemon as a subprocess (``python -m gateway.app.cli run``) polling the 100 meters
through one ``modbus-tcp`` bus.

The daemon reads the 10 standard quantities (voltage a/b/c, current a/b/c, total active power,
import energy, total power factor, frequency) through a bench-local profile written next to its
config: the shipped ``sdm630`` profile reads 29 quantities in 2 requests, while this subset plans
to ONE merged read (input registers 0x0000..0x0049, 74 words) per poll.

1. **busy**: every meter every 1 s (100 polls/s due). After a warm-up, the daemon's CPU
   (``/proc/PID/stat`` utime + stime, read when each health message arrives) is divided by the
   polls completed in between (``committer.polls`` from ``P/G/health``). Everything the daemon does
   per poll is in it: the Modbus request, decoding, validation, the SQLite commit, the publish
   and its PUBACK bookkeeping, plus its fixed background work.
2. **idle**: a fresh daemon with the same meters at a 1-day interval: after their first poll
   nothing is due. CPU share of one core over the idle window.

``--event-loop`` sets the daemon's ``[gateway] event_loop`` (default: what ``auto`` gives here,
uvloop when installed); the floor's Modbus clients run on the same loop, so "the daemon's own
work" compares like with like. ``--config-extra`` appends TOML to the daemon's config, e.g.
``'[store]\\ncommit_window_ms = 200'``, to compare settings.

``--profile FILE`` runs the busy daemon under cProfile (its CPU figure is then inflated by the
profiler; use it to see where the time goes, e.g. ``python -m pstats FILE``). ``--py-spy FILE``
samples it with py-spy instead (``.venv/bin/pip install py-spy``; folded stacks, one per line,
with counts), which distorts far less; it samples with ``--gil``, so SQLite's C code (run with the
GIL released) does not show: the store's share is larger than the samples say.

Exit status: 0 measured, 1 with ``--strict`` when a goal is missed, 2 when it could not measure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_rig import (
    Daemon,
    GatewayListener,
    MeasurementError,
    Simulator,
    config_text,
    fail,
    note_start,
    print_table,
    private_broker,
    proc_cpu_s,
    proc_cpu_split,
    start_simulator,
    verdict,
)
from gateway.app import event_loop
from protocols.modbus.register_map import plan_reads
from protocols.profiles import load_profile

METERS = 100
GOAL_MS_PER_POLL = 0.4
GOAL_IDLE_PCT = 1.0
PROFILE_NAME = "bench-sdm630-10q"
PROFILE = """\
# The 10 standard quantities of an Eastron SDM630 (addresses as in configs/profiles/sdm630.toml),
# written by bench/bench_modbus_cpu.py. With max_gap 40 they plan to one read of 74 words.
kind = "modbus"
vendor = "Eastron"
model = "SDM630-Modbus V2 (bench subset)"
description = "10 standard quantities, input registers, float32 high word first"
max_registers_per_request = 80
max_gap = 40

[defaults]
function = "input"
type = "float32"
word_order = "big"

[[groups]]
name = "instantaneous"
registers = [
  { quantity = "voltage.a", address = 0x0000, unit = "V", resolution = "0.01" },
  { quantity = "voltage.b", address = 0x0002, unit = "V", resolution = "0.01" },
  { quantity = "voltage.c", address = 0x0004, unit = "V", resolution = "0.01" },
  { quantity = "current.a", address = 0x0006, unit = "A", resolution = "0.001" },
  { quantity = "current.b", address = 0x0008, unit = "A", resolution = "0.001" },
  { quantity = "current.c", address = 0x000A, unit = "A", resolution = "0.001" },
  { quantity = "power.active.total", address = 0x0034, unit = "kW", scale = "0.001", resolution = "0.0001" },
  { quantity = "power.factor.total", address = 0x003E, unit = "", resolution = "0.001" },
  { quantity = "frequency", address = 0x0046, unit = "Hz", resolution = "0.01" },
]

[[groups]]
name = "energy"
measurement = "register"
resolution = "0.01"
registers = [
  { quantity = "energy.active.import.total", address = 0x0048, unit = "kWh" },
]
"""


def write_profile(workdir: Path) -> int:
    """Write the bench profile beside the config; return the number of requests it plans."""
    path = workdir / "profiles" / f"{PROFILE_NAME}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(PROFILE)
    profile = load_profile(path)
    if len(profile.registers) != 10:  # type: ignore[union-attr]
        raise MeasurementError(f"bench profile maps {len(profile.registers)} quantities, not 10")  # type: ignore[union-attr]
    return len(plan_reads(profile))  # type: ignore[arg-type]


def daemon_config(broker_port: int, modbus_port: int, interval_s: float, health_s: float,
                  data_dir: str) -> str:
    buses = [{"name": "tcp-1", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
              "max_concurrency": 8, "timeout_ms": 1000}]
    meters = [{"id": f"mb-{u:03d}", "bus": "tcp-1", "address": u, "profile": PROFILE_NAME,
               "poll_interval_s": interval_s} for u in range(1, METERS + 1)]
    text = config_text(broker_port, buses, meters, health_interval_s=health_s, data_dir=data_dir)
    text = text.replace("[gateway]\n", f'[gateway]\nevent_loop = "{LOOP}"\n', 1)
    if PAYLOAD_VERSION is not None:
        text = text.replace("[mqtt]\n", f"[mqtt]\npayload_version = {PAYLOAD_VERSION}\n", 1)
    return text + "\n" + CONFIG_EXTRA


#: TOML appended to the daemon's config (``--config-extra``), to compare settings.
CONFIG_EXTRA = ""
#: ``[mqtt] payload_version`` of the daemon (``--payload-version``; None: the default, 2).
PAYLOAD_VERSION: int | None = None
#: The event loop of the daemon and of the floor's Modbus clients (``--event-loop``).
LOOP = event_loop.resolve("auto")


def polls(stats: dict[str, object]) -> int:
    committer = stats.get("committer")
    return int(committer["polls"]) if isinstance(committer, dict) else 0


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample the daemon with py-spy (``pip install py-spy``), which, unlike cProfile, hardly
    slows the process it watches."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise MeasurementError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    # --gil: only the thread holding the GIL is sampled, so time the daemon spends waiting (in
    # epoll, in SQLite's fsync with the GIL released, in idle worker threads) is left out and
    # the samples approximate where its *CPU* goes.
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "500", "--gil", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def busy_phase(workdir: Path, broker_port: int, modbus_port: int, warmup_s: float, seconds: float,
               profile_out: Path | None, py_spy_out: Path | None) -> dict[str, float]:
    daemon = Daemon(workdir / "busy")
    daemon.workdir.mkdir()
    (daemon.workdir / "profiles").symlink_to(workdir / "profiles")
    python_args = ["-m", "cProfile", "-o", str(profile_out)] if profile_out else []
    pid = daemon.start(daemon_config(broker_port, modbus_port, 1.0, 5, "var"), python_args=python_args)
    listener = GatewayListener(broker_port, pid).start()
    try:
        listener.wait_health(lambda s: polls(s) >= 2 * METERS, 60, daemon)
        time.sleep(warmup_s)
        first = listener.wait_next_health(time.monotonic(), 30, daemon)
        split0 = proc_cpu_split(pid)
        reads0 = listener.reads_messages
        spy = start_py_spy(pid, seconds, py_spy_out) if py_spy_out else None
        time.sleep(max(0.0, first.received + seconds - time.monotonic() - 0.5))
        last = listener.wait_next_health(first.received + seconds - 1.0, 30, daemon)
        split1 = proc_cpu_split(pid)
        reads1 = listener.reads_messages
        if spy is not None:
            spy.wait(60)
        if first.daemon_cpu_s is None or last.daemon_cpu_s is None:
            raise MeasurementError("could not read the daemon's CPU time")
        n = polls(last.stats) - polls(first.stats)
        if n <= 0:
            raise MeasurementError("no polls completed in the measuring window")
        bus = last.stats["buses"]["tcp-1"]
        wall = last.received - first.received
        cpu = last.daemon_cpu_s - first.daemon_cpu_s
        return {
            "wall_s": wall, "cpu_s": cpu, "polls": n, "reads_messages": reads1 - reads0,
            "ms_per_poll": 1000 * cpu / n,
            "system_share": (split1[1] - split0[1]) / max(1e-9, sum(split1) - sum(split0)), "core_pct": 100 * cpu / wall, "polls_per_s": n / wall,
            "success_ratio": float(bus["success_ratio"]), "overruns": float(bus["overruns"]),
            "timeouts": float(bus["timeouts"]),
            "rss_mib": float(last.stats["rss_bytes"]) / 2**20,
            "loop_lag_ms": float(last.stats["loop_lag_ms"]),
            "outbox_depth": float(last.stats["outbox_depth"] or 0),
        }
    finally:
        listener.stop()
        code = daemon.stop()
        if code not in (0, None):
            print(f"warning: busy daemon exited with {code}; log tail:\n{daemon.log_tail()}",
                  file=sys.stderr)


def idle_interval(needed_s: float) -> float:
    """A poll interval whose next wall-clock-aligned slot is more than ``needed_s`` away (the
    first slot is due at once; see gateway.acquisition.schedule.PollSchedule.aligned)."""
    now = time.time()
    for interval in (86400.0, 86400.0 - 3600, 86400.0 - 7200):
        if interval - now % interval > needed_s:
            return interval
    raise MeasurementError("no suitable idle interval found")  # pragma: no cover


def idle_phase(workdir: Path, broker_port: int, modbus_port: int, settle_s: float,
               seconds: float) -> dict[str, float]:
    interval = idle_interval(settle_s + seconds + 120)
    daemon = Daemon(workdir / "idle")
    daemon.workdir.mkdir()
    (daemon.workdir / "profiles").symlink_to(workdir / "profiles")
    listener = GatewayListener(broker_port).start()
    try:
        pid = daemon.start(daemon_config(broker_port, modbus_port, interval, 30, "var"))
        deadline = time.monotonic() + 60
        while listener.reads_messages < METERS:
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise MeasurementError(f"only {listener.reads_messages} of {METERS} first polls "
                                       "reached the broker within 60 s")
            time.sleep(0.1)
        time.sleep(settle_s)
        t0, c0 = time.monotonic(), proc_cpu_s(pid)
        reads0 = listener.reads_messages
        time.sleep(seconds)
        daemon.check_alive()
        t1, c1 = time.monotonic(), proc_cpu_s(pid)
        return {"wall_s": t1 - t0, "cpu_s": c1 - c0, "core_pct": 100 * (c1 - c0) / (t1 - t0),
                "interval_s": interval, "polls_in_window": listener.reads_messages - reads0}
    finally:
        listener.stop()
        daemon.stop()


def third_party_floor(broker_port: int, modbus_port: int, seconds: float) -> dict[str, float]:
    """pymodbus + paho alone, same rate, same simulator and broker (bench/third_party_floor.py)."""
    done = subprocess.run([sys.executable, "-m", "bench.third_party_floor", "--modbus-port",
                           str(modbus_port), "--broker-port", str(broker_port), "--units",
                           str(METERS), "--rate", str(METERS), "--seconds", str(seconds),
                           "--event-loop", LOOP],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=seconds * 3 + 60)
    if done.returncode != 0:
        raise MeasurementError(f"third-party floor failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    global CONFIG_EXTRA, LOOP, PAYLOAD_VERSION
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--quick", action="store_true", help="20 s busy + 15 s idle (smoke check)")
    parser.add_argument("--seconds", type=float, default=None, help="busy window (default 120)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 120)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the busy daemon under cProfile, writing FILE")
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="sample the busy daemon with py-spy, writing folded stacks to FILE")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=LOOP,
                        help=f"the daemon's [gateway] event_loop (default here: {LOOP})")
    parser.add_argument("--config-extra", default="",
                        help="TOML appended to the daemon's config, e.g. "
                             "'[store]\\ncommit_window_ms = 200' (\\n for new lines)")
    parser.add_argument("--payload-version", type=int, choices=(1, 2), default=None,
                        help="the daemon's [mqtt] payload_version (default: its default, 2)")
    args = parser.parse_args()
    PAYLOAD_VERSION = args.payload_version
    CONFIG_EXTRA = args.config_extra.replace("\\n", "\n")
    LOOP = args.event_loop
    busy_s = args.seconds or (20.0 if args.quick else 120.0)
    idle_s = args.idle_seconds or (15.0 if args.quick else 120.0)
    warmup_s = 3.0 if args.quick else 15.0
    note_start()
    sim: Simulator | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-modbus-cpu-") as tmp:
            workdir = Path(tmp)
            requests = write_profile(workdir)
            with private_broker(workdir) as broker:
                sim = start_simulator(["--modbus-tcp-meters", str(METERS), "--modbus-port", "0",
                                       "--seed", "4"], workdir / "sim.log")
                assert sim.modbus_port is not None
                busy = busy_phase(workdir, broker.port, sim.modbus_port, warmup_s, busy_s,
                                  args.profile.resolve() if args.profile else None,
                                  args.py_spy.resolve() if args.py_spy else None)
                floor = third_party_floor(broker.port, sim.modbus_port, 10.0 if args.quick else 30.0)
                idle = idle_phase(workdir, broker.port, sim.modbus_port, 5.0 if args.quick else 10.0,
                                  idle_s)
    except MeasurementError as exc:
        return fail(str(exc))
    finally:
        if sim is not None:
            sim.stop()

    busy_ok = busy["ms_per_poll"] <= GOAL_MS_PER_POLL
    idle_ok = idle["core_pct"] <= GOAL_IDLE_PCT
    profiled = (" (under cProfile: inflated)" if args.profile else
                " (sampled by py-spy)" if args.py_spy else "")
    rows = [
        ("meters, quantities, requests/poll", f"{METERS} Modbus TCP, 10 each, {requests} merged read", ""),
        ("event loop of the daemon and of the floor's Modbus clients", LOOP, ""),
        ("busy: polls due / completed", f"100/s / {busy['polls_per_s']:.1f}/s "
         f"({busy['polls']:.0f} polls in {busy['wall_s']:.0f} s)", ""),
        ("busy: success ratio, overruns", f"{busy['success_ratio']:.4f}, {busy['overruns']:.0f}", ""),
        ("busy: reads messages at the broker", f"{busy['reads_messages']:.0f}", "≈ polls"),
        ("busy: daemon CPU", f"{busy['cpu_s']:.1f} s = {busy['core_pct']:.1f} % of a core "
         f"({100 * busy['system_share']:.0f} % of it in the kernel)", ""),
        ("CPU per meter poll" + profiled, f"{busy['ms_per_poll']:.3f} ms",
         verdict(busy_ok, f"<= {GOAL_MS_PER_POLL} ms")),
        ("floor: pymodbus read + paho QoS 1 publish alone",
         f"{floor['modbus_cpu_ms_per_request']:.3f} + {floor['mqtt_cpu_ms_per_message']:.3f} = "
         f"{floor['modbus_cpu_ms_per_request'] + floor['mqtt_cpu_ms_per_message']:.3f} ms", ""),
        ("the daemon's own work per poll (above the floor)",
         f"{busy['ms_per_poll'] - floor['modbus_cpu_ms_per_request'] - floor['mqtt_cpu_ms_per_message']:.3f} ms",
         ""),
        ("busy: RSS, loop lag, outbox depth", f"{busy['rss_mib']:.1f} MiB, {busy['loop_lag_ms']:.1f} ms, "
         f"{busy['outbox_depth']:.0f}", ""),
        ("idle: poll interval, polls in window", f"{idle['interval_s']:.0f} s, {idle['polls_in_window']:.0f}", "0"),
        ("idle: daemon CPU", f"{idle['cpu_s']:.2f} s in {idle['wall_s']:.0f} s = "
         f"{idle['core_pct']:.2f} % of a core", verdict(idle_ok, f"<= {GOAL_IDLE_PCT} %")),
    ]
    print_table("Daemon CPU per Modbus TCP meter poll, and idle", rows,
                ["daemon CPU from /proc/PID/stat (utime+stime); polls from committer.polls in P/G/health; "
                 "simulator and mosquitto in their own processes"])
    return 1 if args.strict and not (busy_ok and idle_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
