"""Payload v2 at the consumer: births teach bindings, every worker shares them through the
database, and a reads message that comes before any birth naming its binding is parked, not lost
and not stored wrong — on SQLite and on PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

from central.decoding import BirthIn, Decoder, ReadsIn, UnresolvedReadsIn
from central.storage import Database
from central.storage.bindings import load_bindings, parked_streams
from central.storage.ingest import epoch_text, ingest, release
from protocols.payload import (
    AliasEntry,
    AliasTable,
    Binding,
    Envelope,
    ReadRecord,
    build_birth,
    build_reads,
    build_reads_v2,
)
from tests.central.support import EPOCH, PREFIX

GW = "gw-1"
TABLE = AliasTable((AliasEntry("energy.active.import.total", "kWh", -2, True),
                    AliasEntry("voltage.a", "V", -1, False)))
BINDING = Binding(3, "m-1", TABLE)
TOPIC = f"{PREFIX}/{GW}/reads/m-1"


def _records(t: int, kwh: str) -> list[ReadRecord]:
    return [ReadRecord("energy.active.import.total", Decimal(kwh), "kWh", t),
            ReadRecord("voltage.a", 230.1, "V", t)]


def _reads(seq: int, t: int, kwh: str) -> bytes:
    return build_reads_v2(Envelope(GW, EPOCH, seq, t + 500), BINDING, _records(t, kwh))


def _birth() -> bytes:
    return build_birth(Envelope(GW, EPOCH, 0, 10), bdseq=1, version="t",
                       config_sha256="0" * 64, meters=["m-1"], bindings=[BINDING])


def _values(db: Database) -> list[tuple[str, int, str]]:
    return [(str(q), int(t), format(Decimal(str(v)), "f")) for q, t, v in db.execute(
        "SELECT quantity, t_ms, value FROM current_reads ORDER BY t_ms, quantity")]


def test_v2_reads_after_the_birth_store_exactly_what_v1_would(db: Database) -> None:
    decoder = Decoder(PREFIX, {})
    birth = decoder.decode(f"{PREFIX}/{GW}/state", _birth())
    assert isinstance(birth, BirthIn) and birth.bindings == (BINDING,)
    v2 = decoder.decode(TOPIC, _reads(1, 900_000, "1206.42"))
    v1 = decoder.decode(TOPIC, build_reads(Envelope(GW, EPOCH, 2, 1_800_500), "m-1",
                                           _records(1_800_000, "1206.50")))
    assert isinstance(v2, ReadsIn) and isinstance(v1, ReadsIn)
    report = ingest(db, [birth, v2, v1], 1)
    assert (report.stored, report.values, report.parked) == (2, 4, 0)
    assert _values(db) == [("energy.active.import.total", 900_000, "1206.42"),
                           ("voltage.a", 900_000, "230.1"),
                           ("energy.active.import.total", 1_800_000, "1206.50"),
                           ("voltage.a", 1_800_000, "230.1")]
    # The birth's bindings are in the shared table: a worker that never saw the birth decodes.
    assert load_bindings(db, GW, EPOCH) == [BINDING]
    late = Decoder(PREFIX, {}, lambda gw, epoch: load_bindings(db, gw, epoch))
    assert isinstance(late.decode(TOPIC, _reads(3, 2_700_000, "1207")), ReadsIn)


def test_reads_before_any_birth_are_parked_then_released_once(db: Database) -> None:
    # miss_ttl_s=0: ask the table on every miss (a worker waits a second between asks).
    decoder = Decoder(PREFIX, {}, lambda gw, epoch: load_bindings(db, gw, epoch), miss_ttl_s=0)
    early = [decoder.decode(TOPIC, _reads(seq, seq * 900_000, f"1206.{seq}")) for seq in (1, 2)]
    assert all(isinstance(m, UnresolvedReadsIn) for m in early)
    report = ingest(db, early, 1)
    assert (report.stored, report.values, report.parked) == (2, 0, 2)
    assert _values(db) == [] and parked_streams(db) == [(GW, epoch_text(EPOCH))]
    # A re-send of a parked message is a duplicate: parked means received.
    again = decoder.decode(TOPIC, _reads(1, 900_000, "1206.1"))
    assert ingest(db, [again], 2).duplicates == 1
    # Nothing can be released before a birth declares the binding.
    assert release(db, GW, epoch_text(EPOCH), decoder.decode, 3) == (0, [])
    # Another worker stores the birth; this one finds the binding in the shared table.
    ingest(db, [Decoder(PREFIX, {}).decode(f"{PREFIX}/{GW}/state", _birth())], 4)
    assert release(db, GW, epoch_text(EPOCH), decoder.decode, 5) == (4, [])
    assert parked_streams(db) == []
    assert _values(db) == [("energy.active.import.total", 900_000, "1206.1"),
                           ("voltage.a", 900_000, "230.1"),
                           ("energy.active.import.total", 1_800_000, "1206.2"),
                           ("voltage.a", 1_800_000, "230.1")]
    ranges = db.execute("SELECT lo, hi FROM seq_ranges")
    assert [tuple(map(int, r)) for r in ranges] == [(1, 2)]
    assert db.scalar("SELECT count(*) FROM gaps") == 0


def test_a_parked_message_that_does_not_fit_its_table_is_rejected_on_release(
        db: Database) -> None:
    """The binding the birth declares is shorter than what the message sent: rejected with a
    line saying why when the birth comes, never stored with the wrong quantity."""
    decoder = Decoder(PREFIX, {})
    parked = decoder.decode(TOPIC, _reads(1, 900_000, "1"))
    ingest(db, [parked], 1)
    short = Binding(3, "m-1", AliasTable(TABLE.entries[:1]))
    birth = build_birth(Envelope(GW, EPOCH, 1, 10), bdseq=1, version="t",
                        config_sha256="0" * 64, meters=["m-1"], bindings=[short])
    ingest(db, [decoder.decode(f"{PREFIX}/{GW}/state", birth)], 2)
    values, rejected = release(db, GW, epoch_text(EPOCH), decoder.decode, 3)
    assert values == 0 and len(rejected) == 1 and "alias" in rejected[0]
    assert _values(db) == [] and parked_streams(db) == []
