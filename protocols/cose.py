"""COSE_Sign1 (tag 18) and COSE_Sign (tag 98) with EdDSA over Ed25519 — RFC 9052 / RFC 9053, sans-IO.

Commands reach the gateway as COSE messages (DESIGN.md §6); a command that cuts customers' power
is only as trustworthy as this module. What it guarantees, and why:

* **The signature is checked over the bytes as received.** The ``Sig_structure`` (RFC 9052 §4.4)
  is built from the protected-header byte string and the payload byte string exactly as they came
  off the wire; the protected header is decoded only to *read* ``alg`` and ``kid``, never
  re-encoded. Re-encoding would verify a message the signer never saw whenever two encoders
  disagree (map order, integer width), and would let an attacker's non-canonical variant pass.
* **Decoding is a trust boundary.** Input larger than the limit, not exactly one tagged COSE
  structure, using indefinite lengths, duplicate map keys, any CBOR tag inside the structure,
  a detached payload, or a header label in both buckets raises :class:`CoseDecodeError` — and
  arbitrary bytes raise nothing else (the tests hold hypothesis to that).
* **EdDSA only, Ed25519 only.** ``alg`` must be -8 (EdDSA) *in the protected header*: an
  unprotected ``alg`` could be swapped in transit. The curve follows from the 32-byte key; an
  Ed448 signature (114 bytes) fails as a wrong-length signature. A ``crit`` header is refused,
  because no extension is understood here (RFC 9052 §3.1 requires understanding every label
  listed).
* **External AAD is empty** for commands (DESIGN.md §6); the functions still take it so that the
  cose-wg example vectors, which use none, and any later profile can be checked.

:mod:`protocols.ed25519` supplies Ed25519 (RFC 8032, deterministic; OpenSSL's, through the
libcrypto the interpreter already maps): signing the same bytes with the same key yields the same
signature, which is what lets the tests reproduce the published cose-wg vectors byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

import cbor2

from protocols import ed25519
from protocols.ed25519 import SigningKey

__all__ = [
    "ALG_EDDSA",
    "ED25519_KEY_BYTES",
    "ED25519_SIGNATURE_BYTES",
    "HEADER_ALG",
    "HEADER_CONTENT_TYPE",
    "HEADER_CRIT",
    "HEADER_KID",
    "TAG_SIGN",
    "TAG_SIGN1",
    "CoseAlgorithmError",
    "CoseDecodeError",
    "CoseEncodeError",
    "CoseError",
    "CoseMessage",
    "CoseSignature",
    "CoseSignatureError",
    "DecodeLimits",
    "HeaderLabel",
    "HeaderMap",
    "Headers",
    "Sign1Message",
    "SignMessage",
    "Signer",
    "decode",
    "decode_plain",
    "ed25519_protected",
    "sign",
    "sign1",
]

#: CBOR tags of the two signed message kinds (RFC 9052 §2, table 1).
TAG_SIGN1: Final = 18
TAG_SIGN: Final = 98

#: Common header labels (RFC 9052 §3.1).
HEADER_ALG: Final = 1
HEADER_CRIT: Final = 2
HEADER_CONTENT_TYPE: Final = 3
HEADER_KID: Final = 4

#: EdDSA (RFC 9053 §2.2); with a 32-byte key that is Ed25519.
ALG_EDDSA: Final = -8
ED25519_KEY_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64

_CONTEXT_SIGN1: Final = "Signature1"
_CONTEXT_SIGN: Final = "Signature"

# The tag heads as they appear on the wire: 0xD2 is tag 18 in one byte, 0xD8 0x62 is tag 98.
_HEAD_SIGN1: Final = b"\xd2"
_HEAD_SIGN: Final = b"\xd8\x62"

# Every tag the cbor2 extension would turn into a Python object by itself (found by probing
# cbor2 6.2 with every tag below 300 and the registered high ones). Inside a COSE structure no tag
# is legitimate, so each is mapped to a rejection; the tag hook rejects the rest.
_CBOR2_NATIVE_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100,
    256, 258, 260, 261, 1004, 43000, 55799,
)  # fmt: skip

HeaderLabel: TypeAlias = int | str
HeaderMap: TypeAlias = Mapping[HeaderLabel, object]


class CoseError(Exception):
    """Base of the errors this module raises."""


class CoseDecodeError(CoseError, ValueError):
    """Remote error: the bytes are not one well-formed COSE_Sign1/COSE_Sign within the limits."""


class CoseAlgorithmError(CoseError):
    """Remote error: the message asks for an algorithm or header this verifier does not support
    (anything but a protected EdDSA ``alg``, or any ``crit`` header)."""


class CoseSignatureError(CoseError):
    """Remote error: the signature does not verify with the given key."""


class CoseEncodeError(CoseError, ValueError):
    """Local error: the caller asked to build or check something COSE does not allow (a header
    map with a bad label, a key that is not 32 bytes)."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on what :func:`decode` will look at, so hostile input costs little.

    ``max_message_bytes`` the whole message; ``max_depth`` container nesting (message array →
    signatures → signature → header map is 4, header values get the rest); ``max_signatures`` of a
    COSE_Sign; ``max_header_entries`` per header map.
    """

    max_message_bytes: int = 64 * 1024
    max_depth: int = 8
    max_signatures: int = 4
    max_header_entries: int = 16


DEFAULT_LIMITS: Final = DecodeLimits()


@dataclass(frozen=True, slots=True)
class Headers:
    """The two header buckets of a COSE layer.

    ``protected_bytes`` the protected header byte string exactly as received (what is signed);
    ``protected`` its decoded map (read-only); ``unprotected`` the unprotected map (read-only).
    """

    protected_bytes: bytes
    protected: HeaderMap
    unprotected: HeaderMap

    @property
    def alg(self) -> int | str | None:
        """The algorithm, from the protected bucket only (an unprotected alg is not trusted)."""
        value = self.protected.get(HEADER_ALG)
        return value if isinstance(value, int | str) else None

    @property
    def kid(self) -> bytes | None:
        """The key id, protected bucket first. It only selects a key: the signature, made with
        that key, is what binds it."""
        for bucket in (self.protected, self.unprotected):
            value = bucket.get(HEADER_KID)
            if isinstance(value, bytes):
                return value
        return None

    def require_eddsa(self) -> None:
        """Raise :class:`CoseAlgorithmError` unless this layer is protected EdDSA without ``crit``."""
        if HEADER_CRIT in self.protected or HEADER_CRIT in self.unprotected:
            raise CoseAlgorithmError(
                "message has a 'crit' header listing extensions this gateway does not "
                "understand; sign without critical headers"
            )
        alg = self.alg
        if alg is None and HEADER_ALG in self.unprotected:
            raise CoseAlgorithmError(
                "algorithm is in the unprotected header, where it could be swapped in transit; "
                "put {1: -8} (EdDSA) in the protected header"
            )
        if alg is None:
            raise CoseAlgorithmError(
                "message has no algorithm header; sign with protected {1: -8} (EdDSA)"
            )
        if alg != ALG_EDDSA:
            raise CoseAlgorithmError(
                f"algorithm {alg!r} is not supported; sign with EdDSA (-8) and an Ed25519 key"
            )


@dataclass(frozen=True, slots=True)
class CoseSignature:
    """One COSE_Signature of a COSE_Sign: its own ``headers`` and the ``signature`` bytes."""

    headers: Headers
    signature: bytes


@dataclass(frozen=True, slots=True)
class Sign1Message:
    """A decoded COSE_Sign1: ``headers``, ``payload`` (bytes as received), ``signature``."""

    headers: Headers
    payload: bytes
    signature: bytes

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        """The Sig_structure bytes ``["Signature1", protected, external_aad, payload]``."""
        return _sig_structure(
            [_CONTEXT_SIGN1, self.headers.protected_bytes, external_aad, self.payload]
        )

    def verify(self, public_key: bytes, external_aad: bytes = b"") -> None:
        """Raise unless the signature verifies with the raw Ed25519 ``public_key``:
        :class:`CoseAlgorithmError` for an unsupported header, :class:`CoseSignatureError` for a
        bad signature."""
        self.headers.require_eddsa()
        _ed25519_verify(public_key, self.signature, self.to_be_signed(external_aad))


@dataclass(frozen=True, slots=True)
class SignMessage:
    """A decoded COSE_Sign: body ``headers``, ``payload`` (bytes as received) and ``signatures``
    (one per signer, in the order received)."""

    headers: Headers
    payload: bytes
    signatures: tuple[CoseSignature, ...]

    def to_be_signed(self, index: int, external_aad: bytes = b"") -> bytes:
        """The Sig_structure of signature ``index``:
        ``["Signature", body_protected, sign_protected, external_aad, payload]``."""
        signer = self.signatures[index]
        return _sig_structure(
            [
                _CONTEXT_SIGN,
                self.headers.protected_bytes,
                signer.headers.protected_bytes,
                external_aad,
                self.payload,
            ]
        )

    def verify_signature(self, index: int, public_key: bytes, external_aad: bytes = b"") -> None:
        """Raise unless signature ``index`` verifies with ``public_key`` (see Sign1Message.verify).
        The body headers must not carry ``crit`` either."""
        if HEADER_CRIT in self.headers.protected or HEADER_CRIT in self.headers.unprotected:
            raise CoseAlgorithmError(
                "message body has a 'crit' header; sign without critical headers"
            )
        signer = self.signatures[index]
        signer.headers.require_eddsa()
        _ed25519_verify(public_key, signer.signature, self.to_be_signed(index, external_aad))


CoseMessage: TypeAlias = Sign1Message | SignMessage


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _Rejected(Exception):
    """Raised from cbor2 callbacks; cbor2 wraps it, :func:`_load` reports its text."""


def _reject_tag(value: object, immutable: bool) -> object:
    raise _Rejected("a CBOR tag inside a COSE structure")


def _reject_unknown_tag(tag: cbor2.CBORTag, immutable: bool) -> object:
    raise _Rejected(f"CBOR tag {tag.tag} inside a COSE structure")


_REJECT_NATIVE: Final = {tag: _reject_tag for tag in _CBOR2_NATIVE_TAGS}


def _load(data: bytes, max_depth: int, what: str) -> object:
    """Exactly one CBOR item, definite lengths, no duplicate keys, no tags — or CoseDecodeError."""
    decoder = cbor2.CBORDecoder(
        io.BytesIO(data),
        tag_hook=_reject_unknown_tag,
        semantic_decoders=_REJECT_NATIVE,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        # COSE labels are integers, which cbor2's strict mode refuses; key types are checked
        # below instead (integers and text only).
        strict_hashable_types=False,
    )
    # cbor2 is a compiled extension parsing hostile bytes; whatever it raises means one thing to
    # our caller — these bytes are not a COSE message — hence the broad catch at this boundary.
    try:
        item = decoder.decode()
    except Exception as exc:
        raise CoseDecodeError(f"{what}: {_reason(exc)}") from exc
    try:
        decoder.decode()
    except cbor2.CBORDecodeEOF:
        return item
    except Exception:  # noqa: BLE001 - anything after the item means trailing bytes
        pass
    raise CoseDecodeError(f"{what}: trailing bytes after the CBOR item")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, _Rejected):
        return str(cause)
    return f"not well-formed CBOR ({exc or type(exc).__name__})"


def _check_value(value: object, where: str, depth: int, limits: DecodeLimits) -> None:
    """Header values are plain CBOR data; anything cbor2 might have turned into another object
    (it cannot, with every tag rejected, but this is the last line) is refused."""
    if depth > limits.max_depth:
        raise CoseDecodeError(f"{where}: nested too deep")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1, limits)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, int | str) or isinstance(key, bool):
                raise CoseDecodeError(f"{where}: map key {key!r} is neither an integer nor text")
            _check_value(item, f"{where}.{key}", depth + 1, limits)
        return
    raise CoseDecodeError(f"{where}: {type(value).__name__} is not plain CBOR data")


def _header_map(value: object, where: str, limits: DecodeLimits) -> HeaderMap:
    if not isinstance(value, Mapping):
        raise CoseDecodeError(f"{where} must be a map, got {type(value).__name__}")
    if len(value) > limits.max_header_entries:
        raise CoseDecodeError(
            f"{where} has {len(value)} entries, over the limit of {limits.max_header_entries}"
        )
    out: dict[HeaderLabel, object] = {}
    for label, item in value.items():
        if not isinstance(label, int | str) or isinstance(label, bool):
            raise CoseDecodeError(f"{where}: label {label!r} is neither an integer nor text")
        _check_value(item, f"{where}[{label!r}]", 1, limits)
        out[label] = item
    _check_known_labels(out, where)
    return MappingProxyType(out)


def _check_known_labels(header: Mapping[HeaderLabel, object], where: str) -> None:
    """Types of the common labels, so the properties of Headers never meet a surprise."""
    alg = header.get(HEADER_ALG)
    if HEADER_ALG in header and (not isinstance(alg, int | str) or isinstance(alg, bool)):
        raise CoseDecodeError(f"{where}: alg must be an integer or text, got {alg!r}")
    if HEADER_KID in header and not isinstance(header[HEADER_KID], bytes):
        raise CoseDecodeError(f"{where}: kid must be a byte string, got {header[HEADER_KID]!r}")
    if HEADER_CRIT in header:
        crit = header[HEADER_CRIT]
        if not isinstance(crit, list | tuple) or not crit:
            raise CoseDecodeError(f"{where}: crit must be a non-empty array of labels")


def _headers(protected: object, unprotected: object, where: str, limits: DecodeLimits) -> Headers:
    if not isinstance(protected, bytes):
        raise CoseDecodeError(
            f"{where} protected header must be a byte string, got {type(protected).__name__}"
        )
    if protected:
        decoded = _header_map(
            _load(protected, limits.max_depth, f"{where} protected header"),
            f"{where} protected header",
            limits,
        )
    else:
        decoded = MappingProxyType({})
    plain = _header_map(unprotected, f"{where} unprotected header", limits)
    both = set(decoded) & set(plain)
    if both:
        raise CoseDecodeError(
            f"{where}: label(s) {sorted(both, key=repr)} in both the protected and the "
            "unprotected header (RFC 9052 §3 forbids it)"
        )
    return Headers(protected_bytes=protected, protected=decoded, unprotected=plain)


def _payload(value: object) -> bytes:
    if value is None:
        raise CoseDecodeError("detached payload (nil) is not supported: carry the payload inline")
    if not isinstance(value, bytes):
        raise CoseDecodeError(f"payload must be a byte string, got {type(value).__name__}")
    return value


def decode(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> CoseMessage:
    """Decode a tagged COSE_Sign1 (18) or COSE_Sign (98) without verifying it.

    Raises :class:`CoseDecodeError`, and only that, for anything else — see the module docstring
    for what is refused. Untagged messages are refused: the command contract says tagged, and the
    tag is what tells the two structures apart.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CoseDecodeError(f"message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise CoseDecodeError("message is empty")
    if len(data) > limits.max_message_bytes:
        raise CoseDecodeError(
            f"message is {len(data)} bytes, over the {limits.max_message_bytes}-byte limit"
        )
    if data.startswith(_HEAD_SIGN1):
        kind, body = TAG_SIGN1, data[len(_HEAD_SIGN1) :]
    elif data.startswith(_HEAD_SIGN):
        kind, body = TAG_SIGN, data[len(_HEAD_SIGN) :]
    else:
        raise CoseDecodeError(
            f"message starts with {data[:2].hex()}: expected CBOR tag 18 (d2, COSE_Sign1) or "
            "98 (d862, COSE_Sign)"
        )
    name = "COSE_Sign1" if kind == TAG_SIGN1 else "COSE_Sign"
    item = _load(body, limits.max_depth, name)
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise CoseDecodeError(f"{name} must be an array of 4 elements")
    protected, unprotected, payload, last = item
    headers = _headers(protected, unprotected, name, limits)
    content = _payload(payload)
    if kind == TAG_SIGN1:
        if not isinstance(last, bytes):
            raise CoseDecodeError(
                f"COSE_Sign1 signature must be a byte string, got {type(last).__name__}"
            )
        return Sign1Message(headers=headers, payload=content, signature=last)
    if not isinstance(last, list | tuple) or not last:
        raise CoseDecodeError("COSE_Sign signatures must be a non-empty array")
    if len(last) > limits.max_signatures:
        raise CoseDecodeError(
            f"COSE_Sign has {len(last)} signatures, over the limit of {limits.max_signatures}"
        )
    signatures = []
    for i, entry in enumerate(last):
        where = f"COSE_Signature {i}"
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise CoseDecodeError(f"{where} must be an array of 3 elements")
        sig_protected, sig_unprotected, signature = entry
        sig_headers = _headers(sig_protected, sig_unprotected, where, limits)
        if not isinstance(signature, bytes):
            raise CoseDecodeError(f"{where} signature must be a byte string")
        signatures.append(CoseSignature(headers=sig_headers, signature=signature))
    return SignMessage(headers=headers, payload=content, signatures=tuple(signatures))


def decode_plain(data: bytes, *, max_bytes: int, max_depth: int, what: str = "payload") -> object:
    """One CBOR item of plain data — the strictness of :func:`decode`, for a signed payload.

    No tags, definite lengths only, no duplicate map keys, map keys integers or text, at most
    ``max_bytes`` and ``max_depth``; anything else raises :class:`CoseDecodeError` naming ``what``.
    Maps come back as read-only mappings, arrays as tuples.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CoseDecodeError(f"{what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise CoseDecodeError(f"{what} is empty")
    if len(data) > max_bytes:
        raise CoseDecodeError(f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit")
    item = _load(data, max_depth, what)
    _check_value(item, what, 0, DecodeLimits(max_depth=max_depth))
    return _freeze(item)


def _freeze(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    return value


# --------------------------------------------------------------------------------------------
# Signing and verifying
# --------------------------------------------------------------------------------------------


def _sig_structure(parts: list[object]) -> bytes:
    # cbor2 writes definite lengths in their shortest form, which is the encoding RFC 9052 §4.4
    # requires for the Sig_structure; the byte strings inside are the received ones, untouched.
    return cbor2.dumps(parts)


def _ed25519_verify(public_key: bytes, signature: bytes, to_be_signed: bytes) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != ED25519_KEY_BYTES:
        raise CoseEncodeError(f"an Ed25519 public key is {ED25519_KEY_BYTES} raw bytes")
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise CoseSignatureError(
            f"signature is {len(signature)} bytes; an Ed25519 signature is "
            f"{ED25519_SIGNATURE_BYTES} (Ed448 is not supported)"
        )
    if not ed25519.verify(public_key, signature, to_be_signed):
        raise CoseSignatureError("signature does not verify with the key")


def ed25519_protected(kid: bytes | None = None) -> dict[HeaderLabel, object]:
    """The protected header the command contract uses: ``{1: -8, 4: kid}`` (kid omitted if None)."""
    header: dict[HeaderLabel, object] = {HEADER_ALG: ALG_EDDSA}
    if kid is not None:
        header[HEADER_KID] = kid
    return header


def _encode_header(header: Mapping[HeaderLabel, object], what: str) -> dict[HeaderLabel, object]:
    out: dict[HeaderLabel, object] = {}
    for label, value in header.items():
        if not isinstance(label, int | str) or isinstance(label, bool):
            raise CoseEncodeError(f"{what}: label {label!r} must be an integer or text")
        out[label] = value
    try:
        _check_known_labels(out, what)
    except CoseDecodeError as exc:
        raise CoseEncodeError(str(exc)) from None
    return out


def _protected_bytes(header: Mapping[HeaderLabel, object], what: str) -> bytes:
    # An empty protected header is the empty byte string, not an encoded empty map (RFC 9052 §3).
    return cbor2.dumps(_encode_header(header, what)) if header else b""


def _signing_key(key: SigningKey | bytes) -> SigningKey:
    if isinstance(key, SigningKey):
        return key
    if isinstance(key, bytes) and len(key) == ED25519_KEY_BYTES:
        return SigningKey(key)
    raise CoseEncodeError(
        f"signing key must be an ed25519.SigningKey or {ED25519_KEY_BYTES} raw private bytes"
    )


def _check_disjoint(
    protected: Mapping[HeaderLabel, object], unprotected: Mapping[HeaderLabel, object], what: str
) -> None:
    both = set(protected) & set(unprotected)
    if both:
        raise CoseEncodeError(f"{what}: label(s) {sorted(both, key=repr)} in both header buckets")


def sign1(
    payload: bytes,
    key: SigningKey | bytes,
    *,
    protected: Mapping[HeaderLabel, object],
    unprotected: Mapping[HeaderLabel, object] | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """A tagged COSE_Sign1 of ``payload`` signed with ``key`` (Ed25519).

    ``protected`` must name EdDSA (use :func:`ed25519_protected`); it is encoded once, and those
    exact bytes are both signed and sent.
    """
    if not isinstance(payload, bytes):
        raise CoseEncodeError("payload must be bytes")
    plain = _encode_header(unprotected or {}, "unprotected header")
    _check_disjoint(protected, plain, "COSE_Sign1")
    if protected.get(HEADER_ALG) != ALG_EDDSA:
        raise CoseEncodeError("protected header must contain alg EdDSA: {1: -8}")
    prot = _protected_bytes(protected, "protected header")
    tbs = _sig_structure([_CONTEXT_SIGN1, prot, external_aad, payload])
    signature = _signing_key(key).sign(tbs)
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [prot, plain, payload, signature]))


@dataclass(frozen=True, slots=True)
class Signer:
    """One signer of a COSE_Sign: ``key`` and the headers of its COSE_Signature (``protected``
    defaults to ``{1: -8, 4: kid}`` built from ``kid``)."""

    key: SigningKey | bytes
    kid: bytes | None = None
    protected: Mapping[HeaderLabel, object] | None = None
    unprotected: Mapping[HeaderLabel, object] = field(default_factory=dict)


def sign(
    payload: bytes,
    signers: Sequence[Signer],
    *,
    protected: Mapping[HeaderLabel, object] | None = None,
    unprotected: Mapping[HeaderLabel, object] | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """A tagged COSE_Sign of ``payload`` with one signature per signer, in order."""
    if not isinstance(payload, bytes):
        raise CoseEncodeError("payload must be bytes")
    if not signers:
        raise CoseEncodeError("COSE_Sign needs at least one signer")
    body_plain = _encode_header(unprotected or {}, "body unprotected header")
    _check_disjoint(protected or {}, body_plain, "COSE_Sign body")
    body_prot = _protected_bytes(protected or {}, "body protected header")
    signatures: list[list[object]] = []
    for i, signer in enumerate(signers):
        header = signer.protected if signer.protected is not None else ed25519_protected(signer.kid)
        if header.get(HEADER_ALG) != ALG_EDDSA:
            raise CoseEncodeError(f"signer {i}: protected header must contain alg EdDSA {{1: -8}}")
        plain = _encode_header(signer.unprotected, f"signer {i} unprotected header")
        _check_disjoint(header, plain, f"signer {i}")
        prot = _protected_bytes(header, f"signer {i} protected header")
        tbs = _sig_structure([_CONTEXT_SIGN, body_prot, prot, external_aad, payload])
        signatures.append([prot, plain, _signing_key(signer.key).sign(tbs)])
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN, [body_prot, body_plain, payload, signatures]))
