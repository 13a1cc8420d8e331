"""PostgreSQL for real deployments (psycopg 3): the same schema, partitioned by day.

Rows go in through ``COPY`` into a session-local staging table and one
``INSERT … SELECT … ON CONFLICT`` from it: ``COPY`` is PostgreSQL's fast path, and the
``ON CONFLICT`` (which ``COPY`` alone cannot say) is what makes N workers idempotent. A handful
of rows go in as one multi-row ``INSERT … VALUES`` instead. (Measured by
bench/bench_central_ingest.py: multi-row ``VALUES`` of 1,000 rows spent most of its time in
psycopg's client-side parsing of the 13,000-placeholder statement.)

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
#: Below this many rows a plain multi-row INSERT beats staging through COPY.
_COPY_FROM_ROWS = 64
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


def _partition(table: str, day: int) -> str:
    """The name of ``table``'s partition for ``day`` (days since the epoch)."""
    return f"{table}_{dt.datetime.fromtimestamp(day * 86400, dt.UTC):%Y%m%d}"


class PostgresDatabase(Database):
    greatest = "GREATEST"
    copies = True

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
        self._stages: set[str] = set()
        #: Batches of reads stored by plain COPY, and those that met a stored key (upserted).
        self.fast_copies = 0
        self.fallback_copies = 0

    def _fail(self, exc: Exception) -> StorageError:
        return StorageError(f"PostgreSQL {self.where}: {str(exc).strip()}")

    @contextlib.contextmanager
    def transaction(self, streams: Iterable[tuple[str, str]] = ()) -> Iterator[None]:
        try:
            with self.conn.transaction():
                self.lock_streams(streams)
                yield
        except BaseException as exc:
            self._stages.clear()  # a staging table made in a rolled-back transaction is gone
            if isinstance(exc, self._psycopg.Error):
                raise self._fail(exc) from None
            raise

    def lock_streams(self, streams: Iterable[tuple[str, str]]) -> None:
        keys = sorted({_stream_key(gw, epoch) for gw, epoch in streams})
        if keys:  # one statement, the locks taken in the array's (sorted) order
            self.conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM "
                              "unnest(%s::bigint[]) WITH ORDINALITY AS u(k, n)", (keys,))

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
        if len(rows) >= _COPY_FROM_ROWS:
            self._copy_insert(table, columns, rows, conflict)
            return
        casts = casts or {}
        mark = "(" + ", ".join(f"%s::{casts[c]}" if c in casts else "%s" for c in columns) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        try:
            for part in chunks(rows, _ROWS_PER_STATEMENT):
                sql = head + ", ".join([mark] * len(part)) + " " + conflict
                self.conn.execute(sql, [v for row in part for v in row])
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def delete_keys(self, table: str, columns: Sequence[str], types: Sequence[str],
                    keys: Sequence[Row]) -> None:
        # One statement whatever the number of keys: a column of keys as one array parameter.
        # The text of a VALUES list of 1,500 placeholders was parsed by psycopg on every batch
        # (too long for its statement cache): ~10 % of a worker's py-spy samples (issue 15).
        if not keys:
            return
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        try:
            self.conn.execute(f"DELETE FROM {table} WHERE ({', '.join(columns)}) IN "
                              f"(SELECT * FROM unnest({arrays}))",
                              [list(column) for column in zip(*keys, strict=True)])
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def try_copy(self, table: str, columns: Sequence[str], text: str) -> bool:
        # A plain COPY (PostgreSQL routes each row to its day partition) inside a savepoint: a
        # key already stored or met twice makes it fail as a whole, the savepoint is rolled
        # back and the caller upserts instead.
        try:
            with (self.conn.transaction(), self.conn.cursor() as cur,
                  cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy):
                copy.write(text)
        except self._psycopg.errors.UniqueViolation:
            self.fallback_copies += 1
            return False
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None
        self.fast_copies += 1
        return True

    def _copy_insert(self, table: str, columns: Sequence[str], rows: Sequence[Row],
                     conflict: str) -> None:
        stage = f"stage_{table}"
        names = ", ".join(columns)
        try:
            if stage not in self._stages:
                # Temporary: private to this connection, so workers never see each other's rows.
                self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table}) "
                                  "ON COMMIT DELETE ROWS")
                self._stages.add(stage)
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "
                            f"{conflict}")
                cur.execute(f"DELETE FROM {stage}")
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def ensure_partitions(self, table: str, times_ms: Iterable[int]) -> None:
        if table not in PARTITIONED:
            return
        for day in sorted({t // DAY_MS for t in times_ms}):
            if (table, day) in self._days:
                continue
            name = _partition(table, day)
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
