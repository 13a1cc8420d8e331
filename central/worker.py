"""One consumer worker: a member of the shared subscription, storing batches, chasing gaps.

Any number of workers run with the same ``share_group``, on one machine or many; the broker
hands each message to one of them (MQTT 5 shared subscriptions, ``$share/<group>/<filter>``).
What keeps that safe is in the database, not in the worker: dedupe, corrections and gap
bookkeeping happen in one transaction per batch (:mod:`central.storage.ingest`), and the worker
acknowledges a batch's messages (``manual_ack``) only after that transaction commits. A worker
killed mid-batch has acknowledged nothing of it, and its persistent session (``--worker`` names
it; ``session_expiry_s`` keeps it) gets the messages again when it comes back.

The state topic is subscribed to outside the share, by every worker: births are retained, and a
broker does not send retained messages to shared subscriptions. Births carry the payload v2
alias bindings; a batch's births are decoded before its reads, and a v2 read whose binding no
birth has declared yet is parked in the database and released when one does
(:mod:`central.storage.bindings`).

Threads: paho's network thread only queues messages; this thread decodes, stores, acknowledges,
scans for gaps every ``gap_scan_interval_s`` and publishes replay commands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from central.config import CentralConfig
from central.decoding import BirthIn, Decoder, Inbound, InboundError
from central.errors import StorageError
from central.paho_tuning import share_property_tables
from central.replay import build_replay
from central.storage.bindings import load_bindings, parked_streams
from central.storage.database import Database
from central.storage.gaps import claim_replays, record_replay, scan_gaps
from central.storage.ingest import epoch_text, ingest, release
from protocols.commands import EnvelopeError
from protocols.payload import Binding

__all__ = ["Worker", "WorkerStats", "subscriptions"]

log = logging.getLogger("edge-central")

#: Topic kinds a worker consumes through the share (DESIGN §4), below ``P/+/``.
_SHARED_FILTERS = ("reads/+", "groups/+", "alarms", "health", "cmd/result")
_STORAGE_RETRY_S = 2.0


def subscriptions(config: CentralConfig) -> list[str]:
    """The topic filters one worker subscribes to."""
    p, group = config.mqtt.topic_prefix, config.mqtt.share_group
    return [f"$share/{group}/{p}/+/{f}" for f in _SHARED_FILTERS] + [f"{p}/+/state"]


@dataclass
class WorkerStats:
    """Counters a worker logs when it stops (and tests read)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    values: int = 0
    gaps_found: int = 0
    gaps_filled: int = 0
    replays_sent: int = 0
    parked: int = 0
    released: int = 0


class Worker:
    """Runs until :meth:`stop` (or a signal handler calling it)."""

    def __init__(self, config: CentralConfig, name: str, db: Database) -> None:
        self.config = config
        self.name = name
        self.db = db
        self.stats = WorkerStats()
        self.decoder = Decoder(config.mqtt.topic_prefix, config.result_keys, self._bindings)
        # Bounded: a worker facing a backlog holds at most two batches. A broker that sends
        # beyond the receive maximum (mosquitto 2.0 to shared subscribers, measured by
        # bench/bench_central_mqtt.py) then waits on TCP instead of filling this process.
        self._inbox: queue.Queue[Any] = queue.Queue(maxsize=2 * config.batch_max)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._client = self._make_client()

    @property
    def client_id(self) -> str:
        return f"edge-central-{self.config.mqtt.share_group}-{self.name}"

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        share_property_tables()  # paho rebuilt constant tables per PUBLISH received
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        client.reconnect_delay_set(1, 10)
        tls = self.config.mqtt.tls
        if tls is not None:  # the files were loaded once already when the config was read
            client.tls_set(ca_certs=None if tls.ca_file is None else str(tls.ca_file),
                           certfile=None if tls.cert_file is None else str(tls.cert_file),
                           keyfile=None if tls.key_file is None else str(tls.key_file))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        from paho.mqtt.subscribeoptions import SubscribeOptions

        client.subscribe([(f, SubscribeOptions(qos=1)) for f in subscriptions(self.config)])
        self._connected.set()
        log.info("worker %s connected (session present: %s)", self.name,
                 getattr(flags, "session_present", None))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """Hand ``msg`` to the storing thread, waiting while the inbox is full (paho's network
        thread stops reading meanwhile). Stopping drops it unacknowledged: the broker keeps it
        for this worker's session."""
        while not self._stop.is_set():
            try:
                self._inbox.put(msg, timeout=0.5)
                return
            except queue.Full:
                continue

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("worker %s lost the broker (%s); reconnecting", self.name, reason)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> WorkerStats:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        mq = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = mq.session_expiry_s
        # Ack-after-commit bounds what the broker sends ahead: two batches in flight, so the
        # next batch arrives while this one is stored (with one, a worker idled between
        # batches: bench_central_mqtt, docs/performance.md); the inbox holds the same two.
        props.ReceiveMaximum = min(2 * self.config.batch_max, 65535)
        self._client.connect_async(mq.host, mq.port, keepalive=mq.keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        next_scan = time.monotonic() + self.config.gap_scan_interval_s
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if batch:
                    self._store(batch)
                if time.monotonic() >= next_scan:
                    self._chase_gaps()
                    next_scan = time.monotonic() + self.config.gap_scan_interval_s
        finally:
            self._client.disconnect()
            self._client.loop_stop()
        return self.stats

    def _take_batch(self) -> list[Any]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_ms / 1000
        while len(batch) < self.config.batch_max:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._inbox.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _store(self, batch: list[Any]) -> None:
        decoded: list[Inbound] = []
        # Births first: the reads of the same batch may name the bindings they declare.
        state = f"{self.config.mqtt.topic_prefix}/"
        ordered = sorted(batch, key=lambda m: not (m.topic.startswith(state)
                                                   and m.topic.endswith("/state")))
        for msg in ordered:
            self.stats.received += 1
            try:
                decoded.append(self.decoder.decode(msg.topic, bytes(msg.payload)))
            except InboundError as exc:
                self.stats.rejected += 1
                log.warning("rejected: %s", exc)
        while not self._stop.is_set():
            try:
                report = ingest(self.db, decoded, _now_ms())
                break
            except StorageError as exc:
                # Nothing acknowledged, nothing lost: the broker keeps the messages in flight.
                log.error("%s; retrying in %.0f s", exc, _STORAGE_RETRY_S)
                self._stop.wait(_STORAGE_RETRY_S)
        else:
            return  # stopping without a commit: the messages stay unacknowledged
        self.stats.stored += report.stored
        self.stats.duplicates += report.duplicates
        self.stats.values += report.values
        self.stats.gaps_filled += report.gaps_filled
        self.stats.parked += report.parked
        if report.parked:
            log.warning("parked %d v2 reads message(s) until a birth declares their binding",
                        report.parked)
        births = {(m.gw, epoch_text(m.aliases_epoch)) for m in decoded
                  if isinstance(m, BirthIn) and m.aliases_epoch is not None}
        if births:
            try:
                self._release(sorted(births))
            except StorageError as exc:  # the next gap scan tries again
                log.error("releasing parked reads: %s", exc)
        for cmd, (status, reason) in report.results.items():
            log.info("replay %s: %s %s", cmd, status, reason)
        for msg in batch:
            if msg.qos > 0:
                self._client.ack(msg.mid, msg.qos)

    def _bindings(self, gw: str, epoch: int) -> list[Binding]:
        """The shared bindings table's entries for a stream; none while it cannot be read (the
        message is then parked, and storing that retries until the database answers)."""
        try:
            return load_bindings(self.db, gw, epoch)
        except (StorageError, InboundError) as exc:
            log.error("alias bindings of %s: %s", gw, exc)
            return []

    def _release(self, streams: list[tuple[str, str]]) -> None:
        """Store the parked reads of ``streams`` that have become decodable."""
        for gw, epoch in streams:
            values, rejected = release(self.db, gw, epoch, self.decoder.decode, _now_ms())
            self.stats.released += values
            self.stats.values += values
            self.stats.rejected += len(rejected)
            for line in rejected:
                log.warning("rejected: %s", line)

    def _chase_gaps(self) -> None:
        now = _now_ms()
        try:
            self._release(parked_streams(self.db))
            found = scan_gaps(self.db, now, int(self.config.gap_grace_s * 1000))
            for gw, epoch, lo, hi in found:
                log.warning("gap: %s epoch %016x seq %d..%d", gw, epoch, lo, hi)
            self.stats.gaps_found += len(found)
            replay = self.config.replay
            if replay is None or not self._connected.is_set():
                return
            claims = claim_replays(self.db, now, int(replay.min_interval_s * 1000),
                                   int(replay.retry_s * 1000), f"replay:{replay.kid}")
            for claim in claims:
                try:
                    command = build_replay(claim, replay, self.config.mqtt.topic_prefix,
                                           now // 1000)
                except EnvelopeError as exc:
                    record_replay(self.db, f"unsent-{claim.gw}-{claim.ctr}", claim, now,
                                  "unsent", str(exc))
                    log.error("cannot ask %s for a replay: %s", claim.gw, exc)
                    continue
                # Recorded first: a result that beats the bookkeeping must find its request.
                record_replay(self.db, command.cmd, claim, now)
                self._client.publish(command.topic, command.payload, qos=1)
                self.stats.replays_sent += 1
                log.info("asked %s to replay epoch %016x seq %d..%d (cmd %s)", claim.gw,
                         claim.epoch, claim.from_seq, claim.to_seq, command.cmd)
        except StorageError as exc:
            log.error("gap scan: %s", exc)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
