"""CPU of the Modbus TCP acquisition path alone, per meter poll, in one process (issue 18).

    PYTHONPATH=TREE .venv/bin/python bench/bench_modbus_poll_path.py [--mode poll|serve]
                                                                     [--rounds N] [--seconds S]
                                                                     [--profile FILE]

Run it once per tree (e.g. main and a branch) one after the other, a few times, and compare the
minima: the box's other work only ever adds to them.

The meters are the peer harness's (``--profile``, default ``../shared/bench/peer-meter-profile.toml``
next to the checkout: 12 holding
registers, one read per poll), answered by an MBAP responder in the same process that only
echoes a canned reply (its CPU is in the figure, the same for every tree), on uvloop as the
daemon runs.

* ``poll``: ``ModbusBus.poll`` of 100 meters in turn, one worker: the request, pymodbus's reply
  path, decoding and the poll result.
* ``serve``: ``ModbusBus.serve`` with 8 workers (the ``max_concurrency`` default) and 100
  meters due together each second, as on the harness: the above plus the schedule, the
  dispatch between workers and the outbound queue (drained by a task that only counts).

Prints the CPU (``time.process_time``) per poll: the minimum and the median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import cast

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.acquisition.base import BusSettings
from gateway.acquisition.modbus_bus import ModbusBus, ModbusMeter, make_meter
from gateway.acquisition.schedule import PollSchedule
from protocols.modbus import ModbusProfile
from protocols.profiles import load_profile

PROFILE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peer-meter-profile.toml"
#: V*10 ×3, A*100 ×3, W*10 (s32), kWh*100 (u32), PF*1000, Hz*100
REGISTERS = struct.pack(">12H", 2301, 2302, 2303, 512, 513, 514, 0, 54321, 1, 0x2345, 981, 5000)
METERS = 100


class Responder(asyncio.Protocol):
    """Answers each 12-byte MBAP read request with the canned registers."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 12:
            tid, _, _, unit, function, _, count = struct.unpack(">HHHBBHH", self.buffer[:12])
            self.buffer = self.buffer[12:]
            pdu = bytes([function, 2 * count]) + REGISTERS[: 2 * count]
            self.transport.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)


def _meters(profile: ModbusProfile, interval_s: float) -> list[ModbusMeter]:
    mono, wall = time.monotonic(), time.time()
    return [make_meter(f"m{i}", i + 1, profile, PollSchedule.aligned(interval_s, mono, wall))
            for i in range(METERS)]


async def _poll(port: int, args: argparse.Namespace) -> list[float]:
    meters = _meters(_profile(args.profile), 1.0)
    bus = ModbusBus("tcp", meters, asyncio.Queue(), BusSettings(concurrency=1, timeout_s=1.0),
                    host="127.0.0.1", port=port)
    await bus.open()

    async def all_meters() -> None:
        for meter in meters:
            if not (await bus.poll(meter)).ok:
                raise SystemExit(f"poll of {meter.meter_id} failed")

    await all_meters()  # connect, make the requests and plans
    per_poll = []
    for _ in range(args.rounds):
        start = time.process_time()
        for _ in range(10):
            await all_meters()
        per_poll.append((time.process_time() - start) / (10 * METERS))
    await bus.close()
    return per_poll


async def _serve(port: int, args: argparse.Namespace) -> list[float]:
    outbound: asyncio.Queue[object] = asyncio.Queue(1000)
    bus = ModbusBus("tcp", _meters(_profile(args.profile), 1.0), outbound,  # type: ignore[arg-type]
                    BusSettings(concurrency=8, timeout_s=1.0), host="127.0.0.1", port=port)
    polls = 0

    async def drain() -> None:
        nonlocal polls
        while True:
            await outbound.get()
            polls += 1

    drainer = asyncio.create_task(drain())
    await bus.open()
    serving = asyncio.create_task(bus.serve())
    await asyncio.sleep(2.0)
    per_poll = []
    for _ in range(args.rounds):
        start, before = time.process_time(), polls
        await asyncio.sleep(args.seconds)
        per_poll.append((time.process_time() - start) / max(1, polls - before))
    bus.stop()
    await serving
    drainer.cancel()
    return per_poll


def _profile(path: Path) -> ModbusProfile:
    profile = load_profile(path)
    assert isinstance(profile, ModbusProfile)
    return profile


async def _main(args: argparse.Namespace) -> list[float]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        if args.mode == "poll":
            return await _poll(port, args)
        return await _serve(port, args)
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("poll", "serve"), default="poll")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=5.0, help="serve: seconds per round")
    parser.add_argument("--profile", type=Path, default=PROFILE, help="the meters' profile")
    args = parser.parse_args()
    per_poll = uvloop.run(_main(args))
    print(f"{args.mode}: CPU per poll min {min(per_poll) * 1e6:.2f} µs, "
          f"median {statistics.median(per_poll) * 1e6:.2f} µs ({len(per_poll)} rounds)")


if __name__ == "__main__":
    main()
