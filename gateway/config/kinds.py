"""Value kinds: how one TOML value is checked, converted, described and put in the schema.

Every kind answers three questions from the same attributes, so they cannot disagree:
`check` (is this TOML value acceptable, and what typed value does it become),
`expected` (the words an error message uses) and `json_schema` (the JSON Schema fragment).

`build_table` is the heart of the validator: it walks a dataclass's declared fields, reports
unknown and missing keys, checks each value with its kind, and keeps going after a problem so
that every mistake in the file is reported in one run.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

from gateway.config.context import Context
from gateway.config.fields import (
    REQUIRED,
    Spec,
    field_names,
    specs_of,
    table_doc,
    with_overrides,
)
from gateway.config.issues import KeyPath


class _Invalid:
    """Returned by `check` after it reported a problem; the caller just skips the value."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()

Siblings = Mapping[str, Any]


def describe(value: object) -> str:
    """A TOML value as an error message shows it: its TOML type, then the value."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return "an empty string" if not value else f'string "{shown}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return f"a date/time {value.isoformat()}"
    return type(value).__name__


def _number_text(value: float | int | Decimal) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_json(value: Any) -> Any:
    """A typed default as JSON Schema shows it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted(to_json(item) for item in value)
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {}
    return value


class SchemaDefs:
    """The `$defs` of the schema being generated: one entry per table class or bus variant."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def ref(self, name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name not in self.defs:
            self.defs[name] = {}  # placeholder first: guards against self-reference loops
            self.defs[name] = build()
        return {"$ref": f"#/$defs/{name}"}


class Kind(ABC):
    """How one config value is checked, converted, described and published as schema."""

    @abstractmethod
    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        """The typed value, or INVALID after reporting to `ctx` what was expected.

        `siblings` is the raw table holding the value, for kinds whose rule depends on a
        neighbour (a meter address is read according to its bus's protocol).
        """

    @abstractmethod
    def expected(self) -> str:
        """What the kind accepts, as a noun phrase: "an integer between 1 and 247"."""

    @abstractmethod
    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) fragment for this kind."""

    def reject(self, value: object, at: KeyPath, ctx: Context) -> _Invalid:
        ctx.report(at, f"expected {self.expected()}, got {describe(value)}")
        return INVALID


# --- scalars -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Str(Kind):
    """A non-empty string, optionally matching `pattern` (a full match; `hint` explains it)."""

    pattern: str | None = None
    hint: str | None = None
    max_length: int | None = None

    def expected(self) -> str:
        return self.hint or "a non-empty string"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, str) or not value:
            return self.reject(value, at, ctx)
        if self.max_length is not None and len(value) > self.max_length:
            ctx.report(
                at,
                f"expected {self.expected()}, got a string of {len(value)} characters "
                f"(at most {self.max_length})",
            )
            return INVALID
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return self.reject(value, at, ctx)
        return value

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$"
        return schema


@dataclass(frozen=True)
class Choice(Kind):
    """One of a fixed set of strings (matched exactly: "E", not "e")."""

    options: tuple[str, ...]

    def expected(self) -> str:
        return "one of " + ", ".join(f'"{option}"' for option in self.options)

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if isinstance(value, str) and value in self.options:
            return value
        message = f"expected {self.expected()}, got {describe(value)}"
        if isinstance(value, str):
            folded = [option for option in self.options if option.lower() == value.lower()]
            if folded:
                message += f' (did you mean "{folded[0]}"?)'
        elif isinstance(value, int | float) and str(value) in self.options:
            message += f' (write it as a string: "{value}")'
        ctx.report(at, message)
        return INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.options)}


@dataclass(frozen=True)
class Bool(Kind):
    """`true` or `false` (TOML booleans; "yes", 1 and "true" are mistakes we report)."""

    def expected(self) -> str:
        return "true or false"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if isinstance(value, bool):
            return value
        return self.reject(value, at, ctx)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "boolean"}


def _range_text(
    noun: str,
    minimum: float | None,
    maximum: float | None,
    exclusive_minimum: bool = False,
) -> str:
    if minimum is not None and maximum is not None and not exclusive_minimum:
        return f"{noun} between {_number_text(minimum)} and {_number_text(maximum)}"
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {_number_text(minimum)}")
    if maximum is not None:
        parts.append(f"<= {_number_text(maximum)}")
    return f"{noun} {' and '.join(parts)}" if parts else noun


@dataclass(frozen=True)
class Int(Kind):
    """A TOML integer within limits, or from a fixed set (`choices`, e.g. baud rates)."""

    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[int, ...] | None = None
    unit: str | None = None

    def expected(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(str(choice) for choice in self.choices)
        else:
            text = _range_text("an integer", self.minimum, self.maximum)
        return f"{text} ({self.unit})" if self.unit else text

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            return self.reject(value, at, ctx)
        if self.choices is not None and value not in self.choices:
            return self.reject(value, at, ctx)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            return self.reject(value, at, ctx)
        return value

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


@dataclass(frozen=True)
class Number(Kind):
    """A finite TOML integer or float within limits.

    With `exact=True` the value becomes a `Decimal` built from its shortest decimal text, so
    `ct_ratio = 0.1` multiplies an exact register value by exactly one tenth (the payload
    contract keeps energy registers exact); otherwise it becomes a float.
    """

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[float, ...] | None = None
    exact: bool = False
    unit: str | None = None

    def expected(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(_number_text(choice) for choice in self.choices)
        else:
            text = _range_text("a number", self.minimum, self.maximum, self.exclusive_minimum)
        return f"{text} ({self.unit})" if self.unit else text

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.reject(value, at, ctx)
        if isinstance(value, float) and not math.isfinite(value):
            return self.reject(value, at, ctx)
        if self.choices is not None and value not in self.choices:
            return self.reject(value, at, ctx)
        if self.minimum is not None and (
            value <= self.minimum if self.exclusive_minimum else value < self.minimum
        ):
            return self.reject(value, at, ctx)
        if self.maximum is not None and value > self.maximum:
            return self.reject(value, at, ctx)
        if self.exact:
            return Decimal(value) if isinstance(value, int) else Decimal(repr(value))
        return float(value)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.choices is not None:
            schema["enum"] = [to_json(choice) for choice in self.choices]
        if self.minimum is not None:
            key = "exclusiveMinimum" if self.exclusive_minimum else "minimum"
            schema[key] = to_json(self.minimum)
        if self.maximum is not None:
            schema["maximum"] = to_json(self.maximum)
        return schema


@dataclass(frozen=True)
class FilePath(Kind):
    """A filesystem path; relative paths start at the config file's directory.

    `kind="file"` must name an existing regular file (keys, certificates: better to learn
    at check-config time than at the first TLS handshake). `kind="dir"` may be missing (the
    daemon creates it) but must not be something other than a directory.
    """

    kind: Literal["file", "dir"] = "file"

    def expected(self) -> str:
        if self.kind == "file":
            return "the path of an existing file (relative to the config file's directory)"
        return "a directory path (relative to the config file's directory; created if missing)"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, str) or not value:
            return self.reject(value, at, ctx)
        path = ctx.resolve(value)
        if self.kind == "file" and not path.is_file():
            state = "is not a regular file" if path.exists() else "does not exist"
            ctx.report(at, f"expected {self.expected()}; {path} {state}")
            return INVALID
        if self.kind == "dir" and path.exists() and not path.is_dir():
            ctx.report(at, f"expected {self.expected()}; {path} exists and is not a directory")
            return INVALID
        return path

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


@dataclass(frozen=True)
class Ref(Kind):
    """The id of an entry in another array of tables (`collection`, e.g. "buses")."""

    collection: str
    key: str = "id"

    def expected(self) -> str:
        return f"the {self.key} of a [[{self.collection}]] entry"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, str) or not value:
            return self.reject(value, at, ctx)
        known = ctx.known_ids.get(self.collection, {})
        if known is None or value in known:
            return value
        if not known:
            ctx.report(at, f'refers to "{value}", but no [[{self.collection}]] are configured')
            return INVALID
        message = f'no [[{self.collection}]] entry has {self.key} "{value}"'
        close = difflib.get_close_matches(value, list(known), n=1)
        if close:
            message += f' (did you mean "{close[0]}"?)'
        elif len(known) <= 8:
            message += f"; known: {', '.join(sorted(known))}"
        ctx.report(at, message)
        return INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


# --- containers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListOf(Kind):
    """An array of scalars, converted to a tuple (or a frozenset with `as_set`)."""

    item: Kind
    min_items: int = 0
    unique: bool = False
    as_set: bool = False
    max_items: int | None = None

    def expected(self) -> str:
        text = f"an array of {_plural(self.item.expected())}"
        if self.min_items and self.max_items is not None:
            text += f" ({self.min_items} to {self.max_items})"
        elif self.min_items:
            text += f" (at least {self.min_items})"
        return text

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, list):
            return self.reject(value, at, ctx)
        if len(value) < self.min_items or (
            self.max_items is not None and len(value) > self.max_items
        ):
            ctx.report(at, f"expected {self.expected()}, got {describe(value)}")
            return INVALID
        items: list[object] = []
        ok = True
        for position, raw in enumerate(value):
            item = self.item.check(raw, at.index(position), ctx, siblings)
            if item is INVALID:
                ok = False
            elif self.unique and item in items:
                ctx.report(at.index(position), f"{describe(raw)} is listed twice")
                ok = False
            else:
                items.append(item)
        if not ok:
            return INVALID
        return frozenset(items) if self.as_set else tuple(items)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.json_schema(defs)}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        if self.unique:
            schema["uniqueItems"] = True
        return schema


def _plural(phrase: str) -> str:
    """ "an integer between 1 and 3" -> "integers between 1 and 3" for list descriptions."""
    for article in ("an ", "a "):
        if phrase.startswith(article):
            head, _, tail = phrase[len(article) :].partition(" ")
            return f"{head}s {tail}".rstrip()
    return phrase


@dataclass(frozen=True)
class OneOrMore(Kind):
    """One value or an array of them, always converted to a tuple (`alarm_delay_s = 300` for
    every round, or `[300, 60]` one per round)."""

    item: Kind

    def expected(self) -> str:
        return f"{self.item.expected()}, or an array of {_plural(self.item.expected())}"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, list):
            item = self.item.check(value, at, ctx, siblings)
            return INVALID if item is INVALID else (item,)
        if not value:
            return self.reject(value, at, ctx)
        items = [self.item.check(raw, at.index(i), ctx, siblings) for i, raw in enumerate(value)]
        return INVALID if any(item is INVALID for item in items) else tuple(items)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        one = self.item.json_schema(defs)
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}


@dataclass(frozen=True)
class MapOf(Kind):
    """A table whose keys are names the user chooses (meter classes, group ids), each holding
    a value of one kind; converted to a dict in file order.

    `name` says what the keys are, for messages and the docs (`[vee.classes.<name>]`).
    """

    item: Kind
    name: str = "name"

    def expected(self) -> str:
        return f"a table of {self.name} = {self.item.expected()}"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, dict):
            return self.reject(value, at, ctx)
        items: dict[str, object] = {}
        ok = True
        for key, raw in value.items():
            item = self.item.check(raw, at.key(key), ctx, value)
            if item is INVALID:
                ok = False
            else:
                items[key] = item
        return items if ok else INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.item.json_schema(defs)}


@dataclass(frozen=True)
class Table(Kind):
    """A TOML table read into the frozen dataclass `cls` (see `build_table`)."""

    cls: type

    def expected(self) -> str:
        return "a table"

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        return build_table(self.cls, value, at, ctx)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return defs.ref(self.cls.__name__, lambda: table_schema(self.cls, specs_of(self.cls), defs))


@dataclass(frozen=True)
class Variant:
    """One shape of a `Variants` table: the class it becomes and its own defaults."""

    cls: type
    defaults: Mapping[str, Any] = field(default_factory=dict)
    schema_name: str = ""


@dataclass(frozen=True)
class Variants(Kind):
    """A table whose shape depends on one key (a bus's `protocol` picks serial or TCP keys)."""

    discriminator: str
    options: Mapping[str, Variant]

    def expected(self) -> str:
        return f"a table with {self.discriminator} = " + " | ".join(
            f'"{name}"' for name in self.options
        )

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, dict):
            return self.reject(value, at, ctx)
        choice = Choice(tuple(self.options))
        where = at.key(self.discriminator)
        if self.discriminator not in value:
            ctx.report(where, f"required key is missing: expected {choice.expected()}")
            return INVALID
        selected = choice.check(value[self.discriminator], where, ctx, value)
        if not isinstance(selected, str):
            return INVALID
        variant = self.options[selected]
        own_keys = set(specs_of(variant.cls))

        def foreign_hint(key: str) -> str | None:
            users = [
                name
                for name, other in self.options.items()
                if key in specs_of(other.cls) and key not in own_keys
            ]
            if not users:
                return None
            return f'"{key}" is only used with {self.discriminator} = ' + " | ".join(
                f'"{name}"' for name in users
            )

        return build_table(
            variant.cls, value, at, ctx, defaults=variant.defaults, foreign_hint=foreign_hint
        )

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        def builder(name: str, variant: Variant) -> Callable[[], dict[str, Any]]:
            specs = with_overrides(specs_of(variant.cls), variant.defaults)
            return lambda: table_schema(variant.cls, specs, defs, const=(self.discriminator, name))

        return {
            "oneOf": [
                defs.ref(
                    variant.schema_name or f"{variant.cls.__name__}_{name}",
                    builder(name, variant),
                )
                for name, variant in self.options.items()
            ]
        }


@dataclass(frozen=True)
class TableList(Kind):
    """An array of tables (`[[meters]]`), converted to a tuple.

    `key` names the field that must be unique across entries (ids); `label_key` (default:
    `key`) names the field shown next to the index in error paths.
    """

    item: Table | Variants
    key: str | None = None
    label_key: str | None = None
    min_items: int = 0

    def expected(self) -> str:
        text = "an array of tables"
        if self.min_items:
            text += f" (at least {self.min_items})"
        return text

    def label(self, raw: object) -> str | None:
        label_key = self.label_key or self.key
        if label_key and isinstance(raw, dict):
            value = raw.get(label_key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                shown = f'"{value}"' if isinstance(value, str) else str(value)
                return f"{label_key} {shown}"
        return None

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if not isinstance(value, list):
            message = f"expected {self.expected()}, got {describe(value)}"
            if isinstance(value, dict):
                message += f" (write each entry under its own [[{at.leaf}]] header)"
            ctx.report(at, message)
            return INVALID
        if len(value) < self.min_items:
            ctx.report(at, f"expected {self.expected()}, got {describe(value)}")
            return INVALID
        items: list[object] = []
        first_seen: dict[object, KeyPath] = {}
        for position, raw in enumerate(value):
            where = at.index(position, self.label(raw))
            if self.key is not None and isinstance(raw, dict):
                ident = raw.get(self.key)
                if isinstance(ident, str) and ident:
                    if ident in first_seen:
                        ctx.report(
                            where.key(self.key),
                            f'duplicate {self.key} "{ident}" (already used by '
                            f"{first_seen[ident]}); each {self.key} must be unique",
                        )
                    else:
                        first_seen[ident] = where
            item = self.item.check(raw, where, ctx, siblings)
            if item is not INVALID:
                items.append(item)
        # Valid entries are kept even when siblings failed, so cross-section checks still run
        # on them; the run as a whole fails anyway because the problems were reported.
        return tuple(items)

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.json_schema(defs)}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


# --- tables ------------------------------------------------------------------------------


def check_fields(
    specs: Mapping[str, Spec],
    raw: Mapping[str, Any],
    at: KeyPath,
    ctx: Context,
    foreign_hint: Callable[[str], str | None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Check every declared key of one table; returns (typed values, all valid?).

    Unknown keys are errors, with a spelling suggestion when one is close: a misspelt
    optional key would otherwise be silently ignored and its default used instead.
    """
    ok = True
    for key in raw:
        if key in specs:
            continue
        ok = False
        hint = foreign_hint(key) if foreign_hint else None
        if hint is None:
            close = difflib.get_close_matches(key, list(specs), n=1)
            hint = (
                f'did you mean "{close[0]}"?' if close else "valid keys here: " + ", ".join(specs)
            )
        ctx.report(at.key(key), f"unknown key; {hint}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        where = at.key(name)
        if name in raw:
            value = spec.kind.check(raw[name], where, ctx, raw)
            if value is INVALID:
                ok = False
            else:
                values[name] = value
        elif spec.default is REQUIRED:
            noun = "table" if isinstance(spec.kind, Table) else "key"
            ctx.report(where, f"required {noun} is missing: expected {spec.kind.expected()}")
            ok = False
        else:
            # A fresh copy, so configs loaded from two files never share a mutable default.
            values[name] = dict(spec.default) if isinstance(spec.default, dict) else spec.default
    return values, ok


def build_table(
    cls: type,
    raw: object,
    at: KeyPath,
    ctx: Context,
    *,
    defaults: Mapping[str, Any] | None = None,
    foreign_hint: Callable[[str], str | None] | None = None,
) -> object:
    """Read one TOML table into an instance of the frozen dataclass `cls`.

    After the keys check out one by one, the instance's own `table_problems()` (rules that
    relate keys of the same table, e.g. reconnect_min_s <= reconnect_max_s) run, each
    problem reported at the key it names.
    """
    if not isinstance(raw, dict):
        ctx.report(at, f"expected a table, got {describe(raw)}")
        return INVALID
    specs = with_overrides(specs_of(cls), defaults or {})
    values, ok = check_fields(specs, raw, at, ctx, foreign_hint)
    if not ok:
        return INVALID
    names = field_names(cls)
    obj = cls(**{names.get(key, key): value for key, value in values.items()})
    rules = getattr(obj, "table_problems", None)
    if rules is not None:
        for key, message in rules():
            ctx.report(_below(at, key), message)
    ctx.remember(obj, at)
    return obj


def _below(at: KeyPath, key: str | tuple[str | int, ...]) -> KeyPath:
    """The path of a key a table rule names: one key, or a path of keys and indices
    (`("rules", 0, "class")`) for rules that relate nested entries."""
    if isinstance(key, str):
        return at.key(key)
    for part in key:
        at = at.index(part) if isinstance(part, int) else at.key(part)
    return at


def table_schema(
    cls: type,
    specs: Mapping[str, Spec],
    defs: SchemaDefs,
    const: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON Schema object for a table class, from the same specs `build_table` uses."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in specs.items():
        if const is not None and name == const[0]:
            prop: dict[str, Any] = {"const": const[1]}
        else:
            prop = dict(spec.kind.json_schema(defs))
        prop["description"] = spec.doc
        if spec.default is REQUIRED:
            required.append(name)
        elif spec.default is not None:
            prop["default"] = to_json(spec.default)
        properties[name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "title": cls.__name__,
        "description": table_doc(cls),
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema
