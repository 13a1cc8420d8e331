"""One connection to the consumer's database, SQLite or PostgreSQL, behind one small interface.

The SQL elsewhere in :mod:`central.storage` is written once, with ``?`` placeholders and the
syntax both engines share (``ON CONFLICT … DO UPDATE … WHERE``, ``RETURNING``); a dialect
supplies what differs: placeholders, the ``greatest`` function, how a transaction locks the
streams it touches, typed parameters (NUMERIC, JSONB) and day partitions.

Locking is what makes N workers safe. A transaction names the (gw, epoch) streams it will
read-modify-write; SQLite takes the database's write lock up front (``BEGIN IMMEDIATE``: one
writer at a time, so the ranges read are the ranges written), PostgreSQL takes one
transaction-scoped advisory lock per stream, in sorted order so two workers never deadlock.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["Database", "Row"]

Row = tuple[Any, ...]


class Database(ABC):
    """A connection plus its dialect. Not thread-safe: one per worker thread."""

    #: Name of SQL's two-argument maximum in this dialect.
    greatest: str = "max"
    #: A human name for messages: the file, or the server without the password.
    where: str = ""
    #: Whether :meth:`try_copy` can ever succeed (callers skip building COPY text otherwise).
    copies: bool = False

    @abstractmethod
    def transaction(self, streams: Iterable[tuple[str, str]] = ()) -> contextlib.AbstractContextManager[None]:
        """A transaction holding the locks of ``streams``; commits on success, rolls back on error."""

    def lock_streams(self, streams: Iterable[tuple[str, str]]) -> None:  # noqa: B027
        """Inside a transaction, take the locks of ``streams`` now (held until it ends).
        SQLite's transaction already holds the one write lock, so the default does nothing."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (empty for statements without a result)."""

    @abstractmethod
    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""

    @abstractmethod
    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Row],
                    conflict: str, casts: Mapping[str, str] | None = None) -> None:
        """Insert ``rows`` with ``conflict`` (an ``ON CONFLICT`` clause). ``casts`` names the
        SQL type of columns passed as text (NUMERIC values, JSON) where the engine needs it."""

    def delete_keys(self, table: str, columns: Sequence[str], types: Sequence[str],
                    keys: Sequence[Row]) -> None:
        """Delete the rows of ``table`` whose ``columns`` equal one of ``keys`` (``types``: the
        columns' SQL types, for engines that pass the keys as typed arrays). The default: one
        ``DELETE … WHERE (columns) IN (VALUES …)`` per 500 keys."""
        names = ", ".join(columns)
        row = "(" + ", ".join("?" * len(columns)) + ")"
        for part in chunks(keys, 500):
            self.execute(f"DELETE FROM {table} WHERE ({names}) IN (VALUES "
                         + ", ".join([row] * len(part)) + ")", [v for key in part for v in key])

    def try_copy(self, table: str, columns: Sequence[str], text: str) -> bool:
        """Append rows given as COPY text (:mod:`central.storage.reads_copy`) if none of their
        keys is already stored or repeated, all or nothing; False (nothing written) when one
        is, or when the engine has no such path (SQLite: the caller upserts instead)."""
        return False

    def ensure_partitions(self, table: str, times_ms: Iterable[int]) -> None:  # noqa: B027
        """Make sure the day partitions holding ``times_ms`` exist (PostgreSQL only; SQLite
        has no partitions, so the default does nothing)."""

    @abstractmethod
    def create_schema(self) -> None:
        """Create the tables if they are missing (idempotent, safe with workers racing)."""

    @abstractmethod
    def close(self) -> None: ...

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None


def chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
