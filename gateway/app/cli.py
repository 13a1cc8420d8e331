"""``edge-gateway``: the daemon and its companion commands (DESIGN §2, contract).

Exit codes: 0 clean stop, 2 bad configuration (every error printed with its location), 1 other failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.app import event_loop
from gateway.config import ConfigError, config_json_schema, format_errors

EXIT_BAD_CONFIG = 2


def _check_config(args: argparse.Namespace) -> int:
    from gateway.app.plan import build_plan

    try:
        config = build_plan(Path(args.file)).config
    except ConfigError as err:
        print(format_errors(err), file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(f"{args.file}: OK — gateway {config.gateway.id}, {len(config.buses)} buses, "
          f"{len(config.meters)} meters, {len(config.groups)} groups, {len(config.areas)} areas")
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def _read_payload_file(name: str, hex_text: bool) -> bytes | None:
    """The bytes of a payload file (``-``: standard input), or None after printing why not."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        print(f"edge-gateway: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return None
    if hex_text:
        try:
            return bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            print(f"edge-gateway: --hex input {name} is not hex text", file=sys.stderr)
            return None
    return data


def _decode_payload(args: argparse.Namespace) -> int:
    from protocols.payload import AliasBook, PayloadError, decode_message, payload_to_json

    data = _read_payload_file(args.file, args.hex)
    if data is None:
        return 1
    aliases = None
    if args.birth:
        # Schema 2 reads name their meter and quantities by aliases that the birth declares.
        birth = _read_payload_file(args.birth, args.hex)
        if birth is None:
            return 1
        aliases = AliasBook()
        try:
            declared = aliases.learn(decode_message(birth))
        except PayloadError as exc:
            print(f"edge-gateway: --birth {args.birth} is not a gateway payload: {exc}",
                  file=sys.stderr)
            return 1
        if not declared:
            print(f"edge-gateway: --birth {args.birth} declares no aliases (a v1 gateway's "
                  "birth, or not a birth); v2 reads are shown unresolved", file=sys.stderr)
    try:
        print(payload_to_json(data, aliases))
    except PayloadError as exc:
        print(f"edge-gateway: not a gateway payload: {exc}", file=sys.stderr)
        return 1
    return 0


def _ip_allow(args: argparse.Namespace) -> int:
    from gateway.app.unit_network import PeerUnresolvable, peers, render_drop_in
    from gateway.config import load_config

    config_path = Path(args.config)
    try:
        config = load_config(config_path)
        found = peers(config)
    except ConfigError as err:
        print(format_errors(err), file=sys.stderr)
        return EXIT_BAD_CONFIG
    except PeerUnresolvable as exc:
        print(f"edge-gateway: {exc}; the allow list needs every peer's address", file=sys.stderr)
        return 1
    print(render_drop_in(config_path, found), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    from gateway.app.daemon import GatewayDaemon

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config_path = Path(args.config)
    try:
        loop = event_loop.resolve(event_loop.configured_choice(config_path))
    except event_loop.EventLoopUnavailable as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return event_loop.run(GatewayDaemon(config_path).run, loop)


#: The demo drives the simulators in ``hil_tests``; the daemon package must not depend on them
#: (a production image may ship without the rig), so the demo is looked up by name when asked for.
DEMO_MODULE = "hil_tests.demo.run"


def _demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        print(f"edge-gateway: the demo is not installed here ({exc.name} is missing); "
              "install the rig with it (pip install 'edge-gateway[rig]', docs/install.md) to "
              "run it",
              file=sys.stderr)
        return 1
    code: int = demo.run_demo(duration_s=args.duration, data_dir=args.data_dir)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway",
                                     description="Edge gateway for electricity meter concentrators.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", required=True, help="gateway configuration file (TOML)")
    p.set_defaults(func=_run)
    p = sub.add_parser("check-config", help="validate a configuration file and its meter profiles")
    p.add_argument("file")
    p.set_defaults(func=_check_config)
    p = sub.add_parser("config-schema", help="print the configuration's JSON Schema (for editors)")
    p.set_defaults(func=_config_schema)
    p = sub.add_parser("decode-payload", help="print a CBOR payload as JSON")
    p.add_argument("file", help="payload file, or - for standard input")
    p.add_argument("--hex", action="store_true", help="input is hex text rather than raw bytes")
    p.add_argument("--birth", metavar="FILE",
                   help="the gateway's birth (retained on P/G/state): schema-2 reads are shown "
                        "with meter, quantity names, units and values resolved through its "
                        "aliases; without it, as sent (alias numbers and mantissas)")
    p.set_defaults(func=_decode_payload)
    p = sub.add_parser("ip-allow", help="print the systemd drop-in allowing the configured "
                       "broker and Modbus TCP peers (the unit denies other addresses)")
    p.add_argument("--config", required=True, help="gateway configuration file (TOML)")
    p.set_defaults(func=_ip_allow)
    p = sub.add_parser("demo", help="simulated meters, a broker, the daemon and a live view")
    p.add_argument("--duration", type=float, default=None,
                   help="stop this many seconds after the gateway came online (default: until "
                        "Ctrl-C)")
    p.add_argument("--data-dir", default=None, help="where the demo keeps its files (default: temp)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
