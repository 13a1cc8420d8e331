"""Checked entry points of the sample-window indicators and the alarms they describe.

Each entry point validates and shapes its inputs (one shared ``(samples,)`` time row is
broadcast, per-meter thresholds may be scalars), runs the numba kernel and wraps the seven
arrays in an :class:`Indicator` that names the alarm and words its evidence.
:data:`INDICATOR_WEIGHTS` ranks that evidence when suspects are listed, one table for ``gwtool
reconcile`` and the daemon's area reconciler.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_rules.theft.episodes import (
    F64,
    I64,
    NO_TIME,
    PHASES,
    U8,
    IndicatorArrays,
    _array,
    _shaped,
)
from edge_rules.theft.phase_kernels import (
    current_imbalance_nb,
    loss_of_current_nb,
    loss_of_voltage_nb,
    phase_break_nb,
    reverse_energy_nb,
)
from edge_rules.theft.register_kernels import (
    counter_events_nb,
    flag_events_nb,
    meter_stopped_nb,
    running_fast_nb,
)

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
    # DL/T 645-2007 phase currents are signed (the top bit: power flowing back on that phase).
    # Every phase indicator asks how much current flows, so it compares magnitudes; direction is
    # judged from the signed powers (reverse energy). Taken here so no caller can forget it.
    i = (
        np.full(shape, np.nan)
        if current is None
        else np.abs(np.asarray(current, dtype=np.float64))
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
