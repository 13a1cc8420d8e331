"""How fast one ``edge-central`` process decodes and stores reads, without the broker.

    .venv/bin/python bench/bench_central_ingest.py [--gateways 20] [--meters 100] [--polls 5]
        [--batch 500] [--engine sqlite|postgresql|both] [--payload-version 2] [--profile]

Builds reads messages of 10 values each (2 exact registers, 8 floats: a Modbus poll; schema
``--payload-version``, v2 after each gateway's birth, as bench/bench_central_mqtt.py publishes
them) for a fleet of gateways, then times, in this one process: decoding them through the consumer's trust
boundary (``central.decoding``) and storing them in batches through ``central.storage.ingest``
(dedupe by seq ranges, upserts, stream bookkeeping), on SQLite (a temp file) and on a throwaway
PostgreSQL cluster (initdb + pg_ctl, fsync off: the CPU cost, not the disk's). Prints values/s
for each stage — the per-core figures docs/central.md sizes deployments from.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_central_mqtt import PREFIX, VALUES_PER_MESSAGE, birth_message, poll_message
from central.decoding import Decoder, Inbound
from central.storage import open_database
from central.storage.ingest import ingest

T0 = 1_767_225_600_000


def messages(gateways: int, meters: int, polls: int, version: int) -> list[tuple[str, bytes]]:
    out = [birth_message(g, meters) for g in range(gateways)] if version == 2 else []
    for g in range(gateways):
        for p in range(polls):
            out += [poll_message(g, m, p * meters + m + 1, T0 + p * 900_000, p, version)
                    for m in range(meters)]
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(engine: str, url: str, batch: list[tuple[str, bytes]], size: int) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    decoder = Decoder(PREFIX, {})
    decoded: list[Inbound] = [decoder.decode(t, p) for t, p in batch]
    t1, c1 = time.perf_counter(), time.process_time()
    db = open_database(url)
    server = int(db.scalar("SELECT pg_backend_pid()")) if engine == "postgresql" else 0
    values = 0
    t2, c2, s2 = time.perf_counter(), time.process_time(), _cpu_s(server)
    for i in range(0, len(decoded), size):
        values += ingest(db, decoded[i:i + size], 1).values
    t3, c3, s3 = time.perf_counter(), time.process_time(), _cpu_s(server)
    db.close()
    n = sum("/reads/" in topic for topic, _p in batch) * VALUES_PER_MESSAGE
    print(f"{engine:10s} {len(batch):7,d} msgs {n:8,d} values | decode {n / (t1 - t0):9,.0f} "
          f"values/s | store {n / (t3 - t2):9,.0f} values/s | both {n / (t3 - t2 + t1 - t0):9,.0f}"
          f" values/s (batch {size})")
    # Per CPU-second, whatever else the box runs: the worker's decode, the worker's side of
    # storing, and (PostgreSQL) the server backend that stored them.
    per_core = (f"{'':10s} per CPU-second: decode {n / (c1 - c0):9,.0f} | store, client "
                f"{n / (c3 - c2):9,.0f}")
    if server:
        per_core += f" | store, server backend {n / max(s3 - s2, 1e-9):9,.0f}"
    print(per_core + f" | worker (decode + store) {n / (c3 - c2 + c1 - c0):9,.0f} values/CPU-s")
    assert values == n, (values, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--payload-version", type=int, choices=(1, 2), default=2)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile decode and store; print the top functions by own time")
    args = parser.parse_args()
    batch = messages(args.gateways, args.meters, args.polls, args.payload_version)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            main_runs(args, batch)
        finally:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    main_runs(args, batch)


def main_runs(args: argparse.Namespace, batch: list[tuple[str, bytes]]) -> None:
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            run("sqlite", f"sqlite:///{tmp}/central.sqlite", batch, args.batch)
    if args.engine in ("postgresql", "both"):
        from tests.central.pg_cluster import available, postgres_cluster

        if not available():
            print("postgresql: initdb/pg_ctl not installed, skipped")
            return
        with postgres_cluster() as url:
            run("postgresql", url, batch, args.batch)


if __name__ == "__main__":
    main()
