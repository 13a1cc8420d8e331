"""Grading: rule bits + per-meter severities → quality, published bits, prolonged estimation.

The last step of validation and the only one that knows about severities: the rule kernels set
bits (:mod:`edge_rules.vee_kernels.bits`), this turns them into the read's quality and the
reasons published with it. The numba kernel sits beside its NumPy twin.
"""

from __future__ import annotations

import numpy as np

from edge_rules._jit import njit
from edge_rules.vee_kernels.bits import (
    BIT_MISSING,
    BIT_PROLONGED,
)
from edge_rules.vee_kernels.grid import (
    I64,
    U8,
    U32,
    _i64,
    _same,
)

# ==========================================================================================
# Grading: rule bits + severities → quality, published bits, prolonged estimation
# ==========================================================================================


@njit
def grade_row(
    i: int, flags: U32, estimated: U8, fail_mask: int, warn_mask: int, run: int,
    prolonged_after: int, due: int, quality: U8, published: U32,
) -> int:
    """Quality and published bits of meter ``i``; returns the run of estimates carried on."""
    s = flags.shape[1]
    shown = fail_mask | warn_mask
    bad = BIT_MISSING | fail_mask
    clean = True
    for k in range(min(due, s)):
        clean &= (flags[i, k] & bad) == 0
    if clean:  # every read actual: the common case, without the run bookkeeping
        for k in range(s):
            due_k = k < due
            quality[i, k] = 0 if due_k else 4
            published[i, k] = (flags[i, k] & shown) if due_k else 0
        return 0 if min(due, s) > 0 else run
    for k in range(s):
        if k >= due:
            quality[i, k] = 4
            published[i, k] = 0
            continue
        f = flags[i, k]
        missing = (f & BIT_MISSING) != 0
        failed = (f & fail_mask) != 0
        if missing or failed:
            q = (1 if missing else 2) if estimated[i, k] else 4
            run += 1
            if prolonged_after > 0 and run >= prolonged_after:
                f |= BIT_PROLONGED
        else:
            q = 0
            run = 0
        quality[i, k] = q
        published[i, k] = f & shown
    return run


@njit
def grade_nb(
    flags: U32, estimated: U8, fail_mask: U32, warn_mask: U32, run_in: I64, prolonged_after: I64,
    due: int,
) -> tuple[U8, U32, I64]:
    m, s = flags.shape
    quality = np.empty((m, s), dtype=np.uint8)
    published = np.empty((m, s), dtype=np.uint32)
    run_out = np.empty(m, dtype=np.int64)
    for i in range(m):
        run_out[i] = grade_row(i, flags, estimated, fail_mask[i], warn_mask[i], run_in[i],
                               prolonged_after[i], due, quality, published)
    return quality, published, run_out


def grade_np(
    flags: U32, estimated: U8, fail_mask: U32, warn_mask: U32, run_in: I64, prolonged_after: I64,
    due: int,
) -> tuple[U8, U32, I64]:
    m, s = flags.shape
    due = min(max(due, 0), s)
    quality = np.full((m, s), 4, dtype=np.uint8)
    published = np.zeros((m, s), dtype=np.uint32)
    f = flags[:, :due]
    missing = (f & BIT_MISSING) != 0
    failed = (f & fail_mask[:, None]) != 0
    bad = missing | failed
    est = estimated[:, :due] != 0
    q = np.where(bad, np.where(est, np.where(missing, 1, 2), 4), 0).astype(np.uint8)
    # Consecutive non-actual intervals, continuing the run carried in from the last window.
    idx = np.arange(1, due + 1)
    last_good = np.maximum.accumulate(np.where(~bad, idx[None, :], 0), axis=1) if due else \
        np.zeros((m, 0), dtype=np.int64)
    run = idx[None, :] - last_good
    run = np.where(last_good == 0, run + run_in[:, None], run)
    run = np.where(bad, run, 0)
    long_run = (prolonged_after[:, None] > 0) & (run >= prolonged_after[:, None]) & bad
    f = f | np.where(long_run, BIT_PROLONGED, 0).astype(np.uint32)
    quality[:, :due] = q
    published[:, :due] = f & (fail_mask | warn_mask)[:, None]
    run_out = run[:, -1].astype(np.int64) if due else run_in.copy()
    return quality, published, run_out


def grade(
    flags: U32, estimated: U8, fail_mask: U32, warn_mask: U32, run_in: I64, prolonged_after: I64,
    due: int | None = None,
) -> tuple[U8, U32, I64]:
    """Quality of every interval read from its rule bits and the meter's severities.

    A read with no ``fail`` bit is actual (``0``/A) and carries its ``warn``/``fail`` bits as
    published reasons; a missing read becomes ``E`` (1) and a failed one ``S`` (2) when the
    estimation cascade gave it a value (``estimated``), otherwise ``N`` (4). ``info`` bits are
    never published. The n-th consecutive non-actual interval (``prolonged_after``, 0 = off;
    ``run_in`` carries the count across windows) adds :data:`BIT_PROLONGED`: ask for a field
    read. Intervals from ``due`` on are not due yet (a day in progress): quality N, no bits.
    Returns quality, published bits and the run to carry forward.
    """
    fl = np.ascontiguousarray(flags, dtype=np.uint32)
    if fl.ndim != 2:
        raise ValueError(f"flags must be 2-D, got shape {fl.shape}")
    m, s = fl.shape
    est = np.ascontiguousarray(estimated, dtype=np.uint8)
    _same("estimated", est, fl.shape)
    fm = np.ascontiguousarray(fail_mask, dtype=np.uint32)
    wm = np.ascontiguousarray(warn_mask, dtype=np.uint32)
    ri = _i64("run_in", run_in, 1)
    pa = _i64("prolonged_after", prolonged_after, 1)
    for name, array in (("fail_mask", fm), ("warn_mask", wm), ("run_in", ri),
                        ("prolonged_after", pa)):
        _same(name, array, (m,))
    return grade_nb(fl, est, fm, wm, ri, pa, s if due is None else int(due))
