"""Storing one batch of decoded messages in one transaction: dedupe, corrections, streams.

The order inside the transaction is the point:

1. store the reads of the messages the committed seq ranges do not cover yet, before taking any
   lock: rows that keep the higher ``rev`` (a correction replaces the earlier version whatever
   order they arrive in; PostgreSQL appends new keys by one ``COPY`` and upserts only when a
   key is already there). This is the bulk of a batch and idempotent by each row's key, so two
   workers holding messages of the same streams do not queue for it; a message another worker
   stores at the same moment meets its own rows' keys and changes nothing (should that cross
   a parked-read release, which writes reads under its stream's lock, PostgreSQL's deadlock
   detector aborts one of the two and its batch is retried);
2. lock the batch's streams and load their seq ranges again (now nobody else changes them);
3. fold each durable message's seq in (:func:`central.streams.add_seq`) — a seq already there is
   a duplicate (a re-send, ``hist`` backlog, a replay, or a message a killed worker had stored
   but not acknowledged) and nothing more of it is stored; alarms, group results and command
   results of the new ones go in as inserts that ignore a row already there;
4. write the ranges and the streams' rows back and mark gaps the batch filled.

A batch from a large fleet touches about one stream per message, so every step is a few
statements for the whole batch (ranges loaded per 500 gateways, streams upserted together,
open gaps read once), not a few per stream.

The worker acknowledges the batch's MQTT messages only after the commit, so a worker killed at
any point leaves either nothing or everything of a message stored, and the broker re-delivers
what was not acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from central.decoding import (
    AlarmIn,
    BirthIn,
    DeathIn,
    GroupIn,
    HealthIn,
    Inbound,
    ReadsIn,
    ResultIn,
    UnresolvedReadsIn,
)
from central.storage.bindings import park, release_parked, store_bindings
from central.storage.database import Database
from central.storage.reads_copy import reads_copy_text
from central.streams import SeqRange, add_seq, covered

__all__ = ["IngestReport", "epoch_text", "ingest", "load_ranges", "release"]

_READ_COLUMNS = ("gw", "meter", "quantity", "t_ms", "value", "unit", "quality", "method",
                 "reasons", "message_id", "rev", "raw", "received_ms")
_READ_UPSERT = (
    "ON CONFLICT (gw, meter, quantity, t_ms) DO UPDATE SET value = excluded.value, "
    "unit = excluded.unit, quality = excluded.quality, method = excluded.method, "
    "reasons = excluded.reasons, message_id = excluded.message_id, rev = excluded.rev, "
    "raw = excluded.raw, received_ms = excluded.received_ms "
    "WHERE excluded.rev > current_reads.rev"
)


@dataclass
class IngestReport:
    """What one batch did: messages stored, duplicates skipped, values written, gaps filled,
    v2 reads parked until their binding is known (counted in ``stored``), and the command results that answer replay requests (cmd hex → status, reason)."""

    stored: int = 0
    duplicates: int = 0
    values: int = 0
    gaps_filled: int = 0
    parked: int = 0
    results: dict[str, tuple[str, str]] = field(default_factory=dict)


#: Below this many values a batch's reads go straight to the upsert (a COPY's set-up costs
#: more than it saves).
_COPY_FROM_ROWS = 64
#: Gateways per ``IN (...)`` list (well below SQLite's bound on parameters).
_IN_LIST = 500

Durable = ReadsIn | UnresolvedReadsIn | AlarmIn | GroupIn | ResultIn


def epoch_text(epoch: int) -> str:
    """A store epoch as stored: the 16 hex digits of the message id (it does not fit BIGINT)."""
    return f"{epoch:016x}"


def load_ranges(db: Database, gw: str, epoch: str) -> list[SeqRange]:
    rows = db.execute("SELECT lo, hi, first_ms FROM seq_ranges WHERE gw = ? AND epoch = ? "
                      "ORDER BY lo", (gw, epoch))
    return [SeqRange(int(lo), int(hi), int(first)) for lo, hi, first in rows]


def ingest(db: Database, batch: Sequence[Inbound], now_ms: int) -> IngestReport:
    """Store ``batch`` in one transaction (see the module docstring); idempotent."""
    durable = [m for m in batch
               if isinstance(m, ReadsIn | UnresolvedReadsIn | AlarmIn | GroupIn | ResultIn)]
    ephemeral = [m for m in batch if isinstance(m, BirthIn | DeathIn | HealthIn)]
    streams = {(m.stream.gw, epoch_text(m.stream.epoch)) for m in durable}
    streams |= {(m.gw, epoch_text(m.epoch)) for m in ephemeral}
    reads_t = [t for m in durable if isinstance(m, ReadsIn) for t in m.times]
    db.ensure_partitions("current_reads", reads_t)
    db.ensure_partitions("alarms", [m.ts for m in durable if isinstance(m, AlarmIn)])
    report = IngestReport()
    with db.transaction():
        # Reads first, before the stream locks: the bulk of the work, and idempotent by their
        # key, so two workers holding messages of the same streams do not queue for it. What
        # the committed ranges already cover is skipped (a re-send: nothing of it is written);
        # a message another worker stores meanwhile meets its rows' keys and is upserted as a
        # no-op (its rev is not higher), then counted a duplicate below.
        probe = _load_all_ranges(db, streams)
        early = [m for m in durable if isinstance(m, ReadsIn) and add_seq(
            probe[(m.stream.gw, epoch_text(m.stream.epoch))], m.stream.seq, now_ms)]
        report.values = _store_reads(db, early, now_ms)
        db.lock_streams(streams)
        ranges = _load_all_ranges(db, streams)
        before = {s: list(r) for s, r in ranges.items()}
        fresh: list[Durable] = []
        for m in durable:
            if add_seq(ranges[(m.stream.gw, epoch_text(m.stream.epoch))], m.stream.seq, now_ms):
                fresh.append(m)
            else:
                report.duplicates += 1
        report.stored = len(fresh)
        _store_alarms(db, [m for m in fresh if isinstance(m, AlarmIn)])
        _store_groups(db, [m for m in fresh if isinstance(m, GroupIn)])
        report.results = _store_results(db, [m for m in fresh if isinstance(m, ResultIn)])
        park(db, [m for m in fresh if isinstance(m, UnresolvedReadsIn)], now_ms)
        report.parked = sum(isinstance(m, UnresolvedReadsIn) for m in fresh)
        _store_presence(db, [m for m in ephemeral if isinstance(m, BirthIn | DeathIn)], now_ms)
        store_bindings(db, [m for m in ephemeral if isinstance(m, BirthIn)], now_ms)
        touched = {(m.stream.gw, epoch_text(m.stream.epoch)) for m in fresh}
        _update_streams(db, fresh, ephemeral, now_ms)
        _save_changed_ranges(db, sorted(touched), before, ranges)
        report.gaps_filled += _fill_gaps(db, touched, ranges, now_ms)
    return report


def release(db: Database, gw: str, epoch: str, decode: Callable[[str, bytes], Inbound],
            now_ms: int) -> tuple[int, list[str]]:
    """Store the parked reads of one stream that ``decode`` can now resolve
    (:func:`central.storage.bindings.release_parked`): values stored, lines rejected."""
    return release_parked(db, gw, epoch, decode,
                          lambda db, messages: _store_reads(db, messages, now_ms))


def _store_reads(db: Database, messages: list[ReadsIn], now_ms: int) -> int:
    # Fast path (PostgreSQL): most reads are new keys, appended by one COPY; a batch holding a
    # key already stored or repeated (corrections) is upserted below instead.
    if db.copies and sum(m.count for m in messages) >= _COPY_FROM_ROWS:
        text, count = reads_copy_text(messages, now_ms)
        if db.try_copy("current_reads", _READ_COLUMNS, text):
            return count
    # One row per key per statement (PostgreSQL refuses to update a row twice in one INSERT):
    # within the batch the highest rev wins, as it would across batches.
    latest: dict[tuple[str, str, str, int], tuple[object, ...]] = {}
    for m in messages:
        for r in m.rows:
            key = (m.stream.gw, m.meter, r.q, r.t)
            old = latest.get(key)
            if old is not None and int(old[10]) >= r.rev:  # type: ignore[call-overload]
                continue
            latest[key] = (m.stream.gw, m.meter, r.q, r.t, r.val, r.unit, r.quality,
                           r.method, ";".join(map(str, r.reasons)), m.message_id, r.rev,
                           r.raw, now_ms)
    rows = [latest[k] for k in sorted(latest)]
    db.insert_many("current_reads", _READ_COLUMNS, rows, _READ_UPSERT,
                   casts={"value": "numeric", "raw": "numeric"})
    return len(rows)


def _store_alarms(db: Database, messages: list[AlarmIn]) -> None:
    rows = [(m.stream.gw, m.kind, m.key, m.state, m.severity, m.meter, m.ts,
             json.dumps(m.details, sort_keys=True), m.message_id) for m in messages]
    db.insert_many("alarms", ("gw", "kind", "key", "state", "severity", "meter", "ts_ms",
                              "details", "message_id"), rows,
                   "ON CONFLICT DO NOTHING", casts={"details": "jsonb"})


def _store_groups(db: Database, messages: list[GroupIn]) -> None:
    rows = [(m.stream.gw, m.group, m.ts, json.dumps(m.body, sort_keys=True), m.message_id)
            for m in messages]
    db.insert_many("group_results", ("gw", "grp", "ts_ms", "body", "message_id"), rows,
                   "ON CONFLICT DO NOTHING", casts={"body": "jsonb"})


def _store_results(db: Database, messages: list[ResultIn]) -> dict[str, tuple[str, str]]:
    rows = [(m.stream.gw, m.message_id, m.ts, m.cmd.hex() if m.cmd else None, m.status,
             m.reason, m.verified) for m in messages]
    db.insert_many("command_results", ("gw", "message_id", "ts_ms", "cmd", "status", "reason",
                                       "verified"), rows, "ON CONFLICT DO NOTHING")
    answers: dict[str, tuple[str, str]] = {}
    for m in messages:
        if m.cmd is None or not m.verified:
            continue  # an unverified result never changes what the consumer believes
        cmd = m.cmd.hex()
        if db.rowcount("UPDATE replay_requests SET status = ?, reason = ? WHERE cmd = ?",
                       (m.status, m.reason, cmd)):
            answers[cmd] = (m.status, m.reason)
            db.execute(
                "UPDATE gaps SET last_result = ? WHERE filled_ms IS NULL AND EXISTS (SELECT 1 "
                "FROM replay_requests q WHERE q.cmd = ? AND q.gw = gaps.gw AND q.epoch = "
                "gaps.epoch AND q.from_seq = gaps.from_seq)",
                (f"{m.status}: {m.reason}", cmd))
    return answers


def _store_presence(db: Database, messages: list[BirthIn | DeathIn], now_ms: int) -> None:
    rows = [(m.gw, m.message_id, isinstance(m, BirthIn), epoch_text(m.epoch), m.seq, m.bdseq, m.ts, now_ms)
            for m in messages]
    db.insert_many("presence", ("gw", "message_id", "online", "epoch", "seq", "bdseq", "ts_ms",
                                "received_ms"), rows, "ON CONFLICT DO NOTHING")


def _load_all_ranges(db: Database, streams: set[tuple[str, str]]) -> dict[tuple[str, str], list[SeqRange]]:
    """The seq ranges of ``streams``: one query per 500 gateways, not one per stream (a batch
    from a large fleet touches a stream per message)."""
    out: dict[tuple[str, str], list[SeqRange]] = {s: [] for s in streams}
    gws = sorted({gw for gw, _epoch in streams})
    for i in range(0, len(gws), _IN_LIST):
        part = gws[i:i + _IN_LIST]
        rows = db.execute("SELECT gw, epoch, lo, hi, first_ms FROM seq_ranges WHERE gw IN ("
                          + ", ".join("?" * len(part)) + ") ORDER BY gw, epoch, lo", part)
        for gw, epoch, lo, hi, first in rows:
            found = out.get((gw, epoch))
            if found is not None:
                found.append(SeqRange(int(lo), int(hi), int(first)))
    return out


def _save_changed_ranges(db: Database, streams: list[tuple[str, str]],
                         before: dict[tuple[str, str], list[SeqRange]],
                         after: dict[tuple[str, str], list[SeqRange]]) -> None:
    """Write what changed in ``streams``: ranges merged away (deleted) and ranges new or grown
    (upserted), each as one statement for the whole batch. Two workers sharing a gateway's
    messages leave each other's ranges fragmented, so a batch merges away many ranges; one
    ``DELETE`` a range was the largest part of a batch's round trips under the stream locks
    (py-spy, docs/performance.md, issue 15). The deletion is :meth:`Database.delete_keys`:
    on PostgreSQL the keys go as arrays, so the statement's text is the same every batch."""
    gone: list[tuple[str, str, int]] = []
    changed: list[tuple[str, str, int, int, int]] = []
    for gw, epoch in streams:
        was, now = before[(gw, epoch)], after[(gw, epoch)]
        kept = {r.lo for r in now}
        gone += [(gw, epoch, r.lo) for r in was if r.lo not in kept]
        old = set(was)
        changed += [(gw, epoch, r.lo, r.hi, r.first_ms) for r in now if r not in old]
    db.delete_keys("seq_ranges", ("gw", "epoch", "lo"), ("text", "text", "bigint"), gone)
    db.insert_many("seq_ranges", ("gw", "epoch", "lo", "hi", "first_ms"), changed,
                   "ON CONFLICT (gw, epoch, lo) DO UPDATE SET hi = excluded.hi, "
                   "first_ms = excluded.first_ms")


def _update_streams(db: Database, fresh: list[Durable],
                    ephemeral: list[BirthIn | DeathIn | HealthIn], now_ms: int) -> None:
    """The ``streams`` rows of a batch, as two multi-row upserts (SET reads the old row)."""
    g = db.greatest
    last: dict[tuple[str, str], Durable] = {}
    for m in fresh:
        key = (m.stream.gw, epoch_text(m.stream.epoch))
        if key not in last or m.stream.seq > last[key].stream.seq:
            last[key] = m
    db.insert_many(
        "streams", ("gw", "epoch", "last_seq", "last_ts_ms", "last_received_ms", "hwm"),
        [(gw, epoch, m.stream.seq, m.ts, now_ms, 0) for (gw, epoch), m in sorted(last.items())],
        "ON CONFLICT (gw, epoch) DO UPDATE SET "
        f"last_seq = {g}(streams.last_seq, excluded.last_seq), "
        "last_received_ms = excluded.last_received_ms, last_ts_ms = CASE WHEN "
        "excluded.last_seq >= streams.last_seq THEN excluded.last_ts_ms ELSE streams.last_ts_ms "
        "END")
    hwm: dict[tuple[str, str], int] = {}
    acked: dict[tuple[str, str], int] = {}
    for e in ephemeral:
        key = (e.gw, epoch_text(e.epoch))
        hwm[key] = max(hwm.get(key, 0), e.seq)
        if isinstance(e, HealthIn) and e.outbox_depth == 0:
            acked[key] = max(acked.get(key, 0), e.seq)
    db.insert_many("streams", ("gw", "epoch", "last_seq", "hwm"),
                   [(gw, epoch, 0, h) for (gw, epoch), h in sorted(hwm.items())],
                   f"ON CONFLICT (gw, epoch) DO UPDATE SET hwm = {g}(streams.hwm, excluded.hwm)")
    for (gw, epoch), seq in sorted(acked.items()):
        # Remember when this acknowledged high-water mark was first reported: a tail hole is
        # only a gap once it has stayed open past the grace period (central/streams.py).
        db.execute(
            "UPDATE streams SET acked_hwm_ms = CASE WHEN acked_hwm IS NULL OR ? > acked_hwm "
            f"THEN ? ELSE acked_hwm_ms END, acked_hwm = {g}(COALESCE(acked_hwm, 0), ?) "
            "WHERE gw = ? AND epoch = ?",
            (seq, now_ms, seq, gw, epoch))


def _fill_gaps(db: Database, touched: set[tuple[str, str]],
               ranges: dict[tuple[str, str], list[SeqRange]], now_ms: int) -> int:
    """Mark the open gaps of ``touched`` streams that their ranges now cover (open gaps are
    few: one query for all of them)."""
    if not touched:
        return 0
    filled = 0
    for gw, epoch, lo, hi in db.execute("SELECT gw, epoch, from_seq, to_seq FROM gaps WHERE "
                                        "filled_ms IS NULL"):
        stream = (str(gw), str(epoch))
        if stream in touched and covered(ranges[stream], int(lo), int(hi)):
            filled += db.rowcount("UPDATE gaps SET filled_ms = ? WHERE gw = ? AND epoch = ? "
                                  "AND from_seq = ?", (now_ms, gw, epoch, lo))
    return filled
