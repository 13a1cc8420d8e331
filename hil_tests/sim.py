"""Run simulated meters: DL/T 645 meters on a pseudo-terminal, optionally Modbus TCP meters too.

Command line (``python -m hil_tests.sim --help``)::

    python -m hil_tests.sim --dlt645-meters 8 --baud 2400 --response-delay-ms 20 \\
        --first-address 000000000001 --seed 7 --accel 60

prints one machine-parsable line per simulated bus on stdout, then runs until SIGINT/SIGTERM::

    dlt645 /dev/pts/7 addresses 000000000001..000000000008
    modbus-tcp 127.0.0.1:5020 units 1..4

Point the gateway's ``[[buses]] port`` at the pty path (pyserial, 2400 8E1). Every meter answers only
its own address; the line paces bytes like a real 8E1 line (see :mod:`hil_tests.serial_line`).

Python API for tests: :func:`run_dlt645_line` is a context manager yielding a :class:`Dlt645Rig`
(``.device``, ``.meters`` by address, ``.stats``, ``.set_faults()``, ``.close()``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hil_tests.dlt645_sim import Dlt645Meter, MeterSpec, build_meter
from hil_tests.load_model import DEFAULT_START_EPOCH, LoadModel
from hil_tests.serial_line import (
    DLT645_BAUDRATES,
    MAX_RESPONSE_DELAY_MS,
    MIN_RESPONSE_DELAY_MS,
    Dlt645Line,
    Faults,
    LineStats,
    MeterStats,
)

_LAST_ADDRESS = 999_999_999_998  # 999999999999 is the broadcast address


def consecutive_addresses(first: str, count: int) -> list[str]:
    """``count`` addresses counting up from ``first`` (12 decimal digits)."""
    if len(first) != 12 or not first.isdigit():
        raise ValueError(f"a DL/T 645 address is 12 decimal digits, got {first!r}")
    start = int(first)
    if start + count - 1 > _LAST_ADDRESS:
        raise ValueError(
            f"{count} addresses from {first} run past 999999999998 (999999999999 is broadcast)"
        )
    return [f"{start + i:012d}" for i in range(count)]


@dataclass
class Dlt645Rig:
    """A running DL/T 645 line: the pty ``device`` clients open, its ``meters`` by address, the
    shared load ``model`` and the ``line`` (timing, faults, statistics)."""

    line: Dlt645Line
    model: LoadModel
    meters: dict[str, Dlt645Meter] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.line.device

    @property
    def stats(self) -> dict[str, MeterStats]:
        """Per-meter counters (requests seen, replies sent …), by address."""
        return self.line.stats

    @property
    def line_stats(self) -> LineStats:
        return self.line.line_stats

    def set_faults(self, address: str, faults: Faults | None = None, **knobs: Any) -> None:
        """Change one meter's faults while the line runs; no arguments = healthy again."""
        self.line.set_faults(address, faults, **knobs)

    def set_cut(self, cut: bool = True) -> None:
        """Cut (or mend) the line's pair: every meter of it goes silent at once."""
        self.line.set_cut(cut)

    def cut_power(self, *addresses: str) -> None:
        """Cut the supply of these meters (none named: every meter of the line, as when the
        transformer area goes dark). A cut meter answers nothing at all and starts a
        power-down record (03110000 count, 0311000n start/end), as DL/T 645-2007 meters do."""
        for address in addresses or tuple(self.meters):
            self.meters[address].power_off()

    def restore_power(self, *addresses: str) -> None:
        """Restore the supply cut by :meth:`cut_power`: the power-down record gets its end."""
        for address in addresses or tuple(self.meters):
            self.meters[address].power_on()

    def cut_phase(self, phase: str, on_phase: Sequence[str] = (),
                  three_phase: Sequence[str] = (), cut: bool = True) -> None:
        """Lose (``cut=False``: restore) one phase of the supply: the meters ``on_phase``
        (single-phase, fed from it) lose their supply as in :meth:`cut_power`, power-down
        record included; the ``three_phase`` meters keep answering from their other phases and
        report that phase broken (断相, status word 4/5/6 bit 7), as real meters do."""
        for address in on_phase:
            (self.meters[address].power_off if cut else self.meters[address].power_on)()
        for address in three_phase:
            self.meters[address].set_phase_break(phase, cut)

    def mute(self, *addresses: str, muted: bool = True) -> None:
        """Make these meters stop answering while they keep their supply (a loose A/B wire at
        the meter, a broken transceiver): no power-down record, unlike :meth:`cut_power`.
        ``muted=False`` lets them answer again."""
        for address in addresses:
            self.line.set_faults(address, no_reply=True) if muted \
                else self.line.set_faults(address)

    def close(self) -> None:
        self.line.close()


@contextlib.contextmanager
def run_dlt645_line(
    meters: Sequence[MeterSpec | str | Dlt645Meter],
    *,
    baudrate: int = 2400,
    response_delay_ms: float = 20,
    seed: int = 0,
    accel: float = 1.0,
    model: LoadModel | None = None,
    clock: Callable[[], float] | None = None,
    start_epoch: float = DEFAULT_START_EPOCH,
    check_client_baud: bool = True,
) -> Iterator[Dlt645Rig]:
    """Start DL/T 645 meters on one pty; yields a :class:`Dlt645Rig`, closed on exit.

    ``meters`` are addresses, :class:`MeterSpec`s (built in ``model``) or ready
    :class:`Dlt645Meter`s. Without ``model`` one is created from ``seed``, ``accel``, ``clock``
    (default ``time.monotonic``; tests pass a :class:`~hil_tests.load_model.ManualClock`) and
    ``start_epoch``.
    """
    if model is None:
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        model = LoadModel(seed=seed, start_epoch=start_epoch, acceleration=accel, **extra)
    built = [m if isinstance(m, Dlt645Meter) else build_meter(model, m) for m in meters]
    line = Dlt645Line(built, baudrate=baudrate, response_delay_ms=response_delay_ms, seed=seed,
                      check_client_baud=check_client_baud)
    rig = Dlt645Rig(line, model, {m.address: m for m in built})
    line.start()
    try:
        yield rig
    finally:
        rig.close()


# ---------------------------------------------------------------------------------------------------
# Command line


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative, got {text}")
    return value


def _start_time(text: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2025-01-01T00:00:00+08:00, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset (e.g. +08:00) in {text!r}")
    return moment.timestamp()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hil_tests.sim",
        description="Simulated electricity meters for hardware-in-the-loop tests: DL/T 645 meters "
        "multi-dropped on one pseudo-terminal (with 8E1 wire timing), and Modbus TCP meters. "
        "Prints one line per bus (e.g. 'dlt645 /dev/pts/7 addresses 000000000001..000000000008') "
        "and runs until interrupted.",
    )
    d = parser.add_argument_group("DL/T 645 line")
    d.add_argument("--dlt645-meters", type=_count, default=0, metavar="N",
                   help="number of DL/T 645 meters on the pty (default 0)")
    d.add_argument("--dlt645-1997-meters", type=_count, default=0, metavar="K",
                   help="how many of those (the last K) speak DL/T 645-1997 (default 0)")
    d.add_argument("--baud", type=int, default=2400, choices=DLT645_BAUDRATES,
                   help="line speed, 8E1 (default 2400)")
    d.add_argument("--response-delay-ms", type=float, default=20, metavar="MS",
                   help=f"meter response delay Td, {MIN_RESPONSE_DELAY_MS}..{MAX_RESPONSE_DELAY_MS} ms "
                   "(default 20)")
    d.add_argument("--first-address", default="000000000001", metavar="ADDRESS",
                   help="address of the first meter, 12 digits; the others count up "
                   "(default 000000000001)")
    d.add_argument("--phases", type=int, choices=(1, 3), default=3,
                   help="phases of every DL/T 645 meter (default 3)")
    d.add_argument("--clock-offset-s", type=float, default=0.0, metavar="S",
                   help="every DL/T 645 meter's clock starts S seconds ahead (negative: behind; "
                   "default 0)")
    d.add_argument("--clock-drift-s-per-day", type=float, default=0.0, metavar="S",
                   help="and gains S seconds per simulated day (default 0)")
    m = parser.add_argument_group("Modbus TCP")
    m.add_argument("--modbus-tcp-meters", type=_count, default=0, metavar="N",
                   help="number of Modbus TCP meters (units 1..N on one server; default 0)")
    m.add_argument("--modbus-port", type=int, default=5020, metavar="PORT",
                   help="TCP port on 127.0.0.1, 0 = any free port (default 5020)")
    m.add_argument("--modbus-profile", default="sdm630", metavar="NAME",
                   help="register map from the shipped profiles (protocols/meter_profiles, default sdm630)")
    s = parser.add_argument_group("simulation")
    s.add_argument("--seed", type=int, default=0, help="load model seed (default 0)")
    s.add_argument("--accel", type=_positive_float, default=1.0, metavar="X",
                   help="simulated seconds per real second (default 1)")
    s.add_argument("--start", type=_start_time, default=DEFAULT_START_EPOCH, metavar="TIME",
                   help="simulated start time, ISO 8601 with offset "
                   "(default 2025-01-01T00:00:00+08:00)")
    s.add_argument("--duration", type=_positive_float, default=None, metavar="S",
                   help="stop by itself after S real seconds (default: run until SIGINT/SIGTERM)")
    return parser


@dataclass
class _Plan:
    dlt645_specs: list[MeterSpec]
    modbus_profile: Any = None


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> _Plan:
    """Check the arguments against each other; every problem exits with status 2."""
    if args.dlt645_meters == 0 and args.modbus_tcp_meters == 0:
        parser.error("nothing to simulate: give --dlt645-meters N and/or --modbus-tcp-meters N")
    if args.dlt645_1997_meters > args.dlt645_meters:
        parser.error(f"--dlt645-1997-meters {args.dlt645_1997_meters} exceeds "
                     f"--dlt645-meters {args.dlt645_meters}")
    if not MIN_RESPONSE_DELAY_MS <= args.response_delay_ms <= MAX_RESPONSE_DELAY_MS:
        parser.error(f"--response-delay-ms must be {MIN_RESPONSE_DELAY_MS}..{MAX_RESPONSE_DELAY_MS} "
                     f"(DL/T 645 Td), got {args.response_delay_ms:g}")
    if not 0 <= args.modbus_port <= 65535:
        parser.error(f"--modbus-port must be 0..65535, got {args.modbus_port}")
    if args.modbus_tcp_meters > 247:
        parser.error(f"--modbus-tcp-meters: Modbus has units 1..247, got {args.modbus_tcp_meters}")
    try:
        addresses = consecutive_addresses(args.first_address, args.dlt645_meters)
    except ValueError as exc:
        parser.error(f"--first-address: {exc}")
    first_1997 = args.dlt645_meters - args.dlt645_1997_meters
    specs = [MeterSpec(a, version=1997 if i >= first_1997 else 2007, phases=args.phases,
                       clock_offset_s=args.clock_offset_s,
                       clock_drift_s_per_day=args.clock_drift_s_per_day)
             for i, a in enumerate(addresses)]
    plan = _Plan(specs)
    if args.modbus_tcp_meters:
        try:
            from protocols.modbus.profile import ModbusProfile
            from protocols.profiles import ProfileError, load_named_profile
        except ImportError as exc:  # pragma: no cover - the Modbus side ships with the project
            parser.error(f"Modbus simulation unavailable: {exc}")
        try:
            profile = load_named_profile(args.modbus_profile)
        except ProfileError as exc:
            parser.error(f"--modbus-profile: {exc}")
        if not isinstance(profile, ModbusProfile):
            parser.error(f"--modbus-profile {args.modbus_profile} is a {profile.kind} profile, "
                         "not a Modbus register map")
        plan.modbus_profile = profile
    return plan


async def _serve(args: argparse.Namespace, plan: _Plan) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    model = LoadModel(seed=args.seed, start_epoch=args.start, acceleration=args.accel)
    async with contextlib.AsyncExitStack() as stack:
        if plan.dlt645_specs:
            rig = stack.enter_context(run_dlt645_line(
                plan.dlt645_specs, baudrate=args.baud, response_delay_ms=args.response_delay_ms,
                seed=args.seed, model=model))
            first, last = plan.dlt645_specs[0].address, plan.dlt645_specs[-1].address
            print(f"dlt645 {rig.device} addresses {first}..{last}", flush=True)
            stack.callback(_print_stats, rig)
        if args.modbus_tcp_meters:
            from hil_tests.modbus_sim import SimulatedModbusMeter, start_modbus_tcp_meters

            units = [SimulatedModbusMeter(unit, plan.modbus_profile, model.meter(f"modbus-{unit}"))
                     for unit in range(1, args.modbus_tcp_meters + 1)]
            try:
                handle = await start_modbus_tcp_meters(units, "127.0.0.1", args.modbus_port)
            except OSError as exc:
                print(f"error: cannot serve Modbus TCP on 127.0.0.1:{args.modbus_port}: {exc}; "
                      "choose another --modbus-port (0 = any free port)", file=sys.stderr)
                return 1
            stack.push_async_callback(handle.close)
            print(f"modbus-tcp {handle.host}:{handle.port} units 1..{args.modbus_tcp_meters}",
                  flush=True)
        if args.duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
    return 0


def _print_stats(rig: Dlt645Rig) -> None:
    for address, stats in rig.stats.items():
        print(f"dlt645 meter {address}: {stats.requests_seen} requests seen, "
              f"{stats.replies_sent} replies sent, {stats.faults_applied} faulted, "
              f"{stats.wrong_baud} at the wrong baud", file=sys.stderr)
    line = rig.line_stats
    print(f"dlt645 line: {line.frames} frames, {line.garbage_bytes} garbage bytes, "
          f"{line.checksum_errors} checksum errors, {line.collisions} collisions", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    plan = _plan(parser, args)
    try:
        return asyncio.run(_serve(args, plan))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


if __name__ == "__main__":
    sys.exit(main())
