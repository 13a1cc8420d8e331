"""Sans-IO Modbus register mapping: which reads to send, and what the registers mean.

Three functions, no I/O:

* :func:`plan_reads` turns a profile into as few read requests as the meter allows. On a
  half-duplex RS-485 bus every request costs a turnaround (the 3.5-character silence, the
  meter's own latency — tens of milliseconds) while an extra register costs two bytes
  (about 2 ms at 9600 baud), so reading through a gap is usually cheaper than a second request.
  The profile says how large a gap its meter tolerates (``max_gap``) and how many registers it
  answers at once (``max_registers_per_request``).
* :func:`decode_block` turns the registers of one reply into :class:`Reading` values.
* :func:`encode_values` goes the other way, for simulators and tests.

**Exact energy registers.** Energy travels to the head end as an exact decimal (DESIGN §4), but
many meters publish it as an IEEE 754 float32. A float32 is converted to a Decimal through the
shortest repr of the double holding it (``Decimal(repr(f))`` — exact, no binary noise added),
multiplied by the profile's scale and quantised (round-half-even) to the profile's resolution,
0.01 kWh by default. A float32 has a 24-bit significand: below 131 072 kWh its spacing is at
most 0.0078 kWh, so the register survives the trip to 0.01 kWh exactly; above that the meter's
own float cannot represent every 0.01 kWh and the decoded value is the nearest one it could.
(The shortest repr is the decimal a person would write for the float; for a float64 beyond 2**53
it names the same double without being its exact binary expansion.)

**Bad values do not crash.** A float register holding NaN or ±infinity (meters send NaN for
"not measured") decodes to a :class:`Reading` with ``value=None`` and a :class:`DecodeProblem`;
the other quantities of the reply are unaffected.
"""

from __future__ import annotations

import enum
import functools
import math
import operator
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from typing import Any

from protocols.modbus.errors import RegisterDecodeError, RegisterEncodeError
from protocols.modbus.profile import (
    MODBUS_MAX_READ_REGISTERS,
    ModbusProfile,
    RegisterFunction,
    RegisterSpec,
    WordOrder,
)

__all__ = [
    "DecodeProblem",
    "ReadBlock",
    "Reading",
    "RegisterImage",
    "decode_block",
    "decode_register",
    "decode_reply",
    "decode_reply_columns",
    "decode_values",
    "encode_register",
    "encode_values",
    "plan_reads",
]

#: Enough digits for any float32 or 64-bit integer times a scale, quantised to a resolution.
#: A float64 near its maximum needs more and is reported as OUT_OF_RANGE rather than rounded.
_DECODE_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)  # traps InvalidOperation
#: struct formats for 1..4 big-endian 16-bit words (every data type is at most 4 words).
_WORDS_FORMAT = {n: f">{n}H" for n in range(1, 5)}

#: (function, address) → register word, as a simulator serves it.
RegisterImage = dict[tuple[RegisterFunction, int], int]


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of ``function`` from ``start``.

    Fields: ``function``, ``start``, ``count``, ``specs`` (the quantities it carries, in address
    order). ``function.read_code`` is the Modbus function code to send.
    """

    function: RegisterFunction
    start: int
    count: int
    specs: tuple[RegisterSpec, ...]

    @property
    def quantities(self) -> tuple[str, ...]:
        """Names of the quantities this block carries."""
        return tuple(spec.quantity for spec in self.specs)

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.start + self.count


class DecodeProblem(enum.Enum):
    """Why a register could not give a value."""

    NOT_A_NUMBER = "not_a_number"
    INFINITE = "infinite"
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded quantity.

    Fields: ``quantity``; ``value`` — :class:`~decimal.Decimal` for registers (exact),
    ``float`` for instantaneous values, None when ``problem`` is set; ``unit``; ``raw`` — the
    register words as received (for logs and evidence); ``problem``.
    """

    quantity: str
    value: Decimal | float | None
    unit: str
    raw: tuple[int, ...]
    problem: DecodeProblem | None = None

    @property
    def quality(self) -> str:
        """``A`` (actual) for a value, ``N`` (null) when the register held none (NEM12 letters)."""
        return "A" if self.problem is None else "N"


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def plan_reads(
    profile: ModbusProfile,
    *,
    max_gap: int | None = None,
    max_count: int | None = None,
    quantities: Collection[str] | None = None,
) -> list[ReadBlock]:
    """The fewest read requests that fetch ``quantities`` (default: all) of ``profile``.

    Registers of one function are merged left to right while the block stays within
    ``max_count`` registers (default and ceiling: the profile's ``max_registers_per_request``,
    itself at most 125) and the unlisted registers between two quantities number at most
    ``max_gap`` (default: the profile's). Starting a new block only when the next quantity
    cannot join the current one gives the minimum number of blocks: any plan must start a block
    at the first quantity, and a block starting there reaches no further than the greedy one.

    Raises ValueError for a limit that cannot work or a quantity the profile does not have.
    """
    gap = profile.max_gap if max_gap is None else max_gap
    count_limit = profile.max_registers_per_request if max_count is None else max_count
    if gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {gap}")
    if not 1 <= count_limit <= MODBUS_MAX_READ_REGISTERS:
        raise ValueError(f"max_count must be 1..{MODBUS_MAX_READ_REGISTERS}, got {count_limit}")
    if quantities is None:
        specs = list(profile.registers)
    else:
        unknown = sorted(set(quantities) - set(profile.quantities))
        if unknown:
            raise ValueError(f"profile {profile.name!r} has no quantity {', '.join(unknown)}")
        wanted = set(quantities)
        specs = [spec for spec in profile.registers if spec.quantity in wanted]
    widest = max((spec.words for spec in specs), default=1)
    if count_limit < widest:
        raise ValueError(f"max_count {count_limit} cannot hold a {widest}-register value")

    blocks: list[ReadBlock] = []
    current: list[RegisterSpec] = []
    start = end = 0
    for spec in specs:  # profile.registers is sorted by (function, address)
        fits = (
            current
            and spec.function is current[0].function
            and spec.address - end <= gap
            and max(end, spec.end) - start <= count_limit
        )
        if fits:
            current.append(spec)
            end = max(end, spec.end)
            continue
        if current:
            blocks.append(ReadBlock(current[0].function, start, end - start, tuple(current)))
        current, start, end = [spec], spec.address, spec.end
    if current:
        blocks.append(ReadBlock(current[0].function, start, end - start, tuple(current)))
    return blocks


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_block(block: ReadBlock, registers: Sequence[int]) -> dict[str, Reading]:
    """Decode the registers a meter returned for ``block`` into one reading per quantity.

    Raises :class:`RegisterDecodeError` when the reply cannot be the answer to this block
    (wrong length, a value outside 0..0xFFFF). A NaN or infinite float is not an error: its
    reading carries a :class:`DecodeProblem` instead of a value.
    """
    data = _block_bytes(block, registers)
    readings: dict[str, Reading] = {}
    for plan in _block_plans(block):
        spec = plan.spec
        raw = tuple(registers[plan.word_offset : plan.word_offset + plan.words])
        value = plan.value(data)
        if type(value) is DecodeProblem:
            readings[spec.quantity] = Reading(spec.quantity, None, spec.unit, raw, value)
        else:
            readings[spec.quantity] = Reading(spec.quantity, value, spec.unit, raw)  # type: ignore[arg-type]
    return readings


def decode_values(block: ReadBlock, registers: Sequence[int]) -> list[tuple[RegisterSpec, Decimal | float | DecodeProblem]]:
    """:func:`decode_block` for a poller: ``(spec, value or problem)`` per quantity in address
    order, without a :class:`Reading` (and its copy of the raw words) per value — a gateway
    polling a hundred meters a second decodes a thousand values a second and needs only the
    value. Same values, same errors."""
    return decode_reply(block, _block_bytes(block, registers))


def decode_reply(block: ReadBlock, data: bytes) -> list[tuple[RegisterSpec, Decimal | float | DecodeProblem]]:
    """:func:`decode_values` from the reply's register bytes as they came off the wire (2 per
    register, big-endian): what a client that kept them passes, skipping the round trip
    through a list of ints. Raises :class:`RegisterDecodeError` for a reply of the wrong size."""
    return list(zip(block.specs, decode_reply_columns(block, data)[2], strict=True))


def decode_reply_columns(block: ReadBlock, data: bytes) -> tuple[
        tuple[str, ...], tuple[str, ...], list[Decimal | float | DecodeProblem]]:
    """:func:`decode_reply` as three columns in the block's address order: the quantities,
    their units, and the values (or problems) — for a poller that makes its own record of each
    value (a hundred meters a second: no pair per value, and the columns zip into records in
    one C loop). Same values, same errors."""
    if len(data) != 2 * block.count:
        raise RegisterDecodeError(
            f"{block.function.value} registers {block.start:#06x}+{block.count}: the meter returned "
            f"{len(data) / 2:g} registers, expected {block.count}"
        )
    entry = _block_plan(block)
    whole = entry.whole
    if whole is None:
        values = [plan.value(data) for plan in entry.plans]
    else:
        # Every number in one C call, and each finished by a C call where one gives the same
        # (:meth:`_DecodePlan._finisher`).
        values = list(map(operator.call, entry.finishers, whole.unpack(data)))
    return entry.quantities, entry.units, values


def _block_bytes(block: ReadBlock, registers: Sequence[int]) -> bytes:
    """The reply as big-endian bytes, after checking it can be the answer to ``block``."""
    if len(registers) != block.count:
        raise RegisterDecodeError(
            f"{block.function.value} registers {block.start:#06x}+{block.count}: the meter returned "
            f"{len(registers)} registers, expected {block.count}"
        )
    try:
        # One C call checks every word (an int in 0..0xFFFF) and gives the reply's bytes.
        data = struct.pack(f">{block.count}H", *registers)
    except struct.error:
        data = b""
    if not data or bool in map(type, registers):
        for index, word in enumerate(registers):
            if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
                raise RegisterDecodeError(
                    f"{block.function.value} register {block.start + index:#06x}: {word!r} is not a 16-bit word"
                )
    return data


def decode_register(spec: RegisterSpec, words: Sequence[int]) -> Reading:
    """Decode the words of one quantity (in wire order). Raises :class:`RegisterDecodeError`."""
    if len(words) != spec.words:
        raise RegisterDecodeError(f"{spec.quantity}: {len(words)} register(s) given, {spec.words} needed")
    raw = tuple(int(w) for w in words)
    try:
        data = struct.pack(_WORDS_FORMAT[spec.words], *raw)
    except struct.error as exc:
        raise RegisterDecodeError(f"{spec.quantity}: register value {raw} is not a 16-bit word") from exc
    value = _DecodePlan(spec, 0).value(data)
    if type(value) is DecodeProblem:
        return Reading(spec.quantity, None, spec.unit, raw, value)
    return Reading(spec.quantity, value, spec.unit, raw)  # type: ignore[arg-type]


def _power_of_ten_digits(resolution: Decimal | None) -> int | None:
    """``k`` when ``resolution`` is exactly 10**-k (0 <= k <= 9), else None."""
    if resolution is None:
        return None
    sign, digits, exponent = resolution.as_tuple()
    if sign or digits != (1,) or not isinstance(exponent, int) or not -9 <= exponent <= 0:
        return None
    return -exponent


def _power_of_ten_divisor(scale: Decimal) -> int | None:
    """``10**k`` when ``scale`` is exactly 10**-k (0 <= k <= 22), else None."""
    sign, digits, exponent = scale.as_tuple()
    if sign or digits != (1,) or not isinstance(exponent, int) or not -22 <= exponent <= 0:
        return None
    return 10 ** -exponent  # type: ignore[no-any-return]


class _DecodePlan:
    """What decoding one quantity needs, worked out once per profile register instead of once
    per value: a gateway decodes the same few dozen registers thousands of times a minute, and
    re-deriving struct formats, enum properties and a decimal context per value cost more than
    the decoding itself (measured: 89 µs for a 10-quantity block before, see
    docs/performance.md)."""

    __slots__ = (
        "_byte_offset",
        "_int_divisor",
        "_is_float",
        "_is_register",
        "_plain_float",
        "_resolution",
        "_reverse",
        "_round_digits",
        "_scale",
        "_value_format",
        "_words_format",
        "finisher",
        "spec",
        "word_offset",
        "words",
    )

    def __init__(self, spec: RegisterSpec, word_offset: int) -> None:
        self.spec = spec
        self.words = spec.words
        self.word_offset = word_offset
        self._byte_offset = 2 * word_offset
        self._words_format = struct.Struct(_WORDS_FORMAT[spec.words])
        self._value_format = struct.Struct(">" + spec.data_type.struct_code)
        self._reverse = spec.word_order is not WordOrder.BIG
        self._is_float = spec.data_type.is_float
        self._is_register = spec.is_register
        self._scale = None if spec.scale == 1 else spec.scale
        self._resolution = spec.resolution
        # Instantaneous float, no scale, no rounding: float(Decimal(repr(x)) * 1) == x exactly
        # (the shortest repr round-trips), so the value is the float itself.
        self._plain_float = (self._is_float and not self._is_register
                             and self._scale is None and self._resolution is None)
        # An instantaneous float32 rounded to 10**-k: round(x, k) gives exactly the double of
        # Decimal(repr(x)).quantize(10**-k, ROUND_HALF_EVEN) at a fifth of its cost. The two
        # could differ only where repr(x) is a decimal tie that x itself is not; a float32 has
        # 24 significant bits, too few to sit within half a double ulp of such a short decimal
        # without being it (checked over every kind of float32 in tests/test_register_map.py).
        self._round_digits = (
            _power_of_ten_digits(spec.resolution)
            if (spec.data_type.struct_code == "f" and not self._is_register and self._scale is None)
            else None
        )

        # An instantaneous integer scaled by 10**-k (k = 0..22), not rounded further: the
        # Decimal rule's product n * 10**-k is exact (60 digits), and float() of it is the
        # correctly rounded double of n / 10**k — which is what Python's int / int gives
        # (correctly rounded too). So the value is n / 10**k, with no Decimal per value
        # (tested against the Decimal rule in tests/test_register_map.py).
        self._int_divisor = (
            _power_of_ten_divisor(spec.scale)
            if (not self._is_float and not self._is_register and self._resolution is None)
            else None
        )
        self.finisher = self._finisher(spec)

    def _finisher(self, spec: RegisterSpec) -> Callable[[Any], Decimal | float | DecodeProblem]:
        """:meth:`finish` as the cheapest callable that gives the same for every number of this
        quantity's type, for :func:`decode_reply_columns` to call on each unpacked number.

        An instantaneous integer scaled by 10**-k: ``n / 10**k`` (the int's own true division,
        as :meth:`finish` does). An integer register scaled by 10**-k (k = 0..22) and rounded to
        10**-k or not at all: the Decimal rule's product ``n × 10**-k`` is exact (a 64-bit
        count has at most 20 digits, the context 60), its exponent is already -k, so the
        quantize that follows changes nothing — the value is the product, which
        ``Context.multiply(scale, n)`` gives in one C call (the product of two decimals does not
        depend on their order; ``Decimal(n)`` itself for k = 0). Anything else: :meth:`finish`.
        """
        if self._int_divisor is not None:
            return self._int_divisor.__rtruediv__
        if (self._is_register and not self._is_float
                and _power_of_ten_divisor(spec.scale) is not None
                and (spec.resolution is None
                     or spec.resolution.as_tuple().exponent == spec.scale.as_tuple().exponent)):
            if self._scale is None:
                return Decimal
            return functools.partial(_DECODE_CONTEXT.multiply, self._scale)
        return self.finish

    def value(self, data: bytes) -> Decimal | float | DecodeProblem:
        """The value of this quantity in ``data`` (the block's bytes, big-endian words)."""
        if self._reverse:
            ordered = self._words_format.unpack_from(data, self._byte_offset)[::-1]
            (number,) = self._value_format.unpack(self._words_format.pack(*ordered))
        else:
            (number,) = self._value_format.unpack_from(data, self._byte_offset)
        return self.finish(number)

    def finish(self, number: int | float) -> Decimal | float | DecodeProblem:
        """The value of this quantity from the number its words hold (in value order)."""
        if self._is_float:
            if math.isnan(number):
                return DecodeProblem.NOT_A_NUMBER
            if math.isinf(number):
                return DecodeProblem.INFINITE
            if self._plain_float:
                return number
            if self._round_digits is not None:
                return round(number, self._round_digits)
            value = Decimal(repr(number))
        else:
            if self._int_divisor is not None:
                return number / self._int_divisor
            value = Decimal(number)
        try:
            if self._scale is not None:
                value = _DECODE_CONTEXT.multiply(value, self._scale)
            if self._resolution is not None:
                value = value.quantize(self._resolution, context=_DECODE_CONTEXT)
        except InvalidOperation:
            return DecodeProblem.OUT_OF_RANGE
        if self._is_register:
            return value
        return float(value)


#: Decode plans per read block, keyed by the block's identity. The block is kept in the entry,
#: so its id cannot be reused while the entry lives; bounded (cleared when full) because tests
#: and reloads create blocks without end while a running gateway has a fixed few.
_PLANS: dict[int, _BlockPlan] = {}
_PLANS_MAX = 4096


class _BlockPlan:
    """What decoding one read block needs, worked out once per block: its decode plans, the
    struct format that unpacks every value at once (or None), each value's finisher
    (:meth:`_DecodePlan._finisher`), and its quantities and units as columns."""

    __slots__ = ("block", "finishers", "plans", "quantities", "units", "whole")

    def __init__(self, block: ReadBlock, plans: tuple[_DecodePlan, ...],
                 whole: struct.Struct | None) -> None:
        self.block = block  # kept: its id cannot be reused while this entry lives
        self.plans = plans
        self.whole = whole
        self.finishers = tuple(plan.finisher for plan in plans)
        self.quantities = tuple(spec.quantity for spec in block.specs)
        self.units = tuple(spec.unit for spec in block.specs)


def _block_plans(block: ReadBlock) -> tuple[_DecodePlan, ...]:
    return _block_plan(block).plans


def _block_plan(block: ReadBlock) -> _BlockPlan:
    """The block's decode plans, and one struct format that unpacks every value of the block at
    once (pad bytes over unmapped words) when all of them are in big-endian word order and
    follow each other in address order; else None (each plan unpacks its own words)."""
    entry = _PLANS.get(id(block))
    if entry is not None and entry.block is block:
        return entry
    plans = tuple(_DecodePlan(spec, spec.address - block.start) for spec in block.specs)
    whole: struct.Struct | None = None
    codes = [">"]
    at = 0
    for plan in plans:
        if plan._reverse or plan.word_offset < at:
            break
        codes.append("x" * (2 * (plan.word_offset - at)) + plan.spec.data_type.struct_code)
        at = plan.word_offset + plan.words
    else:
        if at <= block.count:
            codes.append("x" * (2 * (block.count - at)))
            whole = struct.Struct("".join(codes))
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    entry = _PLANS[id(block)] = _BlockPlan(block, plans, whole)
    return entry


# --------------------------------------------------------------------------------------------
# Encoding (simulators, tests)
# --------------------------------------------------------------------------------------------


def encode_values(
    profile: ModbusProfile,
    values: Mapping[str, Decimal | float | int],
    *,
    strict: bool = False,
) -> RegisterImage:
    """The register words that make a meter of ``profile`` report ``values``.

    Quantities in ``values`` that the profile does not carry are skipped, and profile quantities
    missing from ``values`` are left out of the image — a simulator hands over everything its
    meter model knows and serves what the profile maps. With ``strict=True`` both are errors.
    Raises :class:`RegisterEncodeError`.
    """
    if strict:
        extra = sorted(set(values) - set(profile.quantities))
        missing = sorted(set(profile.quantities) - set(values))
        if extra or missing:
            raise RegisterEncodeError(
                f"profile {profile.name!r}: values not in the profile: {extra or 'none'}; "
                f"profile quantities without a value: {missing or 'none'}"
            )
    image: RegisterImage = {}
    for spec in profile.registers:
        if spec.quantity not in values:
            continue
        for index, word in enumerate(encode_register(spec, values[spec.quantity])):
            image[(spec.function, spec.address + index)] = word
    return image


def encode_register(spec: RegisterSpec, value: Decimal | float | int) -> tuple[int, ...]:
    """The words (wire order) of one quantity holding ``value`` in its canonical unit.

    Integer registers round ``value / scale`` half-even to the nearest count, as a meter does.
    NaN and infinities can be encoded into float registers (to simulate a meter that sends
    them) but not into integer ones.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | float | int):
        raise RegisterEncodeError(f"{spec.quantity}: {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        if not spec.data_type.is_float:
            raise RegisterEncodeError(f"{spec.quantity}: {value} cannot be stored in {spec.data_type.value}")
        return _words(spec, struct.pack(">" + spec.data_type.struct_code, value))
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite():
        if not spec.data_type.is_float:
            raise RegisterEncodeError(f"{spec.quantity}: {value} cannot be stored in {spec.data_type.value}")
        return _words(spec, struct.pack(">" + spec.data_type.struct_code, float(exact)))
    with localcontext(_DECODE_CONTEXT):
        raw = exact / spec.scale
        if spec.data_type.is_float:
            as_float = float(raw)
            try:
                if not math.isfinite(as_float):
                    raise OverflowError
                data = struct.pack(">" + spec.data_type.struct_code, as_float)
            except OverflowError as exc:
                raise RegisterEncodeError(
                    f"{spec.quantity}: {value} {spec.unit} is too large for {spec.data_type.value}"
                ) from exc
            return _words(spec, data)
        count = int(raw.to_integral_value(rounding=ROUND_HALF_EVEN))
    low, high = spec.data_type.int_range
    if not low <= count <= high:
        raise RegisterEncodeError(
            f"{spec.quantity}: {value} {spec.unit} is {count} counts at scale {spec.scale}, outside "
            f"{spec.data_type.value} range {low}..{high}"
        )
    return _words(spec, struct.pack(">" + spec.data_type.struct_code, count))


def _words(spec: RegisterSpec, data: bytes) -> tuple[int, ...]:
    words = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    return words if spec.word_order is WordOrder.BIG else words[::-1]
