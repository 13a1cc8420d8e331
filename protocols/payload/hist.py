"""Marking a message from the outbox as backlog before it is sent again.

A re-sent durable message carries ``hist: true`` at the top level so consumers can tell backlog
from live data. The stored bytes are rewritten in place — the map header is bumped and the
entry appended — rather than decoded and built again, so a re-send is byte-identical to the
original apart from the mark; the message is decoded only to check that it is a schema message
without the mark. The one rule shared by the store and the outbox pump.
"""

from __future__ import annotations

from typing import Final

import cbor2

from protocols.payload.decode import decode_message
from protocols.payload.schema import _TAG_COSE_SIGN1, PayloadDecodeError, PayloadEncodeError

_HIST_ENTRY: Final = cbor2.dumps("hist") + cbor2.dumps(True)
#: Schema v2 (small-integer keys): key 5, true.
_HIST_ENTRY_V2: Final = cbor2.dumps(5) + cbor2.dumps(True)


def _map_header(count: int) -> bytes:
    major = 5 << 5
    if count < 24:
        return bytes([major | count])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if count < 1 << (8 * size):
            return bytes([major | info]) + count.to_bytes(size, "big")
    raise PayloadEncodeError(f"map of {count} entries cannot be encoded")


def _map_header_length(first: int) -> int:
    info = first & 0x1F
    return 1 if info < 24 else 1 + {24: 1, 25: 2, 26: 4, 27: 8}[info]


def _map_count(payload: bytes) -> int:
    """Entries of the top-level map, from its header (decode_message already proved it is a
    definite-length map)."""
    info = payload[0] & 0x1F
    if info < 24:
        return info
    return int.from_bytes(payload[1:_map_header_length(payload[0])], "big")


def mark_hist(payload: bytes) -> bytes:
    """The same message with ``hist: true`` added at the top level: it is backlog, re-sent or sent
    late after an outage. ``id``, ``seq`` and every other byte of the message are unchanged —
    only the map header grows by one entry and the pair is appended — so consumers dedupe the
    re-send against an earlier copy by ``id``. Idempotent.

    A COSE_Sign1 (signed command result) is returned unchanged: the signature covers the
    payload, and its ``seq``/``ts`` already tell a consumer that it is late.
    """
    if payload[:1] == bytes([0xC0 | _TAG_COSE_SIGN1]):
        return payload
    try:
        message = decode_message(payload)
    except PayloadDecodeError as exc:
        raise PayloadEncodeError(f"cannot mark a stored payload as hist: {exc}") from exc
    if "hist" in message:
        return payload
    header = _map_header_length(payload[0])
    entry = _HIST_ENTRY_V2 if message.get("v") == 2 else _HIST_ENTRY
    return _map_header(_map_count(payload) + 1) + payload[header:] + entry


