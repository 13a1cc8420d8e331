"""Fixtures of the central consumer's tests: a PostgreSQL cluster per session, and a database
of each kind per test (``db_url`` / ``db`` run a test on SQLite and on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from central.storage import Database, open_database
from tests.central import pg_cluster
from tests.central.support import fresh_pg


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    if not pg_cluster.available():
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
    with pg_cluster.postgres_cluster() as url:
        yield url


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
