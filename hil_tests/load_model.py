"""Deterministic load model behind every simulated meter (Modbus and DL/T 645 alike).

The simulators only translate: a pymodbus server encodes a :class:`MeterSnapshot` into registers,
the DL/T 645 pty simulator encodes the same snapshot into BCD data items. Everything a meter
*measures* lives here, free of I/O, so both protocols report the same physics and tests can
compare what the gateway published against what the meter "really" did.

Time
    Simulated time is UTC epoch seconds: ``start_epoch + (clock() - clock_at_start) *
    acceleration``. ``clock`` is any function returning seconds (``time.monotonic`` by default);
    tests pass a :class:`ManualClock` and step it. Meters keep local time
    (``utc_offset_s``, UTC+8 by default as in China) for tariffs and the midnight freeze.

Determinism
    Every random-looking number is a hash of ``(seed, meter id, minute)``, never a running
    random stream, so a value depends only on *when* it is asked for — not on how often or in
    what order meters were sampled. Same seed, same answers.

Electrical state (one value per simulated minute, "cell")
    Voltage is 220 V nominal with a per-meter offset and a little noise; the load follows a
    24-hour shape and a weekday factor scaled by the meter's ``base_kw``; power factor stays in
    0.85–0.99. The reported values are kept *consistent at the meter's own resolution*
    (DL/T 645-2007 formats: 0.1 V, 0.001 A, 0.0001 kW, 0.001 PF, 0.01 Hz): per phase the current
    is derived from the target power, then ``P = V·I·PF`` is recomputed from the rounded V, I and
    PF, and the total is exactly the sum of the phases.

Energy registers
    Integrated exactly: the active power of a cell (integer 0.1 W) times elapsed integer
    milliseconds accumulates in integer 0.1 W·ms, so splitting an interval into any number of
    ``advance_to`` calls gives the same registers. Energy goes to one of four tariffs by local
    time of day (:data:`DEFAULT_TARIFF_WINDOWS`); a register shows its accumulator floored to
    0.01 kWh, and the total is exactly the sum of the four tariff registers.

Events, status and faults
    Relay trip/close (load and energy stop while open), supply power-down (count, last
    start/end), terminal-cover opening, pre-trip alarm, protect (trips refused), a daily freeze
    at local 00:00 (the last ``freeze_days``), sliding-window maximum demand with its time,
    and electrical-side faults for theft and failure scenarios: a current scale factor (a meter
    shunted to register 0.3× of the real load), one phase's current scale (a shorted CT: loss of
    current; half a CT: current imbalance), loss of voltage on a phase, a broken phase conductor,
    a reversed CT, a stopped register and a register running at a multiple of the measured
    energy. One knob per indicator of :mod:`edge_rules.theft`. The *true* load keeps flowing
    under the theft faults (a broken conductor stops the load of its phase), which is what an
    area master meter (:meth:`LoadModel.master_meter`) sees. A prepaid meter
    (:meth:`SimMeter.set_prepaid`) keeps a prepayment account whose balance falls as its import
    register rises and rises on :meth:`SimMeter.recharge` (:mod:`hil_tests.prepayment`).

Driving it from a protocol simulator (Modbus here, DL/T 645 on a pty alike)
    On each request: ``snap = meter.sample()`` (advances to the model clock's "now"). If
    ``snap.powered`` is False stay silent — a meter without supply does not answer. Otherwise
    encode from ``snap.values()`` (vocabulary names, exact Decimals at the DL/T 645 resolutions)
    or the typed fields: ``snap.local_time`` for the meter clock, ``snap.daily_freezes[n - 1]``
    for the n-th last daily freeze, ``snap.max_demand`` (value and time), ``snap.power_downs`` /
    ``snap.cover_openings`` / ``snap.relay_trips`` for event records, ``snap.status`` for the
    status words. Control frames map to :meth:`SimMeter.trip` (1AH), :meth:`SimMeter.allow_close`
    (1BH), :meth:`SimMeter.close` (1CH), :meth:`SimMeter.set_alarm` (2AH/2BH) and
    :meth:`SimMeter.set_protect` (3AH/3BH); a :class:`RelayOutcome` other than EXECUTED is the
    meter refusing (answer with an error word).

Thread safety: one lock per model; simulators on other threads may sample concurrently.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from hil_tests.prepayment import PrepaidAccount, PrepaidUnit, Prepayment

__all__ = [
    "DEFAULT_START_EPOCH",
    "DEFAULT_TARIFF_WINDOWS",
    "RESIDENTIAL_DAY_SHAPE",
    "WEEKDAY_FACTORS",
    "DailyFreeze",
    "EventLog",
    "LoadModel",
    "ManualClock",
    "MaxDemand",
    "MeterSnapshot",
    "PhaseValues",
    "RelayOutcome",
    "RelayState",
    "SimMeter",
    "StatusFlags",
    "Tariff",
    "TariffRegisters",
    "TariffSchedule",
    "TariffWindow",
]

#: 2025-01-01 00:00 at UTC+8.
DEFAULT_START_EPOCH = 1_735_660_800.0

CELL_S = 60  # one electrical state per simulated minute
_CELL_MS = CELL_S * 1000
# Energy accumulators count 0.1 W x 1 ms; one kWh is 10 000 dW x 3 600 000 ms.
_UNITS_PER_KWH = 10_000 * 3_600_000
_UNITS_PER_REGISTER_STEP = _UNITS_PER_KWH // 100  # 0.01 kWh


# --------------------------------------------------------------------------------------------
# Tariffs (data)
# --------------------------------------------------------------------------------------------


class Tariff(enum.IntEnum):
    """The four DL/T 645 tariffs, numbered as the standard's data identifiers number them."""

    SHARP = 1  # 尖, T1
    PEAK = 2  # 峰, T2
    FLAT = 3  # 平, T3
    VALLEY = 4  # 谷, T4


@dataclass(frozen=True, slots=True)
class TariffWindow:
    """Local-time window ``[start, end)`` ("HH:MM", end may be "24:00") billed at ``tariff``."""

    start: str
    end: str
    tariff: Tariff


#: An illustrative time-of-use schedule (no particular utility's): valley overnight, peaks in the
#: working day and a sharp (critical-peak) band in the evening. Every minute is covered once.
DEFAULT_TARIFF_WINDOWS: tuple[TariffWindow, ...] = (
    TariffWindow("00:00", "08:00", Tariff.VALLEY),
    TariffWindow("08:00", "10:00", Tariff.FLAT),
    TariffWindow("10:00", "12:00", Tariff.PEAK),
    TariffWindow("12:00", "14:00", Tariff.FLAT),
    TariffWindow("14:00", "17:00", Tariff.PEAK),
    TariffWindow("17:00", "19:00", Tariff.FLAT),
    TariffWindow("19:00", "21:00", Tariff.SHARP),
    TariffWindow("21:00", "22:00", Tariff.PEAK),
    TariffWindow("22:00", "24:00", Tariff.VALLEY),
)


class TariffSchedule:
    """Minute-of-day → tariff lookup built from windows that must cover the day exactly once."""

    def __init__(self, windows: Sequence[TariffWindow]) -> None:
        table: list[Tariff | None] = [None] * 1440
        for window in windows:
            start, end = _minute_of_day(window.start), _minute_of_day(window.end)
            if end <= start:
                raise ValueError(f"tariff window {window.start}-{window.end}: end must be after start")
            for minute in range(start, end):
                if table[minute] is not None:
                    raise ValueError(f"tariff windows overlap at {minute // 60:02d}:{minute % 60:02d}")
                table[minute] = window.tariff
        gaps = [m for m, tariff in enumerate(table) if tariff is None]
        if gaps:
            raise ValueError(f"tariff windows leave {gaps[0] // 60:02d}:{gaps[0] % 60:02d} uncovered")
        self.windows = tuple(windows)
        self._table: tuple[Tariff, ...] = tuple(t for t in table if t is not None)

    def tariff_at(self, minute_of_day: int) -> Tariff:
        """The tariff in force during local minute ``minute_of_day`` (0..1439)."""
        return self._table[minute_of_day % 1440]


def _minute_of_day(text: str) -> int:
    try:
        hours, minutes = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"time {text!r} is not HH:MM") from None
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or (hours == 24 and minutes):
        raise ValueError(f"time {text!r} is not between 00:00 and 24:00")
    return hours * 60 + minutes


# --------------------------------------------------------------------------------------------
# Load shapes (data)
# --------------------------------------------------------------------------------------------

#: Residential load per local hour as a fraction of the meter's base kW (linearly interpolated):
#: a night trough, a breakfast rise, a midday plateau and the evening peak at 19:00-20:00.
RESIDENTIAL_DAY_SHAPE: tuple[float, ...] = (
    0.35, 0.30, 0.28, 0.27, 0.28, 0.35, 0.55, 0.80, 0.75, 0.60, 0.55, 0.60,
    0.65, 0.55, 0.50, 0.50, 0.55, 0.70, 0.95, 1.00, 0.95, 0.85, 0.65, 0.45,
)

#: Monday..Sunday multipliers: people are home at the weekend.
WEEKDAY_FACTORS: tuple[float, ...] = (1.00, 0.98, 0.98, 1.00, 1.03, 1.12, 1.10)


# --------------------------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------------------------


class ManualClock:
    """A clock that only moves when told to: pass it as ``clock=`` and step it in tests."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (wall seconds; the model multiplies by its acceleration)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds


# --------------------------------------------------------------------------------------------
# Snapshot types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhaseValues:
    """One phase as the meter measures it.

    Fields: ``voltage_v`` (0.1 V), ``current_a`` (0.001 A, never negative), ``active_kw``
    (0.0001 kW, negative = export), ``reactive_kvar`` and ``apparent_kva`` (0.0001),
    ``power_factor`` (0.001, signed like the active power; 1.000 when nothing flows).
    """

    voltage_v: Decimal
    current_a: Decimal
    active_kw: Decimal
    reactive_kvar: Decimal
    apparent_kva: Decimal
    power_factor: Decimal


@dataclass(frozen=True, slots=True)
class TariffRegisters:
    """One energy register set: ``tariffs`` are T1..T4 (sharp, peak, flat, valley), 0.01 kWh.

    ``total`` is exactly the sum of the four.
    """

    tariffs: tuple[Decimal, Decimal, Decimal, Decimal]

    @property
    def total(self) -> Decimal:
        """The total register (the sum of the tariff registers)."""
        return sum(self.tariffs, Decimal("0.00"))

    def tariff(self, tariff: Tariff) -> Decimal:
        """The register of one tariff."""
        return self.tariffs[tariff - 1]


@dataclass(frozen=True, slots=True)
class EventLog:
    """Occurrences of one kind of event: ``count`` and the last one's ``last_start`` /
    ``last_end`` (simulated UTC epoch seconds; ``last_end`` None while it is still going on)."""

    count: int = 0
    last_start: float | None = None
    last_end: float | None = None


@dataclass(frozen=True, slots=True)
class MaxDemand:
    """Largest sliding-window average import power: ``kw`` (0.0001) and when (``at``, epoch s)."""

    kw: Decimal = Decimal("0.0000")
    at: float | None = None


@dataclass(frozen=True, slots=True)
class StatusFlags:
    """What a meter's status words report.

    Fields: ``powered``; ``relay_open``; ``close_allowed`` (open, customer may close);
    ``pre_trip_alarm``; ``protected`` (trips refused); ``cover_open``; ``loss_of_voltage`` and
    ``reverse_phase`` (one flag per phase); ``reverse_power`` (total active power negative);
    ``phase_break`` (one flag per phase: 断相, the phase's conductor is gone — no voltage and
    no current — while the meter, powered from its other phases, runs on).
    """

    powered: bool
    relay_open: bool
    close_allowed: bool
    pre_trip_alarm: bool
    protected: bool
    cover_open: bool
    loss_of_voltage: tuple[bool, ...]
    reverse_phase: tuple[bool, ...]
    reverse_power: bool
    phase_break: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class DailyFreeze:
    """Registers frozen at local midnight: ``at`` (epoch s), ``day`` (the local date that began),
    ``import_``, ``export``, ``reactive_import``, ``reactive_export``, and ``max_demand`` so far."""

    at: float
    day: dt.date
    import_: TariffRegisters
    export: TariffRegisters
    reactive_import: TariffRegisters
    reactive_export: TariffRegisters
    max_demand: MaxDemand


@dataclass(frozen=True, slots=True)
class LoadRecordEntry:
    """One stored load record: ``at`` (simulated UTC epoch s, a multiple of the recording
    period) and the registers there — ``import_``, ``export`` (kWh), ``reactive_import``,
    ``reactive_export`` (kvarh), totals exactly as the meter would have shown them."""

    at: float
    import_: Decimal
    export: Decimal
    reactive_import: Decimal
    reactive_export: Decimal


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """Everything one meter reports at simulated time ``t`` (UTC epoch seconds).

    Instantaneous values (``phase_values``, totals, ``frequency_hz``) are the meter's current
    minute; registers are exact Decimals at 0.01 kWh. ``true_active_kw`` is what the customer
    really draws — it differs from ``active_kw`` only under theft faults. :meth:`values` gives
    everything under the shared quantity vocabulary, which is what the simulators encode.
    """

    meter_id: str
    t: float
    local_time: dt.datetime
    phases: int
    generating: bool
    phase_values: tuple[PhaseValues, ...]
    line_voltages_v: tuple[Decimal, ...]  # ab, bc, ca (three-phase meters only)
    active_kw: Decimal
    reactive_kvar: Decimal
    apparent_kva: Decimal
    power_factor: Decimal
    frequency_hz: Decimal
    true_active_kw: Decimal
    energy_import: TariffRegisters
    energy_export: TariffRegisters
    reactive_import: TariffRegisters
    reactive_export: TariffRegisters
    demand_kw: Decimal
    max_demand: MaxDemand
    max_demand_by_tariff: tuple[MaxDemand, MaxDemand, MaxDemand, MaxDemand]
    status: StatusFlags
    power_downs: EventLog
    cover_openings: EventLog
    relay_trips: EventLog
    daily_freezes: tuple[DailyFreeze, ...]  # most recent first
    ct_ratio: Decimal
    pt_ratio: Decimal
    #: The prepayment account of a prepaid meter (:meth:`SimMeter.set_prepaid`), else None.
    prepaid: Prepayment | None = None

    @property
    def powered(self) -> bool:
        """False during a supply outage: a real meter is silent then."""
        return self.status.powered

    @property
    def energy_combined(self) -> TariffRegisters:
        """Combined active energy with the usual combination word: import + export."""
        return _add(self.energy_import, self.energy_export)

    def values(self) -> dict[str, Decimal]:
        """All reported quantities by vocabulary name (``voltage.a``, ``energy.active.import.t1`` …)."""
        out: dict[str, Decimal] = {}
        for letter, phase in zip("abc", self.phase_values, strict=False):
            out[f"voltage.{letter}"] = phase.voltage_v
            out[f"current.{letter}"] = phase.current_a
            out[f"power.active.{letter}"] = phase.active_kw
            out[f"power.reactive.{letter}"] = phase.reactive_kvar
            out[f"power.apparent.{letter}"] = phase.apparent_kva
            out[f"power.factor.{letter}"] = phase.power_factor
        for name, value in zip(("ab", "bc", "ca"), self.line_voltages_v, strict=False):
            out[f"voltage.{name}"] = value
        out["power.active.total"] = self.active_kw
        out["power.reactive.total"] = self.reactive_kvar
        out["power.apparent.total"] = self.apparent_kva
        out["power.factor.total"] = self.power_factor
        out["frequency"] = self.frequency_hz
        registers = {
            "energy.active.import": self.energy_import,
            "energy.active.export": self.energy_export,
            "energy.active.combined": self.energy_combined,
            "energy.reactive.import": self.reactive_import,
            "energy.reactive.export": self.reactive_export,
            "energy.reactive.combined": _add(self.reactive_import, self.reactive_export),
        }
        for prefix, register in registers.items():
            out[f"{prefix}.total"] = register.total
            for tariff in Tariff:
                out[f"{prefix}.t{tariff.value}"] = register.tariff(tariff)
        out["demand.active.import"] = self.demand_kw
        out["demand.active.import.max.total"] = self.max_demand.kw
        for tariff, demand in zip(Tariff, self.max_demand_by_tariff, strict=True):
            out[f"demand.active.import.max.t{tariff.value}"] = demand.kw
        out["ratio.ct"] = self.ct_ratio
        out["ratio.pt"] = self.pt_ratio
        if self.prepaid is not None:
            out.update(self.prepaid.values())
        return out


def _add(a: TariffRegisters, b: TariffRegisters) -> TariffRegisters:
    x, y = a.tariffs, b.tariffs
    return TariffRegisters((x[0] + y[0], x[1] + y[1], x[2] + y[2], x[3] + y[3]))


class RelayState(enum.Enum):
    """The load relay: closed, open, or open with the customer allowed to close it."""

    CLOSED = "closed"
    OPEN = "open"
    OPEN_CLOSE_ALLOWED = "open_close_allowed"


class RelayOutcome(enum.Enum):
    """Result of a relay command: done, or refused because the meter is protected (保电)."""

    EXECUTED = "executed"
    REFUSED_PROTECTED = "refused_protected"
    REFUSED_NOT_ALLOWED = "refused_not_allowed"


# --------------------------------------------------------------------------------------------
# Deterministic noise
# --------------------------------------------------------------------------------------------


def _uniforms(key: str) -> tuple[float, ...]:
    """Sixteen numbers in [0, 1) that depend only on ``key`` (blake2b, not Python's salted hash)."""
    words = _SIXTEEN_WORDS.unpack(hashlib.blake2b(key.encode(), digest_size=64).digest())
    return tuple(word / 4_294_967_296 for word in words)


_SIXTEEN_WORDS = struct.Struct(">16I")


def _round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, in integers (denominator > 0)."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


def _round_sqrt(value: int) -> int:
    root = math.isqrt(value)
    return root + 1 if value - root * root > root else root


def _dec(count: int, places: int) -> Decimal:
    """An integer count of 10**-places as an exact Decimal (2203, 1 → 220.3)."""
    return Decimal(count).scaleb(-places)


# --------------------------------------------------------------------------------------------
# Electrical state of one minute
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Electrical:
    """Integer electrical state of one cell: dV, mA, dW, dvar, dVA, PF in thousandths, cHz."""

    voltage_dv: tuple[int, ...]
    current_ma: tuple[int, ...]
    active_dw: tuple[int, ...]
    reactive_dvar: tuple[int, ...]
    apparent_dva: tuple[int, ...]
    pf_milli: tuple[int, ...]
    line_dv: tuple[int, ...]
    frequency_chz: int
    true_active_dw: int

    @property
    def total_active_dw(self) -> int:
        return sum(self.active_dw)

    @property
    def total_reactive_dvar(self) -> int:
        return sum(self.reactive_dvar)


@dataclass(slots=True)
class _EventState:
    count: int = 0
    start_ms: int | None = None
    end_ms: int | None = None

    def begin(self, t_ms: int) -> None:
        self.count += 1
        self.start_ms = t_ms
        self.end_ms = None

    def finish(self, t_ms: int) -> None:
        if self.start_ms is not None and self.end_ms is None:
            self.end_ms = t_ms

    def log(self) -> EventLog:
        return EventLog(self.count,
                        None if self.start_ms is None else self.start_ms / 1000,
                        None if self.end_ms is None else self.end_ms / 1000)


@dataclass(frozen=True, slots=True)
class _MeterCharacter:
    """Per-meter constants drawn once from the seed: what makes two meters differ."""

    shift_min: float  # load curve shifted earlier/later
    shares: tuple[float, ...]  # phase split of the load
    voltage_offset: float  # distance from the transformer
    pf_mean: float


# --------------------------------------------------------------------------------------------
# Meters
# --------------------------------------------------------------------------------------------

_CHANNELS = ("import", "export", "reactive_import", "reactive_export")


class SimMeter:
    """One simulated meter; create it with :meth:`LoadModel.meter` or :meth:`LoadModel.master_meter`.

    Time only moves forward: :meth:`advance_to` integrates energy up to a simulated instant
    (earlier instants are ignored) and :meth:`snapshot` reports the state there. Commands and
    fault knobs first bring *every* meter of the model to the current simulated time (or
    ``at``), so the change takes effect from that instant and area master meters stay
    consistent with their sub-meters.
    """

    def __init__(
        self,
        model: LoadModel,
        meter_id: str,
        *,
        phases: int,
        base_kw: float,
        generating: bool,
        pv_kw: float,
        nominal_voltage: float,
        start_ms: int,
        initial_import_kwh: Decimal | None,
        subs: tuple[SimMeter, ...] = (),
        loss_fraction: float = 0.0,
        ct_ratio: Decimal = Decimal(1),
        pt_ratio: Decimal = Decimal(1),
    ) -> None:
        if phases not in (1, 3):
            raise ValueError(f"meter {meter_id}: phases must be 1 or 3, not {phases}")
        if base_kw < 0 or pv_kw < 0:
            raise ValueError(f"meter {meter_id}: base_kw and pv_kw cannot be negative")
        self._model = model
        self.meter_id = meter_id
        self.phases = phases
        self.base_kw = base_kw
        self.generating = generating
        self.pv_kw = pv_kw
        self.nominal_voltage = nominal_voltage
        self.subs = subs
        self.loss_fraction = loss_fraction
        self._character = self._draw_character()
        self._t_ms = start_ms
        # state (every change bumps the model's version, so cached cells are recomputed)
        self._powered = True
        self._relay = RelayState.CLOSED
        self._alarm = False
        self._protected = False
        self._cover_open = False
        self._theft_factor_milli = 1000
        self._lost_phases: set[int] = set()
        self._reversed_phases: set[int] = set()
        self._register_stopped = False
        self._phase_current_milli = [1000] * phases
        self._broken_phases: set[int] = set()
        self._register_speed_milli = 1000
        self._prepaid: PrepaidAccount | None = None
        # Reported as configured; the model's values are already primary-side quantities.
        self.ct_ratio = ct_ratio
        self.pt_ratio = pt_ratio
        # registers
        self._energy: dict[str, list[int]] = {ch: [0, 0, 0, 0] for ch in _CHANNELS}
        self._seed_registers(initial_import_kwh)
        self._demand_window: deque[int] = deque(maxlen=model.demand_cells)
        self._cell_import = 0
        self._demand_dw: int = 0
        self._max_demand: tuple[int, int | None] = (0, None)
        self._max_demand_by_tariff: list[tuple[int, int | None]] = [(0, None)] * 4
        self._freezes: deque[DailyFreeze] = deque(maxlen=model.freeze_days)
        self._load_records: deque[LoadRecordEntry] = deque(
            maxlen=model.load_record_days * 86_400 // model.load_record_period_s)
        self._power_downs = _EventState()
        self._cover = _EventState()
        self._trips = _EventState()
        self._cache: dict[tuple[int, int], _Electrical] = {}

    # ---- construction helpers -------------------------------------------------------------

    def _draw_character(self) -> _MeterCharacter:
        u = _uniforms(f"{self._model.seed}|{self.meter_id}|character")
        if self.phases == 3:
            raw = [0.85 + 0.3 * u[i] for i in range(3)]
            shares = tuple(r / sum(raw) for r in raw)
        else:
            shares = (1.0,)
        return _MeterCharacter(
            shift_min=-45 + 90 * u[3],
            shares=shares,
            voltage_offset=-0.03 + 0.05 * u[4],
            pf_mean=0.88 + 0.09 * u[5],
        )

    def _seed_registers(self, initial_import_kwh: Decimal | None) -> None:
        u = _uniforms(f"{self._model.seed}|{self.meter_id}|registers")
        if initial_import_kwh is None:
            hours = 1500 + 2500 * u[0]
            initial_import_kwh = Decimal(round(max(self.base_kw, 0.5) * hours, 2)).quantize(Decimal("0.01"))
        weights = (0.08 + 0.04 * u[1], 0.30 + 0.05 * u[2], 0.34 + 0.05 * u[3], 0.28 + 0.05 * u[4])
        total_units = int(initial_import_kwh * _UNITS_PER_KWH)
        parts = [int(total_units * w / sum(weights)) // _UNITS_PER_REGISTER_STEP * _UNITS_PER_REGISTER_STEP
                 for w in weights[:3]]
        parts.append(total_units - sum(parts))
        self._energy["import"] = parts
        self._energy["reactive_import"] = [p * 3 // 10 // _UNITS_PER_REGISTER_STEP * _UNITS_PER_REGISTER_STEP
                                           for p in parts]
        if self.generating:
            # PV exports in daylight: split the history over the flat and peak daytime tariffs.
            export_kwh = int(self.pv_kw * (400 + 800 * u[5]))
            peak = export_kwh * 45 // 100
            self._energy["export"] = [0, peak * _UNITS_PER_KWH, (export_kwh - peak) * _UNITS_PER_KWH, 0]
            self._energy["reactive_export"] = [0, peak * _UNITS_PER_KWH // 10,
                                               (export_kwh - peak) * _UNITS_PER_KWH // 10, 0]

    # ---- time --------------------------------------------------------------------------------

    @property
    def t(self) -> float:
        """Simulated time (UTC epoch seconds) the meter has been advanced to."""
        return self._t_ms / 1000

    def advance_to(self, sim_t: float) -> None:
        """Integrate energy, demand and freezes up to ``sim_t``; a past instant is a no-op."""
        target = math.floor(sim_t * 1000)
        with self._model.lock:
            self._advance_ms(target)

    def _advance_ms(self, target: int) -> None:
        while self._t_ms < target:
            cell = self._t_ms // _CELL_MS
            cell_end = (cell + 1) * _CELL_MS
            segment_end = min(cell_end, target)
            elapsed = segment_end - self._t_ms
            state = self._electrical(cell)
            active = state.total_active_dw
            reactive = abs(state.total_reactive_dvar)
            tariff_index = self._model.tariff_of_cell(cell) - 1
            if active > 0:
                self._cell_import += active * elapsed
            if not self._register_stopped:
                speed = self._register_speed_milli
                if speed != 1000:  # a tampered register: multiples of what the meter measures
                    active = _round_div(active * speed, 1000)
                    reactive = _round_div(reactive * speed, 1000)
                if active > 0:
                    self._energy["import"][tariff_index] += active * elapsed
                    self._energy["reactive_import"][tariff_index] += reactive * elapsed
                elif active < 0:
                    self._energy["export"][tariff_index] -= active * elapsed
                    self._energy["reactive_export"][tariff_index] += reactive * elapsed
            self._t_ms = segment_end
            if segment_end == cell_end:
                self._finish_cell(cell, tariff_index)

    def _finish_cell(self, cell: int, tariff_index: int) -> None:
        self._demand_window.append(self._cell_import)
        self._cell_import = 0
        end_ms = (cell + 1) * _CELL_MS
        if (end_ms + self._model.utc_offset_s * 1000) % (self._model.load_record_period_s * 1000) == 0:
            # The meter's own load record (DL/T 645-2007 A.7): stored whether or not anybody
            # reads the bus, so a master can fetch what it missed during a comm fault.
            self._load_records.append(LoadRecordEntry(
                end_ms / 1000, self._registers("import").total, self._registers("export").total,
                self._registers("reactive_import").total, self._registers("reactive_export").total))
        if len(self._demand_window) == self._demand_window.maxlen:
            window_ms = self._model.demand_cells * _CELL_MS
            self._demand_dw = _round_div(sum(self._demand_window), window_ms)
            if self._demand_dw > self._max_demand[0]:
                self._max_demand = (self._demand_dw, end_ms)
            if self._demand_dw > self._max_demand_by_tariff[tariff_index][0]:
                self._max_demand_by_tariff[tariff_index] = (self._demand_dw, end_ms)
        if self._model.is_local_midnight(end_ms):
            self._freezes.appendleft(DailyFreeze(
                at=end_ms / 1000,
                day=self._model.local_datetime(end_ms / 1000).date(),
                import_=self._registers("import"),
                export=self._registers("export"),
                reactive_import=self._registers("reactive_import"),
                reactive_export=self._registers("reactive_export"),
                max_demand=self._demand(self._max_demand),
            ))

    def load_records(self, since: float, count: int) -> list[LoadRecordEntry]:
        """Up to ``count`` stored load records at or after simulated time ``since`` (UTC
        epoch s), oldest first — the meter's interval curve, for load-record reads. Brings the
        meter to the model's "now" first, so records of a silent stretch exist."""
        self.advance_to(self._model.now())
        with self._model.lock:
            return [r for r in self._load_records if r.at >= since][:count]

    # ---- electrical model ----------------------------------------------------------------------

    def _electrical(self, cell: int) -> _Electrical:
        # Keyed by the model-wide version: a master meter's cells depend on its subs' state.
        key = (cell, self._model.version)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) > 256:
                self._cache.clear()
            cached = self._cache[key] = self._compute_electrical(cell)
        return cached

    def _target_power_w(self, cell: int, u: Sequence[float]) -> float:
        """Signed power the site draws in ``cell`` before the meter's own faults (W)."""
        model = self._model
        if self.subs:
            total_dw = sum(sub._electrical(cell).true_active_dw for sub in self.subs)
            return total_dw / 10 * (1 + self.loss_fraction)
        minute = model.local_minute_of_day(cell) + self._character.shift_min
        hour = (minute / 60) % 24
        low = int(hour)
        frac = hour - low
        shape = model.day_shape[low] * (1 - frac) + model.day_shape[(low + 1) % 24] * frac
        load = self.base_kw * 1000 * shape * model.weekday_factors[model.local_weekday(cell)]
        load *= 1 + 0.08 * (2 * u[0] - 1)
        if not self.generating or self.pv_kw == 0:
            return load
        sun_hour = model.local_minute_of_day(cell) / 60
        daylight = math.sin(math.pi * (sun_hour - 6) / 12) if 6 < sun_hour < 18 else 0.0
        day_u = _uniforms(f"{model.seed}|{self.meter_id}|day|{model.local_day_index(cell)}")
        cloud = 0.55 + 0.45 * day_u[0]
        pv = self.pv_kw * 1000 * daylight * cloud * (1 + 0.05 * (2 * u[1] - 1))
        return load - pv

    def _compute_electrical(self, cell: int) -> _Electrical:
        model = self._model
        n = self.phases
        if not self._powered:
            zeros = (0,) * n
            return _Electrical(zeros, zeros, zeros, zeros, zeros, (1000,) * n,
                               (0, 0, 0) if n == 3 else (), 0, 0)
        u = _uniforms(f"{model.seed}|{self.meter_id}|{cell}")
        target_w = self._target_power_w(cell, u) if self._relay is RelayState.CLOSED else 0.0
        sign = -1 if target_w < 0 else 1
        jitter = [share * (1 + 0.05 * (2 * u[2 + k] - 1)) for k, share in enumerate(self._character.shares)]
        shares = [j / sum(jitter) for j in jitter]

        volts: list[int] = []
        amps: list[int] = []
        active: list[int] = []
        reactive: list[int] = []
        apparent: list[int] = []
        pfs: list[int] = []
        true_total = 0
        for k in range(n):
            v_dv = round(self.nominal_voltage * 10 * (1 + self._character.voltage_offset
                                                     + 0.012 * (2 * u[5 + k] - 1)))
            pf = round(1000 * min(0.99, max(0.85, self._character.pf_mean + 0.025 * (2 * u[8 + k] - 1))))
            if k in self._broken_phases:  # no conductor: no voltage, and its load stops
                v_dv = 0
            phase_w = abs(target_w) * shares[k]
            true_ma = round(phase_w * 10_000_000 / (v_dv * pf)) if v_dv else 0
            true_total += sign * _round_div(v_dv * true_ma * pf, 1_000_000)
            # What the meter sees: shunted current (theft), a shorted or partial CT on one phase,
            # a lost voltage tap, a reversed CT.
            ma = _round_div(true_ma * self._theft_factor_milli, 1000)
            ma = _round_div(ma * self._phase_current_milli[k], 1000)
            seen_v = 0 if k in self._lost_phases else v_dv
            seen_sign = -sign if k in self._reversed_phases else sign
            va = _round_div(seen_v * ma, 1000)  # dVA
            sin_micro = math.isqrt((1_000_000 - pf * pf) * 1_000_000)  # sin(phi) x 1e6
            volts.append(seen_v)
            amps.append(ma)
            active.append(seen_sign * _round_div(seen_v * ma * pf, 1_000_000))
            reactive.append(seen_sign * _round_div(seen_v * ma * sin_micro, 1_000_000_000))
            apparent.append(va)
            pfs.append(seen_sign * pf if va else 1000)
        line: tuple[int, ...] = ()
        if n == 3:
            line = tuple(
                _round_sqrt(volts[i] ** 2 + volts[j] ** 2 + volts[i] * volts[j])
                for i, j in ((0, 1), (1, 2), (2, 0))
            )
        grid = _uniforms(f"{model.seed}|grid|{cell}")
        frequency = 5000 + round(4 * (2 * grid[0] - 1))
        return _Electrical(tuple(volts), tuple(amps), tuple(active), tuple(reactive), tuple(apparent),
                           tuple(pfs), line, frequency, true_total)

    # ---- reporting ----------------------------------------------------------------------------

    def _registers(self, channel: str) -> TariffRegisters:
        steps = [units // _UNITS_PER_REGISTER_STEP for units in self._energy[channel]]
        return TariffRegisters((_dec(steps[0], 2), _dec(steps[1], 2), _dec(steps[2], 2), _dec(steps[3], 2)))

    def _demand(self, value: tuple[int, int | None]) -> MaxDemand:
        return MaxDemand(_dec(value[0], 4), None if value[1] is None else value[1] / 1000)

    def snapshot(self) -> MeterSnapshot:
        """The meter's state at the simulated time it was last advanced to."""
        with self._model.lock:
            cell = self._t_ms // _CELL_MS
            state = self._electrical(cell)
            phases = tuple(
                PhaseValues(
                    voltage_v=_dec(state.voltage_dv[k], 1),
                    current_a=_dec(state.current_ma[k], 3),
                    active_kw=_dec(state.active_dw[k], 4),
                    reactive_kvar=_dec(state.reactive_dvar[k], 4),
                    apparent_kva=_dec(state.apparent_dva[k], 4),
                    power_factor=_dec(state.pf_milli[k], 3),
                )
                for k in range(self.phases)
            )
            total_va = sum(state.apparent_dva)
            total_pf = _round_div(1000 * state.total_active_dw, total_va) if total_va else 1000
            flags = StatusFlags(
                powered=self._powered,
                relay_open=self._relay is not RelayState.CLOSED,
                close_allowed=self._relay is RelayState.OPEN_CLOSE_ALLOWED,
                pre_trip_alarm=self._alarm,
                protected=self._protected,
                cover_open=self._cover_open,
                loss_of_voltage=tuple(self._powered and k in self._lost_phases for k in range(self.phases)),
                reverse_phase=tuple(p < 0 for p in state.active_dw),
                reverse_power=state.total_active_dw < 0,
                phase_break=tuple(self._powered and k in self._broken_phases
                                  for k in range(self.phases)),
            )
            by_tariff = tuple(self._demand(d) for d in self._max_demand_by_tariff)
            return MeterSnapshot(
                meter_id=self.meter_id,
                t=self._t_ms / 1000,
                local_time=self._model.local_datetime(self._t_ms / 1000),
                phases=self.phases,
                generating=self.generating,
                phase_values=phases,
                line_voltages_v=tuple(_dec(v, 1) for v in state.line_dv),
                active_kw=_dec(state.total_active_dw, 4),
                reactive_kvar=_dec(state.total_reactive_dvar, 4),
                apparent_kva=_dec(total_va, 4),
                power_factor=_dec(total_pf, 3),
                frequency_hz=_dec(state.frequency_chz, 2),
                true_active_kw=_dec(state.true_active_dw, 4),
                energy_import=self._registers("import"),
                energy_export=self._registers("export"),
                reactive_import=self._registers("reactive_import"),
                reactive_export=self._registers("reactive_export"),
                demand_kw=_dec(self._demand_dw, 4),
                max_demand=self._demand(self._max_demand),
                max_demand_by_tariff=(by_tariff[0], by_tariff[1], by_tariff[2], by_tariff[3]),
                status=flags,
                power_downs=self._power_downs.log(),
                cover_openings=self._cover.log(),
                relay_trips=self._trips.log(),
                daily_freezes=tuple(self._freezes),
                ct_ratio=self.ct_ratio,
                pt_ratio=self.pt_ratio,
                prepaid=(None if self._prepaid is None
                         else self._prepaid.state(self._registers("import").total)),
            )

    def sample(self) -> MeterSnapshot:
        """Advance to the model's current simulated time, then :meth:`snapshot` — what a
        simulator calls when a request arrives."""
        with self._model.lock:
            self._advance_ms(math.floor(self._model.now() * 1000))
            return self.snapshot()

    # ---- commands and knobs ------------------------------------------------------------------

    @contextmanager
    def _change(self, at: float | None) -> Iterator[int]:
        """Bring the whole model to ``at`` (default: now), give the instant, invalidate caches."""
        model = self._model
        with model.lock:
            model.advance_all(model.now() if at is None else at)
            try:
                yield self._t_ms
            finally:
                model.version += 1

    def trip(self, at: float | None = None) -> RelayOutcome:
        """Open the load relay (DL/T 645 1AH): the load and the registers stop. Refused while protected."""
        with self._change(at) as t_ms:
            if self._protected:
                return RelayOutcome.REFUSED_PROTECTED
            if self._relay is RelayState.CLOSED:
                self._trips.begin(t_ms)
            self._relay = RelayState.OPEN
        return RelayOutcome.EXECUTED

    def close(self, at: float | None = None) -> RelayOutcome:
        """Close the relay directly (1CH): the load resumes."""
        with self._change(at) as t_ms:
            if self._relay is not RelayState.CLOSED:
                self._trips.finish(t_ms)
            self._relay = RelayState.CLOSED
        return RelayOutcome.EXECUTED

    def allow_close(self, at: float | None = None) -> RelayOutcome:
        """Permit closing (1BH): the relay stays open until :meth:`customer_close`."""
        with self._change(at):
            if self._relay is RelayState.OPEN:
                self._relay = RelayState.OPEN_CLOSE_ALLOWED
        return RelayOutcome.EXECUTED

    def customer_close(self, at: float | None = None) -> RelayOutcome:
        """The customer presses the button: closes only after :meth:`allow_close`."""
        with self._change(at) as t_ms:
            if self._relay is RelayState.OPEN:
                return RelayOutcome.REFUSED_NOT_ALLOWED
            if self._relay is RelayState.OPEN_CLOSE_ALLOWED:
                self._trips.finish(t_ms)
                self._relay = RelayState.CLOSED
        return RelayOutcome.EXECUTED

    def set_alarm(self, on: bool, at: float | None = None) -> None:
        """Raise (2AH) or clear (2BH) the pre-trip alarm."""
        with self._change(at):
            self._alarm = on

    def set_protect(self, on: bool, at: float | None = None) -> None:
        """Enter (3AH) or leave (3BH) protect: while protected, trips are refused."""
        with self._change(at):
            self._protected = on

    def power_off(self, at: float | None = None) -> None:
        """Supply outage: voltages, load and registers stop; a power-down event starts."""
        with self._change(at) as t_ms:
            if self._powered:
                self._power_downs.begin(t_ms)
            self._powered = False

    def power_on(self, at: float | None = None) -> None:
        """Supply restored: the power-down event ends."""
        with self._change(at) as t_ms:
            if not self._powered:
                self._power_downs.finish(t_ms)
            self._powered = True

    def open_cover(self, at: float | None = None) -> None:
        """Terminal cover opened (tamper event starts)."""
        with self._change(at) as t_ms:
            if not self._cover_open:
                self._cover.begin(t_ms)
            self._cover_open = True

    def close_cover(self, at: float | None = None) -> None:
        """Terminal cover closed (tamper event ends)."""
        with self._change(at) as t_ms:
            if self._cover_open:
                self._cover.finish(t_ms)
            self._cover_open = False

    def set_theft_factor(self, factor: float | Decimal, at: float | None = None) -> None:
        """The meter registers ``factor`` × the real current (0.3 = a shunted meter, 1 = honest)."""
        milli = round(Decimal(str(factor)) * 1000)
        if not 0 <= milli <= 10_000:
            raise ValueError(f"meter {self.meter_id}: theft factor {factor} is outside 0..10")
        with self._change(at):
            self._theft_factor_milli = milli

    def set_loss_of_voltage(self, phase: str, lost: bool, at: float | None = None) -> None:
        """Disconnect (or restore) the voltage tap of ``phase`` ('a'/'b'/'c'): the meter sees 0 V there."""
        index = self._phase_index(phase)
        with self._change(at):
            (self._lost_phases.add if lost else self._lost_phases.discard)(index)

    def set_reversed_ct(self, phase: str, reversed_: bool, at: float | None = None) -> None:
        """Reverse (or restore) the current transformer of ``phase``: its power reads negative."""
        index = self._phase_index(phase)
        with self._change(at):
            (self._reversed_phases.add if reversed_ else self._reversed_phases.discard)(index)

    def set_register_stopped(self, stopped: bool, at: float | None = None) -> None:
        """Freeze (or release) the energy registers while the meter keeps measuring power."""
        with self._change(at):
            self._register_stopped = stopped

    def set_phase_current_factor(self, phase: str, factor: float | Decimal,
                                 at: float | None = None) -> None:
        """The meter sees ``factor`` × the real current of ``phase`` only (0 = a shorted CT:
        loss of current; 0.5 = a half-bypassed CT: current imbalance; 1 = honest)."""
        index = self._phase_index(phase)
        milli = round(Decimal(str(factor)) * 1000)
        if not 0 <= milli <= 10_000:
            raise ValueError(f"meter {self.meter_id}: phase current factor {factor} is outside 0..10")
        with self._change(at):
            self._phase_current_milli[index] = milli

    def set_phase_break(self, phase: str, broken: bool, at: float | None = None) -> None:
        """Break (or repair) the conductor of ``phase``: no voltage and no current there, the
        load on it stops (unlike :meth:`set_loss_of_voltage`, where the load keeps running)."""
        index = self._phase_index(phase)
        with self._change(at):
            (self._broken_phases.add if broken else self._broken_phases.discard)(index)

    def set_register_speed(self, factor: float | Decimal, at: float | None = None) -> None:
        """The energy registers advance ``factor`` × the energy the meter measures (12 = a
        meter running fast; 1 = honest). Power and current readings are unaffected."""
        milli = round(Decimal(str(factor)) * 1000)
        if not 0 <= milli <= 1_000_000:
            raise ValueError(f"meter {self.meter_id}: register speed {factor} is outside 0..1000")
        with self._change(at):
            self._register_speed_milli = milli

    def set_prepaid(self, credit: Decimal, *, price: Decimal = Decimal(1),
                    unit: PrepaidUnit = "money", at: float | None = None) -> None:
        """Make this a prepaid meter from now: ``credit`` 元 (or kWh for ``unit="energy"``)
        that falls by ``price`` per kWh imported (see :mod:`hil_tests.prepayment`)."""
        with self._change(at):
            self._prepaid = PrepaidAccount(unit, Decimal(credit), Decimal(price),
                                           self._registers("import").total)

    def recharge(self, amount: Decimal, at: float | None = None) -> None:
        """The customer buys ``amount`` (a card or a remote top-up): the balance rises and the
        purchase counter moves on by one."""
        with self._change(at):
            if self._prepaid is None:
                raise ValueError(f"meter {self.meter_id} is not prepaid (set_prepaid first)")
            self._prepaid.recharge(Decimal(amount))

    def reset_max_demand(self, at: float | None = None) -> None:
        """Clear maximum demand (DL/T 645 19H)."""
        with self._change(at):
            self._max_demand = (0, None)
            self._max_demand_by_tariff = [(0, None)] * 4

    def _phase_index(self, phase: str) -> int:
        index = "abc".find(phase)
        if index < 0 or index >= self.phases:
            raise ValueError(f"meter {self.meter_id} has {self.phases} phase(s); no phase {phase!r}")
        return index


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass
class LoadModel:
    """All simulated meters of one test rig, sharing a seed, a clock and a tariff schedule.

    ``seed`` makes everything reproducible. Simulated time is ``start_epoch + (clock() -
    clock_at_creation) * acceleration``. ``utc_offset_s`` is the meters' local time zone
    (a whole number of minutes). ``demand_period_s`` is the sliding maximum-demand window
    (15 min, sliding by 1 min as DL/T 645 meters do by default); ``freeze_days`` how many daily
    freezes a meter keeps.
    """

    seed: int
    start_epoch: float = DEFAULT_START_EPOCH
    acceleration: float = 1.0
    clock: Callable[[], float] = time.monotonic
    utc_offset_s: int = 8 * 3600
    tariff_windows: Sequence[TariffWindow] = DEFAULT_TARIFF_WINDOWS
    day_shape: Sequence[float] = RESIDENTIAL_DAY_SHAPE
    weekday_factors: Sequence[float] = WEEKDAY_FACTORS
    demand_period_s: int = 900
    freeze_days: int = 62
    load_record_period_s: int = 900
    load_record_days: int = 10
    lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    version: int = field(default=0, init=False, repr=False)
    schedule: TariffSchedule = field(init=False, repr=False)
    _meters: dict[str, SimMeter] = field(default_factory=dict, init=False, repr=False)
    _clock_zero: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.acceleration <= 0:
            raise ValueError("acceleration must be positive")
        if self.utc_offset_s % CELL_S:
            raise ValueError("utc_offset_s must be a whole number of minutes")
        if self.demand_period_s <= 0 or self.demand_period_s % CELL_S:
            raise ValueError(f"demand_period_s must be a positive multiple of {CELL_S}")
        if len(self.day_shape) != 24 or len(self.weekday_factors) != 7:
            raise ValueError("day_shape needs 24 hourly values and weekday_factors 7 (Monday first)")
        if self.freeze_days < 1:
            raise ValueError("freeze_days must be at least 1")
        if self.load_record_period_s <= 0 or self.load_record_period_s % CELL_S:
            raise ValueError(f"load_record_period_s must be a positive multiple of {CELL_S}")
        if self.load_record_days < 1:
            raise ValueError("load_record_days must be at least 1")
        self.schedule = TariffSchedule(self.tariff_windows)
        self._clock_zero = self.clock()

    # ---- time --------------------------------------------------------------------------------

    def now(self) -> float:
        """Current simulated time, UTC epoch seconds."""
        return self.start_epoch + (self.clock() - self._clock_zero) * self.acceleration

    @property
    def demand_cells(self) -> int:
        """Minutes in the demand window."""
        return self.demand_period_s // CELL_S

    def local_datetime(self, sim_t: float) -> dt.datetime:
        """``sim_t`` as the meters' local wall-clock time (aware datetime)."""
        zone = dt.timezone(dt.timedelta(seconds=self.utc_offset_s))
        return dt.datetime.fromtimestamp(sim_t, tz=zone)

    def local_minute_of_day(self, cell: int) -> int:
        """Local minute of day (0..1439) of minute ``cell`` (epoch minutes)."""
        return (cell + self.utc_offset_s // CELL_S) % 1440

    def local_day_index(self, cell: int) -> int:
        """Local days since 1970-01-01 of minute ``cell``."""
        return (cell + self.utc_offset_s // CELL_S) // 1440

    def local_weekday(self, cell: int) -> int:
        """Monday = 0 .. Sunday = 6 (1970-01-01 was a Thursday)."""
        return (self.local_day_index(cell) + 3) % 7

    def tariff_of_cell(self, cell: int) -> Tariff:
        """The tariff in force during minute ``cell``."""
        return self.schedule.tariff_at(self.local_minute_of_day(cell))

    def tariff_at(self, sim_t: float) -> Tariff:
        """The tariff in force at ``sim_t``."""
        return self.tariff_of_cell(math.floor(sim_t) // CELL_S)

    def is_local_midnight(self, t_ms: int) -> bool:
        """True when ``t_ms`` is exactly 00:00 local time."""
        return t_ms % _CELL_MS == 0 and self.local_minute_of_day(t_ms // _CELL_MS) == 0

    # ---- meters ------------------------------------------------------------------------------

    def meter(
        self,
        meter_id: str,
        *,
        phases: int = 3,
        base_kw: float | None = None,
        generating: bool = False,
        pv_kw: float | None = None,
        nominal_voltage: float = 220.0,
        initial_import_kwh: Decimal | None = None,
        ct_ratio: Decimal = Decimal(1),
        pt_ratio: Decimal = Decimal(1),
    ) -> SimMeter:
        """Add a customer meter. ``base_kw`` scales the load curve (peak-hour load; default drawn
        from the seed: 0.8-3 kW single-phase, 3-12 kW three-phase). A ``generating`` meter has
        rooftop PV of ``pv_kw`` (default 2 × base_kw) and exports around midday.
        ``initial_import_kwh`` sets the starting import total (default drawn from the seed);
        ``ct_ratio``/``pt_ratio`` are what the meter reports as its transformer ratios."""
        with self.lock:
            if meter_id in self._meters:
                raise ValueError(f"meter {meter_id!r} already exists in this model")
            u = _uniforms(f"{self.seed}|{meter_id}|size")
            if base_kw is None:
                base_kw = (0.8 + 2.2 * u[0]) if phases == 1 else (3.0 + 9.0 * u[0])
            if pv_kw is None:
                pv_kw = 2 * base_kw if generating else 0.0
            meter = SimMeter(self, meter_id, phases=phases, base_kw=base_kw, generating=generating,
                             pv_kw=pv_kw, nominal_voltage=nominal_voltage,
                             start_ms=math.floor(self.now() * 1000), initial_import_kwh=initial_import_kwh,
                             ct_ratio=ct_ratio, pt_ratio=pt_ratio)
            self._meters[meter_id] = meter
            return meter

    def master_meter(
        self,
        meter_id: str,
        subs: Sequence[SimMeter | str],
        *,
        loss_fraction: float = 0.04,
        nominal_voltage: float = 220.0,
        initial_import_kwh: Decimal | None = None,
    ) -> SimMeter:
        """Add a three-phase area master meter whose load is the *true* load of ``subs`` plus
        ``loss_fraction`` line loss — so theft at a sub-meter shows up as excess loss."""
        with self.lock:
            if meter_id in self._meters:
                raise ValueError(f"meter {meter_id!r} already exists in this model")
            members = tuple(self._meters[s] if isinstance(s, str) else s for s in subs)
            if any(member._model is not self for member in members):
                raise ValueError("sub-meters must belong to the same model")
            meter = SimMeter(self, meter_id, phases=3, base_kw=0.0, generating=False, pv_kw=0.0,
                             nominal_voltage=nominal_voltage, start_ms=math.floor(self.now() * 1000),
                             initial_import_kwh=initial_import_kwh or Decimal("50000.00"),
                             subs=members, loss_fraction=loss_fraction)
            self._meters[meter_id] = meter
            return meter

    @property
    def meters(self) -> Mapping[str, SimMeter]:
        """Meters by id (read-only view)."""
        return dict(self._meters)

    def advance_all(self, sim_t: float | None = None) -> None:
        """Advance every meter to ``sim_t`` (default: now)."""
        with self.lock:
            target = math.floor((self.now() if sim_t is None else sim_t) * 1000)
            for meter in self._meters.values():
                meter._advance_ms(target)
