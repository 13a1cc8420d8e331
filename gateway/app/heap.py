"""The cyclic garbage collector in a long-running daemon: what was built at start is set aside.

A running gateway holds some 90,000 container objects for its whole life: modules, the config
and profiles, decode plans, the VEE and theft windows, the runtime's tasks. CPython's full
(generation 2) collection walks every one of them each time enough young objects survived,
about every 10–20 s at 100 polls a second, 30–40 ms of CPU each, to find nothing to free (they
are all alive by design). :func:`gc.freeze` moves them to a permanent generation the collector
never walks; what the polls allocate afterwards is collected exactly as before. Measured in the
peer benchmark's 100-meter run: time in the collector 8.7 % → 3.7 % of the daemon's CPU
(docs/performance.md).

The youngest generation is collected after 10,000 net new container objects instead of 700.
A poll allocates a few dozen (values, records, messages) that live until their batch is
committed and published, tens of milliseconds; at 700 the collector ran about ten times a
second, walking the batch in flight each time and promoting it to be walked again in the
middle generation. At 10,000 it runs about once a second and finds most of them already freed
by reference counting: time in the collector 4.6 % → 0.6 % of the daemon's CPU in the same
benchmark. Garbage in reference cycles (rare here) waits up to that many allocations longer,
a few hundred kilobytes at most.

A reload builds a new runtime and drops the old one: :func:`thaw` first returns the frozen
objects to the collector, so cycles of the old runtime are freed, and :func:`freeze_long_lived`
sets the new state aside again once it runs.
"""

from __future__ import annotations

import gc

#: Net new container objects between collections of the youngest generation (CPython: 700).
YOUNG_THRESHOLD = 10_000


def freeze_long_lived() -> int:
    """Collect what start-up left behind, freeze everything alive, and collect the youngest
    generation less often (module docstring). Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
    return gc.get_freeze_count()


def thaw() -> None:
    """Give every frozen object back to the collector (before a reload drops a runtime)."""
    gc.unfreeze()
