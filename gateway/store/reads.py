"""Reading stored reads back: the payload v2 alias bindings the payloads were built with, the
reads themselves (decoded from the outbox payloads that carried them), the records a correction
supersedes, and the newest actual register values.

Split from :mod:`gateway.store.database`. The aliases live here because reading a v2 payload back
needs the same bindings that built it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from decimal import Decimal

from gateway.store import versions
from gateway.store.aliases import bind as _bind_aliases
from gateway.store.aliases import existing as _existing_bindings
from gateway.store.aliases import load_bindings as _load_bindings
from gateway.store.core import StoreCore
from gateway.store.records import StoredRead
from protocols.payload import AliasBook, AliasTable, Binding, PayloadDecodeError, ReadRecord

log = logging.getLogger("gateway.store")


def _stored_reads(payload: bytes, book: AliasBook) -> tuple[ReadRecord, ...]:
    """The records of one of this store's reads payloads, v1 or v2 (:func:`versions.stored_message`)."""
    try:
        return versions.stored_message(payload, book)[1]
    except PayloadDecodeError as exc:
        log.error("store: a reads payload cannot be read back, its reads are skipped: %s", exc)
        return ()


class ReadsStore(StoreCore):
    """Alias and read-back methods of :class:`gateway.store.Store`."""

    def bind_aliases(self, tables: Mapping[str, AliasTable]) -> dict[str, Binding]:
        """The alias binding of each meter (by id) for the given tables, allocating and
        persisting new indexes for (meter, table) pairs not seen before, never reusing one.
        Only a new pair writes; raises StoreError when that write fails (disk full)."""
        with self._reading() as conn:
            known = self._known_bindings(conn)
            existing = _existing_bindings(known, tables)
        if len(existing) == len(tables):
            return existing
        with self._transaction() as conn:
            current, known = _bind_aliases(conn, self.epoch, self._known_bindings(conn), tables)
        self._bindings = known  # committed: only now may the new indexes be used
        return current

    def known_aliases(self, tables: Mapping[str, AliasTable]) -> dict[str, Binding]:
        """The bindings already allocated for these (meter, table) pairs, without writing:
        what a store that cannot be written still offers."""
        with self._reading() as conn:
            return _existing_bindings(self._known_bindings(conn), tables)

    def alias_bindings(self) -> list[Binding]:
        """Every binding this store allocated: what the birth declares."""
        with self._reading() as conn:
            return sorted(self._known_bindings(conn).values(), key=lambda b: b.index)

    def _known_bindings(self, conn: sqlite3.Connection) -> dict[int, Binding]:
        if self._bindings is None:
            self._bindings = _load_bindings(conn)
        return self._bindings

    def _alias_book(self) -> AliasBook:
        """This store's bindings under gateway "", for decoding its own payloads. Made once per
        set of bindings (a new binding replaces the dict, :meth:`bind_aliases`), not per call:
        a correction's look-up asks for it once per meter. Callers only read it."""
        with self._reading() as conn:
            known = self._known_bindings(conn)
        cached = self._book
        if cached is not None and cached[0] is known and cached[1] == self.epoch:
            return cached[2]
        book = AliasBook()
        book.add("", self.epoch, known.values())
        self._book = (known, self.epoch, book)
        return book

    # ---------------------------------------------------------------- reads

    def reads(
        self,
        meter: str,
        quantity: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[StoredRead]:
        """Stored reads of ``meter`` (optionally one quantity) with ``since_ms <= t < until_ms``,
        in time order (then commit order). Values come back exactly as committed (Decimal, float
        or None): they are decoded from the outbox payloads that carried them."""
        clauses = ["meter = ?"]
        params: list[object] = [meter]
        if since_ms is not None:
            clauses.append("t_last >= ?")
            params.append(since_ms)
        if until_ms is not None:
            clauses.append("t_first < ?")
            params.append(until_ms)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT seq, payload FROM outbox WHERE {' AND '.join(clauses)} ORDER BY seq",
                params,
            ).fetchall()
        found: list[tuple[int, int, int, StoredRead]] = []
        book = self._alias_book()
        for seq, payload in rows:
            for index, record in enumerate(_stored_reads(payload, book)):
                if quantity is not None and record.q != quantity:
                    continue
                if (since_ms is not None and record.t < since_ms) or (
                    until_ms is not None and record.t >= until_ms
                ):
                    continue
                found.append((record.t, seq, index, StoredRead(seq, meter, record)))
        found.sort(key=lambda item: item[:3])
        return [item[3] for item in found]

    def superseded(self, meter: str, keys: Sequence[tuple[str, int, int]]
                   ) -> dict[tuple[str, int, int], tuple[str, int]]:
        """``(message id, record index)`` of each committed record of ``meter`` with (quantity,
        t_ms, rev) in ``keys`` — what a correction with ``rev + 1`` names in ``sup``; keys the
        store no longer holds are left out (gateway/store/versions.py)."""
        book = self._alias_book()
        with self._reading() as conn:
            return versions.find(conn, meter, keys, book, self.reads_span_ms)

    def last_actual_registers(self) -> list[tuple[str, str, Decimal]]:
        """``(meter, quantity, value)`` of the newest actual (quality ``A``) Decimal read of
        every register ever committed, by meter and quantity — kept even after retention has
        pruned the reads, so that a register going backwards across a restart is still caught."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT meter, quantity, value FROM last_registers ORDER BY meter, quantity"
            ).fetchall()
        return [(str(meter), str(quantity), Decimal(str(value))) for meter, quantity, value in rows]
