"""Unauthenticated traffic on the command topic: how much of it the audit journal keeps.

Anyone allowed to publish on ``P/G/cmd`` can send the gateway bytes that never pass a signature
check. Journaling each such message whole (and in two records) let a publisher fill the
gateway's disk at the broker's speed. The journal now keeps, per unauthenticated rejection, one
record of its SHA-256, size and reason (:mod:`.verifier`), and at most a budget of them per
minute (:class:`JournalBudget`, ``[commands] unauthenticated_journal_per_minute``); beyond the
budget a rejection is only counted (:class:`JunkStats`, published in the health message), and
the next journaled one says how many were skipped before it, so the journal still shows that
junk arrived and how much.

Authenticated commands are not affected: they are journaled in full, whatever their verdict.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class JunkStats:
    """Counters of unauthenticated rejections since start: ``rejected`` (all of them) and
    ``unjournaled`` (over the budget: counted here, not on the journal)."""

    rejected: int = 0
    unjournaled: int = 0


class JournalBudget:
    """A token bucket: ``per_minute`` journal records, refilled evenly, with a burst of as many.

    Time is the verifier's ``now`` (seconds); a clock stepping back refills nothing and does not
    stall the bucket either. ``per_minute = 0`` journals no unauthenticated rejection at all.
    """

    def __init__(self, per_minute: int) -> None:
        if per_minute < 0:
            raise ValueError(f"per_minute must be >= 0, got {per_minute}")
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Spend one record if the budget has one at ``now``; False means count only."""
        if self._last is not None and now > self._last:
            self._tokens = min(
                float(self.per_minute), self._tokens + (now - self._last) * self.per_minute / 60
            )
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
