"""Third-party golden frames against the DL/T 645 codec.

Each vector in :mod:`tests.golden.dlt645_vectors` was published by someone else (a vendor manual, a blog,
another implementation's tests, a captured exchange log). The codec must read every one of them the way
its source does; a disagreement is either a codec bug or a source error, and is settled against the
standard, never by editing the vector to match.
"""

from __future__ import annotations

import re

import pytest

from protocols.dlt645 import ChecksumError, ProtocolError, decode, describe
from tests.golden.dlt645_vectors import ERRATA, GOLDEN, Erratum, GoldenFrame

_HEX = re.compile(r"[0-9A-Fa-f]{2}")


def _frame_bytes(published: str) -> bytes:
    """The bytes of a frame as published: hex pairs, any spacing (some sources print 'FE6800 51')."""
    compact = re.sub(r"\s+", "", published)
    if len(compact) % 2 or not all(_HEX.fullmatch(compact[i : i + 2]) for i in range(0, len(compact), 2)):
        raise ValueError(f"not a hex frame: {published!r}")
    return bytes.fromhex(compact)


def _strip_preamble(frame: bytes) -> bytes:
    i = 0
    while i < len(frame) and frame[i] == 0xFE:
        i += 1
    return frame[i:]


def _nameplate_address(frame: bytes) -> str:
    return frame[1:7][::-1].hex().upper()


def _check_link_layer(frame: bytes) -> None:
    """DL/T 645 link layer, independently of the codec: 68 A0..A5 68 C L DATA CS 16."""
    assert frame[0] == 0x68 and frame[7] == 0x68, "start bytes"
    length = frame[9]
    assert len(frame) == 12 + length, f"length byte {length} vs {len(frame) - 12} data bytes"
    assert frame[10 + length] == sum(frame[: 10 + length]) % 256, "checksum"
    assert frame[-1] == 0x16, "end byte"


@pytest.mark.parametrize("vector", GOLDEN, ids=lambda v: v.name)
def test_vector_is_a_well_formed_frame(vector: GoldenFrame) -> None:
    """The data file itself: every golden frame passes the link-layer arithmetic without the codec, and
    its expected address is the reversed BCD of the address field (guards against transcription slips)."""
    frame = _strip_preamble(_frame_bytes(vector.hex))
    _check_link_layer(frame)
    if "address" in vector.expected:
        assert _nameplate_address(frame) == vector.expected["address"]
    if "control" in vector.expected:
        assert frame[8] == vector.expected["control"]


@pytest.mark.parametrize("vector", GOLDEN, ids=lambda v: v.name)
def test_codec_reads_golden_frame_as_its_source_does(vector: GoldenFrame) -> None:
    description = describe(decode(_frame_bytes(vector.hex)))
    mismatches = {
        key: {"source": want, "codec": description.get(key)}
        for key, want in vector.expected.items()
        if description.get(key) != want
    }
    assert not mismatches, f"{vector.name} ({vector.source}): {mismatches}"


@pytest.mark.parametrize("erratum", [e for e in ERRATA if e.rejects], ids=lambda e: e.name)
def test_codec_refuses_published_frame_that_breaks_the_standard(erratum: Erratum) -> None:
    frame = _frame_bytes(erratum.hex)
    link_ok = True
    try:
        _check_link_layer(_strip_preamble(frame))
    except AssertionError:
        link_ok = False
    expected_error = ProtocolError if link_ok else ChecksumError
    with pytest.raises(expected_error):
        decode(frame)


@pytest.mark.parametrize("erratum", [e for e in ERRATA if not e.rejects], ids=lambda e: e.name)
def test_codec_reads_what_a_misannotated_frame_really_carries(erratum: Erratum) -> None:
    """The bytes are a valid frame; the source's *decoding* was wrong. The codec must give the corrected
    reading worked out from the standard (the erratum's ``problem`` shows the arithmetic)."""
    frame = _frame_bytes(erratum.hex)
    _check_link_layer(_strip_preamble(frame))
    description = describe(decode(frame))
    mismatches = {
        key: {"corrected": want, "codec": description.get(key)}
        for key, want in erratum.corrected.items()
        if description.get(key) != want
    }
    assert not mismatches, f"{erratum.name} ({erratum.source}): {mismatches}"


def test_golden_set_is_varied_and_uniquely_named() -> None:
    names = [v.name for v in GOLDEN] + [e.name for e in ERRATA]
    assert len(names) == len(set(names)), "duplicate vector names"
    assert len(GOLDEN) >= 14
    # Both editions (4- and 8-digit DIs), requests and replies, and more than plain reads.
    assert {v.expected.get("function") for v in GOLDEN} >= {
        "read_data", "read_address", "write_data", "broadcast_time", "change_baud"}
    assert {len(v.expected["di"]) for v in GOLDEN if "di" in v.expected} == {4, 8}
    assert {v.expected.get("direction") for v in GOLDEN} == {"request", "reply"}
    assert all(e.rejects != bool(e.corrected) for e in ERRATA)
