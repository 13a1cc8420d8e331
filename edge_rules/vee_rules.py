"""VEE rules as data: names, parameters, severities, effective dates, meter classes.

The rule *logic* lives in :mod:`edge_rules.vee_kernels`; this module says which rules apply to
which meters, from when, how hard, and with which numbers. Configuration is a ``[vee]`` table —
in the gateway config, or in a ``rules.toml`` for ``gwtool vee --rules`` — read and checked by
``gateway.config.vee`` (this package imports no gateway code, so it receives the typed
:class:`VeeConfig`); every key has a documented default, so an empty table is a complete,
sensible configuration (docs/vee.md)::

    [vee]
    utc_offset = "+08:00"              # meters' local time: days, day types and tariffs follow it

    [vee.estimation]
    linear_max_minutes = 120           # longest gap interpolated linearly

    [vee.classes.commercial]           # meter classes; "default" always exists
    contract_kw = 250                  # for the impossible-delta rule
    register_digits = 8
    members = ["c-*"]                  # which meter ids belong (gwtool; the daemon names classes)

    [[vee.rules]]
    name = "spike"                     # a rule from RULES
    class = "commercial"               # omit for every class
    effective = 2026-01-01             # omit for "always"
    severity = "warn"                  # info | warn | fail
    factor = 4.0                       # the rule's parameters by name

Severity decides what a rule's finding does to a read: ``info`` counts it only, ``warn``
publishes its reason code on the read and keeps the read actual, ``fail`` makes the read unusable
(substituted ``S`` by the estimation cascade, or null ``N`` when nothing can be estimated).
Several entries for one rule form a timeline: for a given day and class, every entry whose
effective date has come applies in date order (class-specific after ``*`` on the same date), each
overriding the keys it sets.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from edge_rules import vee_kernels as vk
from edge_rules.calendar import Calendar
from edge_rules.codes import Reason

__all__ = [
    "BIT_REASONS",
    "KERNEL_CHOICES",
    "RULES",
    "SEVERITIES",
    "BackfillSettings",
    "DaemonSettings",
    "EstimationSettings",
    "MeterClass",
    "MeterFacts",
    "ParamSpec",
    "RuleArrays",
    "RuleSetting",
    "RuleSpec",
    "VeeConfig",
    "reasons_of",
]

Severity = Literal["info", "warn", "fail"]
SEVERITIES: Final = ("info", "warn", "fail")


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One rule parameter: default, inclusive bounds, unit and meaning."""

    default: float
    low: float
    high: float
    unit: str
    doc: str
    integer: bool = False


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule of the catalogue: the bits it owns, its default severity, its parameters."""

    name: str
    bits: int
    severity: Severity
    doc: str
    params: Mapping[str, ParamSpec] = field(default_factory=dict)


_INF = math.inf

#: The rule catalogue, with the documented defaults (docs/vee.md renders this table).
RULES: Final[Mapping[str, RuleSpec]] = {
    spec.name: spec
    for spec in (
        RuleSpec("missing", vk.BIT_MISSING, "warn",
                 "An interval has no read: it is estimated (E) whatever the severity."),
        RuleSpec("duplicate", vk.BIT_DUPLICATE, "fail",
                 "Two reads for the same meter, quantity and time with different values."),
        RuleSpec("decrease", vk.BIT_DECREASE, "fail",
                 "Register below the last accepted read and not a rollover at 10^digits.",
                 {"wrap_margin": ParamSpec(0.1, 0.0, 0.5, "fraction of 10^digits",
                                           "a drop from the top fraction to the bottom fraction "
                                           "of the register range is a rollover"),
                  "rebase_reads": ParamSpec(4, 0, 1000, "reads",
                                            "consecutive rejected reads that agree with each "
                                            "other become the new baseline (0: never)",
                                            integer=True)}),
        RuleSpec("impossible", vk.BIT_IMPOSSIBLE, "fail",
                 "More energy since the last accepted read than contract kW × hours × factor.",
                 {"factor": ParamSpec(1.2, 1.0, 100.0, "× contract power",
                                      "headroom over the contracted power")}),
        RuleSpec("spike", vk.BIT_SPIKE, "warn",
                 "An interval at least factor × the third-highest interval of its day.",
                 {"factor": ParamSpec(3.0, 1.0, 1000.0, "× third-highest", "spike ratio"),
                  "min_kwh": ParamSpec(0.5, 0.0, _INF, "kWh",
                                       "and at least this much above the third-highest")}),
        RuleSpec("spike_read", vk.BIT_SPIKE_READ, "fail",
                 "A register read above both neighbours' trend: the read after it is below it "
                 "yet continues the trend of the reads before it. The spike is the bad read "
                 "(substituted), the reads after it stay actual; decided when the next read "
                 "arrives."),
        RuleSpec("history", vk.BIT_HIGH | vk.BIT_LOW, "warn",
                 "Day energy against the same day type over the trailing weeks and the same "
                 "season last year (both must agree when last year is known).",
                 {"high": ParamSpec(2.5, 1.0, 1000.0, "× reference", "high above this ratio"),
                  "low": ParamSpec(0.3, 0.0, 1.0, "× reference", "low below this ratio"),
                  "min_kwh": ParamSpec(2.0, 0.0, _INF, "kWh",
                                       "and at least this far from the reference"),
                  "weeks": ParamSpec(4, 4, 8, "weeks", "trailing like-day window", integer=True),
                  "last_year_days": ParamSpec(14, 1, 60, "days",
                                              "± window around the date last year",
                                              integer=True)}),
        RuleSpec("stopped", vk.BIT_STOPPED, "fail",
                 "Register did not move while the power at both ends of the interval was above "
                 "min_kw (a stopped or stuck meter).",
                 {"min_kw": ParamSpec(0.1, 0.0, _INF, "kW",
                                      "at 0.1 kW an interval holds 0.025 kWh, more than two "
                                      "register digits of 0.01 kWh")}),
        RuleSpec("tariff_sum", vk.BIT_TARIFF_SUM, "warn",
                 "Tariff registers differ from the total by more than one LSB per register."),
        RuleSpec("interval_sum", vk.BIT_INTERVAL_SUM, "warn",
                 "A day's intervals (actual + estimated) differ from the register delta.",
                 {"tolerance_kwh": ParamSpec(0.02, 0.0, _INF, "kWh", "allowed difference")}),
        RuleSpec("clock_drift", vk.BIT_CLOCK_DRIFT, "warn",
                 "Meter clock off the gateway clock (re-sync above resync_s).",
                 {"warn_s": ParamSpec(60, 0, _INF, "s", "flag above"),
                  "resync_s": ParamSpec(300, 0, _INF, "s", "ask for a time sync above")}),
        RuleSpec("clock_fail", vk.BIT_CLOCK_FAIL, "fail",
                 "Meter clock so far off that time-of-use data cannot be trusted.",
                 {"fail_s": ParamSpec(900, 0, _INF, "s", "fail above")}),
        RuleSpec("multiplier", vk.BIT_MULTIPLIER, "warn",
                 "Reported CT/PT ratio changed, or a day keeps its usual shape at a level that "
                 "is a standard transformer ratio away from its like days.",
                 {"ratio_tolerance": ParamSpec(0.08, 0.0, 0.5, "fraction",
                                               "how close the level ratio must be to a "
                                               "standard one"),
                  "shape_tolerance": ParamSpec(0.12, 0.0, 1.0, "half L1 distance",
                                               "how close the normalised profile must be"),
                  "min_kwh": ParamSpec(5.0, 0.0, _INF, "kWh",
                                       "reference day energy below which no judgement")}),
        RuleSpec("reverse", vk.BIT_REVERSE, "warn",
                 "Export register advanced, or power negative, on a meter that does not "
                 "generate.",
                 {"min_kwh": ParamSpec(0.05, 0.0, _INF, "kWh/interval", "export above"),
                  "min_kw": ParamSpec(0.05, 0.0, _INF, "kW", "negative power below −min_kw")}),
        RuleSpec("voltage", vk.BIT_VOLTAGE, "warn",
                 "Voltage outside the GB/T 12325 band (220 V +7 % / −10 %).",
                 {"nominal_v": ParamSpec(220.0, 1.0, 1e6, "V", "nominal voltage"),
                  "high_pct": ParamSpec(7.0, 0.0, 100.0, "%", "upper deviation"),
                  "low_pct": ParamSpec(10.0, 0.0, 100.0, "%", "lower deviation")}),
        RuleSpec("prolonged_estimation", vk.BIT_PROLONGED, "warn",
                 "This many consecutive non-actual intervals: ask for a field read.",
                 {"intervals": ParamSpec(96, 0, 1e7, "intervals", "0: never",
                                         integer=True)}),
    )
}

#: The NEM12 reason code each rule bit publishes. ROLLOVER and REBASED are counted only.
BIT_REASONS: Final[Mapping[int, int]] = {
    vk.BIT_MISSING: Reason.COMMUNICATIONS_FAULT,
    vk.BIT_DUPLICATE: Reason.FAILED_TO_VALIDATE,
    vk.BIT_DECREASE: Reason.READ_LESS_THAN_PREVIOUS,
    vk.BIT_IMPOSSIBLE: Reason.FAILED_TO_VALIDATE,
    vk.BIT_SPIKE: Reason.HIGH_CONSUMPTION,
    vk.BIT_SPIKE_READ: Reason.HIGH_CONSUMPTION,
    vk.BIT_HIGH: Reason.HIGH_CONSUMPTION,
    vk.BIT_LOW: Reason.LOW_CONSUMPTION,
    vk.BIT_STOPPED: Reason.ZERO_CONSUMPTION,
    vk.BIT_TARIFF_SUM: Reason.FAILED_TO_VALIDATE,
    vk.BIT_INTERVAL_SUM: Reason.FAILED_TO_VALIDATE,
    vk.BIT_CLOCK_DRIFT: Reason.TIME_RESET,
    vk.BIT_CLOCK_FAIL: Reason.TIME_RESET,
    vk.BIT_MULTIPLIER: Reason.INCORRECT_MULTIPLIER,
    vk.BIT_REVERSE: Reason.REVERSE_ENERGY,
    vk.BIT_VOLTAGE: Reason.CT_VT_FAULT,
    vk.BIT_PROLONGED: Reason.UNDER_INVESTIGATION,
}

_REASON_CACHE: dict[int, tuple[int, ...]] = {}


def reasons_of(bits: int) -> tuple[int, ...]:
    """The published reason codes of a bit mask, ascending and without repeats."""
    cached = _REASON_CACHE.get(bits)
    if cached is None:
        cached = tuple(sorted({code for bit, code in BIT_REASONS.items() if bits & bit}))
        if len(_REASON_CACHE) < 65536:
            _REASON_CACHE[bits] = cached
    return cached


@dataclass(frozen=True, slots=True)
class MeterClass:
    """Facts about a class of meters that rules need.

    ``contract_kw`` contracted power (None: the impossible-delta rule is off); ``register_digits``
    integer digits of the energy registers (a 6-digit register wraps at 1,000,000 kWh);
    ``lsb_kwh`` register resolution; ``generating`` whether export is expected; ``members`` meter
    id patterns (``fnmatch``) for tools that have no per-meter class.
    """

    name: str
    contract_kw: float | None = None
    register_digits: int = 6
    lsb_kwh: float = 0.01
    generating: bool = False
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MeterFacts:
    """Per-meter facts that override its class: ``[vee.meters."m-001"]`` with ``class``,
    ``contract_kw`` and ``register_digits`` (contracts are per customer; the daemon can also
    pass them from its meter config)."""

    meter_class: str | None = None
    contract_kw: float | None = None
    register_digits: int | None = None


@dataclass(frozen=True, slots=True)
class EstimationSettings:
    """Global estimation settings: ``linear_max_minutes`` longest gap of missing reads filled by
    linear interpolation; ``like_weeks`` how many weeks of like days feed the like-day average;
    ``seasonal_factor`` whether like-day averages are scaled by last year's seasonal trend;
    ``snap_seconds`` how far from an interval boundary a read may be and still count as that
    boundary's read."""

    linear_max_minutes: int = 120
    like_weeks: int = 4
    seasonal_factor: bool = True
    snap_seconds: int = 60


#: ``[vee] kernels``: which implementation of the rule kernels the daemon runs.
KERNEL_CHOICES: Final = ("auto", "numba", "numpy")


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    """``[vee.backfill]``: reading back a meter's own load records (DL/T 645-2007 A.7) for the
    intervals that were estimated while it was silent, so the actuals supersede the estimates.

    ``enabled`` switches it off (estimates then stay estimates until the next grading).
    ``max_records`` how many records one transaction asks for (N of the request, 1..96): each
    backfill transaction rides in the meter's own poll slot, one per poll, so this bounds how
    long a poll takes: a class-4 record is 32 bytes, 0.15 s at 2400 baud (11 bits a byte), so
    the default 4 adds about 0.7 s with the frame around them. ``max_age_hours`` (grid time, like every
    duration in ``[vee]``) how far back estimated intervals are still fetched: older ones stay
    estimates, so a meter back after a week does not occupy its bus for hours.
    """

    enabled: bool = True
    max_records: int = 4
    max_age_hours: int = 24


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """How the gateway daemon runs VEE (``gwtool vee`` ignores these keys).

    ``kernels`` ``"numba"`` the compiled kernels, ``"numpy"`` their NumPy twins (proven equal by
    the tests), ``"auto"`` numba from ``numba_min_meters`` meters up. Why a threshold: importing
    numba costs about 70 MB of RSS, more than a 200-meter gateway needs altogether, while the
    twins cost a few ms per interval boundary at that size; above a few hundred meters the
    compiled kernels pay for their memory. ``interval_seconds`` the length of one grid interval
    on the gateway's clock: 900 (15 minutes, NEM12) in production; test rigs set a few seconds
    so that a simulated day passes in minutes. The engine still sees 96 intervals a day, so
    every duration in ``[vee]`` (``linear_max_minutes``, ``snap_seconds``, rule hours) is in
    grid time, scaled by ``interval_seconds / 900`` on the wall clock.
    """

    kernels: str = "auto"
    numba_min_meters: int = 500
    interval_seconds: int = 900
    backfill: BackfillSettings = field(default_factory=BackfillSettings)

    def implementation(self, meters: int) -> str:
        """``"nb"`` or ``"np"`` for a gateway with ``meters`` meters."""
        if self.kernels == "numba":
            return "nb"
        if self.kernels == "numpy":
            return "np"
        return "nb" if meters >= self.numba_min_meters else "np"


@dataclass(frozen=True, slots=True)
class RuleSetting:
    """One ``[[vee.rules]]`` entry."""

    name: str
    meter_class: str = "*"
    effective: dt.date | None = None
    severity: Severity | None = None
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolvedRule:
    severity: Severity
    params: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class RuleArrays:
    """Per-meter kernel parameters for one day: what :mod:`edge_rules.vee_kernels` takes.

    ``fail_mask``/``warn_mask`` rule bits by severity; the rest are the rules' parameters and
    the meters' class facts as 1-D arrays (NaN where a rule has no limit).
    """

    fail_mask: NDArray[np.uint32]
    warn_mask: NDArray[np.uint32]
    modulus: NDArray[np.float64]
    lsb_kwh: NDArray[np.float64]
    impossible_factor: NDArray[np.float64]
    interval_limit_kwh: NDArray[np.float64]
    wrap_margin: NDArray[np.float64]
    rebase_reads: NDArray[np.int64]
    spike_factor: NDArray[np.float64]
    spike_min_kwh: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    history_min_kwh: NDArray[np.float64]
    history_weeks: NDArray[np.int64]
    last_year_days: NDArray[np.int64]
    stopped_kw: NDArray[np.float64]
    interval_sum_tol: NDArray[np.float64]
    clock_warn_s: NDArray[np.float64]
    clock_resync_s: NDArray[np.float64]
    clock_fail_s: NDArray[np.float64]
    ratio_tolerance: NDArray[np.float64]
    shape_tolerance: NDArray[np.float64]
    multiplier_min_kwh: NDArray[np.float64]
    generating: NDArray[np.uint8]
    reverse_kwh: NDArray[np.float64]
    reverse_kw: NDArray[np.float64]
    voltage_low: NDArray[np.float64]
    voltage_high: NDArray[np.float64]
    prolonged_after: NDArray[np.int64]

    def take(self, rows: NDArray[np.int64]) -> RuleArrays:
        """The parameters of a subset of meters."""
        return RuleArrays(**{name: getattr(self, name)[rows] for name in self.__slots__})

    def repeat(self, days: int) -> RuleArrays:
        """Each meter's parameters repeated for ``days`` meter-day rows (meter-major)."""
        return RuleArrays(**{name: np.repeat(getattr(self, name), days)
                             for name in self.__slots__})


@dataclass(frozen=True, slots=True)
class VeeConfig:
    """A parsed ``[vee]`` table."""

    calendar: Calendar = field(default_factory=Calendar)
    classes: Mapping[str, MeterClass] = field(
        default_factory=lambda: {"default": MeterClass("default")})
    settings: tuple[RuleSetting, ...] = ()
    estimation: EstimationSettings = field(default_factory=EstimationSettings)
    check_meters: Mapping[str, str] = field(default_factory=dict)
    meters: Mapping[str, MeterFacts] = field(default_factory=dict)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    _resolved: dict[tuple[str, str, int], ResolvedRule] = field(
        default_factory=dict, compare=False, repr=False, hash=False)

    def class_of(self, meter: str) -> str:
        """The class named for ``meter`` under ``[vee.meters]``, else the first class (in file
        order) with a ``members`` pattern matching it, else ``default``."""
        facts = self.meters.get(meter)
        if facts is not None and facts.meter_class is not None:
            return facts.meter_class
        for meter_class in self.classes.values():
            if any(fnmatch.fnmatchcase(meter, pattern) for pattern in meter_class.members):
                return meter_class.name
        return "default"

    def rule(self, name: str, meter_class: str, day: int) -> ResolvedRule:
        """Severity and parameters of rule ``name`` for ``meter_class`` on local day ``day``."""
        key = (name, meter_class, day)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        spec = RULES[name]
        severity: Severity = spec.severity
        params = {p: s.default for p, s in spec.params.items()}
        date = Calendar().date(day)
        applicable = [
            s for s in self.settings
            if s.name == name and s.meter_class in ("*", meter_class)
            and (s.effective is None or s.effective <= date)
        ]
        applicable.sort(key=lambda s: (s.effective or dt.date.min, s.meter_class != "*"))
        for setting in applicable:
            if setting.severity is not None:
                severity = setting.severity
            params.update(setting.params)
        resolved = ResolvedRule(severity, params)
        self._resolved[key] = resolved
        return resolved

    def arrays(self, meter_classes: Sequence[str], day: int, interval_hours: float = 0.25
               ) -> RuleArrays:
        """Kernel parameters for meters of the given classes on local day ``day``."""
        names = sorted(set(meter_classes))
        per_class = {name: self._class_values(name, day, interval_hours) for name in names}
        index = {name: i for i, name in enumerate(names)}
        rows = np.array([index[c] for c in meter_classes], dtype=np.int64)
        columns: dict[str, NDArray[np.generic]] = {}
        for field_name in RuleArrays.__slots__:
            table = np.array([per_class[name][field_name] for name in names])
            columns[field_name] = table[rows] if rows.size else table[:0]
        dtypes = {"fail_mask": np.uint32, "warn_mask": np.uint32, "rebase_reads": np.int64,
                  "history_weeks": np.int64, "last_year_days": np.int64, "generating": np.uint8,
                  "prolonged_after": np.int64}
        return RuleArrays(**{
            name: np.ascontiguousarray(value, dtype=dtypes.get(name, np.float64))
            for name, value in columns.items()
        })

    def _class_values(self, name: str, day: int, interval_hours: float) -> dict[str, float]:
        meter_class = self.classes.get(name) or MeterClass(name)
        fail = warn = 0
        p: dict[str, Mapping[str, float]] = {}
        for rule_name, spec in RULES.items():
            resolved = self.rule(rule_name, name, day)
            p[rule_name] = resolved.params
            if resolved.severity == "fail":
                fail |= spec.bits
            elif resolved.severity == "warn":
                warn |= spec.bits
        contract = meter_class.contract_kw
        voltage = p["voltage"]
        return {
            "fail_mask": fail,
            "warn_mask": warn,
            "modulus": 10.0 ** meter_class.register_digits,
            "lsb_kwh": meter_class.lsb_kwh,
            "impossible_factor": p["impossible"]["factor"],
            "interval_limit_kwh": (math.nan if contract is None
                                   else contract * interval_hours * p["impossible"]["factor"]),
            "wrap_margin": p["decrease"]["wrap_margin"],
            "rebase_reads": p["decrease"]["rebase_reads"],
            "spike_factor": p["spike"]["factor"],
            "spike_min_kwh": p["spike"]["min_kwh"],
            "high": p["history"]["high"],
            "low": p["history"]["low"],
            "history_min_kwh": p["history"]["min_kwh"],
            "history_weeks": p["history"]["weeks"],
            "last_year_days": p["history"]["last_year_days"],
            "stopped_kw": p["stopped"]["min_kw"],
            "interval_sum_tol": p["interval_sum"]["tolerance_kwh"],
            "clock_warn_s": p["clock_drift"]["warn_s"],
            "clock_resync_s": p["clock_drift"]["resync_s"],
            "clock_fail_s": p["clock_fail"]["fail_s"],
            "ratio_tolerance": p["multiplier"]["ratio_tolerance"],
            "shape_tolerance": p["multiplier"]["shape_tolerance"],
            "multiplier_min_kwh": p["multiplier"]["min_kwh"],
            "generating": 1 if meter_class.generating else 0,
            "reverse_kwh": p["reverse"]["min_kwh"],
            "reverse_kw": p["reverse"]["min_kw"],
            "voltage_low": voltage["nominal_v"] * (1.0 - voltage["low_pct"] / 100.0),
            "voltage_high": voltage["nominal_v"] * (1.0 + voltage["high_pct"] / 100.0),
            "prolonged_after": p["prolonged_estimation"]["intervals"],
        }
