"""Asking a gateway to send a gap again: a signed ``replay`` command (DESIGN §9).

``params: {epoch, from_seq, to_seq}`` (inclusive), role VIEWER — replay only re-sends what
that key may read anyway — built with the envelope rules the gateway parses by and signed like
``gwtool sign-command`` (:func:`protocols.commands.sign_command`). The counter comes from the
database (:func:`central.storage.gaps.claim_replays`), one sequence for all workers, because the
gateway refuses a counter that is not above the last one it saw from the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from central.config import ReplaySettings
from central.storage.gaps import GapClaim
from protocols.commands import build_envelope, sign_command
from protocols.topics import GatewayTopics

__all__ = ["REPLAY_ACTION", "ReplayCommand", "build_replay"]

REPLAY_ACTION = "replay"
REPLAY_ROLE = "VIEWER"


@dataclass(frozen=True, slots=True)
class ReplayCommand:
    """A signed command ready to publish: ``topic`` (``P/G/cmd``), ``payload``, ``cmd`` (hex)."""

    topic: str
    payload: bytes
    cmd: str


def build_replay(claim: GapClaim, settings: ReplaySettings, prefix: str,
                 now_s: int) -> ReplayCommand:
    """The signed replay command for ``claim``; EnvelopeError if this build of the command
    contract does not know the action yet (the caller records that as the gap's last result)."""
    envelope = build_envelope(
        aud=claim.gw,
        action=REPLAY_ACTION,
        # The envelope wants targets; a replay is about the gateway's own store, so it names
        # the gateway itself.
        targets=[claim.gw],
        ctr=claim.ctr,
        iat=now_s,
        ttl_s=settings.ttl_s,
        role=REPLAY_ROLE,
        params={"epoch": claim.epoch, "from_seq": claim.from_seq, "to_seq": claim.to_seq},
    )
    payload = sign_command(envelope, [(settings.private_key, settings.kid)])
    return ReplayCommand(GatewayTopics(prefix, claim.gw).commands, payload, envelope.id.hex())


