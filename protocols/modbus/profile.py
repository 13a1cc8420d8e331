"""Modbus meter profiles: the register map of one meter model, as typed data.

The TOML schema (``kind = "modbus"``) follows how vendors publish their maps — sections of
registers that share a function, a data type and often a base address::

    kind = "modbus"
    vendor = "Eastron"
    model = "SDM630-Modbus V2"
    max_registers_per_request = 80   # the meter's own limit (Modbus allows at most 125)
    max_gap = 48                     # unlisted registers the meter lets us read through

    [defaults]                       # encoding keys inherited by every group and register
    function = "input"               # input (FC 04) | holding (FC 03)
    type = "float32"                 # int16 uint16 int32 uint32 int64 uint64 float32 float64
    word_order = "big"               # big: high word first | little: low word first

    [[groups]]
    name = "energy"
    base = 0x401E                    # registers below give `offset`; without base, `address`
    scale = "1"
    registers = [
      { quantity = "energy.active.import.total", offset = 0x00, unit = "kWh" },
    ]

A meter that keeps a clock maps its six registers in a top-level ``clock`` table
(``clock = { holding = 0x0F00 }``; see :mod:`protocols.modbus.clock`).

A meter with a load relay declares it in a top-level ``relay`` table (coil or holding register
and the values meaning open/closed; see :mod:`protocols.modbus.relay`)::

    relay = { coil = 0x0000 }

Without it the gateway refuses trip/close/allow_close commands for the meter.

Encoding keys (``function type word_order scale resolution measurement``) may be set in
``[defaults]``, on a group or on a register; the innermost wins.

* ``scale`` — multiplier from the raw register value to the quantity's canonical unit
  (:func:`protocols.profiles.canonical_unit`): W → kW is ``"0.001"``. Write it as a string to
  keep it exact; TOML floats are converted through their shortest repr.
* ``measurement`` — ``register`` (an accumulating energy register: decoded as an exact
  :class:`~decimal.Decimal`) or ``instantaneous`` (decoded as a float). Defaults to
  ``register`` for ``energy.*`` quantities.
* ``resolution`` — a power of ten the decoded value is rounded to. Registers default to
  ``0.01`` (the 0.01 kWh of DL/T 645 and of most meter displays); instantaneous values are not
  rounded unless a resolution is given.
* ``unit`` — optional; when given it must equal the canonical unit, which catches a W/kW mix-up.

Byte order inside a 16-bit word is always big-endian (Modbus application protocol §4.2); only
the order of the words varies between vendors.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, Literal

from protocols.modbus.clock import ModbusClock, ModbusClockError, parse_modbus_clock
from protocols.modbus.relay import ModbusRelay, ModbusRelayError, parse_modbus_relay
from protocols.profiles import (
    ProfileError,
    ProfileIssue,
    TableReader,
    canonical_unit,
    check_quantity_name,
)

__all__ = [
    "MODBUS_MAX_READ_REGISTERS",
    "DataType",
    "Measurement",
    "ModbusProfile",
    "RegisterFunction",
    "RegisterSpec",
    "WordOrder",
    "parse_modbus_profile",
]

#: Modbus application protocol §6.3/§6.4: a read of holding or input registers returns at most
#: 125 registers (the 253-byte PDU limit).
MODBUS_MAX_READ_REGISTERS = 125

#: Energy registers are published to 0.01 kWh unless the profile says otherwise.
DEFAULT_REGISTER_RESOLUTION = Decimal("0.01")


class RegisterFunction(enum.Enum):
    """Which register table a quantity lives in; the value is the profile spelling."""

    INPUT = "input"
    HOLDING = "holding"

    @property
    def read_code(self) -> int:
        """The Modbus function code that reads this table (04 input, 03 holding)."""
        return 4 if self is RegisterFunction.INPUT else 3


class DataType(enum.Enum):
    """How the register words of one value are interpreted."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def words(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return _TYPE_LAYOUT[self][1]

    @property
    def struct_code(self) -> str:
        """:mod:`struct` code of the value when its bytes are in big-endian order."""
        return _TYPE_LAYOUT[self][0]

    @property
    def is_float(self) -> bool:
        """True for IEEE 754 types, which can hold NaN and infinities."""
        return self in (DataType.FLOAT32, DataType.FLOAT64)

    @property
    def int_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer (integer types only)."""
        bits = 16 * self.words
        if self.struct_code.islower():
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1


_TYPE_LAYOUT: dict[DataType, tuple[str, int]] = {
    DataType.INT16: ("h", 1),
    DataType.UINT16: ("H", 1),
    DataType.INT32: ("i", 2),
    DataType.UINT32: ("I", 2),
    DataType.INT64: ("q", 4),
    DataType.UINT64: ("Q", 4),
    DataType.FLOAT32: ("f", 2),
    DataType.FLOAT64: ("d", 4),
}
assert all(struct.calcsize(">" + code) == 2 * words for code, words in _TYPE_LAYOUT.values())


class WordOrder(enum.Enum):
    """Order of the 16-bit words of a multi-register value on the wire."""

    BIG = "big"  # most significant word first ("ABCD"), the Modbus convention
    LITTLE = "little"  # least significant word first ("CDAB")


class Measurement(enum.Enum):
    """Whether a quantity accumulates (an energy register) or is a momentary value."""

    REGISTER = "register"
    INSTANTANEOUS = "instantaneous"


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where one quantity lives and how to turn its registers into a value.

    Fields: ``quantity`` (vocabulary name), ``function``, ``address`` (0-based protocol address,
    as on the wire — not the 3xxxx/4xxxx "register number"), ``data_type``, ``word_order``,
    ``scale`` (raw → canonical unit), ``unit`` (canonical unit), ``measurement``,
    ``resolution`` (power of ten the value is rounded to, or None).
    """

    quantity: str
    function: RegisterFunction
    address: int
    data_type: DataType
    word_order: WordOrder = WordOrder.BIG
    scale: Decimal = Decimal(1)
    unit: str = ""
    measurement: Measurement = Measurement.INSTANTANEOUS
    resolution: Decimal | None = None

    def __post_init__(self) -> None:
        if self.address < 0 or self.end > 0x10000:
            raise ValueError(f"{self.quantity}: address {self.address:#06x} + {self.words} words "
                             "is outside the Modbus address space 0x0000..0xFFFF")
        if not self.scale.is_finite() or self.scale == 0:
            raise ValueError(f"{self.quantity}: scale must be a finite non-zero number")
        if self.resolution is not None and not _is_power_of_ten(self.resolution):
            raise ValueError(f"{self.quantity}: resolution {self.resolution} is not a power of ten")

    @property
    def words(self) -> int:
        """Number of registers the value occupies."""
        return self.data_type.words

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.data_type.words

    @property
    def is_register(self) -> bool:
        """True for accumulating registers (decoded as exact Decimal)."""
        return self.measurement is Measurement.REGISTER


def _is_power_of_ten(value: Decimal) -> bool:
    return value.is_finite() and value > 0 and value.normalize().as_tuple().digits == (1,)


@dataclass(frozen=True, slots=True)
class ModbusProfile:
    """A Modbus meter model's register map.

    Fields: ``name``; ``registers`` (sorted by function then address; no two overlap and no
    quantity appears twice); ``max_registers_per_request`` (the meter's limit, ≤ 125);
    ``max_gap`` (how many unlisted registers a read may span between two listed ones — the
    meter must answer for them rather than raise exception 02); descriptive ``description``,
    ``vendor``, ``model``; ``source`` (where it was loaded from); ``relay`` (the load relay's
    coil or register, None for a meter without one — it cannot be tripped); ``clock`` (the
    six registers of the meter's clock, :mod:`protocols.modbus.clock`, None: not read).
    """

    kind: ClassVar[Literal["modbus"]] = "modbus"
    name: str
    registers: tuple[RegisterSpec, ...]
    max_registers_per_request: int = MODBUS_MAX_READ_REGISTERS
    max_gap: int = 0
    description: str = ""
    vendor: str = ""
    model: str = ""
    source: str = "<memory>"
    relay: ModbusRelay | None = None
    clock: ModbusClock | None = None
    _by_quantity: dict[str, RegisterSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.registers, key=_spec_order))
        object.__setattr__(self, "registers", ordered)
        problems = layout_problems(ordered)
        if not 1 <= self.max_registers_per_request <= MODBUS_MAX_READ_REGISTERS:
            problems.append(f"max_registers_per_request {self.max_registers_per_request} is outside "
                            f"1..{MODBUS_MAX_READ_REGISTERS}")
        widest = max((spec.words for spec in ordered), default=1)
        if self.max_registers_per_request < widest:
            problems.append(f"max_registers_per_request {self.max_registers_per_request} is smaller "
                            f"than a {widest}-register value")
        if not 0 <= self.max_gap <= MODBUS_MAX_READ_REGISTERS:
            problems.append(f"max_gap {self.max_gap} is outside 0..{MODBUS_MAX_READ_REGISTERS}")
        if problems:
            raise ProfileError([ProfileIssue(self.source, p) for p in problems])
        object.__setattr__(self, "_by_quantity", {spec.quantity: spec for spec in ordered})

    @property
    def quantities(self) -> tuple[str, ...]:
        """Quantity names in register order."""
        return tuple(spec.quantity for spec in self.registers)

    def spec(self, quantity: str) -> RegisterSpec:
        """The register spec of ``quantity``; KeyError names the profile when it has none."""
        try:
            return self._by_quantity[quantity]
        except KeyError:
            raise KeyError(f"profile {self.name!r} has no quantity {quantity!r}") from None

    def __contains__(self, quantity: object) -> bool:
        return quantity in self._by_quantity


def _spec_order(spec: RegisterSpec) -> tuple[str, int]:
    return spec.function.value, spec.address


def layout_problems(specs: Sequence[RegisterSpec]) -> list[str]:
    """Overlapping registers and repeated quantities in ``specs`` (sorted by function, address)."""
    problems: list[str] = []
    seen: dict[str, RegisterSpec] = {}
    previous: RegisterSpec | None = None
    for spec in specs:
        if spec.quantity in seen:
            problems.append(f"quantity {spec.quantity} appears twice (at {seen[spec.quantity].address:#06x} "
                            f"and {spec.address:#06x})")
        seen[spec.quantity] = spec
        if previous is not None and previous.function is spec.function and spec.address < previous.end:
            problems.append(f"{spec.quantity} at {spec.address:#06x} overlaps {previous.quantity} "
                            f"({previous.function.value} {previous.address:#06x}..{previous.end - 1:#06x})")
        if previous is None or previous.function is not spec.function or spec.end > previous.end:
            previous = spec
    return problems


# --------------------------------------------------------------------------------------------
# TOML parsing
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Encoding:
    """Encoding keys inherited from [defaults] → group → register (None: not set at this level)."""

    function: RegisterFunction | None = None
    data_type: DataType | None = None
    word_order: WordOrder | None = None
    scale: Decimal | None = None
    resolution: Decimal | None = None
    measurement: Measurement | None = None

    def over(self, outer: _Encoding) -> _Encoding:
        """This level's keys, falling back to ``outer``'s."""
        return _Encoding(
            function=self.function or outer.function,
            data_type=self.data_type or outer.data_type,
            word_order=self.word_order or outer.word_order,
            scale=self.scale if self.scale is not None else outer.scale,
            resolution=self.resolution if self.resolution is not None else outer.resolution,
            measurement=self.measurement or outer.measurement,
        )


def _read_encoding(reader: TableReader) -> _Encoding:
    function = reader.choice("function", [f.value for f in RegisterFunction])
    data_type = reader.choice("type", [t.value for t in DataType])
    word_order = reader.choice("word_order", [w.value for w in WordOrder])
    measurement = reader.choice("measurement", [m.value for m in Measurement])
    scale = reader.decimal("scale")
    if scale is not None and scale == 0:
        reader.error("scale", "must not be zero")
        scale = None
    resolution = reader.decimal("resolution")
    if resolution is not None and not _is_power_of_ten(resolution):
        reader.error("resolution", f"{resolution} is not a power of ten such as \"0.01\" or \"1\"")
        resolution = None
    return _Encoding(
        function=RegisterFunction(function) if function else None,
        data_type=DataType(data_type) if data_type else None,
        word_order=WordOrder(word_order) if word_order else None,
        scale=scale,
        resolution=resolution,
        measurement=Measurement(measurement) if measurement else None,
    )


def parse_modbus_profile(top: TableReader, name: str, *, description: str = "", vendor: str = "",
                         model: str = "") -> ModbusProfile:
    """Build a :class:`ModbusProfile` from the top-level table of a ``kind = "modbus"`` file.

    Called by :func:`protocols.profiles.parse_profile_data`, which has already read the common
    keys. Raises :class:`ProfileError` listing every problem.
    """
    max_count = top.integer("max_registers_per_request", default=MODBUS_MAX_READ_REGISTERS,
                            minimum=1, maximum=MODBUS_MAX_READ_REGISTERS)
    max_gap = top.integer("max_gap", default=0, minimum=0, maximum=MODBUS_MAX_READ_REGISTERS)
    defaults_reader = top.table("defaults")
    defaults = _Encoding()
    if defaults_reader is not None:
        defaults = _read_encoding(defaults_reader)
        defaults_reader.finish()
    relay: ModbusRelay | None = None
    relay_table = top.raw("relay")
    if relay_table is not None:
        try:
            relay = parse_modbus_relay(relay_table, "relay")  # type: ignore[arg-type]
        except ModbusRelayError as exc:
            top.error(None, str(exc))
    clock: ModbusClock | None = None
    clock_table = top.raw("clock")
    if clock_table is not None:
        try:
            clock = parse_modbus_clock(clock_table, "clock")
        except ModbusClockError as exc:
            top.error(None, str(exc))
    groups = top.tables("groups", required=True)
    if top.has("groups") and not groups:
        top.error("groups", "must contain at least one group of registers")

    specs: list[tuple[RegisterSpec, str]] = []
    for group in groups:
        group.string("name")
        group.string("description")
        base = group.integer("base", minimum=0, maximum=0xFFFF)
        group_encoding = _read_encoding(group).over(defaults)
        registers = group.tables("registers", required=True)
        for register in registers:
            spec = _read_register(register, base, group_encoding)
            register.finish()
            if spec is not None:
                specs.append((spec, register.path))
        group.finish()
    top.finish()

    issues = top.issues
    if not issues:
        ordered = sorted(specs, key=lambda item: _spec_order(item[0]))
        for problem in layout_problems([spec for spec, _ in ordered]):
            issues.append(ProfileIssue(f"{top.source}: groups", problem))
        if clock is not None:
            for spec, path in specs:
                if spec.function.value == clock.function and spec.address < clock.end \
                        and clock.address < spec.end:
                    issues.append(ProfileIssue(
                        f"{top.source}: clock.{clock.function}",
                        f"the clock's registers {clock.address:#06x}..{clock.end - 1:#06x} "
                        f"overlap {spec.quantity} ({path})"))
        if relay is not None and relay.kind == "register":
            # The relay register is written; a measured quantity in the same holding register
            # would be overwritten by a trip (or is a typo in one of the two addresses).
            for spec, path in specs:
                if (spec.function is RegisterFunction.HOLDING
                        and spec.address <= relay.address < spec.end):
                    issues.append(ProfileIssue(
                        f"{top.source}: relay.register",
                        f"{relay.address:#06x} is also holding register {spec.quantity} "
                        f"({path}); the relay needs a register of its own"))
    if issues:
        raise ProfileError(issues)
    return ModbusProfile(
        name=name,
        registers=tuple(spec for spec, _ in specs),
        max_registers_per_request=max_count if max_count is not None else MODBUS_MAX_READ_REGISTERS,
        max_gap=max_gap if max_gap is not None else 0,
        description=description,
        vendor=vendor,
        model=model,
        source=top.source,
        relay=relay,
        clock=clock,
    )


def _read_register(reader: TableReader, base: int | None, outer: _Encoding) -> RegisterSpec | None:
    quantity = reader.string("quantity", required=True)
    if quantity is not None and (problem := check_quantity_name(quantity)):
        reader.error("quantity", problem)
        quantity = None
    reader.string("description")
    if base is None:
        address = reader.integer("address", required=True, minimum=0, maximum=0xFFFF)
        if reader.has("offset"):
            reader.integer("offset")
            reader.error("offset", "only registers of a group with a base have an offset; use address")
    else:
        offset = reader.integer("offset", required=True, minimum=0, maximum=0xFFFF)
        if reader.has("address"):
            reader.integer("address")
            reader.error("address", f"this group has base = {base:#06x}; give offset (address = base + offset)")
        address = None if offset is None else base + offset
    encoding = _read_encoding(reader).over(outer)
    unit = reader.string("unit")
    if quantity is None or address is None:
        return None
    expected_unit = canonical_unit(quantity)
    if unit is None:
        unit = expected_unit if expected_unit is not None else ""
    elif expected_unit is not None and unit != expected_unit:
        shown = repr(expected_unit) if expected_unit else '"" (dimensionless)'
        reader.error("unit", f"{quantity} is published in {shown}, not {unit!r}; convert with scale "
                             "(e.g. W → kW is scale = \"0.001\", 0.1 W → kW is scale = \"0.0001\")")
        return None
    missing = [key for key, value in (("function", encoding.function), ("type", encoding.data_type))
               if value is None]
    for key in missing:
        reader.error(key, f"is not set for {quantity}: give {key} in [defaults], on the group or here")
    if encoding.function is None or encoding.data_type is None:
        return None
    measurement = encoding.measurement or (
        Measurement.REGISTER if quantity.startswith("energy.") else Measurement.INSTANTANEOUS)
    resolution = encoding.resolution
    if resolution is None and measurement is Measurement.REGISTER:
        resolution = DEFAULT_REGISTER_RESOLUTION
    if address + encoding.data_type.words > 0x10000:
        reader.error("address" if base is None else "offset",
                     f"{encoding.data_type.value} at {address:#06x} runs past register 0xFFFF")
        return None
    return RegisterSpec(
        quantity=quantity,
        function=encoding.function,
        address=address,
        data_type=encoding.data_type,
        word_order=encoding.word_order or WordOrder.BIG,
        scale=encoding.scale if encoding.scale is not None else Decimal(1),
        unit=unit,
        measurement=measurement,
        resolution=resolution,
    )
