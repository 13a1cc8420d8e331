"""Sending acknowledged outbox rows again, because a consumer asked (the ``replay`` command).

Why the gateway keeps what the broker acknowledged: a PUBACK proves the broker took a message,
not that the consumer got it. A broker that restarts without a persistent subscriber's session
drops every QoS 1 message queued for it, and only the consumer can see the gap in a gateway's
(epoch, seq). So acknowledged rows stay for ``[store] retention_days`` after their
acknowledgement (:meth:`Store.prune <gateway.store.database.Store.prune>`), and a consumer can ask
for a seq range again.

A replayed row becomes unacknowledged again with ``replay = 1`` (schema version 4). The outbox
pump sends it in its own lane, marked ``hist``, with its original payload (same ``id`` and
``seq``), and the PUBACK acknowledges it as any other row and clears the flag — so a replay goes
through the same durable accounting as the first send: a restart or a lost connection in between
sends it again, and it is never deleted while unacknowledged. Nothing is copied and no seq is
consumed: a replay must not open a new gap in the sequence it repairs.

Only a range held whole is replayed. Retention deletes the oldest acknowledged rows first, but
an old row still unacknowledged is kept, so what is held can have holes; :func:`held_from` names
the first seq from which everything up to the last one is held, which is what a consumer can
still ask for.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.store.connection import meta_int


@dataclass(frozen=True, slots=True)
class Requeued:
    """A range queued again: ``requeued`` acknowledged rows now wait in the replay lane;
    ``pending`` rows of the range were not acknowledged yet (or already queued by an earlier
    replay) and go out without being queued twice."""

    requeued: int
    pending: int


@dataclass(frozen=True, slots=True)
class NotHeld:
    """The range is not held whole: every row from ``held_from`` to ``last_seq`` is (None:
    the store holds no rows at all)."""

    held_from: int | None
    last_seq: int


def requeue(conn: sqlite3.Connection, from_seq: int, to_seq: int) -> Requeued | NotHeld:
    """Queue rows ``from_seq..to_seq`` (inclusive) for the replay lane, inside the caller's
    write transaction, or say what is held instead; nothing changes unless the whole range is
    held."""
    if not 1 <= from_seq <= to_seq:
        raise ValueError(f"seq range {from_seq}..{to_seq} is empty or starts below 1")
    last_seq = meta_int(conn, "last_seq")
    held = 0
    if to_seq <= last_seq:
        held = int(conn.execute("SELECT count(*) FROM outbox WHERE seq BETWEEN ? AND ?",
                                (from_seq, to_seq)).fetchone()[0])
    if held != to_seq - from_seq + 1:
        return NotHeld(held_from(conn), last_seq)
    requeued = conn.execute(
        "UPDATE outbox SET acked_ms = NULL, replay = 1 "
        "WHERE seq BETWEEN ? AND ? AND acked_ms IS NOT NULL",
        (from_seq, to_seq),
    ).rowcount
    return Requeued(requeued=requeued, pending=held - requeued)


def held_from(conn: sqlite3.Connection) -> int | None:
    """The oldest seq from which every row up to the newest is held, or None for an empty
    outbox: the newest row whose predecessor is missing (deleted by retention while an older
    row was kept unacknowledged), else the oldest row. Walks the outbox once — only asked when a
    replay cannot be served."""
    row = conn.execute(
        "SELECT max(seq) FROM outbox AS o WHERE seq > (SELECT min(seq) FROM outbox) "
        "AND NOT EXISTS (SELECT 1 FROM outbox AS p WHERE p.seq = o.seq - 1)"
    ).fetchone()
    if row[0] is not None:
        return int(row[0])
    oldest = conn.execute("SELECT min(seq) FROM outbox").fetchone()[0]
    return None if oldest is None else int(oldest)
