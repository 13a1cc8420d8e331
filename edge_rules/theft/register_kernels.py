"""Theft and tamper indicators read from the meter's own registers.

Event counters and event flags the meter keeps itself (cover 03300D00, terminal cover 03300E00,
status word 7), and the energy register held against the power it measures (meter stopped,
running fast). Unlike :mod:`edge_rules.theft.phase_kernels` these need no per-phase samples, only
per-meter series ``(meters, samples)``. Each numba kernel sits beside its NumPy twin.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from edge_rules._jit import njit
from edge_rules.arrays import distinct
from edge_rules.theft.episodes import (
    F64,
    I64,
    NO_TIME,
    U8,
    B,
)

MS_PER_HOUR: Final = 3_600_000.0


# --------------------------------------------------------------------------------------------
# Event counters and event flags (cover 03300D00, terminal cover 03300E00, status word 7)
# --------------------------------------------------------------------------------------------


@njit
def counter_events_nb(counts: F64, t_ms: I64) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """An event counter that went up during the window (e.g. DL/T 645 03300D00 meter-cover
    openings). Evidence: new events, the count before, the count after; ``start_ms`` is the
    first sample showing the increase, ``end_ms`` the last sample read."""
    meters, samples = counts.shape
    fired = np.zeros(meters, dtype=np.uint8)
    start = np.full(meters, NO_TIME, dtype=np.int64)
    end = np.full(meters, NO_TIME, dtype=np.int64)
    value = np.zeros(meters)
    before = np.full(meters, np.nan)
    after = np.full(meters, np.nan)
    for m in range(meters):
        for s in range(samples):
            x = counts[m, s]
            if x != x:
                continue
            if before[m] != before[m]:
                before[m] = x
            after[m] = x
            end[m] = t_ms[m, s]
            if x > before[m] and fired[m] == 0:
                fired[m] = 1
                start[m] = t_ms[m, s]
        if fired[m] != 0:
            value[m] = after[m] - before[m]
        else:
            end[m] = NO_TIME
    return fired, np.zeros(meters, dtype=np.uint8), start, end, value, before, after


def counter_events_np(counts: F64, t_ms: I64) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`counter_events_nb`."""
    meters, samples = counts.shape
    present = ~np.isnan(counts)
    any_present = present.any(axis=1)
    idx = np.arange(samples)
    if samples:
        first = np.where(any_present, np.where(present, idx, samples).min(axis=1), 0)
        last = np.where(any_present, np.where(present, idx, -1).max(axis=1), 0)
        before = np.where(
            any_present, np.take_along_axis(counts, first[:, None], axis=1)[:, 0], np.nan
        )
        after = np.where(
            any_present, np.take_along_axis(counts, last[:, None], axis=1)[:, 0], np.nan
        )
    else:
        before = np.full(meters, np.nan)
        after = np.full(meters, np.nan)
    with np.errstate(invalid="ignore"):
        up = present & (counts > before[:, None])
    fired: B = np.asarray(up.any(axis=1), dtype=bool)
    start = np.where(
        fired,
        np.where(up, t_ms, np.iinfo(np.int64).max).min(axis=1) if samples else NO_TIME,
        NO_TIME,
    )
    end = np.where(
        fired,
        np.take_along_axis(t_ms, last[:, None], axis=1)[:, 0] if samples else NO_TIME,
        NO_TIME,
    )
    value = np.where(fired, after - before, 0.0)
    return (
        fired.astype(np.uint8),
        np.zeros(meters, dtype=np.uint8),
        start.astype(np.int64),
        end.astype(np.int64),
        value.astype(np.float64),
        np.asarray(before, dtype=np.float64),
        np.asarray(after, dtype=np.float64),
    )


@njit
def flag_events_nb(flags: U8, t_ms: I64) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """An event flag a meter reports itself (status word 7 cover_open, word 4 a.voltage_loss …),
    one column per sample, 0/1 (255 = not read). Fires on the first sample that shows it: the
    meter has already applied the standard's judgement delay. Evidence: samples with the flag
    set, samples read, and the share set in ``detail``."""
    meters, samples = flags.shape
    fired = np.zeros(meters, dtype=np.uint8)
    start = np.full(meters, NO_TIME, dtype=np.int64)
    end = np.full(meters, NO_TIME, dtype=np.int64)
    value = np.zeros(meters)
    reference = np.zeros(meters)
    detail = np.full(meters, np.nan)
    for m in range(meters):
        for s in range(samples):
            f = flags[m, s]
            if f > 1:
                continue
            reference[m] += 1.0
            if f == 1:
                value[m] += 1.0
                if fired[m] == 0:
                    start[m] = t_ms[m, s]
                fired[m] = 1
                end[m] = t_ms[m, s]
        if reference[m] > 0:
            detail[m] = value[m] / reference[m]
    return fired, np.zeros(meters, dtype=np.uint8), start, end, value, reference, detail


def flag_events_np(flags: U8, t_ms: I64) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`flag_events_nb`."""
    meters, samples = flags.shape
    read = flags <= 1
    set_ = flags == 1
    fired = set_.any(axis=1)
    big = np.iinfo(np.int64).max
    start = np.where(fired, np.where(set_, t_ms, big).min(axis=1) if samples else NO_TIME, NO_TIME)
    end = np.where(
        fired, np.where(set_, t_ms, NO_TIME).max(axis=1) if samples else NO_TIME, NO_TIME
    )
    value = set_.sum(axis=1).astype(np.float64)
    reference = read.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        detail = np.where(reference > 0, value / np.maximum(reference, 1.0), np.nan)
    return (
        fired.astype(np.uint8),
        np.zeros(meters, dtype=np.uint8),
        start.astype(np.int64),
        end.astype(np.int64),
        value,
        reference,
        detail,
    )


# --------------------------------------------------------------------------------------------
# Meter stopped / running fast: the register against the power it measures
# --------------------------------------------------------------------------------------------


@njit
def meter_stopped_nb(
    register: F64, power_kw: F64, t_ms: I64, min_kwh: float
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """The register stood still across consecutive samples while the import power integrated
    (trapezoids of max(P, 0); unknown power counts as none) to at least ``min_kwh``.
    Evidence: the largest energy that went unregistered (kWh), ``min_kwh``, the frozen
    register value; ``start_ms``/``end_ms`` span the qualifying frozen stretches."""
    meters, samples = register.shape
    fired = np.zeros(meters, dtype=np.uint8)
    start = np.full(meters, NO_TIME, dtype=np.int64)
    end = np.full(meters, NO_TIME, dtype=np.int64)
    value = np.zeros(meters)
    detail = np.full(meters, np.nan)
    for m in range(meters):
        s = 0
        while s < samples:
            x = register[m, s]
            if x != x:
                s += 1
                continue
            e = s
            expected = 0.0
            while e + 1 < samples and register[m, e + 1] == x:
                p0 = power_kw[m, e]
                p1 = power_kw[m, e + 1]
                p0 = p0 if p0 > 0.0 else 0.0
                p1 = p1 if p1 > 0.0 else 0.0
                expected += 0.5 * (p0 + p1) * (t_ms[m, e + 1] - t_ms[m, e]) / MS_PER_HOUR
                e += 1
            if expected > value[m]:
                value[m] = expected
                if expected >= min_kwh:
                    detail[m] = x
            if expected >= min_kwh:
                if fired[m] == 0:
                    start[m] = t_ms[m, s]
                fired[m] = 1
                end[m] = t_ms[m, e]
            s = e + 1
    return (
        fired,
        np.zeros(meters, dtype=np.uint8),
        start,
        end,
        value,
        np.full(meters, min_kwh),
        detail,
    )


def _trapezoids_np(power_kw: F64, t_ms: I64) -> F64:
    with np.errstate(invalid="ignore"):
        positive = np.where(power_kw > 0.0, power_kw, 0.0)
    # The kernel's order of operations, so both round alike.
    result: F64 = (
        0.5 * (positive[:, :-1] + positive[:, 1:]) * (t_ms[:, 1:] - t_ms[:, :-1]) / MS_PER_HOUR
    )
    return result


def meter_stopped_np(
    register: F64, power_kw: F64, t_ms: I64, min_kwh: float
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`meter_stopped_nb`: steps with an unchanged register are grouped
    into stretches by a running label, and each stretch's energy is summed in sample order."""
    meters, samples = register.shape
    fired = np.zeros(meters, dtype=np.uint8)
    start = np.full(meters, NO_TIME, dtype=np.int64)
    end = np.full(meters, NO_TIME, dtype=np.int64)
    value = np.zeros(meters)
    detail = np.full(meters, np.nan)
    if samples < 2:
        return (
            fired,
            np.zeros(meters, dtype=np.uint8),
            start,
            end,
            value,
            np.full(meters, min_kwh),
            detail,
        )
    with np.errstate(invalid="ignore"):
        still = register[:, 1:] == register[:, :-1]
    energy = _trapezoids_np(power_kw, t_ms)
    # A stretch starts at every still step whose predecessor was not still.
    opens = still & ~np.concatenate([np.zeros((meters, 1), dtype=bool), still[:, :-1]], axis=1)
    label = np.cumsum(opens, axis=1)
    for m in range(meters):
        for lab in distinct(label[m, still[m]]):
            steps = np.flatnonzero(still[m] & (label[m] == lab))
            expected = float(np.cumsum(energy[m, steps])[-1])
            if expected > value[m]:
                value[m] = expected
                if expected >= min_kwh:
                    detail[m] = register[m, steps[0]]
            if expected >= min_kwh:
                if fired[m] == 0:
                    start[m] = t_ms[m, steps[0]]
                fired[m] = 1
                end[m] = t_ms[m, steps[-1] + 1]
    return (
        fired,
        np.zeros(meters, dtype=np.uint8),
        start,
        end,
        value,
        np.full(meters, min_kwh),
        detail,
    )


@njit
def running_fast_nb(
    register: F64, power_kw: F64, t_ms: I64, factor: float, min_kwh: float
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """Over the window, the register advanced by at least ``min_kwh`` and by more than
    ``factor`` × the energy the import power accounts for (only steps with both registers
    read count). Evidence: registered kWh, ``factor`` × expected, expected kWh."""
    meters, samples = register.shape
    fired = np.zeros(meters, dtype=np.uint8)
    start = np.full(meters, NO_TIME, dtype=np.int64)
    end = np.full(meters, NO_TIME, dtype=np.int64)
    registered = np.zeros(meters)
    expected = np.zeros(meters)
    for m in range(meters):
        first = NO_TIME
        last = NO_TIME
        for s in range(samples - 1):
            a = register[m, s]
            b = register[m, s + 1]
            if a != a or b != b:
                continue
            p0 = power_kw[m, s]
            p1 = power_kw[m, s + 1]
            p0 = p0 if p0 > 0.0 else 0.0
            p1 = p1 if p1 > 0.0 else 0.0
            registered[m] += b - a
            expected[m] += 0.5 * (p0 + p1) * (t_ms[m, s + 1] - t_ms[m, s]) / MS_PER_HOUR
            if first == NO_TIME:
                first = t_ms[m, s]
            last = t_ms[m, s + 1]
        if registered[m] >= min_kwh and registered[m] > factor * expected[m]:
            fired[m] = 1
            start[m] = first
            end[m] = last
    return (
        fired,
        np.zeros(meters, dtype=np.uint8),
        start,
        end,
        registered,
        factor * expected,
        expected,
    )


def running_fast_np(
    register: F64, power_kw: F64, t_ms: I64, factor: float, min_kwh: float
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`running_fast_nb` (sums by ``cumsum`` to add in the kernel's order)."""
    meters, samples = register.shape
    if samples < 2:
        zeros = np.zeros(meters)
        none = np.full(meters, NO_TIME, dtype=np.int64)
        return (
            np.zeros(meters, dtype=np.uint8),
            np.zeros(meters, dtype=np.uint8),
            none,
            none.copy(),
            zeros,
            zeros.copy(),
            zeros.copy(),
        )
    both = ~np.isnan(register[:, 1:]) & ~np.isnan(register[:, :-1])
    steps = np.where(both, register[:, 1:] - register[:, :-1], 0.0)
    energy = np.where(both, _trapezoids_np(power_kw, t_ms), 0.0)
    registered = np.cumsum(steps, axis=1)[:, -1]
    expected = np.cumsum(energy, axis=1)[:, -1]
    fired = (registered >= min_kwh) & (registered > factor * expected)
    big = np.iinfo(np.int64).max
    first = np.where(both, t_ms[:, :-1], big).min(axis=1)
    last = np.where(both, t_ms[:, 1:], NO_TIME).max(axis=1)
    start = np.where(fired, first, NO_TIME)
    end = np.where(fired, last, NO_TIME)
    return (
        fired.astype(np.uint8),
        np.zeros(meters, dtype=np.uint8),
        start.astype(np.int64),
        end.astype(np.int64),
        registered,
        factor * expected,
        expected,
    )


