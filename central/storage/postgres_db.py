"""PostgreSQL for real deployments (psycopg 3): the same schema, partitioned by day.

Rows go in as multi-row ``INSERT … VALUES (…), (…) ON CONFLICT`` statements of up to
:data:`_ROWS_PER_STATEMENT` rows: one round trip per table per batch, and unlike ``COPY`` it can
say what to do with a row that is already there, which is what makes N workers idempotent.

Day partitions (``current_reads_20261207``) are created on demand before the transaction that
needs them, each under an advisory lock, because two workers meeting a new day at once would
otherwise race on ``CREATE TABLE … PARTITION OF``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from central.errors import StorageError
from central.storage.database import Database, Row, chunks
from central.storage.schema import DAY_MS, PARTITIONED, SCHEMA_VERSION, ddl

__all__ = ["PostgresDatabase"]

_ROWS_PER_STATEMENT = 1000
#: Advisory-lock namespace for schema and partition DDL (any constant distinct from stream keys).
_DDL_LOCK = 0x6564_6765_6365_6E74


def _stream_key(gw: str, epoch: str) -> int:
    """A signed 64-bit advisory-lock key for one stream (stable across processes and hosts)."""
    digest = hashlib.blake2b(f"{gw}\0{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, creds = head.partition("//")
    return f"{scheme}//{creds.split(':', 1)[0]}:***@{tail}"


class PostgresDatabase(Database):
    greatest = "GREATEST"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise StorageError(
                "PostgreSQL needs psycopg 3: pip install 'edge-gateway[central]'"
            ) from None
        self._psycopg = psycopg
        self.where = _redact(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL {self.where}: {exc}".strip()) from None
        self._days: set[tuple[str, int]] = set()

    def _fail(self, exc: Exception) -> StorageError:
        return StorageError(f"PostgreSQL {self.where}: {str(exc).strip()}")

    @contextlib.contextmanager
    def transaction(self, streams: Iterable[tuple[str, str]] = ()) -> Iterator[None]:
        try:
            with self.conn.transaction():
                for key in sorted({_stream_key(gw, epoch) for gw, epoch in streams}):
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                yield
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            cur = self.conn.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall()) if cur.description else []
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return int(self.conn.execute(self._sql(sql), tuple(params)).rowcount)
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Row],
                    conflict: str, casts: Mapping[str, str] | None = None) -> None:
        casts = casts or {}
        mark = "(" + ", ".join(f"%s::{casts[c]}" if c in casts else "%s" for c in columns) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        try:
            for part in chunks(rows, _ROWS_PER_STATEMENT):
                sql = head + ", ".join([mark] * len(part)) + " " + conflict
                self.conn.execute(sql, [v for row in part for v in row])
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def ensure_partitions(self, table: str, times_ms: Iterable[int]) -> None:
        if table not in PARTITIONED:
            return
        for day in sorted({t // DAY_MS for t in times_ms}):
            if (table, day) in self._days:
                continue
            name = f"{table}_{dt.datetime.fromtimestamp(day * 86400, dt.UTC):%Y%m%d}"
            start, end = day * DAY_MS, (day + 1) * DAY_MS
            try:
                with self.conn.transaction():
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                    self.conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
                        f"FOR VALUES FROM ({start}) TO ({end})"
                    )
            except self._psycopg.Error as exc:
                raise self._fail(exc) from None
            self._days.add((table, day))

    def create_schema(self) -> None:
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for statement in ddl(postgres=True):
                    self.conn.execute(statement)
                cur = self.conn.execute("SELECT count(*) FROM schema_info")
                row = cur.fetchone()
                if row is not None and row[0] == 0:
                    self.conn.execute("INSERT INTO schema_info (version) VALUES (%s)",
                                      (SCHEMA_VERSION,))
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        self.conn.close()
