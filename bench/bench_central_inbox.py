"""The hand-over from paho's network thread to the worker's thread: ``queue.Queue`` against
``central.sources.inbox.Inbox``.

    .venv/bin/python bench/bench_central_inbox.py [queue inbox queue inbox]

A producer thread puts 200,000 items into a bound of two batches (2,000); the consumer takes
batches of 1,000 the way the MQTT source does (``Queue``: one ``get`` an item until the batch is
full or 0.1 s passed; ``Inbox``: one ``take``) and does a little GIL-holding work an item, as
decoding would. Printed: items per CPU-second of the process (both threads) and its context
switches — the cost of waking the other thread per item rather than per batch.
"""

from __future__ import annotations

import queue
import resource
import sys
import threading
import time

from central.sources.inbox import Inbox

N, BATCH = 200_000, 1000


def _cpu() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw


def _work(batch: list[int]) -> None:
    s = 0
    for x in batch:
        for _ in range(20):
            s += x


def run_queue() -> None:
    q: queue.Queue[int] = queue.Queue(maxsize=2 * BATCH)
    producer = threading.Thread(target=lambda: [q.put(i, timeout=5) for i in range(N)])
    producer.start()
    got = 0
    while got < N:
        batch = [q.get(timeout=5)]
        deadline = time.monotonic() + 0.1
        while len(batch) < BATCH:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(q.get(timeout=left))
            except queue.Empty:
                break
        _work(batch)
        got += len(batch)
    producer.join()


def run_inbox() -> None:
    box: Inbox[int] = Inbox(2 * BATCH)

    def produce() -> None:
        for i in range(N):
            while not box.put(i, 0.5):
                pass

    producer = threading.Thread(target=produce)
    producer.start()
    got = 0
    while got < N:
        batch = box.take(BATCH, 0.2, 0.1)
        _work(batch)
        got += len(batch)
    producer.join()


def main() -> None:
    for name in sys.argv[1:] or ["queue", "inbox", "queue", "inbox"]:
        run = {"queue": run_queue, "inbox": run_inbox}[name]
        cpu0, sw0 = _cpu()
        wall0 = time.monotonic()
        run()
        cpu1, sw1 = _cpu()
        print(f"{name:6} {N / (cpu1 - cpu0):>10,.0f} items per CPU-s | wall "
              f"{time.monotonic() - wall0:.2f} s | context switches {sw1 - sw0:,}")


if __name__ == "__main__":
    main()
