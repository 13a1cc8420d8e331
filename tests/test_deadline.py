"""gateway/acquisition/deadline.py: the bound on a task's successive awaits behaves as
``asyncio.timeout`` does for each of them — same outcome, same cancel bookkeeping — with one
timer for the task instead of one per await. Each scenario runs under both and the outcomes are
compared, on asyncio's loop and on uvloop (the daemon's)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.acquisition.deadline import Deadlines, for_current_task

DELAY = 0.05

Guard = Callable[[], contextlib.AbstractAsyncContextManager[None]]


def _asyncio_guard() -> Guard:
    def guard() -> contextlib.AbstractAsyncContextManager[None]:
        return asyncio.timeout(DELAY)  # type: ignore[return-value]
    return guard


def _deadlines_guard() -> Guard:
    deadlines = Deadlines(DELAY)

    @contextlib.asynccontextmanager
    async def guard() -> AsyncIterator[None]:
        with deadlines:
            yield

    return guard


async def _outcome(scenario: Callable[[Guard], Coroutine[Any, Any, object]], guard: Guard) -> object:
    task = asyncio.create_task(scenario(guard))
    try:
        result = await task
    except (TimeoutError, asyncio.CancelledError) as exc:
        return (type(exc).__name__, task.cancelling())
    return ("done", result, task.cancelling())


async def _quick_then_slow(guard: Guard) -> object:
    for _ in range(20):  # fast awaits: none times out, each within its own bound
        async with guard():
            await asyncio.sleep(DELAY / 10)
    started = time.monotonic()
    try:
        async with guard():
            await asyncio.sleep(DELAY * 10)
    except TimeoutError:
        elapsed = time.monotonic() - started
        # cancelled at its own deadline, not at one left by the fast awaits before it
        return "timed out at its deadline" if DELAY * 0.9 <= elapsed < DELAY * 5 else elapsed
    return "not timed out"


async def _swallows_cancel(guard: Guard) -> object:
    async with guard():
        try:
            await asyncio.sleep(DELAY * 10)
        except asyncio.CancelledError:
            return "swallowed"
    return "after"


async def _overruns(guard: Guard) -> object:
    async with guard():
        await asyncio.sleep(DELAY * 10)
    return "not reached"


SCENARIOS = [_quick_then_slow, _swallows_cancel, _overruns]
LOOPS = [asyncio.new_event_loop, uvloop.new_event_loop]


@pytest.mark.parametrize("make_loop", LOOPS, ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_each_await_ends_as_under_asyncio_timeout(
        make_loop: Callable[[], asyncio.AbstractEventLoop],
        scenario: Callable[[Guard], Coroutine[Any, Any, object]]) -> None:
    loop = make_loop()
    try:
        reference = loop.run_until_complete(_outcome(scenario, _asyncio_guard()))
        ours = loop.run_until_complete(_outcome(scenario, _deadlines_guard()))
    finally:
        loop.close()
    assert ours == reference
    assert reference != ("done", "not timed out", 0)


@pytest.mark.parametrize("make_loop", LOOPS, ids=["asyncio", "uvloop"])
def test_a_cancel_from_outside_stays_a_cancel(
        make_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Cancelled by someone else while bounded: CancelledError, not TimeoutError — also when
    the bound expires in the same loop iteration (asyncio.timeout's rule)."""

    async def run(guard: Guard, cancel_after: float) -> object:
        task = asyncio.create_task(_overruns(guard))
        await asyncio.sleep(cancel_after)
        task.cancel()
        try:
            await task
        except (TimeoutError, asyncio.CancelledError) as exc:
            return type(exc).__name__
        return "done"

    loop = make_loop()
    try:
        for cancel_after in (DELAY / 5, DELAY):
            reference = loop.run_until_complete(run(_asyncio_guard(), cancel_after))
            ours = loop.run_until_complete(run(_deadlines_guard(), cancel_after))
            assert ours == reference
        assert loop.run_until_complete(run(_deadlines_guard(), DELAY / 5)) == "CancelledError"
    finally:
        loop.close()


def test_one_timer_serves_many_awaits() -> None:
    """A thousand bounded awaits start the loop's timer once (asyncio.timeout: a thousand)."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        timers = 0
        call_at = loop.call_at

        def counting(when: float, callback: Callable[..., object], *args: object
                     ) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_at(when, callback, *args)

        loop.call_at = counting  # type: ignore[method-assign, assignment]
        deadlines = Deadlines(5.0)
        for _ in range(1000):
            with deadlines:
                await asyncio.sleep(0)
        deadlines.close()
        return timers

    assert asyncio.run(main()) == 1


def test_blocks_do_not_nest_nor_change_task() -> None:
    async def main() -> None:
        deadlines = Deadlines(1.0)
        with deadlines, pytest.raises(RuntimeError, match="nest"), deadlines:
            pass
        with deadlines:
            pass

        async def other() -> None:
            with deadlines:
                pass

        with pytest.raises(RuntimeError, match="one task"):
            await asyncio.create_task(other())
        deadlines.close()

    asyncio.run(main())


def test_one_guard_per_task_made_again_when_the_delay_changes() -> None:
    async def main() -> None:
        guards: dict[asyncio.Task[object], Deadlines] = {}
        first = for_current_task(guards, 1.0)
        assert for_current_task(guards, 1.0) is first
        second = for_current_task(guards, 2.0)
        assert second is not first and second.delay == 2.0

        async def other() -> Deadlines:
            with for_current_task(guards, 2.0):
                await asyncio.sleep(0)
            return for_current_task(guards, 2.0)

        finished = asyncio.create_task(other())
        assert await finished is not second
        assert finished in guards and len(guards) == 2
        # a new task's guard drops the finished one's (and stops its timer)
        last = asyncio.create_task(other())
        await last
        assert finished not in guards and last in guards
        for guard in guards.values():
            guard.close()

    asyncio.run(main())


def test_guard_found_through_the_callers_loop_or_a_stale_one() -> None:
    """Given the loop it runs on, ``for_current_task`` finds the task's guard without asking
    for the running loop; a loop that runs no task now (closed) falls back to asking."""
    stale = asyncio.new_event_loop()
    stale.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        guards: dict[asyncio.Task[object], Deadlines] = {}
        first = for_current_task(guards, 1.0)
        assert for_current_task(guards, 1.0, loop) is first
        assert for_current_task(guards, 1.0, stale) is first

        async def other() -> Deadlines:
            return for_current_task(guards, 1.0, loop)

        assert await asyncio.create_task(other()) is not first
        for guard in guards.values():
            guard.close()

    asyncio.run(main())
