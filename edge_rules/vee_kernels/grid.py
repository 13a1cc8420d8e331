"""The 15-minute interval grid every VEE kernel works on, and the one kernel that fills it.

Array aliases, the input checks the entry points share, :func:`nan_grid` (numba's ``np.full``
is slow enough to matter) and the ingest kernel :func:`bin_slots`, which puts reads onto the grid
and marks duplicates with different values. Kept apart because every rule module builds on
these; the ingest kernel sits beside its NumPy twin.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
I8 = NDArray[np.int8]
U8 = NDArray[np.uint8]
U32 = NDArray[np.uint32]


def _f64(name: str, value: object, ndim: int) -> F64:
    array = np.ascontiguousarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def _i64(name: str, value: object, ndim: int) -> I64:
    array = np.ascontiguousarray(value, dtype=np.int64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def _same(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")


@njit
def nan_grid(rows: int, cols: int) -> F64:
    """A NaN-filled 2-D array. numba's ``np.full`` fills element by element through an n-d
    index, 15× slower than ``empty`` + slice assignment — more than some whole rules cost."""
    out = np.empty((rows, cols))
    out[:] = np.nan
    return out



def _rows(rows: object, n: int, meters: int) -> I64:
    r = _i64("rows", rows, 1)
    _same("rows", r, (n,))
    if r.size and (r.min() < 0 or r.max() >= meters):
        raise ValueError(f"rows must index the {meters} meters (0..{meters - 1})")
    return r


# ==========================================================================================
# Ingest: reads → interval grid, duplicates with different values
# ==========================================================================================


@njit
def bin_slots_nb(rows: I64, slots: I64, values: F64, meters: int, intervals: int) -> tuple[F64, U8]:
    grid = nan_grid(meters, intervals)
    conflict = np.zeros((meters, intervals), dtype=np.uint8)
    for j in range(rows.shape[0]):
        v = values[j]
        if v != v:
            continue
        r = rows[j]
        k = slots[j]
        held = grid[r, k]
        if held != held:
            grid[r, k] = v
        elif held != v:
            conflict[r, k] = 1
    return grid, conflict


def bin_slots_np(rows: I64, slots: I64, values: F64, meters: int, intervals: int
                 ) -> tuple[F64, U8]:
    grid = np.full((meters, intervals), np.nan)
    conflict = np.zeros((meters, intervals), dtype=np.uint8)
    valid = ~np.isnan(values)
    r = rows[valid]
    k = slots[valid]
    v = values[valid]
    flat = r * intervals + k
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    first = np.ones(flat_sorted.size, dtype=bool)
    first[1:] = flat_sorted[1:] != flat_sorted[:-1]
    first_value = v[order][first]
    grid.ravel()[flat_sorted[first]] = first_value
    group = np.cumsum(first) - 1
    differs = v[order] != first_value[group]
    bad = np.zeros(first_value.size, dtype=bool)
    np.logical_or.at(bad, group, differs)
    conflict.ravel()[flat_sorted[first][bad]] = 1
    return grid, conflict


def bin_slots(rows: I64, slots: I64, values: F64, meters: int, intervals: int) -> tuple[F64, U8]:
    """Place reads on the grid: the first read of an interval wins; ``conflict`` marks intervals
    that received another read with a different value (a duplicate that disagrees — which of the
    two is right cannot be known). NaN values are skipped."""
    v = _f64("values", values, 1)
    r = _rows(rows, v.size, meters)
    k = _i64("slots", slots, 1)
    _same("slots", k, v.shape)
    if k.size and (k.min() < 0 or k.max() >= intervals):
        raise ValueError(f"slots must be within 0..{intervals - 1}")
    return bin_slots_nb(r, k, v, int(meters), int(intervals))


