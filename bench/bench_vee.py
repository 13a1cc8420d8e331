"""VEE kernel bench: the whole rule set on 2,000 meters × 96 intervals (issue 4).

    python bench/bench_vee.py [--meters 2000] [--repeat 30] [--memory]

One run reports, for :func:`edge_rules.vee_engine.rule_chain` (register scan, duplicates,
stopped/reverse, spike, estimation cascade, history band, multiplier, interval sum, grading):

* values/s with the fused numba kernel, the composed NumPy twins, and the same kernel source run
  by the interpreter (a fresh process with ``NUMBA_DISABLE_JIT=1``, on a slice of the meters: it
  is slow), and the ratios between them;
* the whole ``VeeEngine.evaluate`` per poll cycle (the rule set plus gathering state and
  parameters in Python; history lookups are made once per window between commits) — what the
  daemon will spend;
* numba's first-call compile time and the cached start (a fresh process loading every kernel
  from ``NUMBA_CACHE_DIR``), each in a new interpreter;
* with ``--memory``: the history's bytes for 2,000 meters, declared and measured with
  tracemalloc after filling three years of days and eight weeks of intervals.

The inputs are real: a synthetic fleet (hil_tests.synthetic_reads, with faults) runs through the
engine for a week so that history, state and estimation sources are what a gateway would hold.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_rules.vee_engine import VeeEngine  # noqa: E402
from edge_rules.vee_rules import MeterClass, VeeConfig  # noqa: E402
from edge_rules.vee_ruleset import ChainInputs, rule_chain  # noqa: E402
from hil_tests.synthetic_reads import FleetSpec, SyntheticFleet  # noqa: E402

S = 96


def prepare(meters: int, warm_days: int = 7) -> tuple[VeeEngine, ChainInputs]:
    """An engine that has seen ``warm_days`` days of a fleet, and the chain inputs of the next."""
    fleet = SyntheticFleet(FleetSpec(meters=meters, days=warm_days + 1, seed=11,
                                     fault_rate=0.03))
    classes = {name: MeterClass(name) for name in ("default", "residential", "commercial",
                                                   "industrial")}
    engine = VeeEngine(VeeConfig(calendar=fleet.spec.calendar, classes=classes),
                       fleet.meter_ids, fleet.classes, contract_kw=fleet.contract_kw.tolist(),
                       register_digits=fleet.digits.tolist(),
                       generating=fleet.generating.tolist())
    inputs = None
    for data in fleet.days():
        window = engine.window(data.day)
        window.reads[:] = data.register
        window.power[:] = data.power
        window.export[:] = data.export
        window.conflict[:] = (~np.isnan(data.duplicate)).astype(np.uint8)
        inputs, _, _ = engine.chain_inputs(window)
        if data.day < fleet.first_day + warm_days:
            engine.commit(engine.evaluate(window))
    assert inputs is not None
    return engine, inputs


def subset(inputs: ChainInputs, n: int) -> ChainInputs:
    rows = np.arange(n)
    fields = {}
    for name in ChainInputs.__slots__:
        value = getattr(inputs, name)
        if name == "params":
            value = value.take(rows)
        elif name == "check_rows":
            value = np.where(value[:n] < n, value[:n], -1)
        elif isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value[:n])
        fields[name] = value
    return ChainInputs(**fields)


def time_chain(inputs: ChainInputs, impl: str, repeat: int) -> float:
    """Best time of ``repeat`` runs (seconds): the machine is shared, the best is the cost."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        rule_chain(inputs, impl)
        best = min(best, time.perf_counter() - t0)
    return best


#: Run in a fresh interpreter: time the import, then the first rule-set call (compiling every
#: kernel, or loading it from NUMBA_CACHE_DIR), from interpreter start.
CHILD = """
import json, pickle, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from edge_rules.vee_ruleset import rule_chain
imported = time.perf_counter() - t0
with open({inputs!r}, "rb") as handle:
    x = pickle.load(handle)
t1 = time.perf_counter()
rule_chain(x, "nb")
first = time.perf_counter() - t1
best = float("inf")
for _ in range({repeat}):
    t2 = time.perf_counter()
    rule_chain(x, "nb")
    best = min(best, time.perf_counter() - t2)
print(json.dumps({{"import_s": imported, "first_call_s": first, "best_s": best}}))
"""


def fresh_process(inputs: Path, env_extra: dict[str, str], repeat: int = 1) -> dict[str, float]:
    env = dict(os.environ, **env_extra)
    code = CHILD.format(root=str(ROOT), inputs=str(inputs), repeat=repeat)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True, cwd=ROOT)
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def memory(meters: int) -> tuple[int, int]:
    from edge_rules.history import DAILY_DAYS, INTERVAL_DAYS, History

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History([f"m-{i:05d}" for i in range(meters)])
    rows = np.arange(meters)
    rng = np.random.default_rng(0)
    daily = rng.uniform(1.0, 50.0, (meters, len(history.registers)))
    intervals = rng.uniform(0.0, 2.0, (meters, S))
    estimated = np.zeros((meters, S), dtype=bool)
    for day in range(20_000 - DAILY_DAYS, 20_000):
        if day >= 20_000 - INTERVAL_DAYS:
            history.put_day(rows, day, daily, np.zeros(meters, bool), intervals, estimated)
        else:
            history.put_day(rows, day, daily, np.zeros(meters, bool),
                            np.full((meters, S), np.nan), estimated)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return history.nbytes, held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--python-meters", type=int, default=40,
                        help="meters for the interpreted run (values/s does not depend on it)")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args(argv)
    print(f"# VEE kernel bench — {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    engine, inputs = prepare(args.meters)
    values = inputs.reads.size
    rule_chain(inputs, "nb")  # compiled (or loaded) before timing
    nb = time_chain(inputs, "nb", args.repeat)
    np_ = time_chain(inputs, "np", max(3, args.repeat // 5))
    small = subset(inputs, args.python_meters)
    with tempfile.TemporaryDirectory() as scratch:
        small_path = Path(scratch) / "small.pkl"
        small_path.write_bytes(pickle.dumps(small))
        py = fresh_process(small_path, {"NUMBA_DISABLE_JIT": "1"})["best_s"]
        cache = str(Path(scratch) / "numba-cache")
        cold = fresh_process(small_path, {"NUMBA_CACHE_DIR": cache})
        warm = fresh_process(small_path, {"NUMBA_CACHE_DIR": cache})
    window = engine.window(inputs_day(engine, inputs))
    window.reads[:] = inputs.reads
    window.power[:] = inputs.power
    engine.forget_lookups()  # as after a commit
    t0 = time.perf_counter()
    engine.evaluate(window)  # first evaluation after a commit: history lookups for the window
    first_eval = time.perf_counter() - t0
    best_eval = float("inf")
    for _ in range(max(3, args.repeat // 5)):
        t0 = time.perf_counter()
        engine.evaluate(window)
        best_eval = min(best_eval, time.perf_counter() - t0)
    rates = {"numba (fused kernel)": values / nb, "NumPy twins": values / np_,
             "pure Python (same source, NUMBA_DISABLE_JIT=1)": small.reads.size / py}
    print(f"\nwhole rule set, {args.meters} meters × {S} intervals = {values:,} values "
          f"(best of {args.repeat}; pure Python on {args.python_meters} meters):\n")
    print("| implementation | time for 2,000 × 96 | values/s | numba is |")
    print("|---|---|---|---|")
    fastest = rates["numba (fused kernel)"]
    for name, rate in rates.items():
        ratio = "—" if rate == fastest else f"{fastest / rate:,.1f}× faster"
        print(f"| {name} | {values / rate * 1000:,.2f} ms | {rate / 1e6:,.2f} M | {ratio} |")
    print(f"\nnumba / NumPy twins = **{fastest / rates['NumPy twins']:.1f}×** (goal ≥ 3×); "
          f"numba = **{fastest / 1e6:.0f} M values/s** (goal ≥ 100 M on one core)")
    print(f"engine.evaluate for {args.meters} meters (rule set + state and parameters): "
          f"{best_eval * 1000:.1f} ms per poll cycle; the first evaluation of a window after a "
          f"commit adds the history lookups: {first_eval * 1000:.1f} ms")
    print(f"\nfresh process, empty NUMBA_CACHE_DIR: import {cold['import_s']:.2f} s, first call "
          f"(compiles every kernel) {cold['first_call_s']:.2f} s; cached start: import "
          f"{warm['import_s']:.2f} s + first call {warm['first_call_s']:.2f} s = "
          f"**{warm['import_s'] + warm['first_call_s']:.2f} s** (goal ≤ 2 s)")
    if args.memory:
        declared, measured = memory(2000)
        print(f"\nhistory for 2,000 meters (3 years daily × 5 registers, 8 weeks of intervals): "
              f"{declared / 1e6:.2f} MB in arrays, {measured / 1e6:.2f} MB measured by "
              f"tracemalloc (goal ≤ 50 MB)")
    return 0


def inputs_day(engine: VeeEngine, inputs: ChainInputs) -> int:
    """The day after the last committed one (the day the inputs were gathered for)."""
    return int(engine.state.published_interval.max() + 1) // S


if __name__ == "__main__":
    raise SystemExit(main())
