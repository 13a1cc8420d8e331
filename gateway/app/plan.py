"""One validated plan: the configuration and everything derived from it that can be wrong.

Start, SIGHUP reload and ``edge-gateway check-config`` all build the plan here, so what
check-config accepts is exactly what the daemon runs, and a reload is refused (the old
configuration keeps running) for the same reasons a start would exit 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_rules.vee_rules import VeeConfig
from gateway.acquisition.alias_tables import alias_tables
from gateway.acquisition.factory import load_profiles
from gateway.config import GatewayConfig, load_config
from gateway.pipeline.vee_stage import vee_settings
from protocols.payload import AliasTable


@dataclass(frozen=True)
class Plan:
    """A configuration that passed every check, with its derived settings."""

    config: GatewayConfig
    vee: VeeConfig
    #: Payload-v2 alias table of each meter (by id), from its profile.
    aliases: Mapping[str, AliasTable] = field(default_factory=dict)


def build_plan(path: Path) -> Plan:
    """Load and check ``path``; raises :class:`~gateway.config.ConfigError` with every problem."""
    config = load_config(path)
    profiles = load_profiles(config)
    return Plan(config, vee_settings(config), alias_tables(profiles))
