"""Health figures: process memory, event-loop lag, and a periodic snapshot for ``P/G/health``."""

from __future__ import annotations

import asyncio
import os
import resource
import time


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), falling back to the peak from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeper: a busy or blocked loop shows up here first."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0

    async def run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = time.monotonic() - t0 - self.interval_s
            self.last_lag_s = max(0.0, lag)
            self.max_lag_s = max(self.max_lag_s, self.last_lag_s)

    def take_max(self) -> float:
        value, self.max_lag_s = self.max_lag_s, self.last_lag_s
        return value
