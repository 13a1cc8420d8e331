"""Payload v2 alias bindings every worker shares, and the reads that wait for them.

A v2 reads message names its meter and quantities by a binding index that only the gateway's
retained birth declares (docs/payloads.md). Each worker learns births into its own
:class:`~protocols.payload.AliasBook`, but that is not enough on its own: births are retained,
yet a worker that starts after the broker lost its retained messages (a broker killed without
persistence) sees no birth until the gateway reconnects, and workers restart. So every binding a
birth declares is also written to ``alias_bindings`` in the same transaction as the birth, and a
worker missing a binding looks there (:func:`load_bindings`) before giving up.

A reads message whose binding nobody has learned yet is neither dropped nor guessed at, and is
not held unacknowledged either (a held message would use up the broker's receive window and
stall the worker behind it): it is *parked* — its seq counted like any stored message, so it is
neither a gap nor stored twice, and its bytes kept in ``parked_reads``. When a birth declaring the
binding arrives, or on the worker's next gap scan, :func:`release_parked` decodes the parked
messages that have become decodable and stores their reads in one transaction with deleting
them. A parked message that turns out not to fit its table is rejected then, logged, as it
would have been on arrival.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from central.decoding import BirthIn, Inbound, InboundError, ReadsIn, UnresolvedReadsIn
from central.storage.database import Database
from protocols.payload import AliasTable, Binding, PayloadDecodeError

__all__ = ["load_bindings", "park", "parked_streams", "release_parked", "store_bindings"]


def _epoch_text(epoch: int) -> str:
    return f"{epoch:016x}"


def store_bindings(db: Database, births: Sequence[BirthIn], now_ms: int) -> None:
    """Write the bindings ``births`` declare (inside the caller's transaction); indexes are never
    reused within an epoch, so a binding already there is the same one."""
    rows = [(b.gw, _epoch_text(b.aliases_epoch), binding.index, binding.meter,
             json.dumps(binding.table.wire()), now_ms)
            for b in births if b.aliases_epoch is not None for binding in b.bindings]
    db.insert_many("alias_bindings", ("gw", "epoch", "idx", "meter", "entries", "learned_ms"),
                   rows, "ON CONFLICT DO NOTHING")


def load_bindings(db: Database, gw: str, epoch: int) -> list[Binding]:
    """Every binding of ``gw``'s store epoch ``epoch`` that some worker has stored."""
    out = []
    for idx, meter, entries in db.execute(
            "SELECT idx, meter, entries FROM alias_bindings WHERE gw = ? AND epoch = ?",
            (gw, _epoch_text(epoch))):
        where = f"alias_bindings {gw}/{epoch:016x}/{idx}"
        try:
            out.append(Binding(int(idx), str(meter),
                               AliasTable.from_wire(json.loads(entries), where)))
        except (PayloadDecodeError, ValueError) as exc:  # written by us: only a damaged row
            raise InboundError(f"{where}: {exc}") from None
    return out


def park(db: Database, messages: Sequence[UnresolvedReadsIn], now_ms: int) -> None:
    """Keep ``messages`` (inside the caller's transaction, which has counted their seqs)."""
    rows = [(m.message_id, m.stream.gw, _epoch_text(m.stream.epoch), m.binding, m.topic,
             m.payload.hex(), now_ms) for m in messages]
    db.insert_many("parked_reads", ("message_id", "gw", "epoch", "idx", "topic", "payload",
                                    "received_ms"), rows, "ON CONFLICT DO NOTHING")


def parked_streams(db: Database) -> list[tuple[str, str]]:
    """The (gw, epoch) streams with parked reads."""
    return [(str(gw), str(epoch)) for gw, epoch in
            db.execute("SELECT DISTINCT gw, epoch FROM parked_reads ORDER BY gw, epoch")]


def release_parked(
    db: Database, gw: str, epoch: str, decode: Callable[[str, bytes], Inbound],
    store: Callable[[Database, list[ReadsIn]], int],
) -> tuple[int, list[str]]:
    """Decode the parked reads of one stream that ``decode`` can now resolve and ``store`` them,
    deleting them in the same transaction. Returns (values stored, one line per message
    rejected). Safe with workers racing: the upsert keeps the highest ``rev``, and storing the
    same version twice changes nothing."""
    rows = db.execute("SELECT message_id, topic, payload FROM parked_reads WHERE gw = ? AND "
                      "epoch = ? ORDER BY message_id", (gw, epoch))
    ready: list[ReadsIn] = []
    done: list[str] = []
    rejected: list[str] = []
    for message_id, topic, payload in rows:
        try:
            message = decode(str(topic), bytes.fromhex(str(payload)))
        except InboundError as exc:
            rejected.append(f"parked {message_id}: {exc}")
            done.append(str(message_id))
            continue
        if isinstance(message, ReadsIn):
            ready.append(message)
            done.append(str(message_id))
    if not done:
        return 0, rejected
    db.ensure_partitions("current_reads", [t for m in ready for t in m.times])
    with db.transaction([(gw, epoch)]):
        values = store(db, ready)
        for message_id in done:
            db.execute("DELETE FROM parked_reads WHERE message_id = ?", (message_id,))
    return values, rejected
