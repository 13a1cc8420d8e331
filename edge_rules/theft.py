"""Theft and tamper indicators, each an alarm with its evidence.

Every indicator is a kernel over one poll window of samples and returns the same seven
arrays, one value per meter, so the caller can raise alarms uniformly (:class:`Indicator`):

``fired`` (uint8 0/1), ``phases`` (bit 0 = a, 1 = b, 2 = c; 0 when not per phase),
``start_ms`` / ``end_ms`` (first and last sample of the qualifying episodes, −1 if none),
``value`` (what was measured, e.g. the lowest voltage), ``reference`` (the threshold it crossed)
and ``detail`` (a second measurement, e.g. the current that kept flowing).

Sample layout: instantaneous per-phase quantities are ``(meters, 3, samples)`` (phases a, b, c;
NaN for phases a single-phase meter does not have), per-meter quantities ``(meters, samples)``,
times ``(meters, samples)`` int64 ms (the entry points accept one shared ``(samples,)`` row).
"Held for 60 s" means the condition was true on consecutive samples spanning at least 60 s from
the first to the last; with a 60-s poll that is two polls. A meter that reports its own event
flags (DL/T 645 status words 4–7) applies the standard's judgement delay itself, so
:func:`flag_events` turns those into alarms on the first poll that shows them.

Thresholds follow DL/T 566 / Q/GDW 1354 practice and the issue text: loss of voltage below
78 % Un while the current is above 0.5 % Ib (the meter's starting current); phase break below
60 % Un with no current while another phase is live; loss of current below 0.5 % Ib while
another phase carries more than 5 % Ib; current imbalance (max − min) / max above 30 %; reverse
energy on a meter not marked ``generating``; a register frozen while the power says at least
0.1 kWh should have passed; a register running more than 10× faster than the power says.

The daily indicator, :func:`deficit_scores`, looks for the customer behind a rise of the area's
loss: each customer's daily energy as a *share of the master meter's energy* (seasons, weather
and holidays move the whole area, so the share is the customer's seasonal baseline) is compared
with the share it had on qualified days before; the drop in kWh is matched against the area's
excess loss over the same days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit

__all__ = [
    "Indicator",
    "IndicatorArrays",
    "counter_events",
    "counter_events_nb",
    "counter_events_np",
    "current_imbalance",
    "current_imbalance_nb",
    "current_imbalance_np",
    "deficit_scores",
    "deficit_scores_nb",
    "deficit_scores_np",
    "flag_events",
    "flag_events_nb",
    "flag_events_np",
    "loss_of_current",
    "loss_of_current_nb",
    "loss_of_current_np",
    "loss_of_voltage",
    "loss_of_voltage_nb",
    "loss_of_voltage_np",
    "meter_stopped",
    "meter_stopped_nb",
    "meter_stopped_np",
    "phase_break",
    "phase_break_nb",
    "phase_break_np",
    "reverse_energy",
    "reverse_energy_nb",
    "reverse_energy_np",
    "running_fast",
    "running_fast_nb",
    "running_fast_np",
]

_T = TypeVar("_T", bound=np.generic)
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]
B = NDArray[np.bool_]

MS_PER_HOUR: Final = 3_600_000.0

#: Ranking weight of each indicator's evidence when suspects are ranked (added to the drop
#: score, which is 0..1): hard physical evidence of tampering outranks a statistical drop;
#: imbalance alone is weak. One table for ``gwtool reconcile`` and the daemon's area reconciler.
INDICATOR_WEIGHTS: Final = {
    "theft.meter_stopped": 1.0,
    "theft.loss_of_voltage": 1.0,
    "theft.loss_of_current": 1.0,
    "theft.reverse_energy": 1.0,
    "theft.phase_break": 0.5,
    "theft.running_fast": 0.5,
    "tamper.cover_open": 0.75,
    "tamper.terminal_cover_open": 0.75,
    "theft.current_imbalance": 0.25,
}
PHASES: Final = 3
NO_TIME: Final = -1


class IndicatorArrays(NamedTuple):
    """The seven per-meter arrays every indicator kernel returns (see the module docstring)."""

    fired: U8
    phases: U8
    start_ms: I64
    end_ms: I64
    value: F64
    reference: F64
    detail: F64


# --------------------------------------------------------------------------------------------
# Shared pieces: qualifying runs and per-meter evidence
# --------------------------------------------------------------------------------------------


@njit
def _qualifying_nb(cond: U8, t_ms: I64, min_ms: int) -> U8:
    """Mark the samples of runs of ``cond`` (rows, samples) spanning at least ``min_ms``."""
    rows, samples = cond.shape
    out = np.zeros((rows, samples), dtype=np.uint8)
    for r in range(rows):
        s = 0
        while s < samples:
            if cond[r, s] == 0:
                s += 1
                continue
            e = s
            while e + 1 < samples and cond[r, e + 1] != 0:
                e += 1
            if t_ms[r, e] - t_ms[r, s] >= min_ms:
                for i in range(s, e + 1):
                    out[r, i] = 1
            s = e + 1
    return out


def _qualifying_np(cond: B, t_ms: I64, min_ms: int) -> B:
    """NumPy twin of :func:`_qualifying_nb`: each sample learns its run's first and last time
    by running maxima/minima, then the run's span decides."""
    rows, samples = cond.shape
    if samples == 0:
        return np.zeros((rows, 0), dtype=bool)
    before = np.zeros((rows, 1), dtype=bool)
    starts = cond & ~np.concatenate([before, cond[:, :-1]], axis=1)
    ends = cond & ~np.concatenate([cond[:, 1:], before], axis=1)
    index = np.broadcast_to(np.arange(samples), (rows, samples))
    start_index = np.maximum.accumulate(np.where(starts, index, -1), axis=1)
    end_index = np.minimum.accumulate(np.where(ends, index, samples)[:, ::-1], axis=1)[:, ::-1]
    start_index = np.clip(start_index, 0, samples - 1)
    end_index = np.clip(end_index, 0, samples - 1)
    span = np.take_along_axis(t_ms, end_index, axis=1) - np.take_along_axis(
        t_ms, start_index, axis=1
    )
    qualifying: B = cond & (span >= min_ms)
    return qualifying


@njit
def _evidence_nb(
    qualifying: U8, t_ms: I64, measure: F64, use_min: bool, second: F64, meters: int, per_meter: int
) -> tuple[U8, U8, I64, I64, F64, F64]:
    """Reduce qualifying samples of ``meters × per_meter`` rows (phases) to per-meter evidence:
    fired, phase bits, first/last qualifying time, extreme of ``measure`` (min or max) and the
    largest ``second`` over the qualifying samples."""
    samples = qualifying.shape[1]
    fired = np.zeros(meters, dtype=np.uint8)
    bits = np.zeros(meters, dtype=np.uint8)
    start = np.full(meters, NO_TIME, dtype=np.int64)
    end = np.full(meters, NO_TIME, dtype=np.int64)
    value = np.full(meters, np.nan)
    detail = np.full(meters, np.nan)
    for m in range(meters):
        for p in range(per_meter):
            r = m * per_meter + p
            for s in range(samples):
                if qualifying[r, s] == 0:
                    continue
                t = t_ms[m, s]
                fired[m] = 1
                bits[m] |= np.uint8(1 << p)
                if start[m] == NO_TIME or t < start[m]:
                    start[m] = t
                if t > end[m]:
                    end[m] = t
                x = measure[r, s]
                if x == x and (value[m] != value[m] or (x < value[m] if use_min else x > value[m])):
                    value[m] = x
                y = second[r, s]
                if y == y and (detail[m] != detail[m] or y > detail[m]):
                    detail[m] = y
    return fired, bits, start, end, value, detail


def _evidence_np(
    qualifying: B, t_ms: I64, measure: F64, use_min: bool, second: F64, meters: int, per_meter: int
) -> tuple[U8, U8, I64, I64, F64, F64]:
    """NumPy twin of :func:`_evidence_nb`."""
    samples = qualifying.shape[1]
    if samples == 0 or meters == 0:
        return (
            np.zeros(meters, dtype=np.uint8),
            np.zeros(meters, dtype=np.uint8),
            np.full(meters, NO_TIME, dtype=np.int64),
            np.full(meters, NO_TIME, dtype=np.int64),
            np.full(meters, np.nan),
            np.full(meters, np.nan),
        )
    q3 = qualifying.reshape(meters, per_meter, samples)
    fired: U8 = np.asarray(q3.any(axis=(1, 2)), dtype=np.uint8)
    weights = (1 << np.arange(per_meter)).astype(np.uint8)
    bits: U8 = np.asarray((q3.any(axis=2) * weights).sum(axis=1), dtype=np.uint8)
    times = np.broadcast_to(t_ms[:, None, :], q3.shape)
    any_q = fired.astype(bool)
    start = np.where(any_q, np.where(q3, times, np.iinfo(np.int64).max).min(axis=(1, 2)), NO_TIME)
    end = np.where(any_q, np.where(q3, times, NO_TIME).max(axis=(1, 2)), NO_TIME)
    m3 = measure.reshape(meters, per_meter, samples)
    s3 = second.reshape(meters, per_meter, samples)
    with np.errstate(invalid="ignore"), _quiet_all_nan():
        mv = np.where(q3, m3, np.nan).reshape(meters, -1)
        value: F64 = np.asarray(
            np.nanmin(mv, axis=1) if use_min else np.nanmax(mv, axis=1), dtype=np.float64
        )
        detail: F64 = np.asarray(
            np.nanmax(np.where(q3, s3, np.nan).reshape(meters, -1), axis=1), dtype=np.float64
        )
    return (
        fired,
        bits,
        start.astype(np.int64),
        end.astype(np.int64),
        value.astype(np.float64),
        detail.astype(np.float64),
    )


class _quiet_all_nan:
    """nanmin/nanmax over an all-NaN row returns NaN with a RuntimeWarning; NaN is the answer
    wanted here ("no evidence"), so the warning is noise."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(None, None, None)


@njit
def _phase_times_nb(t_ms: I64, per_meter: int) -> I64:
    meters, samples = t_ms.shape
    out = np.empty((meters * per_meter, samples), dtype=np.int64)
    for m in range(meters):
        for p in range(per_meter):
            out[m * per_meter + p] = t_ms[m]
    return out


def _phase_times_np(t_ms: I64, per_meter: int) -> I64:
    result: I64 = np.repeat(t_ms, per_meter, axis=0)
    return result


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
        for lab in np.unique(label[m, still[m]]):
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


# --------------------------------------------------------------------------------------------
# Sustained drop against the seasonal baseline, matched to the area's excess loss
# --------------------------------------------------------------------------------------------


@njit
def deficit_scores_nb(
    energy: F64,
    actual: U8,
    customer_area: I64,
    master: F64,
    excess: F64,
    learn: U8,
    match_start: I64,
    baseline_days: int,
    recent_days: int,
    min_baseline: int,
    lookback_days: int,
    gap_days: int,
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """Per customer and day: ``expected`` and ``recent`` kWh/day, the ``deficit`` between them,
    how well that deficit ``explains`` the area's excess loss (0..1), that ``excess`` (the
    area's mean excess kWh/day over the same days) and the deficit's ``significance``, all
    (customers, days).

    The customer's reference is the median of its share of the master's energy over its last
    ``baseline_days`` days that were actual and on which its area was qualified (``learn``),
    ending ``gap_days`` before the recent window (so a slow, progressive theft has not yet
    pulled the reference down) and searched no further than ``lookback_days`` before it,
    needing ``min_baseline`` of them. The recent window is the last ``recent_days`` days up to the day
    judged; ``expected`` is reference share × the master's energy, averaged over the recent
    days that have both values.

    ``explains`` compares the customer's deficit δ (reference share × master − energy) with
    the area's excess x summed over the days from ``match_start[area, day]`` (the caller passes
    a week before the area's current rise began; −1 means the recent window) to the day judged:
    min(Σδ, Σx) / max(Σδ, Σx) when both are positive, else 0. Signed sums let day-to-day
    scatter cancel. A customer whose drop matches the rise in size *and in time* scores near 1;
    one whose drop is far larger (an empty holiday home), far smaller, or began before the
    area's loss rose (an honest change the master saw too, counted on the days before the rise)
    scores lower. ``significance`` is the mean deficit in units of
    its own noise: the customer's day-to-day scatter (1.4826 × the MAD of its baseline shares ×
    the mean master energy) divided by √(days used) — a steady customer whose use falls by a
    third stands out, a customer whose use always swings that much does not.
    """
    customers, days = energy.shape
    expected_out = np.full((customers, days), np.nan)
    recent_out = np.full((customers, days), np.nan)
    deficit_out = np.full((customers, days), np.nan)
    explains_out = np.zeros((customers, days))
    excess_out = np.full((customers, days), np.nan)
    significance_out = np.full((customers, days), np.nan)
    shares = np.empty(baseline_days, dtype=np.float64)
    deviations = np.empty(baseline_days, dtype=np.float64)
    for c in range(customers):
        a = customer_area[c]
        for d in range(days):
            first_recent = d - recent_days + 1
            if first_recent < 0:
                continue
            n = 0
            j = first_recent - 1 - gap_days
            stop = max(-1, first_recent - 1 - lookback_days)
            while j > stop and n < baseline_days:
                e = energy[c, j]
                mj = master[a, j]
                if learn[a, j] != 0 and actual[c, j] != 0 and e == e and mj > 0.0:
                    shares[n] = e / mj
                    n += 1
                j -= 1
            if n < min_baseline:
                continue
            ordered = np.sort(shares[:n])
            half = n // 2
            share = ordered[half] if n % 2 else 0.5 * (ordered[half - 1] + ordered[half])
            for i in range(n):
                deviations[i] = abs(ordered[i] - share)
            spread = np.sort(deviations[:n])
            mad = spread[half] if n % 2 else 0.5 * (spread[half - 1] + spread[half])
            used = 0
            sum_expected = 0.0
            sum_recent = 0.0
            sum_excess = 0.0
            for k in range(first_recent, d + 1):
                e = energy[c, k]
                mk = master[a, k]
                x = excess[a, k]
                if e == e and mk > 0.0 and x == x:
                    used += 1
                    sum_expected += share * mk
                    sum_recent += e
                    sum_excess += x
            if used * 2 < recent_days:
                continue
            start = match_start[a, d]
            if start < 0 or start > first_recent:
                start = first_recent
            overlap = 0.0
            union = 0.0
            for k in range(start, d + 1):
                e = energy[c, k]
                mk = master[a, k]
                x = excess[a, k]
                if e == e and mk > 0.0 and x == x:
                    overlap += share * mk - e
                    union += x
            mean_expected = sum_expected / used
            mean_recent = sum_recent / used
            mean_deficit = mean_expected - mean_recent
            mean_excess = sum_excess / used
            expected_out[c, d] = mean_expected
            recent_out[c, d] = mean_recent
            deficit_out[c, d] = mean_deficit
            excess_out[c, d] = mean_excess
            noise = 1.4826 * mad * (mean_expected / share if share > 0.0 else 0.0)
            if noise > 0.0:
                significance_out[c, d] = mean_deficit / (noise / np.sqrt(used))
            elif mean_deficit > 0.0:
                significance_out[c, d] = np.inf
            else:
                significance_out[c, d] = 0.0
            if overlap > 0.0 and union > 0.0:
                explains_out[c, d] = min(overlap, union) / max(overlap, union)
    return expected_out, recent_out, deficit_out, explains_out, excess_out, significance_out


def deficit_scores_np(
    energy: F64,
    actual: U8,
    customer_area: I64,
    master: F64,
    excess: F64,
    learn: U8,
    match_start: I64,
    baseline_days: int,
    recent_days: int,
    min_baseline: int,
    lookback_days: int,
    gap_days: int,
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """NumPy twin of :func:`deficit_scores_nb`: vectorised over customers, one day at a time;
    the reference takes the *last* ``baseline_days`` usable days via a reversed cumulative
    count."""
    customers, days = energy.shape
    expected_out = np.full((customers, days), np.nan)
    recent_out = np.full((customers, days), np.nan)
    deficit_out = np.full((customers, days), np.nan)
    explains_out = np.zeros((customers, days))
    excess_out = np.full((customers, days), np.nan)
    significance_out = np.full((customers, days), np.nan)
    m_c = master[customer_area] if customers else np.empty((0, days))
    learn_c = learn[customer_area] if customers else np.empty((0, days), dtype=np.uint8)
    x_c = excess[customer_area] if customers else np.empty((0, days))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        usable = (learn_c != 0) & (actual != 0) & ~np.isnan(energy) & (m_c > 0.0)
        share_all = np.where(usable, energy / np.where(m_c > 0.0, m_c, 1.0), np.nan)
    for d in range(recent_days - 1, days):
        first_recent = d - recent_days + 1
        lo = max(0, first_recent - lookback_days)
        hi = max(lo, first_recent - gap_days)
        window_usable = usable[:, lo:hi][:, ::-1]
        rank = np.cumsum(window_usable, axis=1)
        chosen = window_usable & (rank <= baseline_days)
        shares = np.where(chosen, share_all[:, lo:hi][:, ::-1], np.nan)
        n = chosen.sum(axis=1)
        ok = n >= min_baseline
        if not ok.any():
            continue
        with _quiet_all_nan():
            share = np.nanmedian(shares[ok], axis=1)
            mad = np.nanmedian(np.abs(shares[ok] - share[:, None]), axis=1)
        e = energy[ok, first_recent : d + 1]
        mk = m_c[ok, first_recent : d + 1]
        xk = x_c[ok, first_recent : d + 1]
        good = ~np.isnan(e) & (mk > 0.0) & ~np.isnan(xk)
        used = good.sum(axis=1)
        exp_terms = np.where(good, share[:, None] * mk, 0.0)
        sum_expected = np.cumsum(exp_terms, axis=1)[:, -1]
        sum_recent = np.cumsum(np.where(good, e, 0.0), axis=1)[:, -1]
        sum_excess = np.cumsum(np.where(good, xk, 0.0), axis=1)[:, -1]
        enough = used * 2 >= recent_days
        rows = np.flatnonzero(ok)[enough]
        u = used[enough]
        mean_expected = sum_expected[enough] / u
        mean_recent = sum_recent[enough] / u
        mean_deficit = mean_expected - mean_recent
        mean_excess = sum_excess[enough] / u
        expected_out[rows, d] = mean_expected
        recent_out[rows, d] = mean_recent
        deficit_out[rows, d] = mean_deficit
        excess_out[rows, d] = mean_excess
        share_e, mad_e = share[enough], mad[enough]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            level = np.where(
                share_e > 0.0, mean_expected / np.where(share_e > 0.0, share_e, 1.0), 0.0
            )
            noise = 1.4826 * mad_e * level
            significance_out[rows, d] = np.where(
                noise > 0.0,
                mean_deficit / (noise / np.sqrt(u)),
                np.where(mean_deficit > 0.0, np.inf, 0.0),
            )
        share_rows = share_e
        for row, ref in zip(rows, share_rows, strict=True):
            start = int(match_start[customer_area[row], d])
            if start < 0 or start > first_recent:
                start = first_recent
            e_k = energy[row, start : d + 1]
            m_k = m_c[row, start : d + 1]
            x_k = x_c[row, start : d + 1]
            ok_k = ~np.isnan(e_k) & (m_k > 0.0) & ~np.isnan(x_k)
            if not ok_k.size:
                continue
            total_gap = float(np.cumsum(np.where(ok_k, ref * m_k - e_k, 0.0))[-1])
            total_excess = float(np.cumsum(np.where(ok_k, x_k, 0.0))[-1])
            if total_gap > 0.0 and total_excess > 0.0:
                explains_out[row, d] = min(total_gap, total_excess) / max(total_gap, total_excess)
    return expected_out, recent_out, deficit_out, explains_out, excess_out, significance_out


class DeficitScores(NamedTuple):
    """What :func:`deficit_scores` returns, each (customers, days)."""

    expected: F64
    recent: F64
    deficit: F64
    explains: F64
    excess: F64
    significance: F64


def deficit_scores(
    energy: F64,
    actual: U8,
    customer_area: I64,
    master: F64,
    excess: F64,
    learn: U8,
    match_start: I64 | None = None,
    *,
    baseline_days: int = 28,
    recent_days: int = 5,
    min_baseline: int = 14,
    lookback_days: int = 365,
    gap_days: int = 0,
) -> DeficitScores:
    """Validated entry point of :func:`deficit_scores_nb`. ``energy``/``actual`` are
    (customers, days); ``master``, ``excess`` (kWh the area lost beyond its usual loss) and
    ``learn`` (1 on qualified days) and ``match_start`` (default: the recent window) are
    (areas, days); ``customer_area`` maps customers to area rows."""
    energy = _array(energy, "energy", 2, np.float64)
    actual = _shaped(actual, energy.shape, "actual", np.uint8)
    master = _array(master, "master", 2, np.float64)
    if master.shape[1] != energy.shape[1]:
        raise ValueError("master must cover the same days as energy")
    excess = _shaped(excess, master.shape, "excess", np.float64)
    learn = _shaped(learn, master.shape, "learn", np.uint8)
    if match_start is None:
        match_start = np.full(master.shape, -1, dtype=np.int64)
    match_start = _shaped(match_start, master.shape, "match_start", np.int64)
    customer_area = _shaped(customer_area, (energy.shape[0],), "customer_area", np.int64)
    if customer_area.size and not (
        customer_area.min() >= 0 and customer_area.max() < master.shape[0]
    ):
        raise ValueError(f"customer_area must index the {master.shape[0]} area rows")
    if not 1 <= min_baseline <= baseline_days:
        raise ValueError(f"min_baseline must be 1..baseline_days ({baseline_days})")
    if recent_days < 1 or lookback_days < baseline_days + gap_days or gap_days < 0:
        raise ValueError(
            "recent_days must be >= 1, gap_days >= 0 and lookback_days >= baseline_days + gap_days"
        )
    return DeficitScores(
        *deficit_scores_nb(
            energy,
            actual,
            customer_area,
            master,
            excess,
            learn,
            match_start,
            int(baseline_days),
            int(recent_days),
            int(min_baseline),
            int(lookback_days),
            int(gap_days),
        )
    )


# --------------------------------------------------------------------------------------------
# Entry points for the sample-window indicators, and the evidence they describe
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Indicator:
    """One indicator's result over a window, per meter, with what it means.

    ``name`` is the alarm kind (``theft.loss_of_voltage`` …); ``arrays`` the kernel's seven
    arrays; ``describe(i)`` the evidence of meter row ``i`` as one human-readable line.
    """

    name: str
    arrays: IndicatorArrays
    template: Callable[[IndicatorArrays, int], str]

    @property
    def fired(self) -> NDArray[np.intp]:
        """Meter rows for which the indicator fired."""
        return np.flatnonzero(self.arrays.fired)

    def describe(self, i: int) -> str:
        a = self.arrays
        window = f"{_iso(int(a.start_ms[i]))} to {_iso(int(a.end_ms[i]))}"
        return f"{self.template(a, i)}, {window}"

    def details(self, i: int) -> dict[str, float | int | str]:
        """Evidence of meter row ``i`` as plain values (alarm ``details`` on MQTT)."""
        a = self.arrays
        return {
            "phases": _phase_names(int(a.phases[i])),
            "start_ms": int(a.start_ms[i]),
            "end_ms": int(a.end_ms[i]),
            "value": float(a.value[i]),
            "reference": float(a.reference[i]),
            "detail": float(a.detail[i]),
        }


def _iso(ms: int) -> str:
    if ms == NO_TIME:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _phase_names(bits: int) -> str:
    return "".join(name for p, name in enumerate("abc") if bits & (1 << p))


def _array(array: NDArray[Any], name: str, ndim: int, dtype: type[_T]) -> NDArray[_T]:
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array")
    result: NDArray[_T] = np.ascontiguousarray(array, dtype=dtype)
    return result


def _shaped(array: NDArray[Any], shape: tuple[int, ...], name: str, dtype: type[_T]) -> NDArray[_T]:
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}")
    result: NDArray[_T] = np.ascontiguousarray(array, dtype=dtype)
    return result


def _times(t_ms: I64, meters: int, samples: int) -> I64:
    t = np.asarray(t_ms, dtype=np.int64)
    if t.shape == (samples,):
        t = np.broadcast_to(t, (meters, samples))
    if t.shape != (meters, samples):
        raise ValueError(f"t_ms must be ({samples},) or ({meters}, {samples}) milliseconds")
    result: I64 = np.ascontiguousarray(t)
    return result


def _per_meter(values: F64 | float, meters: int, name: str) -> F64:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(meters, float(array))
    if array.shape != (meters,):
        raise ValueError(f"{name} needs one value per meter ({meters})")
    result: F64 = np.ascontiguousarray(array)
    return result


def _phase_arrays(voltage: F64 | None, current: F64 | None) -> tuple[F64, F64]:
    if voltage is None and current is None:
        raise ValueError("give per-phase voltage and/or current, shaped (meters, 3, samples)")
    ref = voltage if voltage is not None else current
    assert ref is not None
    shape = np.shape(ref)
    if len(shape) != 3 or shape[1] != PHASES:
        raise ValueError(f"per-phase arrays must be (meters, {PHASES}, samples), got {shape}")
    v = (
        np.full(shape, np.nan)
        if voltage is None
        else np.ascontiguousarray(voltage, dtype=np.float64)
    )
    i = (
        np.full(shape, np.nan)
        if current is None
        else np.ascontiguousarray(current, dtype=np.float64)
    )
    if v.shape != i.shape:
        raise ValueError(f"voltage {v.shape} and current {i.shape} must have the same shape")
    return v, i


def loss_of_voltage(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64 | float = 220.0,
    ib: F64 | float = 5.0,
    *,
    v_frac: float = 0.78,
    i_frac: float = 0.005,
    min_s: float = 60.0,
) -> Indicator:
    """Loss of voltage (失压): < 78 % Un while I > 0.5 % Ib for 60 s."""
    v, i = _phase_arrays(voltage, current)
    meters, _, samples = v.shape
    arrays = IndicatorArrays(
        *loss_of_voltage_nb(
            v,
            i,
            _times(t_ms, meters, samples),
            _per_meter(un, meters, "un"),
            _per_meter(ib, meters, "ib"),
            v_frac,
            i_frac,
            int(min_s * 1000),
        )
    )
    return Indicator(
        "theft.loss_of_voltage",
        arrays,
        lambda a, k: (
            f"loss of voltage on phase {_phase_names(int(a.phases[k]))}: {a.value[k]:.1f} V "
            f"< {a.reference[k]:.1f} V ({v_frac:.0%} Un) while {a.detail[k]:.3f} A flowed"
        ),
    )


def phase_break(
    voltage: F64,
    current: F64 | None,
    t_ms: I64,
    un: F64 | float = 220.0,
    ib: F64 | float = 5.0,
    *,
    v_frac: float = 0.60,
    i_frac: float = 0.005,
    live_frac: float = 0.78,
    min_s: float = 60.0,
) -> Indicator:
    """Phase break (断相): a dead phase (< 60 % Un, no current) beside a live one, 60 s."""
    v, i = _phase_arrays(voltage, current)
    meters, _, samples = v.shape
    arrays = IndicatorArrays(
        *phase_break_nb(
            v,
            i,
            _times(t_ms, meters, samples),
            _per_meter(un, meters, "un"),
            _per_meter(ib, meters, "ib"),
            v_frac,
            i_frac,
            live_frac,
            int(min_s * 1000),
        )
    )
    return Indicator(
        "theft.phase_break",
        arrays,
        lambda a, k: (
            f"phase break on phase {_phase_names(int(a.phases[k]))}: {a.value[k]:.1f} V "
            f"< {a.reference[k]:.1f} V with no current while another phase had {a.detail[k]:.1f} V"
        ),
    )


def loss_of_current(
    voltage: F64,
    current: F64,
    t_ms: I64,
    un: F64 | float = 220.0,
    ib: F64 | float = 5.0,
    *,
    i_frac: float = 0.005,
    other_frac: float = 0.05,
    v_frac: float = 0.78,
    min_s: float = 60.0,
) -> Indicator:
    """Loss of current (失流): a live phase below 0.5 % Ib while another carries > 5 % Ib, 60 s."""
    v, i = _phase_arrays(voltage, current)
    meters, _, samples = v.shape
    arrays = IndicatorArrays(
        *loss_of_current_nb(
            v,
            i,
            _times(t_ms, meters, samples),
            _per_meter(un, meters, "un"),
            _per_meter(ib, meters, "ib"),
            i_frac,
            other_frac,
            v_frac,
            int(min_s * 1000),
        )
    )
    return Indicator(
        "theft.loss_of_current",
        arrays,
        lambda a, k: (
            f"loss of current on phase {_phase_names(int(a.phases[k]))}: {a.value[k]:.3f} A "
            f"< {a.reference[k]:.3f} A while another phase carried {a.detail[k]:.3f} A"
        ),
    )


def current_imbalance(
    current: F64,
    t_ms: I64,
    ib: F64 | float = 5.0,
    *,
    limit: float = 0.30,
    min_frac: float = 0.10,
    min_s: float = 60.0,
) -> Indicator:
    """Current imbalance (max − min) / max above 30 % under load, 60 s."""
    _, i = _phase_arrays(None, current)
    meters, _, samples = i.shape
    arrays = IndicatorArrays(
        *current_imbalance_nb(
            i,
            _times(t_ms, meters, samples),
            _per_meter(ib, meters, "ib"),
            limit,
            min_frac,
            int(min_s * 1000),
        )
    )
    return Indicator(
        "theft.current_imbalance",
        arrays,
        lambda a, k: (
            f"current imbalance {a.value[k]:.0f} % > {a.reference[k]:.0f} % (phase "
            f"{_phase_names(int(a.phases[k]))} lowest, largest phase {a.detail[k]:.3f} A)"
        ),
    )


def reverse_energy(
    export_register: F64,
    phase_power: F64 | None,
    t_ms: I64,
    generating: Sequence[bool] | U8,
    *,
    min_kwh: float = 0.02,
    min_kw: float = 0.01,
    min_s: float = 60.0,
) -> Indicator:
    """Reverse energy on a non-generating meter (export register or a reversed phase)."""
    reg = _array(export_register, "export_register", 2, np.float64)
    meters, samples = reg.shape
    power = (
        np.full((meters, PHASES, samples), np.nan)
        if phase_power is None
        else _shaped(phase_power, (meters, PHASES, samples), "phase_power", np.float64)
    )
    gen = _shaped(np.asarray(generating, dtype=np.uint8), (meters,), "generating", np.uint8)
    arrays = IndicatorArrays(
        *reverse_energy_nb(
            reg, power, _times(t_ms, meters, samples), gen, min_kwh, min_kw, int(min_s * 1000)
        )
    )
    return Indicator(
        "theft.reverse_energy",
        arrays,
        lambda a, k: (
            f"reverse energy on a non-generating meter: {a.value[k]:.2f} kWh exported "
            f"(limit {a.reference[k]:.2f} kWh)"
            + (
                f", phase {_phase_names(int(a.phases[k]))} at -{a.detail[k]:.3f} kW"
                if a.phases[k]
                else ""
            )
        ),
    )


def counter_events(counts: F64, t_ms: I64, *, name: str = "tamper.cover_open") -> Indicator:
    """New events in a DL/T 645 event counter (03300D00 cover, 03300E00 terminal cover)."""
    c = _array(counts, "counts", 2, np.float64)
    meters, samples = c.shape
    arrays = IndicatorArrays(*counter_events_nb(c, _times(t_ms, meters, samples)))
    what = name.rsplit(".", 1)[-1].replace("_", " ")
    return Indicator(
        name,
        arrays,
        lambda a, k: (
            f"{what}: {a.value[k]:.0f} new event(s), counter {a.reference[k]:.0f} → {a.detail[k]:.0f}"
        ),
    )


def flag_events(flags: U8, t_ms: I64, *, name: str = "tamper.cover_open") -> Indicator:
    """An event flag the meter raises itself (status words 4–7)."""
    f = _array(flags, "flags", 2, np.uint8)
    meters, samples = f.shape
    arrays = IndicatorArrays(*flag_events_nb(f, _times(t_ms, meters, samples)))
    what = name.rsplit(".", 1)[-1].replace("_", " ")
    return Indicator(
        name,
        arrays,
        lambda a, k: (
            f"{what} reported by the meter in {a.value[k]:.0f} of {a.reference[k]:.0f} reads"
        ),
    )


def meter_stopped(register: F64, power_kw: F64, t_ms: I64, *, min_kwh: float = 0.1) -> Indicator:
    """Register frozen while the power says ≥ 0.1 kWh should have passed."""
    reg = _array(register, "register", 2, np.float64)
    meters, samples = reg.shape
    power = _shaped(power_kw, reg.shape, "power_kw", np.float64)
    arrays = IndicatorArrays(*meter_stopped_nb(reg, power, _times(t_ms, meters, samples), min_kwh))
    return Indicator(
        "theft.meter_stopped",
        arrays,
        lambda a, k: (
            f"meter stopped: register frozen at {a.detail[k]:.2f} kWh while the power says "
            f"{a.value[k]:.3f} kWh passed (limit {a.reference[k]:.2f} kWh)"
        ),
    )


def running_fast(
    register: F64, power_kw: F64, t_ms: I64, *, factor: float = 10.0, min_kwh: float = 0.1
) -> Indicator:
    """Register advancing more than 10× what the power accounts for."""
    reg = _array(register, "register", 2, np.float64)
    meters, samples = reg.shape
    power = _shaped(power_kw, reg.shape, "power_kw", np.float64)
    arrays = IndicatorArrays(
        *running_fast_nb(reg, power, _times(t_ms, meters, samples), factor, min_kwh)
    )
    return Indicator(
        "theft.running_fast",
        arrays,
        lambda a, k: (
            f"meter running fast: registered {a.value[k]:.3f} kWh where the power accounts "
            f"for {a.detail[k]:.3f} kWh (limit {factor:g}×)"
        ),
    )
