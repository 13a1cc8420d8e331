"""What one gateway's data looks like in the store right now: ``edge-central status --detail``.

:func:`gateway_activity` answers "is everything arriving?" for a person watching (the demo's
live view reads it through ``status --detail --watch``): values stored per meter, the newest
gaps with whether each was filled, the newest alarm events. It reads only the contract tables
(``current_reads``, ``gaps``, ``alarms``; DESIGN §9), so it is the same on SQLite and
PostgreSQL. Counting ``current_reads`` scans a gateway's rows: cheap for the demo's thousands,
not something to poll every second against a production database of billions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from central.storage.database import Database

__all__ = ["AlarmEvent", "GapRecord", "GatewayActivity", "gateway_activity"]


@dataclass(frozen=True, slots=True)
class GapRecord:
    """One row of ``gaps``: a hole in a stream, and when (if) a replay filled it."""

    epoch: str
    from_seq: int
    to_seq: int
    detected_ms: int
    filled_ms: int | None
    requests: int

    def as_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "from_seq": self.from_seq, "to_seq": self.to_seq,
                "detected_ms": self.detected_ms, "filled_ms": self.filled_ms,
                "requests": self.requests}


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One raise or clear as stored in ``alarms``."""

    ts_ms: int
    kind: str
    meter: str | None
    state: str
    severity: str

    def as_json(self) -> dict[str, Any]:
        return {"ts_ms": self.ts_ms, "kind": self.kind, "meter": self.meter,
                "state": self.state, "severity": self.severity}


@dataclass(frozen=True, slots=True)
class GatewayActivity:
    """Values stored per meter, the newest gaps and alarm events of one gateway."""

    values_by_meter: dict[str, int]
    gaps: list[GapRecord]
    alarms: list[AlarmEvent]
    alarms_total: int

    def as_json(self) -> dict[str, Any]:
        return {"values_stored": sum(self.values_by_meter.values()),
                "values_by_meter": dict(sorted(self.values_by_meter.items())),
                "gaps": [g.as_json() for g in self.gaps],
                "alarms_total": self.alarms_total,
                "alarms": [a.as_json() for a in self.alarms]}


def gateway_activity(db: Database, gw: str, *, newest: int = 10) -> GatewayActivity:
    """``gw``'s values per meter (rows of ``current_reads``: one per meter, quantity and time),
    its ``newest`` gaps (newest first) and its ``newest`` alarm events (newest first)."""
    values = {str(meter): int(n) for meter, n in db.execute(
        "SELECT meter, count(*) FROM current_reads WHERE gw = ? GROUP BY meter", (gw,))}
    gaps = [GapRecord(str(epoch), int(lo), int(hi), int(detected),
                      None if filled is None else int(filled), int(requests))
            for epoch, lo, hi, detected, filled, requests in db.execute(
                "SELECT epoch, from_seq, to_seq, detected_ms, filled_ms, requests FROM gaps "
                "WHERE gw = ? ORDER BY detected_ms DESC, from_seq DESC LIMIT ?", (gw, newest))]
    alarms = [AlarmEvent(int(ts), str(kind), None if meter is None else str(meter), str(state),
                         str(severity))
              for ts, kind, meter, state, severity in db.execute(
                  "SELECT ts_ms, kind, meter, state, severity FROM alarms WHERE gw = ? "
                  "ORDER BY ts_ms DESC, message_id DESC LIMIT ?", (gw, newest))]
    total = int(db.scalar("SELECT count(*) FROM alarms WHERE gw = ?", (gw,)) or 0)
    return GatewayActivity(values, gaps, alarms, total)
