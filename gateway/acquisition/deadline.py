"""A bound on each of a task's successive awaits, with one timer instead of one per await.

A Modbus bus bounds every register read with ``asyncio.timeout(2 × timeout)`` around pymodbus's
own timeout, to catch a client that hangs. Each ``asyncio.timeout`` starts and stops a loop timer
(under uvloop a libuv timer is made and closed) and runs two coroutine frames: at a hundred meters
polled each second that was about 3 % of the daemon's CPU (py-spy, docs/performance.md, issue 18),
while the timer fired for none of them.

:class:`Deadlines` gives the same bound to the awaits of one task, one at a time: entering notes
the deadline (loop time + ``delay``); the timer, started by the first await, fires at that
deadline and, if the await in flight then is not yet due (a later one, the earlier finished),
starts again at *its* deadline — so it fires about once per ``delay``, whatever the rate of awaits,
and an await that overruns is cancelled at its own deadline (give or take the loop's timer
resolution, as with ``asyncio.timeout``). What happens then is ``asyncio.timeout``'s own rule
(Python 3.11, asyncio/timeouts.py): the task is cancelled, and on the way out of the block the
cancellation becomes :class:`TimeoutError` — unless someone else also cancelled the task, which
then stays cancelled. ``tests/test_deadline.py`` checks the cases side by side with
``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadlines:
    """``asyncio.timeout(delay)`` for successive ``with`` blocks of one task (module docstring).

    A plain context manager: the block may await, and an await in it that is still pending
    ``delay`` seconds after the block began is cancelled and raises :class:`TimeoutError` out of
    the block. Blocks must not nest, and all must run in the task that entered the first one
    (:func:`for_current_task` keeps one per task)."""

    __slots__ = ("_cancelling", "_deadline", "_delay", "_expiring", "_loop", "_task", "_timer",
                 "_timer_at")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        #: loop time the block in flight is due (None: no block in flight)
        self._deadline: float | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._expiring = False
        self._cancelling = 0

    def __enter__(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Deadlines should be used inside a task")
        if self._deadline is not None:
            raise RuntimeError("Deadlines blocks do not nest")
        if self._task is not None and task is not self._task:
            raise RuntimeError("Deadlines serves one task")
        self._task = task
        self._cancelling = task.cancelling()
        self._expiring = False
        deadline = self._deadline = loop.time() + self._delay
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._arm(loop, deadline)
        # else the timer fires at an earlier deadline and starts again for this one

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._deadline = None
        if self._expiring:
            self._expiring = False
            task = self._task
            assert task is not None
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                # no other cancel request came meanwhile: this one was ours
                raise TimeoutError from exc

    @property
    def delay(self) -> float:
        return self._delay

    def close(self) -> None:
        """Stop the timer (the task is done with its reads)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer_at = when
        if when <= loop.time():
            self._timer = loop.call_soon(self._on_timer)
        else:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._expiring:
            return  # no block in flight (the next one starts the timer), or already cancelled
        loop = self._loop
        assert loop is not None and self._task is not None
        if loop.time() < deadline:
            self._arm(loop, deadline)  # a later block than the one the timer was started for
            return
        self._task.cancel()
        self._expiring = True


def for_current_task(guards: dict[asyncio.Task[object], Deadlines], delay: float,
                     loop: asyncio.AbstractEventLoop | None = None) -> Deadlines:
    """The :class:`Deadlines` of the running task in ``guards`` (made, or made again when
    ``delay`` changed). A plain dict keyed by the task (one hash look-up per read; a weak
    dictionary made a weak reference per look-up): entries of finished tasks are dropped, their
    timers stopped, whenever a new one is added.

    ``loop``: the loop the caller runs on, when it knows it. Finding the running loop costs a
    ``getpid()`` system call on CPython 3.11 (its fork check), once per read without this (this
    function was 1.7 % of the daemon's CPU at a hundred meters a second, issue 18). A stale loop (one that runs no
    task now: closed, or the caller moved to another) is no harm: the task is then looked up
    the slow way."""
    task = asyncio.current_task(loop) if loop is not None else None
    if task is None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines should be used inside a task")
    guard = guards.get(task)
    if guard is None or guard.delay != delay:
        for done in [t for t in guards if t.done()]:
            guards.pop(done).close()
        if guard is not None:
            guard.close()
        guard = guards[task] = Deadlines(delay)
    return guard
