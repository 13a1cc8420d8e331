"""gateway/app/heap.py: start-up objects leave the collector's walks, a reload gives them back,
the young generation is collected less often, and freed heap pages go back to the kernel."""

from __future__ import annotations

import asyncio
import gc
import platform
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.app import daemon
from gateway.app.heap import YOUNG_THRESHOLD, freeze_long_lived, release_free_memory, thaw


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_freeze_takes_live_objects_out_and_thaw_gives_them_back() -> None:
    kept = [Node() for _ in range(100)]
    frozen = freeze_long_lived()
    assert frozen >= 100 and gc.get_freeze_count() == frozen
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert not any(obj is kept[0] for obj in gc.get_objects())  # no longer walked
    thaw()
    assert gc.get_freeze_count() == 0
    assert any(obj is kept[0] for obj in gc.get_objects())


def test_cycles_made_after_the_freeze_are_still_collected() -> None:
    freeze_long_lived()
    Node()  # garbage at once, held only by its own cycle
    assert gc.collect() >= 1


def test_cycles_dropped_after_a_thaw_are_collected() -> None:
    node = Node()
    freeze_long_lived()
    thaw()  # what a reload does before it drops the old runtime
    del node
    assert gc.collect() >= 1


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_free_heap_pages_go_back_to_the_kernel() -> None:
    """64 MiB freed below a block still in use stay in glibc's heap (it shrinks only from its
    top) until release_free_memory hands them back."""
    blocks = [bytes(4096) for _ in range(16_384)]  # through malloc: above pymalloc's 512 bytes
    pin = bytes(4096)  # allocated above them
    del blocks
    before = _rss_kib()
    assert release_free_memory()
    assert before - _rss_kib() > 32 * 1024
    assert len(pin) == 4096


def test_the_maintenance_loop_releases_free_memory_after_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def release() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(daemon, "TRIM_FIRST_S", 0.0)
    monkeypatch.setattr(daemon, "release_free_memory", release)
    owner = SimpleNamespace(runtime=None, guard=None)

    async def run_briefly() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(daemon.GatewayDaemon._maintenance_loop(owner), 0.2)  # type: ignore[arg-type]

    asyncio.run(run_briefly())
    assert calls == [1]  # the next one only TRIM_INTERVAL_S later
