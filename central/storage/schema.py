"""The consumer's tables, one logical schema in two dialects (docs/central.md lists it).

Other systems read ``current_reads``, ``alarms`` and ``gaps`` (DESIGN §9, contract); the rest is
the consumer's own bookkeeping. Columns are the same in both; types differ where the engine has
a better one: ``value`` is exact decimal TEXT in SQLite and NUMERIC in PostgreSQL, ``details``
JSON text and JSONB. In PostgreSQL the two big tables are partitioned by day on their time
column (``current_reads`` by ``t_ms``, ``alarms`` by ``ts_ms``), so a day is detached or
archived whole; partitions are made on demand, before the first row of a day is inserted.
Store epochs are random unsigned 64-bit numbers, beyond a signed BIGINT, so they are kept as the
16 lower-case hex digits the message ids carry. Every table has the primary key its idempotent insert (``ON CONFLICT``) names, so N workers
storing the same message store it once.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

#: Table definitions with ``{value_type}``, ``{json_type}``, ``{partition_reads}`` and
#: ``{partition_alarms}`` filled per dialect.
_TABLES: Final = (
    # The latest version of each read: one row per (gw, meter, quantity, t_ms). `rev` orders
    # corrections (DESIGN §7); `raw` is what the meter said when `value` is a substitute or null.
    """CREATE TABLE IF NOT EXISTS current_reads (
        gw TEXT NOT NULL, meter TEXT NOT NULL, quantity TEXT NOT NULL, t_ms BIGINT NOT NULL,
        value {value_type}, unit TEXT NOT NULL, quality TEXT NOT NULL, method INTEGER,
        reasons TEXT NOT NULL, message_id TEXT NOT NULL, rev INTEGER NOT NULL,
        raw {value_type}, received_ms BIGINT NOT NULL,
        PRIMARY KEY (gw, meter, quantity, t_ms)){partition_reads}""",
    # Alarm raise/clear events as sent (durable ones only: an ephemeral alarm is followed by its
    # durable twin once the gateway's store works again).
    """CREATE TABLE IF NOT EXISTS alarms (
        gw TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
        severity TEXT NOT NULL, meter TEXT, ts_ms BIGINT NOT NULL, details {json_type} NOT NULL,
        message_id TEXT NOT NULL,
        PRIMARY KEY (message_id, ts_ms)){partition_alarms}""",
    """CREATE TABLE IF NOT EXISTS gaps (
        gw TEXT NOT NULL, epoch TEXT NOT NULL, from_seq BIGINT NOT NULL, to_seq BIGINT NOT NULL,
        detected_ms BIGINT NOT NULL, filled_ms BIGINT, requests INTEGER NOT NULL DEFAULT 0,
        last_request_ms BIGINT, last_result TEXT,
        PRIMARY KEY (gw, epoch, from_seq))""",
    # Which seqs of each (gw, epoch) stream arrived, as ranges (central/streams.py).
    """CREATE TABLE IF NOT EXISTS seq_ranges (
        gw TEXT NOT NULL, epoch TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL,
        first_ms BIGINT NOT NULL, PRIMARY KEY (gw, epoch, lo))""",
    # One row per stream: the newest durable message, and the high-water marks the gateway
    # reported (hwm from any state/health message; acked_hwm from a health with an empty
    # outbox, with when that value was first reported).
    """CREATE TABLE IF NOT EXISTS streams (
        gw TEXT NOT NULL, epoch TEXT NOT NULL, last_seq BIGINT NOT NULL DEFAULT 0,
        last_ts_ms BIGINT, last_received_ms BIGINT, hwm BIGINT NOT NULL DEFAULT 0,
        acked_hwm BIGINT, acked_hwm_ms BIGINT, PRIMARY KEY (gw, epoch))""",
    # Births and deaths (the retained state topic), one row per message.
    """CREATE TABLE IF NOT EXISTS presence (
        gw TEXT NOT NULL, message_id TEXT NOT NULL, online BOOLEAN NOT NULL, epoch TEXT NOT NULL,
        seq BIGINT NOT NULL, bdseq BIGINT NOT NULL, ts_ms BIGINT NOT NULL,
        received_ms BIGINT NOT NULL, PRIMARY KEY (message_id))""",
    """CREATE TABLE IF NOT EXISTS group_results (
        gw TEXT NOT NULL, grp TEXT NOT NULL, ts_ms BIGINT NOT NULL, body {json_type} NOT NULL,
        message_id TEXT NOT NULL, PRIMARY KEY (message_id))""",
    # Signed command results and audit chain heads; `verified` when the signature was checked
    # against the gateway's pinned key.
    """CREATE TABLE IF NOT EXISTS command_results (
        gw TEXT NOT NULL, message_id TEXT NOT NULL, ts_ms BIGINT NOT NULL, cmd TEXT,
        status TEXT NOT NULL, reason TEXT NOT NULL, verified BOOLEAN NOT NULL,
        PRIMARY KEY (message_id))""",
    # The replay commands this consumer sent, answered by command_results.cmd.
    """CREATE TABLE IF NOT EXISTS replay_requests (
        cmd TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, from_seq BIGINT NOT NULL,
        to_seq BIGINT NOT NULL, ctr BIGINT NOT NULL, sent_ms BIGINT NOT NULL, status TEXT,
        reason TEXT, PRIMARY KEY (cmd))""",
    # Per-gateway pacing of replay commands.
    """CREATE TABLE IF NOT EXISTS replay_gate (
        gw TEXT NOT NULL, last_sent_ms BIGINT NOT NULL, PRIMARY KEY (gw))""",
    # The replay key's command counter: one sequence for all workers.
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (name))""",
    # Payload v2 alias bindings learned from births (central/storage/bindings.py): shared by
    # every worker, so one that never saw the retained birth can still decode. `entries` is the
    # table as the birth carries it, JSON.
    """CREATE TABLE IF NOT EXISTS alias_bindings (
        gw TEXT NOT NULL, epoch TEXT NOT NULL, idx BIGINT NOT NULL, meter TEXT NOT NULL,
        entries TEXT NOT NULL, learned_ms BIGINT NOT NULL, PRIMARY KEY (gw, epoch, idx))""",
    # v2 reads that came before any birth declaring their binding: seq counted, bytes (hex)
    # kept until the binding is known, then decoded and stored as reads.
    """CREATE TABLE IF NOT EXISTS parked_reads (
        message_id TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, idx BIGINT NOT NULL,
        topic TEXT NOT NULL, payload TEXT NOT NULL, received_ms BIGINT NOT NULL,
        PRIMARY KEY (message_id))""",
    """CREATE TABLE IF NOT EXISTS schema_info (
        version INTEGER NOT NULL)""",
)

_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS alarms_kind_ts ON alarms (kind, ts_ms)",
    "CREATE INDEX IF NOT EXISTS gaps_open ON gaps (filled_ms, gw)",
    "CREATE INDEX IF NOT EXISTS replay_requests_gap ON replay_requests (gw, epoch, from_seq)",
)


def ddl(*, postgres: bool) -> list[str]:
    """The statements that create the schema (idempotent: ``IF NOT EXISTS`` throughout)."""
    fill = {
        "value_type": "NUMERIC" if postgres else "TEXT",
        "json_type": "JSONB" if postgres else "TEXT",
        "partition_reads": " PARTITION BY RANGE (t_ms)" if postgres else "",
        "partition_alarms": " PARTITION BY RANGE (ts_ms)" if postgres else "",
    }
    return [t.format(**fill) for t in _TABLES] + list(_INDEXES)


#: Tables partitioned by day in PostgreSQL, with their partition column.
PARTITIONED: Final = {"current_reads": "t_ms", "alarms": "ts_ms"}
DAY_MS: Final = 86_400_000
