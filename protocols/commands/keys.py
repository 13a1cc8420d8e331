"""Ed25519 private keys as operators and the gateway keep them: PKCS#8 PEM bytes, sans-IO.

The daemon (its result-signing key) and ``gwtool`` (operators' keys) both turn PEM bytes into a
signing key and a signing key into the 32 raw public bytes that ``[[operators]] public_key``
holds. Reading the file is the caller's job, so the caller decides how a missing or unreadable
file is reported; this module only judges the bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["parse_private_key", "raw_public_key"]


def parse_private_key(pem: bytes, source: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``pem`` (unencrypted PEM, as ``gwtool keygen`` writes it).

    ValueError says what is wrong, prefixed with ``source`` (usually the file name) so that the
    message is useful without the caller adding context.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{source}: not an unencrypted PEM private key ({exc}); create one with "
            "`gwtool keygen --out NAME`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source}: holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public half of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
