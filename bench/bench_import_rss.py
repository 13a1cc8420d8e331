"""What each dependency costs in RSS and import time: one fresh interpreter per module.

    .venv/bin/python bench/bench_import_rss.py [--repeat N] [--cumulative] [module ...]

Why one interpreter per module: imports share their own dependencies (pymodbus and the gateway
both pull in asyncio), so the cost of a module only means something against the same baseline, a
bare interpreter that has run ``site``. Each child prints its VmRSS (``/proc/self/status``) before
and after ``importlib.import_module`` and the wall time of the import; the table shows the
difference, the median of ``--repeat`` runs. The gateway's own entry points are in the default
list too, so the table says how much of the daemon's start-up RSS is a third-party library and how
much the project's modules (``gateway.app.daemon`` is everything ``edge-gateway run`` imports
before it reads a configuration).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_rig import REPO, command_line, import_rss_kib, note_start

#: The daemon's imports in the order that attributes shared modules (asyncio) to the first user.
CUMULATIVE_MODULES = (
    "asyncio", "uvloop", "numpy", "ctypes", "cbor2",
    "serial", "pymodbus.client", "paho.mqtt.client", "construct", "protocols.dlt645",
    "gateway.config", "gateway.acquisition.factory", "gateway.pipeline.vee_stage",
    "gateway.control.commands.handler", "gateway.app.runtime", "gateway.app.daemon",
)

DEFAULT_MODULES = (
    "asyncio", "uvloop", "numpy", "numba", "llvmlite.binding", "cryptography.hazmat.primitives.asymmetric.ed25519", "protocols.ed25519",
    "rich.console", "pymodbus.client", "paho.mqtt.client", "cbor2", "construct", "serial",
    "edge_rules.vee_rules", "gateway.config", "gateway.app.runtime", "gateway.app.daemon",
)

_PROBE = """
import importlib, sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0
before = rss()
t0 = time.perf_counter()
importlib.import_module(sys.argv[1])
took = time.perf_counter() - t0
print(before, rss(), took)
"""


def probe(module: str) -> tuple[int, int, float]:
    """(RSS before KiB, RSS after KiB, import seconds) of importing ``module`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"import {module} failed: {last}")
    before, after, took = out.stdout.split()
    return int(before), int(after), float(took)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT_MODULES))
    parser.add_argument("--repeat", type=int, default=3, help="runs per module; the median is shown")
    parser.add_argument("--cumulative", action="store_true",
                        help="one interpreter imports the daemon's dependencies one after another: "
                        "what each adds on top of the ones before")
    args = parser.parse_args(argv)
    print(note_start())
    print(f"command: {command_line()}")
    if args.cumulative:
        given = args.modules != list(DEFAULT_MODULES)
        return cumulative(args.modules if given else list(CUMULATIVE_MODULES))
    print(f"python {sys.version.split()[0]}; one fresh interpreter per module and run, "
          f"median of {args.repeat}")
    print("| module | RSS before (MiB) | RSS added (MiB) | import time (ms) |")
    print("|---|---|---|---|")
    failed = 0
    for module in args.modules:
        try:
            runs = [probe(module) for _ in range(args.repeat)]
        except RuntimeError as exc:
            print(f"| `{module}` | – | – | {exc} |")
            failed += 1
            continue
        before = statistics.median(r[0] for r in runs) / 1024
        added = statistics.median(r[1] - r[0] for r in runs) / 1024
        took = statistics.median(r[2] for r in runs) * 1000
        print(f"| `{module}` | {before:.1f} | {added:.1f} | {took:.0f} |")
    return 2 if failed else 0


def cumulative(modules: list[str]) -> int:
    print("| module (imported after the rows above) | RSS (MiB) | added (MiB) |")
    print("|---|---|---|")
    previous: int | None = None
    for name, kib in import_rss_kib(modules):
        added = 0 if previous is None else kib - previous
        print(f"| `{name}` | {kib / 1024:.1f} | {added / 1024:.1f} |")
        previous = kib
    return 0


if __name__ == "__main__":
    sys.exit(main())
