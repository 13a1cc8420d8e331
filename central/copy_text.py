"""PostgreSQL ``COPY`` text for reads, and the shortcut from a v2 message straight to it.

COPY's text format: tab-separated fields, ``\\N`` for NULL, backslash escapes for the
characters it reserves (names come from the wire: a tab or newline in one must not split a
row). :func:`copy_escape` escapes a field; :func:`name` does it once per distinct quantity or
unit name.

:func:`v2_copy_lines` is the worker's common case. A schema-2 reads message whose records are
all bare mantissas in table order (an actual poll) becomes, per value, the text of its COPY row
directly, with the value's exact decimal text as :func:`~protocols.payload.rows.rows_v2` makes
it, but without a :class:`~protocols.payload.rows.ReadRow` per value and without formatting
that row again for COPY (py-spy of a worker in bench/bench_central_mqtt.py: building the rows
and their COPY text was ~30 % of the worker's samples once the receive path was cheap;
docs/performance.md, issue 15). A line is what
:func:`central.storage.reads_copy.reads_copy_text` writes for that row, without its last field
(``received_ms``, known only when the batch is stored) and its newline. Every other message
(a record with a quality, a correction, a value off its table's scale, anything the full
decoder has to judge) gets None and goes the rows' way; tests/central/test_copy_text.py checks,
by hypothesis, that both give the same text, and that PostgreSQL stores the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from protocols.payload import AliasTable, Binding, decimal_text
from protocols.payload.schema import MAX_DECIMAL_DIGITS

__all__ = ["copy_escape", "name", "v2_copy_lines"]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b",
                          "\f": "\\f", "\v": "\\v"})
_RESERVED = frozenset("\\\t\n\r\b\f\v")
#: Escaped names met so far (quantities, units: a few dozen in a real fleet); reset if a
#: hostile stream sends many distinct ones.
_NAMES: dict[str, str] = {}
_NAMES_MAX = 10_000
_MANTISSA_LIMIT = 10**MAX_DECIMAL_DIGITS
#: One alias entry's fixed parts: escaped ``quantity\t``, ``\tunit\tA\t\N\t\t``, whether it
#: is a register (decimal), its exponent and ``10 ** abs(exponent)``.
_Entry = tuple[str, str, bool, "int | None", int]
#: Per alias table (by identity; the table is kept so that its id is not reused): its entries'
#: fixed parts.
_TABLES: dict[int, tuple[AliasTable, list[_Entry]]] = {}
_TABLES_MAX = 100_000
_UINT64_MAX = 2**64 - 1


def copy_escape(text: str) -> str:
    """``text`` as a field of COPY's text format."""
    return text.translate(_ESCAPES) if not _RESERVED.isdisjoint(text) else text


def name(text: str) -> str:
    """:func:`copy_escape` of a name that repeats (cached)."""
    found = _NAMES.get(text)
    if found is None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        found = _NAMES[text] = copy_escape(text)
    return found


def _parts(table: AliasTable) -> list[_Entry]:
    cached = _TABLES.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    if len(_TABLES) >= _TABLES_MAX:
        _TABLES.clear()
    parts = [(f"{name(e.q)}\t",
              f"\t{name(e.unit)}\tA\t\\N\t\t",  # quality A, method NULL, no reasons
              e.decimal, e.exponent, 1 if e.exponent is None else 10 ** abs(e.exponent))
             for e in table.entries]
    _TABLES[id(table)] = (table, parts)
    return parts


def v2_copy_lines(message: Mapping[str, object], binding: Binding, gw: str, meter: str,
                  message_id: str) -> tuple[list[str], list[int]] | None:
    """The COPY lines (without ``\\treceived_ms\\n``) of a checked schema-2 message read
    against ``binding``, and its rows' times (each run of equal ones once); None unless every
    record is a bare mantissa the shortcut can place (module docstring).

    A value's text is what :func:`protocols.payload.rows.rows_v2` stores: a register's digits
    with the point placed (``format(Decimal(f"{mantissa}E{exponent}"), "f")``), an
    instantaneous value's correctly rounded float as its shortest decimal
    (:func:`protocols.payload.rows.decimal_text`)."""
    parts = _parts(binding.table)
    count = len(parts)
    head = f"{copy_escape(gw)}\t{copy_escape(meter)}\t"
    tail = f"{copy_escape(message_id)}\t0\t\\N"  # message id, rev 0, raw NULL
    t = cast(int, message["t"])
    times: list[int] = []
    last = -1
    lines: list[str] = []
    add = lines.append
    cursor = 0
    for item in cast(list[object], message["reads"]):
        if type(item) is list:
            t += item[0]
            continue
        if type(item) is not int or cursor >= count or not 0 <= t <= _UINT64_MAX:
            return None
        q, unit, decimal, exponent, scale = parts[cursor]
        if exponent is None:
            return None
        if decimal:
            if not -_MANTISSA_LIMIT < item < _MANTISSA_LIMIT:
                return None
            if exponent < 0:
                digits = str(-item if item < 0 else item).rjust(1 - exponent, "0")
                text = (f"-{digits[:exponent]}.{digits[exponent:]}" if item < 0
                        else f"{digits[:exponent]}.{digits[exponent:]}")
            else:
                text = f"{item}{'0' * exponent}" if item else "0"
        else:
            try:
                value = item / scale if exponent <= 0 else float(item * scale)
            except OverflowError:
                return None
            text = repr(value)
            if "e" in text:  # beyond repr's plain range: the same exact text the rows carry
                text = cast(str, decimal_text(value))
        add(f"{head}{q}{t}\t{text}{unit}{tail}")
        if t != last:
            times.append(t)
            last = t
        cursor += 1
    return lines, times
