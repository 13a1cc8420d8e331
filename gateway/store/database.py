"""The gateway's durable store: one SQLite file holding reads, the outbox, alarms and daily
history (DESIGN.md §5).

Delivery rests on three properties of this module:

* **One transaction per poll.** :meth:`Store.commit_poll` writes a poll's reads and the outbox
  rows that will publish them in a single transaction, under ``synchronous=FULL`` in WAL mode: once
  it returns, a crash, a kill or a power cut loses none of it, and before it returns nothing of it
  exists. There is no state where reads are stored but their message is not, or the reverse.
* **Sequence numbers are never reused.** The last assigned seq lives in ``meta`` and advances in
  the same transaction as the rows, so deleting rows (retention) or rolling back a failed commit
  can never hand out a number that was ever published. Every committed seq is contiguous: a
  transaction either commits all its seqs or none.
* **Nothing unacknowledged is ever deleted.** Retention only removes rows the broker acknowledged.
  When the disk is full a commit raises :class:`StoreFullError` and stores nothing, so the caller
  knows its data is still only in memory.

Threading: one connection, guarded by a lock, so the daemon may call from its event loop or from a
single writer thread; keep calls short (each is one small transaction). Other processes (gwtool,
sqlite3) may read the file concurrently — WAL lets readers proceed while the writer commits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType

from gateway.store import versions
from gateway.store.aliases import bind as _bind_aliases
from gateway.store.aliases import existing as _existing_bindings
from gateway.store.aliases import load_bindings as _load_bindings
from gateway.store.bdseq import BDSEQ_FILE_NAME, BdseqCounter
from gateway.store.connection import connect as _connect
from gateway.store.connection import ensure_meta as _ensure_meta
from gateway.store.connection import meta_int as _meta_int
from gateway.store.connection import translate as _translate
from gateway.store.connection import translate_open as _translate_open
from gateway.store.disk import disk_status
from gateway.store.errors import StoreError
from gateway.store.records import (
    AlarmState,
    DailyValue,
    DiskStatus,
    OutboxCursor,
    OutboxMessage,
    OutboxRow,
    StoredRead,
    is_priority_topic,
)
from gateway.store.recovery import (
    WRITABLE_HINT,
    integrity_problem,
    move_aside,
    orphaned_side_files,
)
from gateway.store.replay import NotHeld, Requeued
from gateway.store.replay import held_from as _held_from
from gateway.store.replay import requeue as _requeue
from gateway.store.schema import migrate
from protocols.payload import (
    QUALITIES,
    AliasBook,
    AliasTable,
    Binding,
    PayloadDecodeError,
    ReadRecord,
)

log = logging.getLogger("gateway.store")

_MS_PER_DAY = 86_400_000
#: Rows deleted per retention transaction, so pruning weeks of backlog never holds the write lock
#: for long (each batch is one short transaction).
_PRUNE_BATCH = 2000

STORE_CORRUPT_ALARM = "store.corrupt"


@dataclass(frozen=True, slots=True)
class StoreRecovery:
    """A damaged database found at open and moved aside: the ``store.corrupt`` alarm's facts."""

    path: Path
    moved_to: Path
    problem: str
    found_ms: int

    def details(self) -> dict[str, object]:
        """The alarm's details: both files, what was wrong, and how to salvage the old one."""
        return {
            "path": str(self.path), "moved_to": str(self.moved_to), "problem": self.problem,
            "hint": f"unacknowledged messages may be salvaged with `sqlite3 {self.moved_to} "
                    ".recover`",
        }


def wall_ms() -> int:
    """Gateway UTC time in ms."""
    return time.time_ns() // 1_000_000


def _stored_reads(payload: bytes, book: AliasBook) -> tuple[ReadRecord, ...]:
    """The records of one of this store's reads payloads, v1 or v2 (:func:`versions.stored_message`)."""
    try:
        return versions.stored_message(payload, book)[1]
    except PayloadDecodeError as exc:
        log.error("store: a reads payload cannot be read back, its reads are skipped: %s", exc)
        return ()


class Store:
    """The durable store of one gateway. Create with :meth:`Store.open`."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, epoch: int, recovered_from: Path | None
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.path = path
        #: Random 64-bit number chosen when this database was created; part of every message id.
        self.epoch = epoch
        #: Where a damaged database found at open was moved to (None when the file was healthy).
        self.recovered_from = recovered_from
        #: What was moved aside and why, for the ``store.corrupt`` alarm (None when healthy).
        self.recovery: StoreRecovery | None = None
        # (meter, quantity) -> (t_ms, value) that last_registers logically holds: loaded on the
        # first write, updated only after a COMMIT (see _insert_messages).
        self._register_marks: dict[tuple[str, str], tuple[int, str]] | None = None
        self._pending_marks: dict[tuple[str, str], tuple[int, str]] = {}
        #: How many replays queued rows since open: the pump rewinds its replay lane when it
        #: changes (a later replay may ask for rows below the lane's cursor).
        self.requeues = 0
        #: Write transactions that added outbox rows (or tried to): the pump asks the store for
        #: new rows only when this moved since it last found none (gateway/uplink/outbox_pump.py).
        self.outbox_writes = 0
        # Payload v2 alias bindings by index (gateway/store/aliases.py), loaded on first use.
        self._bindings: dict[int, Binding] | None = None

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls, path: Path | str, *, now_ms: int | None = None, busy_timeout_s: float = 5.0
    ) -> Store:
        """Open (creating if needed) the store at ``path``.

        An existing file is checked with ``PRAGMA quick_check`` first. A damaged file — or one that
        is not SQLite at all — is moved aside (see :mod:`gateway.store.recovery`), logged at
        ERROR, and a fresh database is created; :attr:`recovered_from` and :attr:`recovery` are
        set so the daemon raises the ``store.corrupt`` alarm through its alarm service (which
        commits it with the event that publishes it; the store cannot build that message). A
        database from a newer gateway or another application raises :class:`StoreVersionError`
        and is left alone. A file or directory that is locked, unreadable, read-only or cannot be
        created (as opposed to damaged) raises :class:`StoreError` naming the path and what to
        fix, and is left alone too.

        ``now_ms``: when the damage was found (the alarm's time). ``busy_timeout_s``: how long to
        wait for another connection's lock (a gwtool reader checkpointing, say) before giving up.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store {path}: cannot create the data_dir {path.parent} ({exc.strerror}); "
                f"{WRITABLE_HINT}"
            ) from exc
        recovered_from: Path | None = None
        problem: str | None = None
        if path.exists():
            problem = integrity_problem(path, busy_timeout_s)
        elif orphaned_side_files(path):
            problem = "journal or WAL file without its database"
        if problem is not None:
            try:
                recovered_from = move_aside(path, problem)
            except OSError as exc:
                raise StoreError(
                    f"store {path} is damaged ({problem}) and cannot be moved aside "
                    f"({exc.strerror}); {WRITABLE_HINT}"
                ) from exc
        conn = _connect(path, busy_timeout_s)
        try:
            migrate(conn)
            epoch = _ensure_meta(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _translate_open(exc, path) from exc
        except BaseException:
            conn.close()
            raise
        store = cls(conn, path, epoch, recovered_from)
        if recovered_from is not None:
            store.recovery = StoreRecovery(
                path, recovered_from, problem or "", now_ms if now_ms is not None else wall_ms()
            )
        return store

    def close(self) -> None:
        """Close the database. Idempotent."""
        with self._lock:
            if self._conn is None:
                return
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- outbox

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
        ``ORDER BY priority DESC, seq`` would have to sort every unacknowledged row."""
        cursor = after if after is not None else OutboxCursor()
        rows: list[tuple[int, str, bytes, int, int, int, int, int]] = []
        with self._reading() as conn:
            for lane, since in (("priority = 1 AND replay = 0", cursor.priority),
                                ("replay = 1", cursor.replay),
                                ("priority = 0 AND replay = 0", cursor.bulk)):
                if len(rows) >= limit:
                    break
                rows += conn.execute(
                    "SELECT seq, topic, payload, qos, created_ms, attempts, priority, replay "
                    f"FROM outbox WHERE acked_ms IS NULL AND {lane} AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (since, limit - len(rows)),
                ).fetchall()
        return [OutboxRow(seq, topic, payload, qos, created, attempts, bool(priority),
                          bool(replay))
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
        with self._transaction(durable=False) as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE outbox SET acked_ms = ?, replay = 0, attempts = attempts + ?, "
                "last_attempt_ms = CASE WHEN ? THEN ? ELSE last_attempt_ms END "
                "WHERE seq = ? AND acked_ms IS NULL",
                [(when, tries.get(seq, 0), seq in tries, when, seq) for seq in acked],
            )
            became = conn.total_changes - before
            for seq in acked:
                tries.pop(seq, None)
            if tries:
                conn.executemany(
                    "UPDATE outbox SET attempts = attempts + ?, last_attempt_ms = ? WHERE seq = ?",
                    [(n, when, seq) for seq, n in tries.items()],
                )
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

    # ---------------------------------------------------------------- payload v2 aliases

    def bind_aliases(self, tables: Mapping[str, AliasTable]) -> dict[str, Binding]:
        """The alias binding of each meter (by id) for the given tables, allocating and
        persisting new indexes for (meter, table) pairs not seen before, never reusing one.
        Only a new pair writes; raises StoreError when that write fails (disk full)."""
        with self._reading() as conn:
            known = self._known_bindings(conn)
            existing = _existing_bindings(known, tables)
        if len(existing) == len(tables):
            return existing
        with self._transaction() as conn:
            current, known = _bind_aliases(conn, self.epoch, self._known_bindings(conn), tables)
        self._bindings = known  # committed: only now may the new indexes be used
        return current

    def known_aliases(self, tables: Mapping[str, AliasTable]) -> dict[str, Binding]:
        """The bindings already allocated for these (meter, table) pairs, without writing:
        what a store that cannot be written still offers."""
        with self._reading() as conn:
            return _existing_bindings(self._known_bindings(conn), tables)

    def alias_bindings(self) -> list[Binding]:
        """Every binding this store allocated: what the birth declares."""
        with self._reading() as conn:
            return sorted(self._known_bindings(conn).values(), key=lambda b: b.index)

    def _known_bindings(self, conn: sqlite3.Connection) -> dict[int, Binding]:
        if self._bindings is None:
            self._bindings = _load_bindings(conn)
        return self._bindings

    def _alias_book(self) -> AliasBook:
        book = AliasBook()
        with self._reading() as conn:
            book.add("", self.epoch, self._known_bindings(conn).values())
        return book

    # ---------------------------------------------------------------- reads

    def reads(
        self,
        meter: str,
        quantity: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[StoredRead]:
        """Stored reads of ``meter`` (optionally one quantity) with ``since_ms <= t < until_ms``,
        in time order (then commit order). Values come back exactly as committed (Decimal, float
        or None): they are decoded from the outbox payloads that carried them."""
        clauses = ["meter = ?"]
        params: list[object] = [meter]
        if since_ms is not None:
            clauses.append("t_last >= ?")
            params.append(since_ms)
        if until_ms is not None:
            clauses.append("t_first < ?")
            params.append(until_ms)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT seq, payload FROM outbox WHERE {' AND '.join(clauses)} ORDER BY seq",
                params,
            ).fetchall()
        found: list[tuple[int, int, int, StoredRead]] = []
        book = self._alias_book()
        for seq, payload in rows:
            for index, record in enumerate(_stored_reads(payload, book)):
                if quantity is not None and record.q != quantity:
                    continue
                if (since_ms is not None and record.t < since_ms) or (
                    until_ms is not None and record.t >= until_ms
                ):
                    continue
                found.append((record.t, seq, index, StoredRead(seq, meter, record)))
        found.sort(key=lambda item: item[:3])
        return [item[3] for item in found]

    def superseded(self, meter: str, keys: Sequence[tuple[str, int, int]]
                   ) -> dict[tuple[str, int, int], tuple[str, int]]:
        """``(message id, record index)`` of each committed record of ``meter`` with (quantity,
        t_ms, rev) in ``keys`` — what a correction with ``rev + 1`` names in ``sup``; keys the
        store no longer holds are left out (gateway/store/versions.py)."""
        book = self._alias_book()
        with self._reading() as conn:
            return versions.find(conn, meter, keys, book)

    def last_actual_registers(self) -> list[tuple[str, str, Decimal]]:
        """``(meter, quantity, value)`` of the newest actual (quality ``A``) Decimal read of
        every register ever committed, by meter and quantity — kept even after retention has
        pruned the reads, so that a register going backwards across a restart is still caught."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT meter, quantity, value FROM last_registers ORDER BY meter, quantity"
            ).fetchall()
        return [(str(meter), str(quantity), Decimal(str(value))) for meter, quantity, value in rows]

    # ---------------------------------------------------------------- VEE state

    def put_vee_state(self, name: str, data: bytes, *, now_ms: int | None = None) -> None:
        """Save (replace) the VEE blob ``name`` (gateway.pipeline.vee_stage: history and meter state)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO vee_state (name, saved_ms, data) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET saved_ms = excluded.saved_ms, "
                "data = excluded.data",
                (name, now_ms if now_ms is not None else wall_ms(), data),
            )

    def get_vee_state(self, name: str) -> bytes | None:
        """The VEE blob ``name`` as last saved, or None."""
        with self._reading() as conn:
            row = conn.execute("SELECT data FROM vee_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    # ---------------------------------------------------------------- alarms

    def raise_alarm(
        self,
        key: str,
        kind: str,
        details: Mapping[str, object],
        now_ms: int,
        *,
        event: OutboxMessage | None = None,
    ) -> bool:
        """Mark alarm ``key`` active; True when it was not active before. ``event`` (the alarm
        message) is committed in the same transaction, and only when the state changed, so an
        alarm is published exactly once per raise even across a crash. Re-raising an active
        alarm keeps its original time and details."""
        if event is not None:
            _check_message(event)
        text = _details_json(details)
        with self._transaction() as conn:
            row = conn.execute("SELECT cleared_ms FROM alarms WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] is None:
                return False
            conn.execute(
                "INSERT INTO alarms (key, kind, raised_ms, cleared_ms, details) "
                "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, "
                "raised_ms = excluded.raised_ms, cleared_ms = NULL, details = excluded.details",
                (key, kind, now_ms, text),
            )
            if event is not None:
                self._insert_messages(conn, [event], now_ms)
            return True

    def clear_alarm(self, key: str, now_ms: int, *, event: OutboxMessage | None = None) -> bool:
        """Mark alarm ``key`` cleared; True when it was active. ``event`` as in
        :meth:`raise_alarm`."""
        if event is not None:
            _check_message(event)
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE alarms SET cleared_ms = ? WHERE key = ? AND cleared_ms IS NULL",
                (now_ms, key),
            ).rowcount
            if changed and event is not None:
                self._insert_messages(conn, [event], now_ms)
            return changed > 0

    def active_alarms(self) -> list[AlarmState]:
        """Alarms currently raised, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key, kind, raised_ms, cleared_ms, details FROM alarms "
                "WHERE cleared_ms IS NULL ORDER BY raised_ms, key"
            ).fetchall()
        return [_alarm_state(row) for row in rows]

    def alarm(self, key: str) -> AlarmState | None:
        """The last known state of alarm ``key`` (active or cleared), or None."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT key, kind, raised_ms, cleared_ms, details FROM alarms WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else _alarm_state(row)

    # ---------------------------------------------------------------- daily history

    def put_daily(
        self,
        values: Iterable[DailyValue],
        *,
        messages: Sequence[OutboxMessage] = (),
        now_ms: int | None = None,
    ) -> list[int]:
        """Insert or replace daily values (a later freeze read or a VEE substitution wins).

        ``messages`` are committed in the same transaction (their seqs are returned): a daily
        result and the record that it was published are one atomic step, so a crash can
        neither publish a day twice nor forget to publish it."""
        rows = [_daily_row(value) for value in values]
        for message in messages:
            _check_message(message)
        created = now_ms if now_ms is not None else wall_ms()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO daily_history (meter, quantity, day, value, quality) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter, quantity, day) DO UPDATE SET "
                "value = excluded.value, quality = excluded.quality",
                rows,
            )
            return self._insert_messages(conn, messages, created) if messages else []

    def newest_daily(self, quantity: str) -> dt.date | None:
        """The newest day any meter has a value of ``quantity`` for (None when none has), so
        a caller can load just the recent days instead of the whole history."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT max(day) FROM daily_history WHERE quantity = ?", (quantity,)
            ).fetchone()
        return None if row is None or row[0] is None else dt.date.fromisoformat(row[0])

    def get_daily(
        self, meter: str, quantity: str, first: dt.date, last: dt.date
    ) -> list[DailyValue]:
        """Daily values of one quantity of one meter, ``first`` to ``last`` inclusive, by day."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT meter, quantity, day, value, quality FROM daily_history "
                "WHERE meter = ? AND quantity = ? AND day BETWEEN ? AND ? ORDER BY day",
                (meter, quantity, first.isoformat(), last.isoformat()),
            ).fetchall()
        return [
            DailyValue(
                meter=row[0],
                quantity=row[1],
                day=dt.date.fromisoformat(row[2]),
                value=None if row[3] is None else Decimal(row[3]),
                quality=row[4],
            )
            for row in rows
        ]

    # ---------------------------------------------------------------- birth/death

    @functools.cached_property
    def bdseq(self) -> BdseqCounter:
        """The MQTT link's birth/death sequence, kept in its own preallocated file beside the
        database (:mod:`gateway.store.bdseq`) rather than in a transaction, so that a full or
        failing disk never stops the link from connecting. Opened on first use, which is the
        link's first connection attempt right after start. The number older versions kept in
        ``meta`` is its floor, so the first start with the file continues from it."""
        try:
            with self._reading() as conn:
                floor: int | None = _meta_int(conn, "bdseq")
        except StoreError as exc:
            log.warning("store %s: cannot read the old bdseq (%s); bdseq may jump", self.path, exc)
            floor = None
        return BdseqCounter.open(self.path.parent / BDSEQ_FILE_NAME, floor=floor)

    def next_bdseq(self) -> int:
        """Advance and return the birth/death sequence that pairs a birth certificate with the
        last will registered on the same connection; never repeats across restarts and never
        fails for a disk problem (see :attr:`bdseq`)."""
        return self.bdseq.next()

    # ---------------------------------------------------------------- internals

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. BEGIN IMMEDIATE takes the write lock up front, so a transaction
        never fails half-way for lack of it; SQLite errors leave as StoreError subclasses.

        ``durable=False`` commits with ``synchronous=NORMAL``: in WAL mode that survives a
        process crash but not a power cut until the next durable commit (which fsyncs the WAL,
        and with it every earlier commit). Only for bookkeeping whose loss is harmless."""
        with self._lock:
            conn = self._require_open()
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
                if self._pending_marks:
                    assert self._register_marks is not None
                    self._register_marks.update(self._pending_marks)
                    self._pending_marks.clear()
            except BaseException as exc:
                self._pending_marks.clear()
                # SQLite may already have rolled back by itself (it does on SQLITE_FULL).
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("store %s: rollback failed", self.path)
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, self.path) from exc
                raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous = FULL")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._require_open()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    def _note_register(self, conn: sqlite3.Connection, rows: list[tuple[object, ...]], meter: str,
                       quantity: str, t_ms: int, value: str) -> None:
        """Queue the last_registers upsert for one actual register read, unless it cannot change
        the value that table holds: a read older than the newest one kept (the upsert's own
        guard would refuse it) or one repeating the newest value (an energy register reads the
        same for many polls: 0.01 kWh at 1 kW is 36 s). Skipping those saves an upsert per
        meter poll; the table's value is the same as with every upsert done, only its t_ms may
        be the first time that value was seen rather than the last."""
        marks = self._register_marks
        if marks is None:
            marks = self._register_marks = {
                (str(m), str(q)): (int(t), str(v)) for m, q, t, v in conn.execute(
                    "SELECT meter, quantity, t_ms, value FROM last_registers")}
        key = (meter, quantity)
        mark = self._pending_marks.get(key) or marks.get(key)
        if mark is not None:
            if t_ms < mark[0]:
                return
            if value == mark[1]:
                self._pending_marks[key] = (t_ms, value)
                return
        rows.append((meter, quantity, t_ms, value))
        self._pending_marks[key] = (t_ms, value)

    def _withdraw_register(self, conn: sqlite3.Connection, meter: str, quantity: str, raw: str,
                           substitute: str | None) -> None:
        """A register read VEE rejected after it was kept as the newest actual value (a spike)
        stops being it: its substitute takes its place, or the register is forgotten until its
        next actual read — so a restart does not compare the next reads with the spike."""
        if substitute is None:
            changed = conn.execute("DELETE FROM last_registers WHERE meter = ? AND quantity = ? "
                                   "AND value = ?", (meter, quantity, raw)).rowcount
        else:
            changed = conn.execute("UPDATE last_registers SET value = ? WHERE meter = ? AND "
                                   "quantity = ? AND value = ?",
                                   (substitute, meter, quantity, raw)).rowcount
        key = (meter, quantity)
        mark = self._pending_marks.get(key) or (self._register_marks or {}).get(key)
        if changed and mark is not None and self._register_marks is not None:
            self._pending_marks[key] = (mark[0], substitute or "")  # "": no value, next read wins

    def _insert_messages(
        self, conn: sqlite3.Connection, messages: Sequence[OutboxMessage], created_ms: int
    ) -> list[int]:
        self.outbox_writes += 1  # counted even if the transaction then fails: one needless query
        last = _meta_int(conn, "last_seq")
        seqs: list[int] = []
        outbox_rows: list[tuple[object, ...]] = []
        register_rows: list[tuple[object, ...]] = []
        version_rows: list[tuple[object, ...]] = []
        withdrawn: list[tuple[str, str, str, str | None]] = []
        for seq, message in enumerate(messages, start=last + 1):
            payload = message.build(seq)
            if not isinstance(payload, bytes) or not payload:
                raise TypeError(
                    f"build for {message.topic} returned {type(payload).__name__}, not bytes"
                )
            meter: str | None = None
            t_first: int | None = None
            t_last: int | None = None
            if message.reads:
                meter = message.meter or ""
                times = [record.t for record in message.reads]
                t_first, t_last = min(times), max(times)
                if message.indexed:
                    version_rows += versions.note_rows(meter, seq, message.reads)
                    withdrawn += versions.rejected_registers(meter, message.reads)
                for record in message.reads:
                    if record.quality == "A" and type(record.val) is Decimal:
                        self._note_register(conn, register_rows, meter, record.q, record.t,
                                            str(record.val))
            outbox_rows.append((seq, message.topic, payload, message.qos, created_ms, meter,
                                t_first, t_last, int(is_priority_topic(message.topic))))
            seqs.append(seq)
        # One statement per table for the whole batch: a coalesced poll cycle of many meters
        # costs two executemany calls, not two per meter.
        conn.executemany(
            "INSERT INTO outbox (seq, topic, payload, qos, created_ms, meter, t_first, t_last, "
            "priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            outbox_rows,
        )
        if register_rows:
            # A late backfill (older t) must not replace a newer register value.
            conn.executemany(
                "INSERT INTO last_registers (meter, quantity, t_ms, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (meter, quantity) DO UPDATE SET t_ms = excluded.t_ms, "
                "value = excluded.value WHERE excluded.t_ms >= last_registers.t_ms",
                register_rows,
            )
        if version_rows:
            versions.upsert(conn, version_rows)
        for meter, quantity, raw, substitute in withdrawn:
            self._withdraw_register(conn, meter, quantity, raw, substitute)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seqs[-1],))
        return seqs


# -------------------------------------------------------------------- helpers


def _check_message(message: OutboxMessage) -> None:
    if not message.topic:
        raise ValueError("outbox message needs a topic")
    if message.qos not in (0, 1, 2):
        raise ValueError(f"{message.topic}: qos must be 0, 1 or 2, got {message.qos}")
    if message.reads and not message.meter:
        raise ValueError(f"{message.topic}: reads need the meter they belong to")


def _details_json(details: Mapping[str, object]) -> str:
    def encode(value: object) -> object:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, bytes):
            return value.hex()
        raise TypeError(f"alarm details: {type(value).__name__} is not storable")

    return json.dumps(dict(details), sort_keys=True, default=encode, allow_nan=False)


def _alarm_state(row: tuple[object, ...]) -> AlarmState:
    key, kind, raised, cleared, details = row
    return AlarmState(
        key=str(key),
        kind=str(kind),
        raised_ms=int(str(raised)),
        cleared_ms=None if cleared is None else int(str(cleared)),
        details=json.loads(str(details)),
    )


def _daily_row(value: DailyValue) -> tuple[object, ...]:
    if value.quality not in QUALITIES:
        raise ValueError(
            f"{value.meter} {value.quantity} {value.day}: bad quality {value.quality!r}"
        )
    if (value.value is None) != (value.quality == "N"):
        raise ValueError(
            f"{value.meter} {value.quantity} {value.day}: a null value goes with quality 'N' only"
        )
    if value.value is not None and not value.value.is_finite():
        raise ValueError(f"{value.meter} {value.quantity} {value.day}: value must be finite")
    text = None if value.value is None else str(value.value)
    return (value.meter, value.quantity, value.day.isoformat(), text, value.quality)
