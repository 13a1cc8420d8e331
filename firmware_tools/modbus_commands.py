"""``gwtool modbus read`` and ``gwtool modbus scan``: one Modbus unit's registers, and which unit
ids answer on a line or behind a TCP gateway.

``read`` with ``--profile`` asks for the same merged blocks the daemon polls
(:func:`protocols.modbus.register_map.plan_reads`) and decodes them with the same register map,
so what it prints is what the daemon would publish; without a profile it prints raw registers.
``scan`` sends one short read to each unit id: any reply, even a Modbus exception such as 02
"illegal data address", proves a unit is there — except 0A/0B, which a TCP-to-RS-485 gateway
sends for a unit that did not answer it (the daemon's bus reads them the same way).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from protocols.modbus import ModbusProfile, Reading, RegisterFunction, decode_block, plan_reads
from protocols.profiles import ProfileError, load_named_profile, load_profile

from .errors import ToolError
from .meter_link import SerialSettings
from .modbus_link import (
    ABSENT_EXCEPTIONS,
    ExceptionReply,
    ModbusToolError,
    NoReply,
    Target,
    connect,
    parse_host,
    read_registers,
)

MAX_UNITS = 10_000


def _target(args: argparse.Namespace) -> Target:
    timeout_s = args.timeout_ms / 1000
    if timeout_s <= 0:
        raise ToolError(f"--timeout-ms must be positive, got {args.timeout_ms}")
    if args.tcp:
        host, port = parse_host(args.tcp)
        return Target(host=host, tcp_port=port, timeout_s=timeout_s)
    serial = SerialSettings(port=args.serial, baudrate=args.baud, parity=args.parity,
                            timeout_s=timeout_s)
    return Target(serial=serial, timeout_s=timeout_s)


def _profile(text: str) -> ModbusProfile:
    """A profile by name (the shipped ones) or by path to a ``.toml`` file."""
    try:
        loaded = load_profile(text) if ("/" in text or text.endswith(".toml")) \
            else load_named_profile(text)
    except ProfileError as exc:
        raise ToolError(str(exc).splitlines()[0] if str(exc) else "bad profile") from None
    if not isinstance(loaded, ModbusProfile):
        raise ToolError(f"profile {loaded.name} is a {loaded.kind} profile, not a Modbus register map")
    return loaded


def _unit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 247:
        raise argparse.ArgumentTypeError(f"a unit id is 1..247, got {value!r}")
    return int(value)


def _register_address(value: str) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a register address is 0..65535 (0x.. for hex), "
                                         f"got {value!r}") from None
    if not 0 <= number <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"a register address is 0..65535, got {value!r}")
    return number


def parse_units(text: str) -> list[int]:
    """``1-247``, ``1,5,9-12``: unit ids in the order given, each checked to be 1..247."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo_text, _, hi_text = part.replace("..", "-").partition("-")
        if not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
            raise ToolError(f"--units {text!r}: {part!r} is not a unit id or a range like 1-247")
        lo, hi = int(lo_text), int(hi_text or lo_text)
        if not 1 <= lo <= hi <= 247:
            raise ToolError(f"--units {text!r}: {part!r} must lie within 1..247, low to high")
        units.extend(range(lo, hi + 1))
    if not units:
        raise ToolError("--units: no unit ids given")
    return units


def _value_text(reading: Reading) -> str:
    if reading.problem is not None:
        return f"(no value: {reading.problem.value})"
    return str(reading.value)


def _read_profile(args: argparse.Namespace, target: Target, profile: ModbusProfile) -> int:
    readings: dict[str, Reading] = {}
    failure: ModbusToolError | None = None
    with connect(target) as client:
        for block in plan_reads(profile):
            try:
                registers = read_registers(client, target, args.unit, block.function.value,
                                           block.start, block.count)
            except ModbusToolError as exc:
                failure = exc
                break
            readings.update(decode_block(block, registers))
    if args.json:
        print(json.dumps({"unit": args.unit, "profile": profile.name, "readings": [
            {"quantity": r.quantity, "value": None if r.value is None else str(r.value),
             "unit": r.unit, "problem": None if r.problem is None else r.problem.value}
            for r in readings.values()]}, indent=2))
    else:
        for r in readings.values():
            unit = f" {r.unit}" if r.unit and r.problem is None else ""
            print(f"{r.quantity} = {_value_text(r)}{unit}")
    if failure is not None:
        raise failure
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    target = _target(args)
    if args.profile:
        if args.holding is not None or args.input is not None:
            raise ToolError("give either --profile or --holding/--input ADDRESS, not both")
        return _read_profile(args, target, _profile(args.profile))
    if args.holding is None and args.input is None:
        raise ToolError("say what to read: --profile NAME, or --holding/--input ADDRESS [--count N]")
    if not 1 <= args.count <= 125:
        raise ToolError(f"--count must be 1..125 registers (the Modbus limit), got {args.count}")
    function = RegisterFunction.HOLDING if args.holding is not None else RegisterFunction.INPUT
    address = args.holding if args.holding is not None else args.input
    if address + args.count > 0x10000:
        raise ToolError(f"registers {address}+{args.count} run past 65535")
    with connect(target) as client:
        registers = read_registers(client, target, args.unit, function.value, address, args.count)
    if args.json:
        print(json.dumps({"unit": args.unit, "function": function.value, "address": address,
                          "registers": registers}, indent=2))
    else:
        for offset, word in enumerate(registers):
            print(f"{function.value} {address + offset} (0x{address + offset:04X}) = "
                  f"{word} (0x{word:04X})")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    target = _target(args)
    units = parse_units(args.units)
    function, address = RegisterFunction.HOLDING, 0
    if args.profile:
        first = plan_reads(_profile(args.profile))[0]
        function, address = first.function, first.start
    elif args.input is not None:
        function, address = RegisterFunction.INPUT, args.input
    elif args.holding is not None:
        address = args.holding
    found: list[dict[str, Any]] = []
    with connect(target) as client:
        for unit in units:
            try:
                read_registers(client, target, unit, function.value, address, 1)
                found.append({"unit": unit, "answer": "registers"})
            except ExceptionReply as exc:
                if exc.code not in ABSENT_EXCEPTIONS:
                    found.append({"unit": unit, "answer": f"exception {exc.code:02X}"})
            except NoReply:
                continue
            if not args.json and found and found[-1]["unit"] == unit:
                print(f"unit {unit}: answered ({found[-1]['answer']})", flush=True)
    if not found:
        raise ToolError(f"no unit answered {function.value} {address} among {len(units)} unit ids "
                        f"on {target.describe} — check wiring, baud/parity and --units")
    if args.json:
        print(json.dumps(found, indent=2))
    return 0


def _add_link_args(p: argparse.ArgumentParser, timeout_ms: int) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST[:PORT]", help="Modbus TCP meter or gateway (port 502)")
    where.add_argument("--serial", metavar="PORT",
                       help="Modbus RTU on a serial device (/dev/ttyUSB0) or pyserial URL")
    p.add_argument("--baud", type=int, default=9600, help="RTU baud rate (default 9600)")
    p.add_argument("--parity", default="N", choices=["E", "N", "O"], help="RTU parity (default N)")
    p.add_argument("--timeout-ms", type=int, default=timeout_ms, help="reply timeout per request")
    p.add_argument("--profile", help="meter profile: a shipped name (sdm630) or a .toml path")
    p.add_argument("--holding", type=_register_address, metavar="ADDRESS",
                   help="holding register (FC 03) address, 0-based")
    p.add_argument("--input", type=_register_address, metavar="ADDRESS",
                   help="input register (FC 04) address, 0-based")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any) -> None:
    modbus = sub.add_parser("modbus", help="Modbus TCP/RTU field tools: read a unit, scan unit ids")
    msub = modbus.add_subparsers(dest="modbus_command", required=True)
    p = msub.add_parser("read", help="read one unit's registers, decoded through a profile or raw")
    _add_link_args(p, 1000)
    p.add_argument("--unit", type=_unit, required=True, help="unit (slave) id 1..247")
    p.add_argument("--count", type=int, default=1, help="registers to read with --holding/--input")
    p.set_defaults(func=cmd_read)
    p = msub.add_parser("scan", help="find the unit ids that answer (any reply counts)")
    _add_link_args(p, 200)
    p.add_argument("--units", default="1-247", help="unit ids to try: list and/or ranges (1-247)")
    p.set_defaults(func=cmd_scan)
