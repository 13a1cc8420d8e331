"""The outbox side of the store: committing polls, handing rows to the pump in lanes, acknowledging,
replaying, and retention.

Split from :mod:`gateway.store.database` (which states the delivery guarantees these methods
keep); the commit path itself is :mod:`gateway.store.core`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from gateway.store.connection import meta_int as _meta_int
from gateway.store.connection import translate as _translate
from gateway.store.core import StoreCore, wall_ms
from gateway.store.core import check_message as _check_message
from gateway.store.disk import disk_status
from gateway.store.records import DiskStatus, OutboxCursor, OutboxMessage, OutboxRow, outbox_row
from gateway.store.replay import NotHeld, Requeued
from gateway.store.replay import held_from as _held_from
from gateway.store.replay import requeue as _requeue

_MS_PER_DAY = 86_400_000
#: Rows deleted per retention transaction, so pruning weeks of backlog never holds the write lock
#: for long (each batch is one short transaction).
_PRUNE_BATCH = 2000
#: Seqs per ``seq IN (...)`` list of one statement (SQLite allows 32766 bound values).
_IN_BATCH = 500


class OutboxStore(StoreCore):
    """Outbox methods of :class:`gateway.store.Store`."""

    #: ``requeues`` when a read of the whole replay lane found it empty (None: not known).
    _replay_lane_empty_at: int | None = None

    @property
    def last_seq(self) -> int:
        """The last seq committed (0 on a new store). Read it when a connection comes up to
        classify backlog (:meth:`OutboxRow.is_backlog`), and as the ``seq`` of ephemeral
        messages (state, health)."""
        with self._reading() as conn:
            return _meta_int(conn, "last_seq")

    def commit_poll(
        self, messages: Sequence[OutboxMessage], *, now_ms: int | None = None
    ) -> list[int]:
        """Commit a poll cycle: every message's outbox row and the reads it carries, in ONE
        transaction. Returns the seqs assigned, in the order of ``messages``. Each row's outbox
        lane follows from its topic here (:func:`~gateway.store.records.is_priority_topic`), the
        one place it is decided, so producers need not know about lanes.

        Each message's ``build`` is called with its seq inside the transaction (see
        :class:`OutboxMessage`). Raises :class:`StoreFullError` when the disk is full — then
        nothing was stored and no seq was consumed.
        """
        if not messages:
            return []
        for message in messages:
            _check_message(message)
        created = now_ms if now_ms is not None else wall_ms()
        with self._transaction() as conn:
            return self._insert_messages(conn, messages, created)

    def enqueue(self, message: OutboxMessage, *, now_ms: int | None = None) -> int:
        """Commit one durable message (an alarm event, a group result); returns its seq."""
        return self.commit_poll([message], now_ms=now_ms)[0]

    def pending(self, limit: int, after: OutboxCursor | None = None) -> list[OutboxRow]:
        """Up to ``limit`` unacknowledged rows: the priority lane first (alarms and command
        results, :func:`~gateway.store.records.is_priority_topic`), then the replay lane (rows
        a consumer asked for again, :meth:`requeue`), then the read lane, each in seq order and
        after its own position in ``after`` if given (the pump's cursor over rows already in
        flight on this connection).

        One query per lane, each walking only its lane's partial index from the cursor: one
        ``ORDER BY priority DESC, seq`` would have to sort every unacknowledged row. The replay
        lane, empty nearly always, is not asked again once found empty from its start until a
        replay queues rows (only :meth:`requeue` puts rows in it, and it moves ``requeues``);
        a PUBACK only takes rows out."""
        cursor = after if after is not None else OutboxCursor()
        rows: list[tuple[int, str, bytes, int, int, int, int, int]] = []
        with self._reading() as conn:
            requeues = self.requeues  # read before the query: a replay after it moves it
            for lane, since in (("priority = 1 AND replay = 0", cursor.priority),
                                ("replay = 1", cursor.replay),
                                ("priority = 0 AND replay = 0", cursor.bulk)):
                if len(rows) >= limit:
                    break
                replay_lane = lane == "replay = 1"
                if replay_lane and self._replay_lane_empty_at == requeues:
                    continue
                found = conn.execute(
                    "SELECT seq, topic, payload, qos, created_ms, attempts, priority, replay "
                    f"FROM outbox WHERE acked_ms IS NULL AND {lane} AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (since, limit - len(rows)),
                ).fetchall()
                if replay_lane and not found and since == 0:
                    self._replay_lane_empty_at = requeues
                rows += found
        make = outbox_row
        return [make(seq, topic, payload, qos, created, attempts, bool(priority), bool(replay))
                for seq, topic, payload, qos, created, attempts, priority, replay in rows]

    def requeue(self, from_seq: int, to_seq: int) -> Requeued | NotHeld:
        """Queue the acknowledged rows ``from_seq..to_seq`` (inclusive) to be published again,
        marked ``hist``, in the replay lane — only if the store holds the whole range; else
        say from which seq it holds everything (:mod:`gateway.store.replay`). Durable once it
        returns; raises :class:`StoreFullError` on a full disk (nothing queued)."""
        with self._transaction() as conn:
            outcome = _requeue(conn, from_seq, to_seq)
        if isinstance(outcome, Requeued) and outcome.requeued:
            self.requeues += 1
        return outcome

    def mark_attempted(self, seqs: Iterable[int], when_ms: int | None = None) -> None:
        """Count a hand-over to the MQTT client. Diagnostics only — backlog is decided by
        sequence (:meth:`OutboxRow.is_backlog`) — but a row with many attempts and no PUBACK is
        one the broker keeps refusing, and health should say so."""
        when = when_ms if when_ms is not None else wall_ms()
        with self._transaction(durable=False) as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_ms = ? WHERE seq = ?",
                [(when, seq) for seq in seqs],
            )

    def mark_acked(self, seqs: Iterable[int], when_ms: int | None = None,
                   attempted: Iterable[int] = ()) -> int:
        """Record PUBACKs; returns how many rows became acknowledged (repeats are harmless).
        ``attempted`` counts hand-overs to the MQTT client in the same write (see
        :meth:`mark_attempted`); a row both handed over and acknowledged since the last write
        is updated once, not twice (a row update rewrites its whole payload).

        Not fsynced on its own (``synchronous=NORMAL``): an acknowledgement lost to a power cut
        only makes its row a re-send with the same ``id`` (DESIGN §5), while one fsync per flush
        would cost more disk time than the publishing it records. The next durable commit makes
        it durable too."""
        when = when_ms if when_ms is not None else wall_ms()
        acked = list(seqs)
        tries: dict[int, int] = {}
        for seq in attempted:
            tries[seq] = tries.get(seq, 0) + 1
        # One statement per group of rows getting the same change (nearly always two groups:
        # acknowledged with one hand-over since the last write, and without), not one per row.
        acked_by_tries = _group((seq, tries.get(seq, 0)) for seq in acked)
        for seq in acked:
            tries.pop(seq, None)
        with self._transaction(durable=False) as conn:
            before = conn.total_changes
            for n, group in acked_by_tries.items():
                for chunk in _chunks(group):
                    conn.execute(
                        "UPDATE outbox SET acked_ms = ?, replay = 0, attempts = attempts + ?, "
                        "last_attempt_ms = CASE WHEN ? THEN ? ELSE last_attempt_ms END "
                        f"WHERE seq IN ({','.join('?' * len(chunk))}) AND acked_ms IS NULL",
                        (when, n, n > 0, when, *chunk))
            became = conn.total_changes - before
            for n, group in _group(tries.items()).items():
                for chunk in _chunks(group):
                    conn.execute(
                        "UPDATE outbox SET attempts = attempts + ?, last_attempt_ms = ? "
                        f"WHERE seq IN ({','.join('?' * len(chunk))})", (n, when, *chunk))
            return became

    def outbox_depth(self) -> int:
        """Number of unacknowledged rows."""
        with self._reading() as conn:
            return int(
                conn.execute("SELECT count(*) FROM outbox WHERE acked_ms IS NULL").fetchone()[0]
            )

    def oldest_unacked_ms(self) -> int | None:
        """Commit time of the oldest unacknowledged row (the first by seq: commit order is the
        truth even when the wall clock was stepped between commits), or None. Rows a replay
        queued again are delivered data, not a backlog, and do not count."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT created_ms FROM outbox WHERE acked_ms IS NULL AND replay = 0 "
                "ORDER BY seq LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    def prune(self, now_ms: int, retention_days: float) -> int:
        """Delete acknowledged outbox rows committed *and* acknowledged more than
        ``retention_days`` before ``now_ms``, with their reads, and alarms cleared that long
        ago; return the number of outbox rows deleted. Unacknowledged rows are never deleted,
        however old. A row acknowledged late (after a long outage) is still kept the whole
        period after its acknowledgement, so a consumer can ask for it again (replay).

        Works in short batches and then returns freed pages to the filesystem. On a disk that is
        already completely full even a delete cannot be journaled — prune while the disk alarm
        (:meth:`disk_status`) is still only a warning.
        """
        if retention_days < 0:
            raise ValueError(f"retention_days must be >= 0, got {retention_days}")
        cutoff = now_ms - int(retention_days * _MS_PER_DAY)
        deleted = 0
        while True:
            with self._transaction() as conn:
                count = conn.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                    "WHERE acked_ms IS NOT NULL AND created_ms < ? AND acked_ms < ? "
                    "ORDER BY created_ms LIMIT ?)",
                    (cutoff, cutoff, _PRUNE_BATCH),
                ).rowcount
            deleted += count
            if count < _PRUNE_BATCH:
                break
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM alarms WHERE cleared_ms IS NOT NULL AND cleared_ms < ?", (cutoff,)
            )
            if deleted:  # notes of VEE records whose message is gone (one PK probe per note)
                conn.execute("DELETE FROM read_versions WHERE NOT EXISTS "
                             "(SELECT 1 FROM outbox WHERE outbox.seq = read_versions.seq)")
        with self._lock:
            conn = self._require_open()
            try:
                # Through executescript: sqlite3's execute() steps this pragma only once, and
                # each step frees a single page.
                conn.executescript("PRAGMA incremental_vacuum")
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc
        return deleted

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes.

        SQLite checkpoints on its own only once the WAL reaches 1000 pages (4 MiB here) and never
        shrinks the file; on a nearly full disk that WAL is the space the next commit needs. The
        daemon calls this after the store recovers from a failure and while disk space is low."""
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    def adopt(self, rows: Sequence[OutboxRow], *, now_ms: int | None = None) -> list[int]:
        """Commit rows taken from another store's outbox (a spill) as they are, in one
        transaction: their payloads keep the id and seq of the store that built them (consumers
        see that store's epoch), and get seqs of this store for ordering and acknowledgement."""
        messages = [OutboxMessage.prebuilt(topic=row.topic, qos=row.qos, payload=row.payload)
                    for row in rows]
        return self.commit_poll(messages, now_ms=now_ms)

    def held_from(self) -> int | None:
        """The oldest seq from which every row up to the newest is held (None: no rows), what
        a consumer may still ask to replay (:func:`gateway.store.replay.held_from`)."""
        with self._reading() as conn:
            return _held_from(conn)

    def disk_status(self, min_free_mb: float, min_free_pct: float) -> DiskStatus:
        """Free space of the filesystem holding the database against the configured minimums."""
        return disk_status(self.path.parent, min_free_mb, min_free_pct)


def _group(pairs: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Seqs by the count paired with them, each seq once (the first pairing wins), in order."""
    groups: dict[int, list[int]] = {}
    seen: set[int] = set()
    for seq, n in pairs:
        if seq not in seen:
            seen.add(seq)
            groups.setdefault(n, []).append(seq)
    return groups


def _chunks(seqs: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(seqs), _IN_BATCH):
        yield seqs[start:start + _IN_BATCH]
