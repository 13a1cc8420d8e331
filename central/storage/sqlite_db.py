"""The embedded default: one SQLite file shared by the workers of one machine.

WAL mode so readers (``edge-central status``, exports) never block the workers; a generous busy
timeout because workers take turns at the single write lock; ``BEGIN IMMEDIATE`` so a
transaction holds that lock from its first statement (see :mod:`central.storage.database`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from central.errors import StorageError
from central.storage.database import Database, Row
from central.storage.schema import SCHEMA_VERSION, ddl

__all__ = ["SqliteDatabase"]

_BUSY_TIMEOUT_MS = 60_000


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL, waiting out other workers opening it at the same moment: the
    switch needs the file to itself, and SQLite answers "database is locked" at once instead of
    calling the busy handler, so two workers started together on a new file could see one of
    them exit (measured: about one start in 40 with four workers)."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SqliteDatabase(Database):
    greatest = "max"

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000,
                                        check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            _enter_wal(self.conn)
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"SQLite database {path}: {exc}") from None
        self._in_tx = False

    @contextlib.contextmanager
    def transaction(self, streams: Iterable[tuple[str, str]] = ()) -> Iterator[None]:
        if self._in_tx:
            raise RuntimeError("nested transaction")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.where}: {exc}") from None
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._in_tx = False
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.where}: commit failed: {exc}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.where}: {exc}") from None

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.conn.execute(sql, tuple(params)).rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.where}: {exc}") from None

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Row],
                    conflict: str, casts: Mapping[str, str] | None = None) -> None:
        if not rows:
            return
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {conflict}"
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.where}: {exc}") from None

    def create_schema(self) -> None:
        with self.transaction():
            for statement in ddl(postgres=False):
                self.execute(statement)
            if self.scalar("SELECT count(*) FROM schema_info") == 0:
                self.execute("INSERT INTO schema_info (version) VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self.conn.close()
