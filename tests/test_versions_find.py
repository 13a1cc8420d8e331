"""gateway/store/versions.py ``find`` (issue 18): the look-up that names a correction's
superseded record gives exactly what the per-key algorithm it replaced gave.

``per_key_find`` below is that algorithm as it stood (one read_versions point query per key,
then, for a key without a note, a time-window query of the outbox per key): the oracle. Random
stores — v1 and v2 poll messages, VEE messages (noted in read_versions), a spilled message
adopted with another store's id, rows pruned with or without their notes, payloads that no
longer check, messages spanning exactly the window — and random keys, found or absent, must
give the same ``(message id, index)`` or the same absence through both."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import OutboxMessage, Store
from gateway.store.versions import POLL_SPAN_MS, Key, find, stored_message
from protocols.payload import (
    AliasBook,
    AliasEntry,
    AliasTable,
    Envelope,
    PayloadError,
    ReadRecord,
    build_reads,
)

GW = "gw-1"
T0 = 1_800_000_000_000
METERS = ("m-1", "m-2")
QUANTITIES = ("voltage.a", "voltage.b", "energy.active.import.total")
TABLE = AliasTable((AliasEntry("voltage.a", "V", -1, False),
                    AliasEntry("voltage.b", "V", -1, False),
                    AliasEntry("energy.active.import.total", "kWh", -2, True)))


def per_key_find(conn: sqlite3.Connection, meter: str, keys: Sequence[Key],
                 book: AliasBook) -> dict[Key, tuple[str, int]]:
    """The oracle: ``find`` before issue 18, unchanged but for its name."""
    parsed: dict[int, tuple[str, tuple[ReadRecord, ...]] | None] = {}

    def message(seq: int, payload: bytes | None = None
                ) -> tuple[str, tuple[ReadRecord, ...]] | None:
        if seq not in parsed:
            if payload is None:
                row = conn.execute("SELECT payload FROM outbox WHERE seq = ?", (seq,)).fetchone()
                payload = None if row is None else row[0]
            try:
                parsed[seq] = None if payload is None else stored_message(payload, book)
            except PayloadError:
                parsed[seq] = None
        return parsed[seq]

    found: dict[Key, tuple[str, int]] = {}
    for key in keys:
        quantity, t_ms, rev = key
        noted = conn.execute(
            "SELECT seq, idx FROM read_versions WHERE meter = ? AND quantity = ? AND t_ms = ?",
            (meter, quantity, t_ms)).fetchone()
        if noted is not None:
            candidates = [(int(noted[0]), int(noted[1]))]
        else:
            candidates = []
            for seq, payload in conn.execute(
                    "SELECT seq, payload FROM outbox WHERE meter = ? AND t_first BETWEEN ? AND ? "
                    "AND t_last >= ? ORDER BY seq DESC",
                    (meter, t_ms - POLL_SPAN_MS, t_ms, t_ms)).fetchall():
                held = message(int(seq), payload)
                index = _index_of(held, quantity, t_ms)
                if index is not None:
                    candidates = [(int(seq), index)]
                    break
        for seq, index in candidates:
            held = message(seq)
            if held is not None and index < len(held[1]) and (
                    held[1][index].q, held[1][index].t, held[1][index].rev) == key:
                found[key] = (held[0], index)
    return found


def _index_of(message: tuple[str, tuple[ReadRecord, ...]] | None, quantity: str,
              t_ms: int) -> int | None:
    if message is None:
        return None
    for index, record in enumerate(message[1]):
        if record.q == quantity and record.t == t_ms:
            return index
    return None


# ------------------------------------------------------------------------------ random stores

#: Times on a 1 s grid over 300 s: windows of neighbouring keys overlap, distant ones do not.
_seconds = st.integers(0, 300)
#: How far a message's records reach beyond its first one: 0 (a poll), around the window's
#: edge (exactly POLL_SPAN_MS included), and beyond it.
_reach = st.sampled_from([0, 0, 0, 1, 2, 7, 119, 120, 121, 200])


@st.composite
def _records(draw: st.DrawFn, vee: bool,
             reaches: st.SearchStrategy[int] = _reach) -> list[ReadRecord]:
    first = draw(_seconds)
    reach = draw(_reach if vee else reaches)
    times = sorted({T0 + 1000 * first, T0 + 1000 * (first + reach),
                    *(T0 + 1000 * (first + draw(st.integers(0, reach))) for _ in range(2))})
    out = []
    for t in times:
        for q in draw(st.lists(st.sampled_from(QUANTITIES), min_size=1, max_size=4)):
            unit = "kWh" if q.startswith("energy") else "V"
            value: Decimal | float = Decimal("100.25") if unit == "kWh" else 229.5
            if vee:
                out.append(ReadRecord(q, value, unit, t, "E", 24, (76,),
                                      rev=draw(st.integers(0, 2))))
            else:
                out.append(ReadRecord(q, value, unit, t))
    return out


def _build(kind: str, meter: str, epoch: int, records: list[ReadRecord],
           binding: object) -> OutboxMessage:
    topic = f"mtr/v1/{GW}/reads/{meter}"
    ts = max(r.t for r in records) + 50
    if kind == "vee":
        return OutboxMessage.for_intervals(
            topic=topic, meter=meter, reads=records,
            build=lambda seq: build_reads(Envelope(GW, epoch, seq, ts), meter, records))
    if kind == "spilled":  # adopted from a spill file: another store's id, any seq
        payload = build_reads(Envelope("gw-old", 7, 99, ts), meter, records)
        message = OutboxMessage.prebuilt(topic=topic, qos=1, payload=payload)
        return OutboxMessage(topic=topic, qos=1, build=message.build, meter=meter,
                             reads=tuple(records))
    return OutboxMessage.for_reads(topic=topic, gw=GW, epoch=epoch, ts=ts, meter=meter,
                                   reads=records,
                                   binding=binding if kind == "v2" else None)  # type: ignore[arg-type]


_message = st.tuples(st.sampled_from(METERS),
                     st.sampled_from(["v2", "v2", "v1", "vee", "spilled"])).flatmap(
    lambda m: st.tuples(st.just(m[0]), st.just(m[1]), _records(m[1] == "vee")))
#: What happens to a committed row afterwards: kept, pruned (with its notes, as retention does,
#: or leaving them dangling), or its payload no longer checks.
_fate = st.sampled_from(["kept"] * 6 + ["pruned", "pruned_keep_notes", "garbage", "not_reads",
                                        "unknown_binding"])
_key = st.tuples(st.sampled_from(QUANTITIES), _seconds.map(lambda s: T0 + 1000 * s),
                 st.integers(0, 2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(_message, _fate), min_size=1, max_size=25),
       keys=st.lists(_key, max_size=30), data=st.data())
def test_find_gives_what_the_per_key_look_up_gave(
        messages: list[tuple[tuple[str, str, list[ReadRecord]], str]], keys: list[Key],
        data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.db"
        _, book = _commit_all(path, messages)
        conn = sqlite3.connect(path)
        try:
            seqs = [int(s) for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
            for seq, (_, fate) in zip(seqs, messages, strict=True):
                _befall(conn, seq, fate)
            conn.commit()
            # keys of records the store holds, so that most are found, and random ones
            held = [(str(q), int(t)) for q, t in conn.execute(
                "SELECT quantity, t_ms FROM read_versions")]
            held += [(r.q, r.t) for (_, _, records), _ in messages for r in records]
            if held:
                keys = keys + data.draw(st.lists(st.tuples(
                    st.sampled_from(held), st.sampled_from([0, 0, 1, 2])).map(
                        lambda k: (*k[0], k[1])), max_size=30))
            for meter in METERS:
                expected = per_key_find(conn, meter, keys, book)
                assert find(conn, meter, keys, book) == expected
        finally:
            conn.close()


def _commit_all(path: Path, messages: list[tuple[tuple[str, str, list[ReadRecord]], str]]
                ) -> tuple[int, AliasBook]:
    """Commit each message in its own transaction to a new store at ``path``; the store's
    bound on its polls' spans and its alias book."""
    with Store.open(path) as store:
        bindings = store.bind_aliases({m: TABLE for m in METERS})
        for (meter, kind, records), _ in messages:
            store.commit_poll([_build(kind, meter, store.epoch, records, bindings[meter])])
        return store.reads_span_ms, store._alias_book()


def _befall(conn: sqlite3.Connection, seq: int, fate: str) -> None:
    if fate in ("pruned", "pruned_keep_notes"):
        conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        if fate == "pruned":
            conn.execute("DELETE FROM read_versions WHERE seq = ?", (seq,))
    elif fate == "garbage":
        conn.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (b"\xff\x00", seq))
    elif fate == "not_reads":
        conn.execute("UPDATE outbox SET payload = ? WHERE seq = ?",
                     (cbor2.dumps({"v": 1, "gw": GW, "id": "x", "seq": seq, "ts": 1}), seq))
    elif fate == "unknown_binding":
        payload = cbor2.loads(conn.execute("SELECT payload FROM outbox WHERE seq = ?",
                                           (seq,)).fetchone()[0])
        if 0 in payload:  # v2: a binding this store never allocated
            payload[6] = 99
        else:
            payload["reads"] = []
        conn.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (cbor2.dumps(payload), seq))


def test_keys_far_apart_and_a_message_spanning_exactly_the_window(tmp_path: Path) -> None:
    """Keys hours apart (looked up in separate windows), a poll message whose first record is
    exactly POLL_SPAN_MS before the key (found) and one a millisecond further (not found by
    time), a newer message holding the key with another rev (it, not the older one, decides)."""
    with Store.open(tmp_path / "gw.db") as store:
        binding = store.bind_aliases({"m-1": TABLE})["m-1"]

        def poll(*times: int) -> int:
            records = [ReadRecord("voltage.a", 229.5, "V", t) for t in times]
            (seq,) = store.commit_poll([_build("v2", "m-1", store.epoch, records, binding)])
            return seq

        late = T0 + 3_600_000
        edge = poll(T0 - POLL_SPAN_MS, T0)
        beyond = poll(T0 + 1000 - POLL_SPAN_MS - 1, T0 + 1000)
        at_late = poll(late)
        poll(late + 5000)
        (vee,) = store.commit_poll([_build("vee", "m-1", store.epoch, [ReadRecord(
            "voltage.a", 229.5, "V", late + 5000, "E", 24, (76,), rev=2)], binding)])
        keys: list[Key] = [("voltage.a", T0, 0), ("voltage.a", T0 + 1000, 0),
                           ("voltage.a", late, 0), ("voltage.a", late + 5000, 0),
                           ("voltage.a", late + 5000, 2), ("voltage.a", late + 9000, 0)]
        with store._reading() as conn:
            book = store._alias_book()
            assert find(conn, "m-1", keys, book) == per_key_find(conn, "m-1", keys, book)
        found = store.superseded("m-1", keys)
        mid = f"{GW}:{store.epoch:016x}"
        assert found == {("voltage.a", T0, 0): (f"{mid}:{edge}", 1),
                         ("voltage.a", late, 0): (f"{mid}:{at_late}", 0),
                         ("voltage.a", late + 5000, 2): (f"{mid}:{vee}", 0)}
        assert beyond  # committed, but its first record is outside the key's window
        # a time SQLite cannot hold: the look-up fails as it did, not with a wrong answer
        for look_up in (find, per_key_find):
            with store._reading() as conn, pytest.raises(OverflowError):
                look_up(conn, "m-1", [*keys, ("voltage.a", 2**64 - 1, 0)], book)


#: Polls of one moment or a few seconds (a Modbus poll, a DL/T 645 poll of several reads):
#: the store's bound is then far narrower than POLL_SPAN_MS, while VEE's messages stay wide.
_narrow_message = st.tuples(st.sampled_from(METERS),
                            st.sampled_from(["v2", "v2", "v1", "vee", "spilled"])).flatmap(
    lambda m: st.tuples(st.just(m[0]), st.just(m[1]),
                        _records(m[1] == "vee", st.sampled_from([0, 0, 0, 1, 2, 7]))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(_narrow_message, _fate), min_size=1, max_size=25),
       keys=st.lists(_key, max_size=30), data=st.data())
def test_the_stores_span_bound_narrows_the_window_and_not_the_answer(
        messages: list[tuple[tuple[str, str, list[ReadRecord]], str]], keys: list[Key],
        data: st.DataObject) -> None:
    """``Store.superseded`` passes the store's bound on its poll messages' spans: the same
    answers as the per-key look-up with its 120 s window, as long as VEE's rows go as retention
    takes them (a note goes only with its row; the test's other fates still befall polls and
    VEE's payloads). The bound is never below a poll message's span, and survives a reopen."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.db"
        span, book = _commit_all(path, messages)
        polls = [max(r.t for r in records) - min(r.t for r in records)
                 for (_, kind, records), _ in messages if kind != "vee"]
        assert span == max(polls, default=0)
        with Store.open(path) as again:
            assert again.reads_span_ms == span
        conn = sqlite3.connect(path)
        try:
            seqs = [int(s) for (s,) in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
            for seq, ((_, kind, _), fate) in zip(seqs, messages, strict=True):
                if kind == "vee" and fate.startswith("pruned"):
                    fate = "pruned"  # as retention prunes: with its notes
                _befall(conn, seq, fate)
            conn.commit()
            held = [(r.q, r.t) for (_, _, records), _ in messages for r in records]
            keys = keys + data.draw(st.lists(st.tuples(
                st.sampled_from(held), st.sampled_from([0, 0, 1, 2])).map(
                    lambda k: (*k[0], k[1])), max_size=30))
            for meter in METERS:
                assert find(conn, meter, keys, book, span) == per_key_find(conn, meter, keys, book)
        finally:
            conn.close()


def test_an_upgraded_store_bounds_the_polls_it_already_holds(tmp_path: Path) -> None:
    """A version-5 store gets the widest span of the messages it holds without notes (its
    polls) from the migration, not 0; VEE's noted messages do not widen it."""
    from gateway.store.schema import MIGRATIONS

    path = tmp_path / "gw.db"
    with Store.open(path) as store:
        binding = store.bind_aliases({"m-1": TABLE})["m-1"]
        store.commit_poll([_build("v2", "m-1", store.epoch, [
            ReadRecord("voltage.a", 229.5, "V", T0), ReadRecord("voltage.b", 229.5, "V", T0 + 3000)],
            binding)])
        store.commit_poll([_build("vee", "m-1", store.epoch, [
            ReadRecord("voltage.a", 229.5, "V", T0 - 86_400_000, "E", 24, (76,)),
            ReadRecord("voltage.a", 229.5, "V", T0, "E", 24, (76,), rev=1)], binding)])
        assert store.reads_span_ms == 3000
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key = 'reads_span_ms'")
    conn.execute(f"PRAGMA user_version = {MIGRATIONS[-1].version - 1}")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert store.reads_span_ms == 3000
