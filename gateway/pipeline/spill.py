"""Messages held in memory at a stop are written to a spill file, and committed at the next start.

Why: with the store failing (disk full, filesystem read-only) polls are held in memory
(:class:`~gateway.store.HoldingQueue`). A clean stop must not throw them away while saying
"stopped cleanly". At stop the daemon tries the store once more, then writes what is held to a
spill file in ``[store] spill_dir`` — a second location such as a tmpfs (``/run``) or another
partition — and the next start commits the spill into the store before anything else.

Each message is built with the seq it would have had in the store (``last_seq + 1 ...``), so
its id and seq are the ones the store will give it when the spill is adopted at the next start
(nothing is committed before that). The file is written to a temporary name, fsynced and renamed:
a crash while spilling leaves either the whole spill or none of it. Reads spilled this way reach
MQTT but not the store's local reads table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cbor2

from gateway.pipeline.outbox import AlarmTransition
from gateway.store import Store
from gateway.store.errors import StoreError
from gateway.store.files import write_atomically
from gateway.store.records import OutboxMessage, OutboxRow

log = logging.getLogger(__name__)

SPILL_GLOB = "spill-*.cbor"
FORMAT = 1


class SpillError(StoreError):
    """A spill file could not be written or read back."""


@dataclass(frozen=True, slots=True)
class SpillResult:
    path: Path
    messages: int


def spill(items: list[tuple[OutboxMessage, AlarmTransition | None]], spill_dir: Path, *,
          epoch: int, last_seq: int, now_ms: int) -> SpillResult:
    """Write held messages (oldest first; an alarm event with its state change) to a new spill
    file in ``spill_dir``."""
    rows: list[list[object]] = []
    for i, (message, change) in enumerate(items, start=1):
        alarm = None if change is None else [change.key, change.kind, change.state,
                                             change.details, change.t_ms]
        rows.append([message.topic, message.qos, message.build(last_seq + i), alarm])
    document = {"v": FORMAT, "epoch": epoch, "base_seq": last_seq, "rows": rows}
    path = spill_dir / f"spill-{epoch:016x}-{last_seq:012d}-{now_ms}.cbor"
    try:
        spill_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, cbor2.dumps(document))
    except OSError as exc:
        raise SpillError(f"cannot write a spill file in {spill_dir}: {exc.strerror or exc}") \
            from None
    return SpillResult(path, len(rows))


def adopt_spills(store: Store, spill_dir: Path, *, now_ms: int) -> int:
    """Commit every spill file found in ``spill_dir`` into ``store`` (oldest first) and delete
    it; returns the messages adopted. A spill whose seqs the store has moved past (something was
    committed first) is left in place with an error: adopting it would repeat message ids."""
    if not spill_dir.is_dir():
        return 0
    adopted = 0
    for path in sorted(spill_dir.glob(SPILL_GLOB)):
        try:
            document = cbor2.loads(path.read_bytes())
            epoch, base, rows = document["epoch"], document["base_seq"], document["rows"]
        except (OSError, ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as exc:
            log.error("spill file %s is unreadable (%s); left in place", path, exc)
            continue
        if not isinstance(rows, list) or not all(_row_ok(r) for r in rows):
            log.error("spill file %s has rows that are not [topic, qos, payload, alarm]; left "
                      "in place", path)
            continue
        if epoch == store.epoch and store.last_seq != base:
            log.error("spill file %s starts after seq %d but the store is at %d; left in place "
                      "(adopting it would repeat message ids)", path, base, store.last_seq)
            continue
        _adopt_rows(store, rows, now_ms)
        path.unlink()
        adopted += len(rows)
        log.warning("adopted %d messages spilled at the last stop from %s", len(rows), path)
    return adopted


def _adopt_rows(store: Store, rows: list[list[object]], now_ms: int) -> None:
    """Commit spilled rows in order: runs of plain messages in one transaction each, an alarm
    event together with its state change (so the alarm table knows what is active)."""
    plain: list[OutboxRow] = []

    def flush() -> None:
        if plain:
            store.adopt(plain, now_ms=now_ms)
            plain.clear()

    for entry in rows:
        topic, qos, payload, alarm = entry
        if not isinstance(payload, bytes) or not isinstance(qos, int):
            raise SpillError("a spilled row is not [topic, qos, payload, alarm]")
        row = OutboxRow(seq=0, topic=str(topic), payload=payload, qos=qos, created_ms=now_ms,
                        attempts=0)
        if alarm is None:
            plain.append(row)
            continue
        flush()
        if not isinstance(alarm, list) or len(alarm) != 5 or not isinstance(alarm[3], dict):
            raise SpillError("a spilled alarm is not [key, kind, state, details, t_ms]")
        key, kind, state, details, t_ms = alarm
        event = OutboxMessage.prebuilt(topic=row.topic, qos=row.qos, payload=row.payload)
        if state == "raised":
            store.raise_alarm(str(key), str(kind), details, int(t_ms), event=event)
        else:
            store.clear_alarm(str(key), int(t_ms), event=event)
    flush()


def _row_ok(row: object) -> bool:
    if not isinstance(row, list) or len(row) != 4:
        return False
    topic, qos, payload, alarm = row
    if not (isinstance(topic, str) and isinstance(qos, int) and isinstance(payload, bytes)):
        return False
    return alarm is None or (isinstance(alarm, list) and len(alarm) == 5
                             and isinstance(alarm[3], dict) and isinstance(alarm[4], int))

