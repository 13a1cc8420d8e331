"""The alias bindings of payload v2, kept in the store's ``meta`` table.

A v2 reads message names its meter and alias table by a binding index (docs/payloads.md). The
index must mean the same thing for as long as any message naming it can still be sent — after a
restart, after a SIGHUP that changed a profile, on a replay — so bindings are allocated here,
in the same database as the outbox, and never reused: a profile change gives the meter a new
index. They live in one ``meta`` row (key ``payload_aliases``, the birth's ``aliases`` field as
CBOR) rather than in a table of their own, so no schema migration is needed: a few hundred
bytes per profile in use, rewritten only when a configuration brings a new (meter, table) pair.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

import cbor2

from protocols.payload import AliasTable, Binding, PayloadDecodeError
from protocols.payload.aliases import aliases_field, bindings_from_field

META_KEY = "payload_aliases"


def load_bindings(conn: sqlite3.Connection) -> dict[int, Binding]:
    """Every binding this store has allocated, by index (empty on a store that never had one)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    if row is None:
        return {}
    try:
        _, bindings = bindings_from_field(cbor2.loads(bytes(row[0])))
    except (PayloadDecodeError, cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise sqlite3.DatabaseError(f"meta {META_KEY} is damaged: {exc}") from exc
    return {binding.index: binding for binding in bindings}


def existing(known: dict[int, Binding], tables: Mapping[str, AliasTable]) -> dict[str, Binding]:
    """The bindings among ``known`` for the (meter, table) pairs of ``tables`` (the newest when
    a pair was bound twice, which ``bind`` never does)."""
    by_key = {(b.meter, b.table.entries): b for b in sorted(known.values(), key=lambda b: b.index)}
    return {meter: by_key[(meter, table.entries)] for meter, table in tables.items()
            if (meter, table.entries) in by_key}


def bind(conn: sqlite3.Connection, epoch: int, known_before: Mapping[int, Binding],
         tables: Mapping[str, AliasTable]) -> tuple[dict[str, Binding], dict[int, Binding]]:
    """The binding of each meter in ``tables`` — the existing one for the same (meter, table),
    else a new index — and every binding afterwards. Call inside a write transaction; the
    caller adopts the second result only once it committed (``known_before`` is not changed),
    so an index that failed to persist is never handed out."""
    known = dict(known_before)
    by_key = {(b.meter, b.table.entries): b for b in known.values()}
    next_index = max(known, default=0) + 1
    current: dict[str, Binding] = {}
    added = False
    for meter, table in tables.items():
        binding = by_key.get((meter, table.entries))
        if binding is None:
            binding = known[next_index] = Binding(next_index, meter, table)
            by_key[(meter, table.entries)] = binding
            next_index += 1
            added = True
        current[meter] = binding
    if added:
        blob = cbor2.dumps(aliases_field(epoch, known.values()))
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                     "SET value = excluded.value", (META_KEY, blob))
    return current, known
