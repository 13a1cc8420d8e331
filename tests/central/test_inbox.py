"""central/inbox.py: bounded, handed over a batch at a time, the writer let in again only once
a full inbox drained to its mark."""

from __future__ import annotations

import threading
import time

import pytest

from central.inbox import Inbox


def test_bound_batches_and_resume_mark() -> None:
    box: Inbox[int] = Inbox(capacity=6, batch=3, resume_below=3)
    assert box.take(0.01, 0.01) == []
    assert all(box.put(i, 0.01) for i in range(6))
    assert not box.put(6, 0.05)  # full: waits, then gives up
    assert box.take(0.01, 0.01) == [0, 1, 2]  # down to 3: the mark, the writer may go on
    assert box.put(6, 0.01) and box.put(7, 0.01) and box.put(8, 0.01)
    assert not box.put(9, 0.01) and len(box) == 6  # never more than capacity held
    assert box.take(0.01, 0.01) == [3, 4, 5]
    assert box.take(0.01, 0.01) == [6, 7, 8]
    assert box.put(9, 0.01) and box.take(0.01, 0.01) == [9]  # a partial batch after fill_wait


def test_a_full_inbox_resumes_only_below_the_mark() -> None:
    box: Inbox[int] = Inbox(capacity=4, batch=1, resume_below=1)
    for i in range(4):
        assert box.put(i, 0.01)
    assert not box.put(4, 0.01)  # met full: closed until drained to the mark
    assert box.take(0.01, 0.01) == [0]
    assert not box.put(4, 0.01)  # 3 held, above the mark of 1: still closed
    assert box.take(0.01, 0.01) == [1] and box.take(0.01, 0.01) == [2]
    assert box.put(4, 0.01)  # 1 held: open again


def test_threads_hand_over_everything_in_order() -> None:
    box: Inbox[int] = Inbox(capacity=200, batch=100, resume_below=100)
    got: list[int] = []

    def reader() -> None:
        while len(got) < 10_000:
            got.extend(box.take(0.5, 0.05))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(10_000):
        assert box.put(i, 5)
    t.join(10)
    assert got == list(range(10_000))


def test_the_reader_is_woken_by_a_whole_batch_not_by_each_item() -> None:
    box: Inbox[int] = Inbox(capacity=20, batch=10, resume_below=10)
    out: list[list[int]] = []
    t = threading.Thread(target=lambda: out.append(box.take(1.0, 5.0)))
    t.start()
    box.put(0, 0.1)  # wakes it for the first item; it then waits for a whole batch
    time.sleep(0.05)
    for i in range(1, 10):
        box.put(i, 0.1)
    t.join(2)  # well before fill_wait (5 s): the tenth item completed the batch
    assert out == [list(range(10))]


def test_bad_sizes_refused() -> None:
    with pytest.raises(ValueError):
        Inbox(capacity=2, batch=3, resume_below=1)
