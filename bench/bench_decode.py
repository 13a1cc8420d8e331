"""Frames decoded per second on one core: splitter + decode of typical replies.

    python bench/bench_decode.py [--seconds 5]

Mix: single-register energy replies, 5-value energy blocks, voltage blocks, status words and
requests — the traffic a concentrator decodes. Goal (issue 2): >= 20,000 frames/s.
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal

from protocols import dlt645 as d


def frames() -> list[bytes]:
    addr = "000102030425"
    return [
        d.encode(d.build_read_reply(addr, 0x00010000, [Decimal("1206.42")]), preamble=4),
        d.encode(d.build_read_reply(addr, 0x0001FF00, [Decimal("1206.42")] * 5), preamble=4),
        d.encode(d.build_read_reply(addr, 0x0201FF00, [Decimal("220.1"), Decimal("221.0"),
                                                       Decimal("219.9")]), preamble=4),
        d.encode(d.build_read_reply(addr, 0x04000503, [{"relay_open": True}]), preamble=4),
        d.encode(d.ReadRequest(addr, 0x00010000), preamble=4),
    ]


def run(seconds: float) -> tuple[int, float]:
    stream = b"".join(frames()) * 200
    per_stream = len(frames()) * 200
    splitter = d.FrameSplitter()
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for raw in splitter.feed(stream):
            d.decode(raw)
        count += per_stream
    return count, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    count, elapsed = run(args.seconds)
    print(f"decoded {count} frames in {elapsed:.2f} s: {count / elapsed:,.0f} frames/s (one core)")


if __name__ == "__main__":
    main()
