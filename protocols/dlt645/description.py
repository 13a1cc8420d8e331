"""A JSON-ready description of a decoded message: the ``gwtool dlt645 decode`` contract (DESIGN §2)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .encoding import encode
from .formats import Value
from .frame import FUNCTION_TABLE, Version
from .messages import (
    ChangeBaudReply,
    ChangeBaudRequest,
    ErrorReply,
    Message,
    ReadFollowupReply,
    ReadFollowupRequest,
    ReadReply,
    ReadRequest,
    TimeSyncRequest,
    WriteRequest,
)


def _field_text(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, Decimal | dt.datetime | dt.date | dt.time | str):
        return value_text(value)
    return str(value)


def value_text(value: Value) -> str | None:
    """Render a reading value as text: decimals exactly, dates in ISO 8601, raw bytes as hex."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, Mapping):
        return ",".join(sorted(name for name, on in value.items() if on))
    return str(value)


def describe(message: Message) -> dict[str, Any]:
    """The decode JSON: address, control, function, direction, error, more_follows, di, values, unit.

    ``readings`` adds each value's quantity name and unit (blocks mix units); ``flags`` lists set bits
    of status words.
    """
    raw = encode(message)
    control = raw[8]
    code = control & 0x1F
    version: Version = getattr(message, "version", Version.V2007)
    name = FUNCTION_TABLE.get(code, (version, "unknown"))[1]
    is_reply = bool(control & 0x80)
    di_digits = 8 if version == Version.V2007 else 4
    out: dict[str, Any] = {
        "address": message.address,
        "control": control,
        "function": name,
        "direction": "reply" if is_reply else "request",
        "version": int(version),
        "error": list(message.errors) if isinstance(message, ErrorReply) else None,
        "more_follows": bool(control & 0x20),
        "di": None,
        "values": [],
        "unit": None,
    }
    out["fields"] = {
        f.name: (f"{getattr(message, f.name):0{di_digits}X}" if f.name in ("di", "event_di")
                 else _field_text(getattr(message, f.name)))
        for f in dataclasses.fields(message)
        if f.name not in ("address", "version", "readings")
    }
    if isinstance(message, ReadRequest | ReadReply | ReadFollowupRequest | ReadFollowupReply
                  | WriteRequest):
        out["di"] = f"{message.di:0{di_digits}X}"
    if isinstance(message, ReadReply | ReadFollowupReply):
        out["values"] = [value_text(r.value) for r in message.readings]
        units = {r.unit for r in message.readings}
        out["unit"] = units.pop() if len(units) == 1 else None
        out["readings"] = [
            {"name": r.name, "value": value_text(r.value), "unit": r.unit} for r in message.readings
        ]
        flags = [r for r in message.readings if isinstance(r.value, Mapping)]
        if flags:
            out["flags"] = {r.name: sorted(k for k, on in r.value.items() if on)  # type: ignore[union-attr]
                            for r in flags}
    elif isinstance(message, TimeSyncRequest):
        out["values"] = [message.moment.isoformat()]
    elif isinstance(message, ChangeBaudRequest | ChangeBaudReply):
        out["values"] = [str(message.baudrate)]
        out["unit"] = "bit/s"
    elif isinstance(message, ErrorReply):
        out["values"] = [f"{message.error_word:02X}"]
    return out
