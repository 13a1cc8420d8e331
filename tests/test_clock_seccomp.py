"""Trusted time under the systemd unit's sandbox: ``ProtectClock=yes`` installs a seccomp filter
that answers every ``@clock`` system call with EPERM, the read-only ``adjtimex`` the clock check
uses included. Here the same filter is applied with libseccomp (``pyseccomp``) in a subprocess
(systemd-run is not needed), and the check must still say trusted exactly when the time-sync
daemon's flag file says synchronised (gateway/control/commands/clock.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pyseccomp", reason="pyseccomp (test extra) applies the @clock filter")
if not sys.platform.startswith("linux"):  # pragma: no cover
    pytest.skip("seccomp is Linux-only", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent

#: systemd's @clock set (src/shared/seccomp-util.c), used when systemd-analyze is not installed.
CLOCK_SET = ("adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64",
             "settimeofday")


def clock_syscalls() -> list[str]:
    """The @clock group as this host's systemd defines it, else systemd's list as of v252."""
    tool = shutil.which("systemd-analyze")
    if tool is not None:
        out = subprocess.run([tool, "syscall-filter", "@clock"], capture_output=True, text=True,
                             timeout=30)
        names = [ln.strip() for ln in out.stdout.splitlines()[1:]
                 if ln.strip() and not ln.strip().startswith("#")]
        if out.returncode == 0 and names:
            return names
    return list(CLOCK_SET)


# What the child does: install the filter as ProtectClock=yes does (deny with EPERM, allow the
# rest), prove adjtimex is refused, then ask the daemon's clock built from the config file.
CHILD = r"""
import ctypes, errno, json, sys
from pathlib import Path
import pyseccomp

names = json.loads(sys.argv[2])
f = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
installed = []
for name in names:
    try:
        f.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        installed.append(name)
    except (OSError, ValueError, RuntimeError):
        pass  # not a system call on this architecture (the *64 variants on 64-bit)
f.load()

libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
ret = libc.adjtimex(buf)
adjtimex_errno = ctypes.get_errno() if ret < 0 else 0

from gateway.config import load_config
from gateway.control.commands.clock import TrustedClock, read_kernel_time_state

clock = TrustedClock.from_config(load_config(Path(sys.argv[1])).commands)
print(json.dumps({"installed": installed, "adjtimex_errno": adjtimex_errno,
                  "kernel": read_kernel_time_state() is not None,
                  "trusted": clock.trusted(), "why": clock.why_untrusted()}))
"""


def run_under_clock_filter(config: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-c", CHILD, str(config), json.dumps(clock_syscalls())],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    return out


def write_config(tmp_path: Path, sync_file: Path) -> Path:
    text = (REPO / "configs" / "minimal.toml").read_text().replace('"../var"', '"var"')
    config = tmp_path / "gateway.toml"
    config.write_text(text + f'\n[commands]\nclock_sync_file = "{sync_file}"\n'
                      "clock_sync_max_age_s = 600\n")
    return config


def test_trusted_under_the_filter_when_ntp_says_synchronised(tmp_path: Path) -> None:
    flag = tmp_path / "timesync" / "synchronized"
    flag.parent.mkdir()
    flag.touch()  # what systemd-timesyncd does after each synchronisation
    out = run_under_clock_filter(write_config(tmp_path, flag))
    assert "adjtimex" in out["installed"]
    assert out["adjtimex_errno"] == 1 and out["kernel"] is False  # EPERM: the kernel cannot be asked
    assert out["trusted"] is True, out["why"]
    assert re.search(r"touched \d+ s ago", str(out["why"])), out["why"]


def test_untrusted_under_the_filter_without_the_flag(tmp_path: Path) -> None:
    out = run_under_clock_filter(write_config(tmp_path, tmp_path / "timesync" / "synchronized"))
    assert out["adjtimex_errno"] == 1
    assert out["trusted"] is False
    assert "does not exist" in str(out["why"]) and "ProtectClock" in str(out["why"])


def test_untrusted_under_the_filter_when_the_last_sync_is_too_old(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    old = time.time() - 3600  # an NTP server gone for an hour, limit 600 s
    os.utime(flag, (old, old))
    out = run_under_clock_filter(write_config(tmp_path, flag))
    assert out["trusted"] is False
    assert re.search(r"touched 36\d\d s ago", str(out["why"])), out["why"]


def test_a_readable_kernel_stays_authoritative(tmp_path: Path) -> None:
    """Outside the filter the flag is not consulted: a kernel saying "unsynchronised" wins."""
    from gateway.control.commands.clock import STA_UNSYNC, KernelTimeState, TrustedClock

    flag = tmp_path / "synchronized"
    flag.touch()
    unsynced = KernelTimeState(state=0, status=STA_UNSYNC, maxerror_us=16_000_000, esterror_us=0)
    assert TrustedClock(False, probe=lambda: unsynced, sync_file=flag).trusted() is False
    assert TrustedClock(False, probe=lambda: None, sync_file=flag).trusted() is True
    assert TrustedClock(False, probe=lambda: None, sync_file=None).trusted() is False
