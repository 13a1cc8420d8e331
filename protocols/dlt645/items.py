"""Data items (what a DI means) and readings (what a decoded DI says).

A :class:`DataItem` is one identifier: a name in our quantity vocabulary (``energy.active.import.total``)
and one or more fixed-size fields. A *block* DI (DL/T 645-2007 ``FF`` in DI1 or DI0, -1997 ``F`` in the
last nibble) is not an item of its own: it is the concatenation of its members in order, and a meter may
send fewer members than we know (four tariffs instead of eight) — decoding stops at the data's end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import DataError, LocalProtocolError
from .formats import Format, Raw, Value


@dataclass(frozen=True, slots=True)
class Field:
    """One fixed-size part of a data item; ``suffix`` is appended to the item name (``""`` for the main value)."""

    suffix: str
    format: Format


@dataclass(frozen=True, slots=True)
class DataItem:
    """A DI: ``di`` (int, DI3 most significant), ``name``, ``fields``; ``repeat`` means the last field
    repeats to the end of the data (tariff lists inside freeze records)."""

    di: int
    name: str
    fields: tuple[Field, ...]
    repeat_names: tuple[str, ...] = ()

    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(f.format.size for f in self.fields))


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded value: ``name`` (quantity), ``value`` (Decimal, date/time, text, flags or raw bytes), ``unit``."""

    name: str
    value: Value
    unit: str | None


def decode_item(item: DataItem, data: bytes) -> list[Reading]:
    """Decode exactly one item from ``data`` (which must be exactly its size, or a repeat multiple)."""
    out: list[Reading] = []
    pos = 0
    for f in item.fields:
        end = pos + f.format.size
        if end > len(data):
            raise DataError(
                f"DI {item.di:08X} ({item.name}) needs {item.size} bytes, got {len(data)}"
            )
        name = f"{item.name}.{f.suffix}" if f.suffix else item.name
        out.append(Reading(name, f.format.decode(data[pos:end]), f.format.unit))
        pos = end
    if item.repeat_names:
        last = item.fields[-1].format
        index = 0
        while pos < len(data):
            end = pos + last.size
            if end > len(data):
                raise DataError(f"DI {item.di:08X} ({item.name}): {len(data) - pos} trailing bytes")
            suffix = (
                item.repeat_names[index] if index < len(item.repeat_names) else f"x{index + 1}"
            )
            out.append(Reading(f"{item.name}.{suffix}", last.decode(data[pos:end]), last.unit))
            pos = end
            index += 1
    elif pos != len(data):
        raise DataError(
            f"DI {item.di:08X} ({item.name}) is {item.size} bytes, got {len(data)}"
        )
    return out


def encode_item(item: DataItem, values: Sequence[Value]) -> bytes:
    """Encode values (one per field, then repeats) — used by simulators, writes and tests."""
    if len(values) < len(item.fields) or (not item.repeat_names and len(values) != len(item.fields)):
        raise LocalProtocolError(
            f"DI {item.di:08X} ({item.name}) takes {len(item.fields)} values, got {len(values)}"
        )
    parts = [f.format.encode(v) for f, v in zip(item.fields, values, strict=False)]
    if item.repeat_names:
        last = item.fields[-1].format
        parts.extend(last.encode(v) for v in values[len(item.fields) :])
    return b"".join(parts)


def unknown_item(di: int, size: int, di_digits: int = 8) -> DataItem:
    """An item for a DI we do not know: its bytes are kept raw, its unit is ``None``."""
    return DataItem(di, f"di.{di:0{di_digits}X}", (Field("", Raw(size)),))


def block_members(
    di: int, items: Mapping[int, DataItem], nibble_block: bool = False
) -> tuple[DataItem, ...] | None:
    """Members of a block DI in transmission order, or ``None`` if ``di`` is not a known block.

    DL/T 645-2007: a ``FF`` byte in DI1 or DI0 stands for every defined value of that byte (the
    lowest DI byte that is FF varies fastest is not a thing: one FF per block in practice; when both
    are FF, DI1 varies slowest). -1997 (``nibble_block``): an ``F`` in the last nibble.
    """
    if nibble_block:
        if di & 0xF != 0xF:
            return None
        members = [items[d] for d in range(di & ~0xF, (di & ~0xF) + 0xF) if d in items]
        return tuple(members) or None
    b1 = (di >> 8) & 0xFF
    b0 = di & 0xFF
    if b1 != 0xFF and b0 != 0xFF:
        return None
    base = di & 0xFFFF0000
    dis1 = range(0xFF) if b1 == 0xFF else (b1,)
    dis0 = range(0xFF) if b0 == 0xFF else (b0,)
    members = [
        items[base | (x << 8) | y] for x in dis1 for y in dis0 if (base | (x << 8) | y) in items
    ]
    return tuple(members) or None
