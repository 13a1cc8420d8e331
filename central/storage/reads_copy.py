"""Reads as PostgreSQL ``COPY`` text, built in one pass: the worker's cheapest way in.

A batch of 1,000 reads messages is 10,000 rows. Handing psycopg a tuple per row and letting
``Copy.write_row`` format it cost a worker about as much as decoding the messages
(bench/bench_central_mqtt.py, py-spy of a worker: docs/performance.md). Here each row is one
f-string, and what repeats (gateway, meter, message id, a quantity's name and unit) is escaped
once per message or once per name. The text is the same a row-by-row ``COPY`` would send:
tab-separated, ``\\N`` for NULL, backslash escapes for the characters COPY's text format
reserves (names come from the wire: a tab or newline in one must not split a row).

Only the fast path uses it (:meth:`central.storage.database.Database.try_copy`): rows are
written as they come, so a key met twice — in the batch or already stored — makes the COPY
fail, and the batch then goes through the upsert that keeps the higher ``rev``.
"""

from __future__ import annotations

from collections.abc import Sequence

from central.decoding import ReadsIn

__all__ = ["copy_escape", "reads_copy_text"]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b",
                          "\f": "\\f", "\v": "\\v"})
_RESERVED = frozenset("\\\t\n\r\b\f\v")
#: Escaped names met so far (quantities, units: a few dozen in a real fleet); reset if a
#: hostile stream sends many distinct ones.
_NAMES: dict[str, str] = {}
_NAMES_MAX = 10_000


def copy_escape(text: str) -> str:
    """``text`` as a field of COPY's text format."""
    return text.translate(_ESCAPES) if not _RESERVED.isdisjoint(text) else text


def _name(text: str) -> str:
    found = _NAMES.get(text)
    if found is None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        found = _NAMES[text] = copy_escape(text)
    return found


def reads_copy_text(messages: Sequence[ReadsIn], now_ms: int) -> tuple[str, int]:
    """The COPY text of every read of ``messages`` in the column order of
    ``central.storage.ingest``'s reads (gw, meter, quantity, t_ms, value, unit, quality,
    method, reasons, message_id, rev, raw, received_ms), and how many rows."""
    lines: list[str] = []
    add = lines.append
    for m in messages:
        head = f"{copy_escape(m.stream.gw)}\t{copy_escape(m.meter)}\t"
        mid = copy_escape(m.message_id)
        for r in m.rows:
            method = "\\N" if r.method is None else r.method
            reasons = ";".join(map(str, r.reasons)) if r.reasons else ""
            val = "\\N" if r.val is None else r.val
            raw = "\\N" if r.raw is None else r.raw
            add(f"{head}{_name(r.q)}\t{r.t}\t{val}\t{_name(r.unit)}\t{_name(r.quality)}\t"
                f"{method}\t{reasons}\t{mid}\t{r.rev}\t{raw}\t{now_ms}\n")
    return "".join(lines), len(lines)
