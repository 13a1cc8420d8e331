"""Relay control on Modbus meters: the profile's coil/register write on the bus priority lane,
verified by reading it back.

The relay is a coil or holding register declared in the meter's profile::

    relay = { coil = 16 }                                  # coil on = closed (supply on)
    relay = { coil = 16, open = true }                     # coil on = open (inverted wiring)
    relay = { register = 0x0100, open = 0, close = 1 }     # register values
    relay = { register = 0x0100, open = 0, close = 1, allow_close = 2 }

:func:`~protocols.modbus.relay.parse_modbus_relay` reads that table, :func:`modbus_relay_write`
gives the write for an action, :func:`modbus_relay_flags` maps the value read back to flag names,
so the one state machine (:class:`~.machine.RelayActuation`) verifies both protocols. A meter
acknowledging FC 05/06 has only echoed the request; the read-back is what counts, as status word
3 is for DL/T 645. Modbus meters have no "allow close" unless the profile names a value for it (a
prepaid customer is then never closed directly), and no meter-side alarm or protect: those actions
need no write (``None``) and the gateway enforces protect itself.

Retry bound: at most ``1 + retries`` writes (the bus's ``retries``; the Modbus priority lane
sends each write once), the same number of frames the DL/T 645 bus sends for one control
request. An exception reply is a refusal and ends the operation at once; a timeout or a
read-back that still disagrees after ``verify_timeout_s`` sends the write again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pymodbus.exceptions import ModbusException

from gateway.acquisition.base import PriorityLaneFull
from gateway.acquisition.modbus_bus import ModbusBus, ModbusRefusal, RelayRead
from gateway.control.actuation.driver import (
    ACKNOWLEDGED,
    FrameFate,
    RelayOutcome,
    StatusRead,
    run_actuation,
)
from gateway.control.actuation.machine import ActuationPolicy, RelayActuation
from protocols.dlt645.messages import ControlAction
from protocols.modbus.relay import ModbusRelay, ModbusRelayError, ModbusWrite

__all__ = [
    "actuate_modbus_relay",
    "expected_modbus_flags",
    "modbus_policy",
    "modbus_relay_flags",
    "modbus_relay_write",
]

#: Relays on Modbus meters switch within a mains cycle or two once the write is acknowledged;
#: the first read-back waits this long so it does not race the contact.
VERIFY_DELAY_S: Final = 0.2

#: What the priority lane raises when a write or read got no usable answer.
_NO_ANSWER = (ModbusException, TimeoutError, OSError, PriorityLaneFull)


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


def modbus_policy(bus: ModbusBus) -> ActuationPolicy:
    """The actuation policy for relays on ``bus``: bounded like its DL/T 645 counterpart
    (``1 + retries`` writes) and timed from the bus timeout (a read-back every timeout, a write
    counted as not executed after three)."""
    timeout = bus.settings.timeout_s
    return ActuationPolicy(verify_delay_s=VERIFY_DELAY_S, read_interval_s=timeout,
                           verify_timeout_s=3 * timeout, max_attempts=1 + bus.settings.retries,
                           retry_backoff_s=bus.settings.retry_backoff_s)


async def actuate_modbus_relay(bus: ModbusBus, meter_id: str, unit: int, relay: ModbusRelay,
                               action: ControlAction) -> RelayOutcome:
    """Carry out ``action`` on the relay of ``meter_id`` (unit ``unit``) and verify it."""
    try:
        write = modbus_relay_write(relay, unit, action)
    except ModbusRelayError as exc:
        return RelayOutcome(False, f"meter {meter_id}: {exc}", None, 0)
    expected = expected_modbus_flags(action)
    if write is None or expected is None:
        return RelayOutcome(True, f"{action.name.lower()}: nothing to send to a Modbus "
                                  "meter (no meter-side function)", None, 0)
    act = RelayActuation(meter_id, action, expected, modbus_policy(bus))
    read = RelayRead(unit, relay.kind, relay.address)

    async def send_frame() -> FrameFate:
        try:
            await bus.submit_priority(write)
        except ModbusRefusal as exc:
            return FrameFate(False, f"meter {meter_id} refused the write of {write.value} to "
                                    f"{write.kind} {write.address:#06x}: {exc} — check the "
                                    "profile's relay table against the meter's manual",
                             retryable=False)
        except _NO_ANSWER as exc:
            return FrameFate(False, f"no reply to the relay write ({exc})")
        return ACKNOWLEDGED

    async def read_status() -> StatusRead:
        try:
            value = await bus.submit_priority(read)
        except _NO_ANSWER as exc:
            return None, f"relay read-back failed: {exc}"
        return modbus_relay_flags(relay, int(value)), ""

    return await run_actuation(act, send_frame, read_status)
