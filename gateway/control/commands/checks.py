"""The verifier's checks that depend only on the message and the gateway's configuration: who
signed (steps 3 and 4 of :mod:`.verifier`) and whether the command is fresh (step 6).

Split from :mod:`.verifier`, whose checks that need the journal (replay, rate limits) and the
daemon (targets, relays) stay there; these two are pure functions of their inputs, so they read
and test alone.
"""

from __future__ import annotations

from gateway.control.commands.clock import TrustedClock
from gateway.control.commands.keys import KeyTable, OperatorKey
from gateway.control.commands.verdicts import Reject, RejectCode, VerifierPolicy
from protocols import cose
from protocols.commands.envelope import TRIPPING_ACTIONS, CommandEnvelope


def check_signatures(message: cose.CoseMessage, keys: KeyTable) -> tuple[OperatorKey, ...]:
    """Steps 3 and 4: every signature protected EdDSA under a distinct key of ``keys``, and valid
    over the bytes as received; the signers, in signature order."""
    layers: list[cose.Headers]
    if isinstance(message, cose.Sign1Message):
        layers = [message.headers]
    else:
        layers = [s.headers for s in message.signatures]
        body = message.headers
        if cose.HEADER_CRIT in body.protected or cose.HEADER_CRIT in body.unprotected:
            raise Reject(RejectCode.BAD_ALGORITHM, "message body has a 'crit' header")
    signers: list[OperatorKey] = []
    for i, headers in enumerate(layers):
        try:
            headers.require_eddsa()
        except cose.CoseAlgorithmError as exc:
            raise Reject(RejectCode.BAD_ALGORITHM, str(exc)) from None
        kid = headers.kid
        if kid is None:
            raise Reject(RejectCode.UNKNOWN_KEY, f"signature {i} carries no key id (kid)")
        key = keys.key(kid)
        if key is None:
            raise Reject(
                RejectCode.UNKNOWN_KEY,
                f"key id {show_kid(kid)} is not in [[operators]] of this gateway",
            )
        for other in signers:
            if other.kid == key.kid or other.public_key == key.public_key:
                raise Reject(
                    RejectCode.DUPLICATE_SIGNER,
                    f"key {key.kid!r} signs twice (or shares its public key with "
                    f"{other.kid!r}); two signatures must come from two operators",
                )
        signers.append(key)
    for i, key in enumerate(signers):
        try:
            if isinstance(message, cose.Sign1Message):
                message.verify(key.public_key)
            else:
                message.verify_signature(i, key.public_key)
        except cose.CoseError as exc:
            raise Reject(
                RejectCode.BAD_SIGNATURE, f"signature of key {key.kid!r}: {exc}"
            ) from None
    return tuple(signers)


def check_freshness(
    envelope: CommandEnvelope, now: float, p: VerifierPolicy, clock: TrustedClock
) -> bool:
    """Step 6: the lifetime within ``max_age_s``, and with trusted time ``iat`` not in the future
    and ``exp`` not passed. False when the time could not be checked (no trusted clock), which
    only actions that trip nothing may pass."""
    lifetime = envelope.exp - envelope.iat
    if lifetime > p.max_age_s:
        raise Reject(
            RejectCode.LIFETIME_TOO_LONG,
            f"exp - iat is {lifetime} s, over max_age_s = {p.max_age_s} s",
        )
    if not clock.trusted():
        if envelope.action in TRIPPING_ACTIONS:
            raise Reject(
                RejectCode.UNTRUSTED_CLOCK,
                f"{envelope.action} needs trusted time: {clock.why_untrusted()}",
            )
        return False
    if envelope.iat > now + p.clock_skew_s:
        raise Reject(
            RejectCode.NOT_YET_VALID,
            f"iat {envelope.iat} is {envelope.iat - now:.0f} s in the future; check the "
            "signing host's clock",
        )
    if now >= envelope.exp:
        raise Reject(
            RejectCode.EXPIRED,
            f"expired {now - envelope.exp:.0f} s ago (exp {envelope.exp})",
        )
    return True


def show_kid(kid: bytes) -> str:
    """A key id as text when it is printable, else as CBOR diagnostic hex."""
    try:
        text = kid.decode("utf-8")
    except UnicodeDecodeError:
        return f"h'{kid.hex()}'"
    return repr(text) if text.isprintable() else f"h'{kid.hex()}'"
