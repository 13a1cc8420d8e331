"""Properties and examples of the DL/T 645 codec: round trips, formats, catalogue, errors."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import dlt645 as d
from protocols.dlt645.formats import Ascii, Bcd, Digits, Flags, Timestamp
from tests.dlt645_strategies import ALL_ITEMS, MESSAGE_TYPES, MESSAGES, item_values

ADDR = "000102030425"


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_every_message_round_trips(message: d.Message) -> None:
    frame = d.encode(message, preamble=2)
    assert frame[:2] == b"\xfe\xfe"
    assert d.decode(frame) == message


def test_strategies_cover_every_function_of_both_editions() -> None:
    seen: set[type] = set()
    functions: set[tuple[int, str]] = set()

    @settings(max_examples=3000, database=None)
    @given(MESSAGES)
    def collect(message: d.Message) -> None:
        seen.add(type(message))
        desc = d.describe(message)
        functions.add((desc["version"], desc["function"]))

    collect()
    assert seen == MESSAGE_TYPES
    from protocols.dlt645.frame import FUNCTION_TABLE

    expected = {(int(v), name) for v, name in FUNCTION_TABLE.values()}
    assert expected <= functions


def test_every_catalogue_item_round_trips() -> None:
    """Deterministic sweep over all ~2,900 identifiers of both editions (hypothesis samples below)."""
    rng = random.Random(645)
    for version, item in ALL_ITEMS:
        for _ in range(2):
            values = _values(item, rng)
            reply = d.build_read_reply(ADDR, item.di, values, version=version)
            decoded = d.decode(d.encode(reply))
            assert isinstance(decoded, d.ReadReply)
            assert [r.value for r in decoded.readings] == values, f"DI {item.di:X}"
            assert decoded.readings[0].name.startswith(item.name)


def _values(item: d.DataItem, rng: random.Random) -> list[d.Value]:
    out: list[d.Value] = []
    for f in item.fields:
        fmt = f.format
        if isinstance(fmt, Bcd):
            top = 8 * 10 ** (fmt.size * 2 - 1) - 1 if fmt.signed else 10 ** (fmt.size * 2) - 1
            n = rng.choice([0, top, rng.randrange(top + 1)])
            if fmt.signed and rng.random() < 0.5:
                n = -n
            out.append(Decimal(n).scaleb(-fmt.decimals))
        elif isinstance(fmt, Timestamp):
            moment = dt.datetime(2000 + rng.randrange(100), rng.randrange(1, 13), rng.randrange(1, 29),
                                 rng.randrange(24), rng.randrange(60), rng.randrange(60))
            p = fmt.pattern
            if p in ("YYMMDDWW", "YYMMDD"):
                out.append(moment.date())
            elif p == "hhmmss":
                out.append(moment.time())
            elif p == "MMDDhhmm":
                out.append(moment.strftime("%m-%dT%H:%M"))
            else:
                out.append(moment if "ss" in p else moment.replace(second=0))
        elif isinstance(fmt, Ascii):
            out.append("".join(rng.choice("ABCZ019-.") for _ in range(rng.randrange(fmt.size + 1))))
        elif isinstance(fmt, Digits):
            out.append("".join(rng.choice("0123456789ABCDEF") for _ in range(fmt.size * 2)))
        elif isinstance(fmt, Flags):
            out.append({n: rng.random() < 0.5 for n in fmt.names if n})
        else:
            out.append(bytes(rng.randrange(256) for _ in range(fmt.size)))
    if item.repeat_names:
        extra = rng.randrange(len(item.repeat_names) + 1)
        out.extend(Decimal(rng.randrange(10**8)).scaleb(-2) for _ in range(extra))
    return out


@settings(max_examples=500)
@given(st.data())
def test_sampled_items_round_trip_with_hypothesis(data: st.DataObject) -> None:
    version, item = data.draw(st.sampled_from(ALL_ITEMS))
    values = data.draw(item_values(item))
    reply = d.build_read_reply(ADDR, item.di, values, version=version)
    decoded = d.decode(d.encode(reply))
    assert isinstance(decoded, d.ReadReply)
    assert [r.value for r in decoded.readings] == values


def test_block_reads_decode_every_member_and_stop_at_the_data_end() -> None:
    values = [Decimal("1206.42"), Decimal("100.00"), Decimal("200.00"), Decimal("300.00"), Decimal("606.42")]
    reply = d.decode(d.encode(d.build_read_reply(ADDR, 0x0001FF00, values)))
    assert isinstance(reply, d.ReadReply)
    assert [r.name for r in reply.readings] == [
        "energy.active.import.total", "energy.active.import.t1", "energy.active.import.t2",
        "energy.active.import.t3", "energy.active.import.t4"]
    assert [r.value for r in reply.readings] == values
    assert {r.unit for r in reply.readings} == {"kWh"}


def test_sign_magnitude_not_twos_complement() -> None:
    # Current -1.234 A: magnitude 001234, sign bit 7 of the most significant byte → wire 34 12 80.
    fmt = Bcd(3, 3, "A", signed=True)
    assert fmt.encode(Decimal("-1.234")) == bytes([0x34, 0x12, 0x80])
    assert fmt.decode(bytes([0x34, 0x12, 0x80])) == Decimal("-1.234")
    assert fmt.decode(bytes([0x00, 0x00, 0x80])) == Decimal("0.000")  # -0 is 0
    assert not fmt.decode(bytes([0x00, 0x00, 0x80])).is_signed()  # type: ignore[union-attr]
    # Power -12.3456 kW (XX.XXXX): 12 34 56 → 56 34 92
    assert Bcd(3, 4, "kW", signed=True).decode(bytes([0x56, 0x34, 0x92])) == Decimal("-12.3456")


def test_values_are_exact_decimals() -> None:
    assert Bcd(4, 2).decode(bytes.fromhex("42061200")) == Decimal("1206.42")
    assert str(Bcd(4, 2).decode(bytes(4))) == "0.00"
    assert str(Bcd(2, 1).decode(bytes.fromhex("0022"))) == "220.0"


def test_status_word_3_relay_bits() -> None:
    reply = d.decode(d.encode(d.build_read_reply(
        ADDR, 0x04000503, [{"relay_open": True, "pre_trip_alarm": True, "protect": False}])))
    assert isinstance(reply, d.ReadReply)
    flags = reply.readings[0].value
    assert isinstance(flags, dict)
    assert flags["relay_open"] and flags["pre_trip_alarm"] and not flags["protect"]
    assert reply.data == (0x10 | 0x80).to_bytes(2, "little")


def test_unknown_di_keeps_raw_bytes_with_null_unit() -> None:
    frame = d.encode(d.ReadReply(ADDR, 0x0EEE0001, b"\x01\x02\x03"))
    desc = d.describe(d.decode(frame))
    assert desc["di"] == "0EEE0001"
    assert desc["values"] == ["010203"]
    assert desc["unit"] is None


def test_profile_override_changes_a_dis_format() -> None:
    # A vendor that sends voltage with 2 decimals (XX.XX... in 3 bytes) under the standard DI.
    override = d.DataItem(0x02010100, "voltage.a", (d.Field("", d.format_from_spec(
        {"format": "bcd", "bytes": 3, "decimals": 2, "unit": "V"})),))
    cat = d.CATALOGUE_2007.with_overrides({0x02010100: override})
    frame = d.encode(d.ReadReply(ADDR, 0x02010100, bytes.fromhex("561222")))
    reply = d.decode(frame, cat)
    assert isinstance(reply, d.ReadReply)
    assert reply.readings[0].value == Decimal("2212.56")
    with pytest.raises(d.DataError):
        d.decode(frame)  # the standard format is 2 bytes: the vendor frame does not fit it


def test_error_reply_names_the_bits() -> None:
    frame = d.encode(d.ErrorReply(ADDR, "read_data", 0x02))
    assert frame[8] == 0xD1
    msg = d.decode(frame)
    assert isinstance(msg, d.ErrorReply)
    assert msg.errors == ("no_data",)
    assert d.describe(msg)["error"] == ["no_data"]
    pw = d.decode(d.encode(d.ErrorReply(ADDR, "control", 0x04)))
    assert isinstance(pw, d.ErrorReply) and pw.errors == ("password_error",)


def test_checksum_error_says_expected_and_got() -> None:
    frame = bytearray(d.encode(d.ReadRequest(ADDR, 0x00010000)))
    good = frame[-2]
    frame[-2] = (good + 1) & 0xFF
    with pytest.raises(d.ChecksumError) as err:
        d.decode(bytes(frame))
    assert str(err.value) == f"checksum mismatch: expected {good:02X}, got {frame[-2]:02X}"


@pytest.mark.parametrize(
    ("cut", "says"),
    [(5, "header needs 10 bytes"), (12, "2 of 4 data bytes"), (14, "checksum"), (15, "16H end byte")],
)
def test_truncated_frame_says_what_is_missing(cut: int, says: str) -> None:
    frame = d.encode(d.ReadRequest(ADDR, 0x00010000))
    with pytest.raises(d.TruncatedFrame) as err:
        d.decode(frame[:cut])
    assert says in str(err.value)


def test_control_frame_plaintext_layout() -> None:
    msg = d.ControlRequest(ADDR, d.ControlAction.TRIP, dt.datetime(2026, 11, 22, 10, 0, 0),
                           password_level=0x02, password="123456", operator="11223344")
    frame = d.encode(msg)
    data = bytes((b - 0x33) & 0xFF for b in frame[10:-2])
    assert frame[8] == 0x1C and frame[9] == 16
    assert data[:4] == bytes([0x02, 0x56, 0x34, 0x12])  # PA, P0 P1 P2
    assert data[4:8] == bytes([0x44, 0x33, 0x22, 0x11])  # operator code C0..C3
    assert data[8:10] == bytes([0x1A, 0x00])  # N1 trip, N2 reserved
    assert data[10:16] == bytes([0x00, 0x00, 0x10, 0x22, 0x11, 0x26])  # ss mm hh DD MM YY
    assert d.decode(frame) == msg


def test_broadcast_time_sync_layout() -> None:
    frame = d.encode(d.TimeSyncRequest(dt.datetime(2026, 11, 22, 8, 30, 15)))
    assert frame[1:7] == b"\x99" * 6 and frame[8] == 0x08
    assert bytes((b - 0x33) & 0xFF for b in frame[10:16]) == bytes([0x15, 0x30, 0x08, 0x22, 0x11, 0x26])


def test_load_record_request_carries_count_and_time() -> None:
    msg = d.ReadRequest(ADDR, 0x06000001, count=4, start=dt.datetime(2026, 11, 21, 0, 15))
    frame = d.encode(msg)
    data = bytes((b - 0x33) & 0xFF for b in frame[10:-2])
    assert data == bytes([0x01, 0x00, 0x00, 0x06, 0x04, 0x15, 0x00, 0x21, 0x11, 0x26])
    assert d.decode(frame) == msg


def test_1997_read_uses_two_byte_di_and_function_01() -> None:
    frame = d.encode(d.ReadRequest(ADDR, 0x9010, d.Version.V1997))
    assert frame[8] == 0x01 and frame[9] == 2
    assert frame[10:12] == bytes([0x10 + 0x33, 0x90 + 0x33])
    assert d.MAPPING_1997_TO_2007[0x9010] == 0x00010000
    for old, new in d.MAPPING_1997_TO_2007.items():
        old_item = d.CATALOGUE_1997.lookup(old)
        new_item = d.CATALOGUE_2007.lookup(new)
        if old_item is not None and new_item is not None and ".time" not in old_item.name:
            assert old_item.name.split(".")[0] == new_item.name.split(".")[0]


def test_local_errors_for_impossible_requests() -> None:
    with pytest.raises(d.LocalProtocolError, match="12 digits"):
        d.encode(d.ReadRequest("12345", 0x00010000))
    with pytest.raises(d.LocalProtocolError, match="decimal places"):
        d.encode_values(d.CATALOGUE_2007, 0x00010000, [Decimal("1.234")])
    with pytest.raises(d.LocalProtocolError, match="does not fit"):
        d.encode_values(d.CATALOGUE_2007, 0x00010000, [Decimal("1000000.00")])
    # Signed: the top digit may reach 7 (bit 7 is the sign), so PF 1.000 and 79.9999 kW fit...
    assert Bcd(2, 3, signed=True).encode(Decimal("1.000")) == bytes([0x00, 0x10])
    assert Bcd(3, 4, signed=True).encode(Decimal("-79.9999")) == bytes([0x99, 0x99, 0xF9])
    with pytest.raises(d.LocalProtocolError, match="does not fit"):  # ...but 80 kW does not
        d.encode_values(d.CATALOGUE_2007, 0x02030000, [Decimal("80.0000")])
    with pytest.raises(d.LocalProtocolError, match="baud"):
        d.encode(d.ChangeBaudRequest(ADDR, 2500))


def test_midnight_is_a_time_not_an_empty_record() -> None:
    reply = d.decode(d.encode(d.build_read_reply(ADDR, 0x04000102, [dt.time(0, 0, 0)])))
    assert isinstance(reply, d.ReadReply)
    assert reply.readings[0].value == dt.time(0, 0, 0)
    empty = d.decode(d.encode(d.ReadReply(ADDR, 0x03110001, bytes(12))))
    assert isinstance(empty, d.ReadReply)
    assert [r.value for r in empty.readings] == [None, None]  # never-happened event record


def test_follow_up_frames_are_decoded_once_joined() -> None:
    """A block cut inside an item at a frame boundary decodes correctly from the joined data."""
    from protocols.dlt645.transaction import Transaction

    values: list[d.Value] = [Decimal(3)]  # 03300D00: the count comes first in the block
    for n in range(1, 4):
        item = d.CATALOGUE_2007.lookup(0x03300D00 | n)
        assert item is not None
        values += [dt.datetime(2026, 1, n, 1, 2, 3), dt.datetime(2026, 1, n, 2, 3, 4)]
        values += [Decimal(f"{n}{i}.25") for i in range(12)]
    data = d.encode_values(d.CATALOGUE_2007, 0x03300D00, values[:1]) + b"".join(
        d.encode_values(d.CATALOGUE_2007, 0x03300D00 | n, values[1 + (n - 1) * 14 : 1 + n * 14])
        for n in range(1, 4))
    first, second = data[:100], data[100:]  # 100 is inside the second record
    tx = Transaction(d.ReadRequest(ADDR, 0x03300DFF))
    tx.start()
    assert tx.receive(d.decode(d.encode(d.ReadReply(ADDR, 0x03300DFF, first, (), True)))) is not None
    assert tx.receive(d.decode(d.encode(d.ReadFollowupReply(ADDR, 0x03300DFF, second, (), 1, False)))) is None
    assert [r.value for r in tx.readings] == values
    assert tx.readings[15].name == "events.cover_open.last2.start"
