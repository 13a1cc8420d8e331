"""Value kinds for calendar keys: dates, holiday tables and UTC offsets (used by `[vee]`).

TOML has a native date type (`2026-01-01`); a quoted "2026-01-01" is accepted too, since
people copy dates from spreadsheets with the quotes on. Date-times are refused: a holiday is
a local day, not an instant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from edge_rules.calendar import parse_utc_offset
from gateway.config.context import Context
from gateway.config.issues import KeyPath
from gateway.config.kinds import INVALID, Kind, ListOf, SchemaDefs, Siblings


def _as_date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Date(Kind):
    """A calendar day: a TOML date or a "YYYY-MM-DD" string."""

    def expected(self) -> str:
        return "a date YYYY-MM-DD"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        day = _as_date(value)
        return self.reject(value, at, ctx) if day is None else day

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


DATES = ListOf(Date())


@dataclass(frozen=True)
class Holidays(Kind):
    """The holiday table: "cn" (built in, with China's make-up workdays), "none", or a list
    of dates (then no make-up workdays unless `workdays` names them)."""

    def expected(self) -> str:
        return '"cn" (built-in table), "none" or an array of dates YYYY-MM-DD'

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if value in ("cn", "none"):
            return value
        if isinstance(value, list):
            return DATES.check(value, at, ctx, siblings)
        return self.reject(value, at, ctx)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"oneOf": [{"type": "string", "enum": ["cn", "none"]}, DATES.json_schema(defs)]}


@dataclass(frozen=True)
class UtcOffset(Kind):
    """A UTC offset written as in ISO 8601, "+08:00" (kept as written; the reader of the
    table turns it into minutes with the same function that checked it)."""

    def expected(self) -> str:
        return 'a UTC offset like "+08:00"'

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, str):
            return self.reject(value, at, ctx)
        try:
            parse_utc_offset(value)
        except ValueError as exc:
            ctx.report(at, f"expected {self.expected()}: {exc}")
            return INVALID
        return value

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "pattern": "^[+-][0-9]{2}:[0-9]{2}$"}
