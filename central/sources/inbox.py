"""A bounded hand-over from a network thread to the worker's thread, one wake-up per batch.

``queue.Queue`` wakes the other side on every item: the worker's thread waiting for a batch to
fill woke up for each message put, and paho's thread blocked on a full inbox woke up for each
message taken — two threads ping-ponging the GIL once a message (py-spy of a worker in
bench/bench_central_mqtt.py, docs/performance.md, issue 15). Here the taker is woken when the
first item arrives and then only when a whole batch is there (or its wait is over), and takes the
batch in one go; a putter blocked on a full inbox is woken once that batch is gone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["Inbox"]

T = TypeVar("T")


class Inbox(Generic[T]):
    """At most ``maxsize`` items; :meth:`put` from one thread, :meth:`take` from another."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)  # the taker waits on it
        self._freed = threading.Condition(self._lock)  # a putter waits on it
        self._want = 1  # how many items the waiting taker needs to be worth waking

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, timeout: float) -> bool:
        """Append ``item``, waiting up to ``timeout`` s while the inbox is full; False if it
        stayed full."""
        return self.put_many((item,), timeout) == 1

    def put_many(self, items: Sequence[T], timeout: float) -> int:
        """Append ``items`` in order, as many at a time as there is room for, waiting up to
        ``timeout`` s each time the inbox is full; how many went in (fewer when it stayed
        full). The taker is woken as :meth:`put` would, once for the batch it waits for."""
        done = 0
        with self._lock:
            while done < len(items):
                room = self._maxsize - len(self._items)
                if room <= 0:
                    if not self._freed.wait_for(lambda: len(self._items) < self._maxsize,
                                                timeout):
                        break
                    continue
                before = len(self._items)
                self._items.extend(items[done:done + room])
                done += min(room, len(items) - done)
                if before < self._want <= len(self._items):
                    self._filled.notify()
        return done

    def take(self, max_n: int, first_s: float, fill_s: float) -> list[T]:
        """Up to ``max_n`` items: waits up to ``first_s`` for the first, then up to ``fill_s``
        more for ``max_n`` to be there; empty if nothing came."""
        with self._lock:
            self._want = 1
            if not self._items and not self._filled.wait_for(lambda: bool(self._items), first_s):
                return []
            deadline = time.monotonic() + fill_s
            self._want = min(max_n, self._maxsize)
            while len(self._items) < self._want:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._filled.wait(left)
            self._want = 1
            n = min(max_n, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            self._freed.notify_all()
            return batch
