"""From an engine decision to a *verified* relay operation: frames, the check, bounded retries.

A meter that acknowledges a 1CH frame has only said it understood. What counts is the relay, and
DL/T 645-2007 meters (2013 filing, 备案文件) report it in status word 3 (DI 04000503):

=====  ========================  ==========================================================
bit 4  ``relay_open``            继电器状态: the relay is open (断)
bit 6  ``relay_command_trip``    继电器命令状态: the last relay command was a trip (not yet
                                 allowed/closed)
bit 7  ``pre_trip_alarm``        预跳闸报警状态
bit 12 ``protect``               保电状态
=====  ========================  ==========================================================

So every :class:`~gateway.control.load_control.events.SendControl` runs as a small sans-IO state machine,
:class:`RelayActuation`: send the frame on the bus priority lane → wait ``verify_delay_s`` → read
status word 3 → expected flags (:data:`EXPECTED_FLAGS`) seen: done; not yet: read again every
``read_interval_s`` until ``verify_timeout_s`` (meters with a configured trip delay, 跳闸延时, open
the relay minutes after the command — set the timeout above it); still not: send the frame
again, at most ``max_attempts`` frames in all. A refusal (an abnormal reply: wrong password,
protect, deadline passed) ends it at once — repeating a refused command changes nothing.

Plaintext meters get :class:`~protocols.dlt645.messages.ControlRequest` built with the password
and operator code from the configuration (:func:`dlt645_control_request`). **ESAM meters**
(2013 filing, encrypted control): the gateway cannot and must not produce the ciphertext — the
central system, which holds the keys, supplies the 1CH data field (password level, password,
operator code and the encrypted N1..Nm, before the +33H transfer offset) and the gateway relays
it unchanged inside a frame to the meter's address (:func:`esam_control_frame`); the outcome is
verified from status word 3 exactly as for plaintext meters.

Modbus meters: a relay coil or holding register declared in the meter's profile::

    relay = { coil = 16 }                                  # coil on = closed (supply on)
    relay = { coil = 16, open = true }                     # coil on = open (inverted wiring)
    relay = { register = 0x0100, open = 0, close = 1 }     # register values
    relay = { register = 0x0100, open = 0, close = 1, allow_close = 2 }

:func:`parse_modbus_relay` reads that table, :func:`modbus_relay_write` gives the write for an
action, :func:`modbus_relay_flags` maps the value read back to the same flag names, so the one
state machine verifies both protocols. Modbus meters have no "allow close" unless the profile
names a value for it (a prepaid customer is then never closed directly), and no meter-side alarm
or protect: those actions need no write (``None``) and the gateway enforces protect itself.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from gateway.control.load_control.events import SendControl
from protocols.dlt645.frame import Control, Version, build_frame
from protocols.dlt645.messages import (
    ControlAction,
    ControlRequest,
    ErrorReply,
    ReadReply,
    ReadRequest,
    function_code,
)
from protocols.modbus.relay import (
    ModbusRelay,
    ModbusRelayError,
    ModbusWrite,
    parse_modbus_relay,
)

__all__ = [
    "EXPECTED_FLAGS",
    "STATUS_WORD_3",
    "ActuationPolicy",
    "Dlt645Credentials",
    "Done",
    "ModbusRelay",
    "ModbusRelayError",
    "ModbusWrite",
    "ReadStatus",
    "RelayActuation",
    "SendFrame",
    "Step",
    "Wait",
    "dlt645_control_request",
    "esam_control_frame",
    "expected_modbus_flags",
    "modbus_relay_flags",
    "modbus_relay_write",
    "parse_modbus_relay",
    "status_read_request",
    "status_word3_flags",
]

#: DI of status word 3 (DL/T 645-2007 appendix A.5).
STATUS_WORD_3: Final = 0x04000503

#: What status word 3 must show after each 1CH action. Allow-close leaves the relay open (the
#: customer closes it) and clears the command-trip bit.
EXPECTED_FLAGS: Final[Mapping[ControlAction, Mapping[str, bool]]] = {
    ControlAction.TRIP: {"relay_open": True, "relay_command_trip": True},
    ControlAction.ALLOW_CLOSE: {"relay_command_trip": False},
    ControlAction.DIRECT_CLOSE: {"relay_open": False, "relay_command_trip": False},
    ControlAction.ALARM: {"pre_trip_alarm": True},
    ControlAction.ALARM_RELEASE: {"pre_trip_alarm": False},
    ControlAction.PROTECT: {"protect": True},
    ControlAction.PROTECT_RELEASE: {"protect": False},
}


# --------------------------------------------------------------------------------------------
# DL/T 645 frames
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dlt645Credentials:
    """Password level, password (6 hex digits) and operator code (8 hex digits) for 1CH frames
    to plaintext meters; level 02 is the control level of most meters."""

    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"


def dlt645_control_request(
    send: SendControl, address: str, credentials: Dlt645Credentials, utc_offset_min: int,
) -> ControlRequest:
    """The plaintext 1CH request for ``send``. The deadline travels in the meter's local time
    (its clock is local, as every DL/T 645 time field), truncated to the second."""
    zone = dt.timezone(dt.timedelta(minutes=utc_offset_min))
    deadline = dt.datetime.fromtimestamp(int(send.valid_until), tz=zone).replace(tzinfo=None)
    return ControlRequest(address, send.action, deadline, credentials.password_level,
                          credentials.password, credentials.operator)


def esam_control_frame(address: str, data: bytes, *, preamble: int = 4) -> bytes:
    """A 1CH frame carrying the central system's encrypted control ``data`` unchanged (the
    data field before the +33H offset, which the frame adds like any other)."""
    if not data:
        raise ValueError("ESAM control data is empty; the central system must supply the "
                         "encrypted 1CH data field")
    return build_frame(address, Control(function_code(Version.V2007, "control")), data,
                       preamble=preamble)


def status_read_request(address: str) -> ReadRequest:
    """Read status word 3 (the relay bits)."""
    return ReadRequest(address, STATUS_WORD_3)


def status_word3_flags(reply: ReadReply) -> Mapping[str, bool] | None:
    """The flags of a status word 3 reply, or None if the reply is for something else."""
    if reply.di != STATUS_WORD_3:
        return None
    for reading in reply.readings:
        if isinstance(reading.value, Mapping):
            return {str(k): bool(v) for k, v in reading.value.items()}
    return None


def describe_refusal(meter: str, action: ControlAction, reply: ErrorReply) -> str:
    """Why a meter refused a 1CH frame, with what to check."""
    errors = ", ".join(reply.errors) or f"error word {reply.error_word:02X}"
    hint = {
        "password_error": "check the meter's control password and level in the configuration",
        "other_error": "the meter may be in protect (保电), the frame's deadline may have "
                       "passed (check the meter clock), or it does not support the action",
    }.get(reply.errors[0] if reply.errors else "", "see the meter's manual for the error word")
    return f"meter {meter} (address {reply.address}) refused {action.name.lower()}: {errors} — {hint}"


# --------------------------------------------------------------------------------------------
# Modbus relays
# --------------------------------------------------------------------------------------------


def modbus_relay_write(relay: ModbusRelay, unit: int, action: ControlAction) -> ModbusWrite | None:
    """The write for ``action``; None for actions a Modbus relay has no part in (alarm,
    protect). Raises :class:`ModbusRelayError` for allow-close without an ``allow_close`` value:
    closing instead would close a prepaid customer's supply, which only the customer may do."""
    if action is ControlAction.TRIP:
        value = relay.open_value
    elif action is ControlAction.DIRECT_CLOSE:
        value = relay.close_value
    elif action is ControlAction.ALLOW_CLOSE:
        if relay.allow_close_value is None:
            raise ModbusRelayError(
                "this Modbus relay has no allow-close value (profile relay.allow_close); the "
                "gateway will not close it directly instead — close it on site or by a close "
                "command")
        value = relay.allow_close_value
    else:
        return None
    return ModbusWrite(unit, relay.kind, relay.address, value)


def modbus_relay_flags(relay: ModbusRelay, value: int | bool) -> Mapping[str, bool]:
    """A read-back coil/register value as the status flags :class:`RelayActuation` checks."""
    raw = int(value)
    return {"relay_open": raw != relay.close_value,
            "close_allowed": relay.allow_close_value is not None and raw == relay.allow_close_value}


def expected_modbus_flags(action: ControlAction) -> Mapping[str, bool] | None:
    """What :func:`modbus_relay_flags` must show after ``action`` (None: nothing to verify)."""
    return {
        ControlAction.TRIP: {"relay_open": True, "close_allowed": False},
        ControlAction.DIRECT_CLOSE: {"relay_open": False},
        ControlAction.ALLOW_CLOSE: {"close_allowed": True},
    }.get(action)


# --------------------------------------------------------------------------------------------
# The verification state machine
# --------------------------------------------------------------------------------------------


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
