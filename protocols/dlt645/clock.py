"""The meter clock over DL/T 645: which data identifiers carry it, how three reads make one
instant, and the offset of that instant from the gateway's clock.

DL/T 645 keeps the date (04000101, ``YYMMDDWW``; -1997 C010) and the time of day (04000102,
``hhmmss``; -1997 C011) in two data items, so the meter clock takes two transactions, and
midnight can pass between them: a date read at 23:59:59.8 and a time read at 00:00:00.1 would
make the clock a day slow. The reader therefore asks date, time, date; when the two dates
differ, midnight passed during the exchange and the time says which side it is on (a time before
noon belongs to the later date). 0400010C (date and time in one item) would avoid this, but it
is optional in the standard and many meters refuse it; the two mandatory items work everywhere.

The meter counts whole seconds (it truncates), so its reading lags the true instant by half a
second on average; :func:`clock_offset_s` adds that half second back. The remaining error — the
reply's time on the wire — is far below the drift thresholds that matter (``warn_s`` is 60 s by
default, docs/vee.md).

Sans-IO: no clocks are read here; the caller says when the reply arrived.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

from .errors import DataError
from .frame import Version
from .items import Reading

__all__ = ["CLOCK_DIS", "clock_offset_s", "meter_clock", "reading_value"]

#: The standard's (date, time) data identifiers of each edition.
CLOCK_DIS: Final = {Version.V2007: (0x04000101, 0x04000102), Version.V1997: (0xC010, 0xC011)}

_EPOCH: Final = dt.datetime(1970, 1, 1)


def reading_value(readings: Sequence[Reading], kind: type) -> object:
    """The one value of a clock item's reply, checked to be a ``kind`` (date or time);
    a meter that answers something else is a remote error (DataError)."""
    values = [r.value for r in readings]
    if len(values) != 1 or not isinstance(values[0], kind) or (
            kind is dt.date and isinstance(values[0], dt.datetime)):
        raise DataError(f"expected one {kind.__name__} from the meter clock, got {values!r}")
    return values[0]


def meter_clock(date_before: dt.date, time_of_day: dt.time, date_after: dt.date) -> dt.datetime:
    """The meter's local time from a date read, a time read and a second date read (module
    docstring: a change of date between them means midnight passed during the exchange)."""
    if date_before == date_after:
        return dt.datetime.combine(date_before, time_of_day)
    date = date_after if time_of_day.hour < 12 else date_before
    return dt.datetime.combine(date, time_of_day)


def clock_offset_s(meter_local: dt.datetime, gateway_ms: int, utc_offset_min: int) -> float:
    """Meter clock minus gateway clock, in seconds: ``meter_local`` is the naive local time the
    meter reported (its zone is ``utc_offset_min`` east of UTC), ``gateway_ms`` the gateway's
    UTC time when the reply arrived. Half a second is added for the meter's truncation."""
    local_ms = (meter_local - _EPOCH) // dt.timedelta(milliseconds=1)
    return (local_ms - utc_offset_min * 60_000 + 500 - gateway_ms) / 1000.0
