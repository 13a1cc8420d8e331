"""Quality, method and reason codes: the NEM12 vocabulary every published read carries (DESIGN §4).

Kernels work with small integers; the caller turns them into the published vocabulary.

* **Quality** (``uint8`` in kernels, a letter on the wire): ``A`` actual, ``E`` estimated (a value
  for a read that never arrived), ``S`` substituted (a value replacing a read that failed
  validation), ``F`` final substituted (a substitute an operator confirmed), ``N`` null (no usable
  value). The integer order is the one docs/dev/kernels.md fixes for every kernel module.
* **Method** (how an ``E``/``S``/``F`` value was made): the AEMO NEM12 method flags for interval
  data. ``23`` previous year and ``24`` data scaling are the codes issue 4 assigns; ``0`` in a
  kernel array means "no method" (an actual read).
* **Reason** (why a read is not plain actual): AEMO NEM12 reason codes (MDFF specification,
  Appendix E, which added 100–109 in version 2.6). Only the codes the gateway emits are named
  here; docs/vee.md maps every validation rule to its code.

This module is shared by VEE (issue 4) and the group/reconciliation kernels (issue 5): keep it
to vocabulary, no rule logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "METHOD_NAMES",
    "QUALITY_A",
    "QUALITY_E",
    "QUALITY_F",
    "QUALITY_LETTERS",
    "QUALITY_N",
    "QUALITY_S",
    "REASON_NAMES",
    "Method",
    "Reason",
    "quality_code",
    "quality_letter",
]

QUALITY_A: Final = 0
QUALITY_E: Final = 1
QUALITY_S: Final = 2
QUALITY_F: Final = 3
QUALITY_N: Final = 4

#: Letter of each quality code, indexed by the code.
QUALITY_LETTERS: Final = ("A", "E", "S", "F", "N")


def quality_letter(code: int) -> str:
    """The published letter of a kernel quality code (``0`` → ``"A"``)."""
    if not 0 <= code < len(QUALITY_LETTERS):
        raise ValueError(f"quality code {code} is not one of 0..{len(QUALITY_LETTERS) - 1}")
    return QUALITY_LETTERS[code]


def quality_code(letter: str) -> int:
    """The kernel code of a published quality letter (``"E"`` → ``1``)."""
    try:
        return QUALITY_LETTERS.index(letter)
    except ValueError:
        raise ValueError(f"quality {letter!r} is not one of {', '.join(QUALITY_LETTERS)}") from None


class Method:
    """NEM12 method flags (interval data) the gateway uses. ``NONE`` is the kernel's "actual"."""

    NONE: Final = 0
    CHECK_METER: Final = 11  # substituted from a check meter on the same load
    CALCULATED: Final = 12  # computed from the meter class profile and the annual energy
    LIKE_DAY: Final = 14  # copied from one like day (only one was available)
    AVERAGE_LIKE_DAY: Final = 15  # average of like days (same day type, recent weeks)
    LINEAR: Final = 17  # linear interpolation across a short gap
    PREVIOUS_YEAR: Final = 23  # same day type and season last year
    DATA_SCALING: Final = 24  # estimate scaled to the energy the bracketing register reads prove


class Reason:
    """NEM12 reason codes the gateway emits (AEMO MDFF specification, Appendix E)."""

    UNDER_INVESTIGATION: Final = 9
    READ_LESS_THAN_PREVIOUS: Final = 18
    CT_VT_FAULT: Final = 28
    REVERSE_ENERGY: Final = 39
    FAILED_TO_VALIDATE: Final = 45
    ZERO_CONSUMPTION: Final = 68
    LOW_CONSUMPTION: Final = 73
    HIGH_CONSUMPTION: Final = 74
    COMMUNICATIONS_FAULT: Final = 76
    TIME_RESET: Final = 89
    INCORRECT_MULTIPLIER: Final = 100


#: Human-readable names, for reports and docs.
METHOD_NAMES: Final[Mapping[int, str]] = {
    Method.CHECK_METER: "check meter",
    Method.CALCULATED: "calculated (class profile × annual energy)",
    Method.LIKE_DAY: "like day",
    Method.AVERAGE_LIKE_DAY: "average like day",
    Method.LINEAR: "linear interpolation",
    Method.PREVIOUS_YEAR: "previous year",
    Method.DATA_SCALING: "data scaling (to the register delta)",
}

REASON_NAMES: Final[Mapping[int, str]] = {
    Reason.UNDER_INVESTIGATION: "under investigation",
    Reason.READ_LESS_THAN_PREVIOUS: "read less than previous",
    Reason.CT_VT_FAULT: "CT/VT fault",
    Reason.REVERSE_ENERGY: "reverse energy observed",
    Reason.FAILED_TO_VALIDATE: "readings failed to validate",
    Reason.ZERO_CONSUMPTION: "zero consumption",
    Reason.LOW_CONSUMPTION: "low consumption",
    Reason.HIGH_CONSUMPTION: "high consumption",
    Reason.COMMUNICATIONS_FAULT: "communications fault",
    Reason.TIME_RESET: "time reset occurred",
    Reason.INCORRECT_MULTIPLIER: "incorrect meter multiplier",
}
