"""A blocking DL/T 645 master for field tools: one transaction at a time on a serial port.

The daemon has its own asyncio bus task; a field engineer's laptop needs none of that, only a
request, a wait and a clear answer. The exchange itself (timeouts, retries, what counts as a stray or
garbled frame) is :class:`protocols.dlt645.transaction.Exchange`, the same driver the daemon's bus
task runs; this module only moves its bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import serial

try:  # pyserial lets termios.error (not an OSError) escape from settings a device refuses
    from termios import error as TermiosError
except ImportError:  # pragma: no cover - not POSIX
    TermiosError = OSError  # type: ignore[misc,assignment]

from protocols import dlt645 as d
from protocols.dlt645.transaction import (
    Answered,
    Exchange,
    ExchangePolicy,
    Transmit,
    Wait,
    char_time_s,
)


class LinkError(Exception):
    """The port cannot be used (missing device, permission, wrong settings); message says what to do."""


@dataclass
class SerialSettings:
    port: str
    baudrate: int = 2400
    parity: str = "E"
    timeout_s: float = 1.0
    preamble: int = 4
    retries: int = 0
    turnaround_s: float = 0.020

    @property
    def link(self) -> str:
        return f"{self.baudrate} 8{self.parity}1"

    def policy(self) -> ExchangePolicy:
        """The exchange policy for this line; the same fields the daemon takes from ``[[bus]]``."""
        return ExchangePolicy(reply_timeout_s=self.timeout_s, attempts=1 + self.retries,
                              turnaround_s=self.turnaround_s,
                              char_time_s=char_time_s(self.baudrate, self.parity), link=self.link)


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
    except (serial.SerialException, ValueError, OSError, TermiosError) as exc:
        raise LinkError(
            f"cannot open serial port {settings.port}: {exc} — check the device path, that nothing "
            "else holds the port, and your permissions (dialout group)"
        ) from None


def run_transaction(port: serial.SerialBase, request: d.Message, settings: SerialSettings) -> Answered:
    """Send ``request`` and collect the reply (and follow-ups): the blocking I/O shell around
    :class:`~protocols.dlt645.transaction.Exchange`, which makes every decision (timeouts, retries,
    stray frames) exactly as it does for the daemon's bus task.

    Raises :class:`~protocols.dlt645.ExceptionReply` (the meter refused) or a
    :class:`~protocols.dlt645.TransactionError` (no reply, stray replies, garbled reply) whose
    message is the one line to show the user.
    """
    exchange = Exchange(request, settings.policy(), preamble=settings.preamble)
    action = exchange.start(time.monotonic())
    while True:
        if isinstance(action, Transmit):
            wait = action.not_before - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if action.flush_input:
                port.reset_input_buffer()
            port.write(action.frame)
            port.flush()
            action = exchange.sent(time.monotonic())
        elif isinstance(action, Wait):
            # The port's own read timeout (20 ms, see open_port) bounds each read, so the deadline
            # is met within one such slice.
            chunk = port.read(256) if time.monotonic() < action.deadline else b""
            if chunk:
                action = exchange.receive(chunk, time.monotonic())
            else:
                action = exchange.tick(time.monotonic())
        elif isinstance(action, Answered):
            return action
        else:
            raise action.error
