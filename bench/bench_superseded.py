"""Naming what a correction supersedes (gateway/store/versions.py ``find``): µs per key.

    .venv/bin/python bench/bench_superseded.py [--meters 100] [--seconds 180] [--rounds 7]

The store of the peer benchmark (issue 18): ``--meters`` meters polled every second for
``--seconds`` seconds, each poll one schema-2 message of 10 reads (total and four tariff
registers, three voltages, power, a current), committed one batch per second as the committer
does; each meter's voltages graded every 7 s, their corrections (rev 1) committed with that
second's polls through :class:`Corrections` (so the outbox also holds VEE's messages, noted in
read_versions), except in the last 7 s. Then each meter's voltages of its last 7 polls — 21 keys,
not graded yet, so none noted and all found by time — are looked up for every meter, in turn
by the per-key algorithm find replaced (tests/test_versions_find.py, the oracle), by ``find``
with the 120 s window it first had, and by ``find`` as ``Store.superseded`` calls it (the
window the store's widest reads message allows: 0 ms here, every poll is one moment), best of
``--rounds``; all must give the same answer.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.pipeline.corrections import Corrections
from gateway.store import OutboxMessage, Store, versions
from protocols.payload import AliasBook, AliasEntry, AliasTable, ReadRecord
from tests.test_versions_find import per_key_find

GW = "gw-bench"
T0 = 1_800_000_000_000
PHASES = ("voltage.a", "voltage.b", "voltage.c")
TABLE = AliasTable((
    AliasEntry("energy.active.import.total", "kWh", -2, True),
    *(AliasEntry(f"energy.active.import.t{n}", "kWh", -2, True) for n in range(1, 5)),
    *(AliasEntry(q, "V", -1, False) for q in PHASES),
    AliasEntry("power.active.total", "kW", -3, False),
    AliasEntry("current.a", "A", -2, False)))
GRADED_EVERY_S = 7

Find = Callable[..., dict[versions.Key, tuple[str, int]]]


def poll_records(i: int, t: int) -> list[ReadRecord]:
    total = Decimal(1000 + i) + Decimal((t - T0) // 1000) / 100
    return [ReadRecord("energy.active.import.total", total, "kWh", t),
            *(ReadRecord(f"energy.active.import.t{n}", (total / 4).quantize(Decimal("0.01")),
                         "kWh", t) for n in range(1, 5)),
            *(ReadRecord(q, 243.1, "V", t) for q in PHASES),
            ReadRecord("power.active.total", 1.25, "kW", t), ReadRecord("current.a", 5.12, "A", t)]


def corrected(t_from: int, t_to: int) -> list[ReadRecord]:
    """The voltages of polls t_from..t_to re-published by VEE: above the band, rev 1."""
    return [ReadRecord(q, 243.1, "V", t, "A", reasons=(54,), rev=1)
            for t in range(t_from, t_to + 1, 1000) for q in PHASES]


def build(store: Store, meters: list[str], seconds: int) -> None:
    bindings = store.bind_aliases({m: TABLE for m in meters})
    corrections = Corrections(store, GW, lambda meter: f"mtr/v1/{GW}/reads/{meter}")
    for s in range(seconds):
        t = T0 + s * 1000
        polls = [OutboxMessage.for_reads(topic=f"mtr/v1/{GW}/reads/{m}", gw=GW, epoch=store.epoch,
                                         ts=t + 40, meter=m, reads=poll_records(i, t),
                                         binding=bindings[m]) for i, m in enumerate(meters)]
        graded = [(m, corrected(max(T0, t - (GRADED_EVERY_S - 1) * 1000), t))
                  for i, m in enumerate(meters)
                  if (s + i) % GRADED_EVERY_S == 0 and s < seconds - GRADED_EVERY_S]
        store.commit_poll([*polls, *corrections.messages(polls, graded, t + 50)], now_ms=t + 60)


def look_up_all(store: Store, find: Find, wanted: dict[str, list[versions.Key]]
                ) -> tuple[float, dict[str, dict[versions.Key, tuple[str, int]]]]:
    """Seconds for every meter's look-up, as Store.superseded makes it, and what it found."""
    out = {}
    started = time.perf_counter()
    for meter, keys in wanted.items():
        book: AliasBook = store._alias_book()
        with store._reading() as conn:
            out[meter] = find(conn, meter, keys, book)
    return time.perf_counter() - started, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    meters = [f"m-{i:03d}" for i in range(args.meters)]
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "gw.db") as store:
        started = time.perf_counter()
        build(store, meters, args.seconds)
        rows = store.outbox_depth()
        print(f"store: {args.meters} meters x {args.seconds} s built in "
              f"{time.perf_counter() - started:.1f} s (outbox rows: {rows})")
        last = T0 + (args.seconds - 1) * 1000
        wanted: dict[str, list[versions.Key]] = {
            m: [(q, t, 0) for t in range(last - 6000, last + 1, 1000) for q in PHASES]
            for m in meters}
        keys = sum(len(k) for k in wanted.values())
        span = store.reads_span_ms

        def store_span(conn: sqlite3.Connection, meter: str, keys: Sequence[versions.Key],
                       book: AliasBook) -> dict[versions.Key, tuple[str, int]]:
            return versions.find(conn, meter, keys, book, span)

        finds: Sequence[tuple[str, Find]] = (("per-key (before)", per_key_find),
                                             ("find, 120 s window", versions.find),
                                             ("find (now)", store_span))
        best = {name: float("inf") for name, _ in finds}
        answers = {}
        for _ in range(args.rounds):
            for name, find in finds:
                took, answers[name] = look_up_all(store, find, wanted)
                best[name] = min(best[name], took)
        if any(answers["per-key (before)"] != answer for answer in answers.values()):
            print("DIFFERENT ANSWERS", file=sys.stderr)
            return 1
        found = sum(len(a) for a in answers["find (now)"].values())
        print(f"{keys} keys ({found} found), {args.meters} look-ups, best of {args.rounds}; "
              f"the store's widest reads message: {span} ms")
        for name, took in best.items():
            print(f"  {name:18s} {took * 1e6 / keys:7.1f} µs per key  "
                  f"{took * 1e6 / args.meters:8.0f} µs per meter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
