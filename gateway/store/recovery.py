"""Integrity check at open, and moving a damaged database aside.

A damaged store is never repaired in place, silently recreated, or deleted: its unacknowledged
rows may be the only copy of weeks of reads, which ``sqlite3 FILE .recover`` can often salvage.
The file (with its ``-wal`` and ``-shm``) is renamed to ``<name>.corrupt-<UTC timestamp>`` so the
daemon can start on a fresh database and keep collecting, and the rename is logged and recorded as
an alarm in the new database.

The WAL must move with the database: it holds the most recent commits, which are part of what
``.recover`` can salvage, and left behind it would be discarded when the fresh database is
switched to WAL mode (or, were it ever beside a WAL-mode database, replayed into it — SQLite does
not check that a WAL belongs to its database). Moved as ``<name>.corrupt-<ts>-wal``, it still
pairs with the moved database.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.store.errors import StoreError

log = logging.getLogger("gateway.store")


@dataclass(frozen=True, slots=True)
class StoreRecovery:
    """A damaged database found at open and moved aside: the ``store.corrupt`` alarm's facts."""

    path: Path
    moved_to: Path
    problem: str
    found_ms: int

    def details(self) -> dict[str, object]:
        """The alarm's details: both files, what was wrong, and how to salvage the old one."""
        return {
            "path": str(self.path), "moved_to": str(self.moved_to), "problem": self.problem,
            "hint": f"unacknowledged messages may be salvaged with `sqlite3 {self.moved_to} "
                    ".recover`",
        }


# Primary result codes that mean "this file is damaged" — as opposed to locked, unreadable or on a
# failing device, where moving the file would only hide the real problem.
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# Primary result codes that mean "the file or its directory cannot be used": permissions, a
# read-only mount, a missing directory, an I/O error of the device. Nothing the gateway can fix.
_UNUSABLE_CODES = frozenset({
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_AUTH,
})
#: What the operator can do when the data directory cannot be written.
WRITABLE_HINT = (
    "make the data_dir writable by the gateway user and check its filesystem is mounted "
    "read-write and not full (or set [gateway] data_dir to a directory that is)"
)
_SIDE_FILES = ("-wal", "-shm", "-journal")


def integrity_problem(path: Path, busy_timeout_s: float = 5.0) -> str | None:
    """Run ``PRAGMA quick_check`` on an existing database: None when healthy, otherwise what is
    wrong. Raises StoreError when the file cannot be checked for a reason other than damage.

    The check connection is read-only: a read-write one would checkpoint the WAL into the damaged
    file when it closes, and delete the WAL — destroying exactly the evidence (and the most
    recent commits) that a later ``.recover`` needs.
    """
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=busy_timeout_s
        )
    except sqlite3.Error as exc:
        raise StoreError(f"store {path}: cannot open ({exc}); {WRITABLE_HINT}") from exc
    try:
        rows = conn.execute("PRAGMA quick_check(20)").fetchall()
    except sqlite3.DatabaseError as exc:
        if primary_code(exc) in _DAMAGE_CODES:
            return str(exc)
        if primary_code(exc) in _UNUSABLE_CODES:
            raise StoreError(f"store {path}: cannot be read ({exc}); {WRITABLE_HINT}") from exc
        raise StoreError(
            f"store {path}: integrity check could not run ({exc}); is another process holding it?"
        ) from exc
    finally:
        conn.close()
    findings = [str(row[0]) for row in rows]
    if findings == ["ok"]:
        return None
    return "; ".join(findings)


def primary_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of ``exc`` (0 when it carries none)."""
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def unusable_file(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file or its directory cannot be used (permissions, a read-only
    mount, an I/O error) rather than that its content is wrong."""
    return primary_code(exc) in _UNUSABLE_CODES


def move_aside(path: Path, problem: str, now: dt.datetime | None = None) -> Path:
    """Rename the damaged database and its side files; return the new database path."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 1
    while any(Path(f"{target}{side}").exists() for side in ("", *_SIDE_FILES)):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
        suffix += 1
    if path.exists():
        os.rename(path, target)
    for side in _SIDE_FILES:
        source = Path(f"{path}{side}")
        if source.exists():
            os.rename(source, Path(f"{target}{side}"))
    _fsync_directory(path.parent)
    log.error(
        "store %s is damaged (%s); moved it aside to %s and started a new, empty store. "
        "Messages not yet acknowledged by the broker are in the moved file: salvage them with "
        "`sqlite3 %s .recover`.",
        path,
        problem,
        target,
        target,
    )
    return target


def orphaned_side_files(path: Path) -> bool:
    """Whether a ``-wal`` or ``-journal`` lies there without its database (someone deleted only
    the main file). Creating a new database under the same name would silently discard it —
    switching the new file to WAL mode resets the log — and with it commits that may never have
    been published, so it is moved aside like a damaged database."""
    return not path.exists() and any(
        Path(f"{path}{side}").exists() for side in ("-wal", "-journal")
    )


def _fsync_directory(directory: Path) -> None:
    # A rename is only durable once the directory entry is on disk; without this, power loss
    # right after could bring the damaged file back under its old name beside a new one.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
