"""The rows fast path (protocols/payload/rows.py) against the full decoder, by hypothesis:
for any schema-2 message, ``rows_v2`` equals the full decoder's records as rows, or raises the
same error."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.payload import (
    AliasEntry,
    AliasTable,
    Binding,
    Envelope,
    PayloadDecodeError,
    PayloadEncodeError,
    ReadRecord,
    build_reads_v2,
    decimal_text,
    decode_message,
    record_row,
    rows_v2,
)
from protocols.payload.compact_decode import records_v2
from tests.alias_strategies import alias_tables

T0 = 1_767_225_600_000

tables = alias_tables(-9, 6)


def _full(message: dict[str, object], binding: Binding) -> object:
    try:
        return tuple(record_row(r) for r in records_v2(message, binding))
    except PayloadDecodeError as exc:
        return ("error", str(exc))


def _fast(message: dict[str, object], binding: Binding) -> object:
    try:
        return rows_v2(message, binding)
    except PayloadDecodeError as exc:
        return ("error", str(exc))


items = st.one_of(
    st.integers(-(10**40), 10**40),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=1),
)


@settings(max_examples=400, deadline=None)
@given(table=tables, reads=st.lists(items, min_size=1, max_size=12),
       t=st.integers(-5, 2**64 + 5))
def test_rows_equal_the_full_decoder_on_any_items(table: AliasTable, reads: list[object],
                                                   t: int) -> None:
    binding = Binding(1, "m-1", table)
    message: dict[str, object] = {"t": t, "reads": reads}
    assert _fast(message, binding) == _full(message, binding)


values = st.one_of(
    st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.integers(-(10**6), 10**6).map(lambda n: Decimal(n).scaleb(-2)),
)


@settings(max_examples=300, deadline=None)
@given(table=tables, data=st.data())
def test_rows_equal_the_full_decoder_on_encoded_messages(table: AliasTable,
                                                         data: st.DataObject) -> None:
    """Messages as the gateway encodes them: actual reads in table order (the fast case), with
    now and then an estimated or null value, a correction, or a later time."""
    binding = Binding(7, "m-1", table)
    records = []
    t = T0
    for entry in table.entries:
        if data.draw(st.integers(0, 9)) == 0:
            t += 900_000
        kind = data.draw(st.integers(0, 9))
        val = data.draw(values)
        if kind == 0:
            records.append(ReadRecord(entry.q, None, entry.unit, t, quality="N"))
        elif kind == 1:
            records.append(ReadRecord(entry.q, val, entry.unit, t, quality="E", method=2,
                                      reasons=(3,), rev=1))
        else:
            records.append(ReadRecord(entry.q, val, entry.unit, t))
    try:
        payload = build_reads_v2(Envelope("gw-1", 5, 1, T0 + 1000), binding, records)
    except PayloadEncodeError:
        return  # a value this table cannot carry: nothing to decode
    message = decode_message(payload)
    assert _fast(message, binding) == _full(message, binding)


def test_register_text_keeps_its_scale() -> None:
    table = AliasTable((AliasEntry("e", "kWh", -3, True), AliasEntry("v", "V", -1, False),
                        AliasEntry("big", "Wh", 2, True)))
    binding = Binding(1, "m", table)
    rows = rows_v2({"t": T0, "reads": [-5, 2301, 0]}, binding)
    assert [r.val for r in rows] == ["-0.005", "230.1", "0"]
    assert rows[0] == record_row(ReadRecord("e", Decimal("-0.005"), "kWh", T0))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_is_the_shortest_round_trip_decimal(value: float) -> None:
    text = decimal_text(value)
    assert text == format(Decimal(repr(value)), "f") and float(text) == value
