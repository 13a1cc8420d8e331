"""Where the daemon's Python heap goes: the daemon run in this process under tracemalloc.

    .venv/bin/python bench/daemon_heap.py --config gateway.toml [--seconds 60] [--top 20]
                                          [--by-module]

Runs ``edge-gateway run --config`` in this interpreter with ``tracemalloc`` on (one frame per
allocation), takes a snapshot after ``--seconds`` and stops the daemon with SIGTERM, as systemd
would. It prints the traced total and the largest allocation sites by file and by line. Code
objects and module dictionaries show as ``<frozen importlib._bootstrap…>``. Tracing slows the
start several times over, so give it time: at 100 meters, 45 s on a loaded 2-core machine. It needs
the configuration's broker and meters to be reachable for a heap that includes polled state.
RSS (the kernel's view, with the shared libraries) is measured from outside by the peer
benchmark or ``/proc/PID/smaps_rollup``; this shows only Python's allocations.

``--by-module`` also charges each imported module with what its body allocated while it ran
(code objects, module dict, classes, the methods ``dataclasses`` generates, tables built at
import), minus the modules it imported in turn, and prints the sums by package. An extension
module's own initialisation is charged to the module that imported it.
"""

from __future__ import annotations

import argparse
import collections
import importlib.abc
import importlib.machinery
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Traced bytes each module's body allocated, its own imports excluded (``--by-module``).
MODULE_BYTES: collections.Counter[str] = collections.Counter()
_nested: list[int] = []


class _CostedLoader(importlib.abc.Loader):
    """Runs another loader's ``exec_module`` and charges the module with what it allocated."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        start = tracemalloc.get_traced_memory()[0]
        _nested.append(0)
        try:
            self.inner.exec_module(module)
        finally:
            children = _nested.pop()
            spent = tracemalloc.get_traced_memory()[0] - start
            MODULE_BYTES[module.__name__] += spent - children
            if _nested:
                _nested[-1] += spent

    def __getattr__(self, name: str) -> object:  # is_package, get_code, ... of the real loader
        return getattr(self.inner, name)


class _CostedFinder(importlib.abc.MetaPathFinder):
    """The other finders' spec, with its loader wrapped in :class:`_CostedLoader`."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CostedLoader(spec.loader)
                return spec
        return None


def report_modules(top: int) -> None:
    total = sum(MODULE_BYTES.values())
    print(f"-- imported modules: {total / 2**20:.1f} MiB in {len(MODULE_BYTES)} modules",
          file=sys.stderr)
    for depth in (1, 2):
        sums: collections.Counter[str] = collections.Counter()
        for name, size in MODULE_BYTES.items():
            sums[".".join(name.split(".")[:depth])] += size
        print(f"-- by package (depth {depth})", file=sys.stderr)
        for name, size in sums.most_common(top):
            print(f"{size / 2**20:8.2f} MiB {name}", file=sys.stderr)


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
    parser.add_argument("--by-module", action="store_true",
                        help="also what each imported module's body allocated, by package")
    args = parser.parse_args()
    tracemalloc.start(1)
    if args.by_module:
        sys.meta_path.insert(0, _CostedFinder())

    def snapshot_then_stop() -> None:
        time.sleep(args.seconds)
        report(args.top)
        if args.by_module:
            report_modules(args.top)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=snapshot_then_stop, daemon=True).start()
    from gateway.app.cli import main as gateway_main

    return gateway_main(["run", "--config", args.config])


if __name__ == "__main__":
    sys.exit(main())
