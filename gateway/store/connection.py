"""Opening the SQLite file and translating SQLite's errors into the store's own.

Split from :mod:`gateway.store.database` so the per-connection settings (WAL, FULL sync, the
journal size limit) and the error translation — the one place sqlite3's exceptions become
:class:`~gateway.store.errors.StoreError`s naming the file and what to do — read on one page.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from pathlib import Path

from gateway.store.errors import StoreCorruptError, StoreError, StoreFullError
from gateway.store.recovery import WRITABLE_HINT, unusable_file
from gateway.store.schema import check_ownership

log = logging.getLogger("gateway.store")

#: WAL file size kept after a checkpoint; bounds the disk the WAL holds on to between checkpoints.
JOURNAL_SIZE_LIMIT = 16 * 2**20

#: SQLite's page cache per connection, in KiB. SQLite's default (2,000 KiB) fills up within two
#: minutes at 100 meters, because the outbox keeps acknowledged messages for replay and the file
#: keeps growing; what the hot path touches is far smaller (the right edge of the outbox and
#: versions b-trees and the rows being acknowledged), and any other page is one pread from the
#: kernel's page cache away. 512 KiB holds that working set and keeps 1.5 MiB off a gateway's
#: RSS (measured in docs/performance.md, "Memory of the daemon").
PAGE_CACHE_KIB = 512


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
    except sqlite3.Error as exc:
        raise translate_open(exc, path) from exc
    try:
        check_ownership(conn, str(path))
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new, empty file. auto_vacuum must be chosen before WAL mode (which writes the
            # header) and the first table; afterwards only VACUUM can change it. Incremental mode
            # lets prune() hand freed pages back to the filesystem, which matters when the disk is
            # what is running out.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"store {path}: SQLite refused WAL mode (got {mode!r}); the data_dir must be on a "
                "local filesystem that supports shared memory (not NFS)"
            )
        # FULL: the WAL is fsynced at every commit, so a committed poll survives power loss,
        # not just a process crash (NORMAL would only guarantee the latter in WAL mode).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
    except sqlite3.Error as exc:
        conn.close()
        raise translate_open(exc, path) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_meta(conn: sqlite3.Connection) -> int:
    """Create the epoch and counters on a new database; return the epoch."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            epoch = secrets.randbits(64)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("epoch", f"{epoch:016x}"), ("last_seq", 0), ("bdseq", 0)],
            )
        else:
            epoch = int(row[0], 16)
            # Defence in depth: if meta was ever restored from an older copy than the outbox,
            # never hand out a seq that a stored (hence possibly published) row already has.
            highest = conn.execute("SELECT max(seq) FROM outbox").fetchone()[0] or 0
            if highest > meta_int(conn, "last_seq"):
                log.warning("store meta.last_seq behind outbox (%d); advancing it", highest)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (highest,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return epoch


def meta_int(conn: sqlite3.Connection, key: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def translate_open(exc: sqlite3.Error, path: Path) -> StoreError:
    """An error while opening: a file or directory that cannot be used says what to fix; the
    rest as :func:`translate`."""
    if unusable_file(exc):
        return StoreError(f"store {path}: cannot be opened for writing ({exc}); {WRITABLE_HINT}")
    return translate(exc, path)


def translate(exc: sqlite3.Error, path: Path) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return StoreFullError(
            f"store {path}: disk or database full ({exc}); nothing of this transaction was "
            "stored — free space on the data_dir filesystem or prune acknowledged rows"
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreCorruptError(
            f"store {path}: database damaged ({exc}); restart the gateway to move it aside "
            "and start a fresh store"
        )
    return StoreError(f"store {path}: {exc}")
