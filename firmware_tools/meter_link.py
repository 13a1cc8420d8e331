"""A blocking DL/T 645 master for field tools: one transaction at a time on a serial port.

The daemon has its own asyncio bus task; a field engineer's laptop needs none of that, only a
request, a wait and a clear answer. The exchange itself (timeouts, retries, what counts as a stray or
garbled frame) is :class:`protocols.dlt645.transaction.Exchange`, the same driver the daemon's bus
task runs; this module only moves its bytes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import serial

from gateway.config.serial_line import describe_serial_error, parity_for_port
from protocols import dlt645 as d
from protocols.dlt645.transaction import (
    Answered,
    Exchange,
    ExchangePolicy,
    Transmit,
    Wait,
    char_time_s,
)

from .errors import ToolError


class LinkError(ToolError):
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


# termios exists on POSIX only; a field laptop may run Windows, where pyserial raises its own.
if sys.platform == "win32":
    _TERMIOS_ERRORS: tuple[type[Exception], ...] = ()
else:
    import termios

    _TERMIOS_ERRORS = (termios.error,)

#: Errors a port raises while in use: pyserial's own, the termios module's (not an OSError), the OS's.
IO_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, *_TERMIOS_ERRORS)
#: ... and on open also ValueError, for settings or URLs pyserial rejects.
SERIAL_ERRORS: tuple[type[Exception], ...] = (*IO_ERRORS, ValueError)

#: Ports the pty parity fallback was reported for (``discover`` re-opens the port per baud rate).
_parity_warned: set[str] = set()


def open_port(settings: SerialSettings) -> serial.SerialBase:
    """Open a serial port or pyserial URL; any failure becomes one actionable line.

    Exclusive, as the daemon opens it, so a port the service holds is reported busy instead of
    two masters talking over each other. A pseudo-terminal is opened 8N1 whatever the parity
    (:mod:`gateway.config.serial_line`), with one warning on stderr."""
    parities = {"E": serial.PARITY_EVEN, "N": serial.PARITY_NONE, "O": serial.PARITY_ODD}
    if settings.parity not in parities:
        raise LinkError(f"parity must be E, N or O, got {settings.parity!r}")
    line = parity_for_port(settings.port, settings.parity)
    if line.warning is not None and settings.port not in _parity_warned:
        _parity_warned.add(settings.port)
        print(f"gwtool: warning: {line.warning}", file=sys.stderr)
    try:
        return serial.serial_for_url(
            settings.port, baudrate=settings.baudrate, parity=parities[line.applied], bytesize=8,
            stopbits=1, timeout=0.02, exclusive=True,
        )
    except SERIAL_ERRORS as exc:
        raise LinkError(describe_serial_error(settings.port, exc)) from None


def run_transaction(port: serial.SerialBase, request: d.Message, settings: SerialSettings) -> Answered:
    """Send ``request`` and collect the reply (and follow-ups): the blocking I/O shell around
    :class:`~protocols.dlt645.transaction.Exchange`, which makes every decision (timeouts, retries,
    stray frames) exactly as it does for the daemon's bus task.

    Raises :class:`~protocols.dlt645.ExceptionReply` (the meter refused), a
    :class:`~protocols.dlt645.TransactionError` (no reply, stray replies, garbled reply) or
    :class:`LinkError` (the port failed under us: adapter unplugged, simulator gone) whose
    message is the one line to show the user.
    """
    try:
        return _exchange(port, request, settings)
    except IO_ERRORS as exc:
        raise LinkError(describe_serial_error(settings.port, exc, "use")) from None


def _exchange(port: serial.SerialBase, request: d.Message, settings: SerialSettings) -> Answered:
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
