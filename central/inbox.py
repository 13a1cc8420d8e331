"""The bounded hand-off between a worker's network thread and its storing thread, in batches.

``queue.Queue`` hands over one message at a time: every ``get`` wakes the network thread
waiting to ``put`` into a full queue, and every ``put`` wakes the storing thread waiting to fill
its batch. With a backlog (the inbox always full) that is two thread switches per message; in
bench/bench_central_mqtt.py a lone worker, always behind, spent about twice the CPU per value of
each of two workers (docs/performance.md, issue 15). Here the storing thread is woken when a
whole batch is there (or the first message of an empty inbox), takes the batch under one lock,
and a full inbox lets the network thread in again only once it has drained to ``resume_below``
— so both threads switch once per batch. The bound is the same: never more than ``capacity``
messages held (the worker's memory does not grow with the broker's backlog; docs/central.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Inbox"]

T = TypeVar("T")


class Inbox(Generic[T]):
    """At most ``capacity`` items; :meth:`take` returns up to ``batch`` of them at once."""

    def __init__(self, capacity: int, batch: int, resume_below: int) -> None:
        if not 0 < batch <= capacity or not 0 <= resume_below < capacity:
            raise ValueError("need 0 < batch <= capacity and 0 <= resume_below < capacity")
        self._items: deque[T] = deque()
        self._capacity, self._batch, self._resume_below = capacity, batch, resume_below
        self._full = False
        lock = threading.Lock()
        self._ready = threading.Condition(lock)  # the storing thread waits on it
        self._room = threading.Condition(lock)  # the network thread waits on it

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, timeout: float) -> bool:
        """Add ``item``, waiting up to ``timeout`` s while the inbox is full (or has not yet
        drained below ``resume_below`` since it was); False if it did not fit in time."""
        with self._room:
            if len(self._items) >= self._capacity:
                self._full = True
            if self._full:
                end = time.monotonic() + timeout
                while self._full:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._room.wait(left)
            self._items.append(item)
            size = len(self._items)
            if size == 1 or size >= self._batch:
                self._ready.notify()
            return True

    def take(self, first_wait: float, fill_wait: float) -> list[T]:
        """Up to ``batch`` items: waits up to ``first_wait`` s for one, then up to
        ``fill_wait`` s more for a whole batch; [] if none came."""
        with self._ready:
            if not self._items:
                self._ready.wait(first_wait)
                if not self._items:
                    return []
            if len(self._items) < self._batch:
                end = time.monotonic() + fill_wait
                while len(self._items) < self._batch:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
            n = min(self._batch, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            if self._full and len(self._items) <= self._resume_below:
                self._full = False
                self._room.notify_all()
            return out
