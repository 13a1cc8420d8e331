"""Run every benchmark once, in quick mode where a script has one (``make bench``).

Each script prints its own table; this runner only sequences them (never two at once: the
machine has two cores and CPU figures would disturb each other) and reports which failed.
Full-length runs (10-minute soaks, 1,000-meter accuracy) are run by calling a script directly.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
#: (script, arguments) in order; quick settings so the whole run takes a few minutes.
RUNS: list[tuple[str, list[str]]] = [
    ("bench_decode.py", ["--seconds", "3"]),
    ("fuzz_dlt645.py", ["--count", "100000"]),
    ("bench_bus_efficiency.py", ["--seconds", "20"]),
    ("bench_store.py", []),
    ("bench_command_verify.py", ["--count", "200"]),
    ("bench_load_control.py", []),
    ("bench_trip_latency.py", ["--quick", "--baud", "9600"]),
    ("bench_publish.py", ["--quick"]),
    ("bench_modbus_cpu.py", ["--quick"]),
    ("bench_overload.py", ["--quick"]),
    ("bench_soak.py", ["--quick"]),
    ("bench_vee.py", []),
    ("bench_groups.py", []),
]


def main() -> int:
    failed: list[str] = []
    for script, args in RUNS:
        path = BENCH / script
        if not path.exists():
            continue
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, str(path), *args], cwd=BENCH.parent)
        print(f"=== {script}: exit {code} in {time.monotonic() - t0:.0f} s", flush=True)
        if code != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed or missed their goal: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
