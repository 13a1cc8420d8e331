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


class Ballast:
    """A reserve file in the data directory, given up when the disk fills.

    On a full disk SQLite cannot commit anything — not the polls held in memory, not the
    ``disk.full`` alarm, not even the acknowledgements that would let retention free space. The
    ballast is room set aside while there is plenty: when the store reports the disk full, the
    ballast is deleted and that room is the store's, so what is held can be committed and the
    alarm can travel through the outbox. It is laid again once free space is back above the
    alarm threshold plus its own size. Written with real blocks (not a sparse file), so the
    filesystem has really reserved the space.
    """

    CHUNK = 1 << 16

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes

    @property
    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size_bytes > 0
        except OSError:
            return False

    def lay(self) -> bool:
        """Write the reserve if it is missing; False (and nothing left behind) when the disk has
        no room for it."""
        if self.size_bytes <= 0 or self.present:
            return self.present
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                zeros = bytes(self.CHUNK)
                left = self.size_bytes
                while left > 0:
                    left -= f.write(zeros[:min(left, self.CHUNK)])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> int:
        """Delete the reserve; returns the bytes given back (0 when there was none)."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except OSError:
            return 0
        return size
