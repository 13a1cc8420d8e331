"""Non-blocking serial I/O for asyncio: a pyserial port driven by the event loop's reader callback.

pyserial is blocking by design; reading it in a thread per bus costs a thread and adds wake-up
latency. Instead we open the port with ``timeout=0`` and let the event loop tell us when its file
descriptor is readable. Works for real UARTs, USB adapters and pseudo-terminals (all have a fd).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import termios
import time

import serial

from gateway.acquisition.errors import AcquisitionError
from gateway.config.serial_line import describe_serial_error, parity_for_port

log = logging.getLogger(__name__)

#: Ports whose parity fallback was already reported: a bus that re-opens its line after every
#: failure must not repeat the warning each time.
_parity_warned: set[str] = set()


def applied_parity(port: str, parity: str) -> str:
    """The parity to open ``port`` with (8N1 on a pseudo-terminal, see
    :mod:`gateway.config.serial_line`), logging why once per port and process."""
    line = parity_for_port(port, parity)
    if line.warning is not None and port not in _parity_warned:
        _parity_warned.add(port)
        log.warning("%s", line.warning)
    return line.applied

PARITIES = {"E": serial.PARITY_EVEN, "N": serial.PARITY_NONE, "O": serial.PARITY_ODD}


class SerialPortError(AcquisitionError):
    """The port cannot be opened or used; the message says what to check."""


class AsyncSerialPort:
    """Bytes in and out of one serial port; received chunks wait in a bounded buffer.

    ``last_rx`` is the monotonic time the last byte arrived (for the master's turnaround rule).
    """

    MAX_PENDING = 64 * 1024  # more than this unread means nobody is reading: drop oldest, count it

    def __init__(self, port: str, baudrate: int, parity: str = "E", bytesize: int = 8,
                 stopbits: float = 1) -> None:
        self.port_name = port
        self.baudrate = baudrate
        self.parity = parity
        self.bytesize = bytesize
        self.stopbits = stopbits
        self._serial: serial.SerialBase | None = None
        self._fd: int | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._pending = 0
        self._event = asyncio.Event()
        self.dropped_bytes = 0
        self.last_rx = 0.0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + (2 if self.stopbits >= 2 else 1)

    def wire_time(self, nbytes: int) -> float:
        return nbytes * self.bits_per_char / self.baudrate

    def open(self) -> None:
        parity = applied_parity(self.port_name, self.parity)
        try:
            ser = serial.serial_for_url(
                self.port_name, baudrate=self.baudrate, parity=PARITIES[parity],
                bytesize=self.bytesize,
                stopbits=serial.STOPBITS_TWO if self.stopbits >= 2 else serial.STOPBITS_ONE,
                timeout=0, write_timeout=2.0, exclusive=True,
            )
        except (serial.SerialException, termios.error, ValueError, OSError, KeyError) as exc:
            raise SerialPortError(describe_serial_error(self.port_name, exc)) from None
        try:
            fd = ser.fileno()
        except (AttributeError, NotImplementedError, OSError) as exc:
            ser.close()
            raise SerialPortError(f"{self.port_name} has no file descriptor for asyncio: {exc}") from None
        self._serial = ser
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return
        self.last_rx = time.monotonic()
        self.bytes_in += len(data)
        self._chunks.append(data)
        self._pending += len(data)
        while self._pending > self.MAX_PENDING:
            old = self._chunks.popleft()
            self._pending -= len(old)
            self.dropped_bytes += len(old)
        self._event.set()

    def discard_input(self) -> int:
        n = self._pending
        self._chunks.clear()
        self._pending = 0
        self._event.clear()
        return n

    async def read_some(self, timeout: float) -> bytes:
        """Everything received so far, waiting up to ``timeout`` seconds for the first byte."""
        if not self._chunks:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except TimeoutError:
                return b""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._pending = 0
        self._event.clear()
        return data

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the line (the kernel buffer takes a frame whole; it is tiny)."""
        if self._fd is None:
            raise SerialPortError(f"serial port {self.port_name} is not open")
        view = memoryview(data)
        deadline = time.monotonic() + 2.0
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise SerialPortError(f"write to {self.port_name} failed: {exc}") from None
            view = view[n:]
            if view and time.monotonic() > deadline:
                raise SerialPortError(f"write to {self.port_name} blocked for 2 s: is the line stuck?")
        self.bytes_out += len(data)
