"""Signed update bundles, sans-IO (protocols/bundle.py): round trips, garbage, each refusal."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import cose
from protocols.bundle import (
    BundleError,
    build_bundle,
    decode_bundle,
    sign_bundle,
    verify_bundle,
)
from protocols.commands import raw_public_key
from protocols.ed25519 import SigningKey

KEY = SigningKey.generate()
KEYS = {"eng-1": raw_public_key(KEY)}
CONFIG = b'[gateway]\nid = "gw-1"\n'
PROFILE = b'kind = "dlt645"\n'

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).map(lambda s: s + ".toml")


def signed(seq: int = 5, gateways: tuple[str, ...] = ("gw-1",)) -> bytes:
    bundle = build_bundle(seq, gateways, 1_700_000_000_000,
                          [("gateway.toml", "config", CONFIG), ("p.toml", "profile", PROFILE)])
    return sign_bundle(bundle, KEY, "eng-1").to_cbor()


@settings(max_examples=60, deadline=None)
@given(seq=st.integers(1, 2**63 - 1), created=st.integers(0, 2**63 - 1),
       gateways=st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
                         min_size=1, max_size=4),
       profiles=st.dictionaries(names, st.binary(max_size=200), max_size=4),
       config=st.none() | st.binary(max_size=300))
def test_round_trip(seq: int, created: int, gateways: list[str], profiles: dict[str, bytes],
                    config: bytes | None) -> None:
    payloads = [(n, "profile", d) for n, d in profiles.items()]
    if config is not None or not payloads:
        payloads.insert(0, ("gateway.toml", "config", config or b""))
    bundle = sign_bundle(build_bundle(seq, gateways, created, payloads), KEY, "eng-1")  # type: ignore[arg-type]
    data = bundle.to_cbor()
    again = decode_bundle(data)
    assert again == bundle
    verified, kid = verify_bundle(data, keys=KEYS, gateway_id=gateways[0], last_seq=seq - 1)
    assert kid == "eng-1" and verified.manifest.seq == seq
    assert dict(verified.payloads) == {n: d for n, _, d in payloads}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_only_bundle_error(data: bytes) -> None:
    with pytest.raises(BundleError):
        verify_bundle(data, keys=KEYS, gateway_id="gw-1", last_seq=None)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_flipped_byte_never_verifies_as_another_bundle(data: st.DataObject) -> None:
    good = signed()
    i = data.draw(st.integers(0, len(good) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(good)
    bad[i] ^= 1 << bit
    try:
        bundle, _ = verify_bundle(bytes(bad), keys=KEYS, gateway_id="gw-1", last_seq=None)
    except BundleError:
        return
    # A flip cbor2 tolerates (e.g. none: every byte is signed or digested) must mean the same.
    assert bundle.payloads == decode_bundle(good).payloads


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda: signed(seq=3), "stale_seq"),
    (lambda: signed(gateways=("gw-2",)), "wrong_gateway"),
    (lambda: sign_bundle(decode_bundle(signed()), SigningKey.generate(), "eng-1")
     .to_cbor(), "bad_signature"),
    (lambda: sign_bundle(decode_bundle(signed()), KEY, "eng-9").to_cbor(), "unknown_key"),
    (lambda: decode_bundle(signed()).__class__(  # unsigned
        decode_bundle(signed()).manifest, decode_bundle(signed()).manifest_bytes,
        decode_bundle(signed()).payloads, None).to_cbor(), "unsigned"),
])
def test_each_refusal_has_its_code_and_one_line(mutate: object, code: str) -> None:
    with pytest.raises(BundleError) as info:
        verify_bundle(mutate(), keys=KEYS, gateway_id="gw-1", last_seq=4)  # type: ignore[operator]
    assert info.value.code == code
    assert "\n" not in info.value.reason and info.value.reason


def test_digest_mismatch_refused() -> None:
    body = dict(cbor2.loads(signed()))
    body["payloads"] = {**body["payloads"], "p.toml": b'kind = "modbus"\n'}
    with pytest.raises(BundleError) as info:
        verify_bundle(cbor2.dumps(body), keys=KEYS, gateway_id="gw-1", last_seq=None)
    assert info.value.code == "digest_mismatch"
    assert "p.toml" in info.value.reason


def test_signature_over_another_manifest_refused() -> None:
    other = build_bundle(9, ["gw-1"], 0, [("gateway.toml", "config", CONFIG)])
    body = dict(cbor2.loads(signed()))
    body["manifest"] = other.manifest_bytes
    body["payloads"] = {"gateway.toml": CONFIG}
    with pytest.raises(BundleError) as info:
        verify_bundle(cbor2.dumps(body), keys=KEYS, gateway_id="gw-1", last_seq=None)
    assert info.value.code == "bad_signature"


@pytest.mark.parametrize(("payloads", "fragment"), [
    ([("../gateway.toml", "config", b"")], "no directories"),
    ([("a/b.toml", "profile", b"")], "no directories"),
    ([("P.toml", "profile", b"")], "no directories"),
    ([("a.toml", "config", b""), ("b.toml", "config", b"")], "at most one config"),
    ([], "1 to 256 payloads"),
])
def test_build_refuses_what_decode_would(payloads: list[tuple[str, str, bytes]],
                                         fragment: str) -> None:
    with pytest.raises(BundleError, match=fragment):
        build_bundle(1, ["gw-1"], 0, payloads)  # type: ignore[arg-type]


def test_manifest_is_what_is_signed() -> None:
    data = signed()
    bundle = decode_bundle(data)
    message = cose.decode(bundle.auth or b"")
    assert isinstance(message, cose.Sign1Message)
    assert message.payload == bundle.manifest_bytes
    assert message.headers.kid == b"eng-1"
    assert bundle.digest == hashlib.sha256(bundle.manifest_bytes).digest()


def test_oversize_refused_before_parsing() -> None:
    from protocols.bundle import MAX_BUNDLE_BYTES

    with pytest.raises(BundleError) as info:
        verify_bundle(b"\xa0" * (MAX_BUNDLE_BYTES + 1), keys=KEYS, gateway_id="gw-1",
                      last_seq=None)
    assert info.value.code == "malformed" and "limit" in info.value.reason
