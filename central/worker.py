"""One consumer worker: stores batches of what its source delivers, chases gaps.

Any number of workers run with the same configuration, on one machine or many; the broker hands
each message to one of them — an MQTT 5 shared subscription or a RabbitMQ queue, whichever
``[source] kind`` names (:mod:`central.sources`, which owns everything broker-specific). What
keeps that safe is in the database, not in the worker: dedupe, corrections and gap bookkeeping
happen in one transaction per batch (:mod:`central.storage.ingest`), and the worker tells its
source to acknowledge a batch only after that transaction commits. A worker killed mid-batch
has acknowledged nothing of it, and the broker delivers it again.

Births carry the payload v2 alias bindings; a batch's births are decoded before its reads, and a
v2 read whose binding no birth has declared yet is parked in the database and released when one
does (:mod:`central.storage.bindings`).

Two threads, so that decoding overlaps storing. The worker's thread does everything that talks
to the source (take, acknowledge, publish) and decodes; a store thread runs one batch's
transaction at a time. While batch N is being stored (psycopg waits for PostgreSQL without the
GIL), batch N+1 is taken and decoded; then the worker waits for N's commit, acknowledges N, and
hands N+1 to the store thread — acknowledgements stay strictly after their batch's commit and in
order. Anything else that needs the database connection (a binding lookup while decoding,
releasing parked reads, the gap scan) waits for the batch in flight first, so the connection is
used by one thread at a time, in the same order as one thread would. (Measured: docs/performance.md,
issue 15.)
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from central.config import CentralConfig
from central.decoding import BirthIn, Decoder, Inbound, InboundError
from central.errors import StorageError
from central.replay import build_replay
from central.sources import Delivery, Source, make_source
from central.sources.mqtt import subscriptions
from central.storage.bindings import load_bindings, parked_streams
from central.storage.database import Database
from central.storage.gaps import claim_replays, record_replay, scan_gaps
from central.storage.ingest import IngestReport, epoch_text, ingest, release
from protocols.commands import EnvelopeError
from protocols.payload import Binding

__all__ = ["Worker", "WorkerStats", "subscriptions"]

log = logging.getLogger("edge-central")

_STORAGE_RETRY_S = 2.0


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
    """Runs until :meth:`stop` (or a signal handler calling it). ``source`` defaults to the one
    the configuration names."""

    def __init__(self, config: CentralConfig, name: str, db: Database,
                 source: Source | None = None) -> None:
        self.config = config
        self.name = name
        self.db = db
        self.stats = WorkerStats()
        self.decoder = Decoder(config.mqtt.topic_prefix, config.result_keys, self._bindings)
        self._stop = threading.Event()
        self.source = source if source is not None else make_source(config, name, self._stop)
        #: The batch the store thread holds: its deliveries, what they decoded to, its commit.
        self._inflight: tuple[list[Delivery], list[Inbound], Future[IngestReport | None]] | None \
            = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> WorkerStats:
        self.source.start()
        next_scan = time.monotonic() + self.config.gap_scan_interval_s
        with ThreadPoolExecutor(1, thread_name_prefix=f"store-{self.name}") as store:
            try:
                while not self._stop.is_set():
                    batch = self.source.take(self.config.batch_max,
                                             self.config.batch_wait_ms / 1000)
                    decoded = self._decode(batch)  # meanwhile the batch before is stored
                    self._finish()
                    if batch:
                        self._inflight = (batch, decoded, store.submit(self._commit, decoded))
                    if time.monotonic() >= next_scan:
                        self._finish()  # the scan uses the connection
                        self._chase_gaps()
                        next_scan = time.monotonic() + self.config.gap_scan_interval_s
                self._finish()
            finally:
                self._stop.set()  # a commit still retrying gives up, unacknowledged
                store.shutdown(wait=True)
                self.source.close()
        return self.stats

    def _decode(self, batch: list[Delivery]) -> list[Inbound]:
        decoded: list[Inbound] = []
        # Births first: the reads of the same batch may name the bindings they declare.
        state = f"{self.config.mqtt.topic_prefix}/"
        ordered = sorted(batch, key=lambda m: not (m.topic.startswith(state)
                                                   and m.topic.endswith("/state")))
        for msg in ordered:
            self.stats.received += 1
            try:
                decoded.append(self.decoder.decode(msg.topic, msg.payload))
            except InboundError as exc:
                self.stats.rejected += 1
                log.warning("rejected: %s", exc)
        return decoded

    def _commit(self, decoded: list[Inbound]) -> IngestReport | None:
        """The store thread's part: one batch's transaction, retried while the database is
        unavailable. A batch handed over is tried at least once even when the worker is
        stopping (the worker thread may have taken the next one meanwhile); None when it gave
        up without a commit."""
        while True:
            try:
                return ingest(self.db, decoded, _now_ms())
            except StorageError as exc:
                # Nothing acknowledged, nothing lost: the broker keeps the messages in flight.
                log.error("%s; retrying in %.0f s", exc, _STORAGE_RETRY_S)
                if self._stop.wait(_STORAGE_RETRY_S):
                    return None

    def _settle(self) -> None:
        """Wait until the batch in flight, if any, has committed (or given up)."""
        if self._inflight is not None:
            self._inflight[2].exception()

    def _finish(self) -> None:
        """Wait for the batch in flight; count it, release what its births unpark, acknowledge
        it. Not acknowledged when it did not commit (stopping)."""
        if self._inflight is None:
            return
        batch, decoded, future = self._inflight
        try:
            report = future.result()
        finally:
            self._inflight = None
        if report is None:
            return
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
        self.source.ack(batch)

    def _bindings(self, gw: str, epoch: int) -> list[Binding]:
        """The shared bindings table's entries for a stream; none while it cannot be read (the
        message is then parked, and storing that retries until the database answers)."""
        self._settle()  # the connection is the store thread's while a batch is in flight
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
            if replay is None or not self.source.connected:
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
                if not self.source.publish(command.topic, command.payload):
                    log.warning("replay command %s to %s not sent (broker unavailable); "
                                "asked again after replay.retry_s", command.cmd, claim.gw)
                    continue
                self.stats.replays_sent += 1
                log.info("asked %s to replay epoch %016x seq %d..%d (cmd %s)", claim.gw,
                         claim.epoch, claim.from_seq, claim.to_seq, command.cmd)
        except StorageError as exc:
            log.error("gap scan: %s", exc)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
