"""protocols.ed25519 against oracles we did not write: the RFC 8032 §7.1 vectors and the
``cryptography`` package (its own OpenSSL build), byte for byte, both ways."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ed25519
from protocols.commands import parse_private_key, parse_public_key
from protocols.ed25519 import SigningKey, load_pkcs8_pem, load_spki_pem

REPO = Path(__file__).resolve().parent.parent

#: The group order L (RFC 8032 §5.1).
L = 2**252 + 27742317777372353535851937790883648493

_TEST_1024_MESSAGE = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)

#: RFC 8032 §7.1: (name, secret key, public key, message, signature), all hex.
RFC8032 = [
    ("TEST 1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("TEST 2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("TEST 3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("TEST 1024", "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e", _TEST_1024_MESSAGE,
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
    ("TEST SHA(abc)", "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     hashlib.sha512(b"abc").hexdigest(),
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
]  # fmt: skip


def _theirs(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _their_public(seed: bytes) -> bytes:
    return _theirs(seed).public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)


def _they_verify(public: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize(("name", "secret", "public", "message", "signature"), RFC8032,
                         ids=[row[0] for row in RFC8032])
def test_rfc8032_vectors(name: str, secret: str, public: str, message: str, signature: str) -> None:
    key = SigningKey(bytes.fromhex(secret))
    data = bytes.fromhex(message)
    assert key.public_bytes().hex() == public
    assert key.private_bytes().hex() == secret
    assert key.sign(data).hex() == signature
    assert ed25519.verify(bytes.fromhex(public), bytes.fromhex(signature), data)
    assert not ed25519.verify(bytes.fromhex(public), bytes.fromhex(signature), data + b"\0")


def test_the_1024_vector_is_the_rfcs_1023_byte_message() -> None:
    assert len(bytes.fromhex(_TEST_1024_MESSAGE)) == 1023


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), data=st.binary(max_size=2048))
def test_same_bytes_as_cryptography_and_each_verifies_the_other(seed: bytes, data: bytes) -> None:
    ours, theirs = SigningKey(seed), _theirs(seed)
    assert ours.public_bytes() == _their_public(seed)
    signature = ours.sign(data)
    assert signature == theirs.sign(data)
    assert _they_verify(ours.public_bytes(), signature, data)
    assert ed25519.verify(ours.public_bytes(), theirs.sign(data), data)


@settings(max_examples=100, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), other=st.binary(min_size=32, max_size=32),
       data=st.binary(min_size=1, max_size=256), bit=st.integers(0, 511),
       message_bit=st.integers(0, 7))
def test_rejects_what_cryptography_rejects(seed: bytes, other: bytes, data: bytes, bit: int,
                                           message_bit: int) -> None:
    key = SigningKey(seed)
    public, signature = key.public_bytes(), key.sign(data)
    flipped = bytearray(signature)
    flipped[bit // 8] ^= 1 << (bit % 8)
    changed = bytes([data[0] ^ (1 << message_bit)]) + data[1:]
    cases = [
        (public, bytes(flipped), data),  # a flipped signature bit
        (public, signature, changed),  # a flipped message bit
        (SigningKey(other).public_bytes(), signature, data),  # another key (unless equal seeds)
        (public, signature[:63], data),  # 63 bytes
        (public, signature + b"\0", data),  # 65 bytes
        (other, signature, data),  # 32 arbitrary bytes as the public key, often not a point
    ]
    for case in cases:
        assert ed25519.verify(*case) == _they_verify(*case), case
    assert not ed25519.verify(public, bytes(flipped), data)
    assert not ed25519.verify(public, signature[:63], data)


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), data=st.binary(max_size=64))
def test_a_non_canonical_s_is_refused_as_cryptography_refuses_it(seed: bytes, data: bytes) -> None:
    """S + L verifies the same equation as S; RFC 8032 §5.1.7 requires S < L."""
    key = SigningKey(seed)
    signature = key.sign(data)
    s = int.from_bytes(signature[32:], "little")
    bigger = signature[:32] + (s + L).to_bytes(32, "little")  # s < L, so s + L < 2**256
    assert not ed25519.verify(key.public_bytes(), bigger, data)
    assert not _they_verify(key.public_bytes(), bigger, data)


def test_verify_wants_a_32_byte_public_key() -> None:
    with pytest.raises(ValueError, match="32 raw bytes"):
        ed25519.verify(b"\1" * 31, b"\0" * 64, b"")
    with pytest.raises(ValueError, match="32 raw bytes"):
        SigningKey(b"\1" * 33)


def test_without_proc_the_library_is_found_by_name_and_without_any_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes.util

    monkeypatch.setattr(ed25519, "_mapped_libcrypto", lambda: None)
    ed25519._lib.cache_clear()
    try:
        key = SigningKey(bytes(32))  # the library found by ctypes.util works the same
        assert _they_verify(key.public_bytes(), key.sign(b"x"), b"x")
        ed25519._lib.cache_clear()
        monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
        with pytest.raises(ed25519.BackendError, match="no libcrypto found"):
            SigningKey(bytes(32))
    finally:
        ed25519._lib.cache_clear()


def test_generate_makes_distinct_working_keys() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    assert a.public_bytes() != b.public_bytes()
    assert _they_verify(a.public_bytes(), a.sign(b"x"), b"x")


# ------------------------------------------------------------------------------- PEM


def _their_pkcs8(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_pem_round_trips_both_ways(seed: bytes) -> None:
    ours, theirs = SigningKey(seed), _theirs(seed)
    assert ours.to_pkcs8_pem() == _their_pkcs8(theirs)
    loaded = serialization.load_pem_private_key(ours.to_pkcs8_pem(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert loaded.private_bytes_raw() == seed
    assert load_pkcs8_pem(_their_pkcs8(theirs)).private_bytes() == seed
    spki = theirs.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_spki_pem(spki) == ours.public_bytes()
    assert parse_public_key(spki) == ours.public_bytes()


def test_the_v2_form_with_its_public_key_loads_and_a_wrong_public_key_does_not() -> None:
    """RFC 8410 §10.3's example: OneAsymmetricKey v2 (version 1) with attributes and the public key."""
    pem = (b"-----BEGIN PRIVATE KEY-----\n"
           b"MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n"
           b"oB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrB\n"
           b"Z9w7lshQhqowtrbLDFw4rXAxZuE=\n"
           b"-----END PRIVATE KEY-----\n")
    key = load_pkcs8_pem(pem)
    theirs = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(theirs, Ed25519PrivateKey)
    assert key.private_bytes() == theirs.private_bytes_raw()
    der = bytearray(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    der[-1] ^= 1
    bad = b"-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(bytes(der)) + b"\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="does not match its private key"):
        load_pkcs8_pem(bad)


def _rsa_pems() -> tuple[bytes, bytes]:
    rsa = generate_private_key(public_exponent=65537, key_size=1024)
    private = rsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_refusals_are_one_line_and_say_what_the_file_holds() -> None:
    seed = bytes(range(32))
    rsa_private, rsa_public = _rsa_pems()
    encrypted = _theirs(seed).private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw"))
    traditional = rsa_private.replace(b"PRIVATE KEY", b"RSA PRIVATE KEY")
    ours = SigningKey(seed).to_pkcs8_pem()
    private_cases = {
        b"": "no '-----BEGIN PRIVATE KEY-----' block",
        b"hello": "no '-----BEGIN PRIVATE KEY-----' block",
        encrypted: "encrypted",
        rsa_private: "holds an RSA key",
        traditional: "holds an RSA key",
        rsa_public: "holds a public key",
        ours.replace(b"MC4C", b"MC4!"): "not valid base64",
    }
    for pem, reason in private_cases.items():
        with pytest.raises(ValueError, match=reason) as caught:
            load_pkcs8_pem(pem)
        assert "\n" not in str(caught.value)
    # version 1 (v2) without the optional public key is still a key
    assert load_pkcs8_pem(ours.replace(b"MC4CAQAw", b"MC4CAQEw")).private_bytes() == seed
    with pytest.raises(ValueError) as caught:
        parse_private_key(rsa_private, "keys/op.key")
    message = str(caught.value)
    assert message.startswith("keys/op.key: holds an RSA key, not an Ed25519 key; give an Ed25519")
    assert "\n" not in message
    with pytest.raises(ed25519.KeyKindError, match="holds an RSA key"):
        load_spki_pem(rsa_public)
    with pytest.raises(ed25519.KeyKindError, match="holds a private key"):
        load_spki_pem(ours)
    with pytest.raises(ValueError) as caught:
        parse_private_key(b"junk " + encrypted, "keys/op.key")
    assert str(caught.value).startswith("keys/op.key: not an unencrypted PEM private key (the "
                                        "private key is encrypted")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=120))
def test_garbage_pem_is_a_value_error(body: bytes) -> None:
    """Any bytes inside the armour, base64 or not: ValueError (never a crash or another error)."""
    for label in (b"PRIVATE KEY", b"PUBLIC KEY"):
        armoured = [b"-----BEGIN " + label + b"-----\n" + encoded + b"\n-----END " + label + b"-----\n"
                    for encoded in (base64.b64encode(body), body)]
        for pem in armoured:
            try:
                if label == b"PRIVATE KEY":
                    load_pkcs8_pem(pem)
                else:
                    load_spki_pem(pem)
            except ValueError:
                pass


def test_truncated_and_extended_der_is_refused() -> None:
    der = base64.b64decode(SigningKey(bytes(32)).to_pkcs8_pem().splitlines()[1])
    for broken in (der[:-1], der + b"\0", der[:2], b"\x30\x80" + der[2:], b"\x30\x81\x2e" + der[2:]):
        pem = b"-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(broken) + b"\n-----END PRIVATE KEY-----\n"
        with pytest.raises(ValueError):
            load_pkcs8_pem(pem)


def test_signing_in_a_fresh_interpreter_imports_no_cryptography() -> None:
    """A key loaded and used the way the daemon does it pulls in nothing of ``cryptography``."""
    probe = ("import sys\nfrom protocols.commands import parse_private_key\n"
             "from protocols.ed25519 import SigningKey, verify\n"
             "key = parse_private_key(SigningKey.generate().to_pkcs8_pem(), 'k')\n"
             "assert verify(key.public_bytes(), key.sign(b'x'), b'x')\n"
             "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_keys_contexts_and_failed_verifications_are_freed() -> None:
    """Thousands of keys made and dropped, signatures made and verified (also failing ones):
    the RSS does not grow. A leaked EVP_PKEY or EVP_MD_CTX (a few hundred bytes of OpenSSL heap
    each) would add megabytes over 8,000 rounds."""

    def rounds(count: int) -> None:
        for i in range(count):
            key = SigningKey(i.to_bytes(32, "little"))
            signature = key.sign(b"data")
            assert ed25519.verify(key.public_bytes(), signature, b"data")
            assert not ed25519.verify(key.public_bytes(), signature, b"other")
            assert len(key.private_bytes()) == 32

    rounds(2_000)  # the allocator's pools reach their working size
    before = _rss_kib()
    rounds(8_000)
    assert _rss_kib() - before < 1024
