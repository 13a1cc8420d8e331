"""Reads as PostgreSQL ``COPY`` text, built in one pass: the worker's cheapest way in.

A batch of 1,000 reads messages is 10,000 rows. Handing psycopg a tuple per row and letting
``Copy.write_row`` format it cost a worker about as much as decoding the messages
(bench/bench_central_mqtt.py, py-spy of a worker: docs/performance.md). Here each row is one
f-string, and what repeats (gateway, meter, message id, a quantity's name and unit) is escaped
once per message or once per name (:mod:`central.copy_text`); a plain v2 message arrives with
its lines already made by the decoder, without rows. The text is the same a row-by-row ``COPY``
would send: tab-separated, ``\\N`` for NULL, backslash escapes for the characters COPY's text
format reserves (names come from the wire: a tab or newline in one must not split a row).

Only the fast path uses it (:meth:`central.storage.database.Database.try_copy`): rows are
written as they come, so a key met twice — in the batch or already stored — makes the COPY
fail, and the batch then goes through the upsert that keeps the higher ``rev``.
"""

from __future__ import annotations

from collections.abc import Sequence

from central.copy_text import copy_escape, name
from central.decoding import ReadsIn

__all__ = ["copy_escape", "reads_copy_text"]


def reads_copy_text(messages: Sequence[ReadsIn], now_ms: int) -> tuple[str, int]:
    """The COPY text of every read of ``messages`` in the column order of
    ``central.storage.ingest``'s reads (gw, meter, quantity, t_ms, value, unit, quality,
    method, reasons, message_id, rev, raw, received_ms), and how many rows. A message the
    decoder already turned into lines (``copy_lines``, :mod:`central.copy_text`) is taken as
    it is; every line gets ``received_ms`` and its newline in one ``join``."""
    lines: list[str] = []
    add = lines.append
    for m in messages:
        if m.copy_lines is not None:
            lines += m.copy_lines
            continue
        head = f"{copy_escape(m.stream.gw)}\t{copy_escape(m.meter)}\t"
        mid = copy_escape(m.message_id)
        for r in m.rows:
            method = "\\N" if r.method is None else r.method
            reasons = ";".join(map(str, r.reasons)) if r.reasons else ""
            val = "\\N" if r.val is None else r.val
            raw = "\\N" if r.raw is None else r.raw
            add(f"{head}{name(r.q)}\t{r.t}\t{val}\t{name(r.unit)}\t{name(r.quality)}\t"
                f"{method}\t{reasons}\t{mid}\t{r.rev}\t{raw}")
    if not lines:
        return "", 0
    end = f"\t{now_ms}\n"
    return end.join(lines) + end, len(lines)
