"""Per-meter and per-bus statistics, kept as plain counters (read by the health message)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class MeterStats:
    polls: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    transactions: int = 0
    timeouts: int = 0
    retries: int = 0
    refusals: int = 0
    bad_frames: int = 0
    last_ok_ms: int | None = None
    last_error: str | None = None
    last_poll_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class BusStats:
    """Counters of one bus; ``recent`` keeps (finish time, ok) of the last transactions for rates."""

    transactions: int = 0
    transactions_ok: int = 0
    timeouts: int = 0
    overruns: int = 0
    priority_frames: int = 0
    busy_s: float = 0.0
    bytes_out: int = 0
    bytes_in: int = 0
    garbage_bytes: int = 0
    checksum_errors: int = 0
    recent: collections.deque[tuple[float, bool]] = field(
        default_factory=lambda: collections.deque(maxlen=2048)
    )

    def record(self, now: float, ok: bool) -> None:
        self.transactions += 1
        if ok:
            self.transactions_ok += 1
        self.recent.append((now, ok))

    def rate(self, now: float, window_s: float = 60.0) -> tuple[float, float]:
        """(transactions per second, success ratio) over the last ``window_s`` seconds."""
        items = [(t, ok) for t, ok in self.recent if now - t <= window_s]
        if not items:
            return 0.0, 1.0
        span = max(now - items[0][0], 1e-9) if len(items) > 1 else window_s
        ok = sum(1 for _, good in items if good)
        return len(items) / span, ok / len(items)
