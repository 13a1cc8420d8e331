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
import os
from dataclasses import dataclass
from pathlib import Path

import cbor2

from gateway.store import Store
from gateway.store.errors import StoreError
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


def spill(messages: list[OutboxMessage], spill_dir: Path, *, epoch: int, last_seq: int,
          now_ms: int) -> SpillResult:
    """Write ``messages`` (oldest first) to a new spill file in ``spill_dir``."""
    rows = []
    for i, message in enumerate(messages, start=1):
        rows.append([message.topic, message.qos, message.build(last_seq + i)])
    document = {"v": FORMAT, "epoch": epoch, "base_seq": last_seq, "rows": rows}
    path = spill_dir / f"spill-{epoch:016x}-{last_seq:012d}-{now_ms}.cbor"
    tmp = path.with_suffix(".tmp")
    try:
        spill_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            cbor2.dump(document, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(spill_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
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
        if epoch == store.epoch and store.last_seq != base:
            log.error("spill file %s starts after seq %d but the store is at %d; left in place "
                      "(adopting it would repeat message ids)", path, base, store.last_seq)
            continue
        outbox_rows = [OutboxRow(seq=0, topic=str(topic), payload=bytes(payload), qos=int(qos),
                                 created_ms=now_ms, attempts=0) for topic, qos, payload in rows]
        store.adopt(outbox_rows, now_ms=now_ms)
        path.unlink()
        adopted += len(outbox_rows)
        log.warning("adopted %d messages spilled at the last stop from %s", len(outbox_rows),
                    path)
    return adopted
