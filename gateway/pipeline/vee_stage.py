"""VEE in the daemon: the committer's batches through :class:`edge_rules.vee_engine.VeeEngine`.

The engine (the same one ``gwtool vee`` runs) works on a *window* — yesterday and today on the
interval grid, every meter a row. This stage keeps that window open between committer batches,
places each register read that lands on the grid into it, and turns the engine's verdicts into
read records:

* **A read on the grid** (the import register read within ``snap_seconds`` of an interval
  boundary; the first such read of an interval is its read) is published with the engine's
  verdict for its interval: ``A``, or ``S`` (a substitute in ``val``, the meter's value in
  ``raw``) / ``N`` when a ``fail`` rule rejects it, with method and reason codes.
* **A missing interval** — no read by boundary + ``snap_seconds`` — is estimated by the cascade
  and published as an ``E`` record at the boundary time (the read it stands for), in its own
  reads message for that meter. An interval nothing can be estimated for (a meter never read and
  no history) is not published: the comm-loss alarm already says the meter is silent.
* **A later verdict that differs** (a gap's estimates scaled to the read that ends it, an
  estimate replaced by an actual, a rule that flags a complete day) is re-published under the
  same natural key (meter, quantity, ``t``) with ``rev`` one higher (docs/payloads.cddl): a
  correction, which the committer has name the record it supersedes (``sup``,
  gateway/pipeline/corrections.py, docs/payloads.md).
* **Backfill** (gateway/acquisition/backfill.py): every interval estimated for a meter that keeps load
  records is noted on :attr:`VeeStage.backfill`; when the meter answers again its bus reads the
  records back and :meth:`VeeStage.backfill_records` puts them in the window as the intervals'
  reads and re-publishes them as actuals — same key, ``rev`` one higher, ``hist: true`` (late
  data) — so later estimates and the day's history use them.

Other reads (registers off the grid, voltages, power) keep the committer's basic validation
(gateway.pipeline.validation: decrease 18, bounds 73/74 — the same reason codes).

Cost. A poll only costs a dict lookup and a division unless its register read lands on the
grid; the engine runs once per meter per interval (on its grid read), plus once per boundary
for meters without one, vectorised over every meter evaluated in the batch. At local midnight
the older day is committed to the engine's history and the state is saved in the store
(``vee_state``), and again at a clean stop; :meth:`VeeStage.load` restores it at start.

Memory. numba is imported only when the configured implementation is ``nb`` (``[vee] kernels``;
``auto`` picks the NumPy twins below ``numba_min_meters``): see edge_rules/_jit.py.

Clock steps (gateway/pipeline/clock.py, docs/vee.md). Intervals are wall-clock intervals, so a
wall-clock step is handed to :meth:`VeeStage.on_clock_step` before the batch that sees it:
intervals that came due only because the clock jumped forward are *skipped* — never estimated
nor published, the engine's verdict on them is ignored — and after a step back no grid read is
placed until the wall clock is past where it was before the step (the replayed span would put
reads into intervals that already have theirs, or before them: duplicates and negative
consumption); those reads keep the committer's basic validation, and so do the two intervals
where the clock is back to where it was (their consumption includes the replayed span).

Grid time. ``[vee] interval_seconds`` below 900 compresses the grid for test rigs (a day of 96
intervals passes in 96 × interval_seconds); grid days are then numbered from the day the stage
first started, so the calendar still sees plausible dates. Production (900) uses local time.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_rules.calendar import INTERVAL_MS, INTERVALS_PER_DAY
from edge_rules.codes import QUALITY_A, QUALITY_E, QUALITY_LETTERS, QUALITY_N, QUALITY_S
from edge_rules.vee_engine import VeeEngine, Verdict, Window
from edge_rules.vee_rules import VeeConfig, reasons_of
from gateway.acquisition.backfill import BackfillBoard
from gateway.acquisition.poll_result import IntervalRecords, PollResult
from gateway.config import GatewayConfig
from gateway.config.vee import vee_config
from gateway.pipeline.clock import ClockStep
from gateway.store import Store
from protocols.payload import ReadRecord

log = logging.getLogger(__name__)

GRID_QUANTITY: Final = "energy.active.import.total"
POWER_QUANTITY: Final = "power.active.total"
EXPORT_QUANTITY: Final = "energy.active.export.total"
#: Off-grid reads the engine's sparse rules judge in every batch (docs/vee.md: voltage,
#: tariff_sum); other quantities keep the committer's basic validation.
VOLTAGE_QUANTITIES: Final = frozenset({"voltage.a", "voltage.b", "voltage.c"})
TARIFF_QUANTITIES: Final = {f"energy.active.import.t{n}": n - 1 for n in range(1, 5)}
S_DAY: Final = INTERVALS_PER_DAY
#: What :meth:`VeeStage.apply` does with a record of each quantity it looks at (one dict look-up
#: per record; a quantity not here keeps the committer's basic validation).
_GRID, _VOLTAGE, _TARIFF = 0, 1, 2
_ROLES: Final[dict[str, int]] = {GRID_QUANTITY: _GRID,
                                 **dict.fromkeys(VOLTAGE_QUANTITIES, _VOLTAGE),
                                 **dict.fromkeys(TARIFF_QUANTITIES, _TARIFF)}
#: Off-grid reads (voltages, tariff registers) held for the sparse rules: at this many they are
#: graded at once instead of at the next boundary. Without a bound they pile up for a whole
#: interval: 200 meters polled every 5 s hold 108,000 voltage reads by a 15-minute boundary,
#: about 25 MiB of records (docs/performance.md, Memory); 2,048 are about 0.5 MiB, and one engine
#: call per 2,048 reads costs per read what one per interval did. The verdicts are the same; the
#: revisions of the few reads that fail go out before the boundary instead of at it.
SPARSE_HOLD_MAX: Final = 2048
#: The open window: yesterday (a gap that began then is scaled to today's read) and today.
WINDOW_DAYS: Final = 2
W: Final = WINDOW_DAYS * S_DAY
#: ``published`` markers besides quality codes: never looked at / evaluated, nothing to publish.
UNPUBLISHED: Final = 255
NOTHING: Final = 254
#: ``pub_bits`` of a read whose published record is the committer's basic validation.
BASIC: Final = 0xFFFFFFFF
#: A saved open window more than this many days old is dropped at start, not estimated: a
#: gateway that was off for days would otherwise publish days of estimates in one burst.
STALE_DAYS: Final = 1
STATE_NAME: Final = "engine"

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Grid:
    """Gateway UTC ms ↔ absolute grid intervals (the engine's numbering: day = interval // 96).

    Interval ``anchor_interval`` starts at ``anchor_ms``; ``tolerance_ms`` how far from a
    boundary a read still belongs to it (``snap_seconds`` in grid time)."""

    interval_ms: int
    anchor_ms: int
    anchor_interval: int
    tolerance_ms: int

    @classmethod
    def create(cls, config: VeeConfig, now_ms: int) -> Grid:
        interval_ms = config.daemon.interval_seconds * 1000
        tolerance = config.estimation.snap_seconds * interval_ms // 900
        if interval_ms == INTERVAL_MS:  # local 15-minute grid, as Calendar.interval_of_read
            return cls(interval_ms, -config.calendar.offset_ms, 0, tolerance)
        day_ms = interval_ms * S_DAY
        anchor = now_ms - now_ms % day_ms
        return cls(interval_ms, anchor, config.calendar.local_day(now_ms) * S_DAY, tolerance)

    def interval_of_read(self, t_ms: int) -> int | None:
        """The interval a register read at ``t_ms`` closes, or None when it is off the grid."""
        rel = t_ms - self.anchor_ms
        boundary = (rel + self.interval_ms // 2) // self.interval_ms
        if abs(rel - boundary * self.interval_ms) > self.tolerance_ms:
            return None
        return int(self.anchor_interval + boundary - 1)

    def read_time_ms(self, interval: int) -> int:
        """UTC ms of the boundary that ends ``interval`` (where its read belongs)."""
        return self.anchor_ms + (interval + 1 - self.anchor_interval) * self.interval_ms

    def due_end(self, now_ms: int) -> int:
        """Intervals before this one are due: their boundary + tolerance has passed."""
        return int(self.anchor_interval
                   + (now_ms - self.tolerance_ms - self.anchor_ms) // self.interval_ms)


@dataclass(slots=True)
class VeeStats:
    evaluations: int = 0
    grid_reads: int = 0
    estimates: int = 0
    revisions: int = 0
    days_committed: int = 0
    backfilled: int = 0


class VeeStage:
    """The committer's VEE step (module docstring). One per daemon; not thread-safe."""

    def __init__(self, config: VeeConfig, meter_ids: Sequence[str], now_ms: int,
                 store: Store | None = None) -> None:
        self.config = config
        self.meter_ids = tuple(meter_ids)
        self.row_of = {meter: i for i, meter in enumerate(self.meter_ids)}
        self.implementation = config.daemon.implementation(len(self.meter_ids))
        self.engine = VeeEngine(config, self.meter_ids, implementation=self.implementation)
        self.grid = Grid.create(config, now_ms)
        self.store = store
        self.stats = VeeStats()
        m = len(self.meter_ids)
        classes = self.engine.meter_classes or ()
        lsb = [config.classes[c].lsb_kwh if c in config.classes else 0.01 for c in classes]
        self._lsb = np.array(lsb, dtype=np.float64)
        self._quantum = [Decimal(str(x)).normalize() for x in lsb]
        self.first_day: int | None = None
        self._due_done = 0  # window columns below this have been graded for every meter
        self._due_seen = -1  # the due_end the last batch saw: unchanged means nothing came due
        self.reads = np.full((m, W), np.nan)
        self.power = np.full((m, W), np.nan)
        self.export = np.full((m, W), np.nan)
        self.conflict = np.zeros((m, W), np.uint8)
        self.pub_quality = np.full((m, W), UNPUBLISHED, np.uint8)
        self.pub_method = np.zeros((m, W), np.uint8)
        self.pub_bits = np.zeros((m, W), np.uint32)
        self.pub_value = np.full((m, W), np.nan)
        self.pub_t = np.zeros((m, W), np.int64)  # the key (t) the interval was published under
        self.pub_rev = np.zeros((m, W), np.int64)
        #: decimal exponent of each grid read (−2 for XXXXXX.XX): with the float in ``reads``
        #: it gives the read back exactly (≤ 15 significant digits), without a Decimal per cell
        self.read_exp = np.full((m, W), -2, np.int8)
        #: off-grid reads since the last boundary, for the sparse rules (voltage, tariff sum)
        self._volts: list[tuple[int, ReadRecord]] = []
        self._tariffs: list[tuple[int, ReadRecord, list[ReadRecord]]] = []
        #: reasons of the basic records of grid reads not yet graded, by (row, col)
        self._basic_reasons: dict[tuple[int, int], tuple[int, ...]] = {}
        #: absolute intervals [first, end) a forward clock step jumped over: not estimated
        self.skipped: list[tuple[int, int]] = []
        #: after a step back: grid reads stamped before this wall time are not placed
        self.replay_until_ms = 0
        backfill = config.daemon.backfill
        #: estimated intervals owed by meters that keep load records (gateway/acquisition/backfill.py);
        #: the daemon shares it with the DL/T 645 bus tasks. None: ``[vee.backfill]`` is off.
        self.backfill: BackfillBoard | None = BackfillBoard(
            backfill.max_records, backfill.max_age_hours * 4) if backfill.enabled else None

    # ------------------------------------------------------------------ persistence

    def load(self) -> bool:
        """Restore what :meth:`save` wrote (history, meter state, grid, the open window). A
        saved grid of another ``interval_seconds`` is ignored (its intervals mean other times)."""
        if self.store is None:
            return False
        blob = self.store.get_vee_state(STATE_NAME)
        if blob is None:
            return False
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            grid = arrays["grid"].astype(np.int64).tolist()
            if grid[0] != self.grid.interval_ms:
                log.warning("VEE: saved state is for %d s intervals, configured %d s: starting "
                            "with empty history", grid[0] // 1000, self.grid.interval_ms // 1000)
                return False
            self.engine.restore({k: v for k, v in arrays.items()
                                 if k.startswith(("history.", "state."))})
        except (KeyError, ValueError, OSError) as exc:
            log.error("VEE: saved state in %s is unusable (%s): starting with empty history",
                      self.store.path, exc)
            return False
        self.grid = Grid(grid[0], grid[1], grid[2], self.grid.tolerance_ms)
        try:
            self._restore_window(arrays)
        except (KeyError, ValueError) as exc:
            log.error("VEE: the saved open window is unusable (%s): history kept, today's "
                      "intervals start empty", exc)
            self._clear(slice(0, W))
            self.first_day = None
            self._basic_reasons.clear()
        self._owe_restored_estimates()
        return True

    def _owe_restored_estimates(self) -> None:
        """After a restart or reload the estimates of the restored window are still owed: a meter
        that answers again gets them read back like those estimated in this run."""
        if self.backfill is None or self.first_day is None:
            return
        start = self.first_day * S_DAY
        rows, cols = np.nonzero((self.pub_quality == QUALITY_E) & np.isnan(self.reads))
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            self.backfill.want(self.meter_ids[row], start + col)

    def _restore_window(self, arrays: dict[str, NDArray[np.generic]]) -> None:
        first_day = int(arrays["window.first_day"])
        saved_ids = [str(x) for x in arrays["window.meter_ids"].tolist()]
        position = {meter: i for i, meter in enumerate(saved_ids)}
        pairs = [(row, position[m]) for row, m in enumerate(self.meter_ids) if m in position]
        if first_day < 0 or not pairs:
            return
        new = np.array([p[0] for p in pairs], dtype=np.int64)
        old = np.array([p[1] for p in pairs], dtype=np.int64)
        for name in ("reads", "power", "export", "conflict", "pub_quality", "pub_method",
                     "pub_bits", "pub_value", "pub_t", "pub_rev", "read_exp"):
            getattr(self, name)[new] = arrays[f"window.{name}"][old]
        self.first_day = first_day
        self._due_done = int(arrays["window.due_done"])
        if "window.skipped" in arrays:  # absent in states saved before clock steps were handled
            self.skipped = [(int(a), int(b)) for a, b in arrays["window.skipped"].tolist()]
        rows_of_saved = {old_row: new_row for new_row, old_row in pairs}
        for entry in arrays["window.basic"].tolist():
            r, c, codes = str(entry).split(",")
            if int(r) in rows_of_saved:
                self._basic_reasons[(rows_of_saved[int(r)], int(c))] = tuple(
                    int(x) for x in codes.split(";") if x)

    def save(self, now_ms: int | None = None) -> None:
        """Write history, meter state, grid and the open window to the store (one blob)."""
        if self.store is None:
            return
        arrays = dict(self.engine.to_arrays())
        arrays["grid"] = np.array([self.grid.interval_ms, self.grid.anchor_ms,
                                   self.grid.anchor_interval], dtype=np.int64)
        arrays["window.first_day"] = np.array(-1 if self.first_day is None else self.first_day)
        arrays["window.due_done"] = np.array(self._due_done)
        arrays["window.meter_ids"] = np.array(self.meter_ids, dtype=np.str_)
        for name in ("reads", "power", "export", "conflict", "pub_quality", "pub_method",
                     "pub_bits", "pub_value", "pub_t", "pub_rev", "read_exp"):
            arrays[f"window.{name}"] = getattr(self, name)
        arrays["window.skipped"] = np.array(self.skipped, dtype=np.int64).reshape(-1, 2)
        arrays["window.basic"] = np.array(
            [f"{r},{c},{';'.join(map(str, codes))}" for (r, c), codes in self._basic_reasons.items()],
            dtype=np.str_)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        self.store.put_vee_state(STATE_NAME, buffer.getvalue(), now_ms=now_ms)

    # ------------------------------------------------------------------ clock steps

    def on_clock_step(self, step: ClockStep) -> None:
        """The wall clock stepped (module docstring): skip the intervals a forward step jumped
        over; after a step back, place no grid read until the clock is past ``before_ms``."""
        if step.step_ms > 0:
            first = self.grid.due_end(step.before_ms)
            end = self.grid.due_end(step.after_ms)
            if end > first:
                self.skipped.append((first, end))
                log.warning("VEE: the clock jumped over %d intervals; they are not estimated",
                            end - first)
        else:
            self.replay_until_ms = max(self.replay_until_ms, step.before_ms)
            # The first read after the replayed span carries the energy of the whole span (the
            # register kept counting): the interval the clock comes back to, and the next one
            # (a read within snap of the boundary may land either side), are not graded.
            grid = self.grid
            back_to = grid.anchor_interval + (step.before_ms - grid.anchor_ms) // grid.interval_ms
            self.skipped.append((int(back_to), int(back_to) + 2))
            log.warning("VEE: the clock stepped back %.0f s; grid reads are not placed until it "
                        "is past %d again (they keep basic validation)", -step.step_ms / 1000,
                        step.before_ms)

    def _skipped_mask(self, due: int) -> NDArray[np.bool_] | None:
        """Columns ``[0, due)`` of the window a clock step jumped over (None: none)."""
        if not self.skipped or self.first_day is None:
            return None
        start = self.first_day * S_DAY
        columns = np.arange(start, start + due)
        mask = np.zeros(due, dtype=bool)
        for first, end in self.skipped:
            mask |= (columns >= first) & (columns < end)
        return mask if mask.any() else None

    # ------------------------------------------------------------------ the committer's hook

    def apply(self, polled: Sequence[tuple[PollResult, list[ReadRecord]]], now_ms: int
              ) -> list[tuple[str, list[ReadRecord]]]:
        """Take this batch's grid reads into the window (``polled`` pairs a poll with the
        records the committer built for it, which go out unchanged) and, when an interval
        boundary has come due, grade every meter at once. Returns the interval records to
        publish, as ``(meter, records)``: estimates, and records whose VEE verdict differs from
        what was published (re-published with ``rev``)."""
        placements: list[tuple[int, int, PollResult, ReadRecord]] = []
        due_end = latest = self.grid.due_end(now_ms)
        grid_reads = False
        role_of = _ROLES.get
        volts = self._volts
        for poll, records in polled:
            row = self.row_of.get(poll.meter_id)
            if row is None:
                continue
            total: ReadRecord | None = None
            tariffs: list[ReadRecord] = []
            for record in records:
                role = role_of(record.q)
                if role is None:
                    continue  # most of a poll (currents, power, frequency): basic validation
                if role == _GRID:
                    total = record
                    if record.t < self.replay_until_ms:
                        continue  # replayed by a step back: off the grid (basic validation)
                    interval = self.grid.interval_of_read(record.t)
                    if interval is not None:
                        placements.append((row, interval, poll, record))
                        latest = max(latest, interval + 1)
                        grid_reads = True
                elif record.quality != "A":
                    continue  # basic validation already rejected it
                elif role == _VOLTAGE:
                    volts.append((row, record))
                else:
                    tariffs.append(record)
            if tariffs and total is not None and total.quality == "A":
                self._tariffs.append((row, total, tariffs))
        extra: dict[int, list[ReadRecord]] = {}
        if len(self._volts) + len(self._tariffs) >= SPARSE_HOLD_MAX:
            self._grade_sparse((due_end + 1) // S_DAY, extra)  # the day the boundary would use
        if not grid_reads and due_end == self._due_seen:
            # the common poll: off the grid, nothing came due
            return [(self.meter_ids[row], sorted(records, key=lambda r: r.t))
                    for row, records in extra.items()]
        self._due_seen = due_end
        self._advance((latest - 1) // S_DAY, now_ms, extra)
        assert self.first_day is not None
        start = self.first_day * S_DAY
        for row, interval, poll, record in placements:
            self._place(row, interval - start, poll, record)
        due_cols = max(0, min(W, self.grid.due_end(now_ms) - start))
        if due_cols > self._due_done:
            rows = np.arange(len(self.meter_ids), dtype=np.int64)
            self._publish(self._evaluate(rows, due_cols), rows, due_cols, extra)
            self._due_done = due_cols
            self._grade_sparse(due_end // S_DAY, extra)
            if self.backfill is not None:
                self.backfill.forget_before(due_end)
        return [(self.meter_ids[row], sorted(records, key=lambda r: r.t))
                for row, records in extra.items()]

    def backfill_records(self, items: Sequence[IntervalRecords], now_ms: int
                         ) -> list[tuple[str, list[ReadRecord]]]:
        """Meters' own interval records, read back after a silence: each becomes its interval's
        read (so the engine, later estimates and the day's history use it) and, where something
        else was published for the interval, supersedes it as an actual — same (meter, q, t),
        ``rev`` one higher, ``hist: true``. An interval that already has a read from a poll keeps
        it; one not yet graded simply gets its read early; one outside the window is too old."""
        out: list[tuple[str, list[ReadRecord]]] = []
        if self.first_day is None:
            return out
        start = self.first_day * S_DAY
        for item in items:
            row = self.row_of.get(item.meter_id)
            if row is None:
                continue
            records: list[ReadRecord] = []
            for interval, value in item.records:
                col = interval - start
                if not 0 <= col < W or not np.isnan(self.reads[row, col]):
                    continue
                self.reads[row, col] = float(value)
                exponent = value.as_tuple().exponent
                self.read_exp[row, col] = exponent if isinstance(exponent, int) and \
                    -9 <= exponent <= 0 else -3
                self.stats.backfilled += 1
                if col >= self._due_done:
                    continue  # not graded yet: published with its interval, as any read
                first = self.pub_quality[row, col] in (UNPUBLISHED, NOTHING)
                rev = 0 if first else int(self.pub_rev[row, col]) + 1
                t = self.grid.read_time_ms(start + col) if first else int(self.pub_t[row, col])
                records.append(ReadRecord(GRID_QUANTITY, value, "kWh", t, "A", None, (),
                                          hist=True, rev=rev))
                self.pub_quality[row, col] = QUALITY_A
                self.pub_method[row, col] = 0
                self.pub_bits[row, col] = 0
                self.pub_value[row, col] = float(value)
                self.pub_t[row, col] = t
                self.pub_rev[row, col] = rev
                self._basic_reasons.pop((row, col), None)
            if records:
                self.stats.revisions += sum(1 for r in records if r.rev)
                out.append((item.meter_id, sorted(records, key=lambda r: r.t)))
        return out

    def _grade_sparse(self, day: int, extra: dict[int, list[ReadRecord]]) -> None:
        """Voltages against their meters' supply band and tariff registers against the total
        read with them, for every such read since the last boundary: one engine call per kind
        (as ``gwtool vee`` does for a file), so a poll only costs a list append. A finding is
        re-published under the read's key with ``rev`` 1: its reasons added (``warn``), or
        ``N`` with the value kept as ``raw`` (``fail``)."""
        volts, self._volts = self._volts, []
        instants, self._tariffs = self._tariffs, []
        if volts:
            # list comprehensions, not generators into np.fromiter: up to 2,048 reads a call
            verdict = self.engine.check_voltage(
                np.array([row for row, _ in volts], dtype=np.int64),
                np.array([float(r.val or 0) for _, r in volts], dtype=np.float64), day)
            for k in np.nonzero(verdict.published)[0].tolist():
                row, record = volts[k]
                extra.setdefault(row, []).append(_graded(
                    record, int(verdict.quality[k]), int(verdict.published[k])))
                self.stats.revisions += 1
        if instants:
            table = np.full((len(instants), len(TARIFF_QUANTITIES)), np.nan)
            for k, (_, _, tariffs) in enumerate(instants):
                for record in tariffs:
                    table[k, TARIFF_QUANTITIES[record.q]] = float(record.val or 0)
            verdict = self.engine.check_tariffs(
                np.fromiter((row for row, _, _ in instants), np.int64, len(instants)),
                np.fromiter((float(t.val or 0) for _, t, _ in instants), np.float64,
                            len(instants)), table, day)
            for k in np.nonzero(verdict.published)[0].tolist():
                row, _, tariffs = instants[k]
                for record in tariffs:
                    extra.setdefault(row, []).append(_graded(
                        record, int(verdict.quality[k]), int(verdict.published[k])))
                    self.stats.revisions += 1

    def _place(self, row: int, col: int, poll: PollResult, record: ReadRecord) -> None:
        """The first read of an interval is its read. Until VEE grades it, what the committer
        published for it (its basic validation) is what consumers have, so remember that."""
        # .item() and math.isnan, not NumPy on a NumPy scalar: every grid read of every poll
        # comes here, nearly all to find the interval already has its read (0.65 -> 0.09 µs).
        if not 0 <= col < W or not math.isnan(self.reads.item(row, col)):
            return  # before the window, or not the interval's first read: off the grid
        value = record.val if record.val is not None else record.raw
        if not isinstance(value, Decimal | float | int):
            return
        self.reads[row, col] = float(value)
        exponent = value.as_tuple().exponent if isinstance(value, Decimal) else -3
        self.read_exp[row, col] = exponent if isinstance(exponent, int) and -9 <= exponent <= 0 \
            else -3
        for pv in poll.values:
            if pv.quantity == POWER_QUANTITY and isinstance(pv.value, Decimal | float | int):
                self.power[row, col] = float(pv.value)
            elif pv.quantity == EXPORT_QUANTITY and isinstance(pv.value, Decimal | float):
                self.export[row, col] = float(pv.value)
        self.stats.grid_reads += 1
        if self.pub_quality[row, col] in (UNPUBLISHED, NOTHING):
            self.pub_quality[row, col] = QUALITY_LETTERS.index(record.quality)
            self.pub_method[row, col] = record.method or 0
            self.pub_value[row, col] = np.nan if record.val is None else float(record.val)
            self.pub_bits[row, col] = BASIC
            self._basic_reasons[(row, col)] = record.reasons
            self.pub_t[row, col] = record.t
            self.pub_rev[row, col] = 0
        # else an estimate is out for this interval: the verdict on this read supersedes it

    def _evaluate(self, rows: I64, due: int) -> Verdict:
        assert self.first_day is not None
        window = Window(self.first_day, WINDOW_DAYS, rows, self.reads[rows], self.conflict[rows],
                        self.power[rows], self.export[rows])
        self.stats.evaluations += 1
        return self.engine.evaluate(window, due=due)

    def _advance(self, today: int, now_ms: int, extra: dict[int, list[ReadRecord]]) -> None:
        """Open the window on the first batch; at local midnight grade the older day for every
        meter, commit it to the engine's history, slide the window and save."""
        if self.first_day is None or today - 1 - self.first_day > STALE_DAYS:
            committed = self.engine.state.published_interval
            after = int(committed.max()) // S_DAY + 1 if committed.size and committed.any() else 0
            if self.first_day is not None:
                log.warning("VEE: the open window (day %d) is %d days old: dropped, not "
                            "estimated", self.first_day, today - self.first_day)
                self._clear(slice(0, W))
            self.first_day = max(today - 1, after)
            self._due_done = 0
            return
        while self.first_day + 1 < today:
            rows = np.arange(len(self.meter_ids), dtype=np.int64)
            due = max(0, min(W, self.grid.due_end(now_ms) - self.first_day * S_DAY))
            verdict = self._evaluate(rows, due)
            self._publish(verdict, rows, due, extra)
            self.engine.commit(verdict, days=1, partial=due < S_DAY)
            for name in ("reads", "power", "export", "conflict", "pub_quality", "pub_method",
                         "pub_bits", "pub_value", "pub_t", "pub_rev", "read_exp"):
                array = getattr(self, name)
                array[:, :S_DAY] = array[:, S_DAY:]
            self._clear(slice(S_DAY, W))
            self._basic_reasons = {(r, c - S_DAY): v for (r, c), v in self._basic_reasons.items()
                                   if c >= S_DAY}
            self.first_day += 1
            self.skipped = [(a, b) for a, b in self.skipped if b > self.first_day * S_DAY]
            self._due_done = max(0, self._due_done - S_DAY)
            self.stats.days_committed += 1
            self.save(now_ms)

    def _clear(self, cols: slice) -> None:
        for name in ("reads", "power", "export", "pub_value"):
            getattr(self, name)[:, cols] = np.nan
        for name in ("conflict", "pub_method", "pub_bits", "pub_t", "pub_rev"):
            getattr(self, name)[:, cols] = 0
        self.read_exp[:, cols] = -2
        self.pub_quality[:, cols] = UNPUBLISHED

    def _decimal(self, row: int, value: float) -> Decimal:
        """An engine value as the register would show it (the class LSB): estimates are kWh
        with the register's resolution, so they travel as exact decimals like actual reads."""
        return Decimal(repr(float(value))).quantize(self._quantum[row])

    def _publish(self, verdict: Verdict, rows: I64, due: int,
                 extra: dict[int, list[ReadRecord]]) -> None:
        """Compare the verdict's first ``due`` columns with what was published; publish what is
        new or different (vectorised compare; Python only for the records that go out)."""
        if due <= 0:
            return
        assert self.first_day is not None
        quality = verdict.quality[:, :due]
        method = verdict.method[:, :due]
        bits = verdict.published[:, :due]
        value = verdict.value[:, :due]
        old_q = self.pub_quality[rows, :due]
        old_v = self.pub_value[rows, :due]
        old_bits = self.pub_bits[rows, :due]
        half_lsb = (self._lsb[rows] / 2)[:, None]
        with np.errstate(invalid="ignore"):
            moved = np.abs(value - old_v) >= half_lsb
        moved |= np.isnan(value) != np.isnan(old_v)
        changed = ((quality != old_q) | (method != self.pub_method[rows, :due])
                   | (bits != old_bits) | moved)
        # a missing interval nothing could be estimated for: noted, not published
        silent = (quality == QUALITY_N) & np.isnan(self.reads[rows, :due]) & (
            (old_q == UNPUBLISHED) | (old_q == NOTHING))
        old_q[silent] = NOTHING
        self.pub_quality[rows, :due] = old_q
        changed &= ~silent
        skipped = self._skipped_mask(due)
        if skipped is not None:
            changed &= ~skipped[None, :]  # jumped over by a clock step: nothing is owed
        start = self.first_day * S_DAY
        for i, col in zip(*np.nonzero(changed), strict=True):
            row = int(rows[i])
            col = int(col)
            q = int(quality[i, col])
            m = int(method[i, col]) if q in (QUALITY_E, QUALITY_S) else None
            reasons = reasons_of(int(bits[i, col]))
            basic = self._basic_reasons.pop((row, col), None)
            if (basic is not None and basic == reasons and q == old_q[i, col]
                    and not moved[i, col] and m is None):
                self.pub_bits[row, col] = bits[i, col]  # VEE agrees with what went out
                continue
            read = None if np.isnan(self.reads[row, col]) else Decimal(
                repr(float(self.reads[row, col]))).quantize(
                Decimal(1).scaleb(int(self.read_exp[row, col])))
            estimate = None if np.isnan(value[i, col]) else self._decimal(row, float(value[i, col]))
            if q == QUALITY_A:
                val, raw = (read if read is not None else estimate), None
            elif q == QUALITY_N:
                val, raw = None, read
            else:
                val, raw = estimate, (read if q == QUALITY_S else None)
            if val is None and q != QUALITY_N:
                continue  # an actual without a value cannot happen; never publish one
            first = old_q[i, col] in (UNPUBLISHED, NOTHING)
            if (not first and q == old_q[i, col] and (m or 0) == self.pub_method[row, col]
                    and bits[i, col] == old_bits[i, col] and val is not None
                    and not np.isnan(old_v[i, col])
                    and val == (read if q == QUALITY_A and read is not None
                                else self._decimal(row, float(old_v[i, col])))):
                self.pub_value[row, col] = value[i, col]  # moved less than the register shows
                continue
            rev = 0 if first else int(self.pub_rev[row, col]) + 1
            t = self.grid.read_time_ms(start + col) if first else int(self.pub_t[row, col])
            extra.setdefault(row, []).append(ReadRecord(
                GRID_QUANTITY, val, "kWh", t, QUALITY_LETTERS[q], m, reasons, raw=raw, rev=rev))
            if rev:
                self.stats.revisions += 1
            elif q == QUALITY_E:
                self.stats.estimates += 1
            if q == QUALITY_E and self.backfill is not None:
                self.backfill.want(self.meter_ids[row], start + col)
            self.pub_quality[row, col] = q
            self.pub_method[row, col] = 0 if m is None else m
            self.pub_bits[row, col] = bits[i, col]
            self.pub_value[row, col] = value[i, col]
            self.pub_t[row, col] = t
            self.pub_rev[row, col] = rev


def _graded(record: ReadRecord, quality: int, bits: int) -> ReadRecord:
    """The revision of an off-grid read with a sparse rule's finding: its reasons, and ``N``
    (value kept as ``raw``) when a ``fail`` rule hit."""
    reasons = tuple(sorted(set(record.reasons) | set(reasons_of(bits))))
    if quality == QUALITY_N:
        return ReadRecord(record.q, None, record.unit, record.t, "N", None, reasons,
                          record.hist, raw=record.val, rev=record.rev + 1)
    return ReadRecord(record.q, record.val, record.unit, record.t, record.quality,
                      record.method, reasons, record.hist, record.raw, rev=record.rev + 1)


def vee_settings(config: GatewayConfig) -> VeeConfig:
    """The kernels' view of ``[vee]``, which the config loader has already checked."""
    return vee_config(config.vee)


__all__ = ["GRID_QUANTITY", "Grid", "VeeStage", "VeeStats", "vee_settings"]
