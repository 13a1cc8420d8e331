"""``gwtool dlt645 decode|read-request``, ``gwtool read`` and ``gwtool discover``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from protocols import dlt645 as d

from .errors import ToolError
from .meter_link import LinkError, SerialSettings, open_port, run_transaction

DEFAULT_DISCOVERY_BAUDS = "2400,1200,9600,4800"


def _parse_hex(text: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ToolError(f"not a hex string: {text!r} (expected pairs of hex digits, spaces optional)") from None


def _parse_di(text: str, version: d.Version) -> int:
    digits = 8 if version == d.Version.V2007 else 4
    cleaned = text.strip().upper().removeprefix("0X")
    if len(cleaned) != digits or any(c not in "0123456789ABCDEF" for c in cleaned):
        raise ToolError(f"DI must be {digits} hex digits for DL/T 645-{int(version)}, got {text!r}")
    return int(cleaned, 16)


def _version(text: str) -> d.Version:
    return d.Version(int(text))


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        message = d.decode(_parse_hex(" ".join(args.hex)))
    except d.ProtocolError as exc:
        raise ToolError(str(exc)) from None
    print(json.dumps(d.describe(message), ensure_ascii=False, indent=2))
    return 0


def cmd_read_request(args: argparse.Namespace) -> int:
    version = _version(args.version)
    try:
        frame = d.encode(d.ReadRequest(args.address, _parse_di(args.di, version), version),
                         preamble=args.preamble)
    except d.LocalProtocolError as exc:
        raise ToolError(str(exc)) from None
    print(frame.hex(" ").upper())
    return 0


def _settings(args: argparse.Namespace, baudrate: int | None = None) -> SerialSettings:
    return SerialSettings(port=args.port, baudrate=baudrate or args.baud, parity=args.parity,
                          timeout_s=args.timeout_ms / 1000, preamble=args.preamble,
                          retries=args.retries)


def cmd_read(args: argparse.Namespace) -> int:
    version = _version(args.version)
    di = _parse_di(args.di, version)
    settings = _settings(args)
    try:
        request = d.ReadRequest(args.address, di, version)
        d.encode(request)
    except d.LocalProtocolError as exc:
        raise ToolError(str(exc)) from None
    try:
        port = open_port(settings)
    except LinkError as exc:
        raise ToolError(str(exc)) from None
    with port:
        try:
            transaction = run_transaction(port, request, settings)
        except (d.ExceptionReply, d.RemoteProtocolError) as exc:
            raise ToolError(str(exc)) from None
    readings = [{"name": r.name, "value": d.value_text(r.value), "unit": r.unit}
                for r in transaction.readings]
    if args.json:
        print(json.dumps({"address": args.address, "di": f"{di:0{8 if version == d.Version.V2007 else 4}X}",
                          "readings": readings}, ensure_ascii=False, indent=2))
    else:
        for r in readings:
            unit = f" {r['unit']}" if r["unit"] else ""
            print(f"{r['name']} = {r['value']}{unit}")
    return 0


def _address_candidates(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    if args.addresses:
        for part in args.addresses.split(","):
            part = part.strip()
            if "-" in part or ".." in part:
                lo, hi = part.replace("..", "-").split("-", 1)
                if not (lo.isdigit() and hi.isdigit()):
                    raise ToolError(f"address range {part!r} must be digits like 000000000001-000000000032")
                out.extend(f"{n:012d}" for n in range(int(lo), int(hi) + 1))
            elif part:
                out.append(part)
    for a in out:
        if len(a) != 12 or not a.isdigit():
            raise ToolError(f"address {a!r} must be 12 digits")
    if len(out) > 10_000:
        raise ToolError(f"{len(out)} addresses to try; narrow the range (at most 10000)")
    return out


def cmd_discover(args: argparse.Namespace) -> int:
    """Find meters: AA wildcard read-address (a single meter), then the given address list."""
    try:
        bauds = [int(b) for b in args.bauds.split(",") if b.strip()]
    except ValueError:
        raise ToolError(f"--bauds must be comma-separated integers, got {args.bauds!r}") from None
    candidates = _address_candidates(args)
    found: list[dict[str, Any]] = []
    for baud in bauds:
        settings = _settings(args, baud)
        try:
            port = open_port(settings)
        except LinkError as exc:
            raise ToolError(str(exc)) from None
        with port:
            try:
                t = run_transaction(port, d.ReadAddressRequest(), settings)
                reply = t.replies[-1]
                found.append({"address": reply.address, "baud": baud, "method": "wildcard"})
            except d.ProtocolError:
                pass  # none, or several meters answering at once (collisions): fall back to the list
            known = {f["address"] for f in found}
            for address in candidates:
                if address in known:
                    continue
                try:
                    run_transaction(port, d.ReadRequest(address, 0x04000401), settings)
                except d.ExceptionReply:
                    pass  # it answered (refusing the DI): it is there
                except d.RemoteProtocolError:
                    continue
                found.append({"address": address, "baud": baud, "method": "probe"})
                known.add(address)
        if found and not args.all_bauds:
            break
        time.sleep(0.05)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        if not found:
            print("no meter answered", file=sys.stderr)
        for f in found:
            print(f"{f['address']}  {f['baud']} baud  ({f['method']})")
    return 0 if found else 1


def _add_serial_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial device (e.g. /dev/ttyUSB0) or pyserial URL")
    p.add_argument("--parity", default="E", choices=["E", "N", "O"])
    p.add_argument("--timeout-ms", type=int, default=1000, help="reply timeout after the request")
    p.add_argument("--preamble", type=int, default=4, help="FE wake-up bytes before each request")
    p.add_argument("--retries", type=int, default=0, choices=range(0, 10), metavar="N",
                   help="ask again N times after a timeout or garbled reply (as the daemon's retries)")
    p.add_argument("--version", default="2007", choices=["2007", "1997"])
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any) -> None:
    dlt = sub.add_parser("dlt645", help="DL/T 645 frame tools (offline)")
    dsub = dlt.add_subparsers(dest="dlt645_command", required=True)
    p = dsub.add_parser("decode", help="decode one frame given as hex and print JSON")
    p.add_argument("hex", nargs="+", help="frame bytes as hex; spaces optional; FE preamble allowed")
    p.set_defaults(func=cmd_decode)
    p = dsub.add_parser("read-request", help="print a read-data request frame as hex")
    p.add_argument("--address", required=True, help="12-digit meter address as on the nameplate")
    p.add_argument("--di", required=True, help="data identifier, e.g. 00010000 (2007) or 9010 (1997)")
    p.add_argument("--preamble", type=int, default=0, help="number of FE bytes to prepend")
    p.add_argument("--version", default="2007", choices=["2007", "1997"])
    p.set_defaults(func=cmd_read_request)

    p = sub.add_parser("read", help="read one data item from a meter on a serial line")
    _add_serial_args(p)
    p.add_argument("--address", required=True)
    p.add_argument("--di", required=True)
    p.add_argument("--baud", type=int, default=2400)
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("discover", help="find meter addresses on a line")
    _add_serial_args(p)
    p.add_argument("--bauds", default=DEFAULT_DISCOVERY_BAUDS, help="baud rates to try, in order")
    p.add_argument("--addresses", default="",
                   help="addresses to probe when several meters share the line: list and/or ranges, "
                        "e.g. 000000000001-000000000016,123456789012")
    p.add_argument("--all-bauds", action="store_true", help="keep trying the other baud rates")
    p.set_defaults(func=cmd_discover)
