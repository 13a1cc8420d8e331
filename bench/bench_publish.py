"""Publish throughput through the outbox vs plain paho QoS 1, in one run (issue 3: ratio ≥ 0.5).

    .venv/bin/python bench/bench_publish.py [--quick] [--messages N] [--rounds R] [--window W]

Both sides publish the same payload bytes to the same private mosquitto (127.0.0.1, free port),
at QoS 1 with the same in-flight window, and are timed until every PUBACK has arrived:

* **outbox**: N reads messages (10 read records each, as from a 10-quantity meter poll) are
  committed into a real ``gateway.store.Store`` with ``OutboxMessage.for_reads``; then the
  daemon's own ``MqttLink`` + ``OutboxPump`` run on one asyncio loop, exactly as in the daemon,
  and the clock stops when the last row is marked acknowledged in SQLite (``mark_acked``
  committed). The rows are committed after the link came up, so they are live rows (sent as
  stored); a second, informational figure sends rows committed before the connection — the
  backlog path, re-encoded with ``hist: true`` — as after an outage.
* **baseline**: a plain paho client (MQTT 5, ``max_inflight_messages_set(W)``, ``loop_start``)
  publishes the same N payloads in a loop; the clock stops at the N-th ``on_publish``.

Rounds alternate baseline / outbox so that drift in the machine's load hits both; the ratio
reported is the median of the per-round ratios. The process's CPU time per message is shown too
(``time.process_time``: every thread of this process, mosquitto excluded).

``--profile PREFIX`` runs cProfile over the outbox's timed phases only (the figures are then
inflated by the profiler) and writes PREFIX-live.prof and PREFIX-backlog.prof.

Exit status: 0 measured (whatever the verdict), 1 with ``--strict`` when the goal is missed,
2 when it could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.daemon_rig import (
    GATEWAY_ID,
    HOST,
    TOPIC_PREFIX,
    MeasurementError,
    fail,
    note_start,
    print_table,
    private_broker,
    verdict,
)
from gateway.app.daemon import BOOKKEEPING_DELAY_S
from gateway.store import OutboxCursor, OutboxMessage, OutboxRow, Store
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink
from gateway.uplink.outbox_pump import OutboxPump
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.payload import ReadRecord

GOAL_RATIO = 0.5
METERS = 200  # topics cycle over this many meters
COMMIT_BATCH = 64  # the committer's max_batch: one transaction per this many messages


def poll_records(t_ms: int, k: int) -> list[ReadRecord]:
    """The 10 quantities of an SDM630-like poll (energy exact, instantaneous as floats)."""
    return [
        ReadRecord("voltage.a", 229.7 + k % 7 / 10, "V", t_ms),
        ReadRecord("voltage.b", 230.1, "V", t_ms),
        ReadRecord("voltage.c", 228.9, "V", t_ms),
        ReadRecord("current.a", 4.213, "A", t_ms),
        ReadRecord("current.b", 3.977, "A", t_ms),
        ReadRecord("current.c", 5.102, "A", t_ms),
        ReadRecord("power.active.total", 3.0712, "kW", t_ms),
        ReadRecord("energy.active.import.total", Decimal("1206.42") + k, "kWh", t_ms),
        ReadRecord("power.factor.total", 0.981, "", t_ms),
        ReadRecord("frequency", 50.01, "Hz", t_ms),
    ]


def commit_messages(store: Store, n: int) -> None:
    t0 = 1_767_225_600_000
    prefix = f"{TOPIC_PREFIX}/{GATEWAY_ID}/reads"
    for start in range(0, n, COMMIT_BATCH):
        batch = []
        for k in range(start, min(n, start + COMMIT_BATCH)):
            meter = f"m-{k % METERS:03d}"
            batch.append(OutboxMessage.for_reads(topic=f"{prefix}/{meter}", gw=GATEWAY_ID,
                                                 epoch=store.epoch, ts=t0 + k, meter=meter,
                                                 reads=poll_records(t0 + k, k)))
        store.commit_poll(batch, now_ms=t0 + start)


class CountingOutbox:
    """The real store, with a count of acknowledged rows so the clock stops on the last one, and
    the wall time spent inside the store's calls. Those run on the event-loop thread and each
    write is a transaction with an fsync (synchronous=FULL), so nothing else moves meanwhile."""

    def __init__(self, store: Store, expected: int) -> None:
        self.store = store
        self.expected = expected
        self.acked = 0
        self.done = asyncio.Event()
        self.write_transactions = 0
        self.store_s = 0.0

    def pending(self, limit: int, after: OutboxCursor | None) -> Sequence[OutboxRow]:
        t0 = time.perf_counter()
        try:
            return self.store.pending(limit, after)
        finally:
            self.store_s += time.perf_counter() - t0

    def mark_acked(self, seqs: Sequence[int], when_ms: int, attempted: Sequence[int] = ()) -> int:
        t0 = time.perf_counter()
        try:
            changed = self.store.mark_acked(seqs, when_ms, attempted)
        finally:
            self.store_s += time.perf_counter() - t0
            self.write_transactions += 1
        self.acked += changed
        if self.acked >= self.expected:
            self.done.set()
        return changed

    @property
    def last_seq(self) -> int:
        return self.store.last_seq

    @property
    def requeues(self) -> int:
        return self.store.requeues


@dataclass(frozen=True)
class Timing:
    seconds: float
    cpu_s: float
    count: int
    store_s: float = 0.0  # outbox only: wall time inside store calls
    write_transactions: int = 0  # outbox only: mark_attempted + mark_acked transactions

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * self.cpu_s / self.count


async def _outbox_round(store: Store, port: int, n: int, window: int, backlog: bool,
                        timeout: float, profiler: cProfile.Profile | None = None) -> Timing:
    state = GatewayStateMessages(gateway_id=GATEWAY_ID, version="bench", config_sha256="0" * 64,
                                 meters=(), position=lambda: (store.epoch, store.last_seq))
    settings = LinkSettings(host=HOST, port=port, client_id=GATEWAY_ID, topic_prefix=TOPIC_PREFIX,
                            inflight_window=window)
    link = MqttLink(settings, state=state, next_bdseq=store.next_bdseq)
    outbox = CountingOutbox(store, n)
    pump = OutboxPump(outbox, link, window=window, bookkeeping_delay_s=BOOKKEEPING_DELAY_S)
    if backlog:
        commit_messages(store, n)  # committed before the connection: sent with hist
    await link.start()
    try:
        if not await link.wait_connected(10):
            raise MeasurementError(f"MqttLink did not connect to {HOST}:{port}")
        await asyncio.sleep(0.2)  # let the birth message and the subscription settle
        if profiler is not None:
            profiler.enable()  # the timed phase only: not the commits, not the connection
        if backlog:
            t0, c0 = time.perf_counter(), time.process_time()
            pump.start()  # link_up: every row is at or below last_seq, so all are backlog
        else:
            pump.start()  # empty store: whatever is committed from now on is live
            await asyncio.sleep(0.1)  # the pump's first look finds nothing and goes idle
            commit_messages(store, n)  # as the committer hands rows over (no notify yet)
            t0, c0 = time.perf_counter(), time.process_time()
            pump.notify()
        try:
            await asyncio.wait_for(outbox.done.wait(), timeout)
        except TimeoutError:
            raise MeasurementError(f"outbox: only {outbox.acked} of {n} rows acknowledged within "
                                   f"{timeout:.0f} s; pump status {pump.status()}") from None
        finally:
            if profiler is not None:
                profiler.disable()
        timing = Timing(time.perf_counter() - t0, time.process_time() - c0, n, outbox.store_s,
                        outbox.write_transactions)
        status = pump.status()
        expected_resent = n if backlog else 0
        if status.rejected or status.resent != expected_resent:
            raise MeasurementError(f"outbox round not clean: {status}")
        if store.outbox_depth() != 0:
            raise MeasurementError(f"{store.outbox_depth()} rows still unacknowledged in the store")
        return timing
    finally:
        await pump.stop(drain_timeout=1.0)
        await link.stop()


def outbox_round(workdir: Path, port: int, n: int, window: int, backlog: bool, timeout: float,
                 round_no: int, profiler: cProfile.Profile | None = None
                 ) -> tuple[Timing, list[tuple[str, bytes]]]:
    path = workdir / f"outbox-{round_no}-{'backlog' if backlog else 'live'}.sqlite"
    with Store.open(path) as store:
        timing = asyncio.run(_outbox_round(store, port, n, window, backlog, timeout, profiler))
    with Store.open(path) as store:  # the same bytes for the baseline: read them back
        payloads = [(row.topic, row.payload) for row in _all_rows(store)]
    return timing, payloads


def _all_rows(store: Store) -> list[OutboxRow]:
    with store._reading() as conn:  # the rows are acknowledged now, so pending() skips them
        rows = conn.execute("SELECT seq, topic, payload, qos, created_ms, attempts FROM outbox "
                            "ORDER BY seq").fetchall()
    return [OutboxRow(*row) for row in rows]


def paho_round(port: int, messages: Sequence[tuple[str, bytes]], window: int, timeout: float,
               round_no: int) -> Timing:
    n = len(messages)
    done = threading.Event()
    acked = 0
    failed = 0

    def on_publish(client: paho.Client, userdata: object, mid: int, reason: object,
                   props: object) -> None:
        nonlocal acked, failed
        acked += 1
        if getattr(reason, "is_failure", False):
            failed += 1
        if acked >= n:
            done.set()

    connected = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{round_no}",
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(window)
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    client.connect(HOST, port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise MeasurementError(f"paho baseline did not connect to {HOST}:{port}")
        t0, c0 = time.perf_counter(), time.process_time()
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise MeasurementError(f"paho refused a publish: {paho.error_string(info.rc)}")
        if not done.wait(timeout):
            raise MeasurementError(f"paho baseline: only {acked} of {n} PUBACKs within {timeout:.0f} s")
        timing = Timing(time.perf_counter() - t0, time.process_time() - c0, n)
        if failed:
            raise MeasurementError(f"paho baseline: the broker refused {failed} publishes")
        return timing
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--quick", action="store_true", help="5,000 messages, 1 round (smoke check)")
    parser.add_argument("--messages", type=int, default=None, help="messages per side (default 20,000)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    parser.add_argument("--window", type=int, default=64, help="QoS 1 in-flight window (default 64)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the stores (default: the system temp dir); use the "
                        "gateway's data_dir filesystem for meaningful fsync costs")
    parser.add_argument("--profile", type=Path, default=None, metavar="PREFIX",
                        help="cProfile the outbox's timed phases: PREFIX-live.prof (all live "
                        "rounds) and PREFIX-backlog.prof (read them with python -m pstats)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    n = args.messages or (5_000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    note_start()
    timeout = max(60.0, n / 100)
    live_prof = cProfile.Profile() if args.profile else None
    backlog_prof = cProfile.Profile() if args.profile else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-publish-", dir=args.dir) as tmp:
            workdir = Path(tmp)
            with private_broker(workdir) as broker:
                live: list[Timing] = []
                base: list[Timing] = []
                ratios: list[float] = []
                payloads: list[tuple[str, bytes]] = []
                for r in range(rounds):
                    # The first baseline needs payloads: build them through a throwaway store.
                    if not payloads:
                        with Store.open(workdir / "payloads.sqlite") as store:
                            commit_messages(store, n)
                            payloads = [(row.topic, row.payload) for row in store.pending(n)]
                    b = paho_round(broker.port, payloads, args.window, timeout, r)
                    o, payloads = outbox_round(workdir, broker.port, n, args.window, False, timeout,
                                               r, live_prof)
                    base.append(b)
                    live.append(o)
                    ratios.append(o.rate / b.rate)
                backlog, _ = outbox_round(workdir, broker.port, n, args.window, True, timeout, rounds,
                                          backlog_prof)
    except MeasurementError as exc:
        return fail(str(exc))

    if args.profile and live_prof is not None and backlog_prof is not None:
        live_prof.dump_stats(f"{args.profile}-live.prof")
        backlog_prof.dump_stats(f"{args.profile}-backlog.prof")
    ratio = statistics.median(ratios)
    size = statistics.mean(len(p) for _, p in payloads)
    med_base = statistics.median(t.rate for t in base)
    med_live = statistics.median(t.rate for t in live)
    rows = [
        ("messages per side, payload", f"{n:,} × {size:.0f} B (10 reads each)", ""),
        ("in-flight window, QoS", f"{args.window}, QoS 1, MQTT 5", "same on both sides"),
        ("plain paho (loop_start)", " / ".join(f"{t.rate:,.0f}" for t in base) + " msg/s", ""),
        ("outbox: MqttLink + OutboxPump", " / ".join(f"{t.rate:,.0f}" for t in live) + " msg/s", ""),
        ("  CPU per message: paho / outbox",
         f"{statistics.median(t.cpu_ms_per_msg for t in base):.3f} / "
         f"{statistics.median(t.cpu_ms_per_msg for t in live):.3f} ms", ""),
        ("  outbox: wall time in store calls",
         " / ".join(f"{100 * t.store_s / t.seconds:.0f} %" for t in live)
         + f" ({statistics.median(t.write_transactions for t in live):.0f} write transactions, "
         f"{1000 * statistics.median(t.store_s / max(1, t.write_transactions) for t in live):.1f} ms each)",
         ""),
        ("ratio outbox / paho, per round", " / ".join(f"{x:.2f}" for x in ratios), ""),
        ("ratio (median)", f"{ratio:.2f} ({med_live:,.0f} vs {med_base:,.0f} msg/s)",
         verdict(ratio >= GOAL_RATIO, f">= {GOAL_RATIO}")),
        ("backlog drain (hist re-encode)",
         f"{backlog.rate:,.0f} msg/s, {backlog.cpu_ms_per_msg:.3f} ms CPU/msg, "
         f"ratio {backlog.rate / med_base:.2f}", "informational"),
    ]
    print_table("Publish throughput: outbox (SQLite → MqttLink → PUBACK → mark_acked) vs plain paho",
                rows, [f"rounds: {rounds} (alternating paho, outbox); the outbox clock stops when the "
                       "last mark_acked has committed"])
    return 1 if args.strict and ratio < GOAL_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
