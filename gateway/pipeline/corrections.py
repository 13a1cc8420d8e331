"""Corrections: VEE's re-published intervals name the record they supersede.

When VEE's verdict on an interval that already went out changes — a read first published ``A``
judged a spike once the next read arrived (now ``S`` with a substitute, or ``N``), a gap's
estimates re-scaled when the read that ends it arrives, an estimate replaced by an actual, a
sparse rule's finding on a voltage — the VEE stage re-publishes the key (meter, q, t) with
``rev`` one higher. This module makes each such record a *correction* a billing system can
apply exactly: its ``sup`` names the superseded record as (message id, index in its ``reads``)
(docs/payloads.md, "The reads contract"; docs/payloads.cddl).

Where the superseded record is:

* **in this commit** (a read placed and graded in the same batch, or two revisions of one key
  in one batch): its message is earlier in the same list of messages, which the store commits in
  one transaction with consecutive seqs, so it is named relative to the correction's own seq
  when the payload is built (``build(seq)``) — exact, and the same in a spill file, which keeps
  a poll's messages together with consecutive seqs too;
* **committed before**: the store finds it (:meth:`gateway.store.Store.superseded`);
* **nowhere** (pruned, or still held in memory while the store cannot be written): the
  correction goes out without ``sup``; ``rev`` still orders the versions. Counted in
  :attr:`Corrections.unnamed`.

Cost: nothing for a batch without re-published records (the common poll).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Sequence
from dataclasses import fields, replace

from gateway.store import Store
from gateway.store.errors import StoreError
from gateway.store.records import OutboxMessage
from protocols.payload import Envelope, ReadRecord, build_reads, durable_id

log = logging.getLogger(__name__)

#: Where a superseded record is: ``(message id, index)`` committed before, or
#: ``(messages back, index)`` earlier in the same commit.
Named = tuple[str, int] | tuple[int, int] | None
#: (quantity, t_ms, rev) of a superseded version, as the store looks it up
Key = tuple[str, int, int]


class Corrections:
    """Builds the VEE stage's reads messages with ``sup`` filled in (module docstring)."""

    def __init__(self, store: Store, gateway_id: str, topic_of: Callable[[str], str]) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self.topic_of = topic_of
        #: corrections that named what they supersede / that went out without ``sup``
        self.named = 0
        self.unnamed = 0

    def messages(self, earlier: Sequence[OutboxMessage],
                 vee_reads: Sequence[tuple[str, list[ReadRecord]]],
                 ts: int) -> list[OutboxMessage]:
        """One message per ``(meter, records)`` of ``vee_reads``, to be committed right after
        ``earlier`` (the same list, the same transaction)."""
        latest: dict[tuple[str, str, int], tuple[int, int, int]] | None = None
        names: list[list[Named]] = []
        wanted: dict[str, list[Key]] = {}  # looked up in the store, one call per meter
        for number, (meter, records) in enumerate(vee_reads):
            position = len(earlier) + number
            row: list[Named] = []
            for index, record in enumerate(records):
                name: Named = None
                if record.rev and record.sup is None:
                    if latest is None:
                        latest = _latest(earlier, {m for m, _ in vee_reads})
                        for k, (m, before) in enumerate(vee_reads[:number + 1]):
                            for i, seen in enumerate(before[:index] if k == number else before):
                                latest[(m, seen.q, seen.t)] = (len(earlier) + k, i, seen.rev)
                    here = latest.get((meter, record.q, record.t))
                    if here is None:
                        wanted.setdefault(meter, []).append(
                            (record.q, record.t, record.rev - 1))
                    elif here[2] == record.rev - 1:
                        name = (position - here[0], here[1])
                row.append(name)
                if latest is not None:  # a later record of this key supersedes this one
                    latest[(meter, record.q, record.t)] = (position, index, record.rev)
            names.append(row)
        found = self._look_up(wanted)
        out: list[OutboxMessage] = []
        for (meter, records), row in zip(vee_reads, names, strict=True):
            for index, record in enumerate(records):
                if record.rev and record.sup is None:
                    if row[index] is None:
                        row[index] = found.get((meter, record.q, record.t, record.rev - 1))
                    if row[index] is None:
                        self.unnamed += 1
                    else:
                        self.named += 1
            out.append(OutboxMessage.for_intervals(
                topic=self.topic_of(meter), meter=meter, reads=records,
                build=self._builder(meter, ts, tuple(records), tuple(row))))
        return out

    def _look_up(self, wanted: dict[str, list[Key]]
                 ) -> dict[tuple[str, str, int, int], tuple[str, int]]:
        found: dict[tuple[str, str, int, int], tuple[str, int]] = {}
        for meter, keys in wanted.items():
            try:
                named = self.store.superseded(meter, keys)
            except StoreError as exc:
                log.warning("corrections of meter %s: the records they supersede cannot be "
                            "looked up (%s); they go out without sup", meter, exc)
                continue
            found.update({(meter, *key): value for key, value in named.items()})
        return found

    def _builder(self, meter: str, ts: int, records: tuple[ReadRecord, ...],
                 names: tuple[Named, ...]) -> Callable[[int], bytes]:
        gw, epoch = self.gateway_id, self.store.epoch

        def build(seq: int) -> bytes:
            final = [record if name is None else _superseding(record, (
                name[0] if isinstance(name[0], str) else durable_id(gw, epoch, seq - name[0]),
                name[1])) for record, name in zip(records, names, strict=True)]
            return build_reads(Envelope(gw, epoch, seq, ts), meter, final)

        return build


#: ReadRecord's fields, in order.
_FIELD_NAMES = tuple(f.name for f in fields(ReadRecord))
_set = object.__setattr__


def _superseding(record: ReadRecord, sup: tuple[str, int]) -> ReadRecord:
    """``replace(record, sup=sup)``: the same record naming what it supersedes.

    Without ``replace``'s field inspection and the full ``__post_init__``: every field but
    ``sup`` was checked when ``record`` was made (it is frozen), so only ``sup`` is, by the
    record's own check. A correction is built for every poll whose VEE verdict moves an interval
    (about 5 µs a record through ``replace``, 1 µs here; tests/test_corrections.py compares
    the two). A subclass goes through ``replace``."""
    if type(record) is not ReadRecord:
        return replace(record, sup=sup)
    copy = object.__new__(ReadRecord)
    for name in _FIELD_NAMES:
        _set(copy, name, getattr(record, name))
    _set(copy, "sup", sup)
    copy._check_sup()
    return copy


def _latest(messages: Sequence[OutboxMessage], meters: Container[str]
            ) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    """(meter, q, t) -> (position, index, rev) of its newest record in ``messages``, for the
    records of ``meters`` (the only ones looked up: the meters with VEE records; the others'
    reads, every poll of the batch, are not walked)."""
    found: dict[tuple[str, str, int], tuple[int, int, int]] = {}
    for position, message in enumerate(messages):
        meter = message.meter
        if meter is None or meter not in meters:
            continue
        for index, record in enumerate(message.reads):
            found[(meter, record.q, record.t)] = (position, index, record.rev)
    return found
