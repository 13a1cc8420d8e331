"""Clock steps: the wall clock jumping against the monotonic clock.

Reads carry wall-clock times (UTC ms) because that is what consumers need; but a duration
measured in wall time is wrong across a step — an NTP or RTC correction, an operator's
``date -s``. Stepping the wall clock forward a day made the theft indicators see a day of
power against a register that had moved for seconds (``theft.meter_stopped`` on every meter),
and VEE estimate every interval the clock jumped over.

:class:`ClockWatch` compares the two clocks whenever it is consulted (the committer does, at
every batch and every VEE tick, so at least once per poll interval). ``wall − monotonic`` is
constant while the wall clock runs freely and drifts by milliseconds when NTP slews it; a change
larger than ``[gateway] clock_step_threshold_s`` is a step. A step is logged once, raised as a
``clock.step`` alarm through the :class:`~gateway.pipeline.alarms.Alarms` service (details: the
step in seconds, wall time before and after) and handed to the listeners (VEE, theft), which
discard what spans it. The alarm of a step is cleared when the next step is raised, so every
step is one ``raised`` event (the alarm's key is the same: at most one is active).

The watcher itself is not a task: it costs two clock reads per consultation.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.pipeline.alarms import Alarms

log = logging.getLogger(__name__)

CLOCK_STEP_ALARM: Final = "clock.step"
#: The alarm key: one clock, so at most one step is active at a time.
CLOCK_STEP_KEY: Final = "clock.step/wall"


@dataclass(frozen=True, slots=True)
class ClockStep:
    """One detected step: the wall time the clock would show without it (``before_ms``), what it
    showed when the step was seen (``after_ms``) and the step itself (``after − before``,
    negative for a step back)."""

    before_ms: int
    after_ms: int

    @property
    def step_ms(self) -> int:
        return self.after_ms - self.before_ms

    def details(self) -> dict[str, object]:
        return {"step_s": round(self.step_ms / 1000, 3), "before_ms": self.before_ms,
                "after_ms": self.after_ms,
                "hint": f"the wall clock stepped {_signed(self.step_ms / 1000)} s "
                        f"({_iso(self.before_ms)} -> {_iso(self.after_ms)}): check NTP / the "
                        "RTC; theft windows spanning the step were discarded and VEE did not "
                        "estimate the intervals it jumped over"}


class ClockWatch:
    """Detects wall-clock steps by comparing ``wall`` with ``monotonic`` (both in ns, injectable
    for tests); :meth:`to_monotonic_ms` turns a wall time of the current clock epoch into the
    monotonic time the theft windows measure durations in."""

    def __init__(self, threshold_s: float, alarms: Alarms | None = None, *,
                 wall_ns: Callable[[], int] = time.time_ns,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.threshold_ms = int(threshold_s * 1000)
        self.alarms = alarms
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        #: wall − monotonic (ms) at the last consultation.
        self.offset_ms = self._offset()
        #: Steps seen since start; listeners compare it to know whether one happened.
        self.steps = 0
        self.last_step: ClockStep | None = None
        self._listeners: list[Callable[[ClockStep], None]] = []

    def _offset(self) -> int:
        return (self._wall_ns() - self._monotonic_ns()) // 1_000_000

    def subscribe(self, listener: Callable[[ClockStep], None]) -> Callable[[], None]:
        """Call ``listener`` on every step (from :meth:`check`); returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def check(self) -> ClockStep | None:
        """Compare the clocks now; on a step log it, raise ``clock.step`` and tell the
        listeners. Drift below the threshold is followed silently (the offset is updated)."""
        monotonic_ns = self._monotonic_ns()
        wall_ms = self._wall_ns() // 1_000_000
        offset = wall_ms - monotonic_ns // 1_000_000
        previous, self.offset_ms = self.offset_ms, offset
        if abs(offset - previous) <= self.threshold_ms:
            return None
        step = ClockStep(before_ms=wall_ms - (offset - previous), after_ms=wall_ms)
        self.steps += 1
        self.last_step = step
        log.warning("clock: the wall clock stepped %s s (%s -> %s); theft windows spanning it "
                    "are discarded, VEE does not estimate the jumped-over intervals",
                    _signed(step.step_ms / 1000), _iso(step.before_ms), _iso(step.after_ms))
        if self.alarms is not None:
            if self.alarms.active(CLOCK_STEP_KEY):
                self.alarms.clear(CLOCK_STEP_ALARM, CLOCK_STEP_KEY, None,
                                  {"hint": "superseded by a new clock step"}, wall_ms)
            self.alarms.raise_(CLOCK_STEP_ALARM, CLOCK_STEP_KEY, None, step.details(), wall_ms)
        for listener in list(self._listeners):
            listener(step)
        return step

    def to_monotonic_ms(self, wall_ms: int) -> int:
        """``wall_ms`` (a time of the current clock epoch) on the monotonic clock, in ms."""
        return wall_ms - self.offset_ms

    def monotonic_ms(self) -> int:
        return self._monotonic_ns() // 1_000_000


def _signed(seconds: float) -> str:
    return f"{seconds:+.3f}".rstrip("0").rstrip(".")


def _iso(ms: int) -> str:
    when = dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
