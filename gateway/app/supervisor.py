"""Task supervision: every long-running task of the daemon is started here and watched.

Why: a task that dies in asyncio dies quietly — its exception waits in the task object until
someone looks, and the daemon goes on publishing health and feeding the systemd watchdog as if
nothing happened (groups, areas, load control or the command loop could stop for good without a
line in the log). Here a task that ends with an error, or ends at all when it was meant to run
until stopped, is logged once with its traceback, shown in health (``stats.tasks``) and makes
:meth:`Supervisor.healthy` false, so the watchdog is no longer fed and systemd restarts the
daemon (``WatchdogSec`` in systemd/edge-gateway.service): crash-only recovery, with a reason in
the journal. Components that are not tasks (feed subscribers such as the theft monitor) report
their failures through :meth:`Supervisor.fail`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gateway.supervisor")


@dataclass(frozen=True, slots=True)
class Failure:
    """Why component ``name`` stopped: the error's type and text."""

    name: str
    error: str

    def describe(self) -> str:
        return f"failed: {self.error}"


class Supervisor:
    """Starts named tasks, notices when one ends, and remembers failures until restart."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._failures: dict[str, Failure] = {}
        self._stopping: set[str] = set()

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as task ``name``; it is expected to run until cancelled."""
        if name in self._tasks and not self._tasks[name].done():
            coro.close()
            raise ValueError(f"a task named {name!r} is running already")
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        self._failures.pop(name, None)
        task.add_done_callback(self._ended)
        return task

    def adopt(self, name: str, task: asyncio.Task[Any]) -> None:
        """Watch a task that a component started itself (the outbox pump owns its task)."""
        self._tasks[name] = task
        self._failures.pop(name, None)
        task.add_done_callback(self._ended)

    def release(self, name: str) -> None:
        """Stop watching ``name``: its owner is about to end it on purpose."""
        self._tasks.pop(name, None)
        self._failures.pop(name, None)

    def fail(self, name: str, error: BaseException | str) -> None:
        """Record that component ``name`` failed (for components that are not tasks)."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if name not in self._failures:
            log.error("%s stopped: %s — the watchdog is no longer fed; systemd restarts the "
                      "daemon", name, text)
        self._failures[name] = Failure(name, text)

    async def stop(self, names: Iterable[str] | None = None, *,
                   ask: Callable[[], None] | None = None, timeout: float = 10.0) -> None:
        """Stop the named tasks (all when ``names`` is None) and wait for them to end.

        With ``ask`` (a callable that tells the tasks to finish, e.g. a bus's ``stop``), they get
        ``timeout`` seconds to return on their own before they are cancelled; without it they are
        cancelled at once. A task stopped here is not reported as failed."""
        chosen = list(self._tasks) if names is None else [n for n in names if n in self._tasks]
        tasks = []
        for name in chosen:
            task = self._tasks.pop(name)
            self._stopping.add(name)
            self._failures.pop(name, None)
            if not task.done():
                tasks.append(task)
        if ask is not None and tasks:
            ask()
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            tasks = list(pending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._stopping.difference_update(chosen)

    def task(self, name: str) -> asyncio.Task[Any] | None:
        return self._tasks.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    @property
    def failures(self) -> dict[str, Failure]:
        return dict(self._failures)

    def healthy(self) -> bool:
        """No supervised task or component has failed since it was (re)started."""
        return not self._failures

    def health(self) -> dict[str, str]:
        """``{name: "running" | "failed: ..."}`` for every task and every failed component."""
        out = {name: "running" for name, task in self._tasks.items() if not task.done()}
        out.update({name: failure.describe() for name, failure in self._failures.items()})
        return dict(sorted(out.items()))

    def _ended(self, task: asyncio.Task[Any]) -> None:
        name = task.get_name()
        if self._tasks.get(name) is not task or name in self._stopping:
            return  # replaced or being stopped on purpose
        if task.cancelled():
            self.fail(name, "cancelled while it should have been running")
            return
        error = task.exception()
        if error is None:
            self.fail(name, "ended while it should have been running")
            return
        log.error("task %s died", name, exc_info=error)
        self.fail(name, error)

