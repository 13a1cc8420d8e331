"""A small tmpfs that a test can turn read-only, as a data filesystem goes after an I/O error.

Needs root (or CAP_SYS_ADMIN); where mounting is not permitted the test is skipped and the
reason printed. The mount is always undone.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a ``size`` tmpfs on ``where`` (created); unmounted on exit."""
    where.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    try:
        yield where
    finally:
        _run("umount", "-l", str(where))


def remount_readonly(where: Path) -> None:
    done = _run("mount", "-o", "remount,ro", str(where))
    if done.returncode != 0:
        reason = f"cannot remount {where} read-only ({done.stderr.strip() or done.returncode})"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
