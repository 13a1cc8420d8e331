"""Small state files written so that a crash, a power cut or an I/O error leaves either the old
content or the new one, never an empty or half-written file.

The daemon keeps a few files beside its SQLite store: the result-signing key, the load-control
state, planned-outage windows, spills of held messages. Each is written to a temporary name,
fsynced, renamed over the old one, and the directory is fsynced so the rename itself survives a
power cut (found the hard way: an ext4 that went read-only seconds after the first start lost an
unsynced key file, and every later start failed on it).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably. Raises ``OSError`` (nothing is left behind but
    the old file) when the filesystem refuses."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
