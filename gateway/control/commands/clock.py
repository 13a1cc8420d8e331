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
  this is where its verdict lands, so no daemon-specific socket or D-Bus call is needed; or
* **only when the kernel cannot be asked** — the systemd unit's ``ProtectClock=yes`` installs a
  seccomp filter that answers every ``@clock`` call, the read-only ``adjtimex`` included, with
  EPERM (systemd issue #26413) — the time-sync daemon's own flag says so:
  systemd-timesyncd touches ``/run/systemd/timesync/synchronized`` each time it has
  synchronised the clock (``/run`` is a tmpfs: nothing survives a reboot). The file counts while
  its age is within ``[commands] clock_sync_max_age_s`` (default 4200 s, two of timesyncd's
  longest poll intervals, 2048 s): an NTP server gone for longer no longer vouches for the
  clock. ``[commands] clock_sync_file`` names another file (a chrony hook, a test rig).

An EPERM from the kernel therefore never means "untrusted" on its own; a kernel that *can* be
read is authoritative (it is where the sync daemon's verdict lands), so the flag file is not
consulted then. tests/test_clock_seccomp.py runs this check under the unit's ``@clock`` filter.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.config import CommandsSection

#: adjtimex(2) status bits and the clock state meaning "not synchronised".
STA_UNSYNC: Final = 0x0040
STA_CLOCKERR: Final = 0x1000
TIME_ERROR: Final = 5

#: Default bound on the kernel's maxerror: half a second is far below the seconds-scale
#: freshness window and well above what any working NTP setup reports (milliseconds).
DEFAULT_MAX_ERROR_US: Final = 500_000

#: Where systemd-timesyncd leaves its "synchronised" flag, and how old it may be (seconds).
DEFAULT_SYNC_FILE: Final = "/run/systemd/timesync/synchronized"
DEFAULT_SYNC_MAX_AGE_S: Final = 4200

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


@dataclass(frozen=True, slots=True)
class SyncFlagState:
    """The time-sync daemon's flag file: ``path`` and the ``age_s`` of its last touch (None when
    it does not exist or cannot be read)."""

    path: Path
    age_s: float | None

    def synchronised(self, max_age_s: float) -> bool:
        # A touch "in the future" means the clock went back since: nothing to vouch for now.
        return self.age_s is not None and -1.0 <= self.age_s <= max_age_s

    def describe(self, max_age_s: float) -> str:
        if self.age_s is None:
            return f"{self.path} does not exist (no NTP synchronisation reported since boot)"
        if self.age_s < -1.0:
            return f"{self.path} was touched {-self.age_s:.0f} s in the future (clock set back?)"
        return (f"{self.path} was touched {self.age_s:.0f} s ago "
                f"(limit {max_age_s:.0f} s, [commands] clock_sync_max_age_s)")


def read_sync_flag(path: Path, wall: Callable[[], float] = time.time) -> SyncFlagState:
    """The flag file's age by its modification time against the wall clock."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return SyncFlagState(path, None)
    return SyncFlagState(path, wall() - mtime)


class TrustedClock:
    """Answers "may freshness be checked against the system clock?" for the verifier.

    ``configured``: ``[commands] clock_trusted``. ``probe`` reads the kernel state (replaceable
    so that tests can present a synchronised or unsynchronised kernel on any host).
    ``sync_file`` is the sync daemon's flag, read only when the kernel cannot be (None: never).
    """

    def __init__(
        self,
        configured: bool,
        *,
        max_error_us: int = DEFAULT_MAX_ERROR_US,
        probe: Callable[[], KernelTimeState | None] = read_kernel_time_state,
        sync_file: Path | None = None,
        sync_max_age_s: float = DEFAULT_SYNC_MAX_AGE_S,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = configured
        self.max_error_us = max_error_us
        self.sync_file = sync_file
        self.sync_max_age_s = sync_max_age_s
        self._probe = probe
        self._wall = wall
        self._monotonic = monotonic
        self._cached: tuple[float, KernelTimeState | None] | None = None

    @classmethod
    def from_config(cls, commands: CommandsSection) -> TrustedClock:
        """The clock the daemon's verifier uses, from ``[commands]``."""
        return cls(
            commands.clock_trusted,
            max_error_us=commands.clock_max_error_ms * 1000,
            sync_file=Path(commands.clock_sync_file),
            sync_max_age_s=commands.clock_sync_max_age_s,
        )

    def kernel_state(self) -> KernelTimeState | None:
        now = self._monotonic()
        if self._cached is None or now - self._cached[0] >= _PROBE_CACHE_S:
            self._cached = (now, self._probe())
        return self._cached[1]

    def sync_flag(self) -> SyncFlagState | None:
        """The flag file's state, or None when no file is configured."""
        return None if self.sync_file is None else read_sync_flag(self.sync_file, self._wall)

    def trusted(self) -> bool:
        """True when freshness may be checked (and trip/limit accepted)."""
        if self.configured:
            return True
        state = self.kernel_state()
        if state is not None:
            return state.synchronised(self.max_error_us)
        flag = self.sync_flag()
        return flag is not None and flag.synchronised(self.sync_max_age_s)

    def why_untrusted(self) -> str:
        """A sentence for the rejection reason and the journal."""
        if self.configured:
            return "clock is trusted by configuration"
        state = self.kernel_state()
        if state is None:
            flag = self.sync_flag()
            if flag is not None and flag.synchronised(self.sync_max_age_s):
                return f"clock is trusted: {flag.describe(self.sync_max_age_s)}"
            source = ("no [commands] clock_sync_file is set" if flag is None
                      else flag.describe(self.sync_max_age_s))
            return (
                "the kernel NTP state cannot be read (adjtimex refused, e.g. by the unit's "
                f"ProtectClock=yes, or unavailable) and {source} — run systemd-timesyncd, or "
                "set [commands] clock_trusted = true on a host with a trusted RTC"
            )
        return (
            f"{state.describe()}: not synchronised within {self.max_error_us} µs "
            "([commands] clock_max_error_ms) — start NTP (chrony, systemd-timesyncd) or set "
            "[commands] clock_trusted = true on a host with a trusted RTC"
        )
