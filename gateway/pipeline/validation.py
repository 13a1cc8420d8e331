"""Basic read validation done before anything is stored (full VEE lives in edge_rules/ later).

Two rules that must hold from day one, because billing trusts "actual":

* **A register that goes backwards is not actual.** An energy register only grows, except when it
  wraps at 10^digits (a 6-integer-digit register wraps at 1,000,000 kWh). A decrease that is not a
  plausible wrap is published with quality ``N`` and reason 18 ("reading less than previous"), and
  it does not replace the last good value the next read is compared with.
* **Physically impossible values are flagged.** Bounds per quantity family (a 220 V meter never
  reads 2,000 V; a power factor is within ±1); outside them → quality ``N``, reason 73 (low) or 74
  (high). The raw value is kept for the field engineer.

Reason codes follow the NEM12 vocabulary used throughout (docs/vee.md, when VEE lands).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from gateway.acquisition.poll_result import PolledValue, ValueType

REASON_LESS_THAN_PREVIOUS: Final = 18
REASON_LOW: Final = 73
REASON_HIGH: Final = 74

#: (quantity prefix) → (low, high) physical bounds, inclusive.
BOUNDS: Final[Mapping[str, tuple[Decimal, Decimal]]] = {
    "voltage.": (Decimal(0), Decimal(1000)),
    "current.": (Decimal(-20000), Decimal(20000)),
    "power.factor.": (Decimal(-1), Decimal(1)),
    "frequency": (Decimal(40), Decimal(70)),
    "power.active.": (Decimal(-100000), Decimal(100000)),
    "energy.active.import": (Decimal(0), Decimal(10) ** 10),
    "energy.active.export": (Decimal(0), Decimal(10) ** 10),
}

#: Register width in integer digits (XXXXXX.XX → 6): a wrap happens at 10^6.
DEFAULT_REGISTER_DIGITS: Final = 6
#: A drop counts as a wrap when the old value was in the top part of the range and the new one low.
WRAP_MARGIN: Final = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class CheckedValue:
    """A polled value with its quality: ``quality`` A or N, ``reasons`` NEM12-style codes."""

    value: PolledValue
    quality: str = "A"
    reasons: tuple[int, ...] = ()
    rollover: bool = False


def is_register(quantity: str) -> bool:
    """Accumulating registers (energy) — as opposed to instantaneous values or demand."""
    return quantity.startswith("energy.")


_BOUNDS_CACHE: dict[str, tuple[Decimal, Decimal, float, float] | None] = {}


def _bounds_for(quantity: str) -> tuple[Decimal, Decimal, float, float] | None:
    """The bounds of a quantity, exact and as floats (cached: a gateway reads a few dozen
    quantity names, and this runs for every value polled)."""
    try:
        return _BOUNDS_CACHE[quantity]
    except KeyError:
        pass
    found: tuple[Decimal, Decimal, float, float] | None = None
    for prefix, (low, high) in BOUNDS.items():
        if quantity.startswith(prefix):
            found = (low, high, float(low), float(high))
            break
    if len(_BOUNDS_CACHE) < 10_000:  # bounded even if a profile invents names without end
        _BOUNDS_CACHE[quantity] = found
    return found


#: quantity -> (low, high) as floats for an instantaneous quantity (±inf when unbounded), None
#: for a register (its verdict needs the previous value). Filled by :func:`float_window`.
FLOAT_WINDOWS: dict[str, tuple[float, float] | None] = {}


def float_window(quantity: str) -> tuple[float, float] | None:
    """The range in which a float of ``quantity`` is simply actual — :func:`classify` gives
    ``ACTUAL`` for any float inside it and needs no previous value — or None for a register.
    Lets a caller accept the common value with two comparisons (cached per quantity name)."""
    window = FLOAT_WINDOWS.get(quantity, ())
    if window != ():
        return window  # type: ignore[return-value]
    if is_register(quantity):
        found: tuple[float, float] | None = None
    else:
        bounds = _bounds_for(quantity)
        found = (bounds[2], bounds[3]) if bounds is not None else (-math.inf, math.inf)
    if len(FLOAT_WINDOWS) < 10_000:
        FLOAT_WINDOWS[quantity] = found
    return found


#: Verdicts as (quality, reasons, rollover), shared: the hot path allocates nothing.
ACTUAL: Final = ("A", (), False)
ROLLOVER: Final = ("A", (), True)
TOO_LOW: Final = ("N", (REASON_LOW,), False)
TOO_HIGH: Final = ("N", (REASON_HIGH,), False)
DECREASED: Final = ("N", (REASON_LESS_THAN_PREVIOUS,), False)
Verdict = tuple[str, tuple[int, ...], bool]


def classify(quantity: str, value: ValueType, previous: Decimal | None,
             register_digits: int = DEFAULT_REGISTER_DIGITS) -> Verdict:
    """The verdict on one value: ``(quality, reasons, rollover)``; ``previous`` is the last
    *actual* value of the same register.

    Floats (instantaneous quantities) are compared as floats: the bounds are integers, exactly
    representable, so the verdict equals an exact comparison without a Decimal per value."""
    kind = type(value)
    if kind is float:
        bounds = _bounds_for(quantity)
        if bounds is not None:
            if value < bounds[2]:  # type: ignore[operator]
                return TOO_LOW
            if value > bounds[3]:  # type: ignore[operator]
                return TOO_HIGH
        if previous is None or not is_register(quantity):
            return ACTUAL
        number = Decimal(value)  # type: ignore[arg-type]
    elif kind is Decimal or kind is int:
        number = value if kind is Decimal else Decimal(value)  # type: ignore[assignment,arg-type]
        bounds = _bounds_for(quantity)
        if bounds is not None:
            if number < bounds[0]:
                return TOO_LOW
            if number > bounds[1]:
                return TOO_HIGH
    else:
        return ACTUAL
    if previous is not None and number < previous and is_register(quantity):
        modulus = Decimal(10) ** register_digits
        if previous >= modulus * (1 - WRAP_MARGIN) and number <= modulus * WRAP_MARGIN:
            return ROLLOVER
        return DECREASED
    return ACTUAL


def check_value(pv: PolledValue, previous: Decimal | None,
                register_digits: int = DEFAULT_REGISTER_DIGITS) -> CheckedValue:
    """Classify one value; ``previous`` is the last *actual* value of the same register."""
    quality, reasons, rollover = classify(pv.quantity, pv.value, previous, register_digits)
    return CheckedValue(pv, quality, reasons, rollover)


class RegisterMemory:
    """The last actual value of every (meter, register), so a decrease can be recognised.

    Bounded by the configured meters × their registers; seeded from the store at start.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], Decimal] = {}

    def seed(self, meter: str, quantity: str, value: Decimal) -> None:
        self._last[(meter, quantity)] = value

    def classify(self, meter: str, quantity: str, value: ValueType) -> Verdict:
        """:func:`classify` against the remembered register, remembering an actual one."""
        if type(value) is float and not is_register(quantity):
            return classify(quantity, value, None)
        key = (meter, quantity)
        verdict = classify(quantity, value, self._last.get(key))
        if verdict[0] == "A" and type(value) is Decimal and is_register(quantity):
            self._last[key] = value
        return verdict

    def withdraw(self, meter: str, quantity: str, value: Decimal, substitute: Decimal | None
                 ) -> bool:
        """VEE rejected a register read after it was accepted here (a spike, judged once the
        next read arrived): a read flagged bad must not stay the value the next one is compared
        with, or every read after a spike would be a "decrease". If ``value`` is still the
        reference, its substitute takes its place (none: no reference until the next read)."""
        key = (meter, quantity)
        if self._last.get(key) != value:
            return False
        if substitute is None:
            del self._last[key]
        else:
            self._last[key] = substitute
        return True

    def check(self, meter: str, pv: PolledValue) -> CheckedValue:
        quality, reasons, rollover = self.classify(meter, pv.quantity, pv.value)
        return CheckedValue(pv, quality, reasons, rollover)
