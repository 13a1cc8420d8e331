"""records_v2's shortcut for bare mantissas in table order (protocols/payload/compact_decode.py,
``_plain_records``) against the path every other message takes (``_records``), by hypothesis:
the same records — values of the same type, equal — or the same error, on any items and on
messages as the gateway encodes them."""

from __future__ import annotations

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
    decode_message,
)
from protocols.payload.compact_decode import _plain_records, _records, records_v2
from tests.alias_strategies import alias_tables

T0 = 1_767_225_600_000

tables = alias_tables(-30, 30)
items = st.one_of(
    st.integers(-(10**40), 10**40),
    st.integers(-(2**63), 2**63),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=1),
)


def _outcome(decode: object, message: dict[str, object], binding: Binding) -> object:
    try:
        records = decode(message, binding)  # type: ignore[operator]
    except PayloadDecodeError as exc:
        return ("error", str(exc))
    return [(r, type(r.val), type(r.raw)) for r in records]


def _same(message: dict[str, object], binding: Binding) -> None:
    assert _outcome(records_v2, message, binding) == _outcome(_records, message, binding)


@settings(max_examples=500, deadline=None)
@given(table=tables, reads=st.lists(items, min_size=1, max_size=8),
       t=st.integers(-5, 2**64 + 5))
def test_the_shortcut_equals_the_full_path_on_any_items(table: AliasTable, reads: list[object],
                                                        t: int) -> None:
    _same({"t": t, "reads": reads}, Binding(1, "m-1", table))


@settings(max_examples=300, deadline=None)
@given(table=tables, data=st.data())
def test_the_shortcut_equals_the_full_path_on_encoded_polls(table: AliasTable,
                                                            data: st.DataObject) -> None:
    binding = Binding(7, "m-1", table)
    records = []
    for entry in table.entries:
        if entry.decimal:
            val: object = data.draw(st.decimals(min_value=-(10**12), max_value=10**12,
                                                places=max(0, -(entry.exponent or 0)),
                                                allow_nan=False))
        else:
            val = data.draw(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
        try:
            records.append(ReadRecord(entry.q, val, entry.unit, T0))  # type: ignore[arg-type]
        except PayloadEncodeError:
            return  # more digits than a record carries (38): refused before any encoding
    try:
        payload = build_reads_v2(Envelope("gw-1", 5, 1, T0 + 1000), binding, records)
    except PayloadEncodeError:
        return  # a value this table cannot carry: nothing to decode
    _same(decode_message(payload), binding)


def test_a_poll_of_scaled_registers_takes_the_shortcut() -> None:
    """The bench meter's poll (integer registers with decimal scales): every item a bare
    mantissa, so a correction's look-up decodes it without the per-item dicts."""
    table = AliasTable((AliasEntry("voltage.a", "V", -1, False),
                        AliasEntry("energy.active.import.total", "kWh", -2, True)))
    binding = Binding(3, "m-1", table)
    from decimal import Decimal
    records = [ReadRecord("voltage.a", 230.1, "V", T0),
               ReadRecord("energy.active.import.total", Decimal("1234.56"), "kWh", T0)]
    message = decode_message(build_reads_v2(Envelope("gw-1", 5, 1, T0), binding, records))
    plain = _plain_records(message, binding)
    assert plain is not None and list(plain) == records
    assert type(plain[1].val) is Decimal and type(plain[0].val) is float
