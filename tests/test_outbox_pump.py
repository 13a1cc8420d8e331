"""OutboxPump: window logic against a scripted link, then end to end with the real SQLite store
and a real mosquitto that is stopped, frozen and killed under it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest

from gateway.store import OutboxCursor, OutboxMessage, OutboxRow, Store
from gateway.store.errors import StoreFullError
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink, PublishListener
from gateway.uplink.outbox_pump import OutboxPump
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.payload import (
    AlarmEvent,
    Envelope,
    ReadRecord,
    build_alarm,
    build_reads,
    decode_message,
    mark_hist,
)
from tests.broker import Endpoint, MosquittoBroker, Observer

REPO = Path(__file__).resolve().parents[1]
GW = "gw-pump-1"
PREFIX = "mtr/v1"
METERS = ("m-001", "m-002", "m-003", "m-004")


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


def seq_of(payload: bytes) -> int:
    seq = decode_message(payload)["seq"]
    assert isinstance(seq, int)
    return seq


def is_hist(payload: bytes) -> bool:
    return decode_message(payload).get("hist") is True


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def settle() -> None:
    """Let the pump task and call_soon callbacks run."""
    for _ in range(5):
        await asyncio.sleep(0)


class Ledger:
    """Commits poll cycles to a real store and remembers each payload exactly as stored."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.payloads: dict[int, bytes] = {}
        self.meter_of: dict[int, str] = {}
        self._tick = 0

    def commit(self, meters: Sequence[str] = METERS) -> list[int]:
        self._tick += 1
        ts = 1_700_000_000_000 + self._tick * 1000
        messages = []
        for meter in meters:
            reads = (
                ReadRecord("energy.active.import.total", Decimal(self._tick) / 100, "kWh", ts),
            )

            def build(seq: int, meter: str = meter, reads: tuple[ReadRecord, ...] = reads) -> bytes:
                payload = build_reads(Envelope(GW, self.store.epoch, seq, ts), meter, reads)
                self.payloads[seq] = payload
                self.meter_of[seq] = meter
                return payload

            messages.append(OutboxMessage(topic=f"{PREFIX}/{GW}/reads/{meter}", qos=1, build=build))
        return self.store.commit_poll(messages, now_ms=ts)


def alarm_message(store: Store, key: str) -> OutboxMessage:
    """An alarm event as the alarm service commits it (topic P/G/alarms)."""
    event = AlarmEvent(kind="comm_loss", key=key, state="raised", severity="major", meter="m-001")
    return OutboxMessage(
        topic=f"{PREFIX}/{GW}/alarms", qos=1,
        build=lambda seq: build_alarm(Envelope(GW, store.epoch, seq, 1_700_000_000_000), event))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "gateway.db")


# --------------------------------------------------------------------------------------------
# Window logic with a scripted link: PUBACK timing under the test's control
# --------------------------------------------------------------------------------------------


@dataclass
class ScriptedLink:
    """Stands in for MqttLink where the test must decide exactly when each PUBACK arrives."""

    connected: bool = False
    listener: PublishListener | None = None
    published: list[tuple[int, str, bytes, int]] = field(default_factory=list)
    _mid: int = 0

    def set_listener(self, listener: PublishListener | None) -> None:
        self.listener = listener

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        if not self.connected:
            return None
        self._mid += 1
        self.published.append((self._mid, topic, payload, qos))
        return self._mid

    def up(self) -> None:
        self.connected = True
        assert self.listener is not None
        self.listener.link_up()

    def down(self) -> None:
        self.connected = False
        assert self.listener is not None
        self.listener.link_down()

    def ack(self, mid: int, ok: bool = True) -> None:
        assert self.listener is not None
        self.listener.publish_done(mid, ok, "Success" if ok else "Not authorized")

    def seqs(self, since: int = 0) -> list[int]:
        return [seq_of(p) for _, _, p, _ in self.published[since:]]

    def hist_flags(self, since: int = 0) -> list[bool]:
        return [is_hist(p) for _, _, p, _ in self.published[since:]]


def test_window_bounds_inflight_and_rows_leave_only_on_puback(store: Store) -> None:
    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=8)
        pump.start()
        link.up()
        ledger = Ledger(store)
        for _ in range(10):
            ledger.commit()  # 40 rows, committed after the connection came up: live
        pump.notify()
        await settle()
        assert len(link.published) == 8 == pump.status().inflight
        # publish() returned for 8 rows, yet nothing is acknowledged: no PUBACK yet
        assert store.outbox_depth() == 40
        assert link.hist_flags() == [False] * 8
        # each hand-over is counted in the store, for diagnosing rows the broker keeps refusing
        assert [row.attempts for row in store.pending(10)] == [1] * 8 + [0] * 2

        for mid in (1, 2, 3):
            link.ack(mid)
        await settle()
        assert store.outbox_depth() == 37
        assert len(link.published) == 11
        assert pump.status().inflight == 8

        # acknowledge everything as it goes out; the window is never exceeded
        acked = 3
        while acked < len(link.published):
            acked += 1
            link.ack(acked)
            await settle()
            assert pump.status().inflight <= 8
        assert store.outbox_depth() == 0
        assert link.seqs() == list(range(1, 41))  # store order
        assert [p for _, _, p, _ in link.published] == [ledger.payloads[s] for s in range(1, 41)]
        status = pump.status()
        assert (status.acked, status.published, status.resent, status.max_inflight) == (
            40,
            40,
            0,
            8,
        )
        await pump.stop()

    run(main)


def test_acknowledgements_wake_the_pump_without_reading_an_exhausted_outbox(store: Store) -> None:
    """Once every lane was read to its end, PUBACKs alone cause no outbox query; a commit, a
    replay or a new connection does, and nothing committed meanwhile is missed."""

    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=64)
        reads: list[int] = []
        pending = store.pending

        def counted(limit: int, after: OutboxCursor | None = None) -> list[OutboxRow]:
            reads.append(limit)
            return pending(limit, after)

        store.pending = counted  # type: ignore[method-assign]
        pump.start()
        link.up()
        ledger = Ledger(store)
        for _ in range(5):
            ledger.commit()  # 20 rows
        pump.notify()
        await settle()
        assert len(link.published) == 20
        before = len(reads)
        for mid in range(1, 11):
            link.ack(mid)
            await settle()
        assert len(reads) == before  # ten wake-ups, no query
        ledger.commit()  # a commit moves the store's count: read again, and find the rows
        pump.notify()
        await settle()
        assert len(reads) == before + 1 and len(link.published) == 24
        link.down()
        link.up()  # a new connection starts from the lowest unacknowledged row again
        await settle()
        assert len(reads) > before + 1
        assert sorted(set(link.seqs())) == list(range(1, 25))
        await pump.stop()

    run(main)


def test_reconnect_resends_inflight_first_marked_hist_then_live_rows(store: Store) -> None:
    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=8)
        pump.start()
        link.up()
        ledger = Ledger(store)
        for _ in range(5):
            ledger.commit()  # seqs 1..20
        pump.notify()
        await settle()
        for mid in (1, 2, 3, 4):
            link.ack(mid)
        await settle()
        assert link.seqs() == list(range(1, 13))  # 1..4 acked, 5..12 in flight
        # PUBACK 5 is received, then the connection drops before the rest
        link.ack(5)
        link.down()
        assert pump.status().inflight == 0
        assert store.outbox_depth() == 15  # 6..20: the PUBACK before the drop was recorded
        ledger.commit()  # 21..24, committed while offline

        mark = len(link.published)
        link.up()
        await settle()
        assert link.seqs(mark) == list(range(6, 14))  # lowest unacknowledged first
        assert link.hist_flags(mark) == [True] * 8
        for (_, _, payload, _), seq in zip(link.published[mark:], range(6, 14), strict=True):
            assert payload == mark_hist(ledger.payloads[seq])
            assert decode_message(payload)["id"] == decode_message(ledger.payloads[seq])["id"]

        ledger.commit()  # 25..28: committed on this connection, live
        pump.notify()
        while store.outbox_depth():
            for mid, *_ in link.published[mark:]:
                link.ack(mid)
            mark = len(link.published)
            await settle()
        sent = link.seqs()
        flags = link.hist_flags()
        resent = [s for s, h in zip(sent, flags, strict=True) if h]
        assert resent == list(range(6, 25))  # in flight at the drop, or committed offline
        assert [s for s, h in zip(sent, flags, strict=True) if not h] == list(range(1, 13)) + [
            25,
            26,
            27,
            28,
        ]
        assert pump.status().resent == 19
        await pump.stop()

    run(main)


def test_negative_puback_keeps_the_row_for_the_next_connection(store: Store) -> None:
    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=4)
        pump.start()
        link.up()
        Ledger(store).commit(["m-001", "m-002"])
        pump.notify()
        await settle()
        link.ack(1, ok=False)
        link.ack(2)
        await settle()
        assert [r.seq for r in store.pending(10)] == [1]
        status = pump.status()
        assert status.rejected == 1 and "seq 1" in (status.last_error or "")
        link.down()
        link.up()
        await settle()
        assert link.seqs(2) == [1]
        link.ack(3)
        await settle()
        assert store.outbox_depth() == 0
        await pump.stop()

    run(main)


class FlakyAckStore(Store):
    """The real store, except that recording acknowledgements fails the first `failures` times
    (a full disk, say)."""

    failures = 1

    def mark_acked(self, seqs: Iterable[int], when_ms: int | None = None,
                   attempted: Iterable[int] = ()) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreFullError("disk full")  # what the store raises (sqlite errors translated)
        return super().mark_acked(seqs, when_ms, attempted)


def test_failed_ack_write_is_retried_not_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyAckStore.open(tmp_path / "flaky.db")
    assert isinstance(flaky, FlakyAckStore)
    flaky.failures = 3  # three retries a second apart
    caplog.set_level(logging.INFO, logger="gateway.uplink.outbox_pump")

    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(flaky, link, window=4)
        pump.start()
        link.up()
        Ledger(flaky).commit(["m-001"])
        pump.notify()
        await settle()
        link.ack(1)
        await settle()
        assert flaky.outbox_depth() == 1
        assert "acknowledgements failed" in (pump.status().last_error or "")
        assert await until(lambda: flaky.outbox_depth() == 0, 5)
        await pump.stop()
        # Three failures of the same kind: one line, no traceback; then one "working again".
        lines = [r for r in caplog.records if r.name == "gateway.uplink.outbox_pump"]
        assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO], caplog.text
        assert all(r.exc_info is None for r in lines)
        assert "working again after 3 failures" in lines[1].getMessage()

    run(main)


def test_pump_started_after_the_connection_is_up(store: Store) -> None:
    async def main() -> None:
        link = ScriptedLink(connected=True)
        Ledger(store).commit(["m-001"])
        pump = OutboxPump(store, link, window=4)
        pump.start()
        await settle()
        assert link.seqs() == [1]
        assert link.hist_flags() == [True]  # committed before this connection: backlog
        await pump.stop(drain_timeout=0.1)

    run(main)


def test_rows_committed_without_a_notify_go_out_within_idle_poll(store: Store) -> None:
    """The safety net: a commit whose notify() was lost is published within idle_poll_s, and
    again on each later period; the timer goes with the pump."""

    async def main() -> None:
        link = ScriptedLink(connected=True)
        pump = OutboxPump(store, link, window=8, idle_poll_s=0.1)
        pump.start()
        await settle()
        ledger = Ledger(store)
        for round_ in range(2):
            seqs = ledger.commit(["m-001"])  # no notify()
            await asyncio.sleep(0.02)
            assert link.seqs()[round_:] == []

            def published(since: int = round_, expected: list[int] = seqs) -> bool:
                return link.seqs()[since:] == expected

            assert await until(published, 1.0)
        await pump.stop(drain_timeout=0.1)
        assert pump._nudge_handle is None

    run(main)


def test_alarms_overtake_the_backlog_within_one_window(store: Store) -> None:
    """Alarms and command results go in the priority lane: each free slot of the window takes
    the lowest unsent priority row first, so an alarm waits for the rows already in flight, not
    for the backlog; each lane keeps its seq order, resends after a drop included."""

    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=4)
        pump.start()
        ledger = Ledger(store)
        for _ in range(5):
            ledger.commit()  # 1..20: reads committed while the link is down
        assert store.enqueue(alarm_message(store, "a1")) == 21
        link.up()
        await settle()
        assert link.seqs() == [21, 1, 2, 3]  # the alarm first, backlog behind it
        assert link.hist_flags() == [True] * 4  # both committed before the connection
        link.ack(1)
        link.ack(2)
        await settle()
        assert link.seqs(4) == [4, 5]
        # an alarm and a command result committed on this connection: live, and next
        assert store.enqueue(alarm_message(store, "a2")) == 22
        signed = b"\xd2\x84\x40\xa0\x40\x40"  # a COSE_Sign1 (tag 18), as results are
        assert store.enqueue(OutboxMessage(
            topic=f"{PREFIX}/{GW}/cmd/result", qos=1, build=lambda seq: signed)) == 23
        pump.notify()
        await settle()
        assert link.seqs(6) == []  # the window is full: nothing is pre-empted
        link.ack(3)
        await settle()
        assert [topic.rsplit("/", 1)[1] for _, topic, _, _ in link.published[6:]] == ["alarms"]
        link.ack(4)
        await settle()
        assert link.published[7][1:3] == (f"{PREFIX}/{GW}/cmd/result", signed)
        assert not is_hist(link.published[6][2])
        # a drop: each lane starts again from its lowest unacknowledged row
        link.down()
        mark = len(link.published)
        link.up()
        await settle()
        assert seq_of(link.published[mark][2]) == 22
        assert link.published[mark + 1][1:3] == (f"{PREFIX}/{GW}/cmd/result", signed)
        assert "/reads/" in link.published[mark + 2][1]
        while store.outbox_depth():
            for mid, *_ in link.published[mark:]:
                link.ack(mid)
            mark = len(link.published)
            await settle()
        reads = [seq_of(p) for _, t, p, _ in link.published if "/reads/" in t]
        firsts = list(dict.fromkeys(reads))
        assert firsts == sorted(firsts) and set(firsts) == set(range(1, 21))
        await pump.stop()

    run(main)


def test_stop_waits_for_inflight_acknowledgements(store: Store) -> None:
    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=4)
        pump.start()
        link.up()
        Ledger(store).commit(["m-001", "m-002"])
        pump.notify()
        await settle()
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, link.ack, 1)
        loop.call_later(0.3, link.ack, 2)
        started = time.monotonic()
        await pump.stop(drain_timeout=5)
        assert time.monotonic() - started < 2
        assert store.outbox_depth() == 0

    run(main)


# --------------------------------------------------------------------------------------------
# End to end: real store, real broker, a subscriber's view
# --------------------------------------------------------------------------------------------


class Gateway:
    """The MQTT half of the daemon, as the daemon wires it: store -> pump -> link."""

    def __init__(
        self,
        store: Store,
        broker: MosquittoBroker | Endpoint,
        *,
        window: int = 16,
        keepalive_s: int = 2,
        protocol: Literal["5", "3.1.1"] = "5",
    ) -> None:
        self.store = store
        settings = LinkSettings(
            host=broker.host,
            port=broker.port,
            client_id=GW,
            topic_prefix=PREFIX,
            protocol=protocol,
            keepalive_s=keepalive_s,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
            connect_timeout_s=2.0,
            inflight_window=window,
        )
        state = GatewayStateMessages(
            GW, "0.1.0-test", "cd" * 32, METERS, position=lambda: (store.epoch, store.last_seq)
        )
        self.link = MqttLink(settings, state=state, next_bdseq=store.next_bdseq)
        self.pump = OutboxPump(store, self.link, window=window)

    async def start(self) -> None:
        await self.link.start()
        self.pump.start()

    async def stop(self) -> None:
        await self.pump.stop(drain_timeout=5)
        await self.link.stop()


def reads_received(observer: Observer) -> list[bytes]:
    return [p for _, p, _ in observer.messages(f"{PREFIX}/{GW}/reads/")]


def check_delivery(ledger: Ledger, observer: Observer) -> dict[str, int]:
    """Every committed row reached the subscriber, byte-exact (as stored, or as stored plus
    `hist: true`), and each meter's rows first arrived in commit order."""
    copies: dict[int, list[bytes]] = {}
    first_order: dict[str, list[int]] = {}
    for _, payload, _ in observer.messages(f"{PREFIX}/{GW}/reads/"):
        seq = seq_of(payload)
        stored = ledger.payloads[seq]
        assert payload in (stored, mark_hist(stored)), f"seq {seq}: payload altered"
        if seq not in copies:
            first_order.setdefault(ledger.meter_of[seq], []).append(seq)
        copies.setdefault(seq, []).append(payload)
    missing = sorted(set(ledger.payloads) - set(copies))
    assert not missing, f"lost rows: {missing[:20]} ({len(missing)} in all)"
    for meter, seqs in first_order.items():
        assert seqs == sorted(seqs), f"{meter}: out of order"
    return {
        "rows": len(ledger.payloads),
        "duplicates": sum(len(c) - 1 for c in copies.values()),
        "hist_copies": sum(1 for c in copies.values() for p in c if is_hist(p)),
    }


async def produce(
    ledger: Ledger, pump: OutboxPump, stop: asyncio.Event, period: float = 0.05
) -> int:
    cycles = 0
    while not stop.is_set():
        ledger.commit()
        pump.notify()
        cycles += 1
        await asyncio.sleep(period)
    return cycles


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_all_rows_delivered_and_acked(
    mosquitto: MosquittoBroker, store: Store, protocol: Literal["5", "3.1.1"]
) -> None:
    async def main() -> None:
        with Observer(mosquitto, f"{PREFIX}/{GW}/#") as observer:
            gw = Gateway(store, mosquitto, window=16, protocol=protocol)
            ledger = Ledger(store)
            await gw.start()
            try:
                assert await gw.link.wait_connected(5)
                for _ in range(100):
                    ledger.commit()  # 400 rows
                    gw.pump.notify()
                    await asyncio.sleep(0)
                assert await until(lambda: store.outbox_depth() == 0, 15)
                assert await until(lambda: len(reads_received(observer)) >= 400, 5)
            finally:
                await gw.stop()
            result = check_delivery(ledger, observer)
            assert result["duplicates"] == 0 and result["hist_copies"] == 0
            status = gw.pump.status()
            assert status.acked == 400 and status.max_inflight <= 16

    run(main)


def test_broker_restart_loses_nothing_and_resends_carry_hist(
    mosquitto: MosquittoBroker, store: Store
) -> None:
    async def main() -> None:
        with Observer(mosquitto, f"{PREFIX}/{GW}/#") as observer:
            gw = Gateway(store, mosquitto, window=16)
            ledger = Ledger(store)
            await gw.start()
            stop = asyncio.Event()
            try:
                assert await gw.link.wait_connected(5)
                producer = asyncio.create_task(produce(ledger, gw.pump, stop))
                await asyncio.sleep(1.0)
                await asyncio.to_thread(mosquitto.stop)
                down_at_seq = store.last_seq
                await asyncio.sleep(6.0)  # the poll cycles go on while the broker is away
                assert not gw.link.connected
                await asyncio.to_thread(mosquitto.start)
                assert await gw.link.wait_connected(5)
                await asyncio.sleep(1.0)
                stop.set()
                await producer
                assert await until(lambda: store.outbox_depth() == 0, 15)
                assert await until(
                    lambda: {seq_of(p) for p in reads_received(observer)} >= set(ledger.payloads),
                    10,
                )
            finally:
                stop.set()
                await gw.stop()
            result = check_delivery(ledger, observer)
            # rows committed during the outage can only have gone out after it, as backlog
            offline = [s for s in ledger.payloads if down_at_seq < s <= down_at_seq + 20]
            hist_seqs = {seq_of(p) for p in reads_received(observer) if is_hist(p)}
            assert set(offline) <= hist_seqs
            assert result["hist_copies"] >= gw.pump.status().resent > 0
            assert gw.link.status().connection_losses == 1

    run(main)


def test_frozen_then_killed_broker_loses_nothing(mosquitto: MosquittoBroker, store: Store) -> None:
    window, keepalive = 8, 2

    async def main() -> None:
        with Observer(mosquitto, f"{PREFIX}/{GW}/#") as observer:
            gw = Gateway(store, mosquitto, window=window, keepalive_s=keepalive)
            ledger = Ledger(store)
            await gw.start()
            stop = asyncio.Event()
            try:
                assert await gw.link.wait_connected(5)
                producer = asyncio.create_task(produce(ledger, gw.pump, stop))
                # SIGKILL loses whatever mosquitto did not save: let it save the observer's
                # session first, or the test would measure the broker's durability, not ours.
                await asyncio.to_thread(mosquitto.wait_saved)
                await asyncio.sleep(0.5)
                mosquitto.freeze()
                frozen_at = time.monotonic()
                # PUBACKs stop: the window fills and stays full, never more
                assert await until(lambda: gw.pump.status().inflight == window, 2)
                in_flight_at_freeze = [r.seq for r in store.pending(window)]
                samples = []
                detected = None
                while time.monotonic() < frozen_at + 3 * keepalive:
                    samples.append(gw.pump.status().inflight)
                    if detected is None and not gw.link.connected:
                        detected = time.monotonic() - frozen_at
                    await asyncio.sleep(0.05)
                assert max(samples) <= window
                # the silent link was noticed without any help from the broker
                assert detected is not None and detected <= 1.5 * keepalive + keepalive / 4 + 0.5
                await asyncio.to_thread(mosquitto.kill)
                await asyncio.to_thread(mosquitto.start)
                assert await gw.link.wait_connected(5)
                await asyncio.sleep(0.5)
                stop.set()
                await producer
                assert await until(lambda: store.outbox_depth() == 0, 15)
                assert await until(
                    lambda: {seq_of(p) for p in reads_received(observer)} >= set(ledger.payloads),
                    10,
                )
            finally:
                stop.set()
                await gw.stop()
            check_delivery(ledger, observer)
            hist_seqs = {seq_of(p) for p in reads_received(observer) if is_hist(p)}
            # the rows in flight when the broker froze were sent again, marked as history
            assert set(in_flight_at_freeze) <= hist_seqs
            assert gw.pump.status().max_inflight <= window

    run(main)


DAEMON = r"""
import asyncio, sys
from pathlib import Path
from tests.test_outbox_pump import Gateway, Ledger
from tests.broker import Endpoint
from gateway.store import Store

async def main():
    port, db = int(sys.argv[1]), Path(sys.argv[2])
    store = Store.open(db)
    gw = Gateway(store, Endpoint("127.0.0.1", port), window=8, keepalive_s=30)
    await gw.start()
    if not await gw.link.wait_connected(10):
        sys.exit("no connection")
    print("up", gw.link.status().bdseq, flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the broker is frozen now
    ledger = Ledger(store)
    for _ in range(10):
        ledger.commit()
    gw.pump.notify()
    while gw.pump.status().inflight < 8:
        await asyncio.sleep(0.01)
    print("inflight", gw.pump.status().inflight, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def test_daemon_killed_with_rows_in_flight_resends_them_after_restart(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    db = tmp_path / "daemon.db"
    with Observer(mosquitto, f"{PREFIX}/{GW}/#") as observer:
        child = subprocess.Popen(
            [sys.executable, "-c", DAEMON, str(mosquitto.port), str(db)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            tag, bdseq = child.stdout.readline().split()
            assert tag == "up"
            mosquitto.freeze()
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().split() == ["inflight", "8"]
            os.kill(child.pid, signal.SIGKILL)  # kill -9 with 8 rows in flight
            child.wait(5)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            mosquitto.thaw()

        store = Store.open(db)
        assert store.outbox_depth() == 40  # nothing was acknowledged
        stored = {row.seq: row.payload for row in store.pending(100)}
        assert all(row.attempts >= 1 for row in store.pending(8))

        async def main() -> None:
            gw = Gateway(store, mosquitto, window=8)
            await gw.start()
            try:
                assert await gw.link.wait_connected(5)
                assert gw.link.status().bdseq == int(bdseq) + 1  # persisted in the store
                assert await until(lambda: store.outbox_depth() == 0, 10)
                assert await until(lambda: len(reads_received(observer)) >= 40, 5)
            finally:
                await gw.stop()

        run(main)

    received = {seq_of(p): p for p in reads_received(observer)}
    assert set(received) == set(stored)
    # the broker never saw them before (it was frozen), and after the restart they are backlog
    assert all(received[seq] == mark_hist(stored[seq]) for seq in stored)
    states = [decode_message(p) for _, p, _ in observer.messages(f"{PREFIX}/{GW}/state")]
    wills = [m for m in states if m["online"] is False]
    assert wills and wills[0]["bdseq"] == int(bdseq)


def test_alarm_overtakes_a_read_backlog_after_a_broker_outage(
    mosquitto: MosquittoBroker, store: Store
) -> None:
    """The consumer's view of the priority lane: 5,000 reads committed while the broker is
    down, then an alarm, then the broker comes back. The alarm reaches the subscriber before the
    backlog's last message — first of all, in fact, where strict seq order had put it behind all
    5,000 — and a second alarm raised while the backlog drains is the very next row handed to
    the link. Nothing is lost and each meter's reads keep their order. (bench/
    bench_alarm_priority.py measures the same with 50,000.)"""
    backlog, window = 5_000, 16
    meters = tuple(f"m-{k:03d}" for k in range(500))

    async def main() -> None:
        with Observer(mosquitto, f"{PREFIX}/{GW}/#") as observer:
            gw = Gateway(store, mosquitto, window=window)
            handed: list[str] = []
            publish = gw.link.publish

            def recording(topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
                mid = publish(topic, payload, qos, retain)
                if mid is not None:
                    handed.append(topic)
                return mid

            gw.link.publish = recording  # type: ignore[method-assign]
            ledger = Ledger(store)
            await gw.start()
            try:
                assert await gw.link.wait_connected(5)
                await asyncio.to_thread(mosquitto.stop)
                assert await until(lambda: not gw.link.connected, 5)
                for _ in range(backlog // len(meters)):
                    ledger.commit(meters)  # 500 rows per transaction, as a coalesced cycle
                first_alarm = store.enqueue(alarm_message(store, "during-outage"))
                assert first_alarm == backlog + 1
                await asyncio.to_thread(mosquitto.start)
                assert await gw.link.wait_connected(10)
                # a second alarm while the backlog drains
                assert await until(lambda: handed.count(f"{PREFIX}/{GW}/alarms") == 1, 5)
                assert await until(lambda: len(handed) >= 1_000, 10, step=0.001)
                handed_before = len(handed)
                second_alarm = store.enqueue(alarm_message(store, "during-drain"))
                gw.pump.notify()
                assert await until(lambda: store.outbox_depth() == 0, 30)
                assert await until(lambda: len(reads_received(observer)) >= backlog, 10)
                assert await until(
                    lambda: len(observer.messages(f"{PREFIX}/{GW}/alarms")) >= 2, 5)
            finally:
                await gw.stop()
        # the link's view: the next free slot after the commit went to the alarm
        assert handed.index(f"{PREFIX}/{GW}/alarms", handed_before) == handed_before
        # the subscriber's view
        arrived = [(topic, seq_of(p)) for topic, p, _ in observer.messages(f"{PREFIX}/{GW}/")
                   if not topic.endswith("/state")]
        alarms_at = [i for i, (topic, _) in enumerate(arrived) if topic.endswith("/alarms")]
        assert [arrived[i][1] for i in alarms_at] == [first_alarm, second_alarm]
        reads_before_first = alarms_at[0]
        reads_before_second = alarms_at[1] - 1
        assert reads_before_first <= window, reads_before_first
        assert reads_before_second < backlog
        last_read_at = max(i for i, (topic, _) in enumerate(arrived) if "/reads/" in topic)
        assert alarms_at[1] < last_read_at
        result = check_delivery(ledger, observer)
        assert result["rows"] == backlog

    run(main)


def test_replayed_rows_go_out_again_marked_hist_once_each(store: Store) -> None:
    """Rows a consumer asked for again (Store.requeue, the replay command) are sent with their
    stored payload plus hist, even though committed on this very connection; a second replay
    below the lane's cursor is still served, and a row queued again while in flight is not
    sent twice."""
    async def main() -> None:
        link = ScriptedLink()
        pump = OutboxPump(store, link, window=4)
        pump.start()
        link.up()
        ledger = Ledger(store)
        ledger.commit()
        ledger.commit()  # seqs 1..8, live on this connection
        pump.notify()
        while len(link.published) < 8 or pump.status().inflight:
            for mid, *_ in link.published:
                link.ack(mid)
            await settle()
        pump._flush_acks()
        assert store.outbox_depth() == 0 and link.hist_flags() == [False] * 8

        store.requeue(5, 7)
        pump.notify()
        await settle()
        assert link.seqs(8) == [5, 6, 7] and link.hist_flags(8) == [True] * 3
        assert [p for _, _, p, _ in link.published[8:]] == [
            mark_hist(ledger.payloads[s]) for s in (5, 6, 7)]
        # 5..7 in flight; a replay of 2..6 rewinds the lane below its cursor: 2..4 go out,
        # 5 and 6 (still in flight) do not go out twice.
        store.requeue(2, 6)
        pump.notify()
        await settle()
        assert link.seqs(11) == [2]  # the window (4) is full: 5, 6, 7 and 2 in flight
        for mid in range(9, 13):
            link.ack(mid)
        await settle()
        assert link.seqs(11) == [2, 3, 4]
        for mid in (13, 14):
            link.ack(mid)
        await settle()
        pump._flush_acks()
        assert store.outbox_depth() == 0
        assert len(link.published) == 14
        assert pump.status().resent == 6
        await pump.stop()

    run(main)
