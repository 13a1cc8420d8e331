"""gateway/store: durability, sequencing, retention, disk full and damage — on real SQLite files."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.store import (
    DailyValue,
    HoldingQueue,
    OutboxCursor,
    OutboxMessage,
    Store,
    StoreError,
    StoreFullError,
    StoreVersionError,
    is_priority_topic,
)
from gateway.store.connection import PAGE_CACHE_KIB
from gateway.store.schema import APPLICATION_ID, LATEST_VERSION
from protocols.payload import (
    AlarmEvent,
    Envelope,
    ReadRecord,
    build_alarm,
    decode_message,
    mark_hist,
    parse_reads,
)

REPO = Path(__file__).resolve().parent.parent
T0 = 1_767_225_600_000
DAY_MS = 86_400_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "gw.db") as opened:
        yield opened


def reads_of(meter: str, t: int, energy: str = "1206.42") -> list[ReadRecord]:
    return [
        ReadRecord("energy.active.import.total", Decimal(energy), "kWh", t),
        ReadRecord("voltage.a", 229.7, "V", t),
        ReadRecord("energy.active.export.total", None, "kWh", t, quality="N", reasons=(3,)),
        ReadRecord("energy.reactive.total", Decimal("7.100"), "kvarh", t, "E", 14, (51, 52)),
    ]


def poll(store: Store, meters: int, t: int) -> list[OutboxMessage]:
    return [
        OutboxMessage.for_reads(
            topic=f"mtr/v1/gw-0001/reads/m-{k}",
            gw="gw-0001",
            epoch=store.epoch,
            ts=t,
            meter=f"m-{k}",
            reads=reads_of(f"m-{k}", t),
        )
        for k in range(meters)
    ]


def blob(size: int) -> OutboxMessage:
    return OutboxMessage(
        topic="t/blob", qos=1, build=lambda seq: seq.to_bytes(8, "big") + bytes(size)
    )


# ------------------------------------------------------------------------------- opening


def test_new_store_is_configured_for_durability(tmp_path: Path) -> None:
    with Store.open(tmp_path / "sub" / "gw.db") as store:
        conn = sqlite3.connect(store.path)
        pragmas = {
            p: conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("journal_mode", "auto_vacuum", "user_version", "application_id")
        }
        conn.close()
        assert pragmas == {
            "journal_mode": "wal",
            "auto_vacuum": 2,
            "user_version": LATEST_VERSION,
            "application_id": APPLICATION_ID,
        }
        # Per-connection settings, read on the store's own connection.
        own = store._conn
        assert own is not None
        assert own.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert own.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        # Page cache bounded below SQLite's 2,000 KiB default (negative: KiB, not pages).
        assert own.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
        assert store.last_seq == 0 and store.recovered_from is None


def test_epoch_is_random_per_database_and_stable_across_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db") as a:
        epoch_a = a.epoch
    with Store.open(tmp_path / "b.db") as b:
        assert b.epoch != epoch_a
    with Store.open(tmp_path / "a.db") as again:
        assert again.epoch == epoch_a
        assert 0 <= epoch_a < 2**64


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreVersionError, match="newer than this gateway"):
        Store.open(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.db"]


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError, match="another application"):
        Store.open(path)


# ------------------------------------------------------------------------------- damage


def _fill(path: Path, messages: int) -> int:
    with Store.open(path) as store:
        for _ in range(messages // 4):
            store.commit_poll([blob(300)] * 4, now_ms=T0)
        return store.epoch


def test_damaged_database_is_moved_aside_never_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gw.db"
    old_epoch = _fill(path, 200)
    damaged = _garble_middle_pages(path)

    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        store = Store.open(path, now_ms=T0)
    with store:
        moved = store.recovered_from
        assert moved is not None and moved.name.startswith("gw.db.corrupt-")
        assert moved.read_bytes() == damaged  # preserved byte for byte for `.recover`
        assert store.epoch != old_epoch and store.last_seq == 0 and store.outbox_depth() == 0
        # The store.corrupt alarm is the daemon's to raise (through its alarm service, with
        # the event that publishes it: test_e2e_daemon); the store says what it found.
        recovery = store.recovery
        assert recovery is not None and recovery.found_ms == T0
        details = recovery.details()
        assert details["moved_to"] == str(moved) and details["path"] == str(path)
        assert str(moved) in str(details["hint"]) and ".recover" in str(details["hint"])
        assert store.active_alarms() == []
    assert str(path) in caplog.text and str(moved) in caplog.text and ".recover" in caplog.text
    # The new file is healthy: reopening it moves nothing.
    with Store.open(path) as again:
        assert again.recovered_from is None


def test_file_that_is_not_sqlite_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    path.write_bytes(b"this is a config file somebody saved over the database\n" * 100)
    with Store.open(path) as store:
        assert store.recovered_from is not None
        assert store.recovered_from.read_bytes().startswith(b"this is a config file")
        assert store.recovery is not None
        assert store.recovery.details()["problem"] == "file is not a database"


def _garble_middle_pages(path: Path, count: int = 3) -> bytes:
    """Random bytes over ``count`` pages in the middle of the file (B-tree pages of the outbox);
    returns the damaged file's content."""
    page = 4096
    pages = path.stat().st_size // page
    rnd = random.Random(7)
    with path.open("r+b") as f:
        for number in range(pages // 3, pages // 3 + count):
            f.seek(number * page)
            f.write(rnd.randbytes(page))
    return path.read_bytes()


def test_wal_of_a_damaged_database_moves_with_it(tmp_path: Path) -> None:
    """A crash image: database and WAL copied while a store had them open. The WAL must not be
    left beside the new database, where SQLite would replay it."""
    live = tmp_path / "live"
    image = tmp_path / "image"
    image.mkdir()
    with Store.open(live / "gw.db") as store:
        store.commit_poll([blob(300)] * 200, now_ms=T0)
        assert store._conn is not None
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.commit_poll(poll(store, 3, T0), now_ms=T0)  # these live only in the WAL
        for name in ("gw.db", "gw.db-wal"):
            (image / name).write_bytes((live / name).read_bytes())
    wal = (image / "gw.db-wal").read_bytes()
    assert wal
    _garble_middle_pages(image / "gw.db")
    with Store.open(image / "gw.db") as fresh:
        moved = fresh.recovered_from
        assert moved is not None
        assert Path(f"{moved}-wal").read_bytes() == wal
        assert not (image / "gw.db-wal").exists() or (image / "gw.db-wal").read_bytes() != wal
        assert fresh.outbox_depth() == 0 and fresh.reads("m-0") == []


def test_wal_without_its_database_is_kept_not_discarded(tmp_path: Path) -> None:
    live = tmp_path / "live"
    with Store.open(live / "gw.db") as store:
        store.commit_poll(poll(store, 3, T0), now_ms=T0)
        wal = (live / "gw.db-wal").read_bytes()
    target = tmp_path / "gw.db"
    Path(f"{target}-wal").write_bytes(wal)  # the database itself was deleted by hand
    with Store.open(target) as fresh:
        assert fresh.recovered_from is not None
        assert Path(f"{fresh.recovered_from}-wal").read_bytes() == wal
        assert fresh.outbox_depth() == 0 and fresh.reads("m-0") == []
        assert fresh.recovery is not None
        assert fresh.recovery.problem.startswith("journal or WAL")


def test_locked_database_is_an_error_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    Store.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="could not run"):
            Store.open(path, busy_timeout_s=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []


# ------------------------------------------------------------------------------- outbox


def test_commit_poll_stores_reads_and_self_describing_payloads(store: Store) -> None:
    seqs = store.commit_poll(poll(store, 3, T0), now_ms=T0 + 5)
    assert seqs == [1, 2, 3] and store.last_seq == 3
    rows = store.pending(10)
    assert [r.seq for r in rows] == seqs
    for row in rows:
        message = parse_reads(row.payload)
        assert message.seq == row.seq
        assert message.id == f"gw-0001:{store.epoch:016x}:{row.seq}"
        assert row.created_ms == T0 + 5 and row.qos == 1 and row.attempts == 0
        assert row.topic == f"mtr/v1/gw-0001/reads/{message.meter}"
        stored = store.reads(message.meter)
        assert [s.seq for s in stored] == [row.seq] * 4
        assert [s.record for s in stored] == list(message.reads)


def test_stored_reads_are_exact(store: Store) -> None:
    records = [
        ReadRecord("e", Decimal("1206.420"), "kWh", T0),
        ReadRecord("e", Decimal("1E+5"), "kWh", T0 + 1),
        ReadRecord("e", Decimal("-0.001"), "kWh", T0 + 2),
        ReadRecord("v", 0.1 + 0.2, "V", T0 + 3),
        ReadRecord("e", None, "kWh", T0 + 4, "N"),
        ReadRecord("e", Decimal("5"), "kWh", T0 + 5, "S", 7, (1, 2, 3), hist=True),
    ]
    store.commit_poll(
        [OutboxMessage.for_reads(topic="t", gw="g", epoch=1, ts=T0, meter="m", reads=records)]
    )
    back = [s.record for s in store.reads("m")]
    assert [(r.val.as_tuple() if isinstance(r.val, Decimal) else r.val) for r in back] == [
        (r.val.as_tuple() if isinstance(r.val, Decimal) else r.val) for r in records
    ]
    assert back == records
    assert [s.record.t for s in store.reads("m", since_ms=T0 + 1, until_ms=T0 + 3)] == [
        T0 + 1,
        T0 + 2,
    ]
    assert [s.record.q for s in store.reads("m", quantity="v")] == ["v"]


def test_last_actual_registers_survive_retention_and_ignore_late_backfill(store: Store) -> None:
    def commit(t: int, records: list[ReadRecord], now_ms: int = T0) -> list[int]:
        return store.commit_poll(
            [OutboxMessage.for_reads(topic="t", gw="g", epoch=1, ts=t, meter="m-1", reads=records)],
            now_ms=now_ms,
        )

    seqs = commit(
        T0, [ReadRecord("e.imp", Decimal("100.00"), "kWh", T0), ReadRecord("v", 230.0, "V", T0)]
    )
    commit(
        T0 + 60_000,
        [
            ReadRecord("e.imp", Decimal("100.50"), "kWh", T0 + 60_000),
            ReadRecord("e.exp", Decimal("3.0"), "kWh", T0 + 60_000),
        ],
    )
    commit(
        T0 + 120_000,
        [
            ReadRecord("e.imp", Decimal("99"), "kWh", T0 + 120_000, "E", 14),
            ReadRecord("e.exp", None, "kWh", T0 + 120_000, "N"),
        ],
    )
    commit(T0 + 10, [ReadRecord("e.imp", Decimal("100.01"), "kWh", T0 + 10, hist=True)])  # backfill
    expected = [("m-1", "e.exp", Decimal("3.0")), ("m-1", "e.imp", Decimal("100.50"))]
    assert store.last_actual_registers() == expected
    assert str(store.last_actual_registers()[1][2]) == "100.50"
    store.mark_acked(range(1, store.last_seq + 1), when_ms=T0)
    store.prune(T0 + 100 * DAY_MS, retention_days=1)
    assert store.reads("m-1") == [] and seqs
    assert store.last_actual_registers() == expected


def test_a_repeated_register_value_is_not_rewritten_and_a_rollback_forgets_nothing(
        tmp_path: Path) -> None:
    store = Store.open(tmp_path / "marks.sqlite")

    def commit(t: int, value: str, build: object = None) -> None:
        message = OutboxMessage.for_reads(topic="t", gw="g", epoch=1, ts=t, meter="m-1",
                                          reads=[ReadRecord("e.imp", Decimal(value), "kWh", t)])
        if build is not None:
            message = OutboxMessage(topic="t", qos=1, build=build, meter="m-1",  # type: ignore[arg-type]
                                    reads=message.reads)
        store.commit_poll([message], now_ms=t)

    def row() -> tuple[int, str]:
        return tuple(store._require_open().execute(  # type: ignore[return-value]
            "SELECT t_ms, value FROM last_registers WHERE meter = 'm-1'").fetchone())

    commit(T0, "100.00")
    commit(T0 + 1000, "100.00")  # the same value again: no upsert, the first time is kept
    assert row() == (T0, "100.00")
    commit(T0 + 2000, "100.01")
    assert row() == (T0 + 2000, "100.01")
    commit(T0 + 1500, "100.00")  # late backfill between the kept t and the newest: ignored
    assert row() == (T0 + 2000, "100.01")

    def failing(seq: int) -> bytes:
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError):
        commit(T0 + 3000, "100.02", build=failing)  # rolled back: the table keeps 100.01 ...
    assert row() == (T0 + 2000, "100.01")
    commit(T0 + 4000, "100.02")  # ... and the rolled-back value is written when it comes again
    assert row() == (T0 + 4000, "100.02")
    store.close()
    # A reopened store knows what the table holds: a repeat is skipped, a late read ignored.
    store = Store.open(tmp_path / "marks.sqlite")
    commit(T0 + 3500, "100.01")
    commit(T0 + 5000, "100.02")
    assert row() == (T0 + 4000, "100.02")
    assert store.last_actual_registers() == [("m-1", "e.imp", Decimal("100.02"))]
    store.close()


def test_failed_build_rolls_back_everything_and_consumes_no_seq(store: Store) -> None:
    store.commit_poll(poll(store, 1, T0))

    def broken(seq: int) -> bytes:
        raise RuntimeError("payload bug")

    with pytest.raises(RuntimeError, match="payload bug"):
        store.commit_poll([*poll(store, 2, T0), OutboxMessage(topic="t", qos=1, build=broken)])
    assert store.last_seq == 1 and store.outbox_depth() == 1
    assert store.reads("m-1") == []
    assert store.commit_poll(poll(store, 1, T0)) == [2]


def test_invalid_messages_are_refused_before_touching_the_database(store: Store) -> None:
    with pytest.raises(ValueError, match="qos"):
        store.commit_poll([OutboxMessage(topic="t", qos=3, build=lambda s: b"x")])
    with pytest.raises(ValueError, match="meter"):
        store.commit_poll(
            [OutboxMessage(topic="t", qos=1, build=lambda s: b"x", reads=reads_of("m", T0))]
        )
    with pytest.raises(TypeError, match="not bytes"):
        store.commit_poll([OutboxMessage(topic="t", qos=1, build=lambda s: "text")])  # type: ignore[arg-type,return-value]
    assert store.last_seq == 0


def test_pending_cursor_acks_depth_and_age(store: Store) -> None:
    for i in range(5):
        store.commit_poll([blob(10)], now_ms=T0 + i)
    assert store.outbox_depth() == 5 and store.oldest_unacked_ms() == T0
    assert [r.seq for r in store.pending(2)] == [1, 2]
    assert [r.seq for r in store.pending(10, after=OutboxCursor(bulk=2))] == [3, 4, 5]
    assert store.mark_acked([1, 3], when_ms=T0 + 10) == 2
    assert store.mark_acked([1, 3, 99], when_ms=T0 + 11) == 0  # repeats and unknown seqs
    assert [r.seq for r in store.pending(10)] == [2, 4, 5]
    assert store.outbox_depth() == 3 and store.oldest_unacked_ms() == T0 + 1
    store.mark_attempted([2, 2, 4], when_ms=T0 + 12)
    assert {r.seq: r.attempts for r in store.pending(10)} == {2: 2, 4: 1, 5: 0}
    store.mark_acked([2, 4, 5])
    assert (
        store.outbox_depth() == 0 and store.oldest_unacked_ms() is None and store.pending(10) == []
    )


def test_acknowledgements_and_hand_over_counts_are_written_together(store: Store) -> None:
    for i in range(4):
        store.commit_poll([blob(10)], now_ms=T0 + i)
    # 1 handed over twice and acknowledged, 2 handed over once and acknowledged, 3 handed over
    # and still in flight, 4 untouched; one write for all of it.
    assert store.mark_acked([1, 2], when_ms=T0 + 20, attempted=[1, 3, 1, 2]) == 2
    rows = store._require_open().execute(
        "SELECT seq, attempts, last_attempt_ms, acked_ms FROM outbox ORDER BY seq").fetchall()
    assert rows == [(1, 2, T0 + 20, T0 + 20), (2, 1, T0 + 20, T0 + 20), (3, 1, T0 + 20, None),
                    (4, 0, None, None)]
    # A repeated acknowledgement changes nothing, not even the counts.
    assert store.mark_acked([1], when_ms=T0 + 30, attempted=[]) == 0
    assert store._require_open().execute(
        "SELECT attempts, acked_ms FROM outbox WHERE seq = 1").fetchone() == (2, T0 + 20)


def test_a_large_batch_of_acknowledgements_and_counts_is_written_exactly(store: Store) -> None:
    """More rows than one statement's list holds, with every kind of change mixed: each row
    ends as if it had been updated on its own."""
    total = 1300
    store.commit_poll([blob(4) for _ in range(total)], now_ms=T0)
    store.mark_acked([7], when_ms=T0 + 1)  # acknowledged earlier: left as it is
    acked = [seq for seq in range(1, 1201) if seq % 3] + [7, 8, 8]  # repeats included
    attempted = [seq for seq in range(1, total + 1) if seq % 2] + [5, 5, 1250]
    assert store.mark_acked(acked, when_ms=T0 + 50, attempted=attempted) == len(
        {seq for seq in range(1, 1201) if seq % 3} - {7})
    expected: list[tuple[int, int, int | None, int | None]] = []
    for seq in range(1, total + 1):
        tries = attempted.count(seq)
        if seq == 7:
            expected.append((seq, 0, None, T0 + 1))
        elif seq in acked:
            expected.append((seq, tries, T0 + 50 if tries else None, T0 + 50))
        else:
            expected.append((seq, tries, T0 + 50 if tries else None, None))
    rows = store._require_open().execute(
        "SELECT seq, attempts, last_attempt_ms, acked_ms FROM outbox ORDER BY seq").fetchall()
    assert rows == expected


def test_backlog_is_decided_by_sequence_and_keeps_the_id(store: Store) -> None:
    store.commit_poll(poll(store, 2, T0))  # committed while offline
    connect_seq = store.last_seq  # the connection comes up here
    store.commit_poll(poll(store, 1, T0 + 60_000))  # live
    rows = store.pending(10)
    sent = {row.seq: decode_message(mark_hist(row.payload) if row.is_backlog(connect_seq)
                                    else row.payload) for row in rows}
    assert {seq: m.get("hist") for seq, m in sent.items()} == {1: True, 2: True, 3: None}
    for row in rows:
        assert sent[row.seq]["id"] == decode_message(row.payload)["id"]
        assert sent[row.seq]["seq"] == row.seq
    # The stored payload itself is never rewritten.
    assert all("hist" not in decode_message(row.payload) for row in store.pending(10))


def test_seq_is_never_reused_even_after_everything_is_pruned(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    with Store.open(path) as store:
        seqs = store.commit_poll([blob(10)] * 10, now_ms=T0)
        store.mark_acked(seqs, when_ms=T0)
        assert store.prune(T0 + 10 * DAY_MS, retention_days=1) == 10
        assert store.pending(10) == [] and store.outbox_depth() == 0
    with Store.open(path) as store:
        assert store.commit_poll([blob(10)]) == [11]


def test_concurrent_writers_in_threads_get_distinct_contiguous_seqs(store: Store) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(20):
            seqs = store.commit_poll([blob(10)] * 3)
            with lock:
                got.extend(seqs)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 241))


def test_readers_see_only_committed_data_and_are_not_blocked(store: Store) -> None:
    store.commit_poll([blob(10)])
    seen_during_commit: list[int] = []

    def build(seq: int) -> bytes:
        # Runs inside the writer's open transaction.
        reader = sqlite3.connect(store.path, timeout=0.1)
        seen_during_commit.append(reader.execute("SELECT count(*) FROM outbox").fetchone()[0])
        reader.close()
        return b"payload"

    store.commit_poll([OutboxMessage(topic="t", qos=1, build=build)])
    assert seen_during_commit == [1]
    assert store.outbox_depth() == 2


# ------------------------------------------------------------------------------- retention


def test_prune_deletes_only_acknowledged_rows_past_retention(store: Store) -> None:
    old_acked = store.commit_poll(poll(store, 2, T0), now_ms=T0)
    old_unacked = store.commit_poll(poll(store, 2, T0), now_ms=T0)
    young_acked = store.commit_poll(poll(store, 2, T0), now_ms=T0 + 29 * DAY_MS)
    store.mark_acked(old_acked, when_ms=T0)
    store.mark_acked(young_acked, when_ms=T0 + 29 * DAY_MS)
    store.raise_alarm("a/old", "a", {}, T0 - DAY_MS)
    store.clear_alarm("a/old", T0)
    store.raise_alarm("a/active", "a", {}, T0)

    assert store.prune(T0 + 30 * DAY_MS + 1, retention_days=30) == 2
    assert [r.seq for r in store.pending(10)] == old_unacked  # never deleted, however old
    remaining = {s.seq for k in range(2) for s in store.reads(f"m-{k}")}
    assert remaining == set(old_unacked + young_acked)  # reads went with their message
    assert store.alarm("a/old") is None and store.alarm("a/active") is not None


def test_prune_works_in_batches_and_returns_space(store: Store) -> None:
    seqs = store.commit_poll([blob(1000)] * 5000, now_ms=T0)
    store.mark_acked(seqs, when_ms=T0)
    assert store._conn is not None
    pages_before = store._conn.execute("PRAGMA page_count").fetchone()[0]
    assert store.prune(T0 + 2 * DAY_MS, retention_days=1) == 5000
    pages_after = store._conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages_after < pages_before / 10
    assert store.commit_poll([blob(10)]) == [5001]


def test_prune_refuses_negative_retention(store: Store) -> None:
    with pytest.raises(ValueError, match="retention_days"):
        store.prune(T0, -1)


# ------------------------------------------------------------------------------- full disk


def test_full_database_raises_store_full_and_loses_nothing_committed(store: Store) -> None:
    assert store._conn is not None
    store._conn.execute(
        f"PRAGMA max_page_count = {store._conn.execute('PRAGMA page_count').fetchone()[0] + 20}"
    )
    committed: list[int] = []
    with pytest.raises(StoreFullError, match="nothing of this transaction was stored"):
        for _ in range(1000):
            committed += store.commit_poll([blob(3000)] * 3, now_ms=T0)
    assert committed and store.last_seq == committed[-1]
    assert [r.seq for r in store.pending(1000)] == committed
    store._conn.execute("PRAGMA max_page_count = 1000000")  # space freed
    assert store.commit_poll([blob(10)]) == [committed[-1] + 1]
    assert store._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root or CAP_SYS_ADMIN; skipped otherwise)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_really_full_disk(tiny_filesystem: Path) -> None:
    ballast = tiny_filesystem / "ballast"
    ballast.write_bytes(bytes(256 * 1024))
    path = tiny_filesystem / "gw.db"
    store = Store.open(path)
    status = store.disk_status(min_free_mb=0.5, min_free_pct=10)
    assert status.total_bytes == 1024 * 1024 and status.free_bytes < 800 * 1024
    committed: list[int] = []
    with pytest.raises(StoreFullError):
        for _ in range(1000):
            committed += store.commit_poll(poll(store, 4, T0), now_ms=T0)
    assert store.disk_status(min_free_mb=0.5, min_free_pct=10).alarm
    assert [r.seq for r in store.pending(10_000)] == committed
    ballast.unlink()  # the operator frees space
    assert store.commit_poll(poll(store, 1, T0)) == [committed[-1] + 1]
    store.close()
    with Store.open(path) as reopened:
        assert reopened.recovered_from is None
        assert reopened.last_seq == committed[-1] + 1


def test_holding_queue_keeps_polls_in_order_while_full_and_counts_what_it_drops(
    store: Store,
) -> None:
    assert store._conn is not None
    conn = store._conn
    queue = HoldingQueue(store, max_messages=6)
    assert queue.commit([blob(10)] * 2).seqs == [1, 2]
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    outcome = queue.commit([blob(8000)] * 2, now_ms=T0)
    assert (outcome.seqs, outcome.held, outcome.dropped) == ([], 2, 0)
    queue.commit([blob(8000)] * 2, now_ms=T0)
    outcome = queue.commit([blob(8000)] * 3, now_ms=T0)
    assert (outcome.held, outcome.dropped, queue.dropped_total) == (5, 2, 2)
    assert isinstance(outcome.error, StoreFullError)  # the writer logs it (pipeline/outbox.py)
    conn.execute("PRAGMA max_page_count = 1000000")
    outcome = queue.commit([blob(10)], now_ms=T0)
    assert (outcome.seqs, outcome.held) == ([3, 4, 5, 6, 7, 8], 0)


def test_disk_status_thresholds(store: Store) -> None:
    stats = os.statvfs(store.path.parent)
    free = stats.f_bavail * stats.f_frsize
    assert not store.disk_status(min_free_mb=0, min_free_pct=0).alarm
    assert store.disk_status(min_free_mb=free / 2**20 + 100, min_free_pct=0).alarm
    assert store.disk_status(min_free_mb=0, min_free_pct=100.1).alarm
    assert "MiB free" in store.disk_status(0, 0).describe()


# ------------------------------------------------------------------------------- alarms, history


def test_alarm_raise_and_clear_are_edges_with_atomic_events(store: Store) -> None:
    def event(state: str, seq_hint: str) -> OutboxMessage:
        return OutboxMessage(
            topic="mtr/v1/gw-0001/alarms",
            qos=1,
            build=lambda seq: build_alarm(
                Envelope("gw-0001", store.epoch, seq, T0),
                AlarmEvent(
                    "meter.offline",
                    "meter.offline/m-2",
                    state,
                    "major",
                    {"hint": seq_hint},
                    meter="m-2",
                ),
            ),
        )

    assert store.raise_alarm(
        "meter.offline/m-2", "meter.offline", {"tries": 3}, T0, event=event("raised", "a")
    )
    assert not store.raise_alarm(
        "meter.offline/m-2", "meter.offline", {"tries": 9}, T0 + 1, event=event("raised", "b")
    )
    (active,) = store.active_alarms()
    assert (active.raised_ms, active.details) == (T0, {"tries": 3})
    assert store.clear_alarm("meter.offline/m-2", T0 + 5, event=event("cleared", "c"))
    assert not store.clear_alarm("meter.offline/m-2", T0 + 6, event=event("cleared", "d"))
    assert store.active_alarms() == []
    assert store.alarm("meter.offline/m-2").cleared_ms == T0 + 5  # type: ignore[union-attr]
    published = [decode_message(r.payload) for r in store.pending(10)]
    assert [(m["state"], m["details"]) for m in published] == [
        ("raised", {"hint": "a"}),
        ("cleared", {"hint": "c"}),
    ]
    assert store.raise_alarm(
        "meter.offline/m-2", "meter.offline", {"tries": 1}, T0 + 9
    )  # raised again
    assert store.alarm("meter.offline/m-2").raised_ms == T0 + 9  # type: ignore[union-attr]


def test_alarm_details_must_be_storable(store: Store) -> None:
    with pytest.raises(TypeError, match="not storable"):
        store.raise_alarm("k", "k", {"x": object()}, T0)
    assert store.raise_alarm("k", "k", {"free": Decimal("1.5"), "raw": b"\x01"}, T0)
    assert store.alarm("k").details == {"free": "1.5", "raw": "01"}  # type: ignore[union-attr]


def test_daily_history_put_get_and_replace(store: Store) -> None:
    day = dt.date(2026, 1, 1)
    store.put_daily(
        [
            DailyValue(
                "m-1",
                "energy.active.import.total",
                day + dt.timedelta(days=i),
                Decimal(f"{100 + i}.10"),
                "A",
            )
            for i in range(5)
        ]
        + [DailyValue("m-1", "energy.active.import.total", day + dt.timedelta(days=5), None, "N")]
    )
    store.put_daily(
        [
            DailyValue(
                "m-1",
                "energy.active.import.total",
                day + dt.timedelta(days=2),
                Decimal("102.00"),
                "S",
            )
        ]
    )
    got = store.get_daily(
        "m-1", "energy.active.import.total", day + dt.timedelta(days=1), day + dt.timedelta(days=5)
    )
    assert [(v.day.day, v.value, v.quality) for v in got] == [
        (2, Decimal("101.10"), "A"),
        (3, Decimal("102.00"), "S"),
        (4, Decimal("103.10"), "A"),
        (5, Decimal("104.10"), "A"),
        (6, None, "N"),
    ]
    assert str(got[1].value) == "102.00"
    with pytest.raises(ValueError, match="quality 'N'"):
        store.put_daily([DailyValue("m-1", "q", day, None, "A")])


def test_bdseq_advances_across_restarts(tmp_path: Path) -> None:
    with Store.open(tmp_path / "gw.db") as store:
        assert [store.next_bdseq(), store.next_bdseq()] == [1, 2]
    with Store.open(tmp_path / "gw.db") as store:
        assert store.next_bdseq() == 3


def test_closed_store_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gw.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.outbox_depth()


# ------------------------------------------------------------------------------- crash


CHILD = """
import sys
from gateway.store import Store, OutboxMessage
from tests.test_store import poll
store = Store.open(sys.argv[1])
print("epoch", store.epoch, flush=True)
i = 0
while True:
    seqs = store.commit_poll(poll(store, 3, 1_767_225_600_000 + i))
    print(*seqs, flush=True)
    if i % 7 == 0:
        store.mark_acked(seqs[:1])
    i += 1
"""


def test_sigkill_at_random_moments_loses_no_committed_poll(tmp_path: Path) -> None:
    """A child commits polls in a loop and prints each seq once commit_poll has returned; it is
    killed with SIGKILL at a random moment, eight times over the same database. Every printed seq
    must be there afterwards, with its reads, and committed seqs must have no gaps.

    SIGKILL proves the transaction boundaries and the WAL recovery; surviving power loss also
    needs the fsyncs of synchronous=FULL, which no test short of pulling a plug can show.
    """
    path = tmp_path / "gw.db"
    rnd = random.Random(20260101)
    printed: list[int] = []
    epochs = set()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        header = child.stdout.readline().split()
        assert header and header[0] == "epoch", child.stderr.read() if child.stderr else ""
        epochs.add(int(header[1]))
        deadline = time.monotonic() + rnd.uniform(0.05, 0.4)
        lines = 0
        while time.monotonic() < deadline or lines == 0:
            line = child.stdout.readline()
            if not line:
                break
            printed.extend(int(s) for s in line.split())
            lines += 1
        time.sleep(rnd.uniform(0, 0.01))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
        for line in rest.splitlines():  # lines already in the pipe were printed before the kill
            printed.extend(int(s) for s in line.split())
        assert child.returncode == -signal.SIGKILL

        with Store.open(path) as store:
            assert store.recovered_from is None
            assert store._conn is not None
            assert store._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            stored = [row[0] for row in store._conn.execute("SELECT seq FROM outbox ORDER BY seq")]
            assert set(printed) <= set(stored)
            assert stored == list(range(1, len(stored) + 1)), "gap among committed seqs"
            assert store.last_seq == stored[-1]
            per_seq = {
                seq: (meter, len(parse_reads(payload).reads))
                for seq, meter, payload in store._conn.execute(
                    "SELECT seq, meter, payload FROM outbox")
            }
            assert all(per_seq[seq][0] and per_seq[seq][1] == 4 for seq in stored), \
                "a message without its reads"
            for row in store._conn.execute(
                "SELECT seq, payload FROM outbox ORDER BY random() LIMIT 20"
            ):
                assert json.loads(json.dumps(decode_message(row[1])["seq"])) == row[0]
    assert len(epochs) == 1
    assert len(printed) > 8


def test_outbox_queries_use_their_partial_indexes(store: Store) -> None:
    """Weeks of acknowledged rows sit before the unacknowledged ones; the pump's and retention's
    queries must go straight to their rows instead of walking those — and the priority lane's
    query must not walk the read backlog either."""
    assert store._conn is not None
    columns = "seq, topic, payload, qos, created_ms, attempts, priority, replay"
    plans = {
        "priority": f"SELECT {columns} FROM outbox WHERE acked_ms IS NULL AND priority = 1 "
        "AND replay = 0 AND seq > 0 ORDER BY seq LIMIT 5",
        "replay": f"SELECT {columns} FROM outbox WHERE acked_ms IS NULL AND replay = 1 "
        "AND seq > 0 ORDER BY seq LIMIT 5",
        "bulk": f"SELECT {columns} FROM outbox WHERE acked_ms IS NULL AND priority = 0 "
        "AND replay = 0 AND seq > 0 ORDER BY seq LIMIT 5",
        "depth": "SELECT count(*) FROM outbox WHERE acked_ms IS NULL",
        "prune": "SELECT seq FROM outbox WHERE acked_ms IS NOT NULL AND created_ms < 5 "
        "ORDER BY created_ms LIMIT 5",
    }
    used = {
        name: " ".join(row[3] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        for name, sql in plans.items()
    }
    assert "INDEX outbox_priority_unacked" in used["priority"], used
    assert "INDEX outbox_unacked" in used["bulk"] and "INDEX outbox_unacked" in used["depth"]
    assert "INDEX outbox_replay_unacked" in used["replay"], used
    assert "TEMP B-TREE" not in used["priority"] + used["bulk"] + used["replay"], used
    assert "outbox_acked_age" in used["prune"]
    # the statements Store.pending really runs are these three
    source = inspect.getsource(Store.pending)
    assert '"FROM outbox WHERE acked_ms IS NULL AND {lane} AND seq > ? "' in source
    assert '"ORDER BY seq LIMIT ?"' in source
    for lane in ("priority = 1 AND replay = 0", "replay = 1", "priority = 0 AND replay = 0"):
        assert f'"{lane}"' in source


def alarm_message(store: Store, key: str, t: int) -> OutboxMessage:
    event = AlarmEvent(kind="comm_loss", key=key, state="raised", severity="major", meter="m-0")
    return OutboxMessage(
        topic="mtr/v1/gw-0001/alarms", qos=1,
        build=lambda seq: build_alarm(Envelope("gw-0001", store.epoch, seq, t), event))


def result_message(payload: bytes = b"\xa0") -> OutboxMessage:
    return OutboxMessage(topic="mtr/v1/gw-0001/cmd/result", qos=1, build=lambda seq: payload)


def test_alarms_and_command_results_overtake_the_read_backlog(store: Store) -> None:
    """The lane follows from the topic at commit; pending() gives the priority lane first, each
    lane in seq order, and a cursor per lane resumes each exactly after its own last row."""
    store.commit_poll(poll(store, 3, T0), now_ms=T0)  # 1..3 reads
    assert store.enqueue(alarm_message(store, "a1", T0 + 1)) == 4
    store.commit_poll(poll(store, 2, T0 + 2))  # 5..6 reads
    assert store.enqueue(result_message()) == 7
    assert store.enqueue(alarm_message(store, "a2", T0 + 3)) == 8

    rows = store.pending(10)
    assert [r.seq for r in rows] == [4, 7, 8, 1, 2, 3, 5, 6]
    assert [r.priority for r in rows] == [True] * 3 + [False] * 5
    assert [r.seq for r in store.pending(4)] == [4, 7, 8, 1]
    # the pump's cursor after handing over 4, 7, 1: the rest of each lane, priority first
    cursor = OutboxCursor()
    for row in (rows[0], rows[1], rows[3]):
        cursor = cursor.past(row)
    assert cursor == OutboxCursor(priority=7, bulk=1)
    assert [r.seq for r in store.pending(10, after=cursor)] == [8, 2, 3, 5, 6]
    # an alarm committed now is next, ahead of the reads still waiting
    assert store.enqueue(alarm_message(store, "a3", T0 + 4)) == 9
    assert [r.seq for r in store.pending(2, after=cursor)] == [8, 9]
    # acknowledgements, depth, age and the backlog rule do not care about lanes
    assert store.mark_acked([4, 7, 8, 9]) == 4
    assert [r.seq for r in store.pending(10)] == [1, 2, 3, 5, 6]
    assert store.outbox_depth() == 5 and store.oldest_unacked_ms() == T0
    assert [r.is_backlog(5) for r in rows] == [True, False, False, True, True, True, True, False]
    # seq stays one sequence per store: no gaps, whatever the lane
    assert sorted(r.seq for r in rows) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_the_lane_is_chosen_by_topic_ending() -> None:
    assert is_priority_topic("mtr/v1/gw-0001/alarms")
    assert is_priority_topic("mtr/v1/gw-0001/cmd/result")
    assert not is_priority_topic("mtr/v1/gw-0001/reads/alarms-meter")
    assert not is_priority_topic("mtr/v1/gw-0001/reads/alarms")  # a meter called "alarms"
    assert not is_priority_topic("mtr/v1/gw-0001/groups/alarms")
    assert not is_priority_topic("mtr/v1/gw-0001/cmd")
    assert not is_priority_topic("mtr/v1/gw-0001/groups/g1")
    assert not is_priority_topic("mtr/v1/gw-0001/reads/m-1")


def test_a_version_2_store_upgrades_in_place_with_its_alarms_in_the_priority_lane(
    tmp_path: Path,
) -> None:
    """A store written by the schema before the lanes (version 2) with a read backlog and
    unacknowledged alarms: after the upgrade nothing is lost, its waiting alarms and results
    lead (the migration's SQL applies the same rule as is_priority_topic), acknowledged rows
    stay acknowledged, and new commits choose their lane."""
    from gateway.store.schema import MIGRATIONS

    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for migration in MIGRATIONS[:2]:
        for statement in migration.statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', '00000000000000ab'), "
                 "('last_seq', 8), ('bdseq', 0)")
    topics = {
        1: ("mtr/v1/gw-0001/alarms", T0),  # acknowledged before the upgrade
        2: ("mtr/v1/gw-0001/reads/m-1", None),
        3: ("mtr/v1/gw-0001/alarms", None),
        4: ("mtr/v1/gw-0001/groups/g1", None),
        5: ("mtr/v1/gw-0001/cmd/result", None),
        6: ("mtr/v1/gw-0001/reads/alarms", None),
        7: ("mtr/v1/gw-0001/cmd", None),
        8: ("mtr/v1/gw-0001/groups/alarms", None),
    }
    for seq, (topic, acked) in topics.items():
        conn.execute("INSERT INTO outbox (seq, topic, payload, qos, created_ms, acked_ms) "
                     "VALUES (?, ?, ?, 1, ?, ?)", (seq, topic, bytes([seq]), T0 + seq, acked))
    conn.close()

    with Store.open(path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        rows = store.pending(10)
        assert [r.seq for r in rows] == [3, 5, 2, 4, 6, 7, 8]
        assert all(r.priority == is_priority_topic(r.topic) for r in rows)
        assert [r.payload for r in rows] == [bytes([r.seq]) for r in rows]
        assert store._conn.execute("SELECT priority FROM outbox WHERE seq = 1").fetchone()[0] == 0
        assert store.enqueue(alarm_message(store, "a9", T0 + 9)) == 9
        store.commit_poll(poll(store, 1, T0 + 10))  # 10
        assert [r.seq for r in store.pending(10)] == [3, 5, 9, 2, 4, 6, 7, 8, 10]


def test_a_version_1_store_keeps_its_reads_through_the_upgrade(tmp_path: Path) -> None:
    """Version 1 kept a row per value in a `reads` table; version 2 finds reads through their
    outbox payload. A gateway upgraded in the field must still answer for its old reads."""
    from gateway.store.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in MIGRATIONS[0].statements:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', '00000000000000ab'), "
                 "('last_seq', 1), ('bdseq', 0)")
    records = reads_of("m-7", T0)
    payload = OutboxMessage.for_reads(topic="t/reads/m-7", gw="gw-0001", epoch=0xAB, ts=T0,
                                      meter="m-7", reads=records).build(1)
    conn.execute("INSERT INTO outbox (seq, topic, payload, qos, created_ms) "
                 "VALUES (1, 't/reads/m-7', ?, 1, ?)", (payload, T0))
    for record in records:  # as version 1 wrote them
        conn.execute("INSERT INTO reads (seq, meter, quantity, t_ms, value_kind, value_text, "
                     "value_real, unit, quality) VALUES (1, 'm-7', ?, ?, 'null', NULL, NULL, ?, "
                     "'N')", (record.q, record.t, record.unit))
    conn.close()

    with Store.open(path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert [s.record for s in store.reads("m-7")] == records
        assert store.reads("m-7", since_ms=T0 + 1) == []
        assert store.commit_poll(poll(store, 1, T0 + 1)) == [2]
        assert [s.seq for s in store.reads("m-0")] == [2] * 4
