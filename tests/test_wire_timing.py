"""Wire timing of the simulated DL/T 645 line, measured from the client side of the pty.

A real 2400-baud 8E1 line carries 2400 / 11 = 218.2 characters per second. The simulator must
reproduce three things a poller's timeouts depend on:

* the request's own wire time (the client writes into the pty instantly; a real line would take
  ``len × 11 / baud``),
* the meter's response delay Td after the request's last byte,
* the reply's wire time, paced byte by byte rather than delivered in one burst at the end.

Run with ``pytest -s tests/test_wire_timing.py`` to see the measured numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import pytest

from hil_tests.load_model import ManualClock
from hil_tests.serial_line import BITS_PER_CHARACTER, wire_time
from hil_tests.sim import Dlt645Rig, run_dlt645_line
from protocols.dlt645 import ReadRequest, encode
from tests.dlt645_client import Dlt645Client, Received

ADDRESS = "000000000042"
TOLERANCE = 0.05
RESPONSE_DELAY_MS = 50


@pytest.fixture(params=[2400, 9600], ids=lambda b: f"{b}baud")
def line(request: pytest.FixtureRequest) -> Iterator[tuple[Dlt645Rig, Dlt645Client, int]]:
    baud: int = request.param
    with run_dlt645_line([ADDRESS, "000000000043"], baudrate=baud,
                         response_delay_ms=RESPONSE_DELAY_MS, clock=ManualClock()) as rig, \
            Dlt645Client(rig.device, baud) as client:
        yield rig, client, baud


def _transact(client: Dlt645Client, request: bytes, reply_length: int) -> Received:
    got = client.exchange(request, expect=reply_length, timeout=3.0)
    assert len(got.data) == reply_length, f"expected {reply_length} bytes, got {got.data.hex(' ')}"
    return got


def test_request_end_to_last_reply_byte(line: tuple[Dlt645Rig, Dlt645Client, int]) -> None:
    """Last reply byte arrives Td + len(reply) × 11 / baud after the request left the wire."""
    rig, client, baud = line
    request = encode(ReadRequest(ADDRESS, 0x0001FF00))
    reply_length = 12 + 4 + 5 * 4  # total + 4 tariffs
    request_wire = wire_time(len(request), baud)
    expected = RESPONSE_DELAY_MS / 1000 + wire_time(reply_length, baud)
    measured: list[float] = []
    first_byte: list[float] = []
    for _ in range(5):
        got = _transact(client, request, reply_length)
        # The client's write returns at once on a pty; the request leaves a real wire later.
        request_end = got.write_done + request_wire
        measured.append(got.last_byte_at - request_end)
        first_byte.append(got.chunks[0][0] - request_end)
    median = statistics.median(measured)
    print(f"\n{baud} baud: request {len(request)} B ({request_wire * 1000:.1f} ms on the wire), "
          f"Td {RESPONSE_DELAY_MS} ms, reply {reply_length} B: expected "
          f"{expected * 1000:.1f} ms from request end to last reply byte, measured "
          f"{', '.join(f'{m * 1000:.1f}' for m in measured)} ms "
          f"(median {median * 1000:.1f} ms, {100 * (median / expected - 1):+.2f} %)")
    assert abs(median / expected - 1) <= TOLERANCE
    assert max(abs(m / expected - 1) for m in measured) <= 2 * TOLERANCE
    # Paced, not burst: the first byte comes one character after Td, long before the last.
    first_expected = RESPONSE_DELAY_MS / 1000 + wire_time(1, baud)
    print(f"{baud} baud: first reply byte after {statistics.median(first_byte) * 1000:.1f} ms "
          f"(expected ~{first_expected * 1000:.1f} ms)")
    assert abs(statistics.median(first_byte) - first_expected) <= 0.005 + wire_time(4, baud)
    assert rig.stats[ADDRESS].replies_sent == 5


def test_long_reply_byte_rate(line: tuple[Dlt645Rig, Dlt645Client, int]) -> None:
    """A 199-byte reply streams at baud / 11 characters per second."""
    rig, client, baud = line
    request = encode(ReadRequest(ADDRESS, 0x03300DFF))  # cover-open block: first frame 199 B
    reply_length = 12 + 4 + 3 + 3 * 60
    got = _transact(client, request, reply_length)
    # Slope of bytes received against arrival time: immune to how reads split the writes.
    times, counts, total = [], [], 0
    for at, chunk in got.chunks:
        total += len(chunk)
        times.append(at)
        counts.append(total)
    rate = statistics.linear_regression(times, counts).slope
    nominal = baud / BITS_PER_CHARACTER
    print(f"\n{baud} baud: {reply_length}-byte reply in {len(got.chunks)} chunks, "
          f"{rate:.1f} B/s measured vs {nominal:.1f} B/s nominal "
          f"({100 * (rate / nominal - 1):+.2f} %)")
    assert reply_length >= 100
    assert len(got.chunks) >= reply_length // 8  # small chunks, not a burst
    assert abs(rate / nominal - 1) <= TOLERANCE
