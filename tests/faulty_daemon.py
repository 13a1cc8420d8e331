"""The real daemon with one component made to fail: ``python -m tests.faulty_daemon COMPONENT
run --config FILE``.

Used by tests/test_supervision.py. The fault is a bug planted in one method of the named
component (it raises ``RuntimeError("planted fault")`` once the daemon has run a few seconds),
so the test sees how the daemon notices a failure it did not expect: no part of the daemon knows
about this module.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from gateway.acquisition.dlt645_bus import Dlt645Bus
from gateway.analytics.areas import AreaReconciler
from gateway.analytics.groups import GroupPublisher
from gateway.analytics.theft import TheftMonitor
from gateway.app import cli
from gateway.control.commands.handler import CommandHandler
from gateway.control.load_control.runner import LoadControlRunner
from gateway.pipeline.committer import Committer
from gateway.uplink.outbox_pump import OutboxPump

#: Seconds after import before the planted fault fires: the daemon is READY and has fed the
#: watchdog a few times by then.
DELAY_S = 3.0
STARTED = time.monotonic()


class PlantedFault(RuntimeError):
    pass


def _due() -> bool:
    return time.monotonic() - STARTED >= DELAY_S


def _failing_coroutine(original: Any) -> Any:
    """Wrap an ``async def run(self, ...)`` so that it raises once the delay has passed."""

    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(original(self, *args, **kwargs))
        try:
            await asyncio.sleep(max(0.0, DELAY_S - (time.monotonic() - STARTED)))
        finally:
            if not task.done():
                task.cancel()
        raise PlantedFault("planted fault")

    return run


def _failing_method(original: Any) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _due():
            raise PlantedFault("planted fault")
        return original(self, *args, **kwargs)

    return method


TARGETS: dict[str, tuple[type, str, Any]] = {
    "groups": (GroupPublisher, "run", _failing_coroutine),
    "areas": (AreaReconciler, "run", _failing_coroutine),
    "theft": (TheftMonitor, "evaluate", _failing_method),
    "load-control": (LoadControlRunner, "run", _failing_coroutine),
    "commands": (CommandHandler, "run", _failing_coroutine),
    "bus:rs485-1": (Dlt645Bus, "serve", _failing_coroutine),  # the runtime opens, then serves
    "committer": (Committer, "run", _failing_coroutine),
    "outbox-pump": (OutboxPump, "_run", _failing_coroutine),
}


def main() -> int:
    component, argv = sys.argv[1], sys.argv[2:]
    cls, name, wrap = TARGETS[component]
    setattr(cls, name, wrap(getattr(cls, name)))
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
