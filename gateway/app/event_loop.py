"""Which asyncio event loop the daemon runs on (``[gateway] event_loop``).

Why this exists: with 100 Modbus TCP meters polled every second, most of the daemon's CPU is
spent in per-message machinery — socket callbacks, futures, timers — rather than in its own
logic, and uvloop (libuv under the asyncio API) does that machinery in C. Measured with
``bench/bench_modbus_cpu.py``: 0.397 → 0.327 ms of CPU per meter poll on the same machine
(docs/performance.md). The daemon uses only the portable asyncio API (transports, add_reader /
add_writer, signal handlers, timers), so both loops run the same code; the test suite runs the
daemon on the default (``auto``).

The choice has to be made before the loop exists, so it is read from the raw TOML here; the
full validation happens in the daemon, which reports a bad value (exit 2) like any other key.
"""

from __future__ import annotations

import asyncio
import importlib.util
import tomllib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

#: ``[gateway] event_loop`` values (the config model's choice).
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopUnavailable(GatewayError):
    """``event_loop = "uvloop"`` was asked for and uvloop cannot be imported."""


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def configured_choice(config_path: Path) -> str:
    """``[gateway] event_loop`` from the file, or ``auto`` when the file or the value is unusable
    (the daemon's own validation then names the problem and exits 2)."""
    try:
        with open(config_path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return "auto"
    section = raw.get("gateway")
    value = section.get("event_loop", "auto") if isinstance(section, dict) else "auto"
    return value if value in CHOICES else "auto"


def resolve(choice: str) -> str:
    """The loop that ``choice`` means on this machine: ``uvloop`` or ``asyncio``."""
    if choice == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if choice == "uvloop":
        raise EventLoopUnavailable(
            '[gateway] event_loop = "uvloop" but uvloop is not installed in this Python '
            '(pip install uvloop), or set event_loop = "auto" to fall back to asyncio\'s loop')
    return "asyncio"


def loop_factory(resolved: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if resolved == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(main: Callable[[], Coroutine[Any, Any, int]], resolved: str) -> int:
    """Run ``main()`` to completion on the ``resolved`` loop (as :func:`asyncio.run` does)."""
    with asyncio.Runner(loop_factory=loop_factory(resolved)) as runner:
        result: int = runner.run(main())
        return result


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for health and logs)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
