"""Storage of the central consumer, on SQLite and on a real PostgreSQL (tests/pg_cluster.py).

Each test runs against both engines: the same batches must leave the same rows.
"""

from __future__ import annotations

import threading
from decimal import Decimal

from central.decoding import Decoder, Inbound
from central.storage import Database, open_database
from central.storage.gaps import claim_replays, record_replay, scan_gaps
from central.storage.ingest import ingest
from central.storage.queries import gateway_status, interval_reads, outage_alarms
from protocols.payload import Envelope, build_reads, mark_hist
from tests.central.support import (
    EPOCH,
    PREFIX,
    alarm_msg,
    birth_msg,
    fresh_pg,
    health_msg,
    reads_msg,
    register,
)

GW = "gw-1"
Q = "energy.active.import.total"


def rows(db: Database) -> list[tuple[object, ...]]:
    return [tuple(str(v) if v is not None and not isinstance(v, str | int) else v for v in r)
            for r in db.execute(
                "SELECT meter, quantity, t_ms, value, quality, method, reasons, message_id, rev "
                "FROM current_reads ORDER BY meter, quantity, t_ms")]


def test_reads_stored_once_with_exact_values_and_resends_are_duplicates(db: Database) -> None:
    first = reads_msg(GW, 1, "m-1", [register(900_000, "1206.420"), register(1_800_000, "1206.5")])
    report = ingest(db, [first], 10)
    assert (report.stored, report.duplicates, report.values) == (1, 0, 2)
    payload = build_reads(Envelope(GW, EPOCH, 1, 1_000), "m-1",
                          [register(900_000, "1206.420"), register(1_800_000, "1206.5")])
    resent = Decoder(PREFIX, {}).decode(f"{PREFIX}/{GW}/reads/m-1", mark_hist(payload))
    report = ingest(db, [resent, first], 20)
    assert (report.stored, report.duplicates) == (0, 2)
    got = rows(db)
    assert [r[3] for r in got] == ["1206.420", "1206.5"]  # scale kept: exact, not float
    assert all(r[7] == f"{GW}:{EPOCH:016x}:1" for r in got)


def test_a_correction_replaces_the_earlier_version_in_any_order(db: Database) -> None:
    estimate = reads_msg(GW, 1, "m-1", [register(900_000, "10.0", quality="E", method=17,
                                                 reasons=(76,))])
    corrected = reads_msg(GW, 2, "m-1", [register(900_000, "10.25", rev=1)])
    ingest(db, [corrected], 1)
    ingest(db, [estimate], 2)  # the older version arriving late changes nothing
    assert rows(db) == [("m-1", Q, 900_000, "10.25", "A", None, "", f"{GW}:{EPOCH:016x}:2", 1)]
    db2_estimate_first = [estimate, corrected]
    db.execute("DELETE FROM current_reads")
    db.execute("DELETE FROM seq_ranges")
    ingest(db, db2_estimate_first, 3)  # both in one batch: the higher rev wins
    assert rows(db)[0][3:5] == ("10.25", "A")


def test_large_batches_with_corrections_keep_the_higher_rev(db: Database) -> None:
    # Batches of 100 rows take PostgreSQL's plain-COPY fast path; a batch holding a key already
    # stored (a correction, or an original after its correction) falls back to the upsert.
    def msg(seq: int, value: str, rev: int, times: range) -> Inbound:
        return reads_msg(GW, seq, "m-1", [register(t * 900_000, f"{value}.{t}", rev=rev)
                                          for t in times])
    assert ingest(db, [msg(1, "1", 0, range(1, 101))], 1).values == 100
    # 100 corrections and one new key (t = 101) in one batch
    assert ingest(db, [msg(3, "2", 1, range(1, 101)), msg(4, "5", 0, range(101, 102))],
                  2).values == 101
    assert ingest(db, [msg(2, "3", 0, range(1, 101))], 3).values == 100  # originals, late
    assert ingest(db, [msg(5, "6", 0, range(102, 202))], 4).values == 100  # new keys again
    got = rows(db)
    assert [r[3] for r in got] == [f"2.{t}" for t in range(1, 101)] + ["5.101"] + [
        f"6.{t}" for t in range(102, 202)]
    assert [r[8] for r in got] == [1] * 100 + [0] * 101
    fast = getattr(db, "fast_copies", None)
    if fast is not None:  # PostgreSQL: new keys COPYed, the other two batches upserted
        assert (fast, db.fallback_copies) == (2, 2)  # type: ignore[attr-defined]


def test_names_with_copy_reserved_characters_are_stored_as_sent(db: Database) -> None:
    meter = "m\t1\\x\ny"  # a tab, a backslash and a newline: COPY's text format reserves them
    msg = reads_msg(GW, 1, meter, [register(t * 900_000, "1.5", quality="E", method=17,
                                            reasons=(76, 18)) for t in range(1, 101)])
    assert ingest(db, [msg], 1).values == 100
    got = db.execute("SELECT DISTINCT meter, quality, method, reasons, raw FROM current_reads")
    assert got == [(meter, "E", 17, "76;18", None)]
    if db.copies:
        assert db.fast_copies == 1  # type: ignore[attr-defined]


def test_estimate_keeps_quality_method_and_reasons(db: Database) -> None:
    ingest(db, [reads_msg(GW, 1, "m-1", [register(900_000, "7.5", quality="E", method=17,
                                                  reasons=(76, 18))])], 1)
    (read,) = interval_reads(db, (Q,), 0, 10**12)
    assert (read.value, read.quality, read.method, read.reasons) == (Decimal("7.5"), "E", 17,
                                                                     (76, 18))


def test_gap_detected_after_grace_and_filled_when_the_messages_arrive(db: Database) -> None:
    msgs = {s: reads_msg(GW, s, "m-1", [register(s * 900_000, str(s))]) for s in range(1, 7)}
    ingest(db, [msgs[1], msgs[2], msgs[5]], 1_000)
    assert scan_gaps(db, 1_500, grace_ms=1_000) == []  # still within the grace period
    assert scan_gaps(db, 2_000, grace_ms=1_000) == [(GW, EPOCH, 3, 4)]
    assert scan_gaps(db, 3_000, grace_ms=1_000) == []  # known: not recorded twice
    ingest(db, [msgs[3]], 3_100)
    assert db.execute("SELECT filled_ms FROM gaps") == [(None,)]
    report = ingest(db, [msgs[4], msgs[6]], 3_200)
    assert report.gaps_filled == 1
    assert db.execute("SELECT from_seq, to_seq, detected_ms, filled_ms FROM gaps") == [
        (3, 4, 2_000, 3_200)]
    assert db.execute("SELECT lo, hi FROM seq_ranges") == [(1, 6)]


def test_fragmented_ranges_of_many_streams_merge_in_one_batch(db: Database) -> None:
    # Two workers sharing gateways' messages leave every stream's ranges fragmented (odd seqs
    # here); the batch holding the even ones merges them all away at once.
    gws = [f"gw-{i}" for i in range(3)]
    odd = [reads_msg(g, s, "m-1", [register(s * 900_000, str(s))]) for g in gws
           for s in range(1, 12, 2)]
    even = [reads_msg(g, s, "m-1", [register(s * 900_000, str(s))]) for g in gws
            for s in range(2, 11, 2)]
    ingest(db, odd, 1)
    assert len(db.execute("SELECT lo FROM seq_ranges")) == 3 * 6
    report = ingest(db, even, 2)
    assert (report.stored, report.duplicates) == (15, 0)
    assert db.execute("SELECT gw, lo, hi FROM seq_ranges ORDER BY gw") == [
        (g, 1, 11) for g in gws]


def test_tail_gap_needs_a_health_report_with_an_empty_outbox(db: Database) -> None:
    ingest(db, [reads_msg(GW, 1, "m-1", [register(900_000, "1")]),
                health_msg(GW, 4, depth=3)], 1_000)
    assert scan_gaps(db, 10_000, grace_ms=1_000) == []  # backlog still on its way: no gap
    ingest(db, [health_msg(GW, 4, depth=0, ts=9_500)], 2_000)
    assert scan_gaps(db, 2_500, grace_ms=1_000) == []
    assert scan_gaps(db, 3_000, grace_ms=1_000) == [(GW, EPOCH, 2, 4)]


def test_replay_claims_are_paced_per_gateway_and_counters_climb(db: Database) -> None:
    msgs = [reads_msg(GW, s, "m-1", [register(s * 900_000, str(s))]) for s in (1, 3, 5)]
    ingest(db, msgs, 0)
    assert len(scan_gaps(db, 100, grace_ms=0)) == 2
    first = claim_replays(db, 1_000, min_interval_ms=500, retry_ms=10_000, counter="c")
    assert [(c.from_seq, c.to_seq) for c in first] == [(2, 2)]
    assert claim_replays(db, 1_200, 500, 10_000, "c") == []  # same gateway, too soon
    second = claim_replays(db, 1_600, 500, 10_000, "c")
    assert [(c.from_seq, c.to_seq) for c in second] == [(4, 4)]
    assert second[0].ctr > first[0].ctr >= 1_000
    record_replay(db, "aa" * 16, first[0], 1_000, "failed", "oldest seq held is 3")
    assert claim_replays(db, 20_000, 500, 10_000, "c")[0].from_seq == 4  # failed: not again
    assert db.execute("SELECT requests FROM gaps ORDER BY from_seq") == [(1,), (2,)]


def test_alarms_feed_and_status(db: Database) -> None:
    ingest(db, [birth_msg(GW, 0), alarm_msg(GW, 1, "outage.area"),
                alarm_msg(GW, 2, "meter.reverse", meter="m-1"),
                alarm_msg(GW, 3, "comm_loss", meter="m-2", ts=6_000),
                alarm_msg(GW, 3, "comm_loss", meter="m-2", ts=6_000)], 10_000)
    feed = outage_alarms(db, 0)
    assert [(a["kind"], a["meter"]) for a in feed] == [("outage.area", None), ("comm_loss", "m-2")]
    assert feed[0]["details"] == {"threshold": "1.5", "meters": ["x"]}
    assert outage_alarms(db, 5_500)[0]["kind"] == "comm_loss"
    (status,) = gateway_status(db)
    got = status.as_json(16_000)
    assert (got["last_seq"], got["open_gaps"], got["lag_s"], got["last_birth_ms"]) == (
        3, 0, 10.0, 10_000)


def test_concurrent_workers_store_each_message_once(db_url: str) -> None:
    """Four connections ingest overlapping batches at once (what N workers do after a
    redelivery): every read is stored once and the seq ranges end up whole."""
    messages = [reads_msg(GW, s, f"m-{s % 5}", [register(s * 900_000, f"{s}.{s:03d}")])
                for s in range(1, 201)]
    errors: list[BaseException] = []

    def work(offset: int, size: int) -> None:
        db = open_database(db_url)
        try:
            for start in range(offset, 200, 10):
                ingest(db, messages[start:start + size], 1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    # small batches go in as multi-row INSERTs, large ones through COPY and a staging table
    threads = [threading.Thread(target=work, args=(i, (25, 100)[i % 2])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    db = open_database(db_url)
    assert db.scalar("SELECT count(*) FROM current_reads") == 200
    assert db.execute("SELECT lo, hi FROM seq_ranges") == [(1, 200)]
    assert {str(v) for (v,) in db.execute("SELECT value FROM current_reads")} == {
        f"{s}.{s:03d}" for s in range(1, 201)}
    db.close()


def test_postgres_partitions_by_day(pg_server: str) -> None:

    db = open_database(fresh_pg(pg_server))
    day = 86_400_000
    ingest(db, [reads_msg(GW, 1, "m-1", [register(20_000 * day + 5, "1"),
                                         register(20_001 * day + 5, "2")])], 1)
    parts = db.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = "
                       "i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = "
                       "'current_reads' ORDER BY 1")
    assert parts == [("current_reads_20241004",), ("current_reads_20241005",)]
    db.close()
