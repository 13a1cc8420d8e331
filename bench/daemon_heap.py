"""Where the daemon's Python heap goes: the daemon run in this process under tracemalloc.

    .venv/bin/python bench/daemon_heap.py --config gateway.toml [--seconds 60] [--top 20]

Runs ``edge-gateway run --config`` in this interpreter with ``tracemalloc`` on (one frame per
allocation), takes a snapshot after ``--seconds`` and stops the daemon with SIGTERM, as systemd
would. It prints the traced total and the largest allocation sites by file and by line. Code
objects and module dictionaries show as ``<frozen importlib._bootstrap…>``. Tracing slows the
start several times over, so give it time: at 100 meters, 45 s on a loaded 2-core machine. It needs
the configuration's broker and meters to be reachable for a heap that includes polled state.
RSS (the kernel's view, with the shared libraries) is measured from outside by the peer
benchmark or ``/proc/PID/smaps_rollup``; this shows only Python's allocations.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def report(top: int) -> None:
    snapshot = tracemalloc.take_snapshot()
    by_file = snapshot.statistics("filename")
    total = sum(stat.size for stat in by_file)
    print(f"traced Python heap: {total / 2**20:.1f} MiB", file=sys.stderr)
    for kind, stats in (("file", by_file), ("line", snapshot.statistics("lineno"))):
        print(f"-- largest by {kind}", file=sys.stderr)
        for stat in stats[:top]:
            print(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} {stat.traceback[0]}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    tracemalloc.start(1)

    def snapshot_then_stop() -> None:
        time.sleep(args.seconds)
        report(args.top)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=snapshot_then_stop, daemon=True).start()
    from gateway.app.cli import main as gateway_main

    return gateway_main(["run", "--config", args.config])


if __name__ == "__main__":
    sys.exit(main())
