"""The audit journal's hash chain against someone holding the database file: `gwtool audit
verify` passes an intact journal and names the first bad record after an edit, a deletion and a
reordering (and, with a published head, after the tail is cut off).

The tampering is done the way an attacker with the file would: with plain SQL, after dropping
the append-only triggers that only stop the gateway's own code.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_tools.cli import main as gwtool
from firmware_tools.command_tools import verify_journal_file
from gateway.control.commands.journal import Journal, JournalEntry, JournalError
from protocols.commands import GENESIS_HASH, record_hash
from tests.readonly_fs import remount_readonly, small_tmpfs

T0 = 1_767_225_600_000
RECORDS = 12


def _build(path: Path) -> list[bytes]:
    """A journal of RECORDS records covering every kind; returns the hashes."""
    with Journal.open(path) as journal:
        cmd = bytes(range(16))
        journal.append(
            [JournalEntry("received", cmd=cmd, details={"size": 180, "sha256": b"\x01" * 32}),
             JournalEntry("accepted", cmd=cmd, kid="op-a",
                          details={"action": "trip", "meters": ["m-001", "m-002"], "ctr": 1})],
            now_ms=T0,
        )  # fmt: skip
        journal.record_outcome(cmd, "executed", "round 1 tripped", now_ms=T0 + 10, final=False)
        journal.record_outcome(cmd, "executed", "2 relays open", now_ms=T0 + 20)
        for i in range(4):
            journal.append(
                [JournalEntry("received", details={"size": 5, "n": i}),
                 JournalEntry("rejected", details={"code": "malformed", "reason": f"junk {i}"})],
                now_ms=T0 + 100 + i,
            )  # fmt: skip
        return [r.hash for r in journal.records()]


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    hashes = _build(path)
    assert len(hashes) == RECORDS
    return path


def _tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER journal_no_update")
        conn.execute("DROP TRIGGER journal_no_delete")
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _audit(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = gwtool(["audit", "verify", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out + err


def test_intact_journal_passes(journal_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _audit(journal_path, capsys)
    assert code == 0
    assert f"intact, {RECORDS} records" in text
    with Journal.open(journal_path) as journal:
        head = journal.head()
    assert head.text() in text
    # The published head is accepted as an anchor.
    assert _audit(journal_path, capsys, "--head", head.text())[0] == 0


def test_chain_links_are_what_the_format_says(journal_path: Path) -> None:
    """Recompute the chain independently from the stored columns (docs/commands.md)."""
    conn = sqlite3.connect(journal_path)
    rows = conn.execute(
        "SELECT seq, ts_ms, kind, cmd, kid, final, body, prev_hash, hash FROM journal ORDER BY seq"
    ).fetchall()
    conn.close()
    prev = GENESIS_HASH
    for seq, ts_ms, kind, cmd, kid, final, body, prev_hash, digest in rows:
        assert prev_hash == prev
        assert digest == record_hash(prev, seq, ts_ms, kind, cmd, kid, bool(final), body)
        prev = digest


def test_edited_record_is_named(journal_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Turn the executed outcome (record 4) into a failure after the fact.
    _tamper(journal_path, "UPDATE journal SET kind = 'failed' WHERE seq = 4")
    code, text = _audit(journal_path, capsys)
    assert code == 1
    assert "first bad record 4" in text and "edited" in text


def test_edited_details_are_named(journal_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper(journal_path, "UPDATE journal SET body = x'a0' WHERE seq = 7")
    code, text = _audit(journal_path, capsys)
    assert code == 1 and "first bad record 7" in text


def test_edited_and_rehashed_record_breaks_the_next_link(
    journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(journal_path)
    seq, ts_ms, _, cmd, kid, final, body, prev = conn.execute(
        "SELECT seq, ts_ms, kind, cmd, kid, final, body, prev_hash FROM journal WHERE seq = 4"
    ).fetchone()
    conn.close()
    forged = record_hash(prev, seq, ts_ms, "failed", cmd, kid, bool(final), body)
    _tamper(
        journal_path,
        f"UPDATE journal SET kind = 'failed', hash = x'{forged.hex()}' WHERE seq = 4",
    )
    code, text = _audit(journal_path, capsys)
    assert code == 1
    assert "first bad record 5" in text and "does not follow record 4" in text


def test_removed_record_is_named(journal_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper(journal_path, "DELETE FROM journal WHERE seq = 6")
    code, text = _audit(journal_path, capsys)
    assert code == 1
    assert "first bad record 6" in text and "missing" in text


def test_removed_and_renumbered_records_are_named(
    journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper(
        journal_path,
        "DELETE FROM journal WHERE seq = 6",
        "UPDATE journal SET seq = seq - 1 WHERE seq > 6",
    )
    code, text = _audit(journal_path, capsys)
    assert code == 1 and "first bad record 6" in text


def test_reordered_records_are_named(
    journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper(
        journal_path,
        "UPDATE journal SET seq = -1 WHERE seq = 8",
        "UPDATE journal SET seq = 8 WHERE seq = 9",
        "UPDATE journal SET seq = 9 WHERE seq = -1",
    )
    code, text = _audit(journal_path, capsys)
    assert code == 1
    assert "first bad record 8" in text and "reordered" in text


def test_cut_tail_needs_the_published_head(
    journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal.open(journal_path) as journal:
        published = journal.head()
    _tamper(journal_path, f"DELETE FROM journal WHERE seq > {RECORDS - 3}")
    # Without an anchor a shortened chain is self-consistent...
    assert _audit(journal_path, capsys)[0] == 0
    # ...the head published before the cut shows it.
    code, text = _audit(journal_path, capsys, "--head", published.text())
    assert code == 1
    assert f"first bad record {RECORDS - 2}" in text and "removed" in text


def test_rebuilt_chain_does_not_match_the_published_head(
    journal_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal.open(journal_path) as journal:
        published = journal.head()
    # Rebuild every hash after editing record 2: internally consistent, but not the published one.
    conn = sqlite3.connect(journal_path)
    rows = conn.execute(
        "SELECT seq, ts_ms, kind, cmd, kid, final, body FROM journal ORDER BY seq"
    ).fetchall()
    conn.close()
    statements = ["UPDATE journal SET kid = 'op-b' WHERE seq = 2"]
    prev = GENESIS_HASH
    for seq, ts_ms, kind, cmd, kid, final, body in rows:
        kid = "op-b" if seq == 2 else kid
        digest = record_hash(prev, seq, ts_ms, kind, cmd, kid, bool(final), body)
        statements.append(
            f"UPDATE journal SET prev_hash = x'{prev.hex()}', hash = x'{digest.hex()}' "
            f"WHERE seq = {seq}"
        )
        prev = digest
    _tamper(journal_path, *statements)
    assert _audit(journal_path, capsys)[0] == 0
    code, text = _audit(journal_path, capsys, "--head", published.text())
    assert code == 1 and f"first bad record {RECORDS}" in text


def test_verify_reports_the_first_of_several_problems(journal_path: Path) -> None:
    _tamper(
        journal_path,
        "UPDATE journal SET body = x'a0' WHERE seq = 9",
        "UPDATE journal SET body = x'a0' WHERE seq = 3",
        "DELETE FROM journal WHERE seq = 11",
    )
    report = verify_journal_file(journal_path)
    assert report.problem is not None and report.problem.seq == 3
    assert report.records == 2


def test_not_a_journal_and_bad_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    code, text = _audit(other, capsys)
    assert code == 1 and "not an audit journal" in text
    empty = tmp_path / "empty.db"
    Journal.open(empty).close()
    code, text = _audit(empty, capsys)
    assert code == 0 and "0 records" in text
    code, text = _audit(empty, capsys, "--head", "3:abc")
    assert code == 1 and "64 hex digits" in text


def test_gwtool_process_exit_codes(journal_path: Path) -> None:
    gwtool_bin = Path(sys.executable).with_name("gwtool")
    ok = subprocess.run(
        [str(gwtool_bin), "audit", "verify", str(journal_path)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    _tamper(journal_path, "UPDATE journal SET ts_ms = ts_ms + 1 WHERE seq = 2")
    bad = subprocess.run(
        [str(gwtool_bin), "audit", "verify", str(journal_path)], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "first bad record 2" in bad.stderr


def test_journal_on_a_read_only_filesystem_is_one_clear_error(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        remount_readonly(mnt)
        with pytest.raises(JournalError, match=f"audit journal {mnt}/audit.db: cannot be opened "
                                               "for writing .*read-write"):
            Journal.open(mnt / "audit.db")
        with pytest.raises(JournalError, match="cannot create its directory"):
            Journal.open(mnt / "sub" / "audit.db")
