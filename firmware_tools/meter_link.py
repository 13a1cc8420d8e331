"""A blocking DL/T 645 master for field tools: one transaction at a time on a serial port.

The daemon has its own asyncio bus task; a field engineer's laptop needs none of that, only a
request, a wait and a clear answer. Timing follows the bus rules: the reply timeout starts after the
request has left the wire (its bytes take 11 bits each at the line's baud rate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import serial

from protocols import dlt645 as d
from protocols.dlt645.transaction import Transaction, TransactionError

BITS_PER_CHAR = 11  # start + 8 data + parity + stop (8E1); 8N1 is 10, we stay conservative


class LinkError(Exception):
    """The port cannot be used (missing device, permission, wrong settings); message says what to do."""


@dataclass
class SerialSettings:
    port: str
    baudrate: int = 2400
    parity: str = "E"
    timeout_s: float = 1.0
    preamble: int = 4


def open_port(settings: SerialSettings) -> serial.SerialBase:
    """Open a serial port or pyserial URL; any failure becomes one actionable line."""
    parity = {"E": serial.PARITY_EVEN, "N": serial.PARITY_NONE, "O": serial.PARITY_ODD}.get(settings.parity)
    if parity is None:
        raise LinkError(f"parity must be E, N or O, got {settings.parity!r}")
    try:
        return serial.serial_for_url(
            settings.port, baudrate=settings.baudrate, parity=parity, bytesize=8, stopbits=1,
            timeout=0.02,
        )
    except (serial.SerialException, ValueError, OSError) as exc:
        raise LinkError(
            f"cannot open serial port {settings.port}: {exc} — check the device path, that nothing "
            "else holds the port, and your permissions (dialout group)"
        ) from None


def run_transaction(port: serial.SerialBase, request: d.Message, settings: SerialSettings) -> Transaction:
    """Send ``request`` and collect the reply (and follow-ups). Raises ExceptionReply / TransactionError."""
    transaction = Transaction(request)
    splitter = d.FrameSplitter()
    port.reset_input_buffer()
    frame = transaction.start(preamble=settings.preamble)
    while True:
        port.write(frame)
        port.flush()
        wire_time = len(frame) * BITS_PER_CHAR / settings.baudrate
        deadline = time.monotonic() + wire_time + settings.timeout_s
        next_frame: bytes | None = None
        while not transaction.finished and next_frame is None:
            if time.monotonic() > deadline:
                transaction.timeout()
                raise TransactionError(
                    f"no reply from {request.address} within {settings.timeout_s * 1000:.0f} ms at "
                    f"{settings.baudrate} 8{settings.parity}1 — check wiring, address and baud"
                )
            chunk = port.read(256)
            for raw in splitter.feed(chunk):
                try:
                    message = d.decode(raw)
                except d.RemoteProtocolError:
                    continue  # a checksum-valid frame we cannot use: keep waiting for ours
                next_frame = transaction.receive(message)
                if next_frame is not None or transaction.finished:
                    break
        if transaction.finished:
            return transaction
        assert next_frame is not None
        frame = next_frame
