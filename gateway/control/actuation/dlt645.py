"""Relay control on DL/T 645-2007 meters: the 1CH frame on the bus priority lane, verified from
status word 3.

DL/T 645-2007 meters (2013 filing, 备案文件) report the relay in status word 3 (DI 04000503,
:data:`protocols.dlt645.STATUS_WORD_3`):

=====  ========================  ==========================================================
bit 4  ``relay_open``            继电器状态: the relay is open (断)
bit 6  ``relay_command_trip``    继电器命令状态: the last relay command was a trip (not yet
                                 allowed/closed)
bit 7  ``pre_trip_alarm``        预跳闸报警状态
bit 12 ``protect``               保电状态
=====  ========================  ==========================================================

Plaintext meters get :class:`~protocols.dlt645.messages.ControlRequest` built with the password
and operator code from the configuration (:func:`dlt645_control_request`). **ESAM meters**
(2013 filing, encrypted control): the gateway cannot and must not produce the ciphertext — the
central system, which holds the keys, supplies the 1CH data field (password level, password,
operator code and the encrypted N1..Nm, before the +33H transfer offset) and the gateway relays
it unchanged inside a frame to the meter's address (:func:`esam_control_frame`); the outcome is
verified from status word 3 exactly as for plaintext meters.

Retry bound: the bus already repeats an unanswered frame ``1 + retries`` times on the wire
(:meth:`~gateway.acquisition.dlt645_bus.Dlt645Bus.send_priority`), so a frame that still got no
acknowledgement ends the operation; the state machine sends the frame once more
(:data:`MAX_FRAMES`) only when it was acknowledged but the relay read back never showed the
action within :data:`VERIFY_TIMEOUT_S`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.acquisition.base import BusTimeout, PriorityLaneFull
from gateway.acquisition.dlt645_bus import Dlt645Bus
from gateway.config import MeterConfig
from gateway.control.actuation.driver import (
    ACKNOWLEDGED,
    FrameFate,
    RelayOutcome,
    StatusRead,
    run_actuation,
)
from gateway.control.actuation.machine import ActuationPolicy, RelayActuation
from protocols import dlt645 as d
from protocols.dlt645.data_fields import function_code
from protocols.dlt645.frame import Control, Version, build_frame
from protocols.dlt645.items import Reading
from protocols.dlt645.messages import (
    ControlAction,
    ControlRequest,
    ErrorReply,
    ReadReply,
    ReadRequest,
)

__all__ = [
    "EXPECTED_FLAGS",
    "Dlt645Credentials",
    "actuate_dlt645_relay",
    "describe_refusal",
    "dlt645_control_request",
    "dlt645_policy",
    "esam_control_frame",
    "status_read_request",
    "status_word3_flags",
]

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

#: Frames at most per operation: the first, and one more if the relay never showed the action.
MAX_FRAMES: Final = 2
#: From the acknowledgement until an operation counts as not executed. Status word 3 is read at
#: once (the acknowledgement already took a turnaround) and then every :data:`READ_INTERVAL_S`.
VERIFY_TIMEOUT_S: Final = 5.0
READ_INTERVAL_S: Final = 1.0

#: What the priority lane raises when a frame got no usable answer (the bus has retried it).
_NO_ANSWER = (BusTimeout, PriorityLaneFull, d.ProtocolError, OSError)


@dataclass(frozen=True, slots=True)
class Dlt645Credentials:
    """Password level, password (6 hex digits) and operator code (8 hex digits) for 1CH frames
    to plaintext meters; level 02 is the control level of most meters."""

    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"

    @classmethod
    def of(cls, meter: MeterConfig) -> Dlt645Credentials:
        """The credentials configured for ``meter`` (``[[meters]] control_password`` etc.)."""
        return cls(meter.control_password_level, meter.control_password.upper(),
                   meter.operator_code.upper())


def dlt645_control_request(address: str, action: ControlAction, valid_until: float,
                           credentials: Dlt645Credentials, utc_offset_min: int) -> ControlRequest:
    """The plaintext 1CH request. ``valid_until`` (UTC seconds) travels in the meter's local
    time (its clock is local, as every DL/T 645 time field), truncated to the second: a frame
    delayed past it is refused by the meter instead of acting late."""
    zone = dt.timezone(dt.timedelta(minutes=utc_offset_min))
    deadline = dt.datetime.fromtimestamp(int(valid_until), tz=zone).replace(tzinfo=None)
    return ControlRequest(address, action, deadline, credentials.password_level,
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
    return ReadRequest(address, d.STATUS_WORD_3)


def _flags(readings: Iterable[Reading]) -> Mapping[str, bool] | None:
    for reading in readings:
        if isinstance(reading.value, Mapping):
            return {str(k): bool(v) for k, v in reading.value.items()}
    return None


def status_word3_flags(reply: ReadReply) -> Mapping[str, bool] | None:
    """The flags of a status word 3 reply, or None if the reply is for something else."""
    if reply.di != d.STATUS_WORD_3:
        return None
    return _flags(reply.readings)


def describe_refusal(meter: str, action: ControlAction, reply: ErrorReply | d.ExceptionReply) -> str:
    """Why a meter refused a 1CH frame, with what to check."""
    errors = ", ".join(reply.errors) or f"error word {reply.error_word:02X}"
    hint = {
        "password_error": "check the meter's control password and level in the configuration",
        "other_error": "the meter may be in protect (保电), the frame's deadline may have "
                       "passed (check the meter clock), or it does not support the action",
    }.get(reply.errors[0] if reply.errors else "", "see the meter's manual for the error word")
    return f"meter {meter} (address {reply.address}) refused {action.name.lower()}: {errors} — {hint}"


def dlt645_policy(bus: Dlt645Bus) -> ActuationPolicy:
    """The actuation policy for 1CH frames on ``bus`` (see the module docstring)."""
    return ActuationPolicy(verify_delay_s=0.0, read_interval_s=READ_INTERVAL_S,
                           verify_timeout_s=VERIFY_TIMEOUT_S, max_attempts=MAX_FRAMES,
                           retry_backoff_s=bus.settings.retry_backoff_s)


async def actuate_dlt645_relay(bus: Dlt645Bus, meter: MeterConfig, action: ControlAction,
                               valid_until: float, utc_offset_min: int,
                               policy: ActuationPolicy | None = None) -> RelayOutcome:
    """Carry out ``action`` on ``meter`` (1CH on the priority lane, valid until ``valid_until``
    UTC seconds) and verify it from status word 3."""
    address = str(meter.address)
    request = dlt645_control_request(address, action, valid_until, Dlt645Credentials.of(meter),
                                     utc_offset_min)
    act = RelayActuation(meter.id, action, EXPECTED_FLAGS.get(action), policy or dlt645_policy(bus))

    async def send_frame() -> FrameFate:
        try:
            await bus.submit_priority(request)
        except d.ExceptionReply as exc:
            return FrameFate(False, describe_refusal(meter.id, action, exc), retryable=False)
        except _NO_ANSWER as exc:
            return FrameFate(False, f"no acknowledgement of the {action.name.lower()} frame "
                                    f"on bus {bus.name}: {exc}", retryable=False)
        return ACKNOWLEDGED

    async def read_status() -> StatusRead:
        try:
            tx = await bus.submit_priority(status_read_request(address))
        except _NO_ANSWER as exc:
            return None, f"status word 3 unreadable: {exc}"
        flags = _flags(tx.readings)
        return flags, "" if flags is not None else "status word 3 reply without relay bits"

    return await run_actuation(act, send_frame, read_status)
