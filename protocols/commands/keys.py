"""Ed25519 keys as operators, gateways and the central consumer keep them, sans-IO.

The daemon (its result-signing key), ``gwtool`` (operators' keys) and ``edge-central`` (its
replay key) turn PEM bytes into a signing key and a signing key into the 32 raw public bytes
that ``[[operators]] public_key`` holds; the daemon's config, ``gwtool`` and ``edge-central``
(gateways' result keys) read public keys in any of their three spellings. Reading the file is
the caller's job, so the caller decides how a missing or unreadable file is reported; this
module only judges the bytes.
"""

from __future__ import annotations

import re
from typing import Final

from protocols.ed25519 import KeyKindError, SigningKey, load_pkcs8_pem, load_spki_pem

__all__ = ["ED25519_KEY_BYTES", "PublicKeyError", "parse_private_key", "parse_public_key",
           "raw_public_key"]

ED25519_KEY_BYTES: Final = 32
_HEX_KEY: Final = re.compile(rb"[0-9a-fA-F]{64}")


class PublicKeyError(ValueError):
    """The bytes are not an Ed25519 public key in any accepted encoding."""


def parse_public_key(data: bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 public key held as raw bytes, hex text or PEM."""
    if len(data) == ED25519_KEY_BYTES:
        return data
    text = data.strip()
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text.decode("ascii"))
    if text.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in text.split(b"\n", 1)[0]:
            raise PublicKeyError("this is a PRIVATE key; give the public key")
        try:
            return load_spki_pem(text)
        except ValueError as exc:
            raise PublicKeyError(f"not an Ed25519 PEM public key: {exc}") from None
    raise PublicKeyError(
        f"{len(data)} bytes that are neither 32 raw bytes, 64 hex digits nor a PEM public key"
    )


def parse_private_key(pem: bytes, source: str) -> SigningKey:
    """The Ed25519 private key in ``pem`` (unencrypted PKCS#8 PEM, as ``gwtool keygen`` writes it).

    ValueError says what is wrong in one line, prefixed with ``source`` (usually the file name)
    so that the message is useful without the caller adding context.
    """
    try:
        return load_pkcs8_pem(pem)
    except KeyKindError as exc:
        raise ValueError(
            f"{source}: {exc}; give an Ed25519 private key (`gwtool keygen --out NAME` makes one)"
        ) from None
    except ValueError as exc:
        raise ValueError(
            f"{source}: not an unencrypted PEM private key ({exc}); create one with "
            "`gwtool keygen --out NAME`"
        ) from None


def raw_public_key(key: SigningKey) -> bytes:
    """The 32 raw bytes of the public half of ``key``."""
    return key.public_bytes()
