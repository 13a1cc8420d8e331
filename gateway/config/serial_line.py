"""The parity a configured serial line really gets on this host: pseudo-terminals carry none.

DL/T 645 lines run 8E1, and so do the daemon's and ``gwtool``'s defaults. A hardware-in-the-loop
rig puts simulated meters on Linux pseudo-terminals (``hil_tests``), which move bytes, not bits:
the pty driver has no parity to generate or check. Depending on the kernel it either drops
``PARENB`` silently or refuses it with ``EINVAL``; with pyserial the first open of a fresh pty
typically works and every later open (a daemon restart, a second ``gwtool read``) fails with
``termios.error (22, 'Invalid argument')`` until the simulator makes a new pty. Since parity
never reaches a wire there, such a port is opened 8N1, with one warning that says so; the
line's *timing* keeps the configured parity (11 bits a character at 8E1), which is what the
simulators pace their replies at.

Used by the daemon's serial buses (``gateway.acquisition``) and by ``gwtool``'s meter link
(``firmware_tools``, which may use only this layer of the daemon), so both decide the same way.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from typing import Final

#: Character-device majors of Unix98 pty slaves (/dev/pts/N): 136–143, Linux's
#: Documentation/admin-guide/devices.txt.
PTY_SLAVE_MAJORS: Final = range(136, 144)


def is_pseudo_terminal(port: str) -> bool:
    """True when ``port`` (a device path, possibly a symlink) is a pty slave. pyserial URLs
    (``socket://``, ``rfc2217://``, ``loop://``) and paths that do not exist are not."""
    if "://" in port:
        return False
    try:
        info = os.stat(port)
    except OSError:
        return False
    if not stat.S_ISCHR(info.st_mode):
        return False
    return os.major(info.st_rdev) in PTY_SLAVE_MAJORS or os.path.realpath(port).startswith("/dev/pts/")


@dataclass(frozen=True, slots=True)
class LineParity:
    """``applied`` is the parity to ask the driver for; ``warning`` is None, or the one
    sentence to log when it differs from the ``configured`` parity."""

    configured: str
    applied: str
    warning: str | None


def parity_for_port(port: str, parity: str) -> LineParity:
    """The parity to open ``port`` with, given the ``parity`` the configuration asks for."""
    if parity == "N" or not is_pseudo_terminal(port):
        return LineParity(parity, parity, None)
    return LineParity(
        parity, "N",
        f"{port} is a pseudo-terminal: opened 8N1 instead of 8{parity}1 (Linux ptys carry no "
        "parity bit and refuse to re-apply a parity setting with EINVAL); the line timing keeps "
        f"8{parity}1's 11 bits a character, as the simulated meters pace it",
    )


def _errno_of(exc: BaseException) -> int | None:
    """The errno behind a pyserial, termios or OS error (pyserial puts it on its own exception,
    termios.error carries it as its first argument, or in the message only)."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    if exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    match = re.search(r"\[Errno (\d+)\]|\((\d+), '", str(exc))
    if match:
        return int(match.group(1) or match.group(2))
    return None


def describe_serial_error(port: str, exc: BaseException, doing: str = "open") -> str:
    """One line for a serial failure: what failed and what to check. ``exc`` is whatever
    pyserial, termios or the OS raised (SerialException, termios.error, OSError, ValueError)."""
    number = _errno_of(exc)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ValueError) and "://" in port:
        hint = "the pyserial URL is not understood (socket://host:port, rfc2217://host:port)"
    elif isinstance(exc, ValueError):
        hint = "the line settings are not valid for this port (baud rate, parity E/N/O, 8 data bits)"
    elif number == errno.ENOENT or number == errno.ENODEV or number == errno.ENXIO:
        hint = ("no such device: check the path (ls /dev/ttyUSB* /dev/serial/by-id/) and that the "
                "adapter is plugged in")
    elif number in (errno.EACCES, errno.EPERM):
        hint = ("permission denied: add the user to the dialout group (then log in again), or for "
                "the service check SupplementaryGroups=dialout and DeviceAllow= in the unit")
    elif number in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text:
        hint = ("the port is in use by another process (the edge-gateway service or another tool: "
                f"fuser -v {port}); stop it first")
    elif number == errno.ENOTTY or "Inappropriate ioctl" in text:
        hint = "this is not a serial device (a regular file or another kind of device?)"
    elif number == errno.EINVAL:
        hint = ("the driver refused the line settings: check the baud rate and parity this "
                "adapter supports")
    elif number == errno.EIO or "returned no data" in text:
        # pyserial's words for a hang-up seen as an empty read (no errno).
        hint = "the line went away: the adapter was unplugged or the simulator stopped"
    elif number == errno.ECONNREFUSED:
        hint = "nothing listens at that address: check host and port of the serial server"
    else:
        hint = "check the device path, that nothing else holds the port, and the dialout group"
    return f"cannot {doing} serial port {port}: {text} — {hint}"
