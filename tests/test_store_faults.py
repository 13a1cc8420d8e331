"""The store failing on real filesystems (issue 12): a full tmpfs, a read-only remount. The
outbox writer holds, retries, releases the ballast, reports its state, and spills at a stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pipeline.outbox import OutboxWriter, StoreFailure
from gateway.pipeline.spill import adopt_spills, spill
from gateway.store import OutboxMessage, Store
from gateway.store.disk import Ballast
from gateway.store.errors import StoreError
from protocols.payload import decode_message
from tests.fs_faults import ext4, tmpfs
from tests.test_store import T0, poll


def writer_on(store: Store, states: list[StoreFailure | None], **kwargs: object) -> OutboxWriter:
    writer = OutboxWriter(store, **kwargs)  # type: ignore[arg-type]
    writer.on_state_change = states.append
    return writer


def seqs_and_ids(store: Store) -> list[tuple[int, int]]:
    return [(row.seq, decode_message(row.payload)["seq"]) for row in store.pending(100_000)]


def test_a_full_disk_gives_up_the_ballast_and_commits_at_once(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs:
        store = Store.open(fs.path / "gw.db")
        ballast = Ballast(fs.path / "ballast", 1 << 20)
        assert ballast.lay()
        states: list[StoreFailure | None] = []
        writer = writer_on(store, states, ballast=ballast)
        fs.fill()
        for k in range(20):
            writer.write(poll(store, 4, T0 + k))
        assert writer.stats.ballast_released == 1 and not ballast.present
        assert writer.held == 0 and writer.failure is None and states == []
        assert [s for s, _ in seqs_and_ids(store)] == list(range(1, 81))
        store.close()


def test_held_while_full_then_committed_in_order_once_1_mb_is_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs:
        store = Store.open(fs.path / "gw.db")
        states: list[StoreFailure | None] = []
        writer = writer_on(store, states)
        writer.write(poll(store, 2, T0))
        filler = fs.fill()
        for k in range(1, 200):
            writer.write(poll(store, 2, T0 + k))
            if writer.held:
                break
        assert writer.failure is not None and writer.failure.full
        for k in range(200, 260):  # polls keep coming while the disk is full: held, in order
            writer.write(poll(store, 2, T0 + k))
        assert len(states) == 1 and states[0] is not None and states[0].full
        held = writer.held
        assert held >= 120
        fs.free(filler, 1 << 20)
        writer.flush()
        assert writer.held == 0 and writer.failure is None and states[-1] is None
        rows = seqs_and_ids(store)
        assert [s for s, _ in rows] == list(range(1, len(rows) + 1))  # no gap, nothing lost
        assert all(s == payload_seq for s, payload_seq in rows)
        wal = Path(str(store.path) + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # checkpointed after the recovery
        store.close()


def test_a_filesystem_gone_read_only_is_a_state_and_its_hold_survives_a_restart(
        tmp_path: Path) -> None:
    """ext4 remounts itself read-only after an error: the writer holds, says what to check, and
    at the stop the hold goes to the spill directory; after fsck the next start adopts it."""
    spill_dir = tmp_path / "spill"
    with ext4(tmp_path, tmp_path / "data") as fs:
        store = Store.open(fs.path / "gw.db")
        states: list[StoreFailure | None] = []
        writer = writer_on(store, states)
        writer.write(poll(store, 3, T0))
        fs.fail()
        for k in range(1, 11):
            writer.write(poll(store, 3, T0 + k))  # no exception: held
        assert writer.held == 30
        assert states and states[0] is not None and not states[0].full
        assert "read-only" in states[0].hint
        result = spill(writer.held_items(), spill_dir, epoch=store.epoch,
                       last_seq=store.last_seq, now_ms=T0 + 20)
        assert result.messages == 30
        store.close()
        fs.repair()
        with Store.open(fs.path / "gw.db") as reopened:
            assert adopt_spills(reopened, spill_dir, now_ms=T0 + 30) == 30
            rows = seqs_and_ids(reopened)
            assert [s for s, _ in rows] == list(range(1, 34))
            assert all(s == payload_seq for s, payload_seq in rows)


def test_store_errors_are_translated_on_a_read_only_filesystem(tmp_path: Path) -> None:
    with ext4(tmp_path, tmp_path / "data") as fs:
        store = Store.open(fs.path / "gw.db")
        fs.fail()
        with pytest.raises(StoreError) as info:
            store.commit_poll(poll(store, 1, T0))
        assert str(store.path) in str(info.value)
        store.close()


def test_what_is_held_at_a_stop_is_spilled_and_adopted_with_the_same_ids(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    with tmpfs(tmp_path / "fs", "4m") as fs:
        store = Store.open(fs.path / "gw.db")
        writer = writer_on(store, [])
        writer.write(poll(store, 2, T0))
        filler = fs.fill()
        for k in range(1, 400):
            writer.write(poll(store, 2, T0 + k))
            if writer.held >= 10:
                break
        held = writer.held_items()
        base = store.last_seq
        result = spill(held, spill_dir, epoch=store.epoch, last_seq=base, now_ms=T0 + 10)
        assert result.messages == len(held) and writer.forget_held() == len(held)
        store.close()
        fs.free(filler, 1 << 20)
        with Store.open(fs.path / "gw.db") as reopened:
            assert adopt_spills(reopened, spill_dir, now_ms=T0 + 20) == len(held)
            rows = seqs_and_ids(reopened)
            assert [s for s, _ in rows] == list(range(1, base + len(held) + 1))
            assert all(s == payload_seq for s, payload_seq in rows)
            ids = [decode_message(r.payload)["id"] for r in reopened.pending(100_000)]
            assert len(set(ids)) == len(ids)
        assert not list(spill_dir.glob("spill-*.cbor"))


def test_a_spill_the_store_has_moved_past_is_left_in_place(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gw.db")
    messages: list[tuple[OutboxMessage, None]] = [(m, None) for m in poll(store, 2, T0)]
    spill(messages, tmp_path / "spill", epoch=store.epoch, last_seq=store.last_seq, now_ms=T0)
    store.commit_poll(poll(store, 1, T0 + 1))  # committed first: the spill's seqs are taken
    assert adopt_spills(store, tmp_path / "spill", now_ms=T0) == 0
    assert len(list((tmp_path / "spill").glob("spill-*.cbor"))) == 1
    store.close()


