"""protocols/cose.py: published EdDSA vectors, verification over the received bytes, every way a
message can be refused, and a decoder that only ever raises its own error.

Third-party vectors: cose-wg/Examples (https://github.com/cose-wg/Examples), commit
53c9d634333bb4f529d78f5980fffa2667ee2c12, directory eddsa-examples/:

* eddsa-sig-01.json — "EdDSA-01: EdDSA - 25519 - sign0": COSE_Sign1, protected {1: -8, 3: 0},
  unprotected {4: '11'}, payload "This is the content.";
* eddsa-01.json — "EdDSA-01: EdDSA - 25519": COSE_Sign, body protected {3: 0}, one signer with
  protected {1: -8} and unprotected {4: '11'};
* eddsa-sig-02.json / eddsa-02.json — the same with an Ed448 key, which this gateway does not
  support (it must refuse them, not crash).

The Ed25519 key of those examples is RFC 8032 §7.1 TEST 1. RFC 9052 Appendix C has no EdDSA
example, so these are the published vectors there are.
"""

from __future__ import annotations

import operator

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import cose
from protocols.ed25519 import SigningKey

# --- cose-wg/Examples eddsa-examples (see the module docstring) ---------------------------
ED25519_D = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED25519_X = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
CONTENT = b"This is the content."

EDDSA_SIG_01_CBOR = bytes.fromhex(
    "D28445A201270300A10442313154546869732069732074686520636F6E74656E742E5840"
    "7142FD2FF96D56DB85BEE905A76BA1D0B7321A95C8C4D3607C5781932B7AFB87"
    "11497DFA751BF40B58B3BCC32300B1487F3DB34085EEF013BF08F4A44D6FEF0D"
)
EDDSA_SIG_01_TBS = bytes.fromhex(
    "846A5369676E61747572653145A2012703004054546869732069732074686520636F6E74656E742E"
)
EDDSA_01_CBOR = bytes.fromhex(
    "D8628443A10300A054546869732069732074686520636F6E74656E742E818343A10127A1044231315840"
    "77F3EACD11852C4BF9CB1D72FABE6B26FBA1D76092B2B5B7EC83B83557652264"
    "E69690DBC1172DDC0BF88411C0D25A507FDB247A20C40D5E245FABD3FC9EC106"
)
EDDSA_01_TBS = bytes.fromhex(
    "85695369676E617475726543A1030043A101274054546869732069732074686520636F6E74656E742E"
)
EDDSA_SIG_02_CBOR_ED448 = bytes.fromhex(
    "D28443A10127A10445656434343854546869732069732074686520636F6E74656E742E5872"
    "988240A3A2F189BD486DE14AA77F54686C576A09F2E7ED9BAE910DF9139C2AC3BE7C27B7E10A20FA17C9D57D"
    "3510A2CF1F634BC0345AB9BE00849842171D1E9E98B2674C0E38BFCF6C557A1692B01B71015A47AC9F774884"
    "0CAD1DA80CBB5B349309FEBB912672B377C8B2072AF1598B3700"
)
EDDSA_02_CBOR_ED448 = bytes.fromhex(
    "D8628440A054546869732069732074686520636F6E74656E742E818343A10127A1044565643434385872"
    "ABF04F4BC7DFACF70C20C34A3CFBD27719911DC8518B2D67BF6AF62895D0FA1E6A1CB8B47AD1297C0E9C34BE"
    "B34E50DFFEF14350EBD57842807D54914111150F698543B0A5E1DA1DB79632C6415CE18EF74EDAEA680B0C88"
    "81439D869171481D78E2F7D26340C293C2ECDED8DE1425851900"
)


def _key(seed: int) -> SigningKey:
    return SigningKey(bytes([seed]) * 32)


def _pub(key: SigningKey) -> bytes:
    return key.public_bytes()


# ------------------------------------------------------------------------ published vectors


def test_cose_wg_eddsa_sig_01_sign1_verifies_and_is_reproduced_byte_for_byte() -> None:
    message = cose.decode(EDDSA_SIG_01_CBOR)
    assert isinstance(message, cose.Sign1Message)
    assert message.payload == CONTENT
    assert message.headers.alg == cose.ALG_EDDSA
    assert message.headers.kid == b"11"
    assert dict(message.headers.protected) == {1: -8, 3: 0}
    assert message.to_be_signed() == EDDSA_SIG_01_TBS
    message.verify(ED25519_X)
    # Ed25519 is deterministic: our signer must produce the published message exactly.
    ours = cose.sign1(CONTENT, ED25519_D, protected={1: -8, 3: 0}, unprotected={4: b"11"})
    assert ours == EDDSA_SIG_01_CBOR


def test_cose_wg_eddsa_01_sign_verifies_and_is_reproduced_byte_for_byte() -> None:
    message = cose.decode(EDDSA_01_CBOR)
    assert isinstance(message, cose.SignMessage)
    assert message.payload == CONTENT
    assert dict(message.headers.protected) == {3: 0}
    assert len(message.signatures) == 1
    assert message.signatures[0].headers.kid == b"11"
    assert message.to_be_signed(0) == EDDSA_01_TBS
    message.verify_signature(0, ED25519_X)
    ours = cose.sign(
        CONTENT,
        [cose.Signer(ED25519_D, protected={1: -8}, unprotected={4: b"11"})],
        protected={3: 0},
    )
    assert ours == EDDSA_01_CBOR


@pytest.mark.parametrize("vector", [EDDSA_SIG_02_CBOR_ED448, EDDSA_02_CBOR_ED448])
def test_cose_wg_ed448_examples_decode_but_never_verify(vector: bytes) -> None:
    message = cose.decode(vector)
    with pytest.raises(cose.CoseSignatureError, match="114 bytes"):
        if isinstance(message, cose.Sign1Message):
            message.verify(ED25519_X)
        else:
            message.verify_signature(0, ED25519_X)


def test_published_vector_with_one_bit_flipped_in_payload_fails() -> None:
    tampered = EDDSA_SIG_01_CBOR.replace(b"content", b"cantent")
    with pytest.raises(cose.CoseSignatureError):
        message = cose.decode(tampered)
        assert isinstance(message, cose.Sign1Message)
        message.verify(ED25519_X)


# ------------------------------------------------------------------------ our own checks


def test_sign1_round_trip_with_contract_headers() -> None:
    key = _key(7)
    payload = cbor2.dumps({"v": 1, "action": "trip"})
    data = cose.sign1(payload, key, protected=cose.ed25519_protected(b"op-1"))
    assert data[:1] == b"\xd2"  # tag 18
    message = cose.decode(data)
    assert isinstance(message, cose.Sign1Message)
    assert message.payload == payload
    assert message.headers.protected_bytes == cbor2.dumps({1: -8, 4: b"op-1"})
    assert dict(message.headers.unprotected) == {}
    message.verify(_pub(key))
    with pytest.raises(cose.CoseSignatureError):
        message.verify(_pub(_key(8)))


def test_signature_is_checked_over_the_protected_bytes_as_received() -> None:
    """A protected header encoded non-canonically (alg -8 as the two-byte 0x38 0x07 instead of
    0x27) is valid CBOR. The signer signed those bytes; a verifier that re-encoded the decoded
    header would rebuild a1 01 27 and fail. Ours verifies, and the re-encoded form fails."""
    key = _key(9)
    odd_protected = bytes.fromhex("a1013807")  # {1: -8} with a non-shortest negative integer
    assert cbor2.loads(odd_protected) == {1: -8}
    payload = b"\x01\x02"
    tbs = cbor2.dumps(["Signature1", odd_protected, b"", payload])
    signature = key.sign(tbs)
    received = cbor2.dumps(cbor2.CBORTag(18, [odd_protected, {}, payload, signature]))
    message = cose.decode(received)
    assert isinstance(message, cose.Sign1Message)
    assert message.headers.protected_bytes == odd_protected
    message.verify(_pub(key))
    canonical = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8}), {}, payload, signature]))
    reencoded = cose.decode(canonical)
    assert isinstance(reencoded, cose.Sign1Message)
    with pytest.raises(cose.CoseSignatureError):
        reencoded.verify(_pub(key))


def test_every_single_byte_change_of_a_signed_message_is_refused() -> None:
    key = _key(3)
    data = cose.sign1(
        cbor2.dumps({"v": 1, "targets": ["m-001", "m-002"]}),
        key,
        protected=cose.ed25519_protected(b"op-1"),
    )
    public = _pub(key)
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            mutated = bytearray(data)
            mutated[i] ^= mask
            with pytest.raises(cose.CoseError):
                message = cose.decode(bytes(mutated))
                assert isinstance(message, cose.Sign1Message)
                message.verify(public)


def test_sign_with_two_signers_each_verifies_and_signatures_are_not_interchangeable() -> None:
    a, b = _key(1), _key(2)
    data = cose.sign(b"payload", [cose.Signer(a, kid=b"op-a"), cose.Signer(b, kid=b"op-b")])
    assert data[:2] == b"\xd8\x62"  # tag 98
    message = cose.decode(data)
    assert isinstance(message, cose.SignMessage)
    assert [s.headers.kid for s in message.signatures] == [b"op-a", b"op-b"]
    assert message.headers.protected_bytes == b""  # empty protected body: zero-length bstr
    message.verify_signature(0, _pub(a))
    message.verify_signature(1, _pub(b))
    with pytest.raises(cose.CoseSignatureError):
        message.verify_signature(0, _pub(b))
    # Moving signer b's signature bytes under signer a's headers must fail.
    body_prot, body_plain, payload, (first, second) = cbor2.loads(data).value
    swapped = [
        [first[0], dict(first[1]), second[2]],
        [second[0], dict(second[1]), first[2]],
    ]
    moved = cose.decode(
        cbor2.dumps(cbor2.CBORTag(98, [body_prot, dict(body_plain), payload, swapped]))
    )
    assert isinstance(moved, cose.SignMessage)
    with pytest.raises(cose.CoseSignatureError):
        moved.verify_signature(0, _pub(a))


def test_external_aad_is_bound() -> None:
    key = _key(4)
    data = cose.sign1(b"x", key, protected=cose.ed25519_protected(), external_aad=b"ctx")
    message = cose.decode(data)
    assert isinstance(message, cose.Sign1Message)
    message.verify(_pub(key), external_aad=b"ctx")
    with pytest.raises(cose.CoseSignatureError):
        message.verify(_pub(key))


def _sign1_raw(protected: object, unprotected: object, payload: object, sig: object) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, sig]))


@pytest.mark.parametrize(
    ("protected", "unprotected", "match"),
    [
        (b"", {1: -8}, "unprotected header"),
        (b"", {}, "no algorithm"),
        (cbor2.dumps({1: -7}), {}, "algorithm -7 is not supported"),
        (cbor2.dumps({1: "EdDSA"}), {}, "not supported"),
        (cbor2.dumps({1: -8, 2: [99]}), {}, "crit"),
    ],
)
def test_algorithm_refusals(protected: bytes, unprotected: dict[int, object], match: str) -> None:
    key = _key(5)
    tbs = cbor2.dumps(["Signature1", protected, b"", b"p"])
    message = cose.decode(_sign1_raw(protected, unprotected, b"p", key.sign(tbs)))
    assert isinstance(message, cose.Sign1Message)
    with pytest.raises(cose.CoseAlgorithmError, match=match):
        message.verify(_pub(key))


SIG = bytes(64)
PROT = cbor2.dumps({1: -8})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (cbor2.dumps([PROT, {}, b"p", SIG]), "expected CBOR tag 18"),
        (cbor2.dumps(cbor2.CBORTag(17, [PROT, {}, b"p", SIG])), "expected CBOR tag 18"),
        (_sign1_raw(PROT, {}, b"p", SIG) + b"\x00", "trailing bytes"),
        (_sign1_raw(PROT, {}, None, SIG), "detached payload"),
        (_sign1_raw(PROT, {}, "p", SIG), "payload must be a byte string"),
        (_sign1_raw(PROT, {}, b"p", [SIG]), "signature must be a byte string"),
        (_sign1_raw({1: -8}, {}, b"p", SIG), "protected header must be a byte string"),
        (_sign1_raw(PROT, {1: -8}, b"p", SIG), "in both the protected and the unprotected"),
        (_sign1_raw(PROT, {4: "text-kid"}, b"p", SIG), "kid must be a byte string"),
        (_sign1_raw(PROT, {(1, 2): 0}, b"p", SIG), "label"),
        (_sign1_raw(PROT, {4: b"k", 99: cbor2.CBORTag(1, 0)}, b"p", SIG), "tag"),
        (_sign1_raw(bytes.fromhex("a201270127"), {}, b"p", SIG), "protected header"),
        (_sign1_raw(PROT + b"\x00", {}, b"p", SIG), "trailing"),
        (
            bytes.fromhex("d2")
            + bytes.fromhex("9f")
            + cbor2.dumps(PROT)
            + b"\xa0\x41p"
            + cbor2.dumps(SIG)
            + b"\xff",
            "indefinite",
        ),
        (cbor2.dumps(cbor2.CBORTag(18, [PROT, {}, b"p"])), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(98, [PROT, {}, b"p", []])), "non-empty"),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"p", [[PROT, {}, SIG]] * 5])), "over the limit"),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"p", [[PROT, {}]]])), "3 elements"),
        (b"\xd2" + b"\x84" + b"\x5a" + (2**32 - 1).to_bytes(4, "big"), "not well-formed"),
        (_sign1_raw(PROT, {4: b"k"}, b"p" * 70000, SIG), "over the 65536-byte limit"),
    ],
)
def test_decode_refusals(data: bytes, match: str) -> None:
    with pytest.raises(cose.CoseDecodeError, match=match):
        cose.decode(data)


def test_decode_refuses_duplicate_labels_in_the_protected_header() -> None:
    duplicate = bytes.fromhex("a2 01 27 01 27")  # {1: -8, 1: -8}
    with pytest.raises(cose.CoseDecodeError, match=r"protected header.*Duplicate map key"):
        cose.decode(_sign1_raw(duplicate, {}, b"p", SIG))


def test_encoder_refuses_what_the_decoder_would() -> None:
    key = _key(6)
    with pytest.raises(cose.CoseEncodeError, match="alg EdDSA"):
        cose.sign1(b"p", key, protected={1: -7})
    with pytest.raises(cose.CoseEncodeError, match="both header buckets"):
        cose.sign1(b"p", key, protected={1: -8, 4: b"k"}, unprotected={4: b"k"})
    with pytest.raises(cose.CoseEncodeError, match="kid must be a byte string"):
        cose.sign1(b"p", key, protected={1: -8, 4: "text"})
    with pytest.raises(cose.CoseEncodeError, match="at least one signer"):
        cose.sign(b"p", [])
    with pytest.raises(cose.CoseEncodeError, match="32 raw"):
        cose.sign1(b"p", b"short", protected={1: -8})
    message = cose.decode(cose.sign1(b"p", key, protected={1: -8}))
    assert isinstance(message, cose.Sign1Message)
    with pytest.raises(cose.CoseEncodeError, match="32 raw bytes"):
        message.verify(b"\x00" * 31)


def test_decode_plain_freezes_and_refuses_tags() -> None:
    value = cose.decode_plain(cbor2.dumps({"a": [1, {"b": b"x"}]}), max_bytes=100, max_depth=4)
    assert value == {"a": (1, {"b": b"x"})}
    with pytest.raises(TypeError):
        operator.setitem(value, "c", 1)
    with pytest.raises(cose.CoseDecodeError, match="tag"):
        cose.decode_plain(
            cbor2.dumps({"t": cbor2.CBORTag(4, [-2, 12345])}), max_bytes=100, max_depth=4
        )
    with pytest.raises(cose.CoseDecodeError, match="over the 10-byte limit"):
        cose.decode_plain(cbor2.dumps("x" * 20), max_bytes=10, max_depth=4)
    with pytest.raises(cose.CoseDecodeError):
        cose.decode_plain(cbor2.dumps([[[[[[1]]]]]]), max_bytes=100, max_depth=3)


# ------------------------------------------------------------------------ only our error escapes

plain_cbor = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=70)
    | st.text(max_size=10) | st.floats(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.integers(-10, 10) | st.text(max_size=3), children, max_size=5),
    max_leaves=20,
)  # fmt: skip


def _decode_or_our_error(data: bytes) -> None:
    try:
        message = cose.decode(data)
    except cose.CoseDecodeError:
        return
    # Whatever decoded must be safe to verify: our errors only, never a pass with a random key.
    try:
        if isinstance(message, cose.Sign1Message):
            message.verify(ED25519_X)
        else:
            for i in range(len(message.signatures)):
                message.verify_signature(i, ED25519_X)
    except (cose.CoseAlgorithmError, cose.CoseSignatureError):
        return
    raise AssertionError(f"random input verified: {data.hex()}")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_our_error(data: bytes) -> None:
    _decode_or_our_error(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"\xd2", b"\xd8\x62"]), st.binary(max_size=300))
def test_arbitrary_bytes_behind_a_cose_tag_only_raise_our_error(head: bytes, rest: bytes) -> None:
    _decode_or_our_error(head + rest)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([18, 98]),
    st.one_of(st.binary(max_size=20), st.builds(cbor2.dumps, plain_cbor)),
    plain_cbor,
    st.binary(max_size=40),
    plain_cbor,
)
def test_arbitrary_structures_only_raise_our_error(
    tag: int, protected: bytes, unprotected: object, payload: bytes, last: object
) -> None:
    try:
        data = cbor2.dumps(cbor2.CBORTag(tag, [protected, unprotected, payload, last]))
    except (ValueError, TypeError, OverflowError):
        return  # hypothesis built something cbor2 will not encode (e.g. a dict key it rejects)
    _decode_or_our_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_plain_only_raises_our_error(data: bytes) -> None:
    try:
        cose.decode_plain(data, max_bytes=150, max_depth=4)
    except cose.CoseDecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=500),
    kid=st.binary(min_size=1, max_size=40),
    seed=st.integers(1, 255),
)
def test_sign1_round_trip_property(payload: bytes, kid: bytes, seed: int) -> None:
    key = _key(seed)
    message = cose.decode(cose.sign1(payload, key, protected=cose.ed25519_protected(kid)))
    assert isinstance(message, cose.Sign1Message)
    assert message.payload == payload and message.headers.kid == kid
    message.verify(_pub(key))
