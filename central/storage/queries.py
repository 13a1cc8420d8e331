"""What the CLI reads back: per-gateway status, a day of interval reads, the outage feed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from central.storage.database import Database

__all__ = ["GatewayStatus", "IntervalRead", "gateway_status", "interval_reads", "outage_alarms"]

#: Alarm kinds the CRM outage feed carries (DESIGN §8).
OUTAGE_KINDS = ("comm.bus", "comm_loss")
OUTAGE_PREFIX = "outage."


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """One gateway as ``edge-central status`` shows it (its newest store epoch)."""

    gw: str
    epoch: int
    last_seq: int
    hwm: int
    last_ts_ms: int | None
    last_received_ms: int | None
    open_gaps: int
    missing: int
    gaps_filled: int
    last_birth_ms: int | None
    last_death_ms: int | None

    def as_json(self, now_ms: int) -> dict[str, Any]:
        lag = None if self.last_ts_ms is None else round((now_ms - self.last_ts_ms) / 1000, 1)
        return {
            "gw": self.gw, "epoch": f"{self.epoch:016x}", "last_seq": self.last_seq,
            "hwm": self.hwm, "seq_lag": max(self.hwm - self.last_seq, 0), "lag_s": lag,
            "open_gaps": self.open_gaps, "missing_seqs": self.missing,
            "gaps_filled": self.gaps_filled, "last_birth_ms": self.last_birth_ms,
            "last_death_ms": self.last_death_ms,
        }


def gateway_status(db: Database) -> list[GatewayStatus]:
    rows = db.execute(
        "SELECT gw, epoch, last_seq, hwm, last_ts_ms, last_received_ms FROM streams s WHERE "
        "NOT EXISTS (SELECT 1 FROM streams n WHERE n.gw = s.gw AND COALESCE(n.last_received_ms, "
        "0) > COALESCE(s.last_received_ms, 0)) ORDER BY gw, epoch")
    out: list[GatewayStatus] = []
    seen: set[str] = set()
    for gw, epoch, last_seq, hwm, last_ts, last_rx in rows:
        if gw in seen:
            continue
        seen.add(gw)
        open_gaps, missing = db.execute(
            "SELECT count(*), COALESCE(sum(to_seq - from_seq + 1), 0) FROM gaps WHERE gw = ? "
            "AND filled_ms IS NULL", (gw,))[0]
        filled = db.scalar("SELECT count(*) FROM gaps WHERE gw = ? AND filled_ms IS NOT NULL",
                           (gw,))
        birth = db.scalar("SELECT max(received_ms) FROM presence WHERE gw = ? AND online", (gw,))
        death = db.scalar("SELECT max(received_ms) FROM presence WHERE gw = ? AND NOT online",
                          (gw,))
        out.append(GatewayStatus(gw, int(epoch, 16), int(last_seq), int(hwm), last_ts, last_rx,
                                 int(open_gaps), int(missing), int(filled), birth, death))
    return out


@dataclass(frozen=True, slots=True)
class IntervalRead:
    """One row of ``current_reads`` as the NEM12 export needs it."""

    gw: str
    meter: str
    quantity: str
    t_ms: int
    value: Decimal | None
    unit: str
    quality: str
    method: int | None
    reasons: tuple[int, ...]


def interval_reads(db: Database, quantities: tuple[str, ...], start_ms: int,
                   end_ms: int) -> list[IntervalRead]:
    """Reads of ``quantities`` with ``start_ms <= t_ms <= end_ms``, by gw, meter, quantity, t."""
    marks = ", ".join("?" for _ in quantities)
    rows = db.execute(
        "SELECT gw, meter, quantity, t_ms, value, unit, quality, method, reasons FROM "
        f"current_reads WHERE quantity IN ({marks}) AND t_ms >= ? AND t_ms <= ? "
        "ORDER BY gw, meter, quantity, t_ms", (*quantities, start_ms, end_ms))
    return [IntervalRead(gw, meter, q, int(t), None if v is None else Decimal(str(v)), unit,
                         quality, method, tuple(int(c) for c in reasons.split(";") if c))
            for gw, meter, q, t, v, unit, quality, method, reasons in rows]


def outage_alarms(db: Database, since_ms: int) -> list[dict[str, Any]]:
    """Outage-related alarm events since ``since_ms``, oldest first, as CRM feed records."""
    rows = db.execute(
        "SELECT gw, kind, key, state, severity, meter, ts_ms, details, message_id FROM alarms "
        "WHERE ts_ms >= ? AND (kind LIKE ? OR kind IN (?, ?)) ORDER BY ts_ms, gw, message_id",
        (since_ms, OUTAGE_PREFIX + "%", *OUTAGE_KINDS))
    out = []
    for gw, kind, key, state, severity, meter, ts, details, message_id in rows:
        facts = details if isinstance(details, dict) else json.loads(details)
        out.append({"gw": gw, "kind": kind, "key": key, "state": state, "severity": severity,
                    "meter": meter, "ts_ms": int(ts), "details": facts,
                    "message_id": message_id})
    return out
