"""Validation kernels: every VEE rule as a function of arrays (docs/dev/kernels.md).

Layout. A *window* is ``(meters, intervals)`` of register reads on the 15-minute grid
(:mod:`edge_rules.calendar`): ``reads[i, k]`` is the register of meter ``i`` read at the end of
interval ``k``, NaN when there is no read. Windows start at local midnight and are whole days,
so day-level rules see rows of 96 after a reshape. Per-meter parameters are 1-D arrays; sparse
reads off the grid (voltage, clock offset, tariff registers, CT/PT ratios) are flat arrays with
a ``rows`` array naming each value's meter.

Output. Rules set bits in a ``uint32`` mask per read (the ``BIT_*`` constants of ``bits``); which of
them make a read fail, which are published as reasons and which are only counted is decided by
the caller through per-meter severity masks (:func:`grade`), so the kernels know nothing of
configuration.

Every kernel ``foo`` comes as ``foo_nb`` (numba), ``foo_np`` (the NumPy twin, the readable
reference) and ``foo`` (the checked entry point). The register scan is sequential by nature — a
read is compared with the last *accepted* read, which depends on every earlier decision — so its
NumPy twin walks the intervals and vectorises across meters, exactly as the daemon batches a
poll cycle.

The package holds one concern a module, each numba kernel beside its NumPy twin (the rule
edge_rules/_jit.py finds twins by): :mod:`~edge_rules.vee_kernels.bits` (the rule bits),
:mod:`~edge_rules.vee_kernels.grid` (the interval grid, input checks and the ingest of reads onto
it), :mod:`~edge_rules.vee_kernels.register_scan`, :mod:`~edge_rules.vee_kernels.energy_rules`
(per interval and per meter-day), :mod:`~edge_rules.vee_kernels.sparse_rules` (reads off the
grid) and :mod:`~edge_rules.vee_kernels.grading`. The names below are re-exported because the
VEE engine, the rule set, the estimation cascade, ``gwtool vee``, the benches and the tests all
use the kernels as ``vee_kernels.<name>``.
"""

from __future__ import annotations

from edge_rules.vee_kernels.bits import (
    BIT_CLOCK_DRIFT,
    BIT_CLOCK_FAIL,
    BIT_DECREASE,
    BIT_DUPLICATE,
    BIT_HIGH,
    BIT_IMPOSSIBLE,
    BIT_INTERVAL_SUM,
    BIT_LOW,
    BIT_MISSING,
    BIT_MULTIPLIER,
    BIT_PROLONGED,
    BIT_REBASED,
    BIT_REVERSE,
    BIT_ROLLOVER,
    BIT_SPIKE,
    BIT_SPIKE_READ,
    BIT_STOPPED,
    BIT_TARIFF_SUM,
    BIT_VOLTAGE,
    NO_SCALE_BITS,
)
from edge_rules.vee_kernels.energy_rules import (
    band_one,
    history_band,
    history_band_nb,
    history_band_np,
    interval_flags,
    interval_flags_nb,
    interval_flags_np,
    interval_row,
    multiplier_row,
    multiplier_suspect,
    multiplier_suspect_nb,
    multiplier_suspect_np,
    spike_flags,
    spike_flags_nb,
    spike_flags_np,
    spike_row,
)
from edge_rules.vee_kernels.grading import (
    grade,
    grade_nb,
    grade_np,
    grade_row,
)
from edge_rules.vee_kernels.grid import (
    bin_slots,
    bin_slots_nb,
    bin_slots_np,
    nan_grid,
)
from edge_rules.vee_kernels.register_scan import (
    ScanResult,
    register_scan,
    register_scan_nb,
    register_scan_np,
    scan_row,
)
from edge_rules.vee_kernels.sparse_rules import (
    band_flags,
    band_flags_nb,
    band_flags_np,
    drift_levels,
    drift_levels_nb,
    drift_levels_np,
    interval_sum_mismatch,
    interval_sum_mismatch_nb,
    interval_sum_mismatch_np,
    interval_sum_row,
    ratio_changes,
    ratio_changes_nb,
    ratio_changes_np,
    tariff_sum_mismatch,
    tariff_sum_mismatch_nb,
    tariff_sum_mismatch_np,
)

__all__ = [
    "BIT_CLOCK_DRIFT",
    "BIT_CLOCK_FAIL",
    "BIT_DECREASE",
    "BIT_DUPLICATE",
    "BIT_HIGH",
    "BIT_IMPOSSIBLE",
    "BIT_INTERVAL_SUM",
    "BIT_LOW",
    "BIT_MISSING",
    "BIT_MULTIPLIER",
    "BIT_PROLONGED",
    "BIT_REBASED",
    "BIT_REVERSE",
    "BIT_ROLLOVER",
    "BIT_SPIKE",
    "BIT_SPIKE_READ",
    "BIT_STOPPED",
    "BIT_TARIFF_SUM",
    "BIT_VOLTAGE",
    "NO_SCALE_BITS",
    "ScanResult",
    "band_flags",
    "band_flags_nb",
    "band_flags_np",
    "band_one",
    "bin_slots",
    "bin_slots_nb",
    "bin_slots_np",
    "drift_levels",
    "drift_levels_nb",
    "drift_levels_np",
    "grade",
    "grade_nb",
    "grade_np",
    "grade_row",
    "history_band",
    "history_band_nb",
    "history_band_np",
    "interval_flags",
    "interval_flags_nb",
    "interval_flags_np",
    "interval_row",
    "interval_sum_mismatch",
    "interval_sum_mismatch_nb",
    "interval_sum_mismatch_np",
    "interval_sum_row",
    "multiplier_row",
    "multiplier_suspect",
    "multiplier_suspect_nb",
    "multiplier_suspect_np",
    "nan_grid",
    "ratio_changes",
    "ratio_changes_nb",
    "ratio_changes_np",
    "register_scan",
    "register_scan_nb",
    "register_scan_np",
    "scan_row",
    "spike_flags",
    "spike_flags_nb",
    "spike_flags_np",
    "spike_row",
    "tariff_sum_mismatch",
    "tariff_sum_mismatch_nb",
    "tariff_sum_mismatch_np",
]
