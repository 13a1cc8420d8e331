"""Fuzz the DL/T 645 splitter and decoder with random and mutated inputs.

Every input goes through ``FrameSplitter.feed`` and, for each frame it yields, ``decode`` and
``describe``; whole inputs are also given straight to ``decode``. Anything escaping other than a
``ProtocolError`` subclass is a failure. Usage::

    python bench/fuzz_dlt645.py --count 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
import traceback
from decimal import Decimal

from protocols import dlt645 as d


def _seed_frames(rng: random.Random) -> list[bytes]:
    """Valid frames of many functions and DIs, the raw material of mutations."""
    frames = []
    addr = "000102030425"
    items = list(d.CATALOGUE_2007)
    for item in rng.sample(items, 300) + list(d.CATALOGUE_1997):
        version = d.Version.V1997 if item.di <= 0xFFFF else d.Version.V2007
        frames.append(d.encode(d.ReadRequest(addr, item.di, version), preamble=rng.randrange(5)))
        data = bytes(rng.choice(range(0, 0x99)) for _ in range(item.size))
        frames.append(d.encode(d.ReadReply(addr, item.di, data, (), rng.random() < 0.2, version)))
    frames += [
        d.encode(d.ControlRequest(addr, d.ControlAction.TRIP, dt.datetime(2026, 1, 1, 0, 0, 0))),
        d.encode(d.TimeSyncRequest(dt.datetime(2026, 1, 1, 0, 0, 0))),
        d.encode(d.ErrorReply(addr, "read_data", 2)),
        d.encode(d.ReadAddressReply(addr)),
        d.encode(d.ClearEventsRequest(addr)),
        d.encode(d.ChangePasswordRequest(addr, 2, "000000", 4, "123456")),
        d.encode(d.ReadFollowupReply(addr, 0x00010000, bytes(4), (), 1, True)),
        d.encode(d.build_read_reply(addr, 0x0001FF00, [Decimal("1.00")] * 5)),
    ]
    return frames


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 3 and b:
            del b[rng.randrange(len(b))]
        elif op == 4:
            b = b[: rng.randrange(len(b) + 1)]
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    if len(b) >= 12 and rng.random() < 0.5:  # fix the checksum so mutations reach field decoders
        start = b.find(0x68)
        if start >= 0 and len(b) >= start + 12:
            length = b[start + 9]
            end = start + 10 + length
            if end + 1 < len(b) + 1 and end < len(b):
                b[end] = sum(b[start:end]) & 0xFF
    return bytes(b)


def run(count: int, seed: int) -> tuple[int, int, int]:
    """Returns (inputs, frames decoded, unexpected exceptions)."""
    rng = random.Random(seed)
    seeds = _seed_frames(rng)
    decoded = 0
    unexpected = 0
    splitter = d.FrameSplitter()
    for i in range(count):
        kind = i % 4
        if kind == 0:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        elif kind == 3:
            blob = _mutate(rng, rng.choice(seeds)) + _mutate(rng, rng.choice(seeds))
        else:
            blob = _mutate(rng, rng.choice(seeds))
        try:
            try:
                d.describe(d.decode(blob))
                decoded += 1
            except d.ProtocolError:
                pass
            for frame in splitter.feed(blob):
                try:
                    d.describe(d.decode(frame))
                    decoded += 1
                except d.ProtocolError:
                    pass
        except Exception:
            unexpected += 1
            if unexpected <= 5:
                print(f"unexpected exception for input {blob.hex(' ')}", file=sys.stderr)
                traceback.print_exc()
    return count, decoded, unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    count, decoded, unexpected = run(args.count, args.seed)
    elapsed = time.perf_counter() - t0
    print(f"fuzz inputs={count} decoded_frames={decoded} unexpected={unexpected} "
          f"seconds={elapsed:.1f} rate={count / elapsed:.0f}/s")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
