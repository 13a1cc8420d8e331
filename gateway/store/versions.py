"""Where a published read went: the message id and record index a correction names (``sup``).

A correction (docs/payloads.md, "The reads contract") is a new record for a key (meter, q, t)
with ``rev`` one higher that names the record it supersedes. The store already holds every
record in the payload that carried it; this module finds the newest one for a key:

* **VEE's messages** (estimates, substitutes, re-published intervals) span up to two days of
  intervals, too wide to find by time, so the store notes where each of their records went in
  ``read_versions`` in the transaction that commits them (:func:`note_rows`).
* **A poll's own records** (the read VEE later judges) are found by time: a poll message spans
  the poll, so the outbox index on (meter, t_first) narrows it to the meter's messages whose
  first record is at most as far before the key as the widest poll message the store holds
  (never more than POLL_SPAN_MS), read once for a grading's keys close in time.

Whatever is found is checked against the payload itself — the record at that index has the key
and ``rev`` one lower than the correction's — and named by the payload's own ``id`` (a message
adopted from a spill file keeps its id). Nothing found or nothing that checks: None, and the
correction goes out without ``sup`` rather than name the wrong record.
"""

from __future__ import annotations

import json
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
#: Keys this close share one time-window query even when their windows do not touch.
JOIN_MS: Final = 10_000


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
         book: AliasBook, span_ms: int = POLL_SPAN_MS) -> dict[Key, tuple[str, int]]:
    """``(message id, index)`` of each committed record of ``meter`` with (quantity, t_ms, rev)
    in ``keys`` — the records corrections with ``rev + 1`` supersede; keys the store no longer
    holds are left out.

    A key noted in ``read_versions`` is named by its note and nothing else. Any other key by
    time: of the messages of ``meter`` whose first record is at most POLL_SPAN_MS before the
    key and whose last one is not before it, the newest (highest seq) holding a record of the
    key's (quantity, t_ms) — its first such record, which must then have the key's ``rev``.

    ``span_ms`` is the store's bound on ``t_last - t_first`` of the reads messages it holds
    without notes (``Store.reads_span_ms``): such a message whose first record is further than
    that before a key ends before it, so cannot hold it, and the window starts there when that
    is nearer than POLL_SPAN_MS (a Modbus poll spans 0 ms: the window is the key's own moment).
    VEE's messages are noted record by record and found by their notes; the newest version of
    a key is always noted (a note moves only to a newer message and goes only with its row), so
    a VEE message the narrower window leaves out holds no key a correction names.

    Cost: a grading names ~20 voltage keys of one meter a few seconds apart. The windows of
    keys close in time are scanned once, as their union (:func:`_windows`), and each key picks
    its messages from those rows; with the 120 s window that was ~120 outbox rows at 1 s
    polling, with a Modbus store's bound a row or two a key (150 µs a key with a query per key,
    18.9 µs with one 120 s scan, 10.6 µs with the bound: bench/bench_superseded.py, which also
    compares the answers); each payload is
    decoded once however many keys it holds (a gap's re-scaled estimates travel in one message
    of up to two days of intervals), and looked into through a map of its (quantity, t_ms)."""
    held = _Messages(conn, book)
    notes = _notes(conn, meter, keys)
    found: dict[Key, tuple[str, int]] = {}
    by_time: list[Key] = []
    for key in keys:
        noted = notes.get((key[0], key[1]))
        if noted is None:
            by_time.append(key)
        else:
            _name(found, key, held.message(noted[0]), noted[1])
    reach = max(0, min(span_ms, POLL_SPAN_MS))
    for window in _windows(by_time, reach):
        rows = held.spanning(meter, window[0][1], window[-1][1], reach)
        for key in window:
            quantity, t_ms, _ = key
            for seq, t_first, t_last in rows:
                if t_ms - reach <= t_first <= t_ms <= t_last:
                    index = held.index_of(seq, quantity, t_ms)
                    if index is not None:
                        _name(found, key, held.message(seq), index)
                        break
    return found


def _notes(conn: sqlite3.Connection, meter: str, keys: Sequence[Key]
           ) -> dict[tuple[str, int], tuple[int, int]]:
    """``read_versions``' (seq, idx) of the keys' (quantity, t_ms) that have a note: one query
    per quantity, its times as a JSON array (one statement text for any number of keys; half
    the time of a point query per key, bench/bench_superseded.py)."""
    times: dict[str, list[int]] = {}
    for quantity, t_ms, _ in keys:
        times.setdefault(quantity, []).append(t_ms)
    notes: dict[tuple[str, int], tuple[int, int]] = {}
    for quantity, wanted in times.items():
        for t_ms, seq, index in conn.execute(
                "SELECT t_ms, seq, idx FROM read_versions WHERE meter = ? AND quantity = ? "
                "AND t_ms IN (SELECT value FROM json_each(?))",
                (meter, quantity, json.dumps(wanted))):
            notes[(quantity, int(t_ms))] = (int(seq), int(index))
    return notes


def _name(found: dict[Key, tuple[str, int]], key: Key,
          message: tuple[str, tuple[ReadRecord, ...]] | None, index: int) -> None:
    """Name ``key`` by record ``index`` of ``message`` if that record is the key's version."""
    if message is not None and index < len(message[1]):
        record = message[1][index]
        if (record.q, record.t, record.rev) == key:
            found[key] = (message[0], index)


def _windows(keys: list[Key], reach: int) -> list[list[Key]]:
    """``keys`` by time, cut where two neighbours are more than ``max(reach, JOIN_MS)`` apart:
    one query per group, for the union of its keys' windows. With a reach of JOIN_MS or more
    no row of that union is outside every key's window (a row is scanned no more than with a
    query per key); with a narrower one (a store of polls that each span one moment) a group
    also reads the few messages between its keys' moments, cheaper than a query per moment."""
    gap = max(reach, JOIN_MS)
    windows: list[list[Key]] = []
    for key in sorted(keys, key=lambda k: k[1]):
        if windows and key[1] - windows[-1][-1][1] <= gap:
            windows[-1].append(key)
        else:
            windows.append([key])
    return windows


class _Messages:
    """The messages one :func:`find` call looks into, each decoded once (None: gone, or a
    payload that does not check)."""

    def __init__(self, conn: sqlite3.Connection, book: AliasBook) -> None:
        self.conn = conn
        self.book = book
        self.parsed: dict[int, tuple[str, tuple[ReadRecord, ...]] | None] = {}
        self.payloads: dict[int, bytes] = {}  # fetched with a window, not decoded yet
        self.positions: dict[int, dict[tuple[str, int], int]] = {}

    def spanning(self, meter: str, first_ms: int, last_ms: int, reach: int
                 ) -> list[tuple[int, int, int]]:
        """``(seq, t_first, t_last)``, newest first, of the messages of ``meter`` in the window
        of a key at ``first_ms``, of one at ``last_ms`` or of any between: their first record
        in [first_ms - reach, last_ms], their last one not before first_ms. Their
        payloads are kept for :meth:`message` (a few rows: fetched with the row, not again)."""
        rows = self.conn.execute(
            "SELECT seq, t_first, t_last, payload FROM outbox WHERE meter = ? "
            "AND t_first BETWEEN ? AND ? AND t_last >= ?",
            (meter, first_ms - reach, last_ms, first_ms)).fetchall()
        rows.sort(key=lambda row: -row[0])  # in Python: a few rows, no temporary B-tree
        for seq, _, _, payload in rows:
            self.payloads[seq] = payload
        return [(seq, t_first, t_last) for seq, t_first, t_last, _ in rows]

    def message(self, seq: int) -> tuple[str, tuple[ReadRecord, ...]] | None:
        if seq in self.parsed:
            return self.parsed[seq]
        payload = self.payloads.pop(seq, None)
        if payload is None:
            row = self.conn.execute("SELECT payload FROM outbox WHERE seq = ?", (seq,)).fetchone()
            payload = None if row is None else row[0]
        try:
            parsed = None if payload is None else stored_message(payload, self.book)
        except PayloadError:
            parsed = None
        self.parsed[seq] = parsed
        return parsed

    def index_of(self, seq: int, quantity: str, t_ms: int) -> int | None:
        """Index of the first record of message ``seq`` with (quantity, t_ms), if any."""
        positions = self.positions.get(seq)
        if positions is None:
            message = self.message(seq)
            positions = self.positions[seq] = {}
            for index, record in enumerate(() if message is None else message[1]):
                positions.setdefault((record.q, record.t), index)
        return positions.get((quantity, t_ms))
