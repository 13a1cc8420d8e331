"""``decode_reply_columns`` (and ``decode_reply`` on top of it) and the Modbus bus's values
against the decoding they replaced, kept here as the oracle: on random register maps and random
register bytes, the same quantities, units, values of the same type — Decimals with the same
digits and exponent, floats with the same bits — the same problems and the same errors; and a
poll's values and errors the same as the loop over ``(spec, value)`` pairs made them."""

from __future__ import annotations

import asyncio
import math
import struct
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.acquisition import modbus_bus
from gateway.acquisition.base import BusSettings
from gateway.acquisition.modbus_bus import ModbusBus, make_meter
from gateway.acquisition.poll_result import PolledValue
from gateway.acquisition.schedule import PollSchedule
from protocols.modbus import (
    DataType,
    DecodeProblem,
    Measurement,
    ModbusProfile,
    ReadBlock,
    RegisterDecodeError,
    RegisterFunction,
    RegisterSpec,
    WordOrder,
    decode_reply,
    decode_reply_columns,
    plan_reads,
)
from protocols.profiles import load_named_profile

# ---- the oracle: the decoding before decode_reply_columns, as it was ---------------------------

_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
_WORDS_FORMAT = {n: f">{n}H" for n in range(1, 5)}


def _digits(resolution: Decimal | None) -> int | None:
    if resolution is None:
        return None
    sign, digits, exponent = resolution.as_tuple()
    if sign or digits != (1,) or not isinstance(exponent, int) or not -9 <= exponent <= 0:
        return None
    return -exponent


def _divisor(scale: Decimal) -> int | None:
    sign, digits, exponent = scale.as_tuple()
    if sign or digits != (1,) or not isinstance(exponent, int) or not -22 <= exponent <= 0:
        return None
    return int(10 ** -exponent)


class OldPlan:
    def __init__(self, spec: RegisterSpec, word_offset: int) -> None:
        self.spec = spec
        self.words = spec.words
        self.word_offset = word_offset
        self.byte_offset = 2 * word_offset
        self.words_format = struct.Struct(_WORDS_FORMAT[spec.words])
        self.value_format = struct.Struct(">" + spec.data_type.struct_code)
        self.reverse = spec.word_order is not WordOrder.BIG
        self.is_float = spec.data_type.is_float
        self.is_register = spec.is_register
        self.scale = None if spec.scale == 1 else spec.scale
        self.resolution = spec.resolution
        self.plain_float = (self.is_float and not self.is_register and self.scale is None
                            and self.resolution is None)
        self.round_digits = (
            _digits(spec.resolution)
            if (spec.data_type.struct_code == "f" and not self.is_register and self.scale is None)
            else None)
        self.int_divisor = (
            _divisor(spec.scale)
            if (not self.is_float and not self.is_register and self.resolution is None)
            else None)

    def value(self, data: bytes) -> Any:
        if self.reverse:
            ordered = self.words_format.unpack_from(data, self.byte_offset)[::-1]
            (number,) = self.value_format.unpack(self.words_format.pack(*ordered))
        else:
            (number,) = self.value_format.unpack_from(data, self.byte_offset)
        return self.finish(number)

    def finish(self, number: Any) -> Any:
        if self.is_float:
            if math.isnan(number):
                return DecodeProblem.NOT_A_NUMBER
            if math.isinf(number):
                return DecodeProblem.INFINITE
            if self.plain_float:
                return number
            if self.round_digits is not None:
                return round(number, self.round_digits)
            value = Decimal(repr(number))
        else:
            if self.int_divisor is not None:
                return number / self.int_divisor
            value = Decimal(number)
        try:
            if self.scale is not None:
                value = _CONTEXT.multiply(value, self.scale)
            if self.resolution is not None:
                value = value.quantize(self.resolution, context=_CONTEXT)
        except InvalidOperation:
            return DecodeProblem.OUT_OF_RANGE
        if self.is_register:
            return value
        return float(value)


def old_decode_reply(block: ReadBlock, data: bytes) -> list[tuple[RegisterSpec, Any]]:
    if len(data) != 2 * block.count:
        raise RegisterDecodeError(
            f"{block.function.value} registers {block.start:#06x}+{block.count}: the meter returned "
            f"{len(data) / 2:g} registers, expected {block.count}")
    plans = tuple(OldPlan(spec, spec.address - block.start) for spec in block.specs)
    whole: struct.Struct | None = None
    codes = [">"]
    at = 0
    for plan in plans:
        if plan.reverse or plan.word_offset < at:
            break
        codes.append("x" * (2 * (plan.word_offset - at)) + plan.spec.data_type.struct_code)
        at = plan.word_offset + plan.words
    else:
        if at <= block.count:
            codes.append("x" * (2 * (block.count - at)))
            whole = struct.Struct("".join(codes))
    if whole is None:
        return [(plan.spec, plan.value(data)) for plan in plans]
    return [(plan.spec, number / plan.int_divisor if plan.int_divisor is not None
             else plan.finish(number))
            for plan, number in zip(plans, whole.unpack(data), strict=True)]


def old_poll_values(blocks: list[ReadBlock], replies: list[bytes], t_ms: int
                    ) -> tuple[list[PolledValue], list[str]]:
    """ModbusBus.poll's values and errors from answered blocks, as its loop made them."""
    values: list[PolledValue] = []
    errors: list[str] = []
    for block, data in zip(blocks, replies, strict=True):
        try:
            decoded = old_decode_reply(block, data)
        except RegisterDecodeError as exc:
            errors.append(str(exc))
            continue
        for spec, value in decoded:
            if type(value) is DecodeProblem:
                errors.append(f"{spec.quantity}: {value.value}")
                continue
            values.append(PolledValue(spec.quantity, value, spec.unit, t_ms))
    return values, errors


# ---- comparing ---------------------------------------------------------------------------------


def exactly(value: Any) -> Any:
    """What must be equal: the type, and the digits and exponent of a Decimal, the bits of a
    float."""
    if type(value) is Decimal:
        return "Decimal", value.as_tuple()
    if type(value) is float:
        return "float", struct.pack(">d", value)
    return type(value).__name__, value


def same_values(got: list[Any], want: list[Any]) -> None:
    assert [exactly(v) for v in got] == [exactly(v) for v in want]


# ---- random register maps ----------------------------------------------------------------------

SCALES = ["1", "10", "0.1", "0.01", "1E-2", "0.001", "0.00001", "1E-22", "1E-23", "0.010", "2.5",
          "0.5", "3E-5", "1000", "1E+3", "-0.01", "7"]
RESOLUTIONS = [None, None, "1", "0.1", "0.01", "1E-2", "0.001", "1E-5", "10", "0.000000001"]


@st.composite
def register_maps(draw: st.DrawFn) -> ModbusProfile:
    specs: list[RegisterSpec] = []
    for function in RegisterFunction:
        address = draw(st.integers(0, 5))
        for i in range(draw(st.integers(0 if specs else 1, 8))):
            data_type = draw(st.sampled_from(list(DataType)))
            resolution = draw(st.sampled_from(RESOLUTIONS))
            specs.append(RegisterSpec(
                quantity=f"q.{function.value}{i}", function=function, address=address,
                data_type=data_type, word_order=draw(st.sampled_from(list(WordOrder))),
                scale=Decimal(draw(st.sampled_from(SCALES))), unit=f"u{i % 3}",
                measurement=draw(st.sampled_from(list(Measurement))),
                resolution=None if resolution is None else Decimal(resolution)))
            address += data_type.words + draw(st.integers(0, 3))
    return ModbusProfile("random", tuple(specs), max_gap=draw(st.integers(0, 4)))


#: Register words that decode to edge values: NaN, infinities, the extremes of each integer.
SPECIAL_WORDS = [0x0000, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0x7FFF, 0x8000, 0x0001, 0x7FF8, 0x7FF0,
                 0xFFF0, 0x4B18, 0x3F80]


def reply_bytes(data: st.DataObject, count: int) -> bytes:
    words = data.draw(st.lists(st.one_of(st.integers(0, 0xFFFF), st.sampled_from(SPECIAL_WORDS)),
                               min_size=count, max_size=count))
    return struct.pack(f">{count}H", *words)


@settings(max_examples=1500, deadline=None)
@given(register_maps(), st.data())
def test_columns_decode_what_the_old_decoding_did(profile: ModbusProfile, data: st.DataObject
                                                  ) -> None:
    for block in plan_reads(profile):
        reply = reply_bytes(data, block.count)
        want = old_decode_reply(block, reply)
        quantities, units, values = decode_reply_columns(block, reply)
        assert quantities == tuple(spec.quantity for spec, _ in want)
        assert units == tuple(spec.unit for spec, _ in want)
        same_values(values, [value for _, value in want])
        pairs = decode_reply(block, reply)
        assert [spec for spec, _ in pairs] == [spec for spec, _ in want]
        same_values([value for _, value in pairs], [value for _, value in want])
        for bad in (reply[:-2], reply + b"\0\0", reply[:-1]):
            with pytest.raises(RegisterDecodeError) as ours:
                decode_reply_columns(block, bad)
            with pytest.raises(RegisterDecodeError) as old:
                old_decode_reply(block, bad)
            assert str(ours.value) == str(old.value)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**63), 2**64 - 1), st.sampled_from([DataType.UINT32, DataType.INT32,
                                                          DataType.UINT64, DataType.INT64,
                                                          DataType.UINT16, DataType.INT16]),
       st.integers(0, 22), st.integers(-3, 25))
def test_scaled_integer_registers_keep_their_exponent(raw: int, data_type: DataType, k: int,
                                                      r: int) -> None:
    """The one-call register rule (scale 10**-k, resolution 10**-k or none) and the rest of
    the Decimal rule, for every count of the type."""
    low, high = data_type.int_range
    n = low + (raw - low) % (high - low + 1)
    for resolution in (None, Decimal(1).scaleb(-k), Decimal(1).scaleb(-r)):
        spec = RegisterSpec("e.x", RegisterFunction.HOLDING, 0, data_type,
                            scale=Decimal(1).scaleb(-k), measurement=Measurement.REGISTER,
                            resolution=resolution)
        block = ReadBlock(spec.function, 0, spec.words, (spec,))
        reply = struct.pack(">" + data_type.struct_code, n)
        same_values(decode_reply_columns(block, reply)[2],
                    [value for _, value in old_decode_reply(block, reply)])


# ---- a poll's values ---------------------------------------------------------------------------


T_MS = 1_765_000_000_123


class _Client:
    connected = True


def poll_with_replies(profile: ModbusProfile, replies: list[bytes]) -> tuple[Any, ...]:
    """ModbusBus.poll of one meter whose blocks are answered with ``replies``."""

    async def main() -> tuple[Any, ...]:
        meter = make_meter("m", 1, profile, PollSchedule(60, 0.0))
        bus = ModbusBus("b", [meter], asyncio.Queue(), BusSettings(retries=0), host="127.0.0.1")
        answers = dict(zip(map(id, meter.blocks), replies, strict=True))

        async def client() -> Any:
            return _Client()

        async def read_block(client: Any, meter: Any, block: ReadBlock) -> bytes:
            return answers[id(block)]

        bus._client = client  # type: ignore[method-assign]
        bus._read_block = read_block  # type: ignore[method-assign]
        with mock.patch.object(modbus_bus, "now_ms", lambda: T_MS):
            result = await bus.poll(meter)
        return meter.blocks, result

    blocks, result = asyncio.run(main())
    return blocks, result


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["sdm630", "dtsu666"]), st.data())
def test_a_polls_values_and_errors_are_what_the_old_loop_made(name: str, data: st.DataObject
                                                               ) -> None:
    profile = load_named_profile(name)
    assert isinstance(profile, ModbusProfile)
    blocks = plan_reads(profile)
    replies = [reply_bytes(data, block.count) for block in blocks]
    if data.draw(st.booleans()):  # one reply of the wrong size
        index = data.draw(st.integers(0, len(replies) - 1))
        replies[index] = replies[index][:-2]
    _, result = poll_with_replies(profile, replies)
    want_values, want_errors = old_poll_values(blocks, replies, T_MS)
    assert [type(v) for v in result.values] == [PolledValue] * len(want_values)
    assert [(v.quantity, exactly(v.value), v.unit, v.t_ms) for v in result.values] \
        == [(v.quantity, exactly(v.value), v.unit, v.t_ms) for v in want_values]
    assert list(result.errors) == want_errors
    assert result.ok == bool(want_values)
