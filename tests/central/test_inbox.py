"""The worker's inbox (central/sources/inbox.py): bounded, batches handed over whole."""

from __future__ import annotations

import threading
import time

from central.sources.inbox import Inbox


def test_take_waits_for_a_whole_batch_then_returns_it_in_order() -> None:
    inbox: Inbox[int] = Inbox(10)
    got: list[list[int]] = []
    taker = threading.Thread(target=lambda: got.append(inbox.take(4, 2.0, 2.0)))
    taker.start()
    for i in range(6):
        assert inbox.put(i, 1.0)
        time.sleep(0.01)
    taker.join(3)
    assert got == [[0, 1, 2, 3]] and len(inbox) == 2
    assert inbox.take(4, 0.1, 0.05) == [4, 5]  # the fill wait ends with what is there


def test_empty_take_and_full_put_time_out() -> None:
    inbox: Inbox[int] = Inbox(2)
    started = time.monotonic()
    assert inbox.take(5, 0.05, 1.0) == [] and time.monotonic() - started < 0.5
    assert inbox.put(1, 0.1) and inbox.put(2, 0.1)
    assert not inbox.put(3, 0.05)  # full: the network thread waits (TCP pushes back)
    assert len(inbox) == 2


def test_a_blocked_put_goes_in_once_a_batch_is_taken() -> None:
    inbox: Inbox[int] = Inbox(2)
    inbox.put(1, 0.1)
    inbox.put(2, 0.1)
    done: list[bool] = []
    putter = threading.Thread(target=lambda: done.append(inbox.put(3, 2.0)))
    putter.start()
    time.sleep(0.05)
    assert not done
    assert inbox.take(2, 0.1, 0.1) == [1, 2]
    putter.join(2)
    assert done == [True] and inbox.take(2, 0.1, 0.01) == [3]


def test_put_many_fills_what_room_there_is_then_waits_for_more() -> None:
    inbox: Inbox[int] = Inbox(3)
    assert inbox.put_many([1, 2], 0.1) == 2
    assert inbox.put_many([3, 4, 5], 0.05) == 1  # room for one; stayed full
    done: list[int] = []
    putter = threading.Thread(target=lambda: done.append(inbox.put_many([4, 5, 6, 7], 2.0)))
    putter.start()
    assert inbox.take(3, 0.1, 0.1) == [1, 2, 3]
    assert inbox.take(3, 1.0, 1.0) == [4, 5, 6]  # woken for the whole batch
    putter.join(2)
    assert done == [4] and inbox.take(3, 0.1, 0.01) == [7]


def test_put_many_wakes_a_taker_waiting_for_a_batch() -> None:
    inbox: Inbox[int] = Inbox(10)
    got: list[list[int]] = []
    taker = threading.Thread(target=lambda: got.append(inbox.take(4, 2.0, 2.0)))
    taker.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert inbox.put_many([1], 0.1) == 1 and inbox.put_many([2, 3, 4, 5], 0.1) == 4
    taker.join(3)
    assert got == [[1, 2, 3, 4]] and time.monotonic() - started < 1.0
