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

Freed memory goes back to the kernel: CPython returns its small-object arenas when they empty,
but memory freed through ``malloc`` (the start-up's transient objects: the TOML parse, config
validation, building the plan and 100 meters' state, the VEE history load) stays in glibc's heap,
which gives back only its top and only above a threshold that grows with every large block
NumPy frees. :func:`release_free_memory` asks glibc to hand every free page back
(``malloc_trim``), from the maintenance loop: :data:`TRIM_FIRST_S` after start, once the
first poll cycles and VEE's first evaluation have come and gone — right after start would be
too early, the first cycle then takes the pages back and frees them again; measured on the
100-meter daemon, about 5 MiB less RSS (docs/performance.md, issue 18) — and then every
:data:`TRIM_INTERVAL_S` for what later interval boundaries freed. A call takes under 1 ms
at that size (4 ms on a 200 MB heap with 50,000 free holes: still nothing the event loop
notices once a minute). Elsewhere than glibc it does nothing.

A reload builds a new runtime and drops the old one: :func:`thaw` first returns the frozen
objects to the collector, so cycles of the old runtime are freed, and :func:`freeze_long_lived`
sets the new state aside again once it runs.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable

#: Net new container objects between collections of the youngest generation (CPython: 700).
YOUNG_THRESHOLD = 10_000
#: Seconds after start of the maintenance loop's first :func:`release_free_memory`, and between
#: two later ones.
TRIM_FIRST_S = 10.0
TRIM_INTERVAL_S = 60.0

@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once; None where the C library has none."""
    try:
        trim: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
    return trim


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the kernel (module docstring). False where the C
    library has no ``malloc_trim`` (musl, macOS): nothing to do there."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


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
