"""Load-control costs: the limit kernels and the engine the daemon drives.

    python bench/bench_load_control.py [--groups 100] [--intervals 1440] [--repeat 5]

Kernels (edge_rules/load_limits.py) over ``groups × intervals`` (a day of minutes by default),
window 15 intervals, all four limit kinds installed: values per second for the numba kernel,
its NumPy twin and the same code as plain Python (the kernel's ``py_func``), then the first-call
compile time in a fresh process with an empty ``NUMBA_CACHE_DIR`` and the start time of a second
fresh process loading from that cache.

Engine (gateway/control/load_control/engine.py), 50 groups of 8 meters, every group under a limit:
``tick`` (what the daemon calls about once a second), ``on_power`` for one group, ``on_command``
for an immediate trip (command in → SendControl out; the frame, the bus and verification come
after) and ``to_dict`` + ``json.dumps`` (what the daemon persists).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_rules.load_limits import (
    LimitSchedule,
    effective_limits_nb,
    effective_limits_np,
    limit_states_nb,
    limit_states_np,
    sliding_mean_nb,
    sliding_mean_np,
)
from gateway.control.load_control import (
    ControlCommand,
    EngineSettings,
    LoadControlEngine,
    SendControl,
)
from gateway.control.load_control.settings import GroupSpec, MeterSpec, Topology

ROOT = Path(__file__).resolve().parent.parent
_COMPILE = """
import time, numpy as np
t = time.perf_counter()
from edge_rules.load_limits import sliding_mean, effective_limits, limit_states, LimitSchedule
p = np.ones((1, 3)); c = sliding_mean(p, np.array([2]))
l, k = effective_limits(np.arange(3, dtype=np.int64), LimitSchedule.empty(1))
limit_states(c, l, np.array([0.05]))
print(time.perf_counter() - t)
"""


def _schedule(groups: int) -> LimitSchedule:
    s = LimitSchedule.empty(groups, 8 * 3600 * 1000)
    s.kind_from_ms[:, :] = 0
    s.kind_until_ms[:, :] = 2**62
    s.kind_from_ms[:, 0] = 36 * 3600 * 1000  # float-down only for a while
    s.fixed_kw[:, :] = [[400.0, 450.0, 500.0]] * groups
    s.rest_weekdays[:] = 0b1100000
    s.rest_start_min[:] = 8 * 60
    s.rest_duration_min[:] = 600
    for p in range(8):
        s.period_start_min[:, p] = p * 180
        s.period_end_min[:, p] = p * 180 + 120
        s.period_kw[:, p] = 300.0 + 10 * p
    s.floor_kw[:] = 100.0
    return s


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_kernels(groups: int, intervals: int, repeat: int) -> None:
    rng = np.random.default_rng(1)
    power = rng.uniform(200, 600, (groups, intervals))
    power[rng.random((groups, intervals)) < 0.02] = np.nan
    window = np.full(groups, 15, dtype=np.int64)
    t_ms = (np.arange(intervals, dtype=np.int64) + 28 * 24 * 60) * 60_000
    s = _schedule(groups)
    hyst = np.full(groups, 0.05)
    args = (t_ms, s.kind_from_ms, s.kind_until_ms, s.fixed_kw, s.rest_weekdays, s.rest_start_min,
            s.rest_duration_min, s.period_start_min, s.period_end_min, s.period_kw, s.floor_kw,
            s.utc_offset_ms)

    def pipeline(mean: Any, limits: Any, states: Any) -> Callable[[], Any]:
        def run() -> Any:
            compared = mean(power, window)
            limit, _ = limits(*args)
            return states(compared, limit, hyst)
        return run

    nb = pipeline(sliding_mean_nb, effective_limits_nb, limit_states_nb)
    nb()  # compile (or load from cache) outside the timing
    values = groups * intervals
    results = {
        "numba": _best(nb, repeat),
        "numpy twin": _best(pipeline(sliding_mean_np, effective_limits_np, limit_states_np), repeat),
    }
    small = max(1, groups // 20)
    py_power, py_window = power[:small], window[:small]
    py_args = (args[0],) + tuple(a[:small] if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == groups
                                  else a for a in args[1:])

    def python() -> Any:
        compared = sliding_mean_nb.py_func(py_power, py_window)  # type: ignore[attr-defined]
        limit, _ = effective_limits_nb.py_func(*py_args)  # type: ignore[attr-defined]
        return limit_states_nb.py_func(compared, limit, hyst[:small])  # type: ignore[attr-defined]

    py_time = _best(python, 1) * groups / small
    print(f"kernels: sliding mean (window 15) + effective limit (4 kinds, 8 periods) + states, "
          f"{groups} groups x {intervals} intervals")
    for name, seconds in {**results, "pure Python": py_time}.items():
        print(f"  {name:12s} {values / seconds:14,.0f} values/s  ({seconds * 1000:9.1f} ms)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        first = float(subprocess.run([sys.executable, "-c", _COMPILE], env=env, check=True,
                                     capture_output=True, text=True).stdout)
        cached = float(subprocess.run([sys.executable, "-c", _COMPILE], env=env, check=True,
                                      capture_output=True, text=True).stdout)
    print(f"  first call, cold cache (compile): {first:.2f} s; fresh process, cached: {cached:.2f} s")


def bench_engine(repeat: int) -> None:
    n_groups, per_group = 50, 8
    meters = [MeterSpec(f"g{g}m{i}") for g in range(n_groups) for i in range(per_group)]
    groups = [GroupSpec(f"g{g}", ids, ids) for g in range(n_groups)
              for ids in [tuple(f"g{g}m{i}" for i in range(per_group))]]
    engine = LoadControlEngine(Topology.build(meters, groups),
                               EngineSettings(power_up_protect_s=0.0), rng=random.Random(1))
    t0 = 1_750_000_000.0
    for g in range(n_groups):
        engine.on_command(ControlCommand(bytes([g]) * 16, "limit", (), f"g{g}", {"limit_kw": 1000}), t0)
    for k in range(120):
        for g in range(n_groups):
            engine.on_power(f"g{g}", t0 + k, 500.0)

    def quantiles(samples: list[float]) -> str:
        ordered = sorted(samples)
        p50 = ordered[len(ordered) // 2] * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"

    def timed(calls: list[Callable[[], Any]]) -> list[float]:
        out = []
        for call in calls:
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
        return out

    ticks = timed([lambda k=k: engine.tick(t0 + 120 + k) for k in range(300)])
    powers = timed([lambda k=k: engine.on_power("g1", t0 + 420 + k, 500.0) for k in range(300)])
    trips: list[float] = []
    for n in range(300):
        command = ControlCommand((10_000 + n).to_bytes(16, "big"), "trip",
                                 (f"g{n % n_groups}m{n % per_group}",), None, {})
        start = time.perf_counter()
        out = engine.on_command(command, t0 + 800 + n)
        trips.append(time.perf_counter() - start)
        for o in out:
            if isinstance(o, SendControl):
                engine.on_actuation(o.request_id, t0 + 800 + n, True)
    dump = _best(lambda: json.dumps(engine.to_dict()), repeat)
    size = len(json.dumps(engine.to_dict()))
    print(f"engine: {n_groups} groups x {per_group} meters, every group under a limit")
    print(f"  tick                       {quantiles(ticks)}")
    print(f"  on_power (one group)       {quantiles(powers)}")
    print(f"  on_command immediate trip  {quantiles(trips)}")
    print(f"  to_dict + json.dumps       {dump * 1000:.1f} ms, {size / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--intervals", type=int, default=1440)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bench_kernels(args.groups, args.intervals, args.repeat)
    bench_engine(args.repeat)


if __name__ == "__main__":
    main()
