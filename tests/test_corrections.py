"""Corrections (issue 13): a re-published read names the record it supersedes (``sup``).

The payload field (encoder, decoder, ``decode-payload``), the store's lookup of where a record
went (gateway/store/versions.py), and gateway/pipeline/corrections.py — with the real VEE stage
and the real store, driven the way the committer drives them (the daemon end to end is in
tests/test_e2e_vee_corrections.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.corrections import Corrections, _superseding
from gateway.pipeline.vee_stage import GRID_QUANTITY, VeeStage
from gateway.store import OutboxMessage, Store
from protocols.payload import (
    Envelope,
    PayloadDecodeError,
    PayloadEncodeError,
    ReadRecord,
    build_reads,
    decode_payload,
    parse_reads,
)
from protocols.payload.encode import _build_reads_cbor2
from tests.test_vee_stage import T0, Fleet, seeded_stage

REPO = Path(__file__).resolve().parent.parent
GW = "gw-1"
SUP = ("gw-1:00000000000000aa:17", 3)


def correction(**fields: object) -> ReadRecord:
    values: dict[str, object] = dict(q=GRID_QUANTITY, val=Decimal("100.10"), unit="kWh", t=T0,
                                     quality="S", method=18, reasons=(74,),
                                     raw=Decimal("125.10"), rev=1, sup=SUP)
    values.update(fields)
    return ReadRecord(**values)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the payload


def test_sup_travels_in_a_reads_message_and_decode_payload_shows_it(tmp_path: Path) -> None:
    records = [ReadRecord(GRID_QUANTITY, Decimal("100.35"), "kWh", T0 + 2000), correction()]
    env = Envelope(GW, 0xAA, 18, T0 + 2050)
    data = build_reads(env, "m-1", records)
    assert data == _build_reads_cbor2(env, "m-1", records)  # the direct encoder agrees
    assert parse_reads(data).reads == tuple(records)
    shown = decode_payload(data)["reads"][1]  # type: ignore[index]
    assert shown["sup"] == list(SUP) and shown["rev"] == 1 and shown["quality"] == "S"  # type: ignore[index,call-overload]
    path = tmp_path / "correction.cbor"
    path.write_bytes(data)
    printed = subprocess.run([sys.executable, "-m", "gateway.app.cli", "decode-payload",
                              str(path)], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(printed.stdout)["reads"][1]["sup"] == list(SUP)


@pytest.mark.parametrize(("fields", "message"), [
    ({"rev": 0}, "only a replacement"),
    ({"sup": ("", 1)}, "superseded message id"),
    ({"sup": ("gw-1:aa:1", -1)}, "superseded record index"),
    ({"sup": ("gw-1:aa:1",)}, r"sup is \(message id, record index\)"),
])
def test_a_malformed_sup_is_refused_with_one_clear_line(fields: dict[str, object],
                                                        message: str) -> None:
    with pytest.raises(PayloadEncodeError, match=message):
        correction(**fields)


def test_the_decoder_refuses_a_sup_that_is_not_a_pair() -> None:
    import cbor2

    good = cbor2.loads(build_reads(Envelope(GW, 0xAA, 18, T0), "m-1", [correction()]))
    good["reads"][0]["sup"] = ["gw-1:aa:1", "0"]
    with pytest.raises(PayloadDecodeError, match=r"'sup' is \[message id, record index\]"):
        parse_reads(cbor2.dumps(good))


# ------------------------------------------------------------------------------ the pipeline


class Gateway:
    """The committer's VEE path without its clock: poll messages, then VEE's messages through
    :class:`Corrections`, committed together in one transaction per batch."""

    def __init__(self, store: Store, stage: VeeStage) -> None:
        self.store, self.stage = store, stage
        self.corrections = Corrections(store, GW, lambda meter: f"mtr/v1/{GW}/reads/{meter}")

    def batch(self, polled: list[tuple[object, list[ReadRecord]]], now_ms: int) -> None:
        vee_reads = self.stage.apply(polled, now_ms)  # type: ignore[arg-type]
        messages = [self.poll_message(p.meter_id, p.finished_ms, r)  # type: ignore[attr-defined]
                    for p, r in polled]
        messages += self.corrections.messages(messages, vee_reads, now_ms)
        self.store.commit_poll(messages, now_ms=now_ms)

    def poll_message(self, meter: str, ts: int, records: list[ReadRecord]) -> OutboxMessage:
        return OutboxMessage.for_reads(topic=f"mtr/v1/{GW}/reads/{meter}", gw=GW,
                                       epoch=self.store.epoch, ts=ts, meter=meter, reads=records)


def published(store: Store) -> dict[str, tuple[ReadRecord, ...]]:
    """Every reads message committed, by message id."""
    out = {}
    for row in store.pending(100_000):
        message = parse_reads(row.payload)
        out[message.id] = message.reads
    return out


def check_every_correction_names_its_predecessor(store: Store) -> int:
    """Each record with rev n >= 1 names, in sup, a committed record of the same key with rev
    n - 1 — and no later version of the key has appeared in between."""
    messages = published(store)
    order = {mid: k for k, mid in enumerate(messages)}
    checked = 0
    for mid, reads in messages.items():
        for record in reads:
            if not record.rev:
                continue
            assert record.sup is not None, (mid, record)
            named_id, index = record.sup
            assert order[named_id] < order[mid]
            named = messages[named_id][index]
            assert (named.q, named.t, named.rev) == (record.q, record.t, record.rev - 1)
            checked += 1
    return checked


def test_re_scaled_estimates_and_re_graded_reads_name_what_they_supersede(
        tmp_path: Path) -> None:
    """The current engine's verdict changes (a gap's estimates scaled to the read that ends it,
    an implausible voltage re-published with its reason) each go out naming the record they
    supersede: VEE's own earlier message (found through read_versions) or the poll's message
    (found by time)."""
    fleet = Fleet(["m-1", "m-2"])
    with Store.open(tmp_path / "gw.db") as store:
        gateway = Gateway(store, seeded_stage(list(fleet.base), store))
        for second in range(100, 140):
            t = T0 + second * 1000 + 100
            silent = 110 <= second < 125
            polled = [fleet.poll(m, t, volts=400.0 if (m, second) == ("m-1", 131) else 229.5)
                      for m in fleet.base if not (silent and m == "m-2")]
            gateway.batch(polled, t + 50)  # type: ignore[arg-type]
        revised = [r for reads in published(store).values() for r in reads if r.rev]
        assert {r.q for r in revised} >= {GRID_QUANTITY, "voltage.a"}, revised
        assert len([r for r in revised if r.quality in "EA" and r.q == GRID_QUANTITY]) >= 6
        assert check_every_correction_names_its_predecessor(store) == len(revised)
        assert gateway.corrections.unnamed == 0 and gateway.corrections.named == len(revised)


def test_a_record_superseded_in_the_same_commit_is_named_by_its_seq_there(
        tmp_path: Path) -> None:
    """The read and its correction in one batch (and two corrections of one key): named
    relative to the correction's own seq, which is only known inside the transaction."""
    with Store.open(tmp_path / "gw.db") as store:
        corrections = Corrections(store, GW, lambda meter: f"mtr/v1/{GW}/reads/{meter}")
        store.commit_poll([OutboxMessage.for_reads(  # something before: seqs do not start at 1
            topic="x/reads/m-9", gw=GW, epoch=store.epoch, ts=T0, meter="m-9",
            reads=[ReadRecord(GRID_QUANTITY, Decimal(1), "kWh", T0)])])
        spike = ReadRecord(GRID_QUANTITY, Decimal("125.10"), "kWh", T0 + 2000)
        poll = OutboxMessage.for_reads(
            topic="x/reads/m-1", gw=GW, epoch=store.epoch, ts=T0 + 2000, meter="m-1",
            reads=[ReadRecord("voltage.a", 230.0, "V", T0 + 2000), spike])
        first = correction(t=T0 + 2000, sup=None)
        second = correction(t=T0 + 2000, sup=None, val=Decimal("100.12"), rev=2)
        messages = [poll, *corrections.messages([poll], [("m-1", [first]), ("m-1", [second])],
                                                T0 + 2050)]
        store.commit_poll(messages)
        assert check_every_correction_names_its_predecessor(store) == 2
        ids = list(published(store))
        by_id = published(store)
        assert by_id[ids[2]][0].sup == (ids[1], 1) and by_id[ids[3]][0].sup == (ids[2], 0)
        # committed before, now found in the store: the next correction names the newest one
        third = correction(t=T0 + 2000, sup=None, val=Decimal("100.13"), rev=3)
        store.commit_poll(corrections.messages([], [("m-1", [third])], T0 + 4050))
        assert published(store)[list(published(store))[-1]][0].sup == (ids[3], 0)
        # nothing to name (a version the store never held): sup stays out, counted
        orphan = correction(t=T0 + 9000, sup=None, rev=4)
        store.commit_poll(corrections.messages([], [("m-1", [orphan])], T0 + 9050))
        assert published(store)[list(published(store))[-1]][0].sup is None
        assert corrections.unnamed == 1 and corrections.named == 3


def test_the_same_key_of_other_meters_in_the_batch_is_never_named(tmp_path: Path) -> None:
    """The batch's polls of other meters hold the very same (q, t) (they are not walked for the
    correction's look-up): the correction names its own meter's read, between them."""
    with Store.open(tmp_path / "gw.db") as store:
        corrections = Corrections(store, GW, lambda meter: f"mtr/v1/{GW}/reads/{meter}")

        def poll(meter: str) -> OutboxMessage:
            return OutboxMessage.for_reads(
                topic=f"x/reads/{meter}", gw=GW, epoch=store.epoch, ts=T0 + 2000, meter=meter,
                reads=[ReadRecord("voltage.a", 230.0, "V", T0 + 2000),
                       ReadRecord(GRID_QUANTITY, Decimal("125.10"), "kWh", T0 + 2000)])

        earlier = [poll("m-0"), poll("m-1"), poll("m-2")]
        messages = [*earlier, *corrections.messages(
            earlier, [("m-1", [correction(t=T0 + 2000, sup=None)])], T0 + 2050)]
        store.commit_poll(messages)
        ids = list(published(store))
        assert published(store)[ids[3]][0].sup == (ids[1], 1)
        assert corrections.named == 1 and corrections.unnamed == 0


def test_a_rejected_spike_stops_being_the_reference_of_the_decrease_check(
        tmp_path: Path) -> None:
    """A spike accepted by the basic check makes every later read a "decrease" (reason 18);
    once VEE's correction rejects it, its substitute is the reference again."""
    import asyncio

    from gateway.pipeline.committer import Committer, PipelineServices
    from protocols.topics import GatewayTopics

    with Store.open(tmp_path / "gw.db") as store:
        committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", GW)),
                              asyncio.Queue())
        memory = committer.registers
        assert memory.classify("m-1", GRID_QUANTITY, Decimal("100.00"))[0] == "A"
        assert memory.classify("m-1", GRID_QUANTITY, Decimal("125.10"))[0] == "A"  # the spike
        assert memory.classify("m-1", GRID_QUANTITY, Decimal("100.20"))[0] == "N"  # poisoned
        committer._withdraw_rejected([("m-1", [correction(val=Decimal("100.10"))])])
        assert memory.classify("m-1", GRID_QUANTITY, Decimal("100.30"))[0] == "A"
        # a correction of a read that is no longer the reference changes nothing
        committer._withdraw_rejected([("m-1", [correction(val=Decimal("90.00"))])])
        assert memory.classify("m-1", GRID_QUANTITY, Decimal("100.25"))[0] == "N"


def test_where_vee_records_went_is_kept_with_the_outbox_and_pruned_with_it(
        tmp_path: Path) -> None:
    """read_versions (migration 5) notes VEE's records with their message; retention prunes
    the notes with the rows, and a pruned record is simply not found (no sup, never a wrong
    one)."""
    import sqlite3

    with Store.open(tmp_path / "gw.db") as store:
        corrections = Corrections(store, GW, lambda meter: f"mtr/v1/{GW}/reads/{meter}")
        estimates = [ReadRecord(GRID_QUANTITY, Decimal("100.00") + k, "kWh", T0 + 2000 * k, "E",
                                24, (76,)) for k in range(3)]
        (seq,) = store.commit_poll(corrections.messages([], [("m-1", estimates)], T0), now_ms=T0)
        keys = [(GRID_QUANTITY, r.t, 0) for r in estimates]
        found = store.superseded("m-1", [*keys, (GRID_QUANTITY, T0, 1)])  # no rev-1 version
        assert found == {key: (f"{GW}:{store.epoch:016x}:{seq}", k) for k, key in enumerate(keys)}
        store.mark_acked([seq], when_ms=T0)
        store.prune(T0 + 86_400_000, retention_days=0.5)
        assert store.superseded("m-1", keys) == {}
    con = sqlite3.connect(tmp_path / "gw.db")
    assert con.execute("SELECT count(*) FROM read_versions").fetchone() == (0,)
    con.close()


def test_a_rejected_spike_is_not_the_register_a_restart_compares_with(tmp_path: Path) -> None:
    """The store keeps the newest actual register for the decrease check after a restart; a
    correction rejecting the spike puts its substitute there (``N``: nothing until the next
    read), so the reads after a restart are not compared with the spike either."""
    def poll(store: Store, value: str, t: int) -> None:
        store.commit_poll([OutboxMessage.for_reads(
            topic="x/reads/m-1", gw=GW, epoch=store.epoch, ts=t, meter="m-1",
            reads=[ReadRecord(GRID_QUANTITY, Decimal(value), "kWh", t)])])

    with Store.open(tmp_path / "gw.db") as store:
        corrections = Corrections(store, GW, lambda meter: f"x/reads/{meter}")
        poll(store, "100.00", T0)
        poll(store, "125.10", T0 + 2000)  # the spike, accepted by the basic check
        assert store.last_actual_registers() == [("m-1", GRID_QUANTITY, Decimal("125.10"))]
        store.commit_poll(corrections.messages([], [("m-1", [correction(
            t=T0 + 2000, sup=None)])], T0 + 4050))
        assert store.last_actual_registers() == [("m-1", GRID_QUANTITY, Decimal("100.10"))]
        poll(store, "100.30", T0 + 4000)
        poll(store, "125.50", T0 + 6000)
        store.commit_poll(corrections.messages([], [("m-1", [correction(
            t=T0 + 6000, quality="N", val=None, method=None, raw=Decimal("125.50"),
            sup=None)])], T0 + 8050))
        assert store.last_actual_registers() == []
        poll(store, "100.50", T0 + 8000)
    with Store.open(tmp_path / "gw.db") as store:  # what a restart seeds the check with
        assert store.last_actual_registers() == [("m-1", GRID_QUANTITY, Decimal("100.50"))]


# -- _superseding against dataclasses.replace ---------------------------------------------------
_graded = st.builds(
    lambda val, quality, **rest: ReadRecord(val=val, quality="N" if val is None else quality,
                                            raw=Decimal("1.5") if quality == "S" else None,
                                            **rest),
    q=st.sampled_from(["energy.active.import.total", "voltage.a"]),
    val=st.one_of(st.none(), st.decimals(min_value=-(10**9), max_value=10**9, places=3,
                                         allow_nan=False),
                  st.floats(allow_nan=False, allow_infinity=False)),
    quality=st.sampled_from(["E", "S"]),
    unit=st.sampled_from(["kWh", "V", ""]),
    t=st.integers(0, 2**64 - 1),
    method=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    reasons=st.lists(st.integers(0, 300), max_size=3).map(tuple),
    hist=st.booleans(),
    rev=st.integers(0, 2**64 - 1),
)
_sups = st.tuples(st.one_of(st.text(max_size=12), st.integers(-3, 3)),
                  st.one_of(st.integers(-2, 2**64 + 1), st.text(max_size=2), st.none()))


def _made(make: object, record: ReadRecord, sup: object) -> tuple[object, ...]:
    try:
        made = make(record, sup)  # type: ignore[operator]
    except PayloadEncodeError as exc:
        return ("error", str(exc))
    return (made, repr(made), hash(made), type(made))


@settings(max_examples=300, deadline=None)
@given(record=_graded, sup=_sups)
def test_superseding_is_replace_with_sup(record: ReadRecord, sup: tuple[object, object]) -> None:
    """The same record (equal, same repr and hash, frozen) or the same error as
    ``dataclasses.replace(record, sup=sup)``, on any sup, valid or not."""
    from dataclasses import FrozenInstanceError, replace

    ours = _made(_superseding, record, sup)
    assert ours == _made(lambda r, s: replace(r, sup=s), record, sup)
    made = ours[0]
    if isinstance(made, ReadRecord):
        with pytest.raises(FrozenInstanceError):
            made.q = "x"  # type: ignore[misc]
