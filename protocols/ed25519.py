"""Ed25519 (RFC 8032) on the libcrypto the interpreter has already mapped, sans-IO.

Why not the ``cryptography`` package: its Rust extension links its own copy of OpenSSL, which
costs the daemon 7-9 MB of RSS (docs/performance.md, issue 18) for the little the project needs —
sign, verify, generate, and keys in PKCS#8 / SubjectPublicKeyInfo PEM. CPython's ``_hashlib`` and
``_ssl`` link the system libcrypto, so calling its EVP interface through ctypes maps nothing new.
OpenSSL does the arithmetic; this module passes bytes, checks every return code and frees what
it allocates. The tests hold it to the RFC 8032 vectors and to ``cryptography`` byte for byte.

Key files are the fixed DER forms RFC 8410 gives Ed25519, read here by a small DER reader rather
than OpenSSL's PEM decoder: the forms are tiny, and reading them in Python lets every refusal be
a one-line :class:`ValueError` that says what the file holds instead (an RSA key, an encrypted
key), which an operator can act on. ``cryptography`` stays a test oracle and the X.509 library of
``gwtool``'s PKI commands; nothing here imports it.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import functools
import os
import re
import weakref
from typing import Final

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "BackendError",
    "KeyKindError",
    "SigningKey",
    "load_pkcs8_pem",
    "load_spki_pem",
    "verify",
]

SEED_BYTES: Final = 32
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64

#: NID_ED25519 in OpenSSL's objects.h (stable since 1.1.1, which added raw Ed25519 keys).
_EVP_PKEY_ED25519: Final = 1087

_OID_ED25519: Final = bytes.fromhex("2b6570")  # 1.3.101.112 (RFC 8410)
#: What other PKCS#8 / SPKI algorithm identifiers are, so a refusal can name them.
_OTHER_ALGORITHMS: Final = {
    bytes.fromhex("2a864886f70d010101"): "an RSA key",
    bytes.fromhex("2a8648ce3d0201"): "an EC key",
    bytes.fromhex("2a8648ce380401"): "a DSA key",
    bytes.fromhex("2b656f"): "an X448 key",
    bytes.fromhex("2b656e"): "an X25519 key",
    bytes.fromhex("2b6571"): "an Ed448 key",
}
#: The DER every writer (OpenSSL, cryptography, this module) emits for a v1 PKCS#8 Ed25519 key,
#: followed by the 32-byte seed.
_PKCS8_V1_PREFIX: Final = bytes.fromhex("302e020100300506032b657004220420")

_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


class BackendError(RuntimeError):
    """Local error: no usable libcrypto (none mapped or found, or one older than OpenSSL 1.1.1),
    or OpenSSL failed where it cannot fail on valid input (out of memory)."""


class KeyKindError(ValueError):
    """The PEM holds another kind of key (RSA, EC, a public key where a private one is asked
    for...) or a certificate: the file is fine, it is the wrong file."""


# --------------------------------------------------------------------------------------------
# The libcrypto binding
# --------------------------------------------------------------------------------------------


def _mapped_libcrypto() -> str | None:
    """The path of the libcrypto this process has mapped, from /proc/self/maps (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith("libcrypto.so"):
                    return path
    except OSError:
        return None
    return None


@functools.cache
def _lib() -> ctypes.CDLL:
    """The interpreter's own libcrypto with the prototypes of every function used here.

    ``_hashlib`` is imported first so that the library is mapped; dlopen of a mapped library
    returns the existing mapping, so this costs no memory. Only where /proc cannot say which
    library that is does ctypes.util search for one (it may then be a second copy).
    """
    try:
        import _hashlib  # noqa: F401  (maps libcrypto; the module itself is not used)
    except ImportError:
        pass
    path = _mapped_libcrypto()
    if path is None:
        # Imported here only: ctypes.util pulls in subprocess and tempfile (1.6 MB of RSS).
        from ctypes.util import find_library

        path = find_library("crypto")
    if path is None:
        raise BackendError("no libcrypto found: Ed25519 needs OpenSSL 1.1.1 or later")
    try:
        lib = ctypes.CDLL(path)
        _declare(lib)
    except (OSError, AttributeError) as exc:
        raise BackendError(f"{path} cannot serve Ed25519 (needs OpenSSL 1.1.1+): {exc}") from None
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    # Pointers are c_void_p both ways so that ctypes never truncates them to a C int.
    ptr, size, size_p = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)
    buf, cint = ctypes.c_char_p, ctypes.c_int
    prototypes: dict[str, tuple[list[type], type | None]] = {
        "EVP_PKEY_new_raw_private_key": ([cint, ptr, buf, size], ptr),
        "EVP_PKEY_new_raw_public_key": ([cint, ptr, buf, size], ptr),
        "EVP_PKEY_get_raw_public_key": ([ptr, buf, size_p], cint),
        "EVP_PKEY_get_raw_private_key": ([ptr, buf, size_p], cint),
        "EVP_PKEY_free": ([ptr], None),
        "EVP_MD_CTX_new": ([], ptr),
        "EVP_MD_CTX_free": ([ptr], None),
        "EVP_DigestSignInit": ([ptr, ptr, ptr, ptr, ptr], cint),
        "EVP_DigestSign": ([ptr, buf, size_p, buf, size], cint),
        "EVP_DigestVerifyInit": ([ptr, ptr, ptr, ptr, ptr], cint),
        "EVP_DigestVerify": ([ptr, buf, size, buf, size], cint),
        "ERR_clear_error": ([], None),
    }
    for name, (argtypes, restype) in prototypes.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype


def _failed(what: str) -> BackendError:
    """A BackendError for ``what``, with OpenSSL's error queue emptied so that the next caller
    (ours or ``_ssl``'s, which shares the queue) does not pick up a stale error."""
    _lib().ERR_clear_error()
    return BackendError(f"OpenSSL failed to {what}")


def _new_pkey(raw: bytes, *, private: bool) -> int:
    lib = _lib()
    make = lib.EVP_PKEY_new_raw_private_key if private else lib.EVP_PKEY_new_raw_public_key
    pkey: int | None = make(_EVP_PKEY_ED25519, None, raw, len(raw))
    if not pkey:
        raise _failed("make an Ed25519 key")
    return pkey


def _raw(pkey: int, *, private: bool) -> bytes:
    lib = _lib()
    get = lib.EVP_PKEY_get_raw_private_key if private else lib.EVP_PKEY_get_raw_public_key
    expected = SEED_BYTES if private else PUBLIC_KEY_BYTES
    out = ctypes.create_string_buffer(expected)
    length = ctypes.c_size_t(expected)
    if get(pkey, out, ctypes.byref(length)) != 1 or length.value != expected:
        raise _failed("export an Ed25519 key")
    return out.raw


class SigningKey:
    """An Ed25519 private key, held as one OpenSSL EVP_PKEY from construction until it is
    garbage (so signing does not parse the key again); its public half is computed once.

    Signing is deterministic (RFC 8032): the same key and bytes always give the same signature,
    which is what makes re-sent results byte-identical.
    """

    __slots__ = ("__weakref__", "_pkey", "_public")

    def __init__(self, seed: bytes) -> None:
        """The key whose 32-byte private seed (RFC 8032 §5.1.5) is ``seed``."""
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 private key is {SEED_BYTES} raw bytes")
        self._pkey = _new_pkey(seed, private=True)
        # Freed with the object; not at interpreter exit, when the process gives memory back
        # anyway and calling into the library during teardown would gain nothing.
        weakref.finalize(self, _lib().EVP_PKEY_free, self._pkey).atexit = False
        self._public = _raw(self._pkey, private=False)

    @classmethod
    def generate(cls) -> SigningKey:
        """A new key from the operating system's random source."""
        return cls(os.urandom(SEED_BYTES))

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.hex()})"

    def public_bytes(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self._public

    def private_bytes(self) -> bytes:
        """The 32-byte seed; handle it as the secret it is."""
        return _raw(self._pkey, private=True)

    def to_pkcs8_pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM (RFC 8410 §7), byte for byte what OpenSSL and
        ``cryptography`` write, so files from either load in the other."""
        der = base64.b64encode(_PKCS8_V1_PREFIX + self.private_bytes())
        return b"-----BEGIN PRIVATE KEY-----\n" + der + b"\n-----END PRIVATE KEY-----\n"

    def sign(self, data: bytes) -> bytes:
        """The 64-byte signature of ``data``."""
        lib = _lib()
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise _failed("allocate a signing context")
        try:
            if lib.EVP_DigestSignInit(ctx, None, None, None, self._pkey) != 1:
                raise _failed("start an Ed25519 signature")
            out = ctypes.create_string_buffer(SIGNATURE_BYTES)
            length = ctypes.c_size_t(len(out))
            if lib.EVP_DigestSign(ctx, out, ctypes.byref(length), data, len(data)) != 1:
                raise _failed("sign")
            if length.value != SIGNATURE_BYTES:
                raise BackendError(f"OpenSSL returned a {length.value}-byte Ed25519 signature")
            return out.raw
        finally:
            lib.EVP_MD_CTX_free(ctx)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key`` (32 raw
    bytes; anything else is a ValueError, being the caller's mistake rather than the signer's).

    A signature of the wrong length, a non-canonical S (RFC 8032 §5.1.7: S >= L) or a public
    key that is not a curve point is False, as OpenSSL decides it.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} raw bytes")
    if len(signature) != SIGNATURE_BYTES:
        return False
    lib = _lib()
    pkey = _new_pkey(public_key, private=False)
    try:
        ctx = lib.EVP_MD_CTX_new()
        if not ctx:
            raise _failed("allocate a verification context")
        try:
            if lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
                raise _failed("start an Ed25519 verification")
            ok = bool(lib.EVP_DigestVerify(ctx, signature, len(signature), data, len(data)) == 1)
            if not ok:
                # A bad signature leaves an entry in the shared error queue; drop it.
                lib.ERR_clear_error()
            return ok
        finally:
            lib.EVP_MD_CTX_free(ctx)
    finally:
        lib.EVP_PKEY_free(pkey)


# --------------------------------------------------------------------------------------------
# PEM and the DER forms of RFC 8410
# --------------------------------------------------------------------------------------------


def _der(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) elements that exactly fill ``data``: one-byte tags, definite lengths
    in their shortest form (DER), nothing left over. ValueError otherwise."""
    items: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError("DER ends inside an element header")
        tag, first = data[at], data[at + 1]
        at += 2
        if tag & 0x1F == 0x1F:
            raise ValueError("DER uses a multi-byte tag, which no Ed25519 key has")
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            raw = data[at:at + count]
            if count == 0 or count > 2 or len(raw) != count or raw[0] == 0:
                raise ValueError("DER element length is not in its definite shortest form")
            length = int.from_bytes(raw, "big")
            if length < 0x80:
                raise ValueError("DER element length is not in its definite shortest form")
            at += count
        if at + length > len(data):
            raise ValueError("DER element runs past the end of the key")
        items.append((tag, data[at:at + length]))
        at += length
    return items


def _one(data: bytes, tag: int, what: str) -> bytes:
    items = _der(data)
    if len(items) != 1 or items[0][0] != tag:
        raise ValueError(f"{what} is not a single DER element of tag 0x{tag:02x}")
    return items[0][1]


def _algorithm(identifier: bytes) -> None:
    """Raise unless the AlgorithmIdentifier content names Ed25519 without parameters."""
    items = _der(identifier)
    if not items or items[0][0] != 0x06:
        raise ValueError("the key's algorithm identifier has no OID")
    oid = items[0][1]
    if oid != _OID_ED25519:
        kind = _OTHER_ALGORITHMS.get(oid, f"a key of algorithm OID {oid.hex()}")
        raise KeyKindError(f"holds {kind}, not an Ed25519 key")
    if len(items) != 1:
        raise ValueError("the Ed25519 algorithm identifier has parameters (RFC 8410 forbids them)")


def _pem_body(pem: bytes, label: bytes, others: dict[bytes, str]) -> bytes:
    """The DER inside the first PEM block of ``pem`` labelled ``label``; a block with one of
    the ``others`` labels is refused as the wrong kind of key, an encrypted one as encrypted."""
    if not isinstance(pem, bytes):
        raise ValueError("PEM must be bytes")
    for match in _PEM_BLOCK.finditer(pem):
        found, body = match.group(1), match.group(2)
        if found == b"ENCRYPTED PRIVATE KEY":
            raise ValueError("the private key is encrypted; give an unencrypted one")
        if found in others:
            raise KeyKindError(others[found])
        if found != label:
            continue
        if b":" in body:
            raise ValueError("the PEM block has headers (an encrypted key?); give an unencrypted key")
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"the PEM block is not valid base64 ({exc})") from None
    raise ValueError(f"no '-----BEGIN {label.decode()}-----' block")


_PRIVATE_OTHERS: Final = {
    b"RSA PRIVATE KEY": "holds an RSA key, not an Ed25519 key",
    b"EC PRIVATE KEY": "holds an EC key, not an Ed25519 key",
    b"DSA PRIVATE KEY": "holds a DSA key, not an Ed25519 key",
    b"OPENSSH PRIVATE KEY": "holds an OpenSSH-format key; convert it to PKCS#8 PEM",
    b"PUBLIC KEY": "holds a public key, not a private key",
}
_PUBLIC_OTHERS: Final = {
    b"RSA PUBLIC KEY": "holds an RSA key, not an Ed25519 key",
    b"PRIVATE KEY": "holds a private key, not a public key",
    b"CERTIFICATE": "holds a certificate, not a public key",
}


def load_pkcs8_pem(pem: bytes) -> SigningKey:
    """The Ed25519 key in an unencrypted PKCS#8 PEM: the v1 form every tool writes, or the v2
    OneAsymmetricKey form of RFC 8410 §7 that also carries the public key (which must then match).
    ValueError with a one-line reason for anything else."""
    outer = _der(_pem_body(pem, b"PRIVATE KEY", _PRIVATE_OTHERS))
    if len(outer) != 1 or outer[0][0] != 0x30:
        raise ValueError("the PKCS#8 key is not one DER SEQUENCE")
    fields = _der(outer[0][1])
    if len(fields) < 3 or [tag for tag, _ in fields[:3]] != [0x02, 0x30, 0x04]:
        raise ValueError("not a PKCS#8 private key (version, algorithm, key expected)")
    (_, version), (_, algorithm), (_, private), *rest = fields
    if version not in (b"\x00", b"\x01"):
        raise ValueError(f"PKCS#8 version {version.hex()} is unknown (0 or 1 expected)")
    _algorithm(algorithm)
    seed = _one(private, 0x04, "the Ed25519 private key")
    if len(seed) != SEED_BYTES:
        raise ValueError(f"the Ed25519 private key is {len(seed)} bytes, not {SEED_BYTES}")
    public: bytes | None = None
    for tag, content in rest:
        if tag == 0xA0:  # [0] attributes: informational, ignored as OpenSSL does
            continue
        if tag == 0x81 and version == b"\x01" and public is None:  # [1] IMPLICIT BIT STRING
            if len(content) != 1 + PUBLIC_KEY_BYTES or content[0] != 0:
                raise ValueError("the PKCS#8 public key is not 32 bytes")
            public = content[1:]
            continue
        raise ValueError(f"the PKCS#8 key has an unexpected field of tag 0x{tag:02x}")
    key = SigningKey(seed)
    if public is not None and public != key.public_bytes():
        raise ValueError("the public key in the PKCS#8 file does not match its private key")
    return key


def load_spki_pem(pem: bytes) -> bytes:
    """The 32 raw bytes of the Ed25519 public key in a SubjectPublicKeyInfo PEM ("PUBLIC KEY",
    RFC 8410 §4). ValueError with a one-line reason for anything else."""
    outer = _der(_pem_body(pem, b"PUBLIC KEY", _PUBLIC_OTHERS))
    if len(outer) != 1 or outer[0][0] != 0x30:
        raise ValueError("the public key is not one DER SEQUENCE")
    fields = _der(outer[0][1])
    if [tag for tag, _ in fields] != [0x30, 0x03]:
        raise ValueError("not a SubjectPublicKeyInfo (algorithm and key expected)")
    _algorithm(fields[0][1])
    bits = fields[1][1]
    if len(bits) != 1 + PUBLIC_KEY_BYTES or bits[0] != 0:
        raise ValueError(f"the Ed25519 public key is {max(len(bits) - 1, 0)} bytes, not 32")
    return bits[1:]
