"""Signed update bundles: a SUIT-like manifest signed COSE_Sign1 by an ENGINEER key, sans-IO.

A bundle carries a gateway configuration and/or meter profiles (and optionally a software wheel,
recorded for the installer, never applied by the daemon) to one or more named gateways. It is
built on a laptop by ``gwtool bundle build|sign`` and applied by the daemon (docs/bundles.md).
The shape follows SUIT (RFC 9019, draft-ietf-suit-manifest) in what matters here, without its
full command language:

* **The manifest is what is signed**, not the payloads: it lists each payload's name, kind, size
  and SHA-256, so one signature over a few hundred bytes vouches for megabytes, and a payload
  swapped in transit fails its digest.
* **A sequence number for anti-rollback**: the gateway remembers the last one it accepted and
  refuses any bundle whose ``seq`` is not above it, so an old (validly signed) bundle cannot
  bring back an old configuration.
* **Audience**: ``gateways`` lists the ids the bundle is for; any other gateway refuses it.

Wire format (deterministic CBOR, text keys so that ``cbor2``/``cbor.me`` output is readable)::

    bundle   = {"v": 1, "manifest": bstr, "payloads": {name: bstr}, ? "auth": bstr}
    manifest = {"v": 1, "seq": uint, "gateways": [+ id], "created_ms": uint,
                "payloads": [+ {"name": tstr, "kind": "config"/"profile"/"wheel",
                                "size": uint, "sha256": bstr .size 32}]}
    auth     = COSE_Sign1 (tag 18, EdDSA/Ed25519, protected {1: -8, 4: kid}),
               its payload the manifest bytes exactly

Decoding is a trust boundary, as for commands: arbitrary bytes raise :class:`BundleError` and
nothing else (the tests hold hypothesis to that), and every refusal carries a ``code`` and a
one-line ``reason`` that names what to fix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

import cbor2

from protocols import cose
from protocols.ed25519 import SigningKey

__all__ = [
    "BUNDLE_VERSION",
    "MAX_BUNDLE_BYTES",
    "BundleError",
    "Manifest",
    "PayloadEntry",
    "PayloadKind",
    "RefusalCode",
    "SignedBundle",
    "build_bundle",
    "decode_bundle",
    "sign_bundle",
    "verify_bundle",
]

PayloadKind = Literal["config", "profile", "wheel"]
PAYLOAD_KINDS: Final[tuple[PayloadKind, ...]] = get_args(PayloadKind)
RefusalCode = Literal[
    "malformed", "unsigned", "unknown_key", "bad_signature", "wrong_gateway", "stale_seq",
    "digest_mismatch",
]
BUNDLE_VERSION: Final = 1
#: A bundle is read whole into memory: a config and profiles are kilobytes, a wheel of this
#: project about 1 MB; 64 MiB leaves room for a wheel with its own dependencies.
MAX_BUNDLE_BYTES: Final = 64 * 1024 * 1024
MAX_MANIFEST_BYTES: Final = 64 * 1024
MAX_PAYLOADS: Final = 256
MAX_GATEWAYS: Final = 10_000
_MAX_UINT63: Final = 2**63 - 1  # the seq is kept in SQLite's INTEGER
_SHA256_BYTES: Final = 32
_GATEWAY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Names a payload may have, by kind. A profile's name is the file the daemon writes into
#: ``profiles/`` beside its config, so it must be a profile name (gateway/config/profiles.py)
#: and can never hold a path separator.
_NAMES: Final[Mapping[str, re.Pattern[str]]] = {
    "config": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.toml"),
    "profile": re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\.toml"),
    "wheel": re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\.whl"),
}
_BUNDLE_KEYS: Final = frozenset({"v", "manifest", "payloads", "auth"})
_MANIFEST_KEYS: Final = frozenset({"v", "seq", "gateways", "created_ms", "payloads"})
_ENTRY_KEYS: Final = frozenset({"name", "kind", "size", "sha256"})


class BundleError(ValueError):
    """The bundle is refused: ``code`` (one of :data:`RefusalCode`) and a one-line reason."""

    def __init__(self, code: RefusalCode, reason: str) -> None:
        super().__init__(reason)
        self.code: RefusalCode = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PayloadEntry:
    """One payload as the manifest lists it."""

    name: str
    kind: PayloadKind
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the signature covers: ``seq`` (anti-rollback), the ``gateways`` it is for, when it
    was made (``created_ms``, information only: a gateway's clock may be wrong) and the
    ``payloads`` it carries, in order."""

    seq: int
    gateways: tuple[str, ...]
    created_ms: int
    payloads: tuple[PayloadEntry, ...]

    def to_cbor(self) -> bytes:
        return cbor2.dumps({
            "v": BUNDLE_VERSION, "seq": self.seq, "gateways": list(self.gateways),
            "created_ms": self.created_ms,
            "payloads": [{"name": p.name, "kind": p.kind, "size": p.size, "sha256": p.sha256}
                         for p in self.payloads],
        }, canonical=True)

    def entry(self, kind: PayloadKind) -> tuple[PayloadEntry, ...]:
        return tuple(p for p in self.payloads if p.kind == kind)


@dataclass(frozen=True, slots=True)
class SignedBundle:
    """A decoded bundle: the ``manifest`` (as bytes, ``manifest_bytes``, and parsed), the
    ``payloads`` by name, and the COSE_Sign1 ``auth`` (None: not signed yet)."""

    manifest: Manifest
    manifest_bytes: bytes
    payloads: Mapping[str, bytes]
    auth: bytes | None

    def to_cbor(self) -> bytes:
        body: dict[str, object] = {"v": BUNDLE_VERSION, "manifest": self.manifest_bytes,
                                   "payloads": dict(self.payloads)}
        if self.auth is not None:
            body["auth"] = self.auth
        return cbor2.dumps(body, canonical=True)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the manifest: the bundle's identity in the audit journal."""
        return hashlib.sha256(self.manifest_bytes).digest()


# --------------------------------------------------------------------------------------------
# Building and signing (gwtool)
# --------------------------------------------------------------------------------------------


def build_bundle(seq: int, gateways: Sequence[str], created_ms: int,
                 payloads: Sequence[tuple[str, PayloadKind, bytes]]) -> SignedBundle:
    """An unsigned bundle of ``payloads`` ``(name, kind, bytes)``. BundleError (``malformed``)
    for anything :func:`decode_bundle` would refuse, so a built bundle always decodes."""
    manifest = Manifest(
        seq=seq, gateways=tuple(gateways), created_ms=created_ms,
        payloads=tuple(PayloadEntry(name, kind, len(data), hashlib.sha256(data).digest())
                       for name, kind, data in payloads))
    raw = manifest.to_cbor()
    _check_manifest(_parse_manifest(raw))
    bundle = SignedBundle(manifest, raw, {name: data for name, _, data in payloads}, None)
    _check_payload_set(bundle)
    return bundle


def sign_bundle(bundle: SignedBundle, key: SigningKey, kid: str) -> SignedBundle:
    """``bundle`` with its manifest signed by ``key`` (COSE_Sign1, protected ``{1: -8, 4: kid}``);
    a previous signature is replaced."""
    auth = cose.sign1(bundle.manifest_bytes, key,
                      protected=cose.ed25519_protected(kid.encode("utf-8")))
    return SignedBundle(bundle.manifest, bundle.manifest_bytes, bundle.payloads, auth)


# --------------------------------------------------------------------------------------------
# Decoding and verifying (gateway, gwtool verify)
# --------------------------------------------------------------------------------------------


def decode_bundle(data: bytes) -> SignedBundle:
    """Parse a bundle file without checking its signature or digests; BundleError
    (``malformed``) for anything that is not one."""
    try:
        item = cose.decode_plain(data, max_bytes=MAX_BUNDLE_BYTES, max_depth=4, what="bundle")
    except cose.CoseDecodeError as exc:
        raise BundleError("malformed", str(exc)) from None
    body = _map(item, "bundle", _BUNDLE_KEYS, required=_BUNDLE_KEYS - {"auth"})
    _version(body, "bundle")
    raw = body["manifest"]
    if not isinstance(raw, bytes):
        raise BundleError("malformed", "bundle.manifest must be a byte string")
    manifest = _parse_manifest(raw)
    _check_manifest(manifest)
    payloads = body["payloads"]
    if not isinstance(payloads, Mapping) or not all(
            isinstance(k, str) and isinstance(v, bytes) for k, v in payloads.items()):
        raise BundleError("malformed", "bundle.payloads must map names to byte strings")
    auth = body.get("auth")
    if auth is not None and not isinstance(auth, bytes):
        raise BundleError("malformed", "bundle.auth must be a byte string (a COSE_Sign1)")
    bundle = SignedBundle(manifest, raw, dict(payloads), auth)
    _check_payload_set(bundle)
    return bundle


def verify_bundle(data: bytes, *, keys: Mapping[str, bytes], gateway_id: str | None,
                  last_seq: int | None) -> tuple[SignedBundle, str]:
    """The bundle in ``data`` and the kid that signed it, or BundleError saying why not.

    ``keys``: the ENGINEER keys the verifier trusts, kid → 32 raw public bytes (choosing them by
    role is the caller's job). ``gateway_id``: refuse unless the manifest names it (None: any
    gateway, for ``gwtool bundle verify`` on a laptop). ``last_seq``: refuse unless ``seq`` is
    above it (None: nothing applied yet). Checked in the order a forger is cheapest to stop:
    signature, then audience and sequence, then the payload digests.
    """
    bundle = decode_bundle(data)
    if bundle.auth is None:
        raise BundleError("unsigned", "bundle is not signed; sign it with `gwtool bundle sign "
                                      "--key ENGINEER.key --kid KID`")
    try:
        message = cose.decode(bundle.auth, cose.DecodeLimits(max_message_bytes=MAX_MANIFEST_BYTES
                                                             + 1024))
    except cose.CoseDecodeError as exc:
        raise BundleError("malformed", f"bundle signature: {exc}") from None
    if not isinstance(message, cose.Sign1Message):
        raise BundleError("malformed", "bundle signature must be a COSE_Sign1 (one signer)")
    if message.payload != bundle.manifest_bytes:
        raise BundleError("bad_signature", "the signature covers another manifest than the "
                                           "bundle carries")
    kid_bytes = message.headers.kid
    kid = kid_bytes.decode("utf-8", "replace") if kid_bytes is not None else None
    public = keys.get(kid) if kid is not None else None
    if kid is None or public is None:
        raise BundleError("unknown_key", f"signed by key {kid!r}, which is not an ENGINEER key "
                                         "of this gateway's [[operators]]")
    try:
        message.verify(public)
    except (cose.CoseSignatureError, cose.CoseAlgorithmError, cose.CoseEncodeError) as exc:
        raise BundleError("bad_signature", f"signature of key {kid!r}: {exc}") from None
    manifest = bundle.manifest
    if gateway_id is not None and gateway_id not in manifest.gateways:
        shown = ", ".join(manifest.gateways[:3]) + (" ..." if len(manifest.gateways) > 3 else "")
        raise BundleError("wrong_gateway", f"bundle is for {shown}, not {gateway_id}")
    if last_seq is not None and manifest.seq <= last_seq:
        raise BundleError("stale_seq", f"bundle seq {manifest.seq} is not above the last "
                                       f"applied seq {last_seq} (anti-rollback); build a new "
                                       "bundle with a higher --seq")
    for entry in manifest.payloads:
        payload = bundle.payloads[entry.name]
        if len(payload) != entry.size or hashlib.sha256(payload).digest() != entry.sha256:
            raise BundleError("digest_mismatch", f"payload {entry.name!r} does not match the "
                                                 "SHA-256 the manifest signs")
    return bundle, kid


# --------------------------------------------------------------------------------------------
# Field checks
# --------------------------------------------------------------------------------------------


def _map(item: object, where: str, allowed: frozenset[str],
         required: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(item, Mapping):
        raise BundleError("malformed", f"{where} must be a map")
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise BundleError("malformed", f"{where} has unknown key(s) {unknown}")
    missing = sorted(required - set(item))
    if missing:
        raise BundleError("malformed", f"{where} lacks key(s) {missing}")
    return item


def _version(body: Mapping[str, object], where: str) -> None:
    if body["v"] != BUNDLE_VERSION or isinstance(body["v"], bool):
        raise BundleError("malformed", f"{where}.v is {body['v']!r}; this gateway reads "
                                       f"version {BUNDLE_VERSION}")


def _uint(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_UINT63:
        raise BundleError("malformed", f"{where} must be an integer from 0 to 2^63-1")
    return value


def _parse_manifest(raw: bytes) -> Manifest:
    try:
        item = cose.decode_plain(raw, max_bytes=MAX_MANIFEST_BYTES, max_depth=4, what="manifest")
    except cose.CoseDecodeError as exc:
        raise BundleError("malformed", str(exc)) from None
    body = _map(item, "manifest", _MANIFEST_KEYS, _MANIFEST_KEYS)
    _version(body, "manifest")
    gateways = body["gateways"]
    if not isinstance(gateways, tuple) or not all(isinstance(g, str) for g in gateways):
        raise BundleError("malformed", "manifest.gateways must be a list of gateway ids")
    entries = body["payloads"]
    if not isinstance(entries, tuple):
        raise BundleError("malformed", "manifest.payloads must be a list")
    parsed = []
    for i, raw_entry in enumerate(entries):
        where = f"manifest.payloads[{i}]"
        entry = _map(raw_entry, where, _ENTRY_KEYS, _ENTRY_KEYS)
        name, kind, digest = entry["name"], entry["kind"], entry["sha256"]
        if not isinstance(name, str) or not isinstance(kind, str) or kind not in PAYLOAD_KINDS:
            raise BundleError("malformed", f"{where}: name must be text and kind one of "
                                           f"{list(PAYLOAD_KINDS)}")
        if not isinstance(digest, bytes) or len(digest) != _SHA256_BYTES:
            raise BundleError("malformed", f"{where}.sha256 must be 32 bytes")
        parsed.append(PayloadEntry(name, kind, _uint(entry["size"], f"{where}.size"),
                                   digest))
    return Manifest(seq=_uint(body["seq"], "manifest.seq"), gateways=gateways,
                    created_ms=_uint(body["created_ms"], "manifest.created_ms"),
                    payloads=tuple(parsed))


def _check_manifest(manifest: Manifest) -> None:
    if manifest.seq < 1:
        raise BundleError("malformed", "manifest.seq must be 1 or more")
    if not 1 <= len(manifest.gateways) <= MAX_GATEWAYS:
        raise BundleError("malformed", f"manifest.gateways must name 1 to {MAX_GATEWAYS} "
                                       "gateways")
    for gid in manifest.gateways:
        if not _GATEWAY_ID.fullmatch(gid):
            raise BundleError("malformed", f"manifest.gateways: {gid!r} is not a gateway id")
    if not 1 <= len(manifest.payloads) <= MAX_PAYLOADS:
        raise BundleError("malformed", f"a bundle carries 1 to {MAX_PAYLOADS} payloads")
    names = [p.name for p in manifest.payloads]
    if len(set(names)) != len(names):
        raise BundleError("malformed", "manifest.payloads names a file twice")
    for p in manifest.payloads:
        if not _NAMES[p.kind].fullmatch(p.name):
            raise BundleError("malformed", f"payload name {p.name!r} is not a valid {p.kind} "
                                           "file name (no directories)")
    single: tuple[PayloadKind, ...] = ("config", "wheel")
    for kind in single:
        if len(manifest.entry(kind)) > 1:
            raise BundleError("malformed", f"a bundle carries at most one {kind}")


def _check_payload_set(bundle: SignedBundle) -> None:
    listed = {p.name for p in bundle.manifest.payloads}
    if set(bundle.payloads) != listed:
        extra = sorted(set(bundle.payloads) - listed)
        missing = sorted(listed - set(bundle.payloads))
        raise BundleError("malformed", f"payloads do not match the manifest (missing {missing}, "
                                       f"not listed {extra})")

