"""Where PostgreSQL's time goes when storing reads: the ways into ``current_reads`` compared.

    .venv/bin/python bench/bench_central_copy.py [--gateways 100] [--polls 2] [--per-tx 10000]

Raw SQL through psycopg on a throwaway cluster (tests/central/pg_cluster.py, fsync off), the
consumer's schema, rows shaped like a Modbus poll's (10 quantities a meter, 100 meters a
gateway). For each way, rows per CPU-second of the PostgreSQL backend (from /proc) and of this
client, and wall rows/s:

* ``staged upsert`` — COPY into a temp table, then INSERT … SELECT … ON CONFLICT (the consumer's
  path before the fast path, and still its path for corrections);
* ``copy`` — a plain COPY into ``current_reads`` (the fast path: the partition is routed);
* ``copy, no primary key`` — the same into a copy of the table without its unique index (what
  the index costs);
* ``copy, integer keys`` — gw, meter and quantity as integers (what narrower keys would save).

The decisions in docs/central.md ("Storage") were taken from this: the fast path, text keys kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_central_mqtt import QUANTITIES
from central.storage import open_database

T0 = 1_767_225_600_000
COLUMNS = ("gw, meter, quantity, t_ms, value, unit, quality, method, reasons, message_id, rev, "
           "raw, received_ms")
NAMES = ("energy.active.import.total", "energy.active.export.total", *QUANTITIES)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rows(gateways: int, polls: int, integer_keys: bool) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for p in range(polls):
        for g in range(gateways):
            for m in range(100):
                for i, q in enumerate(NAMES):
                    key: tuple[Any, ...] = ((g, m, i) if integer_keys
                                            else (f"gw-{g:04d}", f"m-{m:03d}", q))
                    out.append((*key, T0 + p * 900_000, f"{230 + i}.{m:02d}", "V", "A", None,
                                "", f"gw-{g:04d}:{g:016x}:{m + 1}", 0, None, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--polls", type=int, default=2)
    parser.add_argument("--per-tx", type=int, default=10_000)
    args = parser.parse_args()
    from tests.central.pg_cluster import available, postgres_cluster

    if not available():
        sys.exit("bench_central_copy: initdb/pg_ctl not installed")
    text_rows = rows(args.gateways, args.polls, False)
    int_rows = rows(args.gateways, args.polls, True)
    with postgres_cluster() as url:
        db = open_database(url)
        db.create_schema()
        db.ensure_partitions("current_reads", [T0])
        conn: Any = db.conn  # type: ignore[attr-defined]
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.execute("CREATE TABLE nopk (LIKE current_reads)")
        conn.execute("CREATE TABLE intkey (gw INTEGER, meter INTEGER, quantity SMALLINT, "
                     "t_ms BIGINT, value NUMERIC, unit TEXT, quality TEXT, method INTEGER, "
                     "reasons TEXT, message_id TEXT, rev INTEGER, raw NUMERIC, "
                     "received_ms BIGINT, PRIMARY KEY (gw, meter, quantity, t_ms))")

        def copy_into(table: str) -> Callable[[Sequence[tuple[Any, ...]]], None]:
            def run(part: Sequence[tuple[Any, ...]]) -> None:
                with conn.cursor() as cur, cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as cp:
                    for row in part:
                        cp.write_row(row)
            return run

        def staged(part: Sequence[tuple[Any, ...]]) -> None:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS st (LIKE current_reads) "
                         "ON COMMIT DELETE ROWS")
            copy_into("st")(part)
            conn.execute(f"INSERT INTO current_reads ({COLUMNS}) SELECT {COLUMNS} FROM st "
                         "ON CONFLICT (gw, meter, quantity, t_ms) DO UPDATE SET value = "
                         "excluded.value WHERE excluded.rev > current_reads.rev")
            conn.execute("DELETE FROM st")

        ways: list[tuple[str, str, Callable[[Sequence[tuple[Any, ...]]], None], list[Any]]] = [
            ("staged upsert", "current_reads", staged, text_rows),
            ("copy", "current_reads", copy_into("current_reads"), text_rows),
            ("copy, no primary key", "nopk", copy_into("nopk"), text_rows),
            ("copy, integer keys", "intkey", copy_into("intkey"), int_rows),
        ]
        print(f"{len(text_rows):,} rows, {args.per_tx:,} a transaction; load average "
              f"{os.getloadavg()[0]:.1f}")
        for name, table, way, data in ways * 2:
            conn.execute(f"TRUNCATE {table}")
            c0, s0, w0 = time.process_time(), cpu_s(backend), time.perf_counter()
            for i in range(0, len(data), args.per_tx):
                with conn.transaction():
                    way(data[i:i + args.per_tx])
            c1, s1, w1 = time.process_time(), cpu_s(backend), time.perf_counter()
            n = len(data)
            print(f"{name:22s} backend {n / max(s1 - s0, 1e-9):11,.0f} rows/CPU-s | client "
                  f"{n / (c1 - c0):11,.0f} rows/CPU-s | wall {n / (w1 - w0):9,.0f} rows/s")
        db.close()


if __name__ == "__main__":
    main()
