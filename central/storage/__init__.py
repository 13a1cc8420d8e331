"""Where the consumer keeps what arrived: SQLite by default, PostgreSQL by URL (DESIGN §9).

:func:`open_database` turns ``[database] url`` into a connection with the schema in place;
:mod:`.ingest` stores decoded batches, :mod:`.gaps` finds and tracks gaps and replay requests,
:mod:`.queries` answers ``status``, exports and the outage feed. Schema: :mod:`.schema`.
"""

from __future__ import annotations

from pathlib import Path

from central.errors import StorageError
from central.storage.database import Database

__all__ = ["Database", "open_database"]


def open_database(url: str, *, create: bool = True) -> Database:
    """A connection to ``url`` (``sqlite:///path`` or ``postgresql://…``), schema created."""
    db: Database
    if url.startswith("sqlite:///"):
        from central.storage.sqlite_db import SqliteDatabase

        db = SqliteDatabase(Path(url[len("sqlite:///"):]))
    elif url.startswith(("postgresql://", "postgres://")):
        from central.storage.postgres_db import PostgresDatabase

        db = PostgresDatabase(url)
    else:
        raise StorageError(
            f"database url {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    if create:
        db.create_schema()
    return db
