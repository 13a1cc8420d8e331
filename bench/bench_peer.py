"""Side by side with the peer gateway, in one run: CPU per meter poll, RSS and idle CPU (issue 18).

    .venv/bin/python bench/bench_peer.py [--peer-script ../shared/bench/peer_modbus.py]
                                         [--meters 100] [--window 60] [--warmup 20]
                                         [--no-idle] [--out FILE.jsonl] [--strict]

Runs the shared harness (``peer_modbus.py``, README beside it: a pymodbus TCP simulator of N
meters × 12 holding registers polled every second, a private mosquitto, each gateway measured
from outside through ``/proc``) for the peer (ThingsBoard IoT Gateway, in the harness's own venv)
and for this daemon (``python -m gateway.app.cli run`` from this checkout, the harness's config
template and meter profile), **in one run**, with ``--idle`` so each gateway is also measured
with 1 meter at 1 s. Then prints the goals of issue 18 as ratios of that run — absolute times of
different runs are not comparable (the harness's README) — and one Markdown row for the table in
docs/performance.md, with the machine, the date and the load average.

Goals: our CPU per meter poll ≤ 0.1 × the peer's; our RSS below the peer's at N meters; our idle
CPU below the peer's. Exit status: 0 measured, 1 with ``--strict`` when a goal is missed, 2 when
the harness failed or a gateway did not report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEER = ROOT.parent / "shared" / "bench" / "peer_modbus.py"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pick(rows: list[dict[str, Any]], gateway: str, meters: int) -> dict[str, Any] | None:
    found = [r for r in rows if r.get("gateway") == gateway and r.get("meters") == meters]
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-script", type=Path, default=DEFAULT_PEER)
    ap.add_argument("--meters", type=int, default=100)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--no-idle", action="store_true", help="skip the 1-meter idle runs")
    ap.add_argument("--out", type=Path, help="also keep the harness's JSON lines here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args(argv)
    if not args.peer_script.is_file():
        print(f"bench_peer: no harness at {args.peer_script} (give --peer-script)", file=sys.stderr)
        return 2
    bench_dir = args.peer_script.resolve().parent
    ours = (f"exec env PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)} "
            "-m gateway.app.cli run --config {config}")
    with tempfile.TemporaryDirectory(prefix="bench_peer-") as tmp:
        out = args.out or Path(tmp) / "peer.jsonl"
        if out.exists():
            out.unlink()
        cmd = [sys.executable, str(args.peer_script), "--gateway", "tbgw", "--gateway", "cmd",
               "--name", "ours", "--cmd", ours,
               "--config-template", str(bench_dir / "edge-gateway.toml.tmpl"),
               "--profile", str(bench_dir / "peer-meter-profile.toml"),
               "--meters", str(args.meters), "--poll", "1", "--window", str(args.window),
               "--warmup", str(args.warmup), "--out", str(out)]
        if not args.no_idle:
            cmd.append("--idle")
        load_before = os.getloadavg()
        started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        proc = subprocess.run(cmd, check=False)
        load_after = os.getloadavg()
        if proc.returncode != 0 or not out.exists():
            print(f"bench_peer: the harness failed (exit {proc.returncode})", file=sys.stderr)
            return 2
        rows = _rows(out)
    peer, us = _pick(rows, "tbgw", args.meters), _pick(rows, "ours", args.meters)
    if peer is None or us is None or not (peer.get("ok") and us.get("ok")):
        print("bench_peer: a gateway did not report a valid loaded run", file=sys.stderr)
        return 2
    cpu_ratio = us["cpu_ms_per_meter_poll"] / peer["cpu_ms_per_meter_poll"]
    goals = {"cpu per poll ≤ 0.1 × peer": cpu_ratio <= 0.1,
             "RSS below peer": us["rss_mb"] < peer["rss_mb"]}
    idle_txt = "not measured"
    if not args.no_idle:
        peer_idle, us_idle = _pick(rows, "tbgw", 1), _pick(rows, "ours", 1)
        if peer_idle is None or us_idle is None:
            print("bench_peer: an idle run is missing", file=sys.stderr)
            return 2
        goals["idle CPU below peer"] = (us_idle["cpu_pct_of_core"]
                                        < peer_idle["cpu_pct_of_core"])
        idle_txt = (f"{peer_idle['cpu_pct_of_core']} % / {us_idle['cpu_pct_of_core']} % of a "
                    "core")
    print(f"\n{_cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{started} UTC, load average {load_before[0]:.2f} → {load_after[0]:.2f}")
    print(f"CPU per meter poll: peer {peer['cpu_ms_per_meter_poll']} ms, ours "
          f"{us['cpu_ms_per_meter_poll']} ms → ours = {cpu_ratio:.3f} × peer "
          f"({1 / cpu_ratio:.1f}× lower)")
    print(f"RSS at {args.meters} meters: peer {peer['rss_mb']} MB, ours {us['rss_mb']} MB "
          f"(ours {us['rss_mb_start']}–{us['rss_mb_max']} over the window)")
    print(f"idle CPU (1 meter at 1 s), peer / ours: {idle_txt}")
    for goal, met in goals.items():
        print(f"  {'met   ' if met else 'MISSED'} {goal}")
    print("\n| run (UTC), load | peer ms/poll | ours ms/poll | ratio | peer RSS | our RSS | idle "
          "peer / ours |")
    print(f"| {started}, {load_before[0]:.1f} → {load_after[0]:.1f} | "
          f"{peer['cpu_ms_per_meter_poll']} | {us['cpu_ms_per_meter_poll']} | "
          f"{1 / cpu_ratio:.1f}× | {peer['rss_mb']} MB | {us['rss_mb']} MB | {idle_txt} |")
    return 1 if args.strict and not all(goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
