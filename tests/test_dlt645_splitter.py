"""Stream splitter and decoder robustness: chunking, garbage, resynchronisation, arbitrary bytes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import dlt645 as d
from tests.dlt645_strategies import MESSAGES

NO_68 = st.binary(max_size=40).map(lambda b: b.replace(b"\x68", b"\x69"))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(MESSAGES, st.integers(0, 4), NO_68), min_size=1, max_size=6),
    st.lists(st.integers(1, 40), min_size=1, max_size=50),
)
def test_any_chunking_with_garbage_yields_exactly_the_frames(
    items: list[tuple[d.Message, int, bytes]], cuts: list[int]
) -> None:
    stream = b""
    expected = []
    for message, preamble, garbage in items:
        frame = d.encode(message, preamble=preamble)
        stream += garbage + frame
        expected.append(frame[preamble:])
    splitter = d.FrameSplitter()
    got: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got.extend(splitter.feed(stream[pos : pos + step]))
        pos += step
        i += 1
    assert got == expected
    assert [d.decode(f) for f in got] == [m for m, _, _ in items]
    assert splitter.buffered == 0 or stream.endswith(b"")  # nothing valid left behind


def test_false_start_inside_garbage_resynchronises() -> None:
    real = d.encode(d.ReadRequest("000102030425", 0x00010000))
    # 68 followed by 6 bytes and another 68 with a huge length, then the real frame.
    fake = bytes([0x68, 1, 2, 3, 4, 5, 6, 0x68, 0x11, 0xC8])
    s = d.FrameSplitter()
    assert s.feed(fake + real) == [real]
    assert s.framing_errors + s.checksum_errors >= 1


def test_bad_checksum_frame_is_skipped_and_next_frame_found() -> None:
    good = d.encode(d.ReadRequest("000102030425", 0x02010100))
    bad = bytearray(d.encode(d.ReadRequest("000102030425", 0x00010000)))
    bad[-2] ^= 0xFF
    s = d.FrameSplitter()
    assert s.feed(bytes(bad) + good) == [good]
    assert s.checksum_errors == 1


def test_scrambled_data_containing_68_and_16_is_delimited_by_length() -> None:
    # Data bytes 0x35 and 0xE3 scramble to 0x68 and 0x16.
    reply = d.ReadReply("000102030425", 0x0EEE0000, bytes([0x35, 0xE3, 0x35, 0xE3]))
    frame = d.encode(reply)
    assert b"\x68" in frame[10:-2] and b"\x16" in frame[10:-2]
    s = d.FrameSplitter()
    out = []
    for b in frame:
        out.extend(s.feed(bytes([b])))
    assert out == [frame]


def test_buffer_stays_bounded_on_endless_noise() -> None:
    s = d.FrameSplitter()
    noise = bytes([0x68, 0, 0, 0, 0, 0, 0, 0x68, 0x91, 0xC8]) * 1000
    for _ in range(50):
        s.feed(noise)
    assert s.buffered <= 12 + 200


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_protocol_errors(blob: bytes) -> None:
    try:
        d.decode(blob)
    except d.ProtocolError:
        pass
    s = d.FrameSplitter()
    for frame in s.feed(blob):
        try:
            d.describe(d.decode(frame))
        except d.ProtocolError:
            pass


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES, st.lists(st.tuples(st.integers(0, 250), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_frames_with_fixed_checksum_only_raise_protocol_errors(
    message: d.Message, mutations: list[tuple[int, int]]
) -> None:
    """Mutations inside a frame whose checksum is then corrected reach the field decoders."""
    frame = bytearray(d.encode(message))
    for pos, value in mutations:
        if 10 <= pos < len(frame) - 2 or pos in (8, 9):
            frame[pos] = value
    body_end = len(frame) - 2
    frame[-2] = sum(frame[:body_end]) & 0xFF
    try:
        d.describe(d.decode(bytes(frame)))
    except d.ProtocolError:
        pass
