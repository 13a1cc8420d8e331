"""``gwtool``: what a field engineer runs on a laptop or on the gateway itself.

Subcommands follow DESIGN §2 (contract). Every failure prints one line saying what to fix and exits 1
(2 for usage errors, as argparse does).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from protocols import dlt645 as d
from protocols.ed25519 import BackendError

from .errors import ToolError

#: Modules that add subcommands: each has ``register(subparsers)``. Listed, not discovered, so the
#: command set is explicit.
SUBCOMMAND_MODULES = (
    "firmware_tools.dlt645_commands",
    "firmware_tools.vee_command",
    "firmware_tools.reconcile_command",
    "firmware_tools.command_tools",
    "firmware_tools.time_sync_command",
    "firmware_tools.identity_commands",
    "firmware_tools.bundle_command",
    "firmware_tools.modbus_commands",
    "firmware_tools.watch_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gwtool", description="Field tools for the edge gateway: meters, configs, data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module: report it
                raise
            continue  # not built yet in this checkout
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (ToolError, BackendError) as exc:  # BackendError: no libcrypto to sign with
        print(f"gwtool: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


__all__ = ["d", "main", "print_json"]

if __name__ == "__main__":
    sys.exit(main())
