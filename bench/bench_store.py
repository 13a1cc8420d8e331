"""Store and payload throughput on this machine.

    .venv/bin/python bench/bench_store.py [--dir DIR]

Prints: poll commits per second (10 meters x 4 quantities per poll, synchronous=FULL, so each
commit waits for an fsync — run it on the gateway's real data_dir filesystem to get meaningful
numbers), pending+ack throughput, quick_check time at open for a store holding 100k messages,
and reads-message build / mark_hist / decode rates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store import OutboxMessage, Store
from protocols.payload import Envelope, ReadRecord, build_reads, decode_message, mark_hist

T0 = 1_767_225_600_000


def records(t: int) -> list[ReadRecord]:
    return [
        ReadRecord("energy.active.import.total", Decimal("1206.42"), "kWh", t),
        ReadRecord("energy.active.export.total", Decimal("3.10"), "kWh", t),
        ReadRecord("voltage.a", 229.7, "V", t),
        ReadRecord("current.a", 4.21, "A", t),
    ]


def poll(store: Store, t: int, meters: int = 10) -> list[OutboxMessage]:
    return [
        OutboxMessage.for_reads(
            topic=f"p/g/reads/m-{k}",
            gw="gw-0001",
            epoch=store.epoch,
            ts=t,
            meter=f"m-{k}",
            reads=records(t),
        )
        for k in range(meters)
    ]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s ({seconds * 1e3 / count:.3f} ms each)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="directory for the test database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "gw.db"
        with Store.open(path) as store:
            n = 200
            start = time.perf_counter()
            for i in range(n):
                store.commit_poll(poll(store, T0 + i), now_ms=T0 + i)
            print(f"commit_poll, 10 meters x 4 reads: {rate(n, time.perf_counter() - start)}")

            start = time.perf_counter()
            acked = 0
            while rows := store.pending(100):
                store.mark_acked([r.seq for r in rows])
                acked += len(rows)
            print(
                f"pending(100) + mark_acked, per message: {rate(acked, time.perf_counter() - start)}"
            )

            for _ in range(49):  # 50k messages in all, in big transactions to be quick
                store.commit_poll(poll(store, T0, meters=1000), now_ms=T0)
        size = path.stat().st_size  # closing checkpointed the WAL into the file
        start = time.perf_counter()
        Store.open(path).close()
        print(
            f"open incl. quick_check, {size / 2**20:.0f} MiB store: {(time.perf_counter() - start) * 1e3:.0f} ms"
        )

    env = Envelope("gw-0001", 1, 1, T0)
    reads = records(T0)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        payload = build_reads(env, "m-001", reads)
    print(f"build_reads (4 reads, {len(payload)} B): {rate(n, time.perf_counter() - start)}")
    start = time.perf_counter()
    for _ in range(n):
        mark_hist(payload)
    print(f"mark_hist: {rate(n, time.perf_counter() - start)}")
    start = time.perf_counter()
    for _ in range(n):
        decode_message(payload)
    print(f"decode_message: {rate(n, time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
