"""The one async loop that runs a :class:`~.machine.RelayActuation` against a bus.

Each bus kind supplies two coroutines — send the control frame, read the relay state back — and
says how to read its errors (:class:`FrameFate`); the loop, the clock and the outcome are the same
for DL/T 645 and Modbus, so an operator's trip and a load-control round are verified alike.

The first thing the loop does is send the frame: no sleep and no read comes before it, because
the time from a command to the first byte of its trip frame is what the trip-latency benchmark
(``bench/bench_trip_latency.py``) measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.control.actuation.machine import Done, ReadStatus, RelayActuation, SendFrame, Wait

__all__ = ["ACKNOWLEDGED", "FrameFate", "RelayOutcome", "StatusRead", "run_actuation"]


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """How a relay operation ended: ``ok`` (the expected state was read back, or there was
    nothing to verify); ``detail`` (empty when ok, else a sentence for the command result or the
    engine's alarm); ``relay_open`` (the last relay state read, None if never read);
    ``attempts`` (control frames or writes sent)."""

    ok: bool
    detail: str
    relay_open: bool | None
    attempts: int


@dataclass(frozen=True, slots=True)
class FrameFate:
    """What became of one control frame: acknowledged (``ok``), or not, with ``error`` and
    whether sending it again could help (``retryable``: False for a refusal)."""

    ok: bool
    error: str = ""
    retryable: bool = True


ACKNOWLEDGED = FrameFate(True)

#: A read-back: the relay flags, or None and why the read failed.
StatusRead = tuple[Mapping[str, bool] | None, str]


async def run_actuation(act: RelayActuation, send_frame: Callable[[], Awaitable[FrameFate]],
                        read_status: Callable[[], Awaitable[StatusRead]],
                        clock: Callable[[], float] = time.monotonic) -> RelayOutcome:
    """Drive ``act`` to its end with ``send_frame``/``read_status`` as its I/O."""
    relay_open: bool | None = None
    while True:
        now = clock()
        step = act.next_step(now)
        if isinstance(step, Done):
            return RelayOutcome(step.ok, step.reason, relay_open, step.attempts)
        if isinstance(step, Wait):
            await asyncio.sleep(max(0.0, step.until - now))
        elif isinstance(step, SendFrame):
            fate = await send_frame()
            act.on_sent(clock(), fate.ok, fate.error, fate.retryable)
        elif isinstance(step, ReadStatus):
            flags, error = await read_status()
            if flags is not None and "relay_open" in flags:
                relay_open = bool(flags["relay_open"])
            act.on_status(clock(), flags, error)
