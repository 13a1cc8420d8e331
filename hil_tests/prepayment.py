"""A simulated meter's prepayment account (费控): a balance that falls with consumption and
rises with each recharge, as a DL/T 645 费控表 or a Modbus prepaid meter keeps it.

The account is a function of the meter's import register, never a running total of its own: the
balance at any instant is ``credit - price × (import - import at opening)``, so it falls exactly
as the register rises (and stops when the relay opens and the register stops), whatever the
order or frequency of samples. Money accounts count 元 at ``price`` per kWh; energy accounts
count kWh (price 1). A balance below zero is shown as 0 with the overdraft beside it, as the
meters' 00900200 / 00900201 pair does.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Literal

__all__ = ["PrepaidAccount", "Prepayment"]

CENT = Decimal("0.01")
PrepaidUnit = Literal["money", "energy"]


@dataclass(frozen=True, slots=True)
class Prepayment:
    """What the meter shows: ``unit`` (``money`` or ``energy``), ``balance`` and ``overdraft``
    (never both above zero, 0.01 resolution), ``purchases`` (the purchase counter, +1 per
    recharge) and ``purchased`` (everything ever bought, opening credit included)."""

    unit: PrepaidUnit
    balance: Decimal
    overdraft: Decimal
    purchases: int
    purchased: Decimal

    def values(self) -> dict[str, Decimal]:
        """The account under the shared quantity vocabulary (``prepaid.balance.money`` …)."""
        return {f"prepaid.balance.{self.unit}": self.balance,
                f"prepaid.overdraft.{self.unit}": self.overdraft,
                f"prepaid.purchase.{self.unit}.count": Decimal(self.purchases),
                f"prepaid.purchase.{self.unit}.total": self.purchased}


class PrepaidAccount:
    """Opened at ``opened_kwh`` of the import register with ``credit``; see the module docstring."""

    def __init__(self, unit: PrepaidUnit, credit: Decimal, price: Decimal,
                 opened_kwh: Decimal) -> None:
        if unit not in ("money", "energy"):
            raise ValueError(f"prepaid unit must be 'money' or 'energy', got {unit!r}")
        if price <= 0:
            raise ValueError(f"price must be positive, got {price}")
        self.unit: PrepaidUnit = unit
        self.price = price if unit == "money" else Decimal(1)
        self.opened_kwh = opened_kwh
        self.purchased = credit
        self.purchases = 0

    def recharge(self, amount: Decimal) -> None:
        if amount <= 0:
            raise ValueError(f"a recharge must be positive, got {amount}")
        self.purchased += amount
        self.purchases += 1

    def state(self, import_kwh: Decimal) -> Prepayment:
        # Rounded up: the meter never shows a cent it does not hold.
        used = ((import_kwh - self.opened_kwh) * self.price).quantize(CENT, ROUND_CEILING)
        left = self.purchased - used
        return Prepayment(self.unit, max(left, Decimal(0)).quantize(CENT),
                          max(-left, Decimal(0)).quantize(CENT), self.purchases,
                          self.purchased.quantize(CENT))
