"""Register mapping at the codec boundary: planning is minimal and complete, decoding matches
IEEE 754 / two's-complement golden words, encode → decode round-trips, and garbage only ever
raises our own error."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import Decimal
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.modbus import (
    DataType,
    DecodeProblem,
    Measurement,
    ModbusProfile,
    ProfileError,
    ReadBlock,
    RegisterDecodeError,
    RegisterEncodeError,
    RegisterFunction,
    RegisterSpec,
    WordOrder,
    decode_block,
    decode_register,
    encode_register,
    encode_values,
    plan_reads,
)
from protocols.profiles import load_named_profile

STANDARD_TEN = (
    "voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c",
    "power.active.total", "energy.active.import.total", "power.factor.total", "frequency",
)


def spec(quantity: str = "x.value", address: int = 0, data_type: DataType = DataType.FLOAT32, *,
         function: RegisterFunction = RegisterFunction.INPUT, word_order: WordOrder = WordOrder.BIG,
         scale: str = "1", register: bool = False, resolution: str | None = None) -> RegisterSpec:
    return RegisterSpec(
        quantity=quantity, function=function, address=address, data_type=data_type,
        word_order=word_order, scale=Decimal(scale), unit="",
        measurement=Measurement.REGISTER if register else Measurement.INSTANTANEOUS,
        resolution=Decimal(resolution) if resolution else None,
    )


def single(s: RegisterSpec) -> ReadBlock:
    return ReadBlock(s.function, s.address, s.words, (s,))


# ---- planning -------------------------------------------------------------------------------


def test_sdm630_full_poll_is_two_requests_and_the_standard_ten_one() -> None:
    profile = load_named_profile("sdm630")
    assert isinstance(profile, ModbusProfile)
    blocks = plan_reads(profile)
    assert [(b.function, b.start, b.count) for b in blocks] == [
        (RegisterFunction.INPUT, 0x0000, 80), (RegisterFunction.INPUT, 0x0156, 4)]
    standard = plan_reads(profile, quantities=STANDARD_TEN)
    assert len(standard) == 1 and set(standard[0].quantities) == set(STANDARD_TEN)


def test_dtsu666_full_poll_is_three_requests_and_the_standard_ten_two() -> None:
    profile = load_named_profile("dtsu666")
    assert isinstance(profile, ModbusProfile)
    assert [(b.start, b.count) for b in plan_reads(profile)] == [(0x0006, 2), (0x2000, 70), (0x401E, 12)]
    assert [(b.start, b.count) for b in plan_reads(profile, quantities=STANDARD_TEN)] == [
        (0x2006, 64), (0x401E, 2)]


def test_max_gap_zero_merges_only_contiguous_registers() -> None:
    profile = ModbusProfile("p", (spec("x.a", 0), spec("x.b", 2), spec("x.c", 5)), max_gap=10)
    assert [(b.start, b.count) for b in plan_reads(profile, max_gap=0)] == [(0, 4), (5, 2)]
    assert [(b.start, b.count) for b in plan_reads(profile)] == [(0, 7)]
    assert [(b.start, b.count) for b in plan_reads(profile, max_count=4)] == [(0, 4), (5, 2)]


def test_functions_are_never_merged() -> None:
    profile = ModbusProfile("p", (spec("x.a", 0), spec("x.b", 2, function=RegisterFunction.HOLDING)), max_gap=10)
    assert [(b.function, b.start) for b in plan_reads(profile)] == [
        (RegisterFunction.HOLDING, 2), (RegisterFunction.INPUT, 0)]


def test_plan_errors() -> None:
    profile = ModbusProfile("p", (spec("x.a", 0, DataType.INT64),))
    with pytest.raises(ValueError, match=r"no quantity x\.zzz"):
        plan_reads(profile, quantities=["x.zzz"])
    with pytest.raises(ValueError, match="cannot hold a 4-register value"):
        plan_reads(profile, max_count=3)
    with pytest.raises(ValueError, match=r"max_count must be 1\.\.125"):
        plan_reads(profile, max_count=126)
    with pytest.raises(ValueError, match="max_gap must be >= 0"):
        plan_reads(profile, max_gap=-1)
    assert plan_reads(profile, quantities=[]) == []


def test_profile_rejects_overlap_built_in_code() -> None:
    with pytest.raises(ProfileError, match=r"overlaps x\.a"):
        ModbusProfile("p", (spec("x.a", 0), spec("x.b", 1)))


@st.composite
def layouts(draw: st.DrawFn) -> list[RegisterSpec]:
    """Non-overlapping specs of random widths and functions."""
    specs: list[RegisterSpec] = []
    for function in RegisterFunction:
        address = draw(st.integers(0, 20))
        for i in range(draw(st.integers(0, 8))):
            data_type = draw(st.sampled_from(list(DataType)))
            specs.append(spec(f"x.{function.value}{i}", address, data_type, function=function))
            address += data_type.words + draw(st.integers(0, 12))
    return specs


def minimum_blocks(specs: Sequence[RegisterSpec], gap: int, limit: int) -> int:
    """Reference: the fewest blocks by dynamic programming over where each block starts."""
    total = 0
    for function in RegisterFunction:
        items = sorted((s for s in specs if s.function is function), key=lambda s: s.address)

        @cache
        def best(i: int, items: tuple[RegisterSpec, ...] = tuple(items)) -> int:
            if i == len(items):
                return 0
            result = math.inf
            end = items[i].end
            for j in range(i, len(items)):
                if j > i and items[j].address - end > gap:
                    break
                end = max(end, items[j].end)
                if end - items[i].address > limit:
                    break
                result = min(result, 1 + best(j + 1))
            return int(result)

        total += best(0)
    return total


@given(layouts(), st.integers(0, 15), st.integers(4, 40))
@settings(max_examples=300, deadline=None)
def test_plan_is_complete_within_limits_and_minimal(specs: list[RegisterSpec], gap: int, limit: int) -> None:
    profile = ModbusProfile("p", tuple(specs), max_registers_per_request=125, max_gap=125)
    blocks = plan_reads(profile, max_gap=gap, max_count=limit)
    planned = [s for b in blocks for s in b.specs]
    assert sorted(s.quantity for s in planned) == sorted(s.quantity for s in specs)
    for block in blocks:
        assert 1 <= block.count <= limit
        assert all(s.function is block.function and block.start <= s.address and s.end <= block.end
                   for s in block.specs)
        assert block.start == block.specs[0].address and block.end == max(s.end for s in block.specs)
        for before, after in zip(block.specs, block.specs[1:], strict=False):
            assert after.address - before.end <= gap
    assert len(blocks) == minimum_blocks(specs, gap, limit)


# ---- decoding: golden words -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "word_order", "words", "expected"),
    [
        (DataType.FLOAT32, WordOrder.BIG, [0x4366, 0x8000], 230.5),  # IEEE 754 0x43668000
        (DataType.FLOAT32, WordOrder.LITTLE, [0x8000, 0x4366], 230.5),
        (DataType.FLOAT32, WordOrder.BIG, [0xC2F6, 0xE979], -123.456),
        (DataType.INT16, WordOrder.BIG, [0xFFFE], -2.0),
        (DataType.UINT16, WordOrder.BIG, [0xFFFE], 65534.0),
        (DataType.INT32, WordOrder.BIG, [0xFFFF, 0xFF85], -123.0),
        (DataType.UINT32, WordOrder.LITTLE, [0x5678, 0x1234], float(0x12345678)),
        (DataType.INT64, WordOrder.BIG, [0x8000, 0, 0, 0], float(-(1 << 63))),
        (DataType.UINT64, WordOrder.LITTLE, [1, 0, 0, 0], 1.0),
        (DataType.FLOAT64, WordOrder.BIG, [0x3FF0, 0, 0, 0], 1.0),
    ],
)
def test_golden_words(data_type: DataType, word_order: WordOrder, words: list[int], expected: float) -> None:
    s = spec(data_type=data_type, word_order=word_order, resolution="0.001" if expected == -123.456 else None)
    reading = decode_register(s, words)
    assert reading.value == expected and reading.quality == "A" and reading.raw == tuple(words)


def test_scale_is_exact_decimal_arithmetic() -> None:
    # DTSU666 voltage: float32 2203.0 in 0.1 V; no binary 220.30000000000001 artefacts.
    reading = decode_register(spec(scale="0.1"), [0x4509, 0xB000])
    assert reading.value == 220.3
    assert decode_register(spec(data_type=DataType.INT16, scale="0.1", register=True), [2203]).value == Decimal("220.3")


def test_energy_float32_becomes_exact_decimal_at_the_profile_resolution() -> None:
    energy = spec(register=True, resolution="0.01")
    words = struct.unpack(">2H", struct.pack(">f", 1206.42))  # float32 is 1206.4200439453125
    reading = decode_register(energy, words)
    assert reading.value == Decimal("1206.42") and isinstance(reading.value, Decimal)
    # Above 131 072 kWh float32 cannot hold every 0.01 kWh: we get its nearest value, rounded.
    words = struct.unpack(">2H", struct.pack(">f", 200000.01))  # float32 is 200000.015625
    assert decode_register(energy, words).value == Decimal("200000.02")


def test_nan_and_infinity_are_flagged_not_fatal() -> None:
    nan, inf = spec("x.nan", 0), spec("x.inf", 2)
    good = spec("x.good", 4, DataType.UINT16)
    block = ReadBlock(RegisterFunction.INPUT, 0, 5, (nan, inf, good))
    readings = decode_block(block, [0x7FC0, 0x0000, 0xFF80, 0x0000, 7])
    assert (readings["x.nan"].value, readings["x.nan"].problem, readings["x.nan"].quality) == (
        None, DecodeProblem.NOT_A_NUMBER, "N")
    assert readings["x.inf"].problem is DecodeProblem.INFINITE
    assert readings["x.good"].value == 7.0 and readings["x.good"].problem is None


def test_value_too_large_for_its_resolution_is_out_of_range() -> None:
    huge = spec(data_type=DataType.FLOAT64, register=True, resolution="0.01")
    reading = decode_register(huge, struct.unpack(">4H", struct.pack(">d", 1e300)))
    assert reading.problem is DecodeProblem.OUT_OF_RANGE and reading.value is None


@pytest.mark.parametrize(
    ("registers", "expected"),
    [([1], "returned 1 registers, expected 2"), ([1, 2, 3], "returned 3 registers"),
     ([0x10000, 0], "is not a 16-bit word"), ([-1, 0], "is not a 16-bit word"),
     ([True, 0], "is not a 16-bit word")],
)
def test_reply_that_does_not_fit_the_block(registers: list[int], expected: str) -> None:
    with pytest.raises(RegisterDecodeError, match=expected):
        decode_block(single(spec()), registers)


@given(st.lists(st.integers(-5, 0x1_0005), max_size=12), st.sampled_from(list(DataType)),
       st.sampled_from(list(WordOrder)), st.booleans())
def test_garbage_only_raises_our_error(registers: list[int], data_type: DataType, order: WordOrder,
                                       register: bool) -> None:
    s = spec(data_type=data_type, word_order=order, register=register, resolution="0.01" if register else None)
    try:
        readings = decode_block(single(s), registers)
    except RegisterDecodeError:
        return
    reading = readings[s.quantity]
    assert reading.problem is not None or isinstance(reading.value, Decimal if register else float)


# ---- encoding -------------------------------------------------------------------------------


def test_encode_errors() -> None:
    with pytest.raises(RegisterEncodeError, match="outside int16 range"):
        encode_register(spec(data_type=DataType.INT16), 40000)
    with pytest.raises(RegisterEncodeError, match="cannot be stored in uint32"):
        encode_register(spec(data_type=DataType.UINT32), float("nan"))
    with pytest.raises(RegisterEncodeError, match="too large for float32"):
        encode_register(spec(), Decimal("1e39"))
    with pytest.raises(RegisterEncodeError, match="too large for float64"):
        encode_register(spec(data_type=DataType.FLOAT64), Decimal("1e400"))
    with pytest.raises(RegisterEncodeError, match="not a number"):
        encode_register(spec(), "12")  # type: ignore[arg-type]


def test_integer_registers_round_half_even_like_a_meter() -> None:
    tenth = spec(data_type=DataType.INT16, scale="0.1")
    assert encode_register(tenth, Decimal("220.35")) == (2204,)
    assert encode_register(tenth, Decimal("220.25")) == (2202,)
    assert encode_register(tenth, -0.1) == (0xFFFF,)


def test_nan_can_be_served_from_a_float_register() -> None:
    s = spec()
    assert decode_register(s, encode_register(s, float("nan"))).problem is DecodeProblem.NOT_A_NUMBER
    assert decode_register(s, encode_register(s, float("-inf"))).problem is DecodeProblem.INFINITE


def test_encode_values_builds_a_register_image() -> None:
    profile = ModbusProfile("p", (spec("voltage.a", 0), spec("ratio.pt", 7, DataType.INT16,
                                                           function=RegisterFunction.HOLDING, scale="0.1")))
    image = encode_values(profile, {"voltage.a": 230.5, "ratio.pt": Decimal(1), "current.a": 5})
    assert image == {(RegisterFunction.INPUT, 0): 0x4366, (RegisterFunction.INPUT, 1): 0x8000,
                     (RegisterFunction.HOLDING, 7): 10}
    assert encode_values(profile, {}) == {}
    with pytest.raises(RegisterEncodeError, match=r"not in the profile: \['current.a'\]"):
        encode_values(profile, {"voltage.a": 1, "ratio.pt": 1, "current.a": 5}, strict=True)
    with pytest.raises(RegisterEncodeError, match=r"without a value: \['ratio.pt'\]"):
        encode_values(profile, {"voltage.a": 1}, strict=True)


# ---- round trips ----------------------------------------------------------------------------

INT_TYPES = [t for t in DataType if not t.is_float]
SCALES = ["1", "0.1", "0.01", "0.001", "0.0001", "10"]


@given(st.sampled_from(INT_TYPES), st.sampled_from(list(WordOrder)), st.sampled_from(SCALES), st.data())
def test_round_trip_scaled_integers_exactly(data_type: DataType, order: WordOrder, scale: str,
                                            data: st.DataObject) -> None:
    low, high = data_type.int_range
    count = data.draw(st.integers(low, high))
    value = Decimal(count) * Decimal(scale)
    as_register = spec(data_type=data_type, word_order=order, scale=scale, register=True)
    assert decode_register(as_register, encode_register(as_register, value)).value == value
    as_float = spec(data_type=data_type, word_order=order, scale=scale)
    if abs(count) < 2**53:  # exactly representable as a float
        assert decode_register(as_float, encode_register(as_float, float(value))).value == float(value)


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from(list(WordOrder)))
def test_round_trip_float32_is_bit_exact(value: float, order: WordOrder) -> None:
    s = spec(word_order=order)
    assert decode_register(s, encode_register(s, value)).value == value


@given(st.floats(min_value=-1e30, max_value=1e30, allow_nan=False), st.sampled_from(SCALES))
def test_round_trip_scaled_float32_within_float32_precision(value: float, scale: str) -> None:
    s = spec(scale=scale)
    decoded = decode_register(s, encode_register(s, value)).value
    assert isinstance(decoded, float)
    assert math.isclose(decoded, value, rel_tol=2**-23, abs_tol=1e-37 * float(scale))


@given(st.integers(0, 13_107_199), st.sampled_from(list(WordOrder)))
def test_energy_register_survives_float32_exactly_below_131072_kwh(hundredths: int, order: WordOrder) -> None:
    s = spec(word_order=order, register=True, resolution="0.01")
    value = Decimal(hundredths).scaleb(-2)
    assert decode_register(s, encode_register(s, value)).value == value


@given(st.integers(-(1 << 62), 1 << 62), st.sampled_from(list(WordOrder)))
def test_round_trip_float64_names_the_same_double(count: int, order: WordOrder) -> None:
    """Above 2**53 the shortest repr is not the double's exact value but identifies it uniquely."""
    s = spec(data_type=DataType.FLOAT64, word_order=order, register=True, resolution="1")
    value = Decimal(float(count))
    decoded = decode_register(s, encode_register(s, value)).value
    assert isinstance(decoded, Decimal) and float(decoded) == float(value)
    if abs(count) <= 2**53:
        assert decoded == value


# ---- the rounding shortcut for float32 quantities ----------------------------------------------

_RULE_CONTEXT = __import__("decimal").Context(prec=60, rounding=__import__("decimal").ROUND_HALF_EVEN)


def _decimal_rule(x: float, k: int) -> float:
    """The documented rounding: the float's shortest repr, quantised half-even to 10**-k."""
    return float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-k), context=_RULE_CONTEXT))


def _same(a: float, b: float) -> bool:
    return a == b and math.copysign(1, a) == math.copysign(1, b)


@settings(max_examples=3000)
@given(st.integers(0, 2**32 - 1), st.integers(0, 9))
def test_float32_resolution_shortcut_equals_the_decimal_rule(bits: int, k: int) -> None:
    words = [bits >> 16, bits & 0xFFFF]
    (x,) = struct.unpack(">f", struct.pack(">I", bits))
    reading = decode_register(spec(resolution=str(Decimal(1).scaleb(-k))), words)
    if not math.isfinite(x):
        assert reading.value is None and reading.problem is not None
        return
    assert isinstance(reading.value, float) and _same(reading.value, _decimal_rule(x, k)), (x, k)


def test_float32_resolution_shortcut_over_a_sweep_of_meter_values_and_ties() -> None:
    # Every float32 of a dense band per binade that meters use (0.001 .. 2**20), and exact
    # binary ties (x.5, x.25, x.125 ...) where half-even decides: the shortcut and the decimal
    # rule must agree on each one. About 300 000 values.
    import random

    rng = random.Random(20261207)
    values: list[float] = []
    for exponent in range(-10, 21):
        base = struct.unpack(">I", struct.pack(">f", 2.0**exponent))[0]
        values += [struct.unpack(">f", struct.pack(">I", base + rng.randrange(1 << 23)))[0]
                   for _ in range(8000)]
        values += [struct.unpack(">f", struct.pack(">I", base + m))[0] for m in range(0, 1 << 23, 1 << 13)]
    values += [n / 8 for n in range(-4000, 4000)]
    for k in (0, 1, 2, 3, 4):
        s = spec(resolution=str(Decimal(1).scaleb(-k)))
        for x in values[k::5]:
            got = decode_register(s, struct.unpack(">2H", struct.pack(">f", x))).value
            assert isinstance(got, float) and _same(got, _decimal_rule(x, k)), (x, k)


def test_decode_values_gives_what_decode_block_gives() -> None:
    from protocols.modbus import decode_reply, decode_values

    profile = load_named_profile("sdm630")
    assert isinstance(profile, ModbusProfile)
    image = encode_values(profile, {s.quantity: 230.123 + i for i, s in enumerate(profile.registers)})
    for block in plan_reads(profile):
        registers = [image.get((block.function, a), 0x7FC0) for a in range(block.start, block.end)]
        registers[0] = 0x7FC0  # a NaN where the first value starts
        readings = decode_block(block, registers)
        values = decode_values(block, registers)
        assert [s.quantity for s, _ in values] == list(readings)
        for s, value in values:
            r = readings[s.quantity]
            if isinstance(value, DecodeProblem):
                assert r.problem is value and r.value is None
            else:
                assert r.problem is None and r.value == value and type(r.value) is type(value)
        with pytest.raises(RegisterDecodeError, match="expected"):
            decode_values(block, registers[1:])
        data = struct.pack(f">{block.count}H", *registers)
        assert decode_reply(block, data) == values
        for bad in (data[:-2], data + b"\0\0", data[:-1]):
            with pytest.raises(RegisterDecodeError, match="expected"):
                decode_reply(block, bad)


# ---- the int / 10**k shortcut for scaled integer quantities -------------------------------------

_INT_TYPES = (DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64,
              DataType.UINT64)


def _int_words(data_type: DataType, n: int) -> list[int]:
    data = struct.pack(">" + data_type.struct_code, n)
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


@settings(max_examples=3000)
@given(st.sampled_from(_INT_TYPES), st.integers(-(2**63), 2**64 - 1), st.integers(0, 22),
       st.booleans())
def test_scaled_integer_shortcut_equals_the_decimal_rule(data_type: DataType, raw: int, k: int,
                                                         power_of_ten: bool) -> None:
    low, high = data_type.int_range
    n = low + (raw - low) % (high - low + 1)
    scale = str(Decimal(1).scaleb(-k)) if power_of_ten else str(Decimal(3).scaleb(-k))
    reading = decode_register(spec(data_type=data_type, scale=scale), _int_words(data_type, n))
    expected = float(_RULE_CONTEXT.multiply(Decimal(n), Decimal(scale)))
    assert isinstance(reading.value, float) and _same(reading.value, expected), (n, scale)


def test_scaled_integer_shortcut_over_meter_values_and_decimal_ties() -> None:
    # Counts a meter sends (V*10, A*100, kW*100000, PF*1000, Hz*100), and n/10**k that sit
    # exactly halfway between two doubles' decimal neighbours as far as a naive n * 0.1 goes.
    for k in (1, 2, 3, 5):
        s = spec(data_type=DataType.INT32, scale=str(Decimal(1).scaleb(-k)))
        for n in list(range(-70000, 70000, 7)) + [2**31 - 1, -(2**31), 1, -1, 0]:
            got = decode_register(s, _int_words(DataType.INT32, n)).value
            want = float(Decimal(n).scaleb(-k))
            assert isinstance(got, float) and _same(got, want), (n, k)
    # Not a power of ten, or with a resolution, or a register: the Decimal path, unchanged.
    assert decode_register(spec(data_type=DataType.UINT16, scale="0.5"), [3]).value == 1.5
    assert decode_register(spec(data_type=DataType.UINT16, scale="0.01", register=True),
                           [12345]).value == Decimal("123.45")


# ---- one unpack for the whole block ----------------------------------------------------------------

_ALL_TYPES = (*_INT_TYPES, DataType.FLOAT32, DataType.FLOAT64)


@settings(max_examples=500)
@given(st.lists(st.tuples(st.sampled_from(_ALL_TYPES), st.integers(0, 3),
                          st.sampled_from(["1", "0.1", "0.01", "0.00001", "2.5"]),
                          st.booleans(), st.sampled_from(list(WordOrder))),
                min_size=1, max_size=8),
       st.integers(0, 2), st.randoms(use_true_random=False))
def test_the_whole_block_unpack_gives_what_each_plan_gives(
        layout: list[tuple[DataType, int, str, bool, WordOrder]], tail: int, rnd: object) -> None:
    import random

    from protocols.modbus import decode_reply
    from protocols.modbus.register_map import _block_plans

    assert isinstance(rnd, random.Random)
    specs = []
    address = 10
    for i, (data_type, gap, scale, register, order) in enumerate(layout):
        address += gap
        specs.append(spec(f"q.{i}", address, data_type, scale=scale, register=register,
                          word_order=order))
        address += data_type.words
    block = ReadBlock(RegisterFunction.INPUT, 10, address + tail - 10, tuple(specs))
    data = bytes(rnd.randrange(256) for _ in range(2 * block.count))
    want = [(plan.spec, plan.value(data)) for plan in _block_plans(block)]
    got = decode_reply(block, data)
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == b or (type(a) is type(b) and a != a and b != b) or (a is b), (a, b)
        assert type(a) is type(b)
