"""Free space on the filesystem that holds the database."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.store.records import DiskStatus


def disk_status(directory: Path, min_free_mb: float, min_free_pct: float) -> DiskStatus:
    """Measure the filesystem of ``directory``. Counts the blocks available to an unprivileged
    process (``f_bavail``), not the root reserve: the daemon should not rely on space that only
    root may use, and the reserve is what keeps the rest of the system (journald, sshd) alive."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    total = stats.f_blocks * stats.f_frsize
    too_few_bytes = free < min_free_mb * 2**20
    too_few_pct = total > 0 and free * 100.0 / total < min_free_pct
    return DiskStatus(free_bytes=free, total_bytes=total, alarm=too_few_bytes or too_few_pct)
