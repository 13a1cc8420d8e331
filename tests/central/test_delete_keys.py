"""``Database.delete_keys`` (how a batch deletes the seq ranges it merged away): the same rows
go on SQLite (a VALUES list per 500 keys) and on PostgreSQL (one statement, arrays of keys)."""

from __future__ import annotations

from central.storage import Database


def test_deletes_exactly_the_keys_given(db: Database) -> None:
    db.create_schema()
    rows = [(f"gw-{g}", f"{e:016x}", lo, lo + 1, 7) for g in range(40) for e in (1, 2)
            for lo in range(0, 60, 2)]  # 2,400 ranges
    with db.transaction():  # PostgreSQL stages many rows in a table emptied at commit
        db.insert_many("seq_ranges", ("gw", "epoch", "lo", "hi", "first_ms"), rows, "")
    assert len(db.execute("SELECT lo FROM seq_ranges")) == len(rows)
    gone = [r[:3] for r in rows if r[2] % 4 == 0 or r[0] == "gw-3"]
    assert len(gone) > 1000  # more than two VALUES lists
    with db.transaction():
        db.delete_keys("seq_ranges", ("gw", "epoch", "lo"), ("text", "text", "bigint"), gone)
        db.delete_keys("seq_ranges", ("gw", "epoch", "lo"), ("text", "text", "bigint"), [])
    left = {tuple(r) for r in db.execute("SELECT gw, epoch, lo FROM seq_ranges")}
    assert left == {r[:3] for r in rows} - set(gone)
