"""How long an alarm waits behind the read backlog after an outage of the link (issue 14).

    .venv/bin/python bench/bench_alarm_priority.py [--backlog N] [--window W] [--order both|lanes|seq]

For each order, on a fresh store and a private mosquitto (127.0.0.1, free port):

1. a subscriber (paho, MQTT 5) is connected to ``P/G/#`` and timestamps every message;
2. N reads messages (10 read records each, as from a 10-quantity meter poll, 500 per
   transaction) are committed while the gateway has no connection, then one alarm
   (``P/G/alarms``) — the outage alarm the utility wants first;
3. the daemon's ``MqttLink`` + ``OutboxPump`` (window W, the daemon's bookkeeping delay) connect
   and drain the outbox; when 10,000 backlog rows have been handed to the link a second alarm is
   committed, as one raised during the drain would be.

The drain alarm is counted twice: reads the pump handed to the link after its commit and before
it (what the outbox decides: 0, it takes the next free slot of the window), and reads that
reached the subscriber after its commit and before it (that adds whatever the broker had queued
for the subscriber at that moment).

Orders: ``lanes`` is the store as it is (alarms and command results in the priority lane);
``seq`` reads the same store strictly in seq order, one lane, as the outbox did before — the
"before" figure. Reported per alarm: how many backlog reads reached the subscriber before it
(for the drain alarm: after its commit), and how long it took (from the CONNACK, or from its
commit), against the time the whole backlog took.

Exit status: 0 measured, 1 when the lanes order let the outage alarm wait for more than one
window of reads or handed a read to the link ahead of the drain alarm, 2 when it could not
measure.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
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
)
from gateway.app.daemon import BOOKKEEPING_DELAY_S
from gateway.store import OutboxCursor, OutboxMessage, OutboxRow, Store
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink
from gateway.uplink.outbox_pump import OutboxPump
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.payload import AlarmEvent, Envelope, ReadRecord, build_alarm

METERS = 500
COMMIT_BATCH = 500
DRAIN_ALARM_AFTER = 10_000
BASE = f"{TOPIC_PREFIX}/{GATEWAY_ID}"
T0 = 1_767_225_600_000


def poll_records(t_ms: int, k: int) -> list[ReadRecord]:
    return [ReadRecord("energy.active.import.total", Decimal("1206.42") + k, "kWh", t_ms)] + [
        ReadRecord(q, 229.7, "V", t_ms) for q in ("voltage.a", "voltage.b", "voltage.c",
                                                   "current.a", "current.b", "current.c",
                                                   "power.active.total", "power.factor.total",
                                                   "frequency")]


def commit_backlog(store: Store, n: int) -> None:
    for start in range(0, n, COMMIT_BATCH):
        batch = []
        for k in range(start, min(n, start + COMMIT_BATCH)):
            meter = f"m-{k % METERS:03d}"
            batch.append(OutboxMessage.for_reads(topic=f"{BASE}/reads/{meter}", gw=GATEWAY_ID,
                                                 epoch=store.epoch, ts=T0 + k, meter=meter,
                                                 reads=poll_records(T0 + k, k)))
        store.commit_poll(batch, now_ms=T0 + start)


def alarm(store: Store, key: str) -> OutboxMessage:
    event = AlarmEvent(kind="outage.area", key=key, state="raised", severity="critical")
    return OutboxMessage(topic=f"{BASE}/alarms", qos=1,
                         build=lambda seq: build_alarm(Envelope(GATEWAY_ID, store.epoch, seq, T0),
                                                       event))


class SeqOrderOutbox:
    """The same store read strictly in seq order, one lane: the outbox before issue 14. Its own
    read connection (WAL lets it read beside the store's writer); writes go to the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)

    def pending(self, limit: int, after: OutboxCursor | None) -> Sequence[OutboxRow]:
        rows = self._conn.execute(
            "SELECT seq, topic, payload, qos, created_ms, attempts FROM outbox "
            "WHERE acked_ms IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (after.bulk if after is not None else 0, limit)).fetchall()
        return [OutboxRow(*row) for row in rows]

    def mark_acked(self, seqs: Sequence[int], when_ms: int, attempted: Sequence[int] = ()) -> int:
        return self.store.mark_acked(seqs, when_ms, attempted)

    @property
    def last_seq(self) -> int:
        return self.store.last_seq


class Subscriber:
    """Timestamps (monotonic) every message of the gateway, in arrival order."""

    def __init__(self, port: int) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-crm",
                                   protocol=paho.MQTTv5)
        self._client.on_connect = lambda c, *_: c.subscribe(f"{BASE}/#", qos=1)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._on_message
        self._client.connect(HOST, port)
        self._client.loop_start()
        if not self._ready.wait(5):
            raise MeasurementError("subscriber got no SUBACK")

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.arrivals.append((time.monotonic(), msg.topic))

    def reads(self) -> int:
        with self._lock:
            return sum(1 for _, topic in self.arrivals if "/reads/" in topic)

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.arrivals)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass(frozen=True)
class Result:
    order: str
    outage_alarm_position: int  # backlog reads that arrived before it
    outage_alarm_s: float  # CONNACK -> arrival
    drain_alarm_position: int  # backlog reads that arrived between its commit and its arrival
    drain_alarm_handed: int  # backlog reads handed to the link between its commit and it
    drain_alarm_s: float  # commit -> arrival
    backlog_s: float  # CONNACK -> last backlog read


async def measure(order: str, backlog: int, window: int, port: int, workdir: Path) -> Result:
    store = Store.open(workdir / f"{order}.db")
    try:
        commit_backlog(store, backlog)  # the link is down: nothing is connected yet
        store.enqueue(alarm(store, "outage"))
        outbox = store if order == "lanes" else SeqOrderOutbox(store)
        subscriber = Subscriber(port)
        settings = LinkSettings(host=HOST, port=port, client_id=GATEWAY_ID,
                                topic_prefix=TOPIC_PREFIX, inflight_window=window)
        state = GatewayStateMessages(GATEWAY_ID, "bench", "00" * 32, (),
                                     position=lambda: (store.epoch, store.last_seq))
        link = MqttLink(settings, state=state, next_bdseq=store.next_bdseq)
        pump = OutboxPump(outbox, link, window=window, bookkeeping_delay_s=BOOKKEEPING_DELAY_S)
        handed: list[str] = []  # topics in the order the pump handed them to the link
        publish = link.publish

        def recording(topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
            mid = publish(topic, payload, qos, retain)
            if mid is not None:
                handed.append(topic)
            return mid

        link.publish = recording  # type: ignore[method-assign]
        try:
            await link.start()
            if not await link.wait_connected(10):
                raise MeasurementError("the gateway did not connect")
            up = time.monotonic()
            pump.start()
            while pump.status().published < DRAIN_ALARM_AFTER:
                await asyncio.sleep(0.001)
            reads_at_commit = subscriber.reads()
            handed_at_commit = len(handed)
            committed = time.monotonic()
            store.enqueue(alarm(store, "during-drain"))
            pump.notify()
            deadline = time.monotonic() + 600
            while subscriber.reads() < backlog or sum(
                    1 for _, t in subscriber.snapshot() if t.endswith("/alarms")) < 2:
                if time.monotonic() > deadline:
                    raise MeasurementError(f"{order}: backlog not delivered in 600 s")
                await asyncio.sleep(0.05)
        finally:
            await pump.stop(drain_timeout=2)
            await link.stop()
            subscriber.stop()
        arrivals = subscriber.snapshot()
        alarm_at = [i for i, (_, t) in enumerate(arrivals) if t.endswith("/alarms")]
        reads_before = [sum(1 for _, t in arrivals[:i] if "/reads/" in t) for i in alarm_at]
        last_read = max(when for when, t in arrivals if "/reads/" in t)
        handed_alarm = handed.index(f"{BASE}/alarms", handed_at_commit)
        return Result(order, reads_before[0], arrivals[alarm_at[0]][0] - up,
                      reads_before[1] - reads_at_commit, handed_alarm - handed_at_commit,
                      arrivals[alarm_at[1]][0] - committed, last_read - up)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--order", choices=("both", "lanes", "seq"), default="both")
    args = parser.parse_args(argv)
    if args.backlog <= DRAIN_ALARM_AFTER:
        return fail(f"--backlog must exceed {DRAIN_ALARM_AFTER}")
    started = note_start()
    orders = ("seq", "lanes") if args.order == "both" else (args.order,)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-alarm-") as tmp, \
                private_broker(Path(tmp)) as broker:
            for order in orders:
                results.append(asyncio.run(
                    measure(order, args.backlog, args.window, broker.port, Path(tmp))))
    except MeasurementError as exc:
        return fail(str(exc))
    rows = []
    for r in results:
        label = "strict seq order (before)" if r.order == "seq" else "priority lane (after)"
        rows += [
            (f"{label}: outage alarm, reads before it",
             f"{r.outage_alarm_position:,} of {args.backlog:,}", f"<= {args.window} (window)"),
            (f"{label}: outage alarm, CONNACK -> arrival", f"{r.outage_alarm_s:.3f} s", ""),
            (f"{label}: drain alarm, reads handed to the link after its commit, before it",
             f"{r.drain_alarm_handed:,}", "0 (next free slot)"),
            (f"{label}: drain alarm, reads reaching the subscriber after its commit, before it",
             f"{r.drain_alarm_position:,}", "(includes the broker's queue)"),
            (f"{label}: drain alarm, commit -> arrival", f"{r.drain_alarm_s:.3f} s", ""),
            (f"{label}: whole backlog, CONNACK -> last read", f"{r.backlog_s:.2f} s", ""),
        ]
    print_table(f"Alarm priority after a link outage ({started}), backlog {args.backlog:,}, "
                f"window {args.window}", rows)
    lanes = [r for r in results if r.order == "lanes"]
    ok = all(r.outage_alarm_position <= args.window and r.drain_alarm_handed == 0 for r in lanes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
