"""Where a published read went: the message id and record index a correction names (``sup``).

A correction (docs/payloads.md, "The reads contract") is a new record for a key (meter, q, t)
with ``rev`` one higher that names the record it supersedes. The store already holds every
record in the payload that carried it; this module finds the newest one for a key:

* **VEE's messages** (estimates, substitutes, re-published intervals) span up to two days of
  intervals, too wide to find by time, so the store notes where each of their records went in
  ``read_versions`` in the transaction that commits them (:func:`note_rows`).
* **A poll's own records** (the read VEE later judges) are found by time: a poll message spans
  the poll, so the outbox index on (meter, t_first) narrows it to a few rows.

Whatever is found is checked against the payload itself — the record at that index has the key
and ``rev`` one lower than the correction's — and named by the payload's own ``id`` (a message
adopted from a spill file keeps its id). Nothing found or nothing that checks: None, and the
correction goes out without ``sup`` rather than name the wrong record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from protocols.payload import PayloadError, ReadRecord, parse_reads

#: How long one poll message can span (its records' times): the window searched by time.
POLL_SPAN_MS: Final = 120_000


def note_rows(meter: str, seq: int, reads: Sequence[ReadRecord]) -> list[tuple[object, ...]]:
    """``read_versions`` rows for the records of one indexed message (later ones win)."""
    return [(meter, record.q, record.t, seq, index) for index, record in enumerate(reads)]


def upsert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO read_versions (meter, quantity, t_ms, seq, idx) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (meter, quantity, t_ms) DO UPDATE SET seq = excluded.seq, "
        "idx = excluded.idx WHERE excluded.seq >= read_versions.seq", rows)


def find(conn: sqlite3.Connection, meter: str, quantity: str, t_ms: int,
         rev: int) -> tuple[str, int] | None:
    """``(message id, index)`` of the record of (meter, quantity, t_ms) with ``rev`` (the one a
    correction with ``rev + 1`` supersedes), or None when the store no longer holds it."""
    noted = conn.execute(
        "SELECT seq, idx FROM read_versions WHERE meter = ? AND quantity = ? AND t_ms = ?",
        (meter, quantity, t_ms)).fetchone()
    if noted is not None:
        row = conn.execute("SELECT payload FROM outbox WHERE seq = ?", (noted[0],)).fetchone()
        return None if row is None else _check(row[0], int(noted[1]), quantity, t_ms, rev)
    rows = conn.execute(
        "SELECT payload FROM outbox WHERE meter = ? AND t_first BETWEEN ? AND ? AND t_last >= ? "
        "ORDER BY seq DESC", (meter, t_ms - POLL_SPAN_MS, t_ms, t_ms)).fetchall()
    for (payload,) in rows:
        try:
            reads = parse_reads(payload).reads
        except PayloadError:
            continue
        for index, record in enumerate(reads):
            if record.q == quantity and record.t == t_ms:
                return _check(payload, index, quantity, t_ms, rev)
    return None


def _check(payload: bytes, index: int, quantity: str, t_ms: int,
           rev: int) -> tuple[str, int] | None:
    try:
        message = parse_reads(payload)
    except PayloadError:
        return None
    if index >= len(message.reads):
        return None
    record = message.reads[index]
    if record.q != quantity or record.t != t_ms or record.rev != rev:
        return None
    return message.id, index
