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
from decimal import Decimal
from typing import Final, cast

from protocols.payload import (
    AliasBook,
    PayloadDecodeError,
    PayloadError,
    ReadRecord,
    decode_message,
    parse_reads,
)
from protocols.payload.compact_decode import records_v2

#: How long one poll message can span (its records' times): the window searched by time.
POLL_SPAN_MS: Final = 120_000


def note_rows(meter: str, seq: int, reads: Sequence[ReadRecord]) -> list[tuple[object, ...]]:
    """``read_versions`` rows for the records of one indexed message (later ones win)."""
    return [(meter, record.q, record.t, seq, index) for index, record in enumerate(reads)]


def rejected_registers(meter: str, reads: Sequence[ReadRecord]
                       ) -> list[tuple[str, str, str, str | None]]:
    """(meter, quantity, value, substitute) of each register read a VEE correction rejects
    (``S``/``N`` with the meter's value in ``raw``), as ``last_registers`` holds them."""
    return [(meter, r.q, str(r.raw), None if not isinstance(r.val, Decimal) else str(r.val))
            for r in reads if r.rev and r.quality in ("S", "N") and isinstance(r.raw, Decimal)]


def upsert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO read_versions (meter, quantity, t_ms, seq, idx) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (meter, quantity, t_ms) DO UPDATE SET seq = excluded.seq, "
        "idx = excluded.idx WHERE excluded.seq >= read_versions.seq", rows)


Key = tuple[str, int, int]  # (quantity, t_ms, rev of the superseded version)


def stored_message(payload: bytes, book: AliasBook) -> tuple[str, tuple[ReadRecord, ...]]:
    """Message id and records of one of this store's reads payloads, schema 1 or 2. A schema-2
    payload names a binding of this store, which ``book`` holds under gateway "" (the store
    does not know the gateway's id): resolved directly, without a birth."""
    message = decode_message(payload)
    if message.get("v") != 2:
        parsed = parse_reads(payload)
        return parsed.id, parsed.reads
    binding = book.get("", cast(int, message["epoch"]), cast(int, message["binding"]))
    if binding is None:
        raise PayloadDecodeError(f"binding {message['binding']} is not one of this store's")
    return cast(str, message["id"]), records_v2(message, binding)


def find(conn: sqlite3.Connection, meter: str, keys: Sequence[Key],
         book: AliasBook) -> dict[Key, tuple[str, int]]:
    """``(message id, index)`` of each committed record of ``meter`` with (quantity, t_ms, rev)
    in ``keys`` — the records corrections with ``rev + 1`` supersede; keys the store no longer
    holds are left out. Each payload is decoded once however many keys it holds (a gap's
    re-scaled estimates travel in one message of up to two days of intervals)."""
    parsed: dict[int, tuple[str, tuple[ReadRecord, ...]] | None] = {}

    def message(seq: int, payload: bytes | None = None
                ) -> tuple[str, tuple[ReadRecord, ...]] | None:
        if seq not in parsed:
            if payload is None:
                row = conn.execute("SELECT payload FROM outbox WHERE seq = ?", (seq,)).fetchone()
                payload = None if row is None else row[0]
            try:
                parsed[seq] = None if payload is None else stored_message(payload, book)
            except PayloadError:
                parsed[seq] = None
        return parsed[seq]

    found: dict[Key, tuple[str, int]] = {}
    for key in keys:
        quantity, t_ms, rev = key
        noted = conn.execute(
            "SELECT seq, idx FROM read_versions WHERE meter = ? AND quantity = ? AND t_ms = ?",
            (meter, quantity, t_ms)).fetchone()
        if noted is not None:
            candidates = [(int(noted[0]), int(noted[1]))]
        else:
            candidates = []
            for seq, payload in conn.execute(
                    "SELECT seq, payload FROM outbox WHERE meter = ? AND t_first BETWEEN ? AND ? "
                    "AND t_last >= ? ORDER BY seq DESC",
                    (meter, t_ms - POLL_SPAN_MS, t_ms, t_ms)).fetchall():
                held = message(int(seq), payload)
                index = _index_of(held, quantity, t_ms)
                if index is not None:
                    candidates = [(int(seq), index)]
                    break
        for seq, index in candidates:
            held = message(seq)
            if held is not None and index < len(held[1]) and (
                    held[1][index].q, held[1][index].t, held[1][index].rev) == key:
                found[key] = (held[0], index)
    return found


def _index_of(message: tuple[str, tuple[ReadRecord, ...]] | None, quantity: str,
              t_ms: int) -> int | None:
    if message is None:
        return None
    for index, record in enumerate(message[1]):
        if record.q == quantity and record.t == t_ms:
            return index
    return None
