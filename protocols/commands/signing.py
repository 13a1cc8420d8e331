"""Signing a command envelope (DESIGN §6): one signer gives a COSE_Sign1, two a COSE_Sign.

``gwtool sign-command`` (an operator on a laptop) and ``edge-central`` (replay requests) sign
the same way, so the rule lives here, below both: the protected header ``{1: -8, 4: kid}``, an
empty unprotected header, the envelope's CBOR as the payload, no external AAD.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols import cose
from protocols.commands.envelope import CommandEnvelope
from protocols.ed25519 import SigningKey

__all__ = ["sign_command"]


def sign_command(
    envelope: CommandEnvelope, signers: Sequence[tuple[SigningKey, str]]
) -> bytes:
    """The signed command: a COSE_Sign1 for one ``(key, kid)``, a COSE_Sign for two (the
    two-person rule). ValueError for no signer or more than two."""
    if not 1 <= len(signers) <= 2:
        raise ValueError(f"a command has one or two signers, got {len(signers)}")
    payload = envelope.to_cbor()
    if len(signers) == 1:
        key, kid = signers[0]
        return cose.sign1(payload, key, protected=cose.ed25519_protected(kid.encode("utf-8")))
    return cose.sign(
        payload, [cose.Signer(key, kid=kid.encode("utf-8")) for key, kid in signers]
    )
