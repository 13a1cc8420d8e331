"""Broker restart while the disk is full (issue 12, item 4), on real filesystems.

The data directory is a size-limited tmpfs; once the daemon runs, a filler file takes every free
byte, so the store's commits fail (ENOSPC) and polls are held in memory. The broker is restarted
on the same port during that episode. The link must come back — a new retained birth with a
higher `bdseq` on `P/G/state` — while the disk is still full, because connecting writes nothing
to the store (the bdseq file is preallocated and written in place). Removing the filler lets the
held reads commit and flow again, and every committed outbox row reaches the subscriber.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, wait_until
from tests.test_e2e_delivery import _all_acked, _check_delivery


@pytest.fixture
def tmpfs_data_dir(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path/var` (the rig's data_dir) as a 24 MiB tmpfs; skipped where mounting is not
    permitted."""
    var = tmp_path / "var"
    var.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        print("skipping: mounting a tmpfs needs root and mount(8)")
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(var)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"skipping: cannot mount a tmpfs: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield var
    finally:
        subprocess.run(["umount", "-l", str(var)], check=False)


def fill(path: Path) -> int:
    """Write `path` until the filesystem says ENOSPC; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 512):
            block = b"\0" * chunk
            while True:
                try:
                    written += f.write(block) or 0
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return written


def births(observer: Observer, topic: str) -> list[dict[str, Any]]:
    return [m for t, m in decoded(observer, topic) if t == topic and m.get("online") is True]


def test_broker_restart_while_the_disk_is_full_reconnects_and_loses_nothing(
    tmp_path: Path, tmpfs_data_dir: Path
) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        state = rig.topic("state")
        with Observer(rig.broker, "mtr/v1/#", client_id="diskfull-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: births(observer, state)
                              and len(decoded(observer, rig.topic("reads/"))) >= 6, 30), \
                rig.log_text()[-3000:]
            first_bdseq = births(observer, state)[-1]["bdseq"]
            filler = tmpfs_data_dir / "filler"
            fill(filler)
            # The store refuses commits now: polls are held in memory.
            assert wait_until(lambda: "holding" in rig.log_text(), 20), rig.log_text()[-3000:]

            rig.broker.stop()
            time.sleep(1.0)
            rig.broker.start()  # same port, same persistence
            assert wait_until(
                lambda: any(b["bdseq"] > first_bdseq for b in births(observer, state)), 20
            ), rig.log_text()[-3000:]
            stats = os.statvfs(tmpfs_data_dir)
            assert stats.f_bavail * stats.f_frsize < 64 * 1024, "the disk must still be full"
            assert rig.process is not None and rig.process.poll() is None

            reads_when_full = len(decoded(observer, rig.topic("reads/")))
            filler.unlink()
            freed_ms = time.time_ns() // 1_000_000
            assert wait_until(
                lambda: any(m["ts"] > freed_ms for _t, m in decoded(observer, rig.topic("reads/"))),
                30,
            ), rig.log_text()[-3000:]
            assert len(decoded(observer, rig.topic("reads/"))) > reads_when_full
            assert wait_until(lambda: _all_acked(rig), 60), rig.log_text()[-3000:]
            time.sleep(1.5)
            assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
            time.sleep(0.5)
        figures = _check_delivery(rig, observer)
        log_text = rig.log_text()
        # Connection failures while the broker was down: one line each kind, no traceback.
        mqtt_lines = [line for line in log_text.splitlines() if "refused TCP connection" in line]
        assert len(mqtt_lines) <= 1, mqtt_lines
        with contextlib.suppress(ValueError):
            tail = log_text[log_text.index("Traceback"):][:2000]
            assert "gateway/uplink" not in tail, tail
        print(f"disk full + broker restart: {figures}, births "
              f"{[b['bdseq'] for b in births(observer, state)]}")
