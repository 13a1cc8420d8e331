"""Operator public keys: the Ed25519 keys that may sign commands, loaded at config time.

A key that does not parse should stop `check-config`, not surface as "signature invalid"
on the first trip command in the field. So the key is read and reduced to its 32 raw bytes
here, and the command verifier never touches files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from gateway.config.context import Context
from gateway.config.issues import KeyPath
from gateway.config.kinds import INVALID, Kind, SchemaDefs, Siblings
from gateway.errors import GatewayError
from protocols.commands.keys import ED25519_KEY_BYTES, PublicKeyError, parse_public_key

_HEX_KEY: Final = re.compile(rb"[0-9a-fA-F]{64}")
# A PEM public key is a few hundred bytes; anything far larger is the wrong file.
_MAX_KEY_FILE_BYTES: Final = 16 * 1024


class KeyFormatError(GatewayError, ValueError):
    """The bytes are not an Ed25519 public key in any accepted encoding."""


def parse_ed25519_public_key(data: bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 public key held as raw bytes, hex text or PEM (the one
    parser lives in :mod:`protocols.commands.keys`; its error becomes the config's own)."""
    try:
        return parse_public_key(data)
    except PublicKeyError as exc:
        raise KeyFormatError(str(exc)) from exc


@dataclass(frozen=True)
class Ed25519PublicKeyKind(Kind):
    """64 hex digits (the key itself), or the path of a file holding the key."""

    def expected(self) -> str:
        return (
            "an Ed25519 public key: 64 hex digits, or the path of a file holding the raw "
            "32 bytes, 64 hex digits or a PEM public key"
        )

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, str) or not value:
            return self.reject(value, at, ctx)
        if _HEX_KEY.fullmatch(value.encode("utf-8", "replace")):
            return bytes.fromhex(value)
        if len(value) >= 32 and re.fullmatch("[0-9a-fA-F]+", value):
            # Long and all hex: a key pasted with digits lost, not a file name.
            ctx.report(
                at,
                f"has {len(value)} hex digits; an Ed25519 public key has "
                f"{2 * ED25519_KEY_BYTES} (check the value was copied whole)",
            )
            return INVALID
        path = ctx.resolve(value)
        if not path.is_file():
            state = "is not a regular file" if path.exists() else "does not exist"
            ctx.report(at, f"expected {self.expected()}; key file {path} {state}")
            return INVALID
        try:
            size = path.stat().st_size
            if size > _MAX_KEY_FILE_BYTES:
                raise KeyFormatError(f"{size} bytes is far too large for a public key")
            return parse_ed25519_public_key(path.read_bytes())
        except OSError as exc:
            ctx.report(at, f"cannot read key file {path}: {exc.strerror}")
        except KeyFormatError as exc:
            ctx.report(at, f"key file {path} is not an Ed25519 public key: {exc}")
        return INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}
