"""The file side of applying a bundle: switch the configuration and profiles, put them back.

Each file is replaced with :func:`gateway.store.files.write_atomically` after its current
content was kept as ``<file>.rollback``; the daemon reads these files only when it builds a plan
(start, SIGHUP, a bundle), so the running gateway sees the set switch at once, at the reload.

A crash between the first write and the verdict would leave a mix, so a marker file
(``.bundle-switch`` beside the config) lists what is being switched while it is; the next start
finds it and puts every file back before reading the configuration (:func:`recover_switch`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.store.files import write_atomically

log = logging.getLogger("gateway")

MARKER: Final = ".bundle-switch"
ROLLBACK_SUFFIX: Final = ".rollback"


@dataclass(frozen=True, slots=True)
class FileSwitch:
    """The files one bundle replaces: ``(path, new bytes)`` in order, beside config ``marker``."""

    marker: Path
    files: tuple[tuple[Path, bytes], ...]

    @classmethod
    def plan(cls, config_path: Path, files: Sequence[tuple[Path, bytes]]) -> FileSwitch:
        return cls(config_path.parent / MARKER, tuple(files))

    def switch(self) -> None:
        """Keep each current file as ``.rollback`` and write the new one. OSError: whatever was
        already written is put back before it propagates."""
        entries = [{"path": str(path), "existed": path.exists()} for path, _ in self.files]
        write_atomically(self.marker, json.dumps(entries).encode())
        try:
            for path, data in self.files:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists():
                    write_atomically(_rollback(path), path.read_bytes())
                write_atomically(path, data)
        except OSError:
            recover_switch(self.marker)
            raise

    def restore(self) -> None:
        """Put the previous files back (a file the bundle added is removed)."""
        recover_switch(self.marker)

    def commit(self) -> None:
        """The new files stay: drop the copies and the marker."""
        for path, _ in self.files:
            _rollback(path).unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)


def recover_switch(marker: Path) -> bool:
    """Undo a switch that ``marker`` says was under way; True if there was one. Called at start
    (a crash mid-switch) and by :meth:`FileSwitch.restore`."""
    try:
        entries = [(Path(e["path"]), bool(e["existed"])) for e in json.loads(marker.read_bytes())]
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("bundle switch marker %s is unreadable (%s): check the configuration files "
                  "and their .rollback copies by hand", marker, exc)
        return False
    for path, existed in entries:
        copy = _rollback(path)
        if copy.exists():
            write_atomically(path, copy.read_bytes())
            copy.unlink()
        elif not existed:
            path.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    return True


def _rollback(path: Path) -> Path:
    return path.with_name(path.name + ROLLBACK_SUFFIX)
