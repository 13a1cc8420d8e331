"""Meter profiles: which quantities a meter model offers and how to read them, kept as data.

A profile is one TOML file (``protocols/meter_profiles/<name>.toml`` for those shipped); a user adds a meter model by writing
one, not by writing code. Its ``kind`` key selects the schema:

* ``kind = "modbus"`` — a register map, parsed into :class:`protocols.modbus.profile.ModbusProfile`
  (see that module for the keys).
* ``kind = "dlt645"`` — the data identifiers (DIs) to read and optional data-format overrides,
  parsed into :class:`Dlt645Profile`. This module only checks the *types* of the fields; the
  DL/T 645 codec (:mod:`protocols.dlt645`) gives them meaning.

Both kinds name what they read with one shared vocabulary of quantity names (``voltage.a``,
``energy.active.import.total`` …). :func:`canonical_unit` holds the vocabulary's units, so a
profile that says ``unit = "W"`` for a ``power.active.*`` quantity (canonical ``kW``) is rejected
before it silently publishes readings a thousand times too large.

Every problem found in a file is collected and raised together as one :class:`ProfileError`
whose lines each name the file, the key path and what was expected — the same contract the
gateway configuration keeps (DESIGN §3: unknown keys are errors).

Nothing here opens sockets or reads clocks; :func:`load_profile` reads one file and everything
else works on text or mappings.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias

if TYPE_CHECKING:
    from protocols.modbus.profile import ModbusProfile

__all__ = [
    "QUANTITY_ROOTS",
    "Dlt645Override",
    "Dlt645Profile",
    "Dlt645Read",
    "Profile",
    "ProfileError",
    "ProfileIssue",
    "TableReader",
    "builtin_profile_dir",
    "canonical_unit",
    "check_quantity_name",
    "find_profile",
    "load_named_profile",
    "load_profile",
    "parse_profile",
    "parse_profile_data",
]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileIssue:
    """One problem in a profile.

    Fields: ``location`` — file and key path, e.g. ``sdm630.toml: groups[0].registers[3].unit``;
    ``message`` — what is wrong and what would be accepted.
    """

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ProfileError(ValueError):
    """A profile file cannot be used; ``issues`` lists every problem found, each with its location."""

    def __init__(self, issues: Sequence[ProfileIssue]) -> None:
        self.issues: tuple[ProfileIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues) or "invalid profile")


# --------------------------------------------------------------------------------------------
# Quantity vocabulary
# --------------------------------------------------------------------------------------------

_QUANTITY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")

#: First segments a quantity name may start with. ``x.`` is the escape hatch for vendor-specific
#: values that have no place in the shared vocabulary yet (any unit is accepted there).
QUANTITY_ROOTS: frozenset[str] = frozenset(
    {"voltage", "current", "power", "frequency", "energy", "demand", "ratio", "status", "event",
     "time", "prepaid", "x"}
)

# Longest prefix wins. Roots listed here must match one of their prefixes, which catches typos
# such as ``power.activ.total`` that would otherwise become a new, silently unread quantity.
_UNIT_RULES: tuple[tuple[str, str], ...] = (
    ("voltage.", "V"),
    ("current.", "A"),
    ("power.active.", "kW"),
    ("power.reactive.", "kvar"),
    ("power.apparent.", "kVA"),
    ("power.factor.", ""),
    ("frequency", "Hz"),
    ("energy.active.", "kWh"),
    ("energy.reactive.", "kvarh"),
    ("energy.apparent.", "kVAh"),
    ("demand.active.", "kW"),
    ("demand.reactive.", "kvar"),
    ("demand.apparent.", "kVA"),
    ("ratio.", ""),
)
_RULED_ROOTS = frozenset(prefix.split(".")[0] for prefix, _ in _UNIT_RULES)


def canonical_unit(quantity: str) -> str | None:
    """The unit every reading of ``quantity`` is published in, or None when the vocabulary has no rule.

    Instantaneous power is kW (not W), energy kWh, power factor and ratios are dimensionless
    (``""``). A profile converts the meter's own unit with its ``scale``.
    """
    for prefix, unit in _UNIT_RULES:
        if prefix.endswith("."):
            if quantity.startswith(prefix):
                return unit
        elif quantity == prefix or quantity.startswith(prefix + "."):
            return unit
    return None


def check_quantity_name(quantity: str) -> str | None:
    """Return why ``quantity`` is not an acceptable quantity name, or None when it is."""
    if not _QUANTITY_RE.match(quantity):
        return (
            f"quantity {quantity!r} is not a dotted lower-case name such as 'voltage.a' or "
            "'energy.active.import.total'"
        )
    root = quantity.split(".")[0]
    if root not in QUANTITY_ROOTS:
        return (
            f"quantity {quantity!r} starts with unknown family {root!r}; use one of "
            f"{', '.join(sorted(QUANTITY_ROOTS))} ('x.' for vendor-specific values)"
        )
    if root in _RULED_ROOTS and canonical_unit(quantity) is None:
        known = sorted(p.rstrip(".") for p, _ in _UNIT_RULES if p.startswith(root))
        return f"quantity {quantity!r} is not in the vocabulary; it must start with one of {', '.join(known)}"
    return None


# --------------------------------------------------------------------------------------------
# Reading TOML tables with located errors
# --------------------------------------------------------------------------------------------

_MISSING = object()


class TableReader:
    """Typed access to one TOML table that records every problem with its key path.

    Used by the profile parsers: each getter returns a usable default after recording an issue,
    so one pass reports all problems in a file instead of stopping at the first.
    Call :meth:`finish` once all known keys were read to report the unknown ones.
    """

    def __init__(self, data: object, path: str, issues: list[ProfileIssue], source: str) -> None:
        self.source = source
        self.path = path
        self.issues = issues
        self._seen: set[str] = set()
        if isinstance(data, Mapping):
            self._data: Mapping[str, object] = data
        else:
            self._data = {}
            self.error(None, f"expected a table, got {_type_name(data)}")

    def location(self, key: str | None) -> str:
        """``file: path.key`` for messages."""
        if key is None:
            return f"{self.source}: {self.path}" if self.path else self.source
        return f"{self.source}: {self.path}.{key}" if self.path else f"{self.source}: {key}"

    def error(self, key: str | None, message: str) -> None:
        """Record an issue at ``key`` (or at the table itself when key is None)."""
        self.issues.append(ProfileIssue(self.location(key), message))

    def has(self, key: str) -> bool:
        """True when the table sets ``key``."""
        return key in self._data

    def _get(self, key: str) -> object:
        self._seen.add(key)
        return self._data.get(key, _MISSING)

    def raw(self, key: str) -> object | None:
        """The value of ``key`` as parsed (None when absent), for tables a dedicated parser
        checks itself (a Modbus profile's ``relay``); the key counts as known."""
        value = self._get(key)
        return None if value is _MISSING else value

    def string(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        """A string value; empty strings are allowed (dimensionless units are ``""``)."""
        value = self._get(key)
        if value is _MISSING:
            if required:
                self.error(key, "is required (a string)")
            return default
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {_type_name(value)}")
            return default
        return value

    def integer(
        self, key: str, *, required: bool = False, default: int | None = None,
        minimum: int | None = None, maximum: int | None = None,
    ) -> int | None:
        """An integer (TOML allows 0x1E hex literals, which is how register maps are published)."""
        value = self._get(key)
        if value is _MISSING:
            if required:
                self.error(key, "is required (an integer)")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {_type_name(value)}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(key, f"{value} is outside {_range_text(minimum, maximum)}")
            return default
        return value

    def boolean(self, key: str, *, default: bool) -> bool:
        """A true/false value."""
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {_type_name(value)}")
            return default
        return value

    def decimal(self, key: str) -> Decimal | None:
        """A decimal number written as a TOML number or, to stay exact, a string such as "0.001".

        A TOML float is converted through its shortest repr (0.1 → Decimal("0.1")), so both
        spellings give the same value.
        """
        value = self._get(key)
        if value is _MISSING:
            return None
        if isinstance(value, bool):
            self.error(key, "expected a number or a decimal string such as \"0.001\", got a boolean")
            return None
        try:
            if isinstance(value, int):
                result = Decimal(value)
            elif isinstance(value, float):
                result = Decimal(repr(value))
            elif isinstance(value, str):
                result = Decimal(value.strip())
            else:
                self.error(key, f"expected a number or a decimal string, got {_type_name(value)}")
                return None
        except InvalidOperation:
            self.error(key, f"{value!r} is not a decimal number")
            return None
        if not result.is_finite():
            self.error(key, f"{value!r} is not a finite number")
            return None
        return result

    def string_list(self, key: str) -> tuple[str, ...] | None:
        """A list of strings."""
        value = self._get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(key, "expected a list of strings")
            return None
        return tuple(value)

    def tables(self, key: str, *, required: bool = False) -> list[TableReader]:
        """An array of tables (``[[key]]`` or ``key = [{...}, ...]``), one reader per element."""
        value = self._get(key)
        if value is _MISSING:
            if required:
                self.error(key, "is required (an array of tables)")
            return []
        if not isinstance(value, list):
            self.error(key, f"expected an array of tables, got {_type_name(value)}")
            return []
        prefix = f"{self.path}.{key}" if self.path else key
        return [TableReader(item, f"{prefix}[{i}]", self.issues, self.source) for i, item in enumerate(value)]

    def table(self, key: str) -> TableReader | None:
        """A sub-table, or None when absent."""
        value = self._get(key)
        if value is _MISSING:
            return None
        prefix = f"{self.path}.{key}" if self.path else key
        return TableReader(value, prefix, self.issues, self.source)

    def choice(self, key: str, choices: Iterable[str], *, required: bool = False) -> str | None:
        """A string that must be one of ``choices``."""
        options = tuple(choices)
        value = self.string(key, required=required)
        if value is not None and value not in options:
            self.error(key, f"{value!r} is not one of {', '.join(repr(c) for c in options)}")
            return None
        return value

    def finish(self) -> None:
        """Report keys this table sets but no reader asked for (typos, misplaced keys)."""
        for key in self._data:
            if key not in self._seen:
                allowed = ", ".join(sorted(self._seen)) or "none"
                self.error(key, f"unknown key (allowed here: {allowed})")


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{minimum}..{maximum}"
    if minimum is not None:
        return f">= {minimum}"
    return f"<= {maximum}"


# --------------------------------------------------------------------------------------------
# DL/T 645 profiles (schema only; protocols.dlt645 interprets the values)
# --------------------------------------------------------------------------------------------

_DI_2007_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_DI_1997_RE = re.compile(r"^[0-9A-Fa-f]{4}$")
_FORMAT_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Dlt645Read:
    """One data identifier the gateway reads on every poll.

    Fields: ``di`` — upper-case hex as written in the standard, DI3 first (8 digits for -2007,
    4 for -1997); ``name`` — the quantity a single-value DI publishes as (None: the codec's
    catalogue name); ``names`` — quantity names, in reply order, for a block DI such as
    ``0001FF00`` (total, T1..T4); ``optional`` — the meter may answer "no data" without that
    being an alarm; ``every_s`` — read this DI only once that long has passed since it last
    answered (None: every poll), for slow values such as a prepaid balance on a busy 2400-baud
    line; ``refresh_on`` — quantities read earlier in the same poll whose change makes this DI
    due at once whatever ``every_s`` says (a purchase counter that moved: read the balance now).
    """

    di: str
    name: str | None = None
    names: tuple[str, ...] = ()
    optional: bool = False
    every_s: float | None = None
    refresh_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Dlt645Override:
    """A data-format override for one DI, for meters that deviate from the standard's catalogue.

    Fields: ``di``; ``format`` — codec format name (e.g. ``bcd``); ``bytes`` — data length;
    ``decimals`` — implied decimal places; ``signed`` — sign-magnitude top bit; ``unit``;
    ``name`` — quantity name to publish under (None keeps the catalogue's).
    """

    di: str
    format: str
    bytes: int
    decimals: int = 0
    signed: bool = False
    unit: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Dlt645Profile:
    """A DL/T 645 meter profile.

    Fields: ``name``; ``version`` — ``"2007"`` or ``"1997"``; ``reads``; ``overrides``;
    ``load_records`` — the meter keeps class-4 load records (DL/T 645-2007 A.7, read with
    06040001), so intervals estimated while it was silent can be read back (docs/vee.md);
    ``clock`` — the (date, time) DIs of the meter clock, read at ``[clock] read_interval_s``
    rather than every poll (docs/clock.md), or None when the profile does not read the clock;
    ``description``/``vendor``/``model`` for people; ``source`` — where it was loaded from.
    """

    kind: ClassVar[Literal["dlt645"]] = "dlt645"
    name: str
    version: Literal["2007", "1997"]
    reads: tuple[Dlt645Read, ...]
    overrides: tuple[Dlt645Override, ...] = ()
    load_records: bool = False
    clock: tuple[str, str] | None = None
    description: str = ""
    vendor: str = ""
    model: str = ""
    source: str = "<memory>"

    def override_for(self, di: str) -> Dlt645Override | None:
        """The override for ``di`` (any case), if the profile has one."""
        wanted = di.upper()
        for override in self.overrides:
            if override.di == wanted:
                return override
        return None


def _check_named_quantity(reader: TableReader, key: str, name: str | None) -> str | None:
    if name is None:
        return None
    problem = check_quantity_name(name)
    if problem:
        reader.error(key, problem)
        return None
    return name


@dataclass(frozen=True, slots=True)
class _Common:
    """Descriptive keys every profile kind shares."""

    description: str
    vendor: str
    model: str


def _parse_dlt645(top: TableReader, name: str, common: _Common) -> Dlt645Profile:
    version_text = top.choice("version", ("2007", "1997"))
    read_tables = top.tables("reads", required=True)
    override_tables = top.tables("overrides")
    load_records = top.boolean("load_records", default=False)
    clock_table = top.table("clock")

    di_lengths: set[int] = set()

    def read_di(reader: TableReader) -> str | None:
        di = reader.string("di", required=True)
        if di is None:
            return None
        if not (_DI_2007_RE.match(di) or _DI_1997_RE.match(di)):
            reader.error("di", f"{di!r} is not a data identifier: 8 hex digits (-2007, DI3 first, e.g. "
                               "'00010000') or 4 hex digits (-1997, e.g. '9010')")
            return None
        di_lengths.add(len(di))
        return di.upper()

    reads: list[Dlt645Read] = []
    seen_reads: dict[str, str] = {}
    for reader in read_tables:
        di = read_di(reader)
        quantity = _check_named_quantity(reader, "name", reader.string("name"))
        names = reader.string_list("names") or ()
        for i, item in enumerate(names):
            problem = check_quantity_name(item)
            if problem:
                reader.error(f"names[{i}]", problem)
        if reader.has("name") and reader.has("names"):
            reader.error("names", "give either name (one value) or names (a block DI), not both")
        optional = reader.boolean("optional", default=False)
        every = reader.decimal("every_s")
        if every is not None and every <= 0:
            reader.error("every_s", f"must be a positive number of seconds, got {every}")
            every = None
        refresh_on = reader.string_list("refresh_on") or ()
        for i, item in enumerate(refresh_on):
            problem = check_quantity_name(item)
            if problem:
                reader.error(f"refresh_on[{i}]", problem)
        reader.finish()
        if di is None:
            continue
        if di in seen_reads:
            reader.error("di", f"DI {di} is already read at {seen_reads[di]}")
            continue
        seen_reads[di] = reader.path
        reads.append(Dlt645Read(di=di, name=quantity, names=tuple(names), optional=optional,
                                every_s=None if every is None else float(every),
                                refresh_on=tuple(refresh_on)))
    if not read_tables and top.has("reads"):
        top.error("reads", "must list at least one DI to read")

    overrides: list[Dlt645Override] = []
    seen_overrides: dict[str, str] = {}
    for reader in override_tables:
        di = read_di(reader)
        fmt = reader.string("format", required=True)
        if fmt is not None and not _FORMAT_RE.match(fmt):
            reader.error("format", f"{fmt!r} is not a format name such as 'bcd'")
            fmt = None
        size = reader.integer("bytes", required=True, minimum=1, maximum=255)
        decimals = reader.integer("decimals", default=0, minimum=0, maximum=64)
        signed = reader.boolean("signed", default=False)
        quantity = _check_named_quantity(reader, "name", reader.string("name"))
        unit = reader.string("unit")
        if quantity is not None:
            unit = _checked_unit(reader, quantity, unit)
        if size is not None and decimals is not None and decimals > 2 * size:
            reader.error("decimals", f"{decimals} decimals cannot fit in {size} BCD byte(s) ({2 * size} digits)")
        reader.finish()
        if di is None or fmt is None or size is None or decimals is None:
            continue
        if di in seen_overrides:
            reader.error("di", f"DI {di} already has an override at {seen_overrides[di]}")
            continue
        seen_overrides[di] = reader.path
        overrides.append(Dlt645Override(di=di, format=fmt, bytes=size, decimals=decimals,
                                        signed=signed, unit=unit, name=quantity))

    version: Literal["2007", "1997"]
    if version_text is not None:
        version = "2007" if version_text == "2007" else "1997"
        expected = 8 if version == "2007" else 4
        if di_lengths - {expected}:
            top.error("version", f"DL/T 645-{version} DIs have {expected} hex digits; this profile has others")
    elif di_lengths == {4}:
        version = "1997"
    else:
        version = "2007"
        if len(di_lengths) > 1:
            top.error("reads", "mixes 8-digit (-2007) and 4-digit (-1997) DIs; set version and use one kind")
    clock: tuple[str, str] | None = None
    if clock_table is not None:
        # The standard's items unless the profile names others (docs/clock.md).
        defaults = ("04000101", "04000102") if version == "2007" else ("C010", "C011")
        chosen = []
        for key, default in zip(("date", "time"), defaults, strict=True):
            text = clock_table.string(key, default=default) or default
            di = text.upper()
            if len(di) != len(default) or not (_DI_2007_RE.match(di) or _DI_1997_RE.match(di)):
                clock_table.error(key, f"{text!r} is not a DL/T 645-{version} data identifier "
                                       f"({len(default)} hex digits, e.g. {default!r})")
            chosen.append(di)
        clock_table.finish()
        clock = (chosen[0], chosen[1])
    if load_records and version != "2007":
        top.error("load_records", "load records (06xxxxxx) exist in DL/T 645-2007 only; remove the "
                                  "key or set version = \"2007\"")
    top.finish()
    if top.issues:
        raise ProfileError(top.issues)
    return Dlt645Profile(name=name, version=version, reads=tuple(reads), overrides=tuple(overrides),
                         load_records=bool(load_records), clock=clock,
                         description=common.description, vendor=common.vendor, model=common.model,
                         source=top.source)


def _checked_unit(reader: TableReader, quantity: str, unit: str | None) -> str | None:
    """Default the unit from the vocabulary; reject a unit that contradicts it."""
    expected = canonical_unit(quantity)
    if unit is None:
        return expected if expected is not None else ""
    if expected is not None and unit != expected:
        shown = repr(expected) if expected else '"" (dimensionless)'
        reader.error("unit", f"{quantity} is published in {shown}, not {unit!r}; "
                             "convert with scale (e.g. W → kW is scale = \"0.001\")")
        return expected
    return unit


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

#: Any profile :func:`load_profile` can return; dispatch on its ``kind`` class attribute.
Profile: TypeAlias = "ModbusProfile | Dlt645Profile"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def parse_profile_data(data: Mapping[str, object], *, source: str = "<memory>",
                       name: str | None = None) -> Profile:
    """Build a profile from already-parsed TOML.

    ``name`` is the name the profile is known by (the file stem when loaded from a file); a
    ``name`` key inside the file must agree with it. Raises :class:`ProfileError`.
    """
    issues: list[ProfileIssue] = []
    top = TableReader(data, "", issues, source)
    kind = top.choice("kind", ("modbus", "dlt645"), required=True)
    declared = top.string("name")
    final_name = name if name is not None else declared
    if final_name is None:
        top.error("name", "is required when the profile is not loaded from a file")
        final_name = "unnamed"
    elif not _NAME_RE.match(final_name):
        top.error("name", f"{final_name!r} is not a profile name (lower case letters, digits, '.', '-', '_')")
    if declared is not None and name is not None and declared != name:
        top.error("name", f"says {declared!r} but the file is named {name!r}; profiles are known by "
                          "their file name — rename one of them")
    common = _Common(
        description=top.string("description", default="") or "",
        vendor=top.string("vendor", default="") or "",
        model=top.string("model", default="") or "",
    )
    if kind is None:
        # Without a valid kind the other keys cannot be checked; report what is known.
        raise ProfileError(issues)
    if kind == "dlt645":
        return _parse_dlt645(top, final_name, common)
    if kind == "modbus":
        # Imported here: protocols.modbus.profile builds on the helpers in this module.
        from protocols.modbus.profile import parse_modbus_profile

        return parse_modbus_profile(top, final_name, description=common.description,
                                    vendor=common.vendor, model=common.model)
    raise AssertionError(f"unhandled profile kind {kind!r}")  # pragma: no cover - choice() limits kind


def parse_profile(text: str, *, source: str = "<memory>", name: str | None = None) -> Profile:
    """Parse profile TOML text. Raises :class:`ProfileError` (TOML syntax errors included)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([ProfileIssue(source, f"not valid TOML: {exc}")]) from exc
    return parse_profile_data(data, source=source, name=name)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and parse one profile file; its name is the file stem (``sdm630.toml`` → ``sdm630``)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError([ProfileIssue(str(file), f"cannot read profile: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ProfileError([ProfileIssue(str(file), f"not UTF-8 text: {exc}")]) from exc
    return parse_profile(text, source=str(file), name=file.stem)


def builtin_profile_dir() -> Path:
    """The profiles shipped with the gateway: ``protocols/meter_profiles/``, package data in the
    wheel (pyproject ``[tool.setuptools.package-data]``), so the same lookup works from a checkout
    and from an installed copy. The wheel is installed unzipped, so the resource is a directory."""
    return Path(str(importlib.resources.files("protocols").joinpath("meter_profiles")))


def find_profile(name: str, search_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Path:
    """The file for profile ``name``: the first ``<dir>/<name>.toml`` in ``search_dirs``.

    Without ``search_dirs`` only the built-in profiles are searched. Raises :class:`ProfileError`
    naming every place looked in.
    """
    if not _NAME_RE.match(name):
        raise ProfileError([ProfileIssue(name, "is not a profile name (lower case letters, digits, '.', '-', '_')")])
    dirs = [Path(d) for d in search_dirs] if search_dirs is not None else [builtin_profile_dir()]
    for directory in dirs:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d / f"{name}.toml") for d in dirs) or "(no directories given)"
    raise ProfileError([ProfileIssue(name, f"no such profile; looked for {looked}")])


def load_named_profile(name: str, search_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Profile:
    """:func:`find_profile` then :func:`load_profile`."""
    return load_profile(find_profile(name, search_dirs))
