"""Whether the gateway may trust its clock for command freshness (DESIGN.md §6).

Freshness (``iat``/``exp``) only protects anything if "now" is right. A gateway that booted
without a battery-backed RTC starts in 1970 or at its last shutdown; one whose NTP source is gone
drifts. With a wrong clock an expired command looks fresh, so until the clock is trusted the
verifier refuses the actions that open relays (``trip``, ``limit``) outright.

Trusted means one of:

* ``[commands] clock_trusted = true`` in the config (a hardware RTC the operator vouches for, or
  a test rig); or
* the kernel says NTP has disciplined the clock: ``adjtimex(2)`` (read-only, ``modes = 0``, no
  privilege needed) returns a state other than ``TIME_ERROR``, ``STA_UNSYNC`` and
  ``STA_CLOCKERR`` are clear, and ``maxerror`` — the kernel's bound on the clock error, which
  chrony/ntpd/timesyncd set and the kernel grows by 500 ppm while nobody refreshes it — is within
  ``[commands] clock_max_error_ms`` (default 500 ms). Whatever daemon disciplines the clock,
  this is where its verdict lands, so no daemon-specific socket or D-Bus call is needed.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: adjtimex(2) status bits and the clock state meaning "not synchronised".
STA_UNSYNC: Final = 0x0040
STA_CLOCKERR: Final = 0x1000
TIME_ERROR: Final = 5

#: Default bound on the kernel's maxerror: half a second is far below the seconds-scale
#: freshness window and well above what any working NTP setup reports (milliseconds).
DEFAULT_MAX_ERROR_US: Final = 500_000

#: How long one kernel reading is reused; adjtimex is a cheap syscall, but a burst of commands
#: needs no more than one reading per second.
_PROBE_CACHE_S: Final = 1.0


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> as glibc and musl declare it for the native ``long``
    ABI (the un-suffixed ``adjtimex`` symbol ctypes resolves uses this layout on 32-bit targets
    too). The trailing padding is the kernel's reserved tail, so the kernel never writes past us."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


@dataclass(frozen=True, slots=True)
class KernelTimeState:
    """One adjtimex(2) reading: ``state`` (return value, 5 = TIME_ERROR), ``status`` bits,
    ``maxerror_us`` and ``esterror_us`` (microseconds)."""

    state: int
    status: int
    maxerror_us: int
    esterror_us: int

    def synchronised(self, max_error_us: int = DEFAULT_MAX_ERROR_US) -> bool:
        """True when the kernel considers the clock NTP-disciplined within ``max_error_us``."""
        return (
            self.state != TIME_ERROR
            and not self.status & (STA_UNSYNC | STA_CLOCKERR)
            and 0 <= self.maxerror_us <= max_error_us
        )

    def describe(self) -> str:
        flags = [name for bit, name in ((STA_UNSYNC, "STA_UNSYNC"), (STA_CLOCKERR, "STA_CLOCKERR"))
                 if self.status & bit]  # fmt: skip
        state = "TIME_ERROR" if self.state == TIME_ERROR else f"state {self.state}"
        return (
            f"kernel clock {state}, status {self.status:#06x}"
            f"{' (' + ', '.join(flags) + ')' if flags else ''}, maxerror {self.maxerror_us} µs"
        )


def read_kernel_time_state() -> KernelTimeState | None:
    """The kernel's NTP state via adjtimex(2), or None where there is no such call (not Linux,
    a libc without the symbol, a seccomp filter refusing it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = (ctypes.POINTER(_Timex),)
    adjtimex.restype = ctypes.c_int
    tx = _Timex()  # modes = 0: read only
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        return None
    return KernelTimeState(
        state=state, status=tx.status, maxerror_us=tx.maxerror, esterror_us=tx.esterror
    )


class TrustedClock:
    """Answers "may freshness be checked against the system clock?" for the verifier.

    ``configured``: ``[commands] clock_trusted``. ``probe`` reads the kernel state (replaceable
    so that tests can present a synchronised or unsynchronised kernel on any host).
    """

    def __init__(
        self,
        configured: bool,
        *,
        max_error_us: int = DEFAULT_MAX_ERROR_US,
        probe: Callable[[], KernelTimeState | None] = read_kernel_time_state,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = configured
        self.max_error_us = max_error_us
        self._probe = probe
        self._monotonic = monotonic
        self._cached: tuple[float, KernelTimeState | None] | None = None

    def kernel_state(self) -> KernelTimeState | None:
        now = self._monotonic()
        if self._cached is None or now - self._cached[0] >= _PROBE_CACHE_S:
            self._cached = (now, self._probe())
        return self._cached[1]

    def trusted(self) -> bool:
        """True when freshness may be checked (and trip/limit accepted)."""
        if self.configured:
            return True
        state = self.kernel_state()
        return state is not None and state.synchronised(self.max_error_us)

    def why_untrusted(self) -> str:
        """A sentence for the rejection reason and the journal."""
        if self.configured:
            return "clock is trusted by configuration"
        state = self.kernel_state()
        if state is None:
            return (
                "the kernel NTP state cannot be read (adjtimex unavailable) and "
                "[commands] clock_trusted is not set"
            )
        return (
            f"{state.describe()}: not synchronised within {self.max_error_us} µs "
            "([commands] clock_max_error_ms) — start NTP (chrony, systemd-timesyncd) or set "
            "[commands] clock_trusted = true on a host with a trusted RTC"
        )
