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

The store is one class assembled from parts, each in its own module: the connection and the
write path every commit takes (:mod:`gateway.store.core`), the outbox (:mod:`gateway.store.outbox`),
reading reads back (:mod:`gateway.store.reads`) and the daemon's state (:mod:`gateway.store.state`).
This module opens and closes it and keeps the birth/death sequence.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
from pathlib import Path
from types import TracebackType

from gateway.store.bdseq import BDSEQ_FILE_NAME, BdseqCounter
from gateway.store.connection import connect as _connect
from gateway.store.connection import ensure_meta as _ensure_meta
from gateway.store.connection import meta_int as _meta_int
from gateway.store.connection import translate_open as _translate_open
from gateway.store.core import wall_ms
from gateway.store.errors import StoreError
from gateway.store.outbox import OutboxStore
from gateway.store.reads import ReadsStore
from gateway.store.recovery import (
    WRITABLE_HINT,
    StoreRecovery,
    integrity_problem,
    move_aside,
    orphaned_side_files,
)
from gateway.store.schema import migrate
from gateway.store.state import StateStore

log = logging.getLogger("gateway.store")

STORE_CORRUPT_ALARM = "store.corrupt"


class Store(OutboxStore, ReadsStore, StateStore):
    """The durable store of one gateway. Create with :meth:`Store.open`."""

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
