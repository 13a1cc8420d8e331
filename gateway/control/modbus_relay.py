"""A relay operation on a Modbus meter, from the write to a verified outcome.

The command handler (operator trip/close/allow_close) and the load-control runner (rounds and
restores) both call :func:`actuate_modbus_relay`. It drives the sans-IO
:class:`~gateway.control.load_control.actuation.RelayActuation` machine with the meter's bus priority
lane as its I/O: write the coil or register from the profile, read it back, map the value through
:func:`~gateway.control.load_control.actuation.modbus_relay_flags`. A meter acknowledging FC 05/06 has
only echoed the request; the read-back is what counts, as status word 3 is for DL/T 645.

Retry bound: at most ``1 + retries`` writes (the bus's ``retries``), the same number of frames
the DL/T 645 bus sends for one control request. An exception reply is a refusal and ends the
operation at once; a timeout or a read-back that still disagrees after ``verify_timeout_s``
sends the write again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.acquisition.modbus_bus import ModbusBus, ModbusRefusal, RelayRead
from protocols.dlt645.messages import ControlAction
from protocols.modbus.relay import ModbusRelay, ModbusRelayError

if TYPE_CHECKING:
    from gateway.control.load_control.actuation import ActuationPolicy

__all__ = ["ModbusRelayOutcome", "actuate_modbus_relay", "modbus_policy"]

#: Relays on Modbus meters switch within a mains cycle or two once the write is acknowledged;
#: the first read-back waits this long so it does not race the contact.
VERIFY_DELAY_S = 0.2


@dataclass(frozen=True, slots=True)
class ModbusRelayOutcome:
    """``ok`` (the expected state was read back, or the action needs no write); ``detail`` (a
    sentence for the command result); ``relay_open`` (last state read, None if never read);
    ``writes`` (how many writes were sent)."""

    ok: bool
    detail: str
    relay_open: bool | None
    writes: int


def modbus_policy(bus: ModbusBus) -> ActuationPolicy:
    """The actuation policy for relays on ``bus``: bounded like its DL/T 645 counterpart
    (``1 + retries`` writes) and timed from the bus timeout (a read-back every timeout, a write
    counted as not executed after three)."""
    from gateway.control.load_control.actuation import ActuationPolicy

    timeout = bus.settings.timeout_s
    return ActuationPolicy(verify_delay_s=VERIFY_DELAY_S, read_interval_s=timeout,
                           verify_timeout_s=3 * timeout, max_attempts=1 + bus.settings.retries,
                           retry_backoff_s=bus.settings.retry_backoff_s)


async def actuate_modbus_relay(bus: ModbusBus, meter_id: str, unit: int, relay: ModbusRelay,
                               action: ControlAction) -> ModbusRelayOutcome:
    """Carry out ``action`` on the relay of ``meter_id`` (unit ``unit``) and verify it."""
    # Imported here: the load_control package pulls in the engine (~0.3 s of numpy/numba at
    # import), which a gateway without group limits never needs.
    from gateway.control.load_control.actuation import (
        Done,
        ReadStatus,
        RelayActuation,
        SendFrame,
        Wait,
        expected_modbus_flags,
        modbus_relay_flags,
        modbus_relay_write,
    )

    try:
        write = modbus_relay_write(relay, unit, action)
    except ModbusRelayError as exc:
        return ModbusRelayOutcome(False, f"meter {meter_id}: {exc}", None, 0)
    expected = expected_modbus_flags(action)
    if write is None or expected is None:
        return ModbusRelayOutcome(True, f"{action.name.lower()}: nothing to send to a Modbus "
                                        "meter (no meter-side function)", None, 0)
    act = RelayActuation(meter_id, action, expected, modbus_policy(bus))
    read = RelayRead(unit, relay.kind, relay.address)
    relay_open: bool | None = None
    while True:
        now = time.monotonic()
        step = act.next_step(now)
        if isinstance(step, Done):
            return ModbusRelayOutcome(step.ok, step.reason, relay_open, step.attempts)
        if isinstance(step, Wait):
            await asyncio.sleep(max(0.0, step.until - now))
        elif isinstance(step, SendFrame):
            try:
                await bus.submit_priority(write)
            except ModbusRefusal as exc:
                act.on_sent(time.monotonic(), False, f"meter {meter_id} refused the write of "
                            f"{write.value} to {write.kind} {write.address:#06x}: {exc} — check "
                            "the profile's relay table against the meter's manual",
                            retryable=False)
            except Exception as exc:
                act.on_sent(time.monotonic(), False, f"no reply to the relay write ({exc})")
            else:
                act.on_sent(time.monotonic(), True)
        elif isinstance(step, ReadStatus):
            try:
                value = await bus.submit_priority(read)
            except Exception as exc:
                act.on_status(time.monotonic(), None, f"relay read-back failed: {exc}")
            else:
                flags = modbus_relay_flags(relay, int(value))
                relay_open = flags["relay_open"]
                act.on_status(time.monotonic(), flags)
