"""The daemon's side of signed command results: :class:`ResultSigner` turns a verdict or the
audit chain head into a durable outbox message (DESIGN.md §4 and §6).

The wire format — payload, signature, topics, and reading it back — is
:mod:`protocols.commands.results`. What stays here is the part that needs the daemon: the
gateway's key, loaded from its file, and the store's outbox, which assigns the seq and id inside
its transaction so that re-sends are byte-identical (Ed25519 is deterministic).
"""

from __future__ import annotations

from pathlib import Path

from gateway.store.records import OutboxMessage
from protocols.commands.audit_chain import ChainHead
from protocols.commands.keys import parse_private_key, raw_public_key
from protocols.commands.results import RESULT_QOS, sign_audit_head, sign_result
from protocols.ed25519 import SigningKey
from protocols.payload import CMD_STATUSES, Envelope
from protocols.topics import GatewayTopics


class ResultSigner:
    """Signs command results with the gateway's key; its kid is the gateway id (UTF-8)."""

    def __init__(self, key: SigningKey, gateway_id: str) -> None:
        self._key = key
        self.gateway_id = gateway_id
        self.kid = gateway_id.encode("utf-8")
        self.public_key = raw_public_key(key)

    @classmethod
    def from_pem(cls, path: Path, gateway_id: str) -> ResultSigner:
        """The signer for the PEM private key at ``path`` (OSError if it cannot be read,
        ValueError says what is wrong with its content)."""
        return cls(parse_private_key(Path(path).read_bytes(), str(path)), gateway_id)

    def sign(self, env: Envelope, cmd: bytes, status: str, reason: str) -> bytes:
        """The COSE_Sign1 bytes of one result (PayloadEncodeError for a bad status or id)."""
        return sign_result(self._key, self.kid, env, cmd, status, reason)

    def audit_head_message(
        self, *, topic_prefix: str, epoch: int, ts: int, head: ChainHead, records: int
    ) -> OutboxMessage:
        """The audit journal's chain head as a durable, signed outbox message on the result
        topic: the anchor that lets ``gwtool audit verify --head`` prove later that nothing up
        to ``head`` was cut off or edited."""
        gw = self.gateway_id
        return OutboxMessage(
            topic=GatewayTopics(topic_prefix, gw).command_results,
            qos=RESULT_QOS,
            build=lambda seq: sign_audit_head(
                self._key, self.kid, Envelope(gw, epoch, seq, ts), head, records
            ),
        )

    def outbox_message(
        self, *, topic_prefix: str, epoch: int, ts: int, cmd: bytes, status: str, reason: str
    ) -> OutboxMessage:
        """The result as a durable outbox message: commit with ``Store.enqueue``; the payload is
        built and signed inside the store's transaction with the seq it assigns."""
        if status not in CMD_STATUSES:
            raise ValueError(f"result status {status!r} is not one of {sorted(CMD_STATUSES)}")
        gw = self.gateway_id
        return OutboxMessage(
            topic=GatewayTopics(topic_prefix, gw).command_results,
            qos=RESULT_QOS,
            build=lambda seq: self.sign(Envelope(gw, epoch, seq, ts), cmd, status, reason),
        )
