"""Declaring a config key once: type, default, limits and description in the field's metadata.

Each key of the TOML file is a field of a frozen dataclass in `model.py`, declared with
`setting(kind, doc=..., default=...)`. The validator (`kinds.build_table`), the JSON Schema
(`schema.py`) and the reference tables in docs/configuration.md (`reference.py`) all read
these declarations, so a key cannot be accepted by one and unknown to another.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from gateway.config.kinds import Kind

SPEC_KEY: Final = "gateway.config.spec"

#: What a table's `table_problems()` yields: (the key it names, or a path of keys and
#: indices below the table such as ("rules", 0, "class"); the message).
Problems = Iterator[tuple[str | tuple[str | int, ...], str]]


class _Required:
    """Marker default: the key must be present in the file."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


@dataclass(frozen=True, slots=True)
class Spec:
    """What one config key accepts.

    `kind` checks and converts the TOML value; `default` is the already-converted value used
    when the key is absent (`REQUIRED` when it must be present, None for optional keys with
    no value); `doc` is the description shown in the schema and the docs.
    """

    kind: Kind
    doc: str
    default: Any = REQUIRED
    key: str | None = None  # the TOML key, when it cannot be the field's name ("class")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def setting(kind: Kind, *, doc: str, default: Any = REQUIRED, key: str | None = None) -> Any:
    """A dataclass field for one config key; the dataclass default mirrors `default` so code
    (and tests) can build config objects directly with the same defaults the loader uses.

    `key` names the TOML key when it differs from the field (a key that is a Python keyword).
    """
    spec = Spec(kind=kind, doc=doc, default=default, key=key)
    metadata = {SPEC_KEY: spec}
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, dict | list | set):
        frozen_copy = default
        return dataclasses.field(
            default_factory=lambda: type(frozen_copy)(frozen_copy), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


def specs_of(cls: type) -> dict[str, Spec]:
    """The declared keys of a config table class by TOML key, in declaration order.

    Fields without a spec (e.g. `GatewayConfig.sha256`) are derived by the loader, not read
    from the file, and are left out.
    """
    result: dict[str, Spec] = {}
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(SPEC_KEY)
        if isinstance(spec, Spec):
            result[spec.key or field.name] = spec
    return result


def field_names(cls: type) -> dict[str, str]:
    """TOML key -> dataclass field name, for the keys whose names differ."""
    names: dict[str, str] = {}
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(SPEC_KEY)
        if isinstance(spec, Spec) and spec.key is not None:
            names[spec.key] = field.name
    return names


def table_doc(cls: type) -> str:
    """The first paragraph of a table class's docstring, as one line."""
    doc = inspect.getdoc(cls) or ""
    first = doc.split("\n\n", 1)[0]
    return " ".join(first.split())


def with_overrides(specs: Mapping[str, Spec], defaults: Mapping[str, Any]) -> dict[str, Spec]:
    """`specs` with some defaults replaced (a bus protocol choosing its own parity default)."""
    return {
        name: dataclasses.replace(spec, default=defaults[name]) if name in defaults else spec
        for name, spec in specs.items()
    }
