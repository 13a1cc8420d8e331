"""Reads as database rows: each value as exact decimal text, without building records.

A consumer storing reads wants, per value, the quantity, time, the value as exact decimal text
(what a NUMERIC column or a TEXT column keeps), unit, quality, method, reasons, ``rev`` and the
raw value — a :class:`ReadRow`. Going through :class:`~protocols.payload.records.ReadRecord`
builds a ``Decimal`` or a float, validates it field by field, and formats it back to text;
measured with ``bench/bench_central_mqtt.py``, that was most of a consumer's time.

:func:`rows_v2` takes the shortcut where a schema-2 message allows it: a record that is a bare
integer mantissa in table order (an actual read, the common case) becomes its row directly —
a register's text by placing the decimal point in the mantissa's digits, an instantaneous
value's text by the same correctly-rounded float the full decoder makes; a bare decimal or
float in table order (a value off its table's scale) is checked as the record it is. Everything else in the
message (a record with a quality, a correction or a unit of its own, a mantissa out of range, a
time out of range) sends the whole message through the full decoder, so the result is always
exactly ``[record_row(r) for r in records_v2(message, binding)]`` (tests/test_payload_rows.py
checks that with hypothesis) and every invalid message raises the same error.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import NamedTuple, cast

from protocols.payload.aliases import Binding
from protocols.payload.compact_decode import records_v2
from protocols.payload.records import ReadRecord
from protocols.payload.schema import MAX_DECIMAL_DIGITS, PayloadEncodeError

__all__ = ["ReadRow", "decimal_text", "record_row", "rows_v2"]

_UINT64_MAX = 2**64 - 1
_MANTISSA_LIMIT = 10**MAX_DECIMAL_DIGITS


class ReadRow(NamedTuple):
    """One read as stored: ``val`` and ``raw`` exact decimal text (None when absent)."""

    q: str
    t: int
    val: str | None
    unit: str
    quality: str
    method: int | None
    reasons: tuple[int, ...]
    rev: int
    raw: str | None


def decimal_text(value: Decimal | float | None) -> str | None:
    """A value as exact plain decimal text (``Decimal("1206.420")`` → ``"1206.420"``): registers
    keep their resolution; an instantaneous float becomes its shortest round-trip decimal."""
    if value is None:
        return None
    if isinstance(value, float):
        text = repr(value)
        if "e" not in text:  # already plain: what format(Decimal(text), "f") would give
            return text
        value = Decimal(text)
    return format(value, "f")


def record_row(record: ReadRecord) -> ReadRow:
    """The row of a decoded record."""
    return ReadRow(record.q, record.t, decimal_text(record.val), record.unit, record.quality,
                   record.method, record.reasons, record.rev, decimal_text(record.raw))


def _mantissa_text(mantissa: int, exponent: int) -> str:
    """``format(Decimal(f"{mantissa}E{exponent}"), "f")`` by placing the point."""
    if exponent >= 0:
        return str(mantissa) + "0" * exponent if mantissa else "0"
    digits = str(abs(mantissa)).rjust(1 - exponent, "0")
    sign = "-" if mantissa < 0 else ""
    return f"{sign}{digits[:exponent]}.{digits[exponent:]}"


def _full(message: Mapping[str, object], binding: Binding) -> tuple[ReadRow, ...]:
    return tuple(record_row(r) for r in records_v2(message, binding))


def rows_v2(message: Mapping[str, object], binding: Binding) -> tuple[ReadRow, ...]:
    """The rows of a schema-2 message that
    :func:`~protocols.payload.compact_decode.check_v2` accepted, read against ``binding``
    (equal to the full decoder's records as rows; see the module docstring)."""
    entries = binding.table.entries
    count = len(entries)
    t = cast(int, message["t"])
    cursor = 0
    out: list[ReadRow] = []
    append = out.append
    for item in cast(list[object], message["reads"]):
        if type(item) is list:
            t += item[0]
            continue
        if cursor >= count or not 0 <= t <= _UINT64_MAX:
            return _full(message, binding)
        entry = entries[cursor]
        if type(item) is not int:
            if type(item) is not float and type(item) is not Decimal:
                return _full(message, binding)
            try:  # a value sent as it is (a register off its table's scale): checked as a record
                append(record_row(ReadRecord(entry.q, cast(float, item), entry.unit, t)))
            except PayloadEncodeError:
                return _full(message, binding)
            cursor += 1
            continue
        exponent = entry.exponent
        if exponent is None:
            return _full(message, binding)
        if entry.decimal:
            if not -_MANTISSA_LIMIT < item < _MANTISSA_LIMIT:
                return _full(message, binding)
            text = _mantissa_text(item, exponent)
        else:
            try:
                value = float(item / 10**-exponent) if exponent <= 0 else float(
                    item * 10**exponent)
            except OverflowError:
                return _full(message, binding)
            text = cast(str, decimal_text(value))
        append(ReadRow(entry.q, t, text, entry.unit, "A", None, (), 0, None))
        cursor += 1
    return tuple(out)
