"""Theft and tamper indicators on every poll: the kernels of :mod:`edge_rules.theft`, live.

``gwtool reconcile`` runs the same indicators offline over a day of reads; a gateway should not
wait for a day to say that a voltage tap was cut. This stage keeps the last ``window_samples``
polls of every meter (per-phase voltage, current and active power, total power, the import and
export registers — what the DL/T 645 and Modbus profiles read) in one float array, and after
each committer batch runs the indicator kernels over the meters that batch polled, vectorised:

* ``theft.loss_of_voltage`` — a phase below 78 % Un while its current is above 0.5 % Ib;
* ``theft.phase_break`` — a phase below 60 % Un with no current while another phase is live;
* ``theft.loss_of_current`` — a live phase below 0.5 % Ib while another carries more than 5 %;
* ``theft.current_imbalance`` — (max − min) / max of the phase currents above 30 % under load;
  (these four must hold for ``sustain_s``, 60 s by default);
* ``theft.reverse_energy`` — export on a meter not marked ``generating``;
* ``theft.meter_stopped`` — the import register frozen while the power says ≥ 0.1 kWh passed;
* ``theft.running_fast`` — the register advancing more than 10× what the power accounts for;
* ``tamper.cover_open`` / ``tamper.terminal_cover_open`` — the DL/T 645 event counters
  03300D00 / 03300E00 went up within the window (an opening between two polls, which the
  status-word flag behind the committer's ``meter.cover_open`` cannot show).

An alarm is *active* while its kernel finds a qualifying episode that reaches the meter's
latest poll: it is raised on the poll that completes the episode and cleared on the first poll
that no longer extends it, through :meth:`Committer.alarm` (durable, one event per transition).
The raise carries the evidence — the measured values, the episode and the window it was found
in, and the thresholds — in ``details`` (docs/reconciliation.md, docs/payloads.cddl).

Only the NumPy twins are called: they are proven equal to the compiled kernels
(tests/test_theft_kernels.py), a batch is a handful of meters × ``window_samples`` polls, and
a gateway must not import numba (~70 MB RSS) for this. Per poll the cost is a few scalar
stores into the sample array; Python objects are made only for alarm transitions.

Clock steps. The kernels measure durations (``sustain_s``, energy = power × time between
polls), so in the daemon they are given each poll's time on the *monotonic* clock
(:class:`~gateway.pipeline.clock.ClockWatch`); the alarms and their evidence keep wall times.
When the watch has seen a wall-clock step, every window is discarded (the samples before the
step are dropped, not evaluated), polls stamped before the step are not recorded, and a meter is
evaluated again — its alarms raised or cleared — from its second poll after the step.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from edge_rules import theft
from gateway.config import GatewayConfig, TheftSection
from gateway.pipeline.alarms import Alarms
from gateway.pipeline.clock import ClockWatch
from gateway.pipeline.feed import ValidatedPoll

log = logging.getLogger(__name__)

#: The sample channels kept per poll, in array order: quantity name → channel row.
CHANNELS: Final = {
    "voltage.a": 0, "voltage.b": 1, "voltage.c": 2,
    "current.a": 3, "current.b": 4, "current.c": 5,
    "power.active.a": 6, "power.active.b": 7, "power.active.c": 8,
    "power.active.total": 9,
    "energy.active.import.total": 10,
    "energy.active.export.total": 11,
    "events.cover_open.count": 12,
    "events.terminal_cover_open.count": 13,
}
N_CHANNELS: Final = 14
_NAN: Final = float("nan")
#: Channels that hold phase current magnitudes (see :meth:`TheftMonitor.on_poll`).
CURRENT_CHANNELS: Final = frozenset({CHANNELS["current.a"], CHANNELS["current.b"],
                                     CHANNELS["current.c"]})
#: quantity name -> (channel, whether it keeps the magnitude): one look-up a value per poll.
SAMPLE_CHANNELS: Final = {q: (c, c in CURRENT_CHANNELS) for q, c in CHANNELS.items()}
#: kWh; far below a register step (0.01 kWh), far above float error on register differences.
REGISTER_EPSILON: Final = 1e-6
_V: Final = slice(0, 3)
_I: Final = slice(3, 6)
_P: Final = slice(6, 9)
_P_TOTAL: Final = 9
_IMPORT: Final = 10
_EXPORT: Final = 11
_COVER: Final = 12
_TERMINAL_COVER: Final = 13
#: Polls a meter needs after a clock step before it is evaluated again (one says nothing).
SETTLE_SAMPLES: Final = 2
#: ms a poll may seem to come from the future (clock reads rounded to ms) and still be recorded.
FUTURE_SLACK_MS: Final = 1000


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """How one kernel's evidence arrays are named in the alarm ``details``: ``value`` and
    ``detail`` are the kernel's measurement and second measurement, ``reference`` the threshold
    it crossed (edge_rules.theft.IndicatorArrays)."""

    kind: str
    value: str
    reference: str
    detail: str


INDICATORS: Final = (
    IndicatorSpec("theft.loss_of_voltage", "lowest_voltage_v", "voltage_below_v",
                  "highest_current_a"),
    IndicatorSpec("theft.phase_break", "lowest_voltage_v", "voltage_below_v", "live_voltage_v"),
    IndicatorSpec("theft.loss_of_current", "lowest_current_a", "current_below_a",
                  "other_phase_current_a"),
    IndicatorSpec("theft.current_imbalance", "imbalance_pct", "imbalance_above_pct",
                  "largest_current_a"),
    IndicatorSpec("theft.reverse_energy", "export_kwh", "export_at_least_kwh", "reverse_kw"),
    IndicatorSpec("theft.meter_stopped", "unregistered_kwh", "unregistered_at_least_kwh",
                  "frozen_register_kwh"),
    IndicatorSpec("theft.running_fast", "registered_kwh", "registered_above_kwh",
                  "expected_kwh"),
    IndicatorSpec("tamper.cover_open", "new_events", "count_before", "count_after"),
    IndicatorSpec("tamper.terminal_cover_open", "new_events", "count_before", "count_after"),
)
KINDS: Final = tuple(spec.kind for spec in INDICATORS)


def alarm_key(kind: str, meter: str) -> str:
    return f"{kind}/{meter}"


class TheftMonitor:
    """Keeps each configured meter's recent polls and raises/clears the theft.* alarms.

    Subscribe :meth:`on_poll` to the pipeline's validated feed. The subscriber only records; the
    kernels run over the meters polled since, at most every ``evaluate_interval_s`` (scheduled
    on the running loop, so a whole committer batch is in), or at once when there is no loop
    (tools; tests also call :meth:`evaluate`).
    """

    def __init__(self, config: GatewayConfig, alarms: Alarms, *,
                 on_failure: Callable[[str, BaseException], None] | None = None,
                 clock: ClockWatch | None = None) -> None:
        #: Told when an evaluation fails (evaluations run from the event loop, outside any task).
        self.on_failure = on_failure
        self.failed = False
        self.settings: TheftSection = config.theft
        self.alarms = alarms
        self.meters: tuple[str, ...] = tuple(m.id for m in config.meters)
        self._row = {meter: r for r, meter in enumerate(self.meters)}
        s = self.settings
        meters, n = len(self.meters), s.window_samples
        self.un = np.array([m.nominal_voltage_v or s.nominal_voltage_v for m in config.meters],
                           dtype=np.float64)
        self.ib = np.array([m.basic_current_a or s.basic_current_a for m in config.meters],
                           dtype=np.float64)
        self.generating = np.array([m.generating for m in config.meters], dtype=np.uint8)
        self.samples = np.full((meters, N_CHANNELS, n), np.nan)
        #: The kernels' poll times: monotonic ms with a ``clock``, else the polls' wall times.
        self.times = np.zeros((meters, n), dtype=np.int64)
        #: The polls' wall times (UTC ms), for the alarms and their evidence.
        self.wall = np.zeros((meters, n), dtype=np.int64)
        #: Wall-clock steps (None: the polls' times are used as given, as tools and tests do).
        self.clock = clock
        self._steps_seen = clock.steps if clock is not None else 0
        #: True for meters whose window a clock step discarded, until SETTLE_SAMPLES polls.
        self.settling = np.zeros(meters, dtype=bool)
        self.filled = np.zeros(meters, dtype=np.int64)
        self._next = np.zeros(meters, dtype=np.int64)
        #: 1 where the alarm (meter row, indicator) is raised.
        self.active = np.zeros((meters, len(INDICATORS)), dtype=np.uint8)
        self._dirty: set[int] = set()
        self._scheduled = False
        #: Skip kernels that cannot fire on a batch (False only to measure what that saves).
        self.screen = True
        self._last_evaluation = -math.inf
        self._restore()

    def _restore(self) -> None:
        """Alarms raised before a restart stay raised until a poll shows them gone: mark them
        active, so the first evaluation clears what no longer holds."""
        for state in self.alarms.store.active_alarms():
            if state.kind not in KINDS:
                continue
            meter = state.key[len(state.kind) + 1:]
            row = self._row.get(meter)
            if row is not None and state.key == alarm_key(state.kind, meter):
                self.active[row, KINDS.index(state.kind)] = 1

    # -- per poll -------------------------------------------------------------------------------
    def on_poll(self, result: ValidatedPoll) -> None:
        """Record one validated, committed poll (a failed one carries no values and is skipped).
        An error here reaches the feed, which stops this monitor and reports it as failed."""
        row = self._row.get(result.meter_id)
        if row is None or not result.ok:
            return
        # The poll's column, built as a list and stored in one assignment (NaN where the poll
        # has no value), rather than one NumPy element store per value. Straight from the graded
        # records (those that kept a value are the poll's accepted values; the text values
        # have no channel), not through ``result.values``, which would build a copy.
        sample = [_NAN] * N_CHANNELS
        sample_channel = SAMPLE_CHANNELS.get
        accepted = False
        for record in result.records:
            value = record.val
            if value is None:
                continue
            accepted = True
            found = sample_channel(record.q)
            if found is not None and not isinstance(value, str):
                value = float(value)
                # DL/T 645-2007 phase currents carry the direction as a sign (XXX.XXX with the
                # top bit: power flowing back on that phase). The current indicators compare
                # how much current flows, so they get magnitudes; direction is judged from the
                # signed powers (reverse energy), which are kept as read.
                sample[found[0]] = abs(value) if found[1] else value
        if not accepted and not result.texts():
            return  # no values at all
        kernel_ms = result.finished_ms
        column = self._next.item(row)
        filled = self.filled.item(row)
        clock = self.clock
        if clock is not None:
            if clock.steps != self._steps_seen:
                self.discard_windows()
                column = filled = 0
            kernel_ms = clock.to_monotonic_ms(result.finished_ms)
            age = clock.monotonic_ms() - kernel_ms
            # .item(): Python numbers, not NumPy scalars (this runs for every poll).
            latest = self.times.item(row, (column - 1) % self.settings.window_samples)
            if (not -FUTURE_SLACK_MS <= age <= clock.threshold_ms
                    or (filled and kernel_ms < latest)):
                return  # stamped by the wall clock before a step: its time means nothing now
        self.samples[row, :, column] = sample
        self.times[row, column] = kernel_ms
        self.wall[row, column] = result.finished_ms
        self._next[row] = (column + 1) % self.settings.window_samples
        self.filled[row] = filled + 1
        self._dirty.add(row)
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.evaluate()
                return
            self._scheduled = True
            # An evaluation costs ~0.25 ms for one meter and ~0.4-0.6 ms for 32 (measured:
            # bench/bench_theft_monitor.py), so meters polled close together share one.
            delay = self._last_evaluation + self.settings.evaluate_interval_s - time.monotonic()
            loop.call_later(max(0.0, delay), self._evaluate_batch)

    def discard_windows(self) -> None:
        """After a wall-clock step: drop every meter's samples, so no window spans the step
        (what was measured before it is not evaluated, neither raised nor cleared on)."""
        if self.clock is not None:
            self._steps_seen = self.clock.steps
        self.samples.fill(np.nan)
        self.times.fill(0)
        self.wall.fill(0)
        self.filled.fill(0)
        self._next.fill(0)
        self.settling.fill(True)
        log.info("theft: a wall-clock step discarded the indicator windows of %d meters; each "
                 "is evaluated again from its %d. poll after the step", len(self.meters),
                 SETTLE_SAMPLES)

    def _evaluate_batch(self) -> None:
        self._scheduled = False
        self._last_evaluation = time.monotonic()
        if self.failed:
            return
        try:
            self.evaluate()
        except Exception as exc:  # any bug: polling goes on, the supervisor is told
            self.failed = True
            log.error("theft indicators failed on a batch and stopped; reads are unaffected",
                      exc_info=exc)
            if self.on_failure is not None:
                self.on_failure("theft", exc)
            return

    # -- per batch ------------------------------------------------------------------------------
    def window(self, rows: NDArray[np.intp]
               ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
        """The samples, kernel times and wall times of ``rows`` in time order (oldest first;
        polls not yet made are NaN at the front)."""
        n = self.settings.window_samples
        order = (self._next[rows, None] + np.arange(n)) % n
        data = np.take_along_axis(self.samples[rows], order[:, None, :], axis=2)
        times = np.take_along_axis(self.times[rows], order, axis=1)
        wall = np.take_along_axis(self.wall[rows], order, axis=1)
        return data, times, wall

    def evaluate(self, rows: Sequence[int] | None = None) -> int:
        """Run every indicator over ``rows`` (default: the meters polled since the last call);
        raise and clear alarms; return how many transitions were committed."""
        if rows is None:
            rows, self._dirty = sorted(self._dirty), set()
        index = np.asarray(rows, dtype=np.intp)
        if self.settling.any() and index.size:
            self.settling[index] &= self.filled[index] < SETTLE_SAMPLES
            index = index[~self.settling[index]]
        if index.size == 0:
            return 0
        data, times, wall = self.window(index)
        results = self._indicators(index, data, times, screen=self.screen)
        last = times[:, -1]
        last_wall = wall[:, -1]
        now = np.zeros((index.size, len(INDICATORS)), dtype=np.uint8)
        for j, arrays in enumerate(results):
            now[:, j] = (arrays.fired != 0) & (arrays.end_ms == last)
        changed = np.argwhere(now != self.active[index])
        for k, j in changed:
            row = int(index[k])
            meter = self.meters[row]
            spec = INDICATORS[j]
            key = alarm_key(spec.kind, meter)
            if now[k, j]:
                details = self._evidence(spec, results[j], int(k), row, times[k], wall[k])
                self.alarms.transition(spec.kind, key, "raised", meter, details,
                                       int(last_wall[k]))
            else:
                details = {"window_start_ms": _first_time(data[k], wall[k]),
                           "window_end_ms": int(last_wall[k]),
                           "hint": f"{spec.kind.split('.', 1)[1].replace('_', ' ')} no longer "
                                   f"holds at the poll of {_iso(int(last_wall[k]))}"}
                self.alarms.transition(spec.kind, key, "cleared", meter, details,
                                       int(last_wall[k]))
            self.active[row, j] = now[k, j]
        return len(changed)

    def _indicators(self, index: NDArray[np.intp], data: NDArray[np.float64],
                    times: NDArray[np.int64], *, screen: bool = True
                    ) -> list[theft.IndicatorArrays]:
        """The kernels' results for ``rows``, in :data:`INDICATORS` order.

        With ``screen`` a kernel whose necessary condition holds on no sample of the batch is
        not called (honest batches skip most of them: each call costs ~0.15 ms of NumPy
        overhead); tests/test_theft_monitor.py checks that screening never changes a result."""
        s = self.settings
        un, ib = self.un[index], self.ib[index]
        v = np.ascontiguousarray(data[:, _V])
        i = np.ascontiguousarray(data[:, _I])
        p = np.ascontiguousarray(data[:, _P])
        total = np.ascontiguousarray(data[:, _P_TOTAL])
        imported = np.ascontiguousarray(data[:, _IMPORT])
        exported = np.ascontiguousarray(data[:, _EXPORT])
        live = s.loss_of_voltage_pct / 100
        flowing = s.loss_of_voltage_current_pct / 100
        sustain = int(s.sustain_s * 1000)
        un3, ib3 = un[:, None, None], ib[:, None, None]
        # Register differences in binary floats come out a hair short (5.02 - 5.00 is
        # 0.0199999…): a threshold on them is lowered by far less than a register step.
        reverse_kwh = s.reverse_min_kwh - REGISTER_EPSILON
        hi, lo = i.max(axis=1), i.min(axis=1)  # NaN where a phase is missing, as the kernel
        calls: list[tuple[Callable[[], bool], Callable[[], tuple[Any, ...]]]] = [
            (lambda: bool(((v < live * un3) & (i > flowing * ib3)).any()),
             lambda: theft.loss_of_voltage_np(v, i, times, un, ib, live, flowing, sustain)),
            (lambda: bool((v < s.phase_break_pct / 100 * un3).any()),
             lambda: theft.phase_break_np(v, i, times, un, ib, s.phase_break_pct / 100, flowing,
                                          live, sustain)),
            (lambda: bool((i < s.loss_of_current_pct / 100 * ib3).any()),
             lambda: theft.loss_of_current_np(v, i, times, un, ib, s.loss_of_current_pct / 100,
                                              s.loss_of_current_other_pct / 100, live, sustain)),
            (lambda: bool((hi - lo > s.imbalance_pct / 100 * hi).any()),
             lambda: theft.current_imbalance_np(i, times, ib, s.imbalance_pct / 100,
                                                s.imbalance_min_load_pct / 100, sustain)),
            (lambda: bool((p < -s.reverse_min_kw).any()) or _spread(exported) >= reverse_kwh,
             lambda: theft.reverse_energy_np(exported, p, times, self.generating[index],
                                             reverse_kwh, s.reverse_min_kw, sustain)),
            (lambda: _may_be_stopped(imported, total, times, s.stopped_min_kwh),
             lambda: theft.meter_stopped_np(imported, total, times, s.stopped_min_kwh)),
            (lambda: True,
             lambda: theft.running_fast_np(imported, total, times, s.fast_factor,
                                           s.fast_min_kwh - REGISTER_EPSILON)),
            (lambda: _spread(data[:, _COVER]) > 0,
             lambda: theft.counter_events_np(np.ascontiguousarray(data[:, _COVER]), times)),
            (lambda: _spread(data[:, _TERMINAL_COVER]) > 0,
             lambda: theft.counter_events_np(np.ascontiguousarray(data[:, _TERMINAL_COVER]),
                                             times)),
        ]
        quiet = _quiet(index.size)
        return [theft.IndicatorArrays(*kernel()) if not screen or possible() else quiet
                for possible, kernel in calls]

    # -- evidence -------------------------------------------------------------------------------
    def thresholds(self, kind: str, row: int) -> dict[str, float]:
        """The settings that decided ``kind`` for meter ``row``, in the units of the evidence."""
        s = self.settings
        un, ib = float(self.un[row]), float(self.ib[row])
        sustain = {"sustain_s": s.sustain_s}
        live_v = _round(s.loss_of_voltage_pct / 100 * un)
        table: dict[str, dict[str, float]] = {
            "theft.loss_of_voltage": {"voltage_below_v": live_v,
                                      "current_above_a": _round(
                                          s.loss_of_voltage_current_pct / 100 * ib), **sustain},
            "theft.phase_break": {"voltage_below_v": _round(s.phase_break_pct / 100 * un),
                                  "current_at_most_a": _round(
                                      s.loss_of_voltage_current_pct / 100 * ib),
                                  "live_voltage_v": live_v, **sustain},
            "theft.loss_of_current": {"current_below_a": _round(s.loss_of_current_pct / 100 * ib),
                                      "other_phase_above_a": _round(
                                          s.loss_of_current_other_pct / 100 * ib),
                                      "live_voltage_v": live_v, **sustain},
            "theft.current_imbalance": {"imbalance_above_pct": s.imbalance_pct,
                                        "min_load_a": _round(
                                            s.imbalance_min_load_pct / 100 * ib), **sustain},
            "theft.reverse_energy": {"export_at_least_kwh": s.reverse_min_kwh,
                                     "phase_power_below_kw": -s.reverse_min_kw, **sustain},
            "theft.meter_stopped": {"unregistered_at_least_kwh": s.stopped_min_kwh},
            "theft.running_fast": {"factor": s.fast_factor, "min_registered_kwh": s.fast_min_kwh},
            "tamper.cover_open": {},
            "tamper.terminal_cover_open": {},
        }
        return table[kind]

    def _evidence(self, spec: IndicatorSpec, arrays: theft.IndicatorArrays, k: int, row: int,
                  times: NDArray[np.int64], wall: NDArray[np.int64]) -> dict[str, object]:
        value, reference, detail = (_finite(arrays.value[k]), _finite(arrays.reference[k]),
                                    _finite(arrays.detail[k]))
        start = _wall_at(times, wall, int(arrays.start_ms[k]))
        end = _wall_at(times, wall, int(arrays.end_ms[k]))
        details: dict[str, object] = {
            "phases": "".join(p for b, p in enumerate("abc") if int(arrays.phases[k]) & (1 << b)),
            "start_ms": start,
            "end_ms": end,
            "window_start_ms": _first_time(None, wall, self.filled[row]),
            "window_end_ms": int(wall[-1]),
            "samples": int(min(self.filled[row], self.settings.window_samples)),
            spec.value: value,
            spec.reference: reference,
            spec.detail: detail,
            "un_v": float(self.un[row]),
            "ib_a": float(self.ib[row]),
            "thresholds": self.thresholds(spec.kind, row),
        }
        details["hint"] = _hint(spec.kind, details, value, reference, detail, start, end)
        return details


def _first_time(data: NDArray[np.float64] | None, times: NDArray[np.int64],
                filled: int | np.integer | None = None) -> int:
    """Time of the oldest poll in the window (the front may hold polls not yet made)."""
    n = times.shape[0]
    if filled is None:
        assert data is not None
        present = ~np.isnan(data).all(axis=0)
        first = int(np.argmax(present)) if present.any() else n - 1
    else:
        first = max(0, n - int(filled))
    return int(times[first])


def _wall_at(times: NDArray[np.int64], wall: NDArray[np.int64], t: int) -> int:
    """The wall time of the poll the kernels knew as ``t`` (the kernels report episode bounds
    in the times they were given: monotonic in the daemon)."""
    hits = np.flatnonzero(times == t)
    if hits.size:
        return int(wall[hits[-1]])
    return t + int(wall[-1] - times[-1])


def _may_be_stopped(register: NDArray[np.float64], power_kw: NDArray[np.float64],
                    times: NDArray[np.int64], min_kwh: float) -> bool:
    """Whether ``meter_stopped_np`` can fire on the batch: some meter's steps with an unchanged
    register account for at least ``min_kwh`` even taken all together.

    The kernel sums the import energy (trapezoids of the positive power) of each stretch of
    such steps and fires on a sum of at least ``min_kwh``. Every step's
    ``max(power before, power after, 0) × |Δt|`` is at least its trapezoid, so the total of
    those over all still steps of a meter bounds each of its stretches; the margin covers the
    different order of rounding. A register read once a second rarely moves between two
    polls, so the plain "some step is still" screen let the kernel's per-meter Python loop run
    on nearly every batch (~2 % of the daemon's CPU at 100 meters, issue 18); the default
    window (16 polls of 1 s at a few kW) accounts for a fraction of ``stopped_min_kwh``.
    NaN powers count as zero here and in the kernel; a stretch whose sum is NaN never fires."""
    with np.errstate(invalid="ignore"):
        still = register[:, 1:] == register[:, :-1]
    if not still.any():
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        step = np.fmax(np.fmax(power_kw[:, :-1], power_kw[:, 1:]), 0.0) * np.abs(
            np.diff(times, axis=1).astype(np.float64))
        bound = np.where(still, np.fmax(step, 0.0), 0.0).sum(axis=1) / _MS_PER_HOUR
    return bool((bound * (1 + 1e-9) >= min_kwh).any())


_MS_PER_HOUR: Final = 3_600_000.0


def _spread(values: NDArray[np.float64]) -> float:
    """Largest max − min of a row over the samples read (−inf when none was)."""
    spread = np.fmax.reduce(values, axis=-1) - np.fmin.reduce(values, axis=-1)
    return float(np.nanmax(spread, initial=-np.inf))


def _quiet(meters: int) -> theft.IndicatorArrays:
    """What a kernel returns for meters where it did not fire."""
    nothing = np.full(meters, np.nan)
    return theft.IndicatorArrays(
        np.zeros(meters, dtype=np.uint8), np.zeros(meters, dtype=np.uint8),
        np.full(meters, theft.NO_TIME, dtype=np.int64), np.full(meters, theft.NO_TIME, dtype=np.int64),
        nothing, nothing, nothing)


def _finite(x: float | np.floating) -> float | None:
    value = float(x)
    return _round(value) if math.isfinite(value) else None


def _round(x: float) -> float:
    return round(x, 4)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hint(kind: str, details: dict[str, object], value: float | None, reference: float | None,
          detail: float | None, start: int, end: int) -> str:
    """One line an operator can act on (the numbers are also in the details as numbers)."""
    phases = details["phases"]
    window = f"{_iso(start)} to {_iso(end)}"
    t = details["thresholds"]
    assert isinstance(t, dict)
    lines = {
        "theft.loss_of_voltage": f"loss of voltage on phase {phases}: {value} V < {reference} V "
                                 f"while {detail} A flowed, {window} — check the voltage taps",
        "theft.phase_break": f"phase break on phase {phases}: {value} V < {reference} V and no "
                             f"current while another phase had {detail} V, {window}",
        "theft.loss_of_current": f"loss of current on phase {phases}: {value} A < {reference} A "
                                 f"while another phase carried {detail} A, {window} — check "
                                 "the CT and current wiring",
        "theft.current_imbalance": f"current imbalance {value} % > {reference} % (phase {phases} "
                                   f"lowest, largest phase {detail} A), {window}",
        "theft.reverse_energy": f"reverse energy on a meter not marked generating: {value} kWh "
                                f"exported (limit {reference} kWh)"
                                + (f", phase {phases} at -{detail} kW" if phases else "")
                                + f", {window}",
        "theft.meter_stopped": f"meter stopped: register frozen at {detail} kWh while the power "
                               f"says {value} kWh passed (limit {reference} kWh), {window}",
        "theft.running_fast": f"meter running fast: registered {value} kWh where the power "
                              f"accounts for {detail} kWh (limit {t.get('factor')}x), {window}",
        "tamper.cover_open": f"meter cover opened: {_count(value)} new event(s), counter "
                             f"{_count(reference)} -> {_count(detail)} (03300D00), first seen "
                             f"{_iso(start)}",
        "tamper.terminal_cover_open": f"terminal cover opened: {_count(value)} new event(s), "
                                      f"counter {_count(reference)} -> {_count(detail)} "
                                      f"(03300E00), first seen {_iso(start)}",
    }
    return lines[kind]


def _count(x: float | None) -> str:
    return "?" if x is None else f"{x:.0f}"
