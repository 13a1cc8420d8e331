"""Logging for failures that repeat: one line per distinct error, then a summary at most once a
minute, then one line when the failure is over.

Why: a broker that is down, or a store on a full disk, fails the same way on every retry (every
1–60 s for a connection, every second for an acknowledgement write). A line — let alone a
traceback — per retry floods the log on the small flash the log itself lives on, and buries the
one line that says what is wrong. The errors these paths meet are expected (the network, the
disk), so they get no traceback; a traceback is kept for the first occurrence of an error the
caller calls unexpected (`exc_info`), i.e. a bug.

Errors that differ only in numbers ("nothing received for 15.2 s", "recording 12
acknowledgements failed") count as the same error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MAX_KINDS = 32  # distinct errors remembered per episode; more are counted as one


class FailureLog:
    """Rate-limited logging of one repeating failure (a connection, a store write).

    `failed(message)` for every failure, `recovered()` when the operation works again.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.WARNING,
        summary_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._level = level
        self._summary_every_s = summary_every_s
        self._clock = clock
        self._seen: dict[str, int] = {}  # kind -> failures since the episode began
        self._total = 0
        self._unreported = 0  # repeats not yet covered by a line
        self._last_line = 0.0

    @property
    def failing(self) -> bool:
        return self._total > 0

    def failed(self, message: str, *, exc_info: BaseException | None = None) -> None:
        """Record one failure; logs it if it is new, or a summary if a minute has passed."""
        now = self._clock()
        kind = _NUMBER.sub("#", message)
        if kind not in self._seen and len(self._seen) >= _MAX_KINDS:
            kind = "(other)"
        self._total += 1
        if kind not in self._seen:
            self._seen[kind] = 1
            self._log.log(self._level, "%s: %s", self._what, message, exc_info=exc_info)
            self._last_line = now
            return
        self._seen[kind] += 1
        self._unreported += 1
        if now - self._last_line >= self._summary_every_s:
            self._log.log(
                self._level,
                "%s: still failing (%d times since it began, %d since the last report); "
                "latest: %s",
                self._what,
                self._total,
                self._unreported,
                message,
            )
            self._last_line = now
            self._unreported = 0

    def recovered(self, note: str = "") -> None:
        """The operation worked: say so once if it had been failing, and start afresh."""
        if not self._total:
            return
        self._log.info(
            "%s: working again after %d failure%s%s",
            self._what,
            self._total,
            "" if self._total == 1 else "s",
            f" ({note})" if note else "",
        )
        self._seen.clear()
        self._total = 0
        self._unreported = 0
