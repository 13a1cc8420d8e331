"""Workers started together on a new SQLite file all come up (the e2e tests start two at once;
switching the new file to WAL used to fail one of them now and then with "database is locked")."""

from __future__ import annotations

import threading
from pathlib import Path

from central.storage.sqlite_db import SqliteDatabase


def test_workers_opening_a_new_file_at_the_same_moment_all_come_up(tmp_path: Path) -> None:
    failures: list[str] = []
    for trial in range(150):
        path = tmp_path / f"central-{trial}.sqlite"
        start = threading.Barrier(8)

        def open_and_migrate(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                db = SqliteDatabase(path)
                try:
                    db.create_schema()
                finally:
                    db.close()
            except Exception as exc:  # any failure is the finding
                failures.append(f"{path.name}: {exc}")

        threads = [threading.Thread(target=open_and_migrate) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
