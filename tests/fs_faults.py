"""Real filesystem faults for tests: a size-limited tmpfs that can be filled and remounted
read-only. Needs root (mount); tests using it are skipped with the reason where it is refused."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(args[0]) is None:
        pytest.skip(f"{args[0]} is not installed (util-linux, e2fsprogs)")
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


class Tmpfs:
    """A mounted tmpfs of a fixed size at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def remount(self, mode: str) -> None:
        result = _run("mount", "-o", f"remount,{mode}", str(self.path))
        assert result.returncode == 0, result.stderr

    def fill(self, name: str = "filler") -> Path:
        """Write a file until the filesystem is full (ENOSPC)."""
        filler = self.path / name
        chunk = bytes(64 * 1024)
        with open(filler, "ab") as f:
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError:
                pass
        with contextlib.suppress(OSError):
            os.truncate(filler, os.path.getsize(filler))
        return filler

    def free(self, filler: Path, nbytes: int) -> None:
        """Give back ``nbytes`` of the filler."""
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - nbytes))

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Tmpfs]:
    path.mkdir(parents=True, exist_ok=True)
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'}): "
                    "these tests need root")
    try:
        yield Tmpfs(path)
    finally:
        _run("mount", "-o", "remount,rw", str(path))
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


class Ext4:
    """An ext4 image on a loop device mounted ``errors=remount-ro``, as gateways mount their
    data partition: :meth:`fail` makes the kernel report a filesystem error, which remounts it
    read-only ("emergency_ro") under every open file, as an I/O error on worn flash does.
    Writable again only after unmount, fsck and mount (:meth:`repair`)."""

    def __init__(self, image: Path, path: Path) -> None:
        self.image = image
        self.path = path

    @property
    def device(self) -> str:
        return _run("findmnt", "-n", "-o", "SOURCE", str(self.path)).stdout.strip()

    def fail(self) -> None:
        name = self.device.rsplit("/", 1)[-1]
        trigger = Path(f"/sys/fs/ext4/{name}/trigger_fs_error")
        if not trigger.exists():
            pytest.skip(f"{trigger} does not exist: this kernel cannot inject an ext4 error")
        trigger.write_text("test: injected by the test suite\n")

    def repair(self) -> None:
        """Unmount (lazily only if a process still holds files there), fsck, mount again."""
        _run("sync")
        if _run("umount", str(self.path)).returncode != 0:
            _run("umount", "-l", str(self.path))
        _run("e2fsck", "-fy", str(self.image))
        result = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.path))
        assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def ext4(tmp: Path, path: Path, size_mb: int = 16) -> Iterator[Ext4]:
    image = tmp / "data.ext4"
    path.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    made = _run("mkfs.ext4", "-q", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed ({made.stderr.strip()})")
    mounted = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here ({mounted.stderr.strip() or 'refused'}): "
                    "these tests need root")
    try:
        yield Ext4(image, path)
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))
