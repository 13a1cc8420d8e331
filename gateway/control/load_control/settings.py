"""Engine parameters (with their defaults) and the topology the engine acts on.

The engine never reads the configuration file: the daemon builds a :class:`Topology` from the
``[[meters]]`` and ``[[groups]]`` tables (:meth:`Topology.from_config`). :class:`EngineSettings`
is the ``[load_control]`` table itself, declared and checked in :mod:`gateway.config.load_control`
like every other config table; it is re-exported here because the engine and its callers name
it beside the topology.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from gateway.config.load_control import (
    MAX_ROUNDS,
    EngineSettings,
    GroupSettings,
    PrepaidSettings,
    RestoreAction,
)
from gateway.control.errors import ControlError

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

__all__ = [
    "MAX_ROUNDS",
    "EngineSettings",
    "GroupSettings",
    "GroupSpec",
    "MeterSpec",
    "PrepaidSettings",
    "RestoreAction",
    "SettingsError",
    "Topology",
]

class SettingsError(ControlError, ValueError):
    """Settings that contradict the topology (a protected meter in a round); ``problems`` lists
    ``(key path, what is expected)``."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{path}: {text}" for path, text in self.problems))


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """What the engine needs to know of one meter: ``id``, ``protected`` (never tripped, whatever
    the input), ``contract_kw`` (informational, carried into alarms), ``meter_class``."""

    id: str
    protected: bool = False
    contract_kw: float | None = None
    meter_class: str = "residential"


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A summation group as load control sees it: ``members`` in file order and ``sheddable``,
    the members whose relay shedding *reduces* the group total — added (``+``) import members.
    Tripping a subtracted member or an export register would raise the total, so those never
    go into rounds."""

    id: str
    members: tuple[str, ...]
    sheddable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    """Meters and groups by id."""

    meters: Mapping[str, MeterSpec]
    groups: Mapping[str, GroupSpec]

    @classmethod
    def build(cls, meters: Sequence[MeterSpec], groups: Sequence[GroupSpec]) -> Topology:
        meter_map = {m.id: m for m in meters}
        for group in groups:
            unknown = [m for m in group.members if m not in meter_map]
            if unknown:
                raise ValueError(f"group {group.id}: unknown member meter(s) {unknown}")
        return cls(MappingProxyType(meter_map), MappingProxyType({g.id: g for g in groups}))

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Topology:
        """Meters and groups of a loaded gateway configuration."""
        meters = [
            MeterSpec(m.id, m.protected, m.contract_kw, m.meter_class) for m in config.meters
        ]
        groups = [
            GroupSpec(
                g.id,
                tuple(member.meter for member in g.members),
                tuple(
                    member.meter
                    for member in g.members
                    if member.sign == "+" and member.direction == "import"
                ),
            )
            for g in config.groups
        ]
        return cls.build(meters, groups)

    def is_protected(self, meter: str) -> bool:
        spec = self.meters.get(meter)
        return spec is not None and spec.protected
