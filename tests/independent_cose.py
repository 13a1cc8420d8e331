"""COSE_Sign1 (RFC 9052 §4.2–4.4) with cbor2 and ``cryptography`` alone, for end-to-end tests.

The gateway must accept (and answer) what another implementation signs, not only what
``protocols.cose`` produces: this builds the Sig_structure ``["Signature1", protected, external_aad,
payload]`` and the tagged ``[protected, unprotected, payload, signature]`` array straight from
the RFC, sharing no code with the gateway. It signs any CBOR payload, well-formed or not, so a
test can send a command that breaks the envelope's rules under a signature that holds.
"""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

_TAG_SIGN1 = 18
_ALG_EDDSA = -8
_HEADER_ALG = 1
_HEADER_KID = 4


def load_key(pem: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key of an unencrypted PKCS#8 PEM, read by ``cryptography`` (not by the
    project's own :mod:`protocols.ed25519`, so that a test signing with it shares no key code)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 key: {type(key).__name__}")
    return key


def sign1(payload: object, key: Ed25519PrivateKey, kid: bytes) -> bytes:
    """A COSE_Sign1 over ``cbor2.dumps(payload)``: protected ``{1: -8, 4: kid}``, no external AAD."""
    body = cbor2.dumps(payload)
    protected = cbor2.dumps({_HEADER_ALG: _ALG_EDDSA, _HEADER_KID: kid})
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", body]))
    return cbor2.dumps(cbor2.CBORTag(_TAG_SIGN1, [protected, {}, body, signature]))


def open_sign1(message: bytes, public_key: bytes) -> dict[str, object]:
    """The payload map of a COSE_Sign1 once its EdDSA signature verified with ``public_key`` (raw
    32 bytes); raises ``cryptography``'s InvalidSignature or ValueError otherwise."""
    tag = cbor2.loads(message)
    if not isinstance(tag, cbor2.CBORTag) or tag.tag != _TAG_SIGN1:
        raise ValueError("not a tagged COSE_Sign1")
    protected, _unprotected, body, signature = tag.value
    if cbor2.loads(protected).get(_HEADER_ALG) != _ALG_EDDSA:
        raise ValueError("not signed with EdDSA")
    Ed25519PublicKey.from_public_bytes(public_key).verify(
        signature, cbor2.dumps(["Signature1", protected, b"", body]))
    payload = cbor2.loads(body)
    if not isinstance(payload, dict):
        raise ValueError("payload is not a map")
    return payload
