"""Data formats of DL/T 645 data items (DL/T 645-2007 appendix A, -1997 §6).

All multi-byte items travel **least significant byte first**; the standard writes formats most
significant first (``XXXXXX.XX``, ``YYMMDDhhmm``), and so do the patterns here.

* BCD with implied decimals: ``XXXXXX.XX`` is 4 bytes, 2 decimals. Values are :class:`decimal.Decimal`
  built from the digits, so ``1206.42`` is exactly ``Decimal("1206.42")`` — never a float.
* Signed quantities use **sign-magnitude**: bit 7 of the most significant byte is the sign, the rest is
  BCD (DL/T 645-2007 §A.1 note). Not two's complement. ``-0`` decodes to ``0``.
* Dates and times are BCD fields; an all-zero or all-FF timestamp means "no record" and decodes to
  ``None`` (meters report never-happened events that way).
* ASCII and digit strings are also sent reversed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Protocol, TypeAlias

from .errors import DataError, LocalProtocolError

Value: TypeAlias = Decimal | dt.datetime | dt.date | dt.time | str | bytes | Mapping[str, bool] | None


class Format(Protocol):
    """A fixed-size field format: ``size`` bytes on the wire, ``unit`` of the decoded value."""

    @property
    def size(self) -> int: ...

    @property
    def unit(self) -> str | None: ...

    def decode(self, raw: bytes) -> Value: ...

    def encode(self, value: Value) -> bytes: ...


def _bcd_digits(raw: bytes) -> str:
    """Wire bytes (LSB first) → digit string (most significant first); DataError on a non-BCD nibble."""
    digits = raw[::-1].hex()
    if not digits.isdigit():
        raise DataError(f"bytes {raw.hex(' ').upper()} are not BCD")
    return digits


def _digits_to_wire(digits: str) -> bytes:
    return bytes.fromhex(digits)[::-1]


@dataclass(frozen=True, slots=True)
class Bcd:
    """Unsigned or sign-magnitude BCD with ``decimals`` implied decimal places."""

    size: int
    decimals: int
    unit: str | None = None
    signed: bool = False

    def decode(self, raw: bytes) -> Value:
        if len(raw) != self.size:
            raise DataError(f"BCD field needs {self.size} bytes, got {len(raw)}")
        negative = False
        if self.signed and raw[-1] & 0x80:
            negative = True
            raw = raw[:-1] + bytes([raw[-1] & 0x7F])
        magnitude = int(_bcd_digits(raw))
        # Exact: scaleb only moves the exponent, so trailing zeros stay ("0.00", "1206.40").
        return Decimal(-magnitude if negative and magnitude else magnitude).scaleb(-self.decimals)

    def encode(self, value: Value) -> bytes:
        if not isinstance(value, Decimal | int):
            raise LocalProtocolError(f"BCD field expects a Decimal, got {type(value).__name__}")
        try:
            scaled = Decimal(value).scaleb(self.decimals)
            integral = scaled.to_integral_exact()
        except InvalidOperation:
            raise LocalProtocolError(f"{value} is not a finite number") from None
        if integral != scaled:
            raise LocalProtocolError(
                f"{value} has more than {self.decimals} decimal places for this field"
            )
        magnitude = abs(int(integral))
        negative = integral < 0
        if negative and not self.signed:
            raise LocalProtocolError(f"{value} is negative but the field is unsigned")
        # Sign-magnitude takes only bit 7 of the top byte: its high digit may still be 0..7.
        limit = 8 * 10 ** (self.size * 2 - 1) if self.signed else 10 ** (self.size * 2)
        if magnitude >= limit:
            raise LocalProtocolError(
                f"{value} does not fit this {self.size}-byte BCD field (magnitude < {limit}, "
                f"before {self.decimals} implied decimals)")
        wire = bytearray(_digits_to_wire(f"{magnitude:0{self.size * 2}d}"))
        if negative:
            wire[-1] |= 0x80
        return bytes(wire)


#: Timestamp patterns (as written in the standard, most significant first) → field order.
_PATTERN_FIELDS: Mapping[str, tuple[str, ...]] = {
    "YYMMDDhhmmss": ("YY", "MM", "DD", "hh", "mm", "ss"),
    "YYMMDDhhmm": ("YY", "MM", "DD", "hh", "mm"),
    "YYMMDDWW": ("YY", "MM", "DD", "WW"),
    "YYMMDDWWhhmmss": ("YY", "MM", "DD", "WW", "hh", "mm", "ss"),
    "YYMMDD": ("YY", "MM", "DD"),
    "hhmmss": ("hh", "mm", "ss"),
    "MMDDhhmm": ("MM", "DD", "hh", "mm"),
    "hhmm": ("hh", "mm"),
}


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A BCD date/time ``pattern`` such as ``YYMMDDhhmm``; years are 2000 + YY.

    Decodes to ``datetime`` (date and time), ``date`` (date only, weekday checked but dropped),
    ``time`` (time only), or ``"MM-DDThh:mm"`` text for the yearless -1997 demand time.
    """

    pattern: str
    unit: str | None = None

    @property
    def size(self) -> int:
        return len(_PATTERN_FIELDS[self.pattern])

    def decode(self, raw: bytes) -> Value:
        fields = _PATTERN_FIELDS[self.pattern]
        if len(raw) != len(fields):
            raise DataError(f"{self.pattern} needs {len(fields)} bytes, got {len(raw)}")
        # "No record" is all-FF, or all-zero for a field with a date (month 0 does not exist);
        # an all-zero time of day is midnight, a real time.
        if raw == b"\xff" * len(raw) or (raw == bytes(len(raw)) and "DD" in fields):
            return None
        digits = _bcd_digits(raw)
        parts = {name: int(digits[2 * i : 2 * i + 2]) for i, name in enumerate(fields)}
        try:
            if "YY" in parts and "hh" in parts:
                return dt.datetime(
                    2000 + parts["YY"], parts["MM"], parts["DD"], parts["hh"], parts["mm"],
                    parts.get("ss", 0),
                )
            if "YY" in parts:
                if "WW" in parts and parts["WW"] > 6:
                    raise ValueError(f"weekday {parts['WW']} outside 0..6")
                return dt.date(2000 + parts["YY"], parts["MM"], parts["DD"])
            if "MM" in parts:
                dt.datetime(2000, parts["MM"], parts["DD"], parts["hh"], parts["mm"])  # validate
                return f"{parts['MM']:02d}-{parts['DD']:02d}T{parts['hh']:02d}:{parts['mm']:02d}"
            return dt.time(parts["hh"], parts["mm"], parts.get("ss", 0))
        except ValueError as exc:
            raise DataError(f"{self.pattern} {digits} is not a valid date/time: {exc}") from None

    def encode(self, value: Value) -> bytes:
        fields = _PATTERN_FIELDS[self.pattern]
        if value is None:
            return bytes(len(fields))
        parts: dict[str, int]
        if isinstance(value, dt.datetime):
            parts = {
                "YY": value.year - 2000, "MM": value.month, "DD": value.day,
                "WW": (value.weekday() + 1) % 7, "hh": value.hour, "mm": value.minute,
                "ss": value.second,
            }
        elif isinstance(value, dt.date):
            parts = {
                "YY": value.year - 2000, "MM": value.month, "DD": value.day,
                "WW": (value.weekday() + 1) % 7, "hh": 0, "mm": 0, "ss": 0,
            }
        elif isinstance(value, dt.time):
            parts = {"hh": value.hour, "mm": value.minute, "ss": value.second}
        elif isinstance(value, str) and self.pattern == "MMDDhhmm":
            try:
                parts = {
                    "MM": int(value[0:2]), "DD": int(value[3:5]),
                    "hh": int(value[6:8]), "mm": int(value[9:11]),
                }
            except ValueError:
                raise LocalProtocolError(f"expected 'MM-DDThh:mm', got {value!r}") from None
        else:
            raise LocalProtocolError(f"{self.pattern} cannot encode {value!r}")
        try:
            values = [parts[name] for name in fields]
        except KeyError as missing:
            raise LocalProtocolError(f"{self.pattern} cannot encode {value!r}: no {missing}") from None
        if any(not 0 <= v <= 99 for v in values):
            raise LocalProtocolError(f"{value!r} is outside the years 2000-2099")
        return _digits_to_wire("".join(f"{v:02d}" for v in values))


@dataclass(frozen=True, slots=True)
class Ascii:
    """ASCII text, sent reversed; decoding strips NUL and space padding."""

    size: int
    unit: str | None = None

    def decode(self, raw: bytes) -> Value:
        if len(raw) != self.size:
            raise DataError(f"ASCII field needs {self.size} bytes, got {len(raw)}")
        text = raw[::-1]
        try:
            return text.decode("ascii").strip("\x00 ")
        except UnicodeDecodeError:
            raise DataError(f"bytes {raw.hex(' ').upper()} are not ASCII") from None

    def encode(self, value: Value) -> bytes:
        if not isinstance(value, str):
            raise LocalProtocolError(f"ASCII field expects text, got {type(value).__name__}")
        data = value.encode("ascii", errors="strict")
        if len(data) > self.size:
            raise LocalProtocolError(f"{value!r} is longer than {self.size} characters")
        return data.rjust(self.size, b"\x00")[::-1]


@dataclass(frozen=True, slots=True)
class Digits:
    """A number written as digits (meter number, address): text, most significant digit first."""

    size: int
    unit: str | None = None

    def decode(self, raw: bytes) -> Value:
        if len(raw) != self.size:
            raise DataError(f"digit field needs {self.size} bytes, got {len(raw)}")
        return raw[::-1].hex().upper()

    def encode(self, value: Value) -> bytes:
        if not isinstance(value, str) or len(value) != self.size * 2:
            raise LocalProtocolError(f"expected {self.size * 2} hex digits, got {value!r}")
        try:
            return bytes.fromhex(value)[::-1]
        except ValueError:
            raise LocalProtocolError(f"expected {self.size * 2} hex digits, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class Flags:
    """A status word: bit ``i`` is named ``names[i]`` (``None`` = reserved). Decodes to ``{name: bool}``."""

    size: int
    names: tuple[str | None, ...]
    unit: str | None = None

    def decode(self, raw: bytes) -> Value:
        if len(raw) != self.size:
            raise DataError(f"status word needs {self.size} bytes, got {len(raw)}")
        word = int.from_bytes(raw, "little")
        return {name: bool(word >> bit & 1) for bit, name in enumerate(self.names) if name}

    def encode(self, value: Value) -> bytes:
        if not isinstance(value, Mapping):
            raise LocalProtocolError(f"status word expects a mapping of flags, got {value!r}")
        word = 0
        for bit, name in enumerate(self.names):
            if name and value.get(name):
                word |= 1 << bit
        unknown = set(value) - {n for n in self.names if n}
        if unknown:
            raise LocalProtocolError(f"unknown status flags {sorted(unknown)}")
        return word.to_bytes(self.size, "little")


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes kept as received (unknown or opaque fields)."""

    size: int
    unit: str | None = None

    def decode(self, raw: bytes) -> Value:
        if len(raw) != self.size:
            raise DataError(f"field needs {self.size} bytes, got {len(raw)}")
        return bytes(raw)

    def encode(self, value: Value) -> bytes:
        if not isinstance(value, bytes) or len(value) != self.size:
            raise LocalProtocolError(f"expected {self.size} raw bytes, got {value!r}")
        return value


def format_from_spec(spec: Mapping[str, object]) -> Format:
    """Build a format from a profile override, e.g. ``{format="bcd", bytes=4, decimals=2}``.

    This is how a meter profile re-declares a DI that a vendor encodes differently from the standard.
    """
    kind = spec.get("format")
    unit = spec.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise LocalProtocolError(f"override unit must be text, got {unit!r}")

    def _int(key: str, default: int | None = None) -> int:
        value = spec.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise LocalProtocolError(f"override key {key!r} must be a non-negative integer, got {value!r}")
        return value

    if kind == "bcd":
        return Bcd(_int("bytes"), _int("decimals", 0), unit, bool(spec.get("signed", False)))
    if kind == "timestamp":
        pattern = spec.get("pattern")
        if pattern not in _PATTERN_FIELDS:
            raise LocalProtocolError(
                f"override pattern must be one of {sorted(_PATTERN_FIELDS)}, got {pattern!r}"
            )
        return Timestamp(str(pattern), unit)
    if kind == "ascii":
        return Ascii(_int("bytes"), unit)
    if kind == "digits":
        return Digits(_int("bytes"), unit)
    if kind == "raw":
        return Raw(_int("bytes"), unit)
    raise LocalProtocolError(
        f"override format must be one of bcd, timestamp, ascii, digits, raw; got {kind!r}"
    )
