"""The midnight freeze of a meter without a daily-freeze register: the one rule the daemon
(:mod:`gateway.analytics.areas`, read by read as polls arrive) and ``gwtool reconcile`` (over
a CSV of reads) both apply, so the same reads give the same frozen registers in both.

Line loss compares master and sub-meters at the same instant, local 00:00 (see
:mod:`edge_rules.reconcile`). A DL/T 645 meter freezes its registers itself; a Modbus meter is
only polled, so its register at midnight comes from the reads around it:

1. The first read at or after midnight, when it lands within :data:`FREEZE_SLACK_MS`, *is* the
   frozen value (a poll scheduled for 00:00 arrives a few seconds late; the register cannot
   move by a resolution step in that time at the loads this is used for).
2. Otherwise the value is interpolated linearly between the last read before midnight and the
   first read after it, when both are within ``max_gap_ms`` of midnight. The caller marks it
   estimated (quality E), so it does not count towards an area's coverage.
3. Otherwise there is no frozen value.

Why exact decimal arithmetic: register values are decimals (BCD on DL/T 645, scaled integers
on Modbus, decimal text in a CSV). In binary floating point ``before + (after - before) * share``
lands a few ulps off the decimal grid and the next subtraction of two freezes carries that
noise into the day's energy; in :class:`~decimal.Decimal` the interpolation is exact up to one
final rounding, to :data:`GUARD_DIGITS` digits below the finer resolution of the two reads.
Not to the resolution itself: an interpolated register is an estimate of the energy at an
instant the meter never showed, and rounding it to the display step moves it by up to half a
step, which the CT × PT ratio multiplies — on ``tests/test_reconcile_pipeline``'s synthetic
areas (0.01 kWh registers, masters behind CT ratios in the hundreds) that moved a master's day
by 0.5 kWh and its loss by 0.05 percentage points. Three guard digits keep the rounding a
thousand times below that and the stored decimals short.

Why the ``after >= before`` guard: an energy register only counts up. Reads that go backwards
across midnight are a meter exchange, a register reset or a bad read; a line through them
invents a register the meter never held, and the day's energy computed from it would be
anything. No value (quality N, the day counts against coverage) is the honest answer; VEE
judges the decrease itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

__all__ = ["FREEZE_SLACK_MS", "GUARD_DIGITS", "MidnightFreeze", "midnight_freeze"]

#: A register read this soon after local midnight is that midnight's frozen value.
FREEZE_SLACK_MS: Final = 60_000

#: Digits kept below the register resolution in an interpolated value (see the module note).
GUARD_DIGITS: Final = 3

#: Enough digits that the only rounding that matters is the final one to the register's
#: resolution (registers have at most ~12 significant digits, times in ms at most ~14).
_EXACT: Final = Context(prec=60, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class MidnightFreeze:
    """The register at midnight: ``read`` (rule 1, the read itself) or interpolated (rule 2)."""

    value: Decimal
    interpolated: bool


def midnight_freeze(
    midnight_ms: int,
    before: tuple[int, Decimal] | None,
    after: tuple[int, Decimal] | None,
    max_gap_ms: int,
) -> MidnightFreeze | None:
    """The register at ``midnight_ms`` (UTC ms of local 00:00) from the reads around it.

    ``before`` is the last read ``(t_ms, register)`` before midnight, ``after`` the first read
    at or after it (either None when there is none). A ``before`` that is not strictly before
    midnight is not one (the daemon passes its previous read whatever it was). Returns None
    when the rule gives no value: no read close enough, a gap over ``max_gap_ms`` on either
    side, a non-finite register, or a register that went backwards.
    """
    if after is None or not after[1].is_finite():
        return None
    after_t, after_value = after
    if midnight_ms <= after_t < midnight_ms + FREEZE_SLACK_MS:
        return MidnightFreeze(after_value, interpolated=False)
    if before is None or not before[1].is_finite():
        return None
    before_t, before_value = before
    if not (
        before_t < midnight_ms <= after_t
        and midnight_ms - before_t <= max_gap_ms
        and after_t - midnight_ms <= max_gap_ms
        and after_value >= before_value
    ):
        return None
    rise = _EXACT.multiply(_EXACT.subtract(after_value, before_value), Decimal(midnight_ms - before_t))
    share = _EXACT.divide(rise, Decimal(after_t - before_t))
    exponent = min(_exponent(before_value), _exponent(after_value)) - GUARD_DIGITS
    frozen = _EXACT.add(before_value, share).quantize(Decimal(1).scaleb(exponent), context=_EXACT)
    return MidnightFreeze(frozen, interpolated=True)


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only reach here
    return exponent
