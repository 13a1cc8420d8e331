"""The store's connection and its one write path: every commit of :class:`~gateway.store.Store`
goes through :meth:`StoreCore._transaction` and :meth:`StoreCore._insert_messages`.

Split from :mod:`gateway.store.database` (which states the guarantees) so that the code those
guarantees rest on — one transaction per call, seqs taken from ``meta`` in the same transaction as
the rows, the ``last_registers`` marks updated only after COMMIT — reads in one place, apart from
the many queries built on it (:mod:`gateway.store.outbox`, :mod:`gateway.store.reads`,
:mod:`gateway.store.state`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

from gateway.store import versions
from gateway.store.connection import meta_int as _meta_int
from gateway.store.connection import translate as _translate
from gateway.store.errors import StoreError
from gateway.store.records import OutboxMessage, is_priority_topic
from gateway.store.recovery import StoreRecovery
from protocols.payload import AliasBook, Binding

log = logging.getLogger("gateway.store")


def wall_ms() -> int:
    """Gateway UTC time in ms."""
    return time.time_ns() // 1_000_000


class StoreCore:
    """The connection, its lock and the write path shared by every part of the store. Not used
    on its own: :class:`gateway.store.Store` is built on it (create one with ``Store.open``)."""

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
        #: The alias book made of ``_bindings`` (the very dict) and the epoch, shared by the
        #: read-back methods until either changes (gateway/store/reads.py).
        self._book: tuple[dict[int, Binding], int, AliasBook] | None = None
        #: The widest t_last - t_first of any reads message committed without notes in
        #: read_versions (polls; ``meta``, raised in the transaction that commits a wider one,
        #: never lowered): no record of such a message is further than this after its first
        #: one, which bounds the time window of a correction's look-up (store/versions.py).
        self.reads_span_ms = _meta_int(conn, "reads_span_ms")

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
        span = self.reads_span_ms
        for seq, message in enumerate(messages, start=last + 1):
            payload = message.build(seq)
            if not isinstance(payload, bytes) or not payload:
                raise TypeError(
                    f"build for {message.topic} returned {type(payload).__name__}, not bytes"
                )
            meter: str | None = None
            t_first: int | None = None
            t_last: int | None = None
            reads = message.reads
            if reads:
                meter = message.meter or ""
                if message.indexed:
                    version_rows += versions.note_rows(meter, seq, reads)
                    withdrawn += versions.rejected_registers(meter, reads)
                # One pass for the span and the register marks (a message per meter poll).
                t_first = t_last = reads[0].t
                for record in reads:
                    t = record.t
                    if t < t_first:
                        t_first = t
                    elif t > t_last:
                        t_last = t
                    if type(record.val) is Decimal and record.quality == "A":
                        self._note_register(conn, register_rows, meter, record.q, t,
                                            str(record.val))
                if t_last - t_first > span and not message.indexed:
                    span = t_last - t_first
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
        if span > self.reads_span_ms:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'reads_span_ms'", (span,))
            # Raised now, before the COMMIT: if the transaction fails, a wider bound than the
            # rows need is still a bound.
            self.reads_span_ms = span
        return seqs


def check_message(message: OutboxMessage) -> None:
    """Refuse a message the outbox cannot hold, before any transaction starts."""
    if not message.topic:
        raise ValueError("outbox message needs a topic")
    if message.qos not in (0, 1, 2):
        raise ValueError(f"{message.topic}: qos must be 0, 1 or 2, got {message.qos}")
    if message.reads and not message.meter:
        raise ValueError(f"{message.topic}: reads need the meter they belong to")
