"""The relay of a Modbus meter, as its profile declares it (``relay = {...}`` in the TOML).

Meters with a load relay and a Modbus port (prepaid single-phase meters, smart breakers, the
relay-output variants of DIN-rail meters) expose it either as a **coil** (FC 05 writes it,
FC 01 reads it back) or as a **holding register** with vendor-specific values (FC 06 / FC 03).
There is no standard: the profile names the address and the values, and this module checks
them, so a wrong table is a profile error at start-up instead of a wrong write to a customer's
supply. The daemon side (:mod:`gateway.control.actuation.modbus`) turns an action into a
:class:`ModbusWrite` and a read-back value into relay flags.

Accepted spellings::

    relay = { coil = 16 }                                  # coil on = closed (supply on)
    relay = { coil = 16, open = true }                     # coil on = open (inverted wiring)
    relay = { register = 0x0100, open = 0, close = 1 }     # register values
    relay = { register = 0x0100, open = 0, close = 1, allow_close = 2 }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["ModbusRelay", "ModbusRelayError", "ModbusWrite", "parse_modbus_relay"]


class ModbusRelayError(ValueError):
    """A profile's ``relay`` table is wrong, or the action has no Modbus equivalent."""


@dataclass(frozen=True, slots=True)
class ModbusRelay:
    """A relay behind a coil (``kind`` ``coil``) or a holding register (``register``):
    ``address`` and the values meaning open, closed and (optionally) close-allowed."""

    kind: Literal["coil", "register"]
    address: int
    open_value: int
    close_value: int
    allow_close_value: int | None = None


@dataclass(frozen=True, slots=True)
class ModbusWrite:
    """Write ``value`` to the coil (0/1) or register at ``address`` of ``unit``."""

    unit: int
    kind: Literal["coil", "register"]
    address: int
    value: int


def parse_modbus_relay(table: Mapping[str, object], where: str = "relay") -> ModbusRelay:
    """The ``relay`` table of a Modbus profile (module docstring). ``where`` prefixes every
    error with the key path, so the message points at the line to fix."""
    if not isinstance(table, Mapping):
        raise ModbusRelayError(f"{where} must be a table such as {{ coil = 16 }} or "
                               f"{{ register = 0x0100, open = 0, close = 1 }}, got {table!r}")

    def integer(key: str, low: int, high: int) -> int:
        value = table.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModbusRelayError(f"{where}.{key} must be an integer {low}..{high}, got {value!r}")
        return value

    has_coil, has_register = "coil" in table, "register" in table
    if has_coil == has_register:
        raise ModbusRelayError(f"{where} needs exactly one of coil = N or register = N")
    if has_coil:
        unknown = sorted(set(table) - {"coil", "open"})
        if unknown:
            raise ModbusRelayError(f"{where}: unknown key(s) {unknown} for a coil relay; "
                                   "allowed: coil, open")
        inverted = table.get("open", False)
        if not isinstance(inverted, bool):
            raise ModbusRelayError(f"{where}.open must be true or false (the coil value that "
                                   f"opens the relay), got {inverted!r}")
        open_value = 1 if inverted else 0
        return ModbusRelay("coil", integer("coil", 0, 0xFFFF), open_value, 1 - open_value)
    unknown = sorted(set(table) - {"register", "open", "close", "allow_close"})
    if unknown:
        raise ModbusRelayError(f"{where}: unknown key(s) {unknown} for a register relay; "
                               "allowed: register, open, close, allow_close")
    open_value = integer("open", 0, 0xFFFF)
    close_value = integer("close", 0, 0xFFFF)
    allow = integer("allow_close", 0, 0xFFFF) if "allow_close" in table else None
    if len({open_value, close_value} | ({allow} if allow is not None else set())) != (3 if allow is not None else 2):
        raise ModbusRelayError(f"{where}: open, close and allow_close must be different values")
    return ModbusRelay("register", integer("register", 0, 0xFFFF), open_value, close_value, allow)
