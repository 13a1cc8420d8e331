"""Signed command results on ``P/G/cmd/result`` (DESIGN.md §4 and §6, contract), sans-IO.

Each result is a COSE_Sign1 made with the gateway's own Ed25519 key (``[commands] gateway_key``)
over the CBOR payload :func:`protocols.payload.build_cmd_result` builds: the durable envelope
(``v``, ``gw``, ``id``, ``seq``, ``ts``) plus ``cmd``, ``status`` and ``reason``. The central system
checks the signature with the gateway's public key, so a result cannot be forged by anyone who
can merely publish on the broker — "executed" is what makes the customer service centre stop
worrying, and it must be true.

The same topic carries the audit journal's chain head (payload ``audit-head`` of
docs/payloads.cddl), signed by the same key: whoever audits commands reads this topic already,
and an anchor anyone on the broker could forge would prove nothing.

Here are both directions of the format: :func:`sign_result` and :func:`sign_audit_head` (the
daemon's ``ResultSigner`` calls them inside the store's transaction, where the seq is assigned)
and :func:`read_result_topic` (``gwtool send-command`` and the central system read with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from protocols import cose
from protocols.commands.audit_chain import ChainHead
from protocols.ed25519 import SigningKey
from protocols.payload import (
    CMD_STATUSES,
    Envelope,
    PayloadDecodeError,
    build_audit_head,
    build_cmd_result,
    decode_message,
)

__all__ = [
    "RESULT_QOS",
    "AuditHeadMessage",
    "CommandResult",
    "ResultError",
    "read_result",
    "read_result_topic",
    "sign_audit_head",
    "sign_result",
]

#: QoS of ``P/G/cmd/result``: a result is delivered at least once.
RESULT_QOS: Final = 1


def sign_result(
    key: SigningKey, kid: bytes, env: Envelope, cmd: bytes, status: str, reason: str
) -> bytes:
    """The COSE_Sign1 bytes of one command result (PayloadEncodeError for a bad status or id).

    Ed25519 is deterministic, so the same inputs give the same bytes: a re-sent result is
    byte-identical to the first."""
    payload = build_cmd_result(env, cmd, status, reason)
    return cose.sign1(payload, key, protected=cose.ed25519_protected(kid))


def sign_audit_head(
    key: SigningKey, kid: bytes, env: Envelope, head: ChainHead, records: int
) -> bytes:
    """The COSE_Sign1 bytes of an audit chain-head publication (``audit-head`` of
    docs/payloads.cddl): the anchor ``gwtool audit verify --head`` compares a journal with."""
    payload = build_audit_head(env, seq=head.seq, hash=head.hash, records=records, t=head.ts_ms)
    return cose.sign1(payload, key, protected=cose.ed25519_protected(kid))


class ResultError(ValueError):
    """A message on the result topic is not a valid result signed by the expected key."""


@dataclass(frozen=True, slots=True)
class AuditHeadMessage:
    """A verified chain-head publication: ``head`` (seq, hash, time of the newest record),
    ``records``, ``signed_by`` (None when the signature was not checked) and the ``payload``."""

    head: ChainHead
    records: int
    signed_by: str | None
    payload: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A verified result: ``cmd`` (command id), ``status``, ``reason``, ``signed_by`` (the kid,
    or None when the signature was not checked) and the whole decoded ``payload``."""

    cmd: bytes
    status: str
    reason: str
    signed_by: str | None
    payload: Mapping[str, object]


def read_result(data: bytes, gateway_public_key: bytes | None) -> CommandResult:
    """Decode a command result and, given the gateway's raw public key, verify its signature.

    Without a key the signature is *not* checked (``signed_by`` is None) — for looking at traffic
    only; never trust an "executed" that way. A chain-head publication (also on the result
    topic) raises :class:`ResultError`; use :func:`read_result_topic` to take both.
    """
    message = read_result_topic(data, gateway_public_key)
    if isinstance(message, AuditHeadMessage):
        raise ResultError("an audit chain head, not a command result")
    return message


def read_result_topic(
    data: bytes, gateway_public_key: bytes | None
) -> CommandResult | AuditHeadMessage:
    """Any message of ``P/G/cmd/result``: a command result or an audit chain head, its
    signature verified when ``gateway_public_key`` is given (see :func:`read_result`)."""
    try:
        message = cose.decode(data)
    except cose.CoseDecodeError as exc:
        raise ResultError(f"not a COSE_Sign1 result: {exc}") from None
    if not isinstance(message, cose.Sign1Message):
        raise ResultError("a result is a COSE_Sign1 (tag 18), got a COSE_Sign")
    signed_by = None
    if gateway_public_key is not None:
        try:
            message.verify(gateway_public_key)
        except cose.CoseError as exc:
            raise ResultError(
                f"result signature invalid for the given gateway key: {exc}"
            ) from None
        kid = message.headers.kid
        signed_by = kid.decode("utf-8", "replace") if kid is not None else ""
    try:
        payload = decode_message(message.payload)
    except PayloadDecodeError as exc:
        raise ResultError(f"result payload: {exc}") from None
    audit = payload.get("audit_head")
    if audit is not None:
        return _audit_head(audit, signed_by, payload)
    cmd, status, reason = payload.get("cmd"), payload.get("status"), payload.get("reason")
    if not isinstance(cmd, bytes) or status not in CMD_STATUSES or not isinstance(reason, str):
        raise ResultError("result payload lacks cmd (bytes), status or reason (text)")
    return CommandResult(
        cmd=cmd, status=str(status), reason=reason, signed_by=signed_by, payload=payload
    )


def _audit_head(
    audit: object, signed_by: str | None, payload: Mapping[str, object]
) -> AuditHeadMessage:
    if not isinstance(audit, Mapping):
        raise ResultError("audit_head must be a map of seq, hash, records and t")
    seq, digest, records, t = (audit.get(k) for k in ("seq", "hash", "records", "t"))
    if not (
        isinstance(seq, int)
        and isinstance(records, int)
        and isinstance(t, int)
        and isinstance(digest, bytes)
        and len(digest) == 32
    ):
        raise ResultError("audit_head needs seq, records, t (integers) and hash (32 bytes)")
    return AuditHeadMessage(ChainHead(seq, digest, t), records, signed_by, payload)
