"""The config file's JSON Schema (draft 2020-12), generated from the model's declarations.

Editors (VS Code with Even Better TOML / Taplo) use it for completion and inline errors,
and central systems can check configs before pushing them. It states structure, types,
ranges, defaults and descriptions; cross-references (a meter's bus must exist) and files
that must exist are beyond JSON Schema and only `load_config` checks them.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.config.fields import specs_of
from gateway.config.kinds import SchemaDefs, table_schema
from gateway.config.model import GatewayConfig

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID: Final = "urn:edge-gateway:config:v1"


def config_json_schema() -> dict[str, Any]:
    """A fresh JSON Schema document for gateway config files (safe to modify)."""
    defs = SchemaDefs()
    body = table_schema(GatewayConfig, specs_of(GatewayConfig), defs)
    body["title"] = "Edge gateway configuration"
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": SCHEMA_ID, **body, "$defs": defs.defs}
