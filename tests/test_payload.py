"""protocols/payload.py: exact round trips, backlog marking, and a decoder that only ever raises
its own error."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.payload import (
    MAX_PAYLOAD_BYTES,
    AlarmEvent,
    AreaLoss,
    Envelope,
    GroupTotal,
    PayloadDecodeError,
    PayloadEncodeError,
    ReadRecord,
    Suspect,
    build_alarm,
    build_birth,
    build_cmd_result,
    build_death,
    build_group,
    build_health,
    build_reads,
    decode_message,
    decode_payload,
    durable_id,
    mark_hist,
    parse_reads,
    payload_to_json,
)
from tests.payload_examples import examples

ENV = Envelope("gw-0001", 0x0123456789ABCDEF, 42, 1_767_225_604_200)
T0 = 1_767_225_600_000

# ------------------------------------------------------------------------------- strategies


@st.composite
def registers(draw: st.DrawFn) -> Decimal:
    """Any decimal the schema allows: up to 38 digits, exponent within ±38, any resolution."""
    mantissa = draw(st.integers(-(10**38 - 1), 10**38 - 1))
    exponent = draw(st.integers(-38, 38))
    digits = tuple(int(d) for d in str(abs(mantissa)))
    return Decimal((1 if mantissa < 0 else 0, digits, exponent))


finite_floats = st.floats(allow_nan=False, allow_infinity=False)
quantities = st.text(min_size=1, max_size=40)
times = st.integers(0, 2**63)
codes = st.integers(0, 2**32)


@st.composite
def read_records(draw: st.DrawFn) -> ReadRecord:
    quality = draw(st.sampled_from("AESFN"))
    if quality == "N":
        val: Decimal | float | None = None
    else:
        val = draw(st.one_of(registers(), finite_floats))
    return ReadRecord(
        q=draw(quantities),
        val=val,
        unit=draw(st.sampled_from(["kWh", "kvarh", "V", "A", "kW", "Hz", ""])),
        t=draw(times),
        quality=quality,
        method=None if quality == "A" else draw(st.none() | codes),
        reasons=tuple(draw(st.lists(codes, max_size=4))),
        hist=draw(st.booleans()),
    )


def exact(value: object) -> object:
    """A comparison key that tells 1.2 from 1.20 and 0.0 from -0.0 (== does neither)."""
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        return ("decimal", 0 if all(d == 0 for d in digits) else sign, digits, exponent)
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    return value


def exact_record(record: ReadRecord) -> tuple[object, ...]:
    return (
        record.q,
        exact(record.val),
        record.unit,
        record.t,
        record.quality,
        record.method,
        record.reasons,
        record.hist,
        exact(record.raw),
        record.rev,
        record.sup,
    )


# ------------------------------------------------------------------------------- exactness


def test_register_values_travel_as_tag_4_decimal_fractions() -> None:
    payload = build_reads(
        ENV, "m-001", [ReadRecord("energy.active.import.total", Decimal("1206.42"), "kWh", T0)]
    )
    # Decode with tag 4 left raw, to see the wire form rather than what a decoder makes of it.
    raw = cbor2.loads(payload, semantic_decoders={4: lambda value, immutable: ("tag4", value)})
    assert raw["reads"][0]["val"] == ("tag4", [-2, 120642])
    assert bytes.fromhex("c482211a0001d742") in payload  # 4([-2, 120642]), RFC 8949 §3.4.4


def test_instantaneous_floats_stay_floats() -> None:
    payload = build_reads(ENV, "m-001", [ReadRecord("voltage.a", 229.7, "V", T0)])
    assert struct.pack(">Bd", 0xFB, 229.7) in payload


@given(st.lists(read_records(), min_size=1, max_size=8), st.text(min_size=1, max_size=20))
def test_reads_round_trip_exactly(records: list[ReadRecord], meter: str) -> None:
    message = parse_reads(build_reads(ENV, meter, records))
    assert message.meter == meter
    assert (message.gw, message.seq, message.ts) == (ENV.gw, ENV.seq, ENV.ts)
    assert message.id == durable_id(ENV.gw, ENV.epoch, ENV.seq)
    assert not message.hist
    assert [exact_record(r) for r in message.reads] == [exact_record(r) for r in records]


@given(registers())
def test_json_form_keeps_decimals_exact(value: Decimal) -> None:
    payload = build_reads(ENV, "m", [ReadRecord("e", value, "kWh", T0)])
    text = decode_payload(payload)["reads"][0]["val"]  # type: ignore[index,call-overload]
    assert isinstance(text, str)
    assert exact(Decimal(text)) == exact(value)


def test_large_mantissa_uses_a_bignum_inside_the_decimal_fraction() -> None:
    value = Decimal("12345678901234567890123456789012345.678")
    payload = build_reads(ENV, "m", [ReadRecord("e", value, "kWh", T0)])
    assert bytes([0xC4, 0x82, 0x22, 0xC2]) in payload  # 4([-3, 2(h'...')])
    assert exact(parse_reads(payload).reads[0].val) == exact(value)


def test_negative_zero_register_keeps_its_resolution() -> None:
    payload = build_reads(ENV, "m", [ReadRecord("e", Decimal("-0.00"), "kWh", T0)])
    assert parse_reads(payload).reads[0].val.as_tuple() == Decimal("0.00").as_tuple()  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- building


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val": None, "quality": "A"}, "null value needs quality 'N'"),
        ({"val": Decimal("1"), "quality": "N"}, "cannot carry a value"),
        ({"val": float("nan")}, "null value with quality 'N'"),
        ({"val": float("inf")}, "null value with quality 'N'"),
        ({"val": Decimal("NaN")}, "finite"),
        ({"val": Decimal("sNaN")}, "finite"),
        ({"val": 12}, "must be a Decimal"),
        ({"val": True}, "must be a Decimal"),
        ({"val": Decimal("1E+39")}, "quantize"),
        ({"val": Decimal("1." + "1" * 38)}, "quantize"),
        ({"quality": "V"}, "quality 'V'"),
        ({"method": 11}, "actual read has no estimation method"),
        ({"quality": "E", "method": -1}, "unsigned"),
        ({"reasons": (1, -2)}, "unsigned"),
        ({"reasons": (True,)}, "unsigned"),
        ({"t": -1}, "unsigned"),
        ({"q": ""}, "quantity name"),
    ],
)
def test_read_record_rejects_what_the_schema_forbids(
    kwargs: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"q": "energy", "val": Decimal("1"), "unit": "kWh", "t": T0}
    fields.update(kwargs)
    with pytest.raises(PayloadEncodeError, match=message):
        ReadRecord(**fields)  # type: ignore[arg-type]


def test_reads_message_needs_reads_and_a_meter() -> None:
    with pytest.raises(PayloadEncodeError, match="at least one read"):
        build_reads(ENV, "m-001", [])
    with pytest.raises(PayloadEncodeError, match="meter id"):
        build_reads(ENV, "", [ReadRecord("e", Decimal(1), "kWh", T0)])


def test_envelope_rejects_negative_and_oversized_numbers() -> None:
    with pytest.raises(PayloadEncodeError, match="seq"):
        Envelope("gw", 1, -1, 0)
    with pytest.raises(PayloadEncodeError, match="epoch"):
        Envelope("gw", 2**64, 1, 0)
    with pytest.raises(PayloadEncodeError, match="gateway id"):
        Envelope("", 1, 1, 0)


def test_durable_and_ephemeral_ids() -> None:
    reads = decode_message(build_reads(ENV, "m", [ReadRecord("e", Decimal(1), "kWh", T0)]))
    assert reads["id"] == "gw-0001:0123456789abcdef:42"
    birth = decode_message(
        build_birth(ENV, bdseq=3, version="1", config_sha256="0" * 64, meters=[])
    )
    death = decode_message(build_death(ENV, bdseq=3))
    health = decode_message(build_health(ENV, {}))
    assert birth["id"] == f"gw-0001:0123456789abcdef:42:birth:{ENV.ts}"
    assert death["id"] == f"gw-0001:0123456789abcdef:42:death:{ENV.ts}"
    assert health["id"] == f"gw-0001:0123456789abcdef:42:health:{ENV.ts}"
    assert birth["seq"] == death["seq"] == health["seq"] == 42  # the high-water mark


def test_birth_and_death() -> None:
    birth = decode_message(
        build_birth(ENV, bdseq=9, version="0.1.0", config_sha256="ab" * 32, meters=["m-1", "m-2"])
    )
    assert (birth["online"], birth["bdseq"], birth["version"], birth["meters"]) == (
        True,
        9,
        "0.1.0",
        ["m-1", "m-2"],
    )
    assert birth["config_sha256"] == "ab" * 32
    death = decode_message(build_death(ENV, bdseq=9))
    assert (death["online"], death["bdseq"]) == (False, 9)
    with pytest.raises(PayloadEncodeError, match="config_sha256"):
        build_birth(ENV, bdseq=1, version="1", config_sha256="AB" * 32, meters=[])


def test_alarm_event() -> None:
    event = AlarmEvent(
        "disk.low", "disk.low", "cleared", "warning", {"free_mb": Decimal("12.5")}, raised=T0
    )
    message = decode_message(build_alarm(ENV, event))
    assert (message["kind"], message["key"], message["state"], message["severity"]) == (
        "disk.low",
        "disk.low",
        "cleared",
        "warning",
    )
    assert message["raised"] == T0
    assert message["details"] == {"free_mb": Decimal("12.5")}
    assert "meter" not in message
    with pytest.raises(PayloadEncodeError, match="severity"):
        AlarmEvent("k", "k", "raised", "fatal")
    with pytest.raises(PayloadEncodeError, match="state"):
        AlarmEvent("k", "k", "open", "major")


def test_group_totals_and_loss() -> None:
    total = GroupTotal("energy.active.import.total", Decimal("10.50"), "kWh", T0, "A", 1.0)
    loss = AreaLoss(
        "tq-1",
        "2026-01-01",
        "qualified",
        1.0,
        Decimal("11.00"),
        Decimal("10.50"),
        4.5,
        (Suspect("m-9", 0.1, ["tiny"]),),
    )
    message = decode_message(build_group(ENV, "g-1", [total], loss))
    assert exact(message["totals"][0]["val"]) == exact(Decimal("10.50"))  # type: ignore[index]
    assert message["loss"]["suspects"] == [{"meter": "m-9", "score": 0.1, "evidence": ["tiny"]}]  # type: ignore[index]
    assert exact(message["loss"]["input"]) == exact(Decimal("11.00"))  # type: ignore[index]
    with pytest.raises(PayloadEncodeError, match="totals or a loss"):
        build_group(ENV, "g-1")
    with pytest.raises(PayloadEncodeError, match="coverage"):
        GroupTotal("e", Decimal(1), "kWh", T0, "A", 1.5)
    with pytest.raises(PayloadEncodeError, match="input must be a Decimal"):
        AreaLoss("tq-1", "2026-01-01", "high", 1.0, input=1.0)  # type: ignore[arg-type]
    with pytest.raises(PayloadEncodeError, match="YYYY-MM-DD"):
        AreaLoss("tq-1", "1/1/2026", "high", 1.0)


def test_cmd_result() -> None:
    message = decode_message(build_cmd_result(ENV, bytes(range(16)), "executed", ""))
    assert (message["cmd"], message["status"], message["reason"]) == (
        bytes(range(16)),
        "executed",
        "",
    )
    with pytest.raises(PayloadEncodeError, match="16 bytes"):
        build_cmd_result(ENV, b"short", "executed", "")
    with pytest.raises(PayloadEncodeError, match="status"):
        build_cmd_result(ENV, bytes(16), "done", "")


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ({"a": {1, 2}}, "set cannot be sent"),
        ({"a": float("nan")}, "null value"),
        ({"a": {1: "x"}}, "keys must be text"),
        ({"a": 2**64}, "64 bits"),
        ({"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}, "nested"),
    ],
)
def test_free_form_data_is_checked(stats: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadEncodeError, match=message):
        build_health(ENV, stats)


def test_builders_refuse_to_exceed_the_size_limit() -> None:
    with pytest.raises(PayloadEncodeError, match="split it"):
        build_health(ENV, {"blob": bytes(MAX_PAYLOAD_BYTES)})


# ------------------------------------------------------------------------------- backlog


def _map_payload(extra_entries: int) -> bytes:
    message: dict[str, object] = {"v": 1, "gw": "gw", "id": "gw:00:1", "seq": 1, "ts": 2}
    message.update({f"k{i}": i for i in range(extra_entries)})
    return cbor2.dumps(message)


def _header_length(entries: int) -> int:
    return 1 if entries < 24 else 2 if entries < 256 else 3


@pytest.mark.parametrize("extra", [0, 17, 18, 19, 250, 251])
def test_mark_hist_keeps_every_byte_and_only_grows_the_header(extra: int) -> None:
    """Top-level sizes around the CBOR length-encoding boundaries (23/24 and 255/256 entries),
    where the map header changes length. (65536 entries do not fit the size limit.)"""
    payload = _map_payload(extra)
    marked = mark_hist(payload)
    before, after = decode_message(payload), decode_message(marked)
    assert after == {**before, "hist": True}
    assert list(after)[-1] == "hist"
    entries = len(before)
    body = payload[_header_length(entries) :]
    assert marked[_header_length(entries + 1) :] == body + cbor2.dumps("hist") + b"\xf5"
    assert mark_hist(marked) == marked


@pytest.mark.parametrize("rule", list(examples()))
def test_mark_hist_on_every_message_kind(rule: str) -> None:
    payload = examples()[rule]
    marked = mark_hist(payload)
    before, after = decode_message(payload), decode_message(marked)
    assert after.pop("hist") is True
    assert after == before
    assert (after["id"], after["seq"]) == (before["id"], before["seq"])


def test_mark_hist_leaves_a_signed_message_alone() -> None:
    cose = cbor2.dumps(
        cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, examples()["cmd-result"], bytes(64)])
    )
    assert mark_hist(cose) is cose


def test_mark_hist_refuses_garbage() -> None:
    with pytest.raises(PayloadEncodeError, match="hist"):
        mark_hist(b"\x83\x01\x02\x03")


def test_parse_reads_reports_backlog() -> None:
    payload = build_reads(ENV, "m", [ReadRecord("e", Decimal(1), "kWh", T0)])
    assert parse_reads(mark_hist(payload)).hist


# ------------------------------------------------------------------------------- decoding


def _envelope_map(**extra: object) -> dict[str, object]:
    return {"v": 1, "gw": "gw", "id": "gw:00:1", "seq": 1, "ts": 2, **extra}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes(MAX_PAYLOAD_BYTES + 1), "limit"),
        (cbor2.dumps([1, 2]), "must be a CBOR map"),
        (cbor2.dumps(7), "must be a CBOR map"),
        (cbor2.dumps(_envelope_map()) + b"\x00", "trailing bytes"),
        (cbor2.dumps(_envelope_map())[:-1], "not well-formed"),
        (b"\xbf\x61v\x01\xff", "not well-formed"),  # indefinite-length map
        (b"\xa2\x61v\x01\x61v\x01", "not well-formed"),  # duplicate key
        (cbor2.dumps({1: 2}), "not well-formed|not text"),
        (cbor2.dumps(_envelope_map(x={b"k": 1})), "not text"),
        (cbor2.dumps(_envelope_map(x=cbor2.CBORTag(1, 0))), "tag not allowed"),
        (cbor2.dumps(_envelope_map(x=cbor2.CBORTag(999, 0))), "tag 999"),
        (bytes.fromhex("a16178d81c81d81d00"), "tag not allowed"),  # value sharing: a cycle
        (cbor2.dumps(_envelope_map(x=cbor2.CBORTag(4, [39, 1]))), "exponent"),
        (cbor2.dumps(_envelope_map(x=cbor2.CBORTag(4, [0, 10**38]))), "digits"),
        (cbor2.dumps(_envelope_map(x=cbor2.CBORTag(4, [0, "1"]))), "integer exponent and mantissa"),
        (cbor2.dumps(_envelope_map(x=cbor2.CBORTag(4, [0]))), r"\[exponent, mantissa\]"),
        (cbor2.dumps(_envelope_map(x=2**200)), "bignum"),
        (cbor2.dumps(_envelope_map(x=cbor2.CBORSimpleValue(99))), "CBORSimpleValue"),
        (b"\xa1\x61x\x7f\x61a\xff", "not well-formed"),  # indefinite text
        (b"\xa1\x61x\x62\xff\xfe", "not well-formed"),  # invalid UTF-8
        (b"\x81" * 40 + b"\x00", "not well-formed"),  # too deep
        (cbor2.dumps({"gw": "gw"}), "'v'"),
        (cbor2.dumps(_envelope_map(v=2)), "upgrade"),
        (cbor2.dumps(_envelope_map(v=True)), "'v'"),
        (cbor2.dumps(_envelope_map(seq=-1)), "'seq'"),
        (cbor2.dumps(_envelope_map(ts=1.5)), "'ts'"),
        (cbor2.dumps(_envelope_map(id=7)), "'id'"),
        (cbor2.dumps(_envelope_map(hist=False)), "hist"),
    ],
)
def test_decoder_rejects_with_its_own_error(data: bytes, message: str) -> None:
    with pytest.raises(PayloadDecodeError, match=message):
        decode_payload(data)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"q": "e", "val": 1, "unit": "kWh", "t": 1, "quality": "A"}, "'val'"),
        ({"q": "e", "unit": "kWh", "t": 1, "quality": "A"}, "'val'"),
        ({"q": "e", "val": None, "unit": "kWh", "t": 1, "quality": "A"}, "quality 'N'"),
        ({"q": "e", "val": 1.0, "unit": "kWh", "t": 1, "quality": "A", "x": 1}, "unknown fields"),
        ({"q": "e", "val": 1.0, "unit": "kWh", "t": 1, "quality": "A", "hist": False}, "hist"),
        ({"q": "e", "val": 1.0, "unit": "kWh", "t": 1, "quality": "A", "reasons": 3}, "reasons"),
        ({"q": "e", "val": 1.0, "unit": "kWh", "t": "1", "quality": "A"}, "'t'"),
    ],
)
def test_parse_reads_checks_every_record(record: dict[str, object], message: str) -> None:
    data = cbor2.dumps(_envelope_map(meter="m", reads=[record]))
    with pytest.raises(PayloadDecodeError, match=message):
        parse_reads(data)


def test_payload_to_json() -> None:
    text = payload_to_json(examples()["reads-message"])
    data = json.loads(text)
    assert list(data)[:5] == ["v", "gw", "id", "seq", "ts"]
    assert data["reads"][0]["val"] == "1206.42"
    assert data["reads"][1]["val"] == 229.7
    assert data["reads"][3]["val"] is None
    assert (
        json.loads(payload_to_json(examples()["cmd-result"]))["cmd"]
        == "8d1e5a3c9b7f4e2a6c0d1b3f5e7a9c2d"
    )


def test_json_form_of_non_finite_floats() -> None:
    data = cbor2.dumps(_envelope_map(x=[math.nan, math.inf, -math.inf]))
    assert json.loads(payload_to_json(data))["x"] == ["NaN", "Infinity", "-Infinity"]


# ------------------------------------------------------------------------------- garbage


def _only_our_error(data: bytes) -> None:
    try:
        text = payload_to_json(data)
    except PayloadDecodeError:
        return
    json.loads(text)  # whatever decodes is valid JSON


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_payload_decode_error(data: bytes) -> None:
    _only_our_error(data)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**130), 2**130)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.decimals(places=None)
    | st.builds(cbor2.CBORSimpleValue, st.integers(32, 255)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.integers(), children, max_size=4)
        | st.builds(cbor2.CBORTag, st.integers(0, 2**64 - 1), children)
    ),
    max_leaves=20,
)


@given(cbor_values)
def test_random_cbor_raises_only_payload_decode_error(value: object) -> None:
    try:
        data = cbor2.dumps(value)
    except Exception:  # cbor2 cannot encode this (e.g. a reserved simple value): not our input
        return
    _only_our_error(data)
    if isinstance(value, dict):
        _only_our_error(cbor2.dumps({**_envelope_map(), **value}))


@given(st.sampled_from(list(examples().values())), st.data())
def test_mutated_payloads_raise_only_payload_decode_error(
    payload: bytes, data: st.DataObject
) -> None:
    mutated = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(mutated)))
    _only_our_error(bytes(mutated[:cut]))


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_soak(data: bytes) -> None:
    _only_our_error(data)


@given(st.text(max_size=8), st.one_of(st.floats(), st.decimals(allow_nan=True), st.none(), st.integers()),
       st.one_of(st.text(max_size=4), st.none()), st.integers(-2, 2**64 + 2))
def test_the_actual_read_shortcut_builds_what_the_constructor_builds_or_refuses_the_same(
        q: str, val: object, unit: object, t: int) -> None:
    try:
        expected: ReadRecord | str = ReadRecord(q, val, unit, t)  # type: ignore[arg-type]
    except PayloadEncodeError as exc:
        expected = str(exc)
    try:
        got: ReadRecord | str = ReadRecord.actual(q, val, unit, t)  # type: ignore[arg-type]
    except PayloadEncodeError as exc:
        got = str(exc)
    assert got == expected
    if isinstance(got, ReadRecord):
        assert repr(got) == repr(expected)


def test_the_actual_read_shortcut_makes_a_true_frozen_read_record() -> None:
    import dataclasses
    import pickle

    got = ReadRecord.actual("voltage.a", 230.1, "V", T0)
    want = ReadRecord("voltage.a", 230.1, "V", T0)
    assert type(got) is ReadRecord and got == want and hash(got) == hash(want)
    assert dataclasses.astuple(got) == dataclasses.astuple(want)
    assert pickle.loads(pickle.dumps(got)) == want
    assert dataclasses.replace(got, quality="E", method=1) == dataclasses.replace(
        want, quality="E", method=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.val = 1.0  # type: ignore[misc]
    for record in (got, want):  # no new attribute either way (slots), refused alike
        with pytest.raises((AttributeError, TypeError)):
            record.extra = 1  # type: ignore[attr-defined]


@st.composite
def any_read_records(draw: st.DrawFn) -> ReadRecord:
    """read_records() plus the fields it leaves out (raw, rev), and the plain actual reads a
    poll makes most often."""
    if draw(st.booleans()):
        return ReadRecord(draw(st.sampled_from(["voltage.a", "energy.active.import.total", "ü"])),
                          draw(st.one_of(finite_floats, registers())), "V", draw(times))
    record = draw(read_records())
    raw = draw(st.none() | registers() | finite_floats) if record.quality in "NS" else None
    rev = draw(st.integers(0, 2**64 - 1))
    sup = draw(st.none() | st.tuples(st.text(min_size=1, max_size=40),
                                      st.integers(0, 2**64 - 1))) if rev else None
    return ReadRecord(record.q, record.val, record.unit, record.t, record.quality, record.method,
                      record.reasons, record.hist, raw, rev, sup)


@given(st.lists(any_read_records(), min_size=1, max_size=12), st.text(min_size=1, max_size=30),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_the_direct_reads_encoder_writes_exactly_what_cbor2_writes(
        records: list[ReadRecord], meter: str, epoch: int, seq: int, ts: int) -> None:
    from protocols.payload.encode import _build_reads_cbor2

    env = Envelope("gw-ü-1", epoch, seq, ts)
    assert build_reads(env, meter, records) == _build_reads_cbor2(env, meter, records)


@settings(max_examples=1000)
@given(st.one_of(registers(), st.decimals(allow_nan=True), st.decimals(places=2, min_value=0, max_value=10**9)))
def test_the_actual_read_shortcut_takes_or_refuses_every_decimal_as_the_constructor_does(
        val: Decimal) -> None:
    try:
        expected: ReadRecord | str = ReadRecord("energy.active.import.total", val, "kWh", T0)
    except PayloadEncodeError as exc:
        expected = str(exc)
    try:
        got: ReadRecord | str = ReadRecord.actual("energy.active.import.total", val, "kWh", T0)
    except PayloadEncodeError as exc:
        got = str(exc)
    assert repr(got) == repr(expected)


def test_the_reads_encoders_caches_hold_names_not_messages() -> None:
    from protocols import reads_encoder

    records = [ReadRecord("voltage.a", 230.0, "V", T0), ReadRecord("current.a", 1.5, "A", T0)]
    build_reads(ENV, "m-001", records)
    texts, fragments = len(reads_encoder._TEXT), len(reads_encoder._FRAGMENTS)
    for seq in range(2000):  # every message has an id of its own
        build_reads(Envelope(ENV.gw, ENV.epoch, seq, T0 + seq), "m-001", records)
    assert (len(reads_encoder._TEXT), len(reads_encoder._FRAGMENTS)) == (texts, fragments)
