"""The verified relay operation as a sans-IO state machine: frame, read-back, bounded retries.

A meter that acknowledges a control frame (a DL/T 645 1CH frame, a Modbus FC 05/06 write) has only
said it understood. What counts is the relay, read back afterwards (status word 3, or the Modbus
coil/register). :class:`RelayActuation` holds that rule for every bus kind: send the frame → wait
``verify_delay_s`` → read the relay state → the expected flags seen: done; not yet: read again
every ``read_interval_s`` until ``verify_timeout_s`` (meters with a configured trip delay, 跳闸延时,
open the relay minutes after the command — set the timeout above it); still not: send the frame
again, at most ``max_attempts`` frames in all. A refusal (an abnormal reply: wrong password,
protect, deadline passed) ends it at once — repeating a refused command changes nothing.

It does no I/O and has no clock: the async drivers (:mod:`.driver`, one per bus kind in
:mod:`.dlt645` and :mod:`.modbus`) feed it the time and the bus's answers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from protocols.dlt645.messages import ControlAction

__all__ = [
    "ActuationPolicy",
    "Done",
    "ReadStatus",
    "RelayActuation",
    "SendFrame",
    "Step",
    "Wait",
]


@dataclass(frozen=True, slots=True)
class ActuationPolicy:
    """``verify_delay_s`` after the acknowledgement before the first status read;
    ``read_interval_s`` between reads; ``verify_timeout_s`` from the acknowledgement until a
    frame counts as not executed; ``max_attempts`` frames at most; ``retry_backoff_s`` before
    sending again after a timeout."""

    verify_delay_s: float = 0.5
    read_interval_s: float = 1.0
    verify_timeout_s: float = 10.0
    max_attempts: int = 3
    retry_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.verify_delay_s, self.read_interval_s, self.verify_timeout_s,
               self.retry_backoff_s) < 0:
            raise ValueError("actuation delays and timeouts must not be negative")


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send the control frame (``attempt`` 1..max_attempts) on the priority lane."""

    attempt: int


@dataclass(frozen=True, slots=True)
class ReadStatus:
    """Read the relay state (status word 3, or the Modbus coil/register)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do before ``until`` (the caller's clock, same unit as the inputs)."""

    until: float


@dataclass(frozen=True, slots=True)
class Done:
    """Finished: ``ok`` (expected state seen), ``reason`` (empty when ok), ``attempts`` sent."""

    ok: bool
    reason: str
    attempts: int


Step: TypeAlias = SendFrame | ReadStatus | Wait | Done


class _Phase(enum.Enum):
    SEND = "send"
    SENDING = "sending"
    WAIT = "wait"
    READING = "reading"
    DONE = "done"


class RelayActuation:
    """Drive one control action to a verified outcome. The caller loops::

        step = act.next_step(now)
        SendFrame  → send, then act.on_sent(now, ok, error, retryable)
        ReadStatus → read, then act.on_status(now, flags or None, error)
        Wait       → sleep until step.until (or a wake-up), then ask again
        Done       → report step.ok / step.reason to the engine (on_actuation)

    ``expected`` are the flags that prove the action (:data:`EXPECTED_FLAGS`,
    :func:`expected_modbus_flags`); None means the acknowledgement is all there is to check.
    """

    def __init__(self, meter: str, action: ControlAction, expected: Mapping[str, bool] | None,
                 policy: ActuationPolicy | None = None) -> None:
        self.meter = meter
        self.action = action
        self.expected = expected
        self.policy = policy or ActuationPolicy()
        self.attempts = 0
        self._phase = _Phase.SEND
        self._until = 0.0
        self._deadline = 0.0
        self._last_seen: Mapping[str, bool] | None = None
        self._last_error = ""
        self._done: Done | None = None

    def next_step(self, now: float) -> Step:
        if self._done is not None:
            return self._done
        if self._phase is _Phase.SEND:
            if now < self._until:
                return Wait(self._until)
            self.attempts += 1
            self._phase = _Phase.SENDING
            return SendFrame(self.attempts)
        if self._phase is _Phase.WAIT:
            if now < self._until:
                return Wait(self._until)
            self._phase = _Phase.READING
            return ReadStatus()
        raise RuntimeError(f"{self.meter}: next_step() while waiting for the result of "
                           f"{self._phase.value}; report it first")

    def on_sent(self, now: float, ok: bool, error: str = "", retryable: bool = True) -> None:
        """The frame's fate: acknowledged (``ok``), or not (``error``; ``retryable`` False for a
        refusal — an abnormal reply — True for a timeout or a garbled reply)."""
        self._expect(_Phase.SENDING, "on_sent")
        if ok:
            if self.expected is None:
                self._finish(True, "")
                return
            self._phase = _Phase.WAIT
            self._until = now + self.policy.verify_delay_s
            self._deadline = now + self.policy.verify_timeout_s
            return
        self._last_error = error
        if retryable and self.attempts < self.policy.max_attempts:
            self._phase = _Phase.SEND
            self._until = now + self.policy.retry_backoff_s
        else:
            tries = f" after {self.attempts} frame(s)" if retryable else ""
            self._finish(False, f"{self.action.name.lower()} not executed{tries}: {error}")

    def on_status(self, now: float, flags: Mapping[str, bool] | None, error: str = "") -> None:
        """The relay state read back (``flags``), or the read failed (``error``)."""
        self._expect(_Phase.READING, "on_status")
        if flags is not None:
            self._last_seen = flags
            assert self.expected is not None
            if all(flags.get(name) == value for name, value in self.expected.items()):
                self._finish(True, "")
                return
        else:
            self._last_error = error
        if now < self._deadline:
            self._phase = _Phase.WAIT
            self._until = now + self.policy.read_interval_s
        elif self.attempts < self.policy.max_attempts:
            self._phase = _Phase.SEND
            self._until = now
        else:
            seen = (", ".join(f"{k}={v}" for k, v in sorted(self._last_seen.items())
                              if k in (self.expected or {}))
                    if self._last_seen is not None else f"no status read ({self._last_error})")
            want = ", ".join(f"{k}={v}" for k, v in sorted((self.expected or {}).items()))
            self._finish(False, f"{self.action.name.lower()} not confirmed after "
                                f"{self.attempts} frame(s): expected {want}, saw {seen}")

    @property
    def done(self) -> Done | None:
        return self._done

    def _expect(self, phase: _Phase, what: str) -> None:
        if self._phase is not phase:
            raise RuntimeError(f"{self.meter}: {what}() in phase {self._phase.value}")

    def _finish(self, ok: bool, reason: str) -> None:
        self._phase = _Phase.DONE
        self._done = Done(ok, reason, self.attempts)
