"""One verified relay operation, for operator commands and load-control rounds alike.

A control action (trip, close, allow close, alarm, protect) is carried out as the sans-IO state
machine :class:`RelayActuation` (:mod:`.machine`: frame, read-back, bounded retries), driven by
one async loop (:mod:`.driver`) over the meter's bus priority lane: :mod:`.dlt645` (1CH frame,
status word 3) or :mod:`.modbus` (the profile's coil/register write, read back).
:func:`actuate_meter` picks the driver for a configured meter; the command handler and the
load-control runner both call it, so what "executed" means cannot drift between them.

Names are re-exported here because the handler, the runner, the tests and the load-control rig
all use them. The DL/T 645 driver's names are imported on first use (PEP 562): it loads the DL/T
645 bus and codec, which a Modbus-only gateway never needs (docs/performance.md, Memory).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from gateway.acquisition.base import ScheduledBus, is_dlt645_bus
from gateway.acquisition.modbus_bus import ModbusBus
from gateway.config import MeterConfig
from gateway.control.actuation.driver import FrameFate, RelayOutcome, run_actuation
from gateway.control.actuation.machine import (
    ActuationPolicy,
    Done,
    ReadStatus,
    RelayActuation,
    SendFrame,
    Step,
    Wait,
)
from gateway.control.actuation.modbus import (
    actuate_modbus_relay,
    expected_modbus_flags,
    modbus_policy,
    modbus_relay_flags,
    modbus_relay_write,
)
from protocols.dlt645.messages import ControlAction

if TYPE_CHECKING:
    from gateway.control.actuation.dlt645 import (
        EXPECTED_FLAGS,
        Dlt645Credentials,
        actuate_dlt645_relay,
        describe_refusal,
        dlt645_control_request,
        dlt645_policy,
        esam_control_frame,
        status_read_request,
        status_word3_flags,
    )

_DLT645_NAMES: Final = frozenset({
    "EXPECTED_FLAGS", "Dlt645Credentials", "actuate_dlt645_relay", "describe_refusal",
    "dlt645_control_request", "dlt645_policy", "esam_control_frame", "status_read_request",
    "status_word3_flags",
})

__all__ = [
    "EXPECTED_FLAGS",
    "ActuationPolicy",
    "Dlt645Credentials",
    "Done",
    "FrameFate",
    "ReadStatus",
    "RelayActuation",
    "RelayOutcome",
    "SendFrame",
    "Step",
    "Wait",
    "actuate_dlt645_relay",
    "actuate_meter",
    "actuate_modbus_relay",
    "describe_refusal",
    "dlt645_control_request",
    "dlt645_policy",
    "esam_control_frame",
    "expected_modbus_flags",
    "modbus_policy",
    "modbus_relay_flags",
    "modbus_relay_write",
    "run_actuation",
    "status_read_request",
    "status_word3_flags",
]


async def actuate_meter(bus: ScheduledBus | None, meter: MeterConfig | None,  # type: ignore[type-arg]
                        meter_id: str, action: ControlAction, valid_until: float,
                        utc_offset_min: int) -> RelayOutcome:
    """Carry out ``action`` on ``meter_id`` (configured as ``meter``, polled on ``bus``) and
    verify it; ``valid_until`` (UTC seconds) bounds how late a DL/T 645 meter may still act on
    the frame. Nothing is sent when the meter cannot do it; the outcome says why."""
    if meter is None or bus is None:
        return RelayOutcome(False, f"meter {meter_id} is not configured on any running bus",
                            None, 0)
    if isinstance(bus, ModbusBus):
        slot = next(m for m in bus.meters if m.meter_id == meter_id)
        relay = slot.profile.relay if slot.profile is not None else None
        if relay is None:  # the verifier rejects these; a reload may have changed the profile
            name = slot.profile.name if slot.profile is not None else "?"
            return RelayOutcome(False, f"meter {meter_id} (Modbus, profile {name!r}) has no relay "
                                       "in its profile; add a relay table to the profile (see "
                                       "the template profile modbus-relay-meter.toml in protocols/meter_profiles/)", None, 0)
        return await actuate_modbus_relay(bus, meter_id, slot.unit, relay, action)
    if is_dlt645_bus(bus):
        from gateway.control.actuation.dlt645 import actuate_dlt645_relay

        return await actuate_dlt645_relay(bus, meter, action, valid_until, utc_offset_min)
    return RelayOutcome(False, f"meter {meter_id}: bus {bus.name} has no relay control", None, 0)


def __getattr__(name: str) -> Any:
    if name not in _DLT645_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("gateway.control.actuation.dlt645"), name)
    globals()[name] = value
    return value
