"""Rule bits: what each VEE rule sets in a read's ``uint32`` mask.

The numbers are internal (never published; edge_rules/codes.py holds the published codes). Which
bits make a read fail, which are published as reasons and which are only counted is decided by
the caller's per-meter severity masks (:mod:`edge_rules.vee_kernels.grading`), so the kernels
know nothing of configuration. One module because every kernel module and the rule tables of
:mod:`edge_rules.vee_rules` name the same bits.
"""

from __future__ import annotations

from typing import Final

BIT_MISSING: Final = 1 << 0  # no read for the interval
BIT_DUPLICATE: Final = 1 << 1  # two reads for one interval with different values
BIT_DECREASE: Final = 1 << 2  # register below the last accepted read, not a wrap
BIT_ROLLOVER: Final = 1 << 3  # register wrapped at 10^digits (normal; counted only)
BIT_IMPOSSIBLE: Final = 1 << 4  # more energy than the contract power allows
BIT_SPIKE: Final = 1 << 5  # interval far above the third-highest of its day
BIT_HIGH: Final = 1 << 6  # day far above its history
BIT_LOW: Final = 1 << 7  # day far below its history
BIT_STOPPED: Final = 1 << 8  # register did not move while power says load
BIT_TARIFF_SUM: Final = 1 << 9  # tariff registers do not add up to the total
BIT_INTERVAL_SUM: Final = 1 << 10  # the day's intervals do not add up to the register delta
BIT_CLOCK_DRIFT: Final = 1 << 11  # meter clock off by more than the warning limit
BIT_CLOCK_FAIL: Final = 1 << 12  # meter clock off by more than the failure limit
BIT_MULTIPLIER: Final = 1 << 13  # CT/PT ratio changed (reported or suspected)
BIT_REVERSE: Final = 1 << 14  # reverse energy on a meter that should not generate
BIT_VOLTAGE: Final = 1 << 15  # voltage outside the supply band
BIT_PROLONGED: Final = 1 << 16  # n-th consecutive non-actual interval: field read needed
BIT_REBASED: Final = 1 << 17  # register accepted at a new level after repeated rejections
BIT_SPIKE_READ: Final = 1 << 18  # register read above both neighbours' trend (decided later)

#: A gap touching these cannot be scaled to its bracketing register reads: the register itself
#: did not count (stopped) or counted energy that is being replaced (spike), or the closing read
#: is a new baseline rather than a continuation (rebased).
NO_SCALE_BITS: Final = BIT_STOPPED | BIT_SPIKE | BIT_REBASED
