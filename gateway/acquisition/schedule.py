"""Drift-free poll schedules, backoff of failing meters, and overrun accounting.

A meter polled "every 60 s" is polled on a fixed grid — ``anchor + k × interval`` — never "60 s after
the last poll finished", which would creep by the poll's own duration every time (over a day at 60 s
with 0.3 s polls that is 7 minutes of drift). The grid is aligned to wall-clock multiples of the
interval, so reads of different meters and gateways line up in time (useful for summation groups).

When a bus cannot keep up, a meter's slots pass before it is served. We do not queue the missed
polls (that is unbounded growth and stale data); we skip to the next slot and count each skipped slot
in ``overruns`` so the operator sees the bus is oversubscribed.

A meter that keeps failing (``consecutive_failures ≥ backoff_after``) is polled on every 2nd, 4th, …
slot (capped at ``max_backoff_s``) until it answers, so a dead meter stops eating bus time.

A meter that misses a poll may be **re-probed** (:meth:`PollSchedule.reprobe`): one extra poll
pulled forward to within seconds, off the grid, so the pipeline can tell a meter that lost its
supply from one that missed a frame without waiting a whole interval (docs/outages.md, "Meter
and phase outages"). At most one probe is pending per meter and it never moves the grid: the
next grid slot stays where it was. The bus task asks for it once per run of failures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class PollSchedule:
    """The grid of one meter. Times are on the caller's monotonic clock (seconds)."""

    interval_s: float
    anchor: float
    slot: int = 0
    overruns: int = 0
    consecutive_failures: int = 0
    backoff_after: int = 3
    max_backoff_s: float = 600.0
    skipped_for_backoff: int = field(default=0)
    started: bool = False
    #: A re-probe pulled forward ahead of the grid (monotonic seconds), or None.
    probe_due: float | None = None
    probing: bool = False

    @classmethod
    def aligned(cls, interval_s: float, mono_now: float, wall_now: float, **kw: object) -> PollSchedule:
        """A schedule whose slots fall on wall-clock multiples of ``interval_s`` (first one now)."""
        if interval_s <= 0:
            raise ValueError(f"poll interval must be positive, got {interval_s}")
        phase = wall_now % interval_s
        anchor = mono_now - phase  # slot 0 was the last wall-clock multiple: due immediately
        return cls(interval_s, anchor, **kw)  # type: ignore[arg-type]

    @property
    def grid_due(self) -> float:
        return self.anchor + self.slot * self.interval_s

    @property
    def next_due(self) -> float:
        grid = self.anchor + self.slot * self.interval_s
        return grid if self.probe_due is None else min(self.probe_due, grid)

    def reprobe(self, at: float) -> bool:
        """Pull one poll forward to ``at``; False (nothing changed) when a probe is pending
        already or the grid's next slot comes first anyway."""
        if self.probe_due is not None or at >= self.grid_due:
            return False
        self.probe_due = at
        return True

    def _slot_after(self, t: float) -> int:
        """The first slot strictly after time ``t``."""
        return math.floor((t - self.anchor) / self.interval_s) + 1

    def start_poll(self, now: float) -> None:
        """The poll of the current slot starts at ``now``: count slots that passed unserved.

        The very first slot is the wall-clock multiple that has just passed (so the first poll
        happens at once); it cannot have been missed, so it never counts as an overrun.
        """
        if not self.started:
            self.started = True
            return
        if self.probe_due is not None:
            self.probe_due = None
            if now < self.grid_due:  # the probe, not a grid slot: nothing was missed
                self.probing = True
                return
        if now >= self.grid_due + self.interval_s:
            missed = math.floor((now - self.grid_due) / self.interval_s)
            self.overruns += missed

    def finish_poll(self, now: float, ok: bool) -> None:
        """Move to the next slot after ``now``; apply backoff after repeated failures."""
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        if self.probing:
            self.probing = False
            if now < self.grid_due:
                return  # a probe keeps the grid (and backoff waits for the grid's poll)
        next_slot = max(self._slot_after(now), self.slot + 1)
        excess = self.consecutive_failures - self.backoff_after
        if excess >= 0:
            wait = min(self.interval_s * (2 ** (excess + 1)), max(self.max_backoff_s, self.interval_s))
            backoff_slot = self._slot_after(now + wait - self.interval_s)
            if backoff_slot > next_slot:
                self.skipped_for_backoff += backoff_slot - next_slot
                next_slot = backoff_slot
        self.slot = next_slot


def probe_set(meter: str, phases: Mapping[str, str]) -> list[str]:
    """Who is re-probed with ``meter`` when it misses a poll: its phase neighbours on the bus
    (``phases`` maps the bus's meters to their ``phase``, in configuration order) and one meter
    of each other phase as a witness that the bus itself still answers. Bounded by the bus's
    meters of one phase plus two; a meter without a phase is re-probed alone."""
    phase = phases.get(meter)
    if phase is None:
        return [meter]
    chosen = [m for m, p in phases.items() if p == phase]
    witnesses: dict[str, str] = {}
    for m, p in phases.items():
        if p != phase:
            witnesses.setdefault(p, m)
    return chosen + list(witnesses.values())
