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

The package holds one concern a module, each numba kernel beside its NumPy twin:
:mod:`~edge_rules.theft.episodes` (qualifying episodes and the seven evidence arrays every
indicator returns), :mod:`~edge_rules.theft.phase_kernels` (per-phase voltage, current and
power), :mod:`~edge_rules.theft.register_kernels` (event counters and flags, the energy register
against power), :mod:`~edge_rules.theft.deficit` (the daily indicator) and
:mod:`~edge_rules.theft.indicators` (checked entry points, :class:`Indicator`, the ranking
weights). The names below are re-exported because the daemon, ``gwtool``, the benches and the
tests all use the indicators through ``edge_rules.theft``.
"""

from __future__ import annotations

from edge_rules.theft.deficit import (
    DeficitScores,
    deficit_scores,
    deficit_scores_nb,
    deficit_scores_np,
)
from edge_rules.theft.episodes import (
    NO_TIME,
    IndicatorArrays,
)
from edge_rules.theft.indicators import (
    INDICATOR_WEIGHTS,
    Indicator,
    counter_events,
    current_imbalance,
    flag_events,
    loss_of_current,
    loss_of_voltage,
    meter_stopped,
    phase_break,
    reverse_energy,
    running_fast,
)
from edge_rules.theft.phase_kernels import (
    current_imbalance_nb,
    current_imbalance_np,
    loss_of_current_nb,
    loss_of_current_np,
    loss_of_voltage_nb,
    loss_of_voltage_np,
    phase_break_nb,
    phase_break_np,
    reverse_energy_nb,
    reverse_energy_np,
)
from edge_rules.theft.register_kernels import (
    counter_events_nb,
    counter_events_np,
    flag_events_nb,
    flag_events_np,
    meter_stopped_nb,
    meter_stopped_np,
    running_fast_nb,
    running_fast_np,
)

__all__ = [
    "INDICATOR_WEIGHTS",
    "NO_TIME",
    "DeficitScores",
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
