"""gateway/app/heap.py: start-up objects leave the collector's walks, a reload gives them back,
and the young generation is collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.app.heap import YOUNG_THRESHOLD, freeze_long_lived, thaw


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
