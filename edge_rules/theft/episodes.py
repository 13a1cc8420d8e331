"""What every theft indicator shares: qualifying episodes and the evidence they leave.

An indicator fires when its condition *held*: true on consecutive samples spanning at least the
hold time (:func:`_qualifying_nb`). Every window kernel then boils each meter's episodes down to
the same seven arrays (:class:`IndicatorArrays`, via :func:`_evidence_nb`), so the caller raises
alarms uniformly. Kept apart from the indicators because all of them — per-phase, register and
daily — build on these pieces, each numba kernel beside its NumPy twin (edge_rules/_jit.py finds
the twin by name in the same module).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit

_T = TypeVar("_T", bound=np.generic)
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]
B = NDArray[np.bool_]
PHASES: Final = 3
NO_TIME: Final = -1


class IndicatorArrays(NamedTuple):
    """The seven per-meter arrays every indicator kernel returns (see :mod:`edge_rules.theft`)."""

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

