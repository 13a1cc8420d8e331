"""Theft indicators read from per-phase voltage, current and power samples.

Loss of voltage (失压), phase break (断相), loss of current (失流), current imbalance and reverse
energy on a meter that does not generate: the physical signs of a tampered connection, each a
numba kernel over ``(meters, 3, samples)`` beside its NumPy twin. The thresholds and the sample
layout are described in :mod:`edge_rules.theft`; the checked entry points are in
:mod:`edge_rules.theft.indicators`.
"""

from __future__ import annotations

import numpy as np

from edge_rules._jit import njit
from edge_rules.theft.episodes import (
    F64,
    I64,
    NO_TIME,
    U8,
    _evidence_nb,
    _evidence_np,
    _phase_times_nb,
    _phase_times_np,
    _qualifying_nb,
    _qualifying_np,
)

# --------------------------------------------------------------------------------------------
# Loss of voltage (失压)
# --------------------------------------------------------------------------------------------


@njit
def loss_of_voltage_nb(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64,
    ib: F64,
    v_frac: float,
    i_frac: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """A phase below ``v_frac``·Un while its current is above ``i_frac``·Ib, held ``min_ms``:
    the voltage tap was cut but the load still runs, so the meter under-registers. Evidence:
    lowest voltage (V), threshold (V), highest current meanwhile (A)."""
    meters, phases, samples = voltage.shape
    cond = np.zeros((meters * phases, samples), dtype=np.uint8)
    measure = np.empty((meters * phases, samples))
    second = np.empty((meters * phases, samples))
    for m in range(meters):
        for p in range(phases):
            r = m * phases + p
            for s in range(samples):
                v = voltage[m, p, s]
                i = current[m, p, s]
                measure[r, s] = v
                second[r, s] = i
                if v < v_frac * un[m] and i > i_frac * ib[m]:
                    cond[r, s] = 1
    qualifying = _qualifying_nb(cond, _phase_times_nb(t_ms, phases), min_ms)
    fired, bits, start, end, value, detail = _evidence_nb(
        qualifying, t_ms, measure, True, second, meters, phases
    )
    return fired, bits, start, end, value, v_frac * un, detail


def loss_of_voltage_np(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64,
    ib: F64,
    v_frac: float,
    i_frac: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`loss_of_voltage_nb`."""
    meters, phases, samples = voltage.shape
    with np.errstate(invalid="ignore"):
        cond = (voltage < v_frac * un[:, None, None]) & (current > i_frac * ib[:, None, None])
    rows = (meters * phases, samples)
    qualifying = _qualifying_np(cond.reshape(rows), _phase_times_np(t_ms, phases), min_ms)
    fired, bits, start, end, value, detail = _evidence_np(
        qualifying, t_ms, voltage.reshape(rows), True, current.reshape(rows), meters, phases
    )
    return fired, bits, start, end, value, v_frac * un, detail


# --------------------------------------------------------------------------------------------
# Phase break (断相)
# --------------------------------------------------------------------------------------------


@njit
def phase_break_nb(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64,
    ib: F64,
    v_frac: float,
    i_frac: float,
    live_frac: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """A phase below ``v_frac``·Un carrying no current (not above ``i_frac``·Ib) while another
    phase of the same meter is live (at least ``live_frac``·Un), held ``min_ms``. A whole-meter
    outage (every phase dead) is a supply failure, not a phase break. Evidence: lowest voltage,
    threshold, highest voltage of the live phases."""
    meters, phases, samples = voltage.shape
    cond = np.zeros((meters * phases, samples), dtype=np.uint8)
    measure = np.empty((meters * phases, samples))
    second = np.full((meters * phases, samples), np.nan)
    for m in range(meters):
        for s in range(samples):
            for p in range(phases):
                r = m * phases + p
                v = voltage[m, p, s]
                measure[r, s] = v
                if not (v < v_frac * un[m]) or current[m, p, s] > i_frac * ib[m]:
                    continue
                live = np.nan
                for q in range(phases):
                    w = voltage[m, q, s]
                    if q != p and w >= live_frac * un[m] and (live != live or w > live):
                        live = w
                if live == live:
                    cond[r, s] = 1
                    second[r, s] = live
    qualifying = _qualifying_nb(cond, _phase_times_nb(t_ms, phases), min_ms)
    fired, bits, start, end, value, detail = _evidence_nb(
        qualifying, t_ms, measure, True, second, meters, phases
    )
    return fired, bits, start, end, value, v_frac * un, detail


def phase_break_np(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64,
    ib: F64,
    v_frac: float,
    i_frac: float,
    live_frac: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`phase_break_nb`."""
    meters, phases, samples = voltage.shape
    with np.errstate(invalid="ignore"):
        dead = (voltage < v_frac * un[:, None, None]) & ~(current > i_frac * ib[:, None, None])
        live = voltage >= live_frac * un[:, None, None]
    live_v = np.where(live, voltage, -np.inf)
    others = np.full(voltage.shape, -np.inf)
    for p in range(phases):
        mask = np.arange(phases) != p
        if mask.any():
            others[:, p, :] = live_v[:, mask, :].max(axis=1)
    has_live = others > -np.inf
    cond = dead & has_live
    second = np.where(cond, others, np.nan)
    rows = (meters * phases, samples)
    qualifying = _qualifying_np(cond.reshape(rows), _phase_times_np(t_ms, phases), min_ms)
    fired, bits, start, end, value, detail = _evidence_np(
        qualifying, t_ms, voltage.reshape(rows), True, second.reshape(rows), meters, phases
    )
    return fired, bits, start, end, value, v_frac * un, detail


# --------------------------------------------------------------------------------------------
# Loss of current (失流)
# --------------------------------------------------------------------------------------------


@njit
def loss_of_current_nb(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64,
    ib: F64,
    i_frac: float,
    other_frac: float,
    v_frac: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """A live phase (at least ``v_frac``·Un) whose current is below ``i_frac``·Ib while another
    phase carries more than ``other_frac``·Ib, held ``min_ms``: a shorted or opened CT.
    Evidence: lowest current (A), threshold (A), highest current of the other phases (A)."""
    meters, phases, samples = voltage.shape
    cond = np.zeros((meters * phases, samples), dtype=np.uint8)
    measure = np.empty((meters * phases, samples))
    second = np.full((meters * phases, samples), np.nan)
    for m in range(meters):
        for s in range(samples):
            for p in range(phases):
                r = m * phases + p
                i = current[m, p, s]
                measure[r, s] = i
                if not (i < i_frac * ib[m] and voltage[m, p, s] >= v_frac * un[m]):
                    continue
                other = np.nan
                for q in range(phases):
                    j = current[m, q, s]
                    if q != p and j > other_frac * ib[m] and (other != other or j > other):
                        other = j
                if other == other:
                    cond[r, s] = 1
                    second[r, s] = other
    qualifying = _qualifying_nb(cond, _phase_times_nb(t_ms, phases), min_ms)
    fired, bits, start, end, value, detail = _evidence_nb(
        qualifying, t_ms, measure, True, second, meters, phases
    )
    return fired, bits, start, end, value, i_frac * ib, detail


def loss_of_current_np(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64,
    ib: F64,
    i_frac: float,
    other_frac: float,
    v_frac: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`loss_of_current_nb`."""
    meters, phases, samples = voltage.shape
    with np.errstate(invalid="ignore"):
        low = (current < i_frac * ib[:, None, None]) & (voltage >= v_frac * un[:, None, None])
        loaded = current > other_frac * ib[:, None, None]
    loaded_i = np.where(loaded, current, -np.inf)
    others = np.full(current.shape, -np.inf)
    for p in range(phases):
        mask = np.arange(phases) != p
        if mask.any():
            others[:, p, :] = loaded_i[:, mask, :].max(axis=1)
    cond = low & (others > -np.inf)
    second = np.where(cond, others, np.nan)
    rows = (meters * phases, samples)
    qualifying = _qualifying_np(cond.reshape(rows), _phase_times_np(t_ms, phases), min_ms)
    fired, bits, start, end, value, detail = _evidence_np(
        qualifying, t_ms, current.reshape(rows), True, second.reshape(rows), meters, phases
    )
    return fired, bits, start, end, value, i_frac * ib, detail


# --------------------------------------------------------------------------------------------
# Current imbalance
# --------------------------------------------------------------------------------------------


@njit
def current_imbalance_nb(
    current: F64, t_ms: I64, ib: F64, limit: float, min_frac: float, min_ms: int
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """(max − min) / max of the phase currents above ``limit`` while the largest is above
    ``min_frac``·Ib (light loads are naturally unbalanced), held ``min_ms``. Only samples with
    every phase present count (a single-phase meter has no imbalance). Evidence: largest
    imbalance (%), limit (%), largest phase current (A); ``phases`` marks the phase that was
    lowest when the imbalance peaked."""
    meters, phases, samples = current.shape
    cond = np.zeros((meters, samples), dtype=np.uint8)
    measure = np.full((meters, samples), np.nan)
    second = np.full((meters, samples), np.nan)
    low_phase = np.zeros((meters, samples), dtype=np.uint8)
    for m in range(meters):
        for s in range(samples):
            hi = -np.inf
            lo = np.inf
            lo_p = 0
            complete = phases > 1
            for p in range(phases):
                i = current[m, p, s]
                if i != i:
                    complete = False
                    break
                if i > hi:
                    hi = i
                if i < lo:
                    lo = i
                    lo_p = p
            if not complete or not (hi > min_frac * ib[m]) or hi <= 0.0:
                continue
            ratio = (hi - lo) / hi
            measure[m, s] = ratio * 100.0
            second[m, s] = hi
            low_phase[m, s] = lo_p
            if ratio > limit:
                cond[m, s] = 1
    qualifying = _qualifying_nb(cond, t_ms, min_ms)
    fired, _, start, end, value, detail = _evidence_nb(
        qualifying, t_ms, measure, False, second, meters, 1
    )
    bits = np.zeros(meters, dtype=np.uint8)
    for m in range(meters):
        best = -np.inf
        for s in range(samples):
            if qualifying[m, s] != 0 and measure[m, s] > best:
                best = measure[m, s]
                bits[m] = np.uint8(1 << low_phase[m, s])
    return fired, bits, start, end, value, np.full(meters, limit * 100.0), detail


def current_imbalance_np(
    current: F64, t_ms: I64, ib: F64, limit: float, min_frac: float, min_ms: int
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`current_imbalance_nb`."""
    meters, phases, samples = current.shape
    complete = ~np.isnan(current).any(axis=1) & (phases > 1)
    safe = np.where(np.isnan(current), 0.0, current)
    hi = safe.max(axis=1)
    lo = safe.min(axis=1)
    lo_p = safe.argmin(axis=1)
    usable = complete & (hi > min_frac * ib[:, None]) & (hi > 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = np.where(usable, (hi - lo) / hi, np.nan)
    cond = usable & (ratio > limit)
    measure = ratio * 100.0
    second = np.where(usable, hi, np.nan)
    qualifying = _qualifying_np(cond, t_ms, min_ms)
    fired, _, start, end, value, detail = _evidence_np(
        qualifying, t_ms, measure, False, second, meters, 1
    )
    bits = np.zeros(meters, dtype=np.uint8)
    scored = np.where(qualifying, measure, -np.inf)
    if samples:
        # The kernel keeps the first sample holding the largest value, as argmax does.
        best = scored.argmax(axis=1)
        picked = np.take_along_axis(lo_p, best[:, None], axis=1)[:, 0]
        bits = np.where(fired.astype(bool), (1 << picked), 0).astype(np.uint8)
    return fired, bits, start, end, value, np.full(meters, limit * 100.0), detail


# --------------------------------------------------------------------------------------------
# Reverse energy on a non-generating meter
# --------------------------------------------------------------------------------------------


@njit
def reverse_energy_nb(
    export_register: F64,
    phase_power: F64,
    t_ms: I64,
    generating: U8,
    min_kwh: float,
    min_kw: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """Energy flowing out of a meter not marked ``generating``: its export register advanced
    by at least ``min_kwh``, or a phase's active power stayed below −``min_kw`` for ``min_ms``
    (a reversed CT on one phase cancels part of the import without touching the export
    register). Evidence: export registered (kWh), ``min_kwh``, most negative phase power (kW,
    as a positive number); ``phases`` marks the reversed phases."""
    meters, phases, samples = phase_power.shape
    cond = np.zeros((meters * phases, samples), dtype=np.uint8)
    reverse = np.full((meters * phases, samples), np.nan)
    for m in range(meters):
        if generating[m] != 0:
            continue
        for p in range(phases):
            r = m * phases + p
            for s in range(samples):
                x = phase_power[m, p, s]
                if x < -min_kw:
                    cond[r, s] = 1
                    reverse[r, s] = -x
    qualifying = _qualifying_nb(cond, _phase_times_nb(t_ms, phases), min_ms)
    fired, bits, start, end, _, detail = _evidence_nb(
        qualifying, t_ms, reverse, False, reverse, meters, phases
    )
    value = np.zeros(meters)
    for m in range(meters):
        if generating[m] != 0:
            continue
        first = -1
        for s in range(samples):
            x = export_register[m, s]
            if x != x:
                continue
            if first < 0:
                first = s
            else:
                advance = x - export_register[m, first]
                if advance > value[m]:
                    value[m] = advance
                if advance >= min_kwh:
                    if fired[m] == 0 or t_ms[m, s] < start[m]:
                        start[m] = t_ms[m, s]
                    if t_ms[m, s] > end[m]:
                        end[m] = t_ms[m, s]
                    fired[m] = 1
    return fired, bits, start, end, value, np.full(meters, min_kwh), detail


def reverse_energy_np(
    export_register: F64,
    phase_power: F64,
    t_ms: I64,
    generating: U8,
    min_kwh: float,
    min_kw: float,
    min_ms: int,
) -> tuple[U8, U8, I64, I64, F64, F64, F64]:
    """NumPy twin of :func:`reverse_energy_nb`."""
    meters, phases, samples = phase_power.shape
    honest = generating == 0
    with np.errstate(invalid="ignore"):
        cond = (phase_power < -min_kw) & honest[:, None, None]
    reverse = np.where(cond, -phase_power, np.nan)
    rows = (meters * phases, samples)
    qualifying = _qualifying_np(cond.reshape(rows), _phase_times_np(t_ms, phases), min_ms)
    fired, bits, start, end, _, detail = _evidence_np(
        qualifying, t_ms, reverse.reshape(rows), False, reverse.reshape(rows), meters, phases
    )
    present = ~np.isnan(export_register)
    value = np.zeros(meters)
    if samples:
        first_index = np.where(present.any(axis=1), present.argmax(axis=1), 0)
        first_value = np.take_along_axis(export_register, first_index[:, None], axis=1)
        after_first = present & (np.arange(samples)[None, :] > first_index[:, None])
        advance = np.where(after_first & honest[:, None], export_register - first_value, -np.inf)
        value = np.maximum(advance.max(axis=1), 0.0)
        by_register = advance >= min_kwh
        reg_fired = by_register.any(axis=1)
        big = np.iinfo(np.int64).max
        reg_start = np.where(by_register, t_ms, big).min(axis=1)
        reg_end = np.where(by_register, t_ms, NO_TIME).max(axis=1)
        start = np.where(reg_fired & ((fired == 0) | (reg_start < start)), reg_start, start)
        end = np.where(reg_fired, np.maximum(end, reg_end), end)
        fired = (fired.astype(bool) | reg_fired).astype(np.uint8)
    return (
        fired,
        bits,
        start.astype(np.int64),
        end.astype(np.int64),
        value.astype(np.float64),
        np.full(meters, min_kwh),
        detail,
    )


