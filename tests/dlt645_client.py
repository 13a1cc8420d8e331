"""A minimal DL/T 645 master for tests: pyserial on the slave side of a simulated line's pty.

Deliberately not the gateway's poller: tests of the simulator must not depend on the code the
simulator exists to test. It writes a frame and collects what comes back, with timestamps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import serial

from protocols.dlt645 import FrameSplitter, Message, decode, encode


@dataclass
class Received:
    """What came back after one request: ``chunks`` as (perf_counter time, bytes) in arrival order,
    ``write_done`` the perf_counter time the request write returned."""

    write_done: float
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    @property
    def frames(self) -> list[bytes]:
        return FrameSplitter().feed(self.data)

    @property
    def last_byte_at(self) -> float:
        return self.chunks[-1][0]


class Dlt645Client:
    """Open ``device`` at ``baudrate`` 8E1 and talk to the simulated meters."""

    def __init__(self, device: str, baudrate: int = 2400) -> None:
        self.port = serial.Serial(device, baudrate, bytesize=8, parity=serial.PARITY_EVEN,
                                  stopbits=1, timeout=0.005)

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> Dlt645Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_baudrate(self, baudrate: int) -> None:
        self.port.baudrate = baudrate

    def exchange(self, frame: bytes, *, expect: int | None = None, timeout: float = 1.5,
                 quiet: float = 0.08, until_frame: bool = False) -> Received:
        """Write ``frame``; collect bytes until ``expect`` bytes arrived, a valid frame is complete
        (``until_frame``), ``quiet`` seconds pass without a byte after the first one, or ``timeout``
        seconds in total."""
        self.port.reset_input_buffer()
        self.port.write(frame)
        got = Received(time.perf_counter())
        deadline = got.write_done + timeout
        total = 0
        splitter = FrameSplitter()
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return got
            if got.chunks and now - got.last_byte_at >= quiet:
                return got
            chunk = self.port.read(max(1, self.port.in_waiting))
            if chunk:
                got.chunks.append((time.perf_counter(), chunk))
                total += len(chunk)
                if expect is not None and total >= expect:
                    return got
                if until_frame and splitter.feed(chunk):
                    return got

    def request(self, message: Message, *, timeout: float = 1.5) -> Message | None:
        """Send a message and decode the first valid frame of the answer (None = no frame)."""
        frames = self.exchange(encode(message), timeout=timeout, until_frame=True).frames
        return decode(frames[0]) if frames else None

    def listen(self, seconds: float) -> bytes:
        """Whatever arrives within ``seconds`` without sending anything."""
        end = time.perf_counter() + seconds
        out = bytearray()
        while time.perf_counter() < end:
            out += self.port.read(max(1, self.port.in_waiting))
        return bytes(out)

    def send(self, frame: bytes) -> None:
        self.port.write(frame)
