"""The systemd unit's system call filter, applied without systemd: for tests that run the daemon
(or a piece of it) under the same seccomp policy as systemd/edge-gateway.service.

``SystemCallFilter=`` lines are read from the unit and their groups expanded with
``systemd-analyze syscall-filter`` (so the sets are this host's systemd's, not a copy);
``ProtectClock=yes`` removes ``@clock``. The policy is loaded with libseccomp (``pyseccomp``) in a
small wrapper that then execs the real command, as systemd does before it execs ExecStart=;
refused calls fail with the unit's ``SystemCallErrorNumber=``.
"""

from __future__ import annotations

import errno
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edge-gateway.service"

# Run as: python -c WRAPPER '<json: allowed names, errno name>' command args...
WRAPPER = r"""
import errno, json, os, sys
import pyseccomp
policy = json.loads(sys.argv[1])
f = pyseccomp.SyscallFilter(defaction=pyseccomp.ERRNO(getattr(errno, policy["errno"])))
for name in policy["allow"]:
    try:
        f.add_rule(pyseccomp.ALLOW, name)
    except (OSError, ValueError, RuntimeError):
        pass  # not a system call of this architecture
f.load()
os.execv(sys.argv[2], sys.argv[2:])
"""


def analyze() -> str | None:
    return shutil.which("systemd-analyze")


@functools.cache
def expand(name: str) -> frozenset[str]:
    """The system calls of a group (``@system-service``) or a single call, nested groups included."""
    if not name.startswith("@"):
        return frozenset({name})
    tool = analyze()
    assert tool is not None, "systemd-analyze is needed to expand system call groups"
    out = subprocess.run([tool, "syscall-filter", name], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry)
    return frozenset(names)


def unit_service(path: Path = UNIT) -> list[tuple[str, str]]:
    """The [Service] section's (key, value) pairs in order (keys repeat, which configparser
    cannot keep)."""
    pairs: list[tuple[str, str]] = []
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            pairs.append((key, value))
    return pairs


def allowed_syscalls(path: Path = UNIT) -> frozenset[str]:
    """What the unit's filter lets through: systemd's rules for an allow list followed by ``~``
    lines (they remove from it), and ProtectClock=yes (removes @clock)."""
    allowed: set[str] | None = None
    pairs = unit_service(path)
    for key, value in pairs:
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names: set[str] = set()
        for item in value.lstrip("~").split():
            names |= expand(item)
        if allowed is None:
            assert not deny, "the unit's filter is an allow list"
            allowed = set(names)
        elif deny:
            allowed -= names
        else:
            allowed |= names
    assert allowed is not None, "the unit has no SystemCallFilter="
    if ("ProtectClock", "yes") in pairs:
        allowed -= expand("@clock")
    return frozenset(allowed)


def error_number(path: Path = UNIT) -> str:
    for key, value in unit_service(path):
        if key == "SystemCallErrorNumber":
            return value
    return "EPERM"


def sandboxed(argv: list[str], path: Path = UNIT) -> list[str]:
    """``argv`` wrapped so that it runs under the unit's system call filter."""
    policy = {"allow": sorted(allowed_syscalls(path)), "errno": error_number(path)}
    assert hasattr(errno, policy["errno"])
    return [sys.executable, "-c", WRAPPER, json.dumps(policy), *argv]
