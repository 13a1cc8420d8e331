"""Meter addresses: what a meter answers to on its bus, read according to the bus protocol.

A DL/T 645 address is 6 BCD bytes, written as the 12 digits printed on the nameplate; the
leading zeros matter, so it must be a TOML string. A Modbus unit id is an integer 1..247
(0 is broadcast and 248..255 are reserved by the Modbus serial line spec).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.config.context import Context
from gateway.config.issues import KeyPath
from gateway.config.kinds import INVALID, Kind, SchemaDefs, Siblings, describe

DLT645_ADDRESS_PATTERN: Final = "[0-9]{12}"
# 99 99 99 99 99 99 is the DL/T 645-2007 broadcast address (clause 4.2.1): every meter on the
# bus would act on a frame sent to it, and none replies to a read.
DLT645_BROADCAST: Final = "999999999999"
MODBUS_UNIT_MIN: Final = 1
MODBUS_UNIT_MAX: Final = 247
MODBUS_PROTOCOLS: Final = ("modbus-rtu", "modbus-tcp")


@dataclass(frozen=True)
class MeterAddress(Kind):
    """A meter address checked against the protocol of the bus named by the sibling `bus` key.

    When the bus is unknown (its own error is reported elsewhere) either form is accepted, so
    one mistake does not produce two messages.
    """

    bus_key: str = "bus"

    def expected(self) -> str:
        return (
            'a 12-digit DL/T 645 address string such as "000102030425" (dlt645 buses) '
            f"or a Modbus unit id {MODBUS_UNIT_MIN}..{MODBUS_UNIT_MAX} (modbus buses)"
        )

    def _bus(self, siblings: Siblings, ctx: Context) -> tuple[str, str] | None:
        name = siblings.get(self.bus_key)
        if not isinstance(name, str):
            return None
        buses = ctx.known_ids.get("buses") or {}
        bus: Mapping[str, Any] | None = buses.get(name)
        protocol = bus.get("protocol") if bus is not None else None
        if not isinstance(protocol, str):
            return None
        return name, protocol

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        bus = self._bus(siblings, ctx)
        if bus is not None and bus[1] == "dlt645":
            return self._dlt645(value, at, ctx, bus[0])
        if bus is not None and bus[1] in MODBUS_PROTOCOLS:
            return self._modbus(value, at, ctx, bus)
        if isinstance(value, str):
            return self._dlt645(value, at, ctx, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return self._modbus(value, at, ctx, None)
        return self.reject(value, at, ctx)

    def _dlt645(self, value: object, at: KeyPath, ctx: Context, bus: str | None) -> object:
        context = f' (bus "{bus}" is dlt645)' if bus else ""
        expected = "a 12-digit DL/T 645 address string, digits only, as on the nameplate"
        if isinstance(value, str) and re.fullmatch(DLT645_ADDRESS_PATTERN, value):
            if value == DLT645_BROADCAST:
                ctx.report(at, f"{value} is the DL/T 645 broadcast address, not a meter's address")
                return INVALID
            return value
        message = f"expected {expected}{context}, got {describe(value)}"
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
            message += f'; write it in quotes with its leading zeros: "{value:012d}"'
        ctx.report(at, message)
        return INVALID

    def _modbus(
        self, value: object, at: KeyPath, ctx: Context, bus: tuple[str, str] | None
    ) -> object:
        context = f' (bus "{bus[0]}" is {bus[1]})' if bus else ""
        expected = f"a Modbus unit id, an integer between {MODBUS_UNIT_MIN} and {MODBUS_UNIT_MAX}"
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and MODBUS_UNIT_MIN <= value <= MODBUS_UNIT_MAX
        ):
            return value
        message = f"expected {expected}{context}, got {describe(value)}"
        if isinstance(value, str) and value.isdigit():
            message += f"; write it without quotes: {int(value)}"
        ctx.report(at, message)
        return INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "string", "pattern": f"^(?:{DLT645_ADDRESS_PATTERN})$"},
                {"type": "integer", "minimum": MODBUS_UNIT_MIN, "maximum": MODBUS_UNIT_MAX},
            ]
        }
