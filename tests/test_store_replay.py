"""The store's side of replay (issue 15): acknowledged rows kept for the retention period after
their acknowledgement, queued again on request in their own lane, and the oldest seq held when
a range is not.

A real SQLite store in a temp dir; the pump's side is in tests/test_outbox_pump.py and the whole
chain (signed command, daemon, mosquitto) in tests/test_e2e_replay.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import NotHeld, OutboxCursor, OutboxMessage, Requeued, Store, StoreError
from gateway.store.schema import LATEST_VERSION, MIGRATIONS
from tests.test_store import DAY_MS, T0, alarm_message, poll


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "gw.db") as opened:
        yield opened


def _reads(store: Store, n: int, t: int = T0) -> list[int]:
    return store.commit_poll(poll(store, n, t), now_ms=t)


def test_an_acknowledged_range_is_queued_again_in_its_own_lane_with_its_payload(
        store: Store) -> None:
    seqs = _reads(store, 6)  # 1..6
    store.mark_acked(seqs, when_ms=T0)
    assert store.pending(10) == []
    before = store.requeues

    assert store.requeue(2, 4) == Requeued(requeued=3, pending=0)
    assert store.requeues == before + 1
    alarm = store.enqueue(alarm_message(store, "a1", T0))  # 7, priority lane
    live = _reads(store, 1)  # 8, read lane
    rows = store.pending(10)
    # Priority lane, then the replay lane, then the reads.
    assert [(r.seq, r.replay) for r in rows] == [(alarm, False), (2, True), (3, True),
                                                  (4, True), (live[0], False)]
    assert all(r.is_backlog(connect_seq=0) for r in rows if r.replay)  # always hist
    # The payload is the one first committed: same id, same seq.
    with sqlite3.connect(store.path) as conn:
        payloads = dict(conn.execute("SELECT seq, payload FROM outbox WHERE seq BETWEEN 2 AND 4"))
    assert {r.seq: r.payload for r in rows if r.replay} == payloads
    # The replay lane has its own cursor.
    after = OutboxCursor(priority=alarm, replay=3, bulk=0)
    assert [r.seq for r in store.pending(10, after)] == [4, live[0]]
    # A PUBACK acknowledges a replayed row like any other and ends its replay.
    store.mark_acked([2, 3, 4, alarm, live[0]], when_ms=T0 + 1)
    assert store.pending(10) == []
    assert store.outbox_depth() == 0
    # No seq was consumed by the replay.
    assert store.last_seq == live[0]


def test_a_range_partly_unacknowledged_is_not_sent_twice(store: Store) -> None:
    seqs = _reads(store, 4)
    store.mark_acked(seqs[:2], when_ms=T0)
    assert store.requeue(1, 4) == Requeued(requeued=2, pending=2)
    assert sorted(r.seq for r in store.pending(10)) == [1, 2, 3, 4]
    # Asked again while queued: nothing is queued twice.
    assert store.requeue(1, 4) == Requeued(requeued=0, pending=4)
    assert len(store.pending(10)) == 4


def test_replayed_rows_are_not_a_backlog_in_health(store: Store) -> None:
    seqs = _reads(store, 3, T0)
    store.mark_acked(seqs, when_ms=T0)
    store.requeue(1, 3)
    assert store.oldest_unacked_ms() is None  # delivered data asked for again, not a backlog
    assert store.outbox_depth() == 3  # but still work for the pump


def test_a_range_not_held_names_the_oldest_seq_held(store: Store) -> None:
    assert store.requeue(1, 1) == NotHeld(held_from=None, last_seq=0)
    old = _reads(store, 10, T0)  # 1..10
    young = _reads(store, 10, T0 + 5 * DAY_MS)  # 11..20
    store.mark_acked(old, when_ms=T0)
    store.mark_acked(young, when_ms=T0 + 5 * DAY_MS)
    assert store.prune(T0 + 4 * DAY_MS, retention_days=3) == 10
    assert store.held_from() == 11
    assert store.requeue(5, 15) == NotHeld(held_from=11, last_seq=20)
    assert store.requeue(15, 21) == NotHeld(held_from=11, last_seq=20)  # not committed yet
    assert store.pending(10) == []  # a refused range queues nothing
    assert store.requeue(11, 20) == Requeued(requeued=10, pending=0)


def test_held_from_skips_a_hole_left_behind_an_old_unacknowledged_row(store: Store) -> None:
    seqs = _reads(store, 5, T0)  # 1..5
    store.mark_acked(seqs[1:], when_ms=T0)  # seq 1 never acknowledged: kept forever
    young = _reads(store, 2, T0 + 9 * DAY_MS)  # 6, 7
    assert store.prune(T0 + 9 * DAY_MS, retention_days=1) == 4
    assert store.held_from() == young[0]
    assert store.requeue(1, 1) == Requeued(requeued=0, pending=1)  # held, and still pending
    assert store.requeue(1, 6) == NotHeld(held_from=young[0], last_seq=young[-1])


def test_retention_counts_from_the_acknowledgement_and_spares_queued_rows(store: Store) -> None:
    """A message that waited out a long outage is acknowledged late: it is still kept the whole
    retention period after that, since its consumer may have missed it; a row queued again is
    unacknowledged until its new PUBACK and never pruned meanwhile."""
    late = _reads(store, 2, T0)  # committed at T0
    early = _reads(store, 2, T0)
    store.mark_acked(early, when_ms=T0)
    store.mark_acked(late, when_ms=T0 + 6 * DAY_MS)  # after a six-day outage
    assert store.prune(T0 + 8 * DAY_MS, retention_days=3) == 2
    assert store.held_from() == late[0]
    assert store.requeue(late[0], late[-1]) == Requeued(requeued=2, pending=0)
    assert store.prune(T0 + 100 * DAY_MS, retention_days=3) == 0
    assert store.requeue(late[0], late[-1]) == Requeued(requeued=0, pending=2)


def test_a_version_3_store_upgrades_with_an_empty_replay_lane(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for migration in MIGRATIONS[:3]:
        for statement in migration.statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', '00000000000000ab'), "
                 "('last_seq', 3), ('bdseq', 0)")
    for seq, acked in ((1, T0), (2, T0), (3, None)):
        conn.execute("INSERT INTO outbox (seq, topic, payload, qos, created_ms, acked_ms) "
                     "VALUES (?, 'mtr/v1/gw/reads/m-1', ?, 1, ?, ?)", (seq, bytes([seq]), T0, acked))
    conn.close()
    with Store.open(path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert [(r.seq, r.replay) for r in store.pending(10)] == [(3, False)]
        assert store.requeue(1, 2) == Requeued(requeued=2, pending=0)
        assert [(r.seq, r.replay) for r in store.pending(10)] == [(1, True), (2, True), (3, False)]


def test_a_requeue_on_a_full_disk_queues_nothing(store: Store) -> None:
    """The requeue is one durable transaction: when it cannot commit nothing changes (the
    handler answers failed). Another writer holding the lock stands in for the disk here."""
    seqs = _reads(store, 3)
    store.mark_acked(seqs, when_ms=T0)
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert store._conn is not None
        store._conn.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StoreError):
            store.requeue(1, 3)
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert store.pending(10) == []


def test_requeue_refuses_an_empty_range(store: Store) -> None:
    with pytest.raises(ValueError, match="empty"):
        store.requeue(5, 4)
    with pytest.raises(ValueError, match="empty"):
        store.requeue(0, 4)


def test_blob_rows_replay_unchanged(store: Store) -> None:
    message = OutboxMessage(topic="t/b", qos=1, build=lambda seq: bytes([seq]) * 3)
    seqs = store.commit_poll([message] * 3, now_ms=T0)
    store.mark_acked(seqs, when_ms=T0)
    store.requeue(1, 3)
    assert [r.payload for r in store.pending(10)] == [b"\x01" * 3, b"\x02" * 3, b"\x03" * 3]


def test_the_replay_lane_is_read_again_after_each_replay_and_after_a_restart(
        tmp_path: Path) -> None:
    path = tmp_path / "lanes.db"
    with Store.open(path) as store:
        seqs = _reads(store, 4)
        store.mark_acked(seqs, when_ms=T0)
        for _ in range(2):  # found empty, then queued again: each replay is seen
            assert store.pending(10) == []
            assert store.requeue(seqs[0], seqs[1]) == Requeued(requeued=2, pending=0)
            assert [(r.seq, r.replay) for r in store.pending(10)] == [
                (seqs[0], True), (seqs[1], True)]
            store.mark_acked(seqs[:2], when_ms=T0 + 1)
        assert store.requeue(seqs[2], seqs[3]) == Requeued(requeued=2, pending=0)
    with Store.open(path) as reopened:  # the rows queued by the last run are still sent
        assert [(r.seq, r.replay) for r in reopened.pending(10)] == [
            (seqs[2], True), (seqs[3], True)]
