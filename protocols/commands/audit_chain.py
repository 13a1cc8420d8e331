"""The audit journal's hash chain (DESIGN.md §6): record hashes, chain heads and verification,
sans-IO.

Every record ``n`` stores ``hash_n = SHA-256(DOMAIN ‖ hash_{n-1} ‖ content_n)``, where
``content_n`` is the deterministic CBOR encoding (RFC 8949 §4.2.1) of
``[1, seq, ts_ms, kind, cmd, kid, final, body]`` and ``hash_0`` is 32 zero bytes. ``body`` is the
record's details, itself deterministic CBOR (:func:`encode_details`). Changing any field of a
record changes its hash; re-hashing it breaks the link to the next record; deleting or reordering
records breaks the sequence numbers or the links. :func:`verify_chain` names the first record
where it breaks; what a chain cannot show by itself (the tail cut off, the whole chain rebuilt)
the published chain head shows (``expected_head``).

The format lives here, below the daemon, because two parties must compute it identically: the
gateway's journal writes it (``gateway.control.commands.journal``) and an auditor's
``gwtool audit verify`` checks it, without the tool importing the daemon. Reading the SQLite file
is the caller's; :data:`AUDIT_APPLICATION_ID` and :data:`CHAIN_COLUMNS` say what to read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import cbor2

__all__ = [
    "AUDIT_APPLICATION_ID",
    "CHAIN_COLUMNS",
    "GENESIS_HASH",
    "HASH_DOMAIN",
    "RECORD_FORMAT",
    "ChainHead",
    "ChainProblem",
    "ChainReport",
    "encode_details",
    "parse_head",
    "record_hash",
    "verify_chain",
]

#: ``PRAGMA application_id`` of journal databases ("EGWA"), distinct from the store's "EGW1":
#: how a reader knows a file is a journal before trusting anything in it.
AUDIT_APPLICATION_ID: Final = 0x45475741
#: The journal table's columns :func:`verify_chain` takes, in this order.
CHAIN_COLUMNS: Final = ("seq", "ts_ms", "kind", "cmd", "kid", "final", "body", "prev_hash", "hash")
RECORD_FORMAT: Final = 1
GENESIS_HASH: Final = bytes(32)
#: Domain separation: a journal hash can never be confused with a hash of anything else.
HASH_DOMAIN: Final = b"edge-gateway audit journal v1\x00"


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest record: ``seq`` (0 for an empty journal), its ``hash`` and ``ts_ms``.
    Published periodically, it anchors the chain outside the gateway."""

    seq: int
    hash: bytes
    ts_ms: int

    def text(self) -> str:
        """``SEQ:HEX``, the form ``gwtool audit verify --head`` takes."""
        return f"{self.seq}:{self.hash.hex()}"


def record_hash(
    prev_hash: bytes,
    seq: int,
    ts_ms: int,
    kind: str,
    cmd: bytes | None,
    kid: str | None,
    final: bool,
    body: bytes,
) -> bytes:
    """The chain hash of one record (see the module docstring)."""
    content = cbor2.dumps([RECORD_FORMAT, seq, ts_ms, kind, cmd, kid, final, body], canonical=True)
    return hashlib.sha256(HASH_DOMAIN + prev_hash + content).digest()


def encode_details(details: Mapping[str, object]) -> bytes:
    """Deterministic CBOR of a details map; TypeError for anything that is not plain data."""
    return cbor2.dumps(_plain(details, "details"), canonical=True)


def _plain(value: object, where: str) -> object:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: map key {key!r} is not text")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} cannot be journaled")


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where the chain first breaks: record ``seq`` and ``what`` is wrong with it."""

    seq: int
    what: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of :func:`verify_chain`: ``records`` checked, the ``head`` reached (None when
    empty) and the first ``problem`` (None when intact)."""

    records: int
    head: ChainHead | None
    problem: ChainProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def parse_head(text: str) -> tuple[int, bytes]:
    """``SEQ:HEX`` (as published and as :meth:`ChainHead.text` prints) → (seq, hash)."""
    seq_text, sep, hex_text = text.partition(":")
    try:
        seq = int(seq_text)
        digest = bytes.fromhex(hex_text)
    except ValueError:
        seq, digest = -1, b""
    if not sep or seq < 1 or len(digest) != 32:
        raise ValueError(f"head {text!r} must be SEQ:HASH with 64 hex digits, e.g. 42:9f86d0...")
    return seq, digest


def verify_chain(
    rows: Iterable[Sequence[object]], expected_head: tuple[int, bytes] | None = None
) -> ChainReport:
    """Walk a journal's records and report the first broken one.

    ``rows`` are the records in seq order, each as the columns :data:`CHAIN_COLUMNS` name (a
    cursor over ``SELECT <CHAIN_COLUMNS> FROM journal ORDER BY seq`` will do: the caller opens
    the file). Checks, for each record: that its seq is the next one (a gap is a removed
    record), that its ``prev_hash`` is the previous record's hash (reordered, or a predecessor
    edited and re-hashed), and that its hash matches its content (edited). With
    ``expected_head`` (a published head, see :func:`parse_head`) also that the chain reaches
    that record unchanged (records cut off the end).
    """
    expected_seq = 1
    prev = GENESIS_HASH
    head: ChainHead | None = None
    anchor_seen = False
    count = 0
    for row in rows:
        seq, ts_ms, kind, cmd, kid, final, body, prev_hash, digest = row
        problem = _row_problem(row, expected_seq, prev)
        if problem is not None:
            return ChainReport(count, head, problem)
        assert isinstance(seq, int) and isinstance(ts_ms, int) and isinstance(digest, bytes)
        count += 1
        prev = digest
        head = ChainHead(seq, digest, ts_ms)
        if expected_head is not None and seq == expected_head[0]:
            anchor_seen = True
            if digest != expected_head[1]:
                return ChainReport(
                    count,
                    head,
                    ChainProblem(
                        seq,
                        f"record {seq} does not match the published head "
                        f"({expected_head[1].hex()[:16]}...): the chain was rebuilt from here "
                        "or earlier",
                    ),
                )
        expected_seq += 1
    if expected_head is not None and not anchor_seen:
        return ChainReport(
            count,
            head,
            ChainProblem(
                expected_seq,
                f"the chain ends at record {expected_seq - 1} but the published head is record "
                f"{expected_head[0]}: records from {expected_seq} on were removed",
            ),
        )
    return ChainReport(count, head, None)


def _row_problem(row: Sequence[object], expected_seq: int, prev: bytes) -> ChainProblem | None:
    seq, ts_ms, kind, cmd, kid, final, body, prev_hash, digest = row
    if not isinstance(seq, int):
        return ChainProblem(expected_seq, f"record after {expected_seq - 1} has seq {seq!r}")
    if seq != expected_seq:
        missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
        return ChainProblem(
            expected_seq, f"record {missing} missing (removed): next record is {seq}"
        )
    if prev_hash != prev:
        return ChainProblem(
            seq,
            f"record {seq} does not follow record {seq - 1} (prev_hash mismatch): records were "
            f"reordered, or one before it was removed or edited and re-hashed",
        )
    if not (
        isinstance(ts_ms, int)
        and isinstance(kind, str)
        and (cmd is None or isinstance(cmd, bytes))
        and (kid is None or isinstance(kid, str))
        and final in (0, 1)
        and isinstance(body, bytes)
        and isinstance(digest, bytes)
    ) or digest != record_hash(prev, seq, ts_ms, kind, cmd, kid, bool(final), body):
        return ChainProblem(seq, f"record {seq} was edited: its content does not match its hash")
    return None
