"""Gateway configuration: a TOML file read into frozen dataclasses, every mistake reported.

    from gateway.config import load_config, ConfigError, format_errors
    try:
        config = load_config(Path("/etc/edge-gateway/gateway.toml"))
    except ConfigError as err:
        print(format_errors(err), file=sys.stderr)   # exit 2

The declarations in `model.py` (and the section modules it includes) drive the validator, `config_json_schema()` and the key
reference in docs/configuration.md alike.
"""

from gateway.config.issues import ConfigError, ConfigIssue, format_errors
from gateway.config.loader import config_sha256, load_config
from gateway.config.model import (
    AreaConfig,
    BusConfig,
    CommandsSection,
    GatewayConfig,
    GatewaySection,
    GroupConfig,
    GroupMember,
    MeterConfig,
    OperatorConfig,
    SerialBusConfig,
    StoreSection,
    TcpBusConfig,
    TheftSection,
)
from gateway.config.mqtt import MqttSection, TlsSettings
from gateway.config.profiles import ProfileRef
from gateway.config.reconcile import ReconcileSection
from gateway.config.schema import config_json_schema

__all__ = [
    "AreaConfig",
    "BusConfig",
    "CommandsSection",
    "ConfigError",
    "ConfigIssue",
    "GatewayConfig",
    "GatewaySection",
    "GroupConfig",
    "GroupMember",
    "MeterConfig",
    "MqttSection",
    "OperatorConfig",
    "ProfileRef",
    "ReconcileSection",
    "SerialBusConfig",
    "StoreSection",
    "TcpBusConfig",
    "TheftSection",
    "TlsSettings",
    "config_json_schema",
    "config_sha256",
    "format_errors",
    "load_config",
]
