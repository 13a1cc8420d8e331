"""Storing one batch of decoded messages in one transaction: dedupe, corrections, streams.

The order inside the transaction is the point:

1. lock the batch's streams and load their seq ranges;
2. fold each durable message's seq in (:func:`central.streams.add_seq`) — a seq already there is
   a duplicate (a re-send, ``hist`` backlog, a replay, or a message a killed worker had stored
   but not acknowledged) and nothing of it is stored again;
3. store what is new: reads as upserts that keep the higher ``rev`` (a correction replaces the
   earlier version whatever order they arrive in), alarms, group results and command results
   as inserts that ignore a row already there;
4. write the ranges back and mark gaps the batch filled.

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
from central.streams import SeqRange, add_seq, covered

__all__ = ["IngestReport", "epoch_text", "ingest", "load_ranges", "release", "save_ranges"]

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


Durable = ReadsIn | UnresolvedReadsIn | AlarmIn | GroupIn | ResultIn


def epoch_text(epoch: int) -> str:
    """A store epoch as stored: the 16 hex digits of the message id (it does not fit BIGINT)."""
    return f"{epoch:016x}"


def load_ranges(db: Database, gw: str, epoch: str) -> list[SeqRange]:
    rows = db.execute("SELECT lo, hi, first_ms FROM seq_ranges WHERE gw = ? AND epoch = ? "
                      "ORDER BY lo", (gw, epoch))
    return [SeqRange(int(lo), int(hi), int(first)) for lo, hi, first in rows]


def save_ranges(db: Database, gw: str, epoch: str, ranges: list[SeqRange]) -> None:
    db.execute("DELETE FROM seq_ranges WHERE gw = ? AND epoch = ?", (gw, epoch))
    db.insert_many("seq_ranges", ("gw", "epoch", "lo", "hi", "first_ms"),
                   [(gw, epoch, r.lo, r.hi, r.first_ms) for r in ranges], "")


def ingest(db: Database, batch: Sequence[Inbound], now_ms: int) -> IngestReport:
    """Store ``batch`` in one transaction (see the module docstring); idempotent."""
    durable = [m for m in batch
               if isinstance(m, ReadsIn | UnresolvedReadsIn | AlarmIn | GroupIn | ResultIn)]
    ephemeral = [m for m in batch if isinstance(m, BirthIn | DeathIn | HealthIn)]
    streams = {(m.stream.gw, epoch_text(m.stream.epoch)) for m in durable}
    streams |= {(m.gw, epoch_text(m.epoch)) for m in ephemeral}
    reads_t = [r.t for m in durable if isinstance(m, ReadsIn) for r in m.rows]
    db.ensure_partitions("current_reads", reads_t)
    db.ensure_partitions("alarms", [m.ts for m in durable if isinstance(m, AlarmIn)])
    report = IngestReport()
    with db.transaction(streams):
        ranges = {s: load_ranges(db, *s) for s in sorted(streams)}
        fresh: list[Durable] = []
        for m in durable:
            if add_seq(ranges[(m.stream.gw, epoch_text(m.stream.epoch))], m.stream.seq, now_ms):
                fresh.append(m)
            else:
                report.duplicates += 1
        report.stored = len(fresh)
        report.values = _store_reads(db, [m for m in fresh if isinstance(m, ReadsIn)], now_ms)
        _store_alarms(db, [m for m in fresh if isinstance(m, AlarmIn)])
        _store_groups(db, [m for m in fresh if isinstance(m, GroupIn)])
        report.results = _store_results(db, [m for m in fresh if isinstance(m, ResultIn)])
        park(db, [m for m in fresh if isinstance(m, UnresolvedReadsIn)], now_ms)
        report.parked = sum(isinstance(m, UnresolvedReadsIn) for m in fresh)
        _store_presence(db, [m for m in ephemeral if isinstance(m, BirthIn | DeathIn)], now_ms)
        store_bindings(db, [m for m in ephemeral if isinstance(m, BirthIn)], now_ms)
        touched = {(m.stream.gw, epoch_text(m.stream.epoch)) for m in fresh}
        for gw, epoch in sorted(streams):
            _update_stream(db, gw, epoch, [m for m in fresh if m.stream.gw == gw
                                           and epoch_text(m.stream.epoch) == epoch],
                           ephemeral, now_ms)
            if (gw, epoch) in touched:
                save_ranges(db, gw, epoch, ranges[(gw, epoch)])
                report.gaps_filled += _fill_gaps(db, gw, epoch, ranges[(gw, epoch)], now_ms)
    return report


def release(db: Database, gw: str, epoch: str, decode: Callable[[str, bytes], Inbound],
            now_ms: int) -> tuple[int, list[str]]:
    """Store the parked reads of one stream that ``decode`` can now resolve
    (:func:`central.storage.bindings.release_parked`): values stored, lines rejected."""
    return release_parked(db, gw, epoch, decode,
                          lambda db, messages: _store_reads(db, messages, now_ms))


def _store_reads(db: Database, messages: list[ReadsIn], now_ms: int) -> int:
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


def _update_stream(db: Database, gw: str, epoch: str, fresh: list[Durable],
                   ephemeral: list[BirthIn | DeathIn | HealthIn], now_ms: int) -> None:
    g = db.greatest
    db.execute("INSERT INTO streams (gw, epoch) VALUES (?, ?) ON CONFLICT DO NOTHING",
               (gw, epoch))
    if fresh:
        last = max(fresh, key=lambda m: m.stream.seq)
        db.execute(
            f"UPDATE streams SET last_seq = {g}(last_seq, ?), last_received_ms = ?, "
            f"last_ts_ms = CASE WHEN ? >= last_seq THEN ? ELSE last_ts_ms END "
            "WHERE gw = ? AND epoch = ?",
            (last.stream.seq, now_ms, last.stream.seq, last.ts, gw, epoch))
    mine = [m for m in ephemeral if m.gw == gw and epoch_text(m.epoch) == epoch]
    if mine:
        db.execute(f"UPDATE streams SET hwm = {g}(hwm, ?) WHERE gw = ? AND epoch = ?",
                   (max(m.seq for m in mine), gw, epoch))
    acked = [m.seq for m in mine if isinstance(m, HealthIn) and m.outbox_depth == 0]
    if acked:
        # Remember when this acknowledged high-water mark was first reported: a tail hole is
        # only a gap once it has stayed open past the grace period (central/streams.py).
        db.execute(
            "UPDATE streams SET acked_hwm_ms = CASE WHEN acked_hwm IS NULL OR ? > acked_hwm "
            f"THEN ? ELSE acked_hwm_ms END, acked_hwm = {g}(COALESCE(acked_hwm, 0), ?) "
            "WHERE gw = ? AND epoch = ?",
            (max(acked), now_ms, max(acked), gw, epoch))


def _fill_gaps(db: Database, gw: str, epoch: str, ranges: list[SeqRange], now_ms: int) -> int:
    open_gaps = db.execute("SELECT from_seq, to_seq FROM gaps WHERE gw = ? AND epoch = ? AND "
                           "filled_ms IS NULL", (gw, epoch))
    filled = 0
    for lo, hi in open_gaps:
        if covered(ranges, int(lo), int(hi)):
            filled += db.rowcount("UPDATE gaps SET filled_ms = ? WHERE gw = ? AND epoch = ? "
                                  "AND from_seq = ?", (now_ms, gw, epoch, lo))
    return filled
