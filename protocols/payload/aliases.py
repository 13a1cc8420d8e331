"""Alias tables: what every poll of a meter repeats, declared once (payload schema v2).

A v1 reads record repeats its quantity name, unit and quality in every message: 65 bytes a value
for a 10-value Modbus poll. Schema v2 declares them once, in the retained birth on ``P/G/state``,
as Sparkplug B does with metric aliases:

* an :class:`AliasTable` is the ordered list of what a meter profile publishes — for each
  quantity its name, unit, decimal exponent (the resolution its values are kept at) and whether
  its values are exact decimals (registers) or floats (instantaneous quantities);
* a :class:`Binding` ties one meter to one table under a small integer, the **binding index**.
  A v2 reads message names only that index; its records are values in table order.

Binding indexes are allocated by the gateway's store and **never reused within a store epoch**:
when a profile changes (SIGHUP) the meter gets a new binding with a new index, while messages
built before the change keep naming the old one. So a consumer may cache every binding it has
seen, keyed by (gateway, epoch, index), and a stale table can never decode a newer message.
The birth declares every binding the store holds (``aliases`` field, see ``docs/payloads.cddl``).

:class:`AliasBook` is that cache: learn births into it, then hand it to
:func:`~protocols.payload.decode.parse_reads` to get records out of v2 messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from protocols.payload.schema import (
    MAX_DECIMAL_EXPONENT,
    PayloadDecodeError,
    PayloadEncodeError,
    _require_text,
    _require_uint,
)

#: Kind flag of an alias entry on the wire.
KIND_DECIMAL: Final = 0
KIND_FLOAT: Final = 1


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """One quantity of a table: ``q`` name, ``unit``, ``exponent`` (values are integer mantissas
    times 10**exponent; None when the profile declares no resolution, so values travel as they
    are), ``decimal`` True for registers (exact ``Decimal``), False for instantaneous floats."""

    q: str
    unit: str
    exponent: int | None
    decimal: bool

    def __post_init__(self) -> None:
        _require_text(self.q, "alias quantity name")
        _require_text(self.unit, f"alias {self.q}: unit", empty_ok=True)
        if self.exponent is not None and (
            isinstance(self.exponent, bool) or not isinstance(self.exponent, int)
            or abs(self.exponent) > MAX_DECIMAL_EXPONENT
        ):
            raise PayloadEncodeError(f"alias {self.q}: exponent must be an integer within "
                                     f"±{MAX_DECIMAL_EXPONENT}, got {self.exponent!r}")

    def wire(self) -> list[object]:
        """``[q, unit, exponent or null, kind]`` as the birth carries it."""
        return [self.q, self.unit, self.exponent, KIND_DECIMAL if self.decimal else KIND_FLOAT]


@dataclass(frozen=True, slots=True)
class AliasTable:
    """The ordered entries of one profile; an entry's position is its alias number."""

    entries: tuple[AliasEntry, ...]
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.entries, tuple):
            object.__setattr__(self, "entries", tuple(self.entries))
        index: dict[str, int] = {}
        for position, entry in enumerate(self.entries):
            if entry.q in index:
                raise PayloadEncodeError(f"alias table names {entry.q!r} twice")
            index[entry.q] = position
        object.__setattr__(self, "index", index)

    def wire(self) -> list[list[object]]:
        return [entry.wire() for entry in self.entries]

    @classmethod
    def from_wire(cls, raw: object, where: str) -> AliasTable:
        if not isinstance(raw, list):
            raise PayloadDecodeError(f"{where}: an alias table is a list of entries")
        entries = []
        for i, item in enumerate(raw):
            if not (isinstance(item, list) and len(item) == 4):
                raise PayloadDecodeError(f"{where}[{i}]: an alias is [q, unit, exponent, kind]")
            q, unit, exponent, kind = item
            if kind not in (KIND_DECIMAL, KIND_FLOAT) or isinstance(kind, bool):
                raise PayloadDecodeError(f"{where}[{i}]: kind must be 0 (decimal) or 1 (float)")
            try:
                entries.append(AliasEntry(cast(str, q), cast(str, unit), cast("int | None", exponent),
                                          kind == KIND_DECIMAL))
            except PayloadEncodeError as exc:
                raise PayloadDecodeError(f"{where}[{i}]: {exc}") from exc
        try:
            return cls(tuple(entries))
        except PayloadEncodeError as exc:
            raise PayloadDecodeError(f"{where}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Binding:
    """Meter ``meter`` uses ``table`` under binding index ``index`` (unique within a store epoch)."""

    index: int
    meter: str
    table: AliasTable

    def __post_init__(self) -> None:
        _require_uint(self.index, "binding index")
        _require_text(self.meter, "binding meter id")


def aliases_field(epoch: int, bindings: Iterable[Binding]) -> dict[str, object]:
    """The birth's ``aliases`` field: ``epoch`` (the store the indexes belong to), ``tables``
    (each distinct table once, numbered by position) and ``bindings`` ``[index, meter, table]``."""
    tables: list[list[list[object]]] = []
    numbers: dict[tuple[AliasEntry, ...], int] = {}
    rows: list[list[object]] = []
    for binding in sorted(bindings, key=lambda b: b.index):
        number = numbers.get(binding.table.entries)
        if number is None:
            number = numbers[binding.table.entries] = len(tables)
            tables.append(binding.table.wire())
        rows.append([binding.index, binding.meter, number])
    return {"epoch": _require_uint(epoch, "store epoch"), "tables": tables, "bindings": rows}


def bindings_from_field(raw: object) -> tuple[int, list[Binding]]:
    """The inverse of :func:`aliases_field`: (epoch, bindings), or PayloadDecodeError."""
    if not isinstance(raw, dict):
        raise PayloadDecodeError("birth 'aliases' must be a map")
    epoch, tables_raw, rows = raw.get("epoch"), raw.get("tables"), raw.get("bindings")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise PayloadDecodeError("birth aliases.epoch must be an unsigned integer")
    if not isinstance(tables_raw, list) or not isinstance(rows, list):
        raise PayloadDecodeError("birth aliases needs 'tables' and 'bindings' lists")
    tables = [AliasTable.from_wire(t, f"aliases.tables[{i}]") for i, t in enumerate(tables_raw)]
    bindings = []
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3):
            raise PayloadDecodeError(f"aliases.bindings[{i}] must be [index, meter, table]")
        index, meter, number = row
        if (isinstance(number, bool) or not isinstance(number, int)
                or not 0 <= number < len(tables)):
            raise PayloadDecodeError(f"aliases.bindings[{i}]: no table {number!r}")
        try:
            bindings.append(Binding(cast(int, index), cast(str, meter), tables[number]))
        except PayloadEncodeError as exc:
            raise PayloadDecodeError(f"aliases.bindings[{i}]: {exc}") from exc
    return epoch, bindings


class AliasBook:
    """Every binding a consumer has learned, by (gateway, epoch, index).

    Bindings are immutable once declared (indexes are never reused within an epoch), so the
    book only grows; learning the same birth twice is harmless.
    """

    def __init__(self) -> None:
        self._bindings: dict[tuple[str, int, int], Binding] = {}

    def add(self, gw: str, epoch: int, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            self._bindings[(gw, epoch, binding.index)] = binding

    def learn(self, birth: Mapping[str, object]) -> int:
        """Learn the bindings a decoded birth declares (a birth without ``aliases``, from a
        v1 gateway, declares none); returns how many it declared."""
        gw = birth.get("gw")
        if "aliases" not in birth or not isinstance(gw, str):
            return 0
        epoch, bindings = bindings_from_field(birth["aliases"])
        self.add(gw, epoch, bindings)
        return len(bindings)

    def get(self, gw: str, epoch: int, index: int) -> Binding | None:
        return self._bindings.get((gw, epoch, index))

    def __len__(self) -> int:
        return len(self._bindings)


def table_of(entries: Sequence[AliasEntry]) -> AliasTable:
    """An :class:`AliasTable` of ``entries`` (first occurrence of a name wins)."""
    seen: dict[str, AliasEntry] = {}
    for entry in entries:
        seen.setdefault(entry.q, entry)
    return AliasTable(tuple(seen.values()))
