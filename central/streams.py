"""Which sequence numbers of a gateway's durable stream have arrived, as ranges, and the holes.

A gateway numbers its durable messages 1, 2, 3, … per store epoch (:mod:`protocols.payload`), so
a consumer that has stored seq 1–40 and 43–90 knows 41–42 are missing. Keeping every seq would
grow without bound; keeping ranges stays small, because holes are rare and get filled.

Pure: no database, no clock. Storage loads a stream's ranges, :func:`add_seq` folds arrivals in,
:func:`holes` lists what is missing, and storage writes the ranges back — inside one transaction
that also holds the stream's lock, so N workers see one truth.

Why a hole is not a gap at once: the gateway publishes two lanes (alarms and command results
overtake reads after an outage, DESIGN §8), and N workers commit in any order, so a hole is
normal for a moment. Each range remembers ``first_ms``, when its first message arrived: the hole
below it has been open at least that long, and only a hole older than the grace period is a gap.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["SeqRange", "add_seq", "contains", "covered", "holes", "subtract"]


@dataclass(frozen=True, slots=True)
class SeqRange:
    """Seqs ``lo``..``hi`` inclusive have arrived; ``first_ms`` is when the message that opened
    the range arrived (the hole below it has been open since at least then)."""

    lo: int
    hi: int
    first_ms: int


def contains(ranges: list[SeqRange], seq: int) -> bool:
    """Whether ``seq`` has arrived (``ranges`` sorted and disjoint, as :func:`add_seq` keeps them)."""
    i = bisect_left([r.hi for r in ranges], seq)
    return i < len(ranges) and ranges[i].lo <= seq


def add_seq(ranges: list[SeqRange], seq: int, now_ms: int) -> bool:
    """Fold ``seq`` into ``ranges`` in place. False when it had already arrived (a duplicate)."""
    his = [r.hi for r in ranges]
    i = bisect_left(his, seq)
    if i < len(ranges) and ranges[i].lo <= seq:
        return False
    below = ranges[i - 1] if i > 0 and ranges[i - 1].hi == seq - 1 else None
    above = ranges[i] if i < len(ranges) and ranges[i].lo == seq + 1 else None
    if below and above:
        ranges[i - 1 : i + 1] = [SeqRange(below.lo, above.hi, below.first_ms)]
    elif below:
        ranges[i - 1] = SeqRange(below.lo, seq, below.first_ms)
    elif above:
        # The hole below `above` has been open since its first message; it only got smaller.
        ranges[i] = SeqRange(seq, above.hi, above.first_ms)
    else:
        ranges.insert(i, SeqRange(seq, seq, now_ms))
    return True


def holes(
    ranges: list[SeqRange], now_ms: int, grace_ms: int, acked_hwm: int | None = None,
    acked_hwm_ms: int | None = None,
) -> list[tuple[int, int]]:
    """Missing seq spans (inclusive) older than ``grace_ms``.

    Inner holes lie between ranges. A tail hole (after the highest seq) counts only when the
    gateway has said, in a health message with an empty outbox, that the broker acknowledged
    everything up to ``acked_hwm``, and said so more than ``grace_ms`` ago. Seqs below the first
    one ever seen are not holes: the consumer may simply have started later than the gateway.
    """
    out: list[tuple[int, int]] = []
    for lower, upper in pairwise(ranges):
        if now_ms - upper.first_ms >= grace_ms:
            out.append((lower.hi + 1, upper.lo - 1))
    if (ranges and acked_hwm is not None and acked_hwm_ms is not None
            and acked_hwm > ranges[-1].hi and now_ms - acked_hwm_ms >= grace_ms):
        out.append((ranges[-1].hi + 1, acked_hwm))
    return out


def covered(ranges: list[SeqRange], lo: int, hi: int) -> bool:
    """Whether every seq of ``lo``..``hi`` has arrived."""
    return any(r.lo <= lo and hi <= r.hi for r in ranges)


def subtract(span: tuple[int, int], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``span`` outside every span of ``taken`` (all inclusive)."""
    pieces = [span]
    for t_lo, t_hi in taken:
        nxt: list[tuple[int, int]] = []
        for lo, hi in pieces:
            if t_hi < lo or hi < t_lo:
                nxt.append((lo, hi))
                continue
            if lo < t_lo:
                nxt.append((lo, t_lo - 1))
            if t_hi < hi:
                nxt.append((t_hi + 1, hi))
        pieces = nxt
    return pieces
