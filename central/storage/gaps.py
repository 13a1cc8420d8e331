"""Gaps: finding them in the stored seq ranges, and pacing the replay requests that fill them.

:func:`scan_gaps` turns holes older than the grace period into ``gaps`` rows (each seq is in at
most one gap: a hole already covered by a gap, open or filled, is not recorded again).
:func:`claim_replays` decides, across all workers, which open gaps get a replay command now:
one per gateway per ``min_interval``, a gap again only after ``retry`` without being filled,
and never a gap whose gateway answered ``failed`` (it no longer holds those messages). The
claim is an ``UPDATE … WHERE`` on the row, so of N workers scanning at once exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from central.storage.database import Database
from central.storage.ingest import epoch_text, load_ranges
from central.streams import holes, subtract

__all__ = ["GapClaim", "claim_replays", "record_replay", "scan_gaps"]


@dataclass(frozen=True, slots=True)
class GapClaim:
    """A gap this worker asks the gateway to replay, with the command counter to use."""

    gw: str
    epoch: int
    from_seq: int
    to_seq: int
    ctr: int


def scan_gaps(db: Database, now_ms: int, grace_ms: int) -> list[tuple[str, int, int, int]]:
    """Record the holes that have become gaps; the new gaps as (gw, epoch, from_seq, to_seq)."""
    candidates = db.execute(
        "SELECT s.gw, s.epoch FROM streams s WHERE (SELECT count(*) FROM seq_ranges r WHERE "
        "r.gw = s.gw AND r.epoch = s.epoch) > 1 OR s.acked_hwm > s.last_seq ORDER BY s.gw, s.epoch")
    found: list[tuple[str, int, int, int]] = []
    for gw, epoch in candidates:
        with db.transaction([(gw, epoch)]):
            ranges = load_ranges(db, gw, epoch)
            row = db.execute("SELECT acked_hwm, acked_hwm_ms FROM streams WHERE gw = ? AND "
                             "epoch = ?", (gw, epoch))
            acked, acked_ms = row[0] if row else (None, None)
            spans = holes(ranges, now_ms, grace_ms, acked, acked_ms)
            if not spans:
                continue
            known = [(int(lo), int(hi)) for lo, hi in db.execute(
                "SELECT from_seq, to_seq FROM gaps WHERE gw = ? AND epoch = ?", (gw, epoch))]
            for span in spans:
                for lo, hi in subtract(span, known):
                    db.execute("INSERT INTO gaps (gw, epoch, from_seq, to_seq, detected_ms) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (gw, epoch, lo, hi, now_ms))
                    found.append((gw, int(epoch, 16), lo, hi))
    return found


def _next_counter(db: Database, name: str, now_ms: int) -> int:
    """The next value of a command counter shared by all workers. Never below the clock in ms,
    so a counter kept in a new database still climbs above every one used before."""
    db.execute("INSERT INTO counters (name, value) VALUES (?, 0) ON CONFLICT DO NOTHING", (name,))
    return int(db.scalar(f"UPDATE counters SET value = {db.greatest}(value + 1, ?) WHERE "
                         "name = ? RETURNING value", (now_ms, name)))


def claim_replays(db: Database, now_ms: int, min_interval_ms: int, retry_ms: int,
                  counter: str, limit: int = 20) -> list[GapClaim]:
    """Open gaps this worker should ask for now (see the module docstring)."""
    claims: list[GapClaim] = []
    with db.transaction():
        due = db.execute(
            "SELECT gw, epoch, from_seq, to_seq FROM gaps WHERE filled_ms IS NULL AND "
            "(last_request_ms IS NULL OR last_request_ms <= ?) AND (last_result IS NULL OR "
            "last_result NOT LIKE ?) ORDER BY detected_ms, gw, epoch, from_seq LIMIT ?",
            (now_ms - retry_ms, "failed%", limit))
        for gw, epoch, lo, hi in due:
            db.execute("INSERT INTO replay_gate (gw, last_sent_ms) VALUES (?, ?) ON CONFLICT "
                       "DO NOTHING", (gw, -min_interval_ms - 1))
            if not db.rowcount("UPDATE replay_gate SET last_sent_ms = ? WHERE gw = ? AND "
                               "last_sent_ms <= ?", (now_ms, gw, now_ms - min_interval_ms)):
                continue  # this gateway was asked recently; its other gaps wait their turn
            if db.rowcount(
                "UPDATE gaps SET last_request_ms = ?, requests = requests + 1 WHERE gw = ? AND "
                "epoch = ? AND from_seq = ? AND filled_ms IS NULL AND (last_request_ms IS NULL "
                "OR last_request_ms <= ?)", (now_ms, gw, epoch, lo, now_ms - retry_ms)):
                claims.append(GapClaim(gw, int(epoch, 16), int(lo), int(hi),
                                       _next_counter(db, counter, now_ms)))
    return claims


def record_replay(db: Database, cmd: str, claim: GapClaim, sent_ms: int,
                  status: str | None = None, reason: str | None = None) -> None:
    """Remember a replay command (answered later through ``command_results``), or why it could
    not be sent (``status`` set at once)."""
    with db.transaction():
        db.execute("INSERT INTO replay_requests (cmd, gw, epoch, from_seq, to_seq, ctr, sent_ms, "
                   "status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                   (cmd, claim.gw, epoch_text(claim.epoch), claim.from_seq, claim.to_seq, claim.ctr,
                    sent_ms, status, reason))
        if status is not None:
            db.execute("UPDATE gaps SET last_result = ? WHERE gw = ? AND epoch = ? AND "
                       "from_seq = ?", (f"{status}: {reason}", claim.gw, epoch_text(claim.epoch),
                                        claim.from_seq))
