"""Database schema, versioned with ``PRAGMA user_version`` and upgraded by numbered migrations.

A migration runs in one transaction together with the ``user_version`` bump, so a gateway that
loses power mid-upgrade finds either the old schema or the new one. Migrations are append-only:
never edit one that has shipped, add the next number.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.store.errors import StoreVersionError

#: ``PRAGMA application_id`` of our databases ("EGW1"), so ``file(1)`` and this module can tell
#: a gateway store from any other SQLite file that happens to sit in data_dir.
APPLICATION_ID = 0x45475731


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    purpose: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        purpose="reads, outbox, last registers, alarms, daily history, meta",
        statements=(
            # Key/value facts about this database: epoch (hex text), last_seq, bdseq.
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID",
            # seq is assigned by the store from meta.last_seq, not by SQLite, because the payload
            # must contain it before the row exists. Acknowledged rows stay until retention.
            """CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY,
                topic TEXT NOT NULL,
                payload BLOB NOT NULL,
                qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
                created_ms INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_attempt_ms INTEGER,
                acked_ms INTEGER
            )""",
            # The pump asks for the oldest unacknowledged rows; with weeks of acknowledged rows
            # before them, only a partial index avoids walking all of those.
            "CREATE INDEX outbox_unacked ON outbox (seq) WHERE acked_ms IS NULL",
            # Retention walks acknowledged rows by age; same reasoning.
            "CREATE INDEX outbox_acked_age ON outbox (created_ms) WHERE acked_ms IS NOT NULL",
            """CREATE TABLE reads (
                id INTEGER PRIMARY KEY,
                seq INTEGER NOT NULL REFERENCES outbox (seq) ON DELETE CASCADE,
                meter TEXT NOT NULL,
                quantity TEXT NOT NULL,
                t_ms INTEGER NOT NULL,
                value_kind TEXT NOT NULL CHECK (value_kind IN ('decimal', 'float', 'null')),
                value_text TEXT,
                value_real REAL,
                unit TEXT NOT NULL,
                quality TEXT NOT NULL CHECK (quality IN ('A', 'E', 'S', 'F', 'N')),
                method INTEGER,
                reasons TEXT NOT NULL DEFAULT '',
                hist INTEGER NOT NULL DEFAULT 0,
                CHECK ((value_kind = 'decimal') = (value_text IS NOT NULL)),
                CHECK ((value_kind = 'float') = (value_real IS NOT NULL))
            )""",
            # ON DELETE CASCADE looks reads up by seq; without this index every pruned outbox row
            # would scan the whole reads table.
            "CREATE INDEX reads_seq ON reads (seq)",
            "CREATE INDEX reads_meter_time ON reads (meter, quantity, t_ms)",
            # The newest actual value of every register (Decimal reads), kept apart from reads
            # so that retention never forgets it and a restart reads O(meters) rows, not weeks of
            # reads: VEE needs it to catch a register that went backwards across a restart.
            """CREATE TABLE last_registers (
                meter TEXT NOT NULL,
                quantity TEXT NOT NULL,
                t_ms INTEGER NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (meter, quantity)
            ) WITHOUT ROWID""",
            """CREATE TABLE alarms (
                key TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                raised_ms INTEGER NOT NULL,
                cleared_ms INTEGER,
                details TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE daily_history (
                meter TEXT NOT NULL,
                quantity TEXT NOT NULL,
                day TEXT NOT NULL,
                value TEXT,
                quality TEXT NOT NULL CHECK (quality IN ('A', 'E', 'S', 'F', 'N')),
                PRIMARY KEY (meter, quantity, day)
            ) WITHOUT ROWID""",
            f"PRAGMA application_id = {APPLICATION_ID}",
        ),
    ),
    Migration(
        version=2,
        purpose="reads live in their outbox payload, found by meter and time; VEE saved state",
        statements=(
            # A row per polled value (plus two index entries and a foreign-key check) cost more
            # CPU than the rest of a poll's commit together (measured: 0.14 → 0.05 ms per
            # 10-value message), and duplicated what the payload already holds exactly. The
            # outbox row now says whose reads it carries and the span of their times; queries
            # decode the payloads (Store.reads). Retention is unchanged: reads go with their row.
            "ALTER TABLE outbox ADD COLUMN meter TEXT",
            "ALTER TABLE outbox ADD COLUMN t_first INTEGER",
            "ALTER TABLE outbox ADD COLUMN t_last INTEGER",
            """UPDATE outbox SET
                meter = (SELECT min(meter) FROM reads WHERE reads.seq = outbox.seq),
                t_first = (SELECT min(t_ms) FROM reads WHERE reads.seq = outbox.seq),
                t_last = (SELECT max(t_ms) FROM reads WHERE reads.seq = outbox.seq)
            WHERE seq IN (SELECT seq FROM reads)""",
            "DROP TABLE reads",
            "CREATE INDEX outbox_meter_time ON outbox (meter, t_first) WHERE meter IS NOT NULL",
            # Named blobs (np.savez of the VEE engine's history and per-meter state, and the
            # open window): O(meters) bytes, rewritten at each local midnight and at stop.
            """CREATE TABLE vee_state (
                name TEXT PRIMARY KEY,
                saved_ms INTEGER NOT NULL,
                data BLOB NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        version=3,
        purpose="a priority lane in the outbox for alarms and command results",
        statements=(
            # After an outage of the link, alarms and command results must overtake the read
            # backlog (gateway.store.records.is_priority_topic decides the lane at commit).
            # seq stays one sequence per store, so gap detection and the backlog rule
            # (OutboxRow.is_backlog) do not change; only the order the pump reads rows in does.
            "ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0 "
            "CHECK (priority IN (0, 1))",
            # Unacknowledged alarms and results of an upgraded store join the lane too; this is
            # is_priority_topic as it stood at version 3 (acknowledged rows never go out again).
            """UPDATE outbox SET priority = 1 WHERE acked_ms IS NULL
                AND (topic GLOB '*/cmd/result' OR (topic GLOB '*/alarms'
                     AND topic NOT GLOB '*/reads/alarms' AND topic NOT GLOB '*/groups/alarms'))""",
            # The priority lane is a few rows among possibly many thousand of backlog: its own
            # partial index finds them without touching the others. The read lane keeps using
            # outbox_unacked and skips the few priority rows it meets on the way.
            "CREATE INDEX outbox_priority_unacked ON outbox (seq) "
            "WHERE acked_ms IS NULL AND priority = 1",
        ),
    ),
    Migration(
        version=4,
        purpose="a replay lane: acknowledged rows a consumer asked for again",
        statements=(
            # A consumer that finds a gap asks for a seq range again (the replay command,
            # gateway/store/replay.py). Those rows become unacknowledged again with replay = 1:
            # the pump sends them in their own lane with hist, a PUBACK acknowledges them (and
            # clears the flag) as for any row, and a restart in between sends them again.
            "ALTER TABLE outbox ADD COLUMN replay INTEGER NOT NULL DEFAULT 0 "
            "CHECK (replay IN (0, 1))",
            "CREATE INDEX outbox_replay_unacked ON outbox (seq) "
            "WHERE acked_ms IS NULL AND replay = 1",
        ),
    ),
    Migration(
        version=5,
        purpose="where each VEE interval record went, so a correction can name it",
        statements=(
            # A correction names the record it supersedes (message id, index: `sup`,
            # docs/payloads.md). A poll's own records are found by time in the outbox (a poll
            # message spans the poll); VEE's messages span up to two days of intervals, so where
            # each of their records went is kept here, the newest per key
            # (gateway/store/versions.py). One row per VEE interval key; pruned with the outbox.
            """CREATE TABLE read_versions (
                meter TEXT NOT NULL,
                quantity TEXT NOT NULL,
                t_ms INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                idx INTEGER NOT NULL,
                PRIMARY KEY (meter, quantity, t_ms)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        version=6,
        purpose="the widest poll message held, so a correction's look-up scans only what fits",
        statements=(
            # A poll's own record is found by time (gateway/store/versions.py): among the
            # messages whose first record is at most this far before it. A Modbus poll's
            # records share one moment (0 ms), so a bound of POLL_SPAN_MS (120 s) scans ~120
            # messages at 1 s polling where one can hold the key. The store keeps the widest
            # t_last - t_first of the messages not noted in read_versions (VEE's are, and are
            # found by their notes); it only grows, so it is a bound, never too small. Here a
            # VEE message whose notes newer ones replaced counts too: wider, still a bound.
            """INSERT INTO meta (key, value) SELECT 'reads_span_ms',
                coalesce(max(t_last - t_first), 0) FROM outbox WHERE meter IS NOT NULL
                AND seq NOT IN (SELECT seq FROM read_versions)""",
        ),
    ),
)


LATEST_VERSION = MIGRATIONS[-1].version


def check_ownership(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a database from a newer gateway or from another application — before anything
    (even switching it to WAL mode) is written to it."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > LATEST_VERSION:
        raise StoreVersionError(
            f"store {path} has schema version {found}, newer than this gateway supports "
            f"({LATEST_VERSION}): run the newer gateway, or move the file away to start empty"
        )
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    has_tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] > 0
    if app_id != APPLICATION_ID and (found > 0 or has_tables):
        raise StoreVersionError(
            f"{path} is an SQLite database of another application (application_id {app_id:#x}); "
            "refusing to modify it — point gateway.data_dir at a directory of its own"
        )


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`LATEST_VERSION` (after :func:`check_ownership`); return the
    version found before."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    for migration in MIGRATIONS:
        if migration.version <= found:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return int(found)
