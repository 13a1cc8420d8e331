"""The VEE engine: rules, kernels, history and estimation composed for a batch of meters.

One engine serves the daemon and ``gwtool vee`` alike; both hand it *windows* — whole local
days on the 15-minute grid for many meters at once — and get back a :class:`Verdict` per
interval read: quality, method, published reason bits, the value to publish and the interval
energy. The engine keeps, per meter, what the next window needs (the last accepted register read,
the last published value, a run of estimates, re-baseline candidates) and the compact
:class:`~edge_rules.history.History` that like-day estimates and history checks look back at.

Typical cycle (the daemon: every poll cycle; gwtool: once per day)::

    window = engine.window(first_day=yesterday, days=2)     # NaN-filled arrays, all meters
    window.reads[row, slot] = register_kwh                   # what was read, on the grid
    verdict = engine.evaluate(window, due=slots_elapsed)     # pure: no state changes
    ... publish verdict.quality / value / reasons_of(verdict.published) per read ...
    engine.commit(last_verdict, days=1)                      # at midnight: the older day is final

Evaluating yesterday together with today lets a gap that started yesterday be scaled to the read
that ends it today; when that happens yesterday's estimates change and the caller re-publishes
them under the same natural key (meter, quantity, time).

Reads that are not on the grid (voltage, the meter clock, tariff registers read at midnight,
CT/PT ratios) go through the ``check_*`` methods, which apply the same rules and severities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from edge_rules import vee_kernels as vk
from edge_rules.arrays import distinct
from edge_rules.calendar import INTERVALS_PER_DAY, DayType
from edge_rules.history import History, masked_mean_nb, masked_mean_np
from edge_rules.vee_rules import RuleArrays, VeeConfig
from edge_rules.vee_ruleset import ChainInputs, ChainOutputs, rule_chain

__all__ = [
    "IMPLEMENTATIONS",
    "ChainInputs",
    "MeterState",
    "SparseVerdict",
    "VeeEngine",
    "Verdict",
    "Window",
    "rule_chain",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]
U32 = NDArray[np.uint32]
Bool = NDArray[np.bool_]

S_DAY: Final = INTERVALS_PER_DAY
#: Like days a multiplier reference must average: one odd day is no "usual shape".
MULTIPLIER_MIN_LIKE_DAYS: Final = 3
#: Seasonal factors are kept within this range: a larger swing is more likely a data problem
#: last year than a seasonal trend.
SEASONAL_CLAMP: Final = (0.5, 2.0)

#: Like days the history rule needs before it calls a day high or low (fewer: no judgement).
HISTORY_MIN_LIKE_DAYS: Final = 3
#: How many robust standard deviations of the meter's own like days a day must stand away
#: from their median (as well as the rule's ratio and ``min_kwh``) to be flagged.
SPREAD_SIGMAS: Final = 4.0

_REJECTED: Final = vk.BIT_DECREASE | vk.BIT_IMPOSSIBLE | vk.BIT_SPIKE_READ


# ==========================================================================================
# Implementations of the history reductions and the export scan
# ==========================================================================================


def _implementation(kind: str) -> SimpleNamespace:
    nb = kind == "nb"
    return SimpleNamespace(
        register_scan=vk.register_scan_nb if nb else vk.register_scan_np,
        masked_mean=masked_mean_nb if nb else masked_mean_np,
        band_flags=vk.band_flags_nb if nb else vk.band_flags_np,
        tariff_sum_mismatch=vk.tariff_sum_mismatch_nb if nb else vk.tariff_sum_mismatch_np,
    )


#: ``nb`` compiled kernels (production), ``np`` the NumPy twins.
IMPLEMENTATIONS: Final[Mapping[str, SimpleNamespace]] = {
    kind: _implementation(kind) for kind in ("nb", "np")
}


# ==========================================================================================
# Engine
# ==========================================================================================


@dataclass(slots=True)
class Window:
    """Grid inputs of ``days`` local days from ``first_day`` for meters ``rows``.

    ``reads`` primary register (kWh); ``conflict`` 1 where disagreeing duplicates arrived;
    ``power`` active power at each read (kW); ``export`` the export register (kWh);
    ``tariff_energy`` optional ``(rows, days, tariffs)`` daily tariff energies for history.
    NaN wherever nothing was read.
    """

    first_day: int
    days: int
    rows: I64
    reads: F64
    conflict: U8
    power: F64
    export: F64
    tariff_energy: F64 | None = None

    @property
    def first_interval(self) -> int:
        return self.first_day * S_DAY


@dataclass(slots=True)
class Verdict:
    """Result of :meth:`VeeEngine.evaluate` for a window (arrays are ``(rows, intervals)``).

    ``quality`` codes (edge_rules.codes), ``method`` for E/S, ``published`` the bits to turn into
    reason codes (``vee_rules.reasons_of``), ``flags`` every bit found (info included), ``value``
    the register value to publish (NaN for N), ``energy`` interval energies after estimation,
    ``export_flags`` the export register's scan bits, ``day_energy`` (rows, days), and
    ``field_read`` meters whose estimates ran long enough to need a field read.
    """

    window: Window
    due: int
    quality: U8
    method: U8
    published: U32
    flags: U32
    value: F64
    energy: F64
    actual_energy: F64
    accepted: Bool
    export_flags: U32
    day_energy: F64
    field_read: Bool
    chain: ChainOutputs
    export_scan: vk.ScanResult | None
    export_delta: F64


@dataclass(slots=True)
class SparseVerdict:
    """Result of a ``check_*`` method: per value ``flags``, ``published`` bits and ``quality``
    (A, or N when a ``fail`` rule hit); ``resync`` for clock checks."""

    flags: U32
    published: U32
    quality: U8
    resync: Bool | None = None


@dataclass(slots=True)
class MeterState:
    """What the engine carries from one committed day to the next, per meter (arrays of
    length M). Slots are absolute interval numbers (``calendar``)."""

    last_value: F64
    last_interval: I64
    cand_value: F64
    cand_interval: I64
    cand_count: I64
    published_value: F64
    published_interval: I64
    last_energy: F64
    last_power: F64
    est_run: I64
    export_value: F64
    export_interval: I64

    @classmethod
    def empty(cls, m: int) -> MeterState:
        nan = np.full(m, np.nan)
        zero = np.zeros(m, dtype=np.int64)
        return cls(nan.copy(), zero.copy(), nan.copy(), zero.copy(), zero.copy(), nan.copy(),
                   zero.copy(), nan.copy(), nan.copy(), zero.copy(), nan.copy(), zero.copy())

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]], m: int) -> MeterState:
        state = cls.empty(m)
        for name in cls.__slots__:
            loaded = np.asarray(arrays[name])
            current = getattr(state, name)
            if loaded.shape != current.shape:
                raise ValueError(f"meter state {name}: expected {current.shape}, "
                                 f"got {loaded.shape}")
            setattr(state, name, loaded.astype(current.dtype, copy=True))
        return state


@dataclass
class _SparseRegister:
    value: F64
    slot: I64


@dataclass
class VeeEngine:
    """VEE for a fixed list of meters (rows follow ``meter_ids``)."""

    config: VeeConfig
    meter_ids: Sequence[str]
    meter_classes: Sequence[str] | None = None
    history: History | None = None
    implementation: str = "nb"
    contract_kw: Sequence[float | None] | None = None
    register_digits: Sequence[int | None] | None = None
    generating: Sequence[bool | None] | None = None
    state: MeterState = field(init=False)
    _sparse: dict[str, _SparseRegister] = field(init=False, default_factory=dict)
    #: History lookups for windows evaluated since the last commit: history changes only on
    #: commit, and the daemon evaluates the same window on every poll cycle.
    _source_cache: dict[tuple[int, int, bytes], dict[str, Any]] = field(
        init=False, default_factory=dict)
    _ratios: dict[str, F64] = field(init=False, default_factory=dict)
    _day_params: dict[int, RuleArrays] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.meter_ids = tuple(self.meter_ids)
        m = len(self.meter_ids)
        if self.meter_classes is None:
            self.meter_classes = tuple(self.config.class_of(meter) for meter in self.meter_ids)
        else:
            self.meter_classes = tuple(self.meter_classes)
            if len(self.meter_classes) != m:
                raise ValueError("meter_classes must name one class per meter")
        if self.history is None:
            lsb = min((c.lsb_kwh for c in self.config.classes.values()), default=0.01)
            self.history = History(self.meter_ids, lsb_kwh=lsb)
        elif tuple(self.history.meter_ids) != self.meter_ids:
            self.history = self.history.reindexed(self.meter_ids)
        self.state = MeterState.empty(m)
        self.row_of = {meter: i for i, meter in enumerate(self.meter_ids)}
        checks = np.full(m, -1, dtype=np.int64)
        for meter, check in self.config.check_meters.items():
            if meter in self.row_of and check in self.row_of:
                checks[self.row_of[meter]] = self.row_of[check]
        self.check_of = checks
        self._class_array = np.array(self.meter_classes, dtype=object)
        # per-meter facts: constructor arguments first, then [vee.meters], else the class's
        contract = np.full(m, np.nan)
        digits = np.full(m, np.nan)
        for i, meter in enumerate(self.meter_ids):
            facts = self.config.meters.get(meter)
            if facts is not None:
                contract[i] = np.nan if facts.contract_kw is None else facts.contract_kw
                digits[i] = np.nan if facts.register_digits is None else facts.register_digits
            given_kw = None if self.contract_kw is None else self.contract_kw[i]
            if given_kw is not None:
                contract[i] = float(given_kw)
            given_digits = None if self.register_digits is None else self.register_digits[i]
            if given_digits is not None:
                digits[i] = float(given_digits)
        self._contract = contract
        self._modulus = 10.0 ** digits
        self._generating = np.array(
            [-1 if self.generating is None or self.generating[i] is None
             else int(bool(self.generating[i])) for i in range(m)], dtype=np.int64)

    # ------------------------------------------------------------------ persistence

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        """History and per-meter state as named arrays, for the daemon's store (one BLOB per
        array, or ``np.savez``); :meth:`restore` reads them back."""
        arrays = {f"history.{k}": v for k, v in self.hist.to_arrays().items()}
        arrays.update({f"state.{k}": v for k, v in self.state.to_arrays().items()})
        arrays["state.meter_ids"] = np.array(self.meter_ids, dtype=np.str_)
        return arrays

    def restore(self, arrays: Mapping[str, NDArray[np.generic]]) -> None:
        """Load :meth:`to_arrays` output. Meters are matched by id, so a config reload that adds
        or removes meters keeps everyone else's history and state; new meters start empty.
        Raises ``ValueError`` for arrays that are not a saved engine."""
        try:
            history = History.from_arrays({k[len("history."):]: v for k, v in arrays.items()
                                           if k.startswith("history.")})
            saved_ids = [str(x) for x in np.asarray(arrays["state.meter_ids"]).tolist()]
            saved = MeterState.from_arrays({k[len("state."):]: v for k, v in arrays.items()
                                            if k.startswith("state.") and k != "state.meter_ids"},
                                           len(saved_ids))
        except KeyError as exc:
            raise ValueError(f"saved VEE state lacks {exc.args[0]!r}") from None
        self.history = history.reindexed(self.meter_ids)
        position = {meter: i for i, meter in enumerate(saved_ids)}
        pairs = [(row, position[m]) for row, m in enumerate(self.meter_ids) if m in position]
        fresh = MeterState.empty(len(self.meter_ids))
        if pairs:
            new_rows = np.array([p[0] for p in pairs], dtype=np.int64)
            old_rows = np.array([p[1] for p in pairs], dtype=np.int64)
            for name in MeterState.__slots__:
                getattr(fresh, name)[new_rows] = getattr(saved, name)[old_rows]
        self.state = fresh
        self._source_cache.clear()

    def forget_lookups(self) -> None:
        """Drop the history lookups cached per window (commit does this; call it after
        replacing or reloading :attr:`history` by other means)."""
        self._source_cache.clear()

    @property
    def hist(self) -> History:
        assert self.history is not None
        return self.history

    # ------------------------------------------------------------------ windows

    def window(self, first_day: int, days: int = 1, rows: Sequence[int] | I64 | None = None
               ) -> Window:
        """An empty window (all NaN) for ``rows`` (default: every meter)."""
        r = (np.arange(len(self.meter_ids), dtype=np.int64) if rows is None
             else np.asarray(rows, dtype=np.int64))
        shape = (r.size, days * S_DAY)
        return Window(first_day, days, r, np.full(shape, np.nan), np.zeros(shape, np.uint8),
                      np.full(shape, np.nan), np.full(shape, np.nan))

    def evaluate(self, window: Window, due: int | None = None) -> Verdict:
        """Validate and estimate a window. ``due`` how many of its intervals have come due (a day
        in progress); default all. Does not change the engine: call :meth:`commit` for that."""
        inputs, export_scan, export_delta = self.chain_inputs(window, due)
        n, s = window.reads.shape
        out = rule_chain(inputs, self.implementation)
        if window.days > 1 and inputs.due == s:
            _hold_open_gaps(out, inputs)
        method = np.where((out.quality == 1) | (out.quality == 2), out.fill.method, 0
                          ).astype(np.uint8)
        field_read = ((out.published & vk.BIT_PROLONGED) != 0).any(axis=1)
        export_flags = (export_scan.flags if export_scan is not None
                        else np.zeros((n, s), np.uint32))
        return Verdict(window, inputs.due, out.quality, method, out.published, out.flags,
                       out.value, out.fill.energy, out.actual_energy, out.accepted, export_flags,
                       out.day_energy, field_read, out, export_scan, export_delta)

    def chain_inputs(self, window: Window, due: int | None = None
                     ) -> tuple[ChainInputs, vk.ScanResult | None, F64]:
        """Gather what :func:`rule_chain` needs for a window: the meters' carried state, their
        rule parameters, and estimation sources and references from history (plus the export
        register's scan, which only feeds the reverse-energy rule)."""
        rows = window.rows
        n, s = window.reads.shape
        if s != window.days * S_DAY or window.days < 1:
            raise ValueError(f"a window of {window.days} days has {window.days * S_DAY} intervals,"
                             f" got {s}")
        due_n = s if due is None else max(0, min(int(due), s))
        start = window.first_interval
        st = self.state
        params = self._params(rows, window.first_day)
        has_value = ~np.isnan(st.last_value[rows])
        start_slot = np.where(has_value, st.last_interval[rows] - start, -1)
        if np.any(start_slot >= 0) or np.any(st.published_interval[rows] >= start):
            raise ValueError("the window starts before the end of the committed days: evaluate "
                             "windows that start after the last commit")
        cand_slot = st.cand_interval[rows] - start
        soft_ok = ~np.isnan(st.published_value[rows]) & (st.published_interval[rows] == start - 1)
        soft_value = np.where(soft_ok, st.published_value[rows], np.nan)
        soft_slot = np.full(n, -1, dtype=np.int64)
        power_before = np.empty_like(window.power)
        if s:
            power_before[:, 0] = np.where(st.published_interval[rows] == start - 1,
                                          st.last_power[rows], np.nan)
            power_before[:, 1:] = window.power[:, :-1]
        impl = IMPLEMENTATIONS[self.implementation]
        # export register: its own scan, only the deltas matter for the reverse-energy rule
        export_scan = None
        export_delta = np.full((n, s), np.nan)
        if np.any(~np.isnan(window.export)):
            e_has = ~np.isnan(st.export_value[rows])
            export_scan = vk.ScanResult(*impl.register_scan(
                window.export, st.export_value[rows],
                np.where(e_has, st.export_interval[rows] - start, -1),
                np.full(n, np.nan), np.zeros(n, np.int64), np.zeros(n, np.int64),
                params.modulus, params.interval_limit_kwh, params.wrap_margin,
                params.rebase_reads))
            export_delta = np.where(export_scan.span == 1, export_scan.delta, np.nan)
        key = (window.first_day, window.days, rows.tobytes())
        sources = self._source_cache.get(key)
        if sources is None:
            if len(self._source_cache) >= 8:
                self._source_cache.clear()
            sources = self._source_cache[key] = self._sources(rows, window, params)
        inputs = ChainInputs(
            reads=window.reads, conflict=window.conflict, power=window.power,
            power_before=power_before, export_delta=export_delta,
            start_value=st.last_value[rows], start_slot=start_slot.astype(np.int64),
            cand_value=st.cand_value[rows], cand_slot=cand_slot.astype(np.int64),
            cand_count=st.cand_count[rows], soft_value=soft_value, soft_slot=soft_slot,
            start_energy=np.where(st.published_interval[rows] == start - 1,
                                  st.last_energy[rows], np.nan),
            run_in=st.est_run[rows], params=params, check_rows=self._check_rows(rows),
            linear_max=self.config.estimation.linear_max_minutes // 15, due=due_n, **sources)
        return inputs, export_scan, export_delta

    def _check_rows(self, rows: I64) -> I64:
        """Check meters as rows of this window (-1 when the check meter is not in it)."""
        position = {int(r): i for i, r in enumerate(rows.tolist())}
        mapped = [position.get(int(self.check_of[r]), -1) if self.check_of[r] >= 0 else -1
                  for r in rows.tolist()]
        return np.array(mapped, dtype=np.int64)

    # ------------------------------------------------------------------ history lookups

    def _sources(self, rows: I64, window: Window, params: RuleArrays) -> dict[str, Any]:
        """Estimation sources and day references for each day of the window, from history."""
        n = rows.size
        s = window.days * S_DAY
        like = np.full((n, s), np.nan)
        like_count = np.zeros((n, s), dtype=np.int64)
        previous_year = np.full((n, s), np.nan)
        calculated = np.full((n, s), np.nan)
        reference = np.full((n, s), np.nan)
        trailing = np.full((n, window.days), np.nan)
        margin = np.full((n, window.days), np.nan)
        last_year = np.full((n, window.days), np.nan)
        cal = self.config.calendar
        impl = IMPLEMENTATIONS[self.implementation]
        weeks_est = self.config.estimation.like_weeks
        hist = self.hist
        for b in range(window.days):
            day = window.first_day + b
            target = self._like_type(int(cal.day_types(day, 1)[0]))
            cols = slice(b * S_DAY, (b + 1) * S_DAY)
            # like-day profile (estimation): interval history, same day type, no estimates
            first = day - 7 * weeks_est
            values, estimated = hist.intervals(rows, first, 7 * weeks_est)
            values = np.where(estimated, np.nan, values)
            use = (cal.day_types(first, 7 * weeks_est) == target).astype(np.uint8)
            profile, count = impl.masked_mean(np.ascontiguousarray(values), use)
            reference[:, cols] = np.where(count >= MULTIPLIER_MIN_LIKE_DAYS, profile, np.nan)
            if np.any(count == 0):
                # No like day of this type yet (a holiday week with its make-up working days
                # takes every Sunday of a month): the shape of the ordinary days beats a flat
                # line, and a bracketed gap is scaled to its register delta anyway.
                ordinary = (cal.day_types(first, 7 * weeks_est) != DayType.HOLIDAY
                            ).astype(np.uint8)
                broad, broad_count = impl.masked_mean(np.ascontiguousarray(values), ordinary)
                none = count == 0
                profile = np.where(none, broad, profile)
                count = np.where(none, broad_count, count)
            factor = self._seasonal_factor(rows, day, weeks_est) if \
                self.config.estimation.seasonal_factor else np.ones(n)
            like[:, cols] = profile * factor[:, None]
            like_count[:, cols] = count
            # day references (history rule): trailing like days and the same season last year
            for weeks in distinct(params.history_weeks):
                sel = params.history_weeks == weeks
                trailing[sel, b], margin[sel, b] = self._day_spread(
                    rows[sel], day - 7 * int(weeks), 7 * int(weeks), target)
            for half in distinct(params.last_year_days):
                sel = params.last_year_days == half
                last_year[sel, b] = self._day_mean(rows[sel], day - 364 - int(half),
                                                   2 * int(half) + 1, target)
            shape = self._class_shapes(rows, profile)
            previous_year[:, cols] = last_year[:, b][:, None] * shape
            annual = self._annual_energy(rows, day)
            calculated[:, cols] = (annual / 365.0)[:, None] * shape
        return {"like": like, "like_count": like_count, "previous_year": previous_year,
                "calculated": calculated, "trailing": trailing, "trailing_margin": margin,
                "last_year": last_year,
                "reference_profile": reference}

    @staticmethod
    def _like_type(day_type: int) -> int:
        # A holiday behaves like a Sunday; holidays themselves are never like days.
        return int(DayType.SUNDAY) if day_type == DayType.HOLIDAY else day_type

    def _day_mean(self, rows: I64, first: int, count: int, target: int) -> F64:
        values, estimated = self.hist.daily(rows, first, count)
        values = np.where(estimated, np.nan, values)
        use = (self.config.calendar.day_types(first, count) == target).astype(np.uint8)
        mean: F64
        mean, _ = IMPLEMENTATIONS[self.implementation].masked_mean(
            np.ascontiguousarray(values[:, :, None]), use)
        return mean[:, 0]

    def _day_spread(self, rows: I64, first: int, count: int, target: int) -> tuple[F64, F64]:
        """The meter's own usual day and how much it varies, for the history rule: the median
        of its like days (same day type, the trailing weeks: the same season) and
        ``SPREAD_SIGMAS`` robust standard deviations (1.4826 × the median absolute deviation).
        With fewer than ``HISTORY_MIN_LIKE_DAYS`` like days there is no reference (NaN): a day
        is only called high or low against evidence."""
        values, estimated = self.hist.daily(rows, first, count)
        use = self.config.calendar.day_types(first, count) == target
        values = np.where(estimated | ~use[None, :], np.nan, values)
        enough = (~np.isnan(values)).sum(axis=1) >= HISTORY_MIN_LIKE_DAYS
        median = np.full(rows.size, np.nan)
        spread = np.full(rows.size, np.nan)
        if np.any(enough):
            known = values[enough]
            middle = np.nanmedian(known, axis=1)
            mad = np.nanmedian(np.abs(known - middle[:, None]), axis=1)
            median[enough] = middle
            spread[enough] = SPREAD_SIGMAS * 1.4826 * mad
        return median, spread

    def _seasonal_factor(self, rows: I64, day: int, weeks: int) -> F64:
        """Last year's energy around this date over last year's energy in the weeks before it:
        how much the season moves consumption between the like days and the day estimated."""
        cal = self.config.calendar
        values, estimated = self.hist.daily(rows, day - 364 - 7 * weeks, 7 * weeks + 8)
        values = np.where(estimated, np.nan, values)
        types = cal.day_types(day - 364 - 7 * weeks, 7 * weeks + 8)
        ordinary = (types != DayType.HOLIDAY).astype(np.uint8)
        before = ordinary.copy()
        before[7 * weeks:] = 0
        around = ordinary.copy()
        around[: 7 * weeks - 3] = 0
        reduce = IMPLEMENTATIONS[self.implementation].masked_mean
        cube = np.ascontiguousarray(values[:, :, None])
        then, _ = reduce(cube, before)
        now, _ = reduce(cube, around)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = now[:, 0] / then[:, 0]
        factor = np.where(np.isfinite(factor), factor, 1.0)
        return np.clip(factor, *SEASONAL_CLAMP)

    def _annual_energy(self, rows: I64, day: int) -> F64:
        values, _ = self.hist.daily(rows, day - 365, 365)
        present = (~np.isnan(values)).sum(axis=1)
        total = np.nansum(values, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            annual = np.where(present >= 30, total * 365.0 / present, np.nan)
        return annual

    def _class_shapes(self, rows: I64, profile: F64) -> F64:
        """Each meter's class profile for the day: the mean normalised like-day profile of the
        class's meters in this window (flat when none has one)."""
        classes = self._class_array[rows] if rows.size else np.array([], dtype=object)
        shape = np.full((rows.size, S_DAY), 1.0 / S_DAY)
        totals = profile.sum(axis=1)
        usable = np.isfinite(totals) & (totals > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            normal = profile / totals[:, None]
        for name in set(classes.tolist()):
            members = classes == name
            good = members & usable
            if np.any(good):
                shape[members] = normal[good].mean(axis=0)
        return shape

    # ------------------------------------------------------------------ commit

    def commit(self, verdict: Verdict, days: int | None = None, *, partial: bool = False
               ) -> None:
        """Make the first ``days`` days of a verdict final: carry the meter state past them and
        write them into history. Only complete (due) days can be committed, unless ``partial``
        (the end of an offline file: intervals not due stay unknown)."""
        window = verdict.window
        days = window.days if days is None else days
        self._source_cache.clear()
        if not 0 < days <= window.days or (days * S_DAY > verdict.due and not partial):
            raise ValueError(f"cannot commit {days} day(s): {verdict.due} of "
                             f"{window.days * S_DAY} intervals are due")
        rows = window.rows
        n = rows.size
        end = days * S_DAY  # exclusive
        start = window.first_interval
        st = self.state
        chain = verdict.chain
        if days == window.days:
            scan = chain.scan
            has = ~np.isnan(scan.state_value)
            st.last_value[rows] = scan.state_value
            st.last_interval[rows] = np.where(has, scan.state_slot + start, 0)
            st.cand_value[rows] = scan.cand_value
            st.cand_interval[rows] = scan.cand_slot + start
            st.cand_count[rows] = scan.cand_count
            if verdict.export_scan is not None:
                e_has = ~np.isnan(verdict.export_scan.state_value)
                st.export_value[rows] = verdict.export_scan.state_value
                st.export_interval[rows] = np.where(e_has, verdict.export_scan.state_slot + start,
                                                    0)
        else:
            accepted = verdict.accepted[:, :end]
            last = _last_index(accepted)
            found = last >= 0
            values = verdict.window.reads[np.arange(n), np.maximum(last, 0)]
            st.last_value[rows[found]] = values[found]
            st.last_interval[rows[found]] = last[found] + start
            st.cand_count[rows] = 0
            st.cand_value[rows] = np.nan
            if verdict.export_scan is not None:
                e_ok = ~np.isnan(window.export[:, :end]) & (
                    (verdict.export_flags[:, :end] & _REJECTED) == 0)
                e_last = _last_index(e_ok)
                e_found = e_last >= 0
                st.export_value[rows[e_found]] = window.export[np.arange(n),
                                                               np.maximum(e_last, 0)][e_found]
                st.export_interval[rows[e_found]] = e_last[e_found] + start
        tail = end - 1
        st.published_value[rows] = verdict.value[:, tail]
        st.published_interval[rows] = start + tail
        st.last_energy[rows] = verdict.energy[:, tail]
        st.last_power[rows] = window.power[:, tail]
        non_actual = verdict.quality[:, :end] != 0
        trailing_bad = _trailing_true(non_actual)
        st.est_run[rows] = np.where(trailing_bad == end, st.est_run[rows] + end, trailing_bad)
        # history
        estimated_energy = np.isnan(verdict.actual_energy) & ~np.isnan(verdict.energy)
        registers = len(self.hist.registers)
        for b in range(days):
            cols = slice(b * S_DAY, (b + 1) * S_DAY)
            daily = np.full((n, registers), np.nan)
            daily[:, 0] = verdict.day_energy[:, b]
            if window.tariff_energy is not None:
                t = min(registers - 1, window.tariff_energy.shape[2])
                daily[:, 1:1 + t] = window.tariff_energy[:, b, :t]
            day_estimated = np.asarray(estimated_energy[:, cols].any(axis=1), dtype=np.bool_)
            self.hist.put_day(rows, window.first_day + b, daily, day_estimated,
                              verdict.energy[:, cols], estimated_energy[:, cols])

    # ------------------------------------------------------------------ sparse reads

    def grade_sparse(self, rows: I64, flags: U32, day: int) -> SparseVerdict:
        """Quality and published bits of values off the grid from their rule bits."""
        params = self.rule_params(day)
        fail = params.fail_mask[rows]
        failed = (flags & fail) != 0
        published = (flags & (fail | params.warn_mask[rows])).astype(np.uint32)
        return SparseVerdict(flags, published, np.where(failed, 4, 0).astype(np.uint8))

    def rule_params(self, day: int) -> RuleArrays:
        """Every meter's kernel parameters on ``day``, kept for the day: the sparse checks run
        on every daemon batch, and building the arrays costs more than the checks."""
        cached = self._day_params.get(day)
        if cached is None:
            if len(self._day_params) >= 4:
                self._day_params.clear()
            cached = self._day_params[day] = self._params(
                np.arange(len(self.meter_ids), dtype=np.int64), day)
        return cached

    def _params(self, rows: I64, day: int) -> RuleArrays:
        """Kernel parameters of ``rows`` on ``day``: their classes' rules, then per-meter facts."""
        params = self.config.arrays([self._class_array[r] for r in rows.tolist()], day)
        contract = self._contract[rows]
        has_contract = ~np.isnan(contract)
        if np.any(has_contract):
            params.interval_limit_kwh[has_contract] = (
                contract[has_contract] * 0.25 * params.impossible_factor[has_contract])
        modulus = self._modulus[rows]
        has_digits = ~np.isnan(modulus)
        params.modulus[has_digits] = modulus[has_digits]
        generating = self._generating[rows]
        params.generating[generating >= 0] = generating[generating >= 0]
        return params

    def check_voltage(self, rows: I64, volts: F64, day: int) -> SparseVerdict:
        """Voltage reads against the supply band of their meters."""
        rows = np.asarray(rows, dtype=np.int64)
        p = self.rule_params(day)
        hit = IMPLEMENTATIONS[self.implementation].band_flags(
            np.ascontiguousarray(volts, dtype=np.float64), rows, p.voltage_low, p.voltage_high)
        return self.grade_sparse(rows, np.where(hit != 0, vk.BIT_VOLTAGE, 0).astype(np.uint32),
                                  day)

    def check_clock(self, rows: I64, offset_s: F64, day: int) -> SparseVerdict:
        """Meter clock offsets (meter − gateway, s): drift flags and which meters need a sync."""
        rows = np.asarray(rows, dtype=np.int64)
        p = self.rule_params(day)
        level = vk.drift_levels(offset_s, rows, p.clock_warn_s, p.clock_resync_s, p.clock_fail_s)
        flags = (np.where(level >= 1, vk.BIT_CLOCK_DRIFT, 0)
                 | np.where(level >= 3, vk.BIT_CLOCK_FAIL, 0)).astype(np.uint32)
        verdict = self.grade_sparse(rows, flags, day)
        verdict.resync = level >= 2
        return verdict

    def check_tariffs(self, rows: I64, total: F64, tariffs: F64, day: int) -> SparseVerdict:
        """Tariff registers read at one instant against the total read at the same instant."""
        rows = np.asarray(rows, dtype=np.int64)
        p = self.rule_params(day)
        hit = IMPLEMENTATIONS[self.implementation].tariff_sum_mismatch(
            np.ascontiguousarray(total, dtype=np.float64),
            np.ascontiguousarray(tariffs, dtype=np.float64), p.lsb_kwh[rows], p.modulus[rows])
        return self.grade_sparse(rows, np.where(hit != 0, vk.BIT_TARIFF_SUM, 0
                                                 ).astype(np.uint32), day)

    def check_register(self, key: str, rows: I64, values: F64, intervals: I64, day: int
                       ) -> SparseVerdict:
        """Reads of a register that is not on the grid (tariffs, reactive energy): decrease vs
        rollover against that register's previous read. ``key`` names the register; values
        are taken in the given order, which must be time order per meter."""
        rows = np.asarray(rows, dtype=np.int64)
        m = len(self.meter_ids)
        state = self._sparse.setdefault(key, _SparseRegister(np.full(m, np.nan),
                                                             np.zeros(m, np.int64)))
        p = self.rule_params(day)
        flags = np.zeros(rows.size, dtype=np.uint32)
        # one read per meter per pass keeps each pass a (meters, 1) window for the scan kernel
        order = np.argsort(intervals, kind="stable")
        pending = list(order.tolist())
        while pending:
            seen: set[int] = set()
            batch: list[int] = []
            rest: list[int] = []
            for j in pending:
                (rest if int(rows[j]) in seen else batch).append(j)
                seen.add(int(rows[j]))
            b = np.array(batch, dtype=np.int64)
            r = rows[b]
            has = ~np.isnan(state.value[r])
            scan = vk.register_scan(values[b][:, None], state.value[r],
                                    np.where(has, state.slot[r] - intervals[b], -1),
                                    p.modulus[r], np.full(r.size, np.nan),
                                    wrap_margin=p.wrap_margin[r], rebase_reads=p.rebase_reads[r])
            flags[b] = scan.flags[:, 0] & ~np.uint32(vk.BIT_MISSING)
            ok = ~np.isnan(scan.state_value)
            state.value[r[ok]] = scan.state_value[ok]
            state.slot[r[ok]] = scan.state_slot[ok] + intervals[b][ok]
            pending = rest
        return self.grade_sparse(rows, flags, day)

    def check_ratios(self, key: str, rows: I64, values: F64, day: int,
                     configured: F64 | None = None) -> SparseVerdict:
        """Reported CT or PT ratios (``key`` names which): a change from the previous report (or
        from ``configured``) flags the multiplier rule."""
        rows = np.asarray(rows, dtype=np.int64)
        m = len(self.meter_ids)
        last = self._ratios.get(key)
        if last is None:
            last = np.full(m, np.nan) if configured is None else np.asarray(configured, float)
        changed, self._ratios[key] = vk.ratio_changes(values, rows, last)
        return self.grade_sparse(rows, np.where(changed != 0, vk.BIT_MULTIPLIER, 0
                                                 ).astype(np.uint32), day)


def _hold_open_gaps(out: ChainOutputs, inputs: ChainInputs) -> None:
    """Hold the register still over a gap that is open at the end of a fully due window, in the
    window's older day: that day is committed next and its values are final, yet nothing says
    where the register will be when the meter answers. Extrapolated (like-day) values could
    then stand above that later read; the last actual value cannot, so the older day publishes
    it and the gap's energy is scaled into the newer day once the read that ends it arrives.
    The estimated interval energies (history, day energy) are kept."""
    quality = out.quality
    last = _last_index(quality == 0)
    rows = np.flatnonzero(last < S_DAY - 1)
    for i in rows.tolist():
        k = int(last[i])
        if k >= 0:
            hold = out.value[i, k]
        else:
            soft = inputs.soft_value[i]
            hold = soft if soft == soft else inputs.start_value[i]
        cols = np.arange(k + 1, S_DAY)
        estimated = cols[(quality[i, cols] == 1) | (quality[i, cols] == 2)]
        if estimated.size and hold == hold:
            out.value[i, estimated] = hold
            out.fill.value[i, estimated] = hold


def _last_index(mask: Bool) -> I64:
    """Index of the last True per row, −1 when none."""
    if mask.shape[1] == 0:
        return np.full(mask.shape[0], -1, dtype=np.int64)
    rev = mask[:, ::-1]
    has = rev.any(axis=1)
    last: I64 = np.where(has, mask.shape[1] - 1 - rev.argmax(axis=1), -1).astype(np.int64)
    return last


def _trailing_true(mask: Bool) -> I64:
    """How many True values end each row."""
    if mask.shape[1] == 0:
        return np.zeros(mask.shape[0], dtype=np.int64)
    rev = ~mask[:, ::-1]
    has = rev.any(axis=1)
    count: I64 = np.where(has, rev.argmax(axis=1), mask.shape[1]).astype(np.int64)
    return count
