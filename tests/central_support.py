"""Shared pieces of the central consumer's tests: databases of both kinds, gateway messages.

Messages are built with the gateway's own payload builders and decoded with the consumer's
decoder, so a test feeds storage exactly what a worker would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from central.decoding import Inbound, decode_inbound
from central.storage import Database, open_database
from protocols.payload import (
    AlarmEvent,
    Envelope,
    ReadRecord,
    build_alarm,
    build_birth,
    build_health,
    build_reads,
)
from tests import pg_cluster

PREFIX = "mtr/v1"
EPOCH = 0x1234_5678_9ABC_DEF0
_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    if not pg_cluster.available():
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
    with pg_cluster.postgres_cluster() as url:
        yield url


def fresh_pg(server_url: str) -> str:
    import psycopg

    name = f"t{next(_names)}"
    admin = server_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.sqlite'}"
    return fresh_pg(request.getfixturevalue("pg_server"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


def reads_msg(gw: str, seq: int, meter: str, records: list[ReadRecord], *, ts: int = 1_000,
              epoch: int = EPOCH) -> Inbound:
    payload = build_reads(Envelope(gw, epoch, seq, ts), meter, records)
    return decode_inbound(f"{PREFIX}/{gw}/reads/{meter}", payload, PREFIX, {})


def register(t: int, value: str, **kw: object) -> ReadRecord:
    return ReadRecord("energy.active.import.total", Decimal(value), "kWh", t, **kw)  # type: ignore[arg-type]


def alarm_msg(gw: str, seq: int, kind: str, state: str = "raised", *, ts: int = 5_000,
              meter: str | None = None) -> Inbound:
    event = AlarmEvent(kind=kind, key=f"{kind}/{meter or gw}", state=state, severity="major",
                       details={"threshold": Decimal("1.5"), "meters": [meter or "x"]},
                       meter=meter)
    payload = build_alarm(Envelope(gw, EPOCH, seq, ts), event)
    return decode_inbound(f"{PREFIX}/{gw}/alarms", payload, PREFIX, {})


def health_msg(gw: str, hwm: int, depth: int, *, ts: int = 9_000) -> Inbound:
    payload = build_health(Envelope(gw, EPOCH, hwm, ts), {"outbox_depth": depth})
    return decode_inbound(f"{PREFIX}/{gw}/health", payload, PREFIX, {})


def birth_msg(gw: str, hwm: int, *, ts: int = 500) -> Inbound:
    payload = build_birth(Envelope(gw, EPOCH, hwm, ts), bdseq=1, version="t",
                          config_sha256="0" * 64, meters=["m-1"])
    return decode_inbound(f"{PREFIX}/{gw}/state", payload, PREFIX, {})
