"""Shared pieces of the central consumer's tests: databases of both kinds, gateway messages.

Messages are built with the gateway's own payload builders and decoded with the consumer's
decoder, so a test feeds storage exactly what a worker would.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

from central.decoding import Decoder, Inbound
from protocols.payload import (
    AlarmEvent,
    Envelope,
    ReadRecord,
    build_alarm,
    build_birth,
    build_health,
    build_reads,
)

PREFIX = "mtr/v1"
EPOCH = 0xF234_5678_9ABC_DEF0  # above 2**63: epochs are unsigned 64-bit
_names = itertools.count()


def fresh_pg(server_url: str) -> str:
    """A new, empty database on the test cluster (one per test: no state leaks between them)."""
    import psycopg

    name = f"t{next(_names)}"
    admin = server_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def reads_msg(gw: str, seq: int, meter: str, records: list[ReadRecord], *, ts: int = 1_000,
              epoch: int = EPOCH) -> Inbound:
    payload = build_reads(Envelope(gw, epoch, seq, ts), meter, records)
    return Decoder(PREFIX, {}).decode(f"{PREFIX}/{gw}/reads/{meter}", payload)


def register(t: int, value: str, **kw: object) -> ReadRecord:
    return ReadRecord("energy.active.import.total", Decimal(value), "kWh", t, **kw)  # type: ignore[arg-type]


def alarm_msg(gw: str, seq: int, kind: str, state: str = "raised", *, ts: int = 5_000,
              meter: str | None = None) -> Inbound:
    event = AlarmEvent(kind=kind, key=f"{kind}/{meter or gw}", state=state, severity="major",
                       details={"threshold": Decimal("1.5"), "meters": [meter or "x"]},
                       meter=meter)
    payload = build_alarm(Envelope(gw, EPOCH, seq, ts), event)
    return Decoder(PREFIX, {}).decode(f"{PREFIX}/{gw}/alarms", payload)


def health_msg(gw: str, hwm: int, depth: int, *, ts: int = 9_000) -> Inbound:
    payload = build_health(Envelope(gw, EPOCH, hwm, ts), {"outbox_depth": depth})
    return Decoder(PREFIX, {}).decode(f"{PREFIX}/{gw}/health", payload)


def birth_msg(gw: str, hwm: int, *, ts: int = 500) -> Inbound:
    payload = build_birth(Envelope(gw, EPOCH, hwm, ts), bdseq=1, version="t",
                          config_sha256="0" * 64, meters=["m-1"])
    return Decoder(PREFIX, {}).decode(f"{PREFIX}/{gw}/state", payload)
