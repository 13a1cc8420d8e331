"""DL/T 645-2007 load records (appendix A.7): layout, round trips, garbage, whole frames."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import dlt645 as d
from protocols.dlt645.load_records import BLOCK_SIZES
from protocols.dlt645.transaction import Transaction

ADDR = "000102030425"

#: Built by hand from table A.7 (module docstring of protocols/dlt645/load_records.py): a class-4
#: record of 2026-11-21 00:15 with forward active 1206.42 kWh, reverse 0.00, combined reactive 1
#: 12.34 kvarh and combined reactive 2 −5.00 kvarh (sign bit in the top byte). Classes 1–3 and
#: 5–6 are bare separators; L = 5 (time) + 16 (block 4) + 6 separators = 27 = 1BH; the checksum
#: A0+A0+1B+15+00+21+11+26+3·AA+42+06+12+34+12+05+80+3·AA = 6E9H → E9.
CLASS4_RECORD = bytes.fromhex(
    "A0 A0 1B 15 00 21 11 26 AA AA AA 42 06 12 00 00 00 00 00 34 12 00 00 00 05 00 80 AA AA AA"
    " E9 E5")


def test_class4_record_layout_matches_the_table() -> None:
    record = d.LoadRecord(dt.datetime(2026, 11, 21, 0, 15), Decimal("1206.42"), Decimal("0.00"),
                          Decimal("12.34"), Decimal("-5.00"))
    assert d.encode_load_records([record]) == CLASS4_RECORD
    assert d.decode_load_records(CLASS4_RECORD) == (record,)


def test_a_full_record_with_every_class_yields_its_energy_block() -> None:
    """A 06000001 record carries all six blocks (103 bytes with the framing): the other classes
    are skipped by size, block 4 is read."""
    blocks = [bytes([0x11]) * size for size in BLOCK_SIZES]
    blocks[3] = bytes.fromhex("78 56 34 12 00 00 00 00 00 00 00 00 00 00 00 00")
    body = bytes.fromhex("00 10 05 03 26") + b"".join(b + b"\xaa" for b in blocks)
    head = b"\xa0\xa0" + bytes([len(body)])
    record = head + body + bytes([sum(head + body) & 0xFF, 0xE5])
    assert len(record) == 103
    (decoded,) = d.decode_load_records(record)
    assert decoded.time == dt.datetime(2026, 3, 5, 10, 0)
    assert decoded.active_import == Decimal("123456.78")


def test_record_without_energy_class_and_flagged_record() -> None:
    bare = d.LoadRecord(dt.datetime(2026, 1, 2, 3, 45))
    flagged = d.LoadRecord(dt.datetime(2026, 1, 2, 4, 0), Decimal("1.00"), Decimal("0.00"),
                           Decimal("0.00"), Decimal("0.00"), valid=False)
    data = d.encode_load_records([bare, flagged])
    assert data[len(d.encode_load_records([bare])):][:2] == b"\xe0\xe0"
    assert d.decode_load_records(data) == (bare, flagged)


_ENERGY = st.decimals(min_value=0, max_value=Decimal("999999.99"), places=2)
_REACTIVE = st.decimals(min_value=Decimal("-799999.99"), max_value=Decimal("799999.99"), places=2)
_TIMES = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59)
                      ).map(lambda t: t.replace(second=0, microsecond=0))
_RECORDS = st.one_of(
    st.builds(d.LoadRecord, _TIMES, _ENERGY, _ENERGY, _REACTIVE, _REACTIVE, st.booleans()),
    st.builds(d.LoadRecord, _TIMES, valid=st.booleans()),
)


@settings(max_examples=400)
@given(st.lists(_RECORDS, max_size=8))
def test_records_round_trip(records: list[d.LoadRecord]) -> None:
    decoded = d.decode_load_records(d.encode_load_records(records))
    assert decoded == tuple(records)
    # -0.00 is +0.00 on the wire and in value
    assert [r.active_import for r in decoded] == [r.active_import for r in records]


@settings(max_examples=400)
@given(st.lists(_RECORDS, min_size=1, max_size=6), st.integers(0, 10_000), st.integers(1, 255))
def test_records_in_a_whole_reply_frame_survive_follow_ups(records: list[d.LoadRecord],
                                                           where: int, delta: int) -> None:
    """Through the frame codec and the transaction (which joins follow-up frames), and a damaged
    copy either decodes to records or raises DataError — nothing else."""
    data = d.encode_load_records(records)
    request = d.ReadRequest(ADDR, d.ENERGY_RECORDS_DI, count=len(records), start=records[0].time)
    tx = Transaction(request)
    tx.start()
    cut = min(len(data), 150)
    first = d.ReadReply(ADDR, d.ENERGY_RECORDS_DI, data[:cut], more_follows=cut < len(data))
    follow = tx.receive(d.decode(d.encode(first)))
    if cut < len(data):
        assert follow is not None
        tx.receive(d.decode(d.encode(d.ReadFollowupReply(ADDR, d.ENERGY_RECORDS_DI, data[cut:],
                                                         seq=1))))
    assert tx.finished and d.decode_load_records(bytes(tx.data)) == tuple(records)
    damaged = bytearray(data)
    damaged[where % len(damaged)] = (damaged[where % len(damaged)] + delta) & 0xFF
    try:
        out = d.decode_load_records(bytes(damaged))
    except d.DataError:
        return
    assert all(isinstance(r, d.LoadRecord) for r in out)


@settings(max_examples=1500)
@given(st.binary(max_size=300))
def test_garbage_raises_only_data_error(data: bytes) -> None:
    try:
        out = d.decode_load_records(data)
    except d.DataError:
        return
    assert all(isinstance(r, d.LoadRecord) for r in out)


@pytest.mark.parametrize(("damage", "says"), [
    (lambda b: b"\x12\x34" + b[2:], "starts with 1234"),
    (lambda b: b[:-2] + b"\x00" + b[-1:], "checksum 00, computed E9"),
    (lambda b: b[:-1], "lacks its E5 end code"),
    (lambda b: b[:-1] + b"\xe6", "lacks its E5 end code"),
])
def test_broken_records_say_what_is_wrong(damage: object, says: str) -> None:
    with pytest.raises(d.DataError, match=says):
        d.decode_load_records(damage(CLASS4_RECORD))  # type: ignore[operator]


def test_a_block_without_its_separator_is_refused() -> None:
    body = bytes.fromhex("15 00 21 11 26 AA AA AA") + bytes(16) + bytes.fromhex("11 AA AA")
    head = b"\xa0\xa0" + bytes([len(body)])
    with pytest.raises(d.DataError, match="class-4 block of 16 bytes is not followed by"):
        d.decode_load_records(head + body + bytes([sum(head + body) & 0xFF, 0xE5]))


def test_encoder_refuses_seconds() -> None:
    with pytest.raises(d.LocalProtocolError, match="stamped to the minute"):
        d.encode_load_records([d.LoadRecord(dt.datetime(2026, 1, 1, 0, 0, 5))])
