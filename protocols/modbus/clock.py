"""A Modbus meter's clock, as a profile maps it: six consecutive registers.

Modbus itself has no clock; meters that keep one expose it in vendor registers. The layout this
module reads is the common one — year (four digits), month, day, hour, minute, second, one
unsigned 16-bit register each, local time — declared in a profile's top-level ``clock`` table::

    clock = { holding = 0x0100 }      # or { input = 0x0100 }

The gateway reads it at ``[clock] read_interval_s`` like a DL/T 645 meter's clock and publishes
the offset (docs/clock.md). Setting a Modbus meter's clock is not supported: there is no
standard register for it, so the time-sync rule says ``no_route``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["CLOCK_WORDS", "ModbusClock", "ModbusClockError", "decode_clock", "encode_clock",
           "parse_modbus_clock"]

#: Year, month, day, hour, minute, second.
CLOCK_WORDS: Final = 6


class ModbusClockError(ValueError):
    """A ``clock`` table that cannot be used; the message names the key and what is expected."""


@dataclass(frozen=True, slots=True)
class ModbusClock:
    """Where the clock lives: ``function`` (``"holding"`` or ``"input"`` registers, the
    profile's spelling) and ``address``."""

    function: Literal["holding", "input"]
    address: int

    @property
    def end(self) -> int:
        return self.address + CLOCK_WORDS


def parse_modbus_clock(table: object, where: str = "clock") -> ModbusClock:
    """The ``clock`` table of a Modbus profile (module docstring)."""
    example = "{ holding = 0x0100 } or { input = 0x0100 }"
    if not isinstance(table, Mapping) or len(table) != 1:
        raise ModbusClockError(f"{where} must be a table with one key, such as {example}; "
                               f"got {table!r}")
    (key, address), = table.items()
    if key not in ("holding", "input"):
        raise ModbusClockError(f"{where}.{key}: unknown key (allowed here: holding, input)")
    if isinstance(address, bool) or not isinstance(address, int) or \
            not 0 <= address <= 0x10000 - CLOCK_WORDS:
        raise ModbusClockError(f"{where}.{key}: expected a register address 0..0xFFFA (six "
                               f"registers: year, month, day, hour, minute, second), got "
                               f"{address!r}")
    return ModbusClock("holding" if key == "holding" else "input", address)


def decode_clock(words: Sequence[int]) -> dt.datetime:
    """The meter's local time from its six clock registers; a value that is no date is a
    ValueError naming the registers."""
    if len(words) != CLOCK_WORDS:
        raise ValueError(f"a clock is {CLOCK_WORDS} registers, got {len(words)}")
    try:
        year, month, day, hour, minute, second = words
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ValueError(f"clock registers {list(words)} are not a date and time: {exc}") from None


def encode_clock(moment: dt.datetime) -> list[int]:
    """The six registers a meter shows for local time ``moment`` (simulators, tests)."""
    return [moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second]
