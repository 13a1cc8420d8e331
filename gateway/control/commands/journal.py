"""The command audit journal: an append-only SQLite hash chain, plus the replay state that must
change in the same transaction as it (DESIGN.md §6).

**The chain.** Each record carries ``prev_hash`` and ``hash``, chaining it to the one before;
the record and hash format, chain heads and verification are
:mod:`protocols.commands.audit_chain` (sans-IO, shared with ``gwtool audit verify``). This
module is the SQLite file that holds the chain, and the only writer of it.

SQLite triggers refuse UPDATE and DELETE on the journal table, so no code path of the gateway
can rewrite history by mistake; they are no defence against someone with the file, which is the
chain's job.

**Records.** ``received`` (every authenticated message: its size, SHA-256 and the bytes),
``rejected`` (code and reason; for a message no signature vouches for, its size and SHA-256
instead of a ``received`` record, see :mod:`.junk`), ``accepted`` (the verified command), and outcomes ``executed`` / ``failed`` written by
whoever acts (the ``final`` flag marks the last outcome of a command). A command that is
``accepted`` without a final outcome is *pending*: after a crash between journaling and acting,
:meth:`Journal.pending` finds it so the daemon reports it instead of acting a second time.

**Replay state.** Each key's last counter and the ids of commands already seen live in the same
database, and :meth:`Journal.append` writes them in the *same* transaction as the verdict record
(``synchronous=FULL``, WAL): once a command is journaled as accepted, its counter is spent, even if
the power fails the next instant; and if the power fails before, neither exists.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Literal, cast

import cbor2

from gateway.control.errors import ControlError
from protocols.commands.audit_chain import (
    AUDIT_APPLICATION_ID,
    CHAIN_COLUMNS,
    GENESIS_HASH,
    ChainHead,
    encode_details,
    record_hash,
)

JournalKind = Literal["received", "rejected", "accepted", "executed", "failed"]
KINDS: Final[frozenset[str]] = frozenset({"received", "rejected", "accepted", "executed", "failed"})
OUTCOME_KINDS: Final = ("executed", "failed")

#: ``details["what"]`` of the records of a signed update bundle (gateway/app/bundles.py): they
#: share the chain with commands, but an interrupted bundle is the bundle applier's to close,
#: not a command whose result goes to the operator.
BUNDLE_RECORD: Final = "bundle"

#: How long the ids of accepted commands are remembered. The per-key counter already stops
#: replays for ever; the id table is a second, independent check and need not grow without bound.
DEFAULT_REPLAY_WINDOW_S: Final = 7 * 86_400

_MIGRATIONS: Final = (
    (
        1,
        (
            """CREATE TABLE journal (
                seq INTEGER PRIMARY KEY,
                ts_ms INTEGER NOT NULL,
                kind TEXT NOT NULL,
                cmd BLOB,
                kid TEXT,
                final INTEGER NOT NULL DEFAULT 0,
                body BLOB NOT NULL,
                prev_hash BLOB NOT NULL,
                hash BLOB NOT NULL
            )""",
            "CREATE INDEX journal_cmd ON journal (cmd) WHERE cmd IS NOT NULL",
            # Rate limits and the pending query look at accepted records only.
            "CREATE INDEX journal_accepted ON journal (kid, ts_ms) WHERE kind = 'accepted'",
            """CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
               BEGIN SELECT RAISE(ABORT, 'the audit journal is append-only'); END""",
            """CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
               BEGIN SELECT RAISE(ABORT, 'the audit journal is append-only'); END""",
            """CREATE TABLE key_counters (
                kid TEXT PRIMARY KEY,
                ctr INTEGER NOT NULL,
                journal_seq INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE seen_commands (
                cmd BLOB PRIMARY KEY,
                kid TEXT NOT NULL,
                ctr INTEGER NOT NULL,
                seen_ms INTEGER NOT NULL,
                journal_seq INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "CREATE INDEX seen_commands_age ON seen_commands (seen_ms)",
            f"PRAGMA application_id = {AUDIT_APPLICATION_ID}",
        ),
    ),
)
_LATEST: Final = _MIGRATIONS[-1][0]
#: A stored record's columns, in the order :func:`_record` and the chain verifier take them.
_RECORD_COLUMNS: Final = ", ".join(CHAIN_COLUMNS)


class JournalError(ControlError):
    """The journal cannot be opened or written. A command whose verdict could not be journaled
    must not be acted on."""


class ReplayConflictError(JournalError):
    """At commit time the counter was no longer fresh or the id already seen (another writer
    got there first); nothing was written."""


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A record to append: ``kind``, the command id ``cmd`` and signing ``kid`` when known,
    ``final`` (last outcome of a command) and ``details`` (plain data: text, ints, floats,
    bytes, bools, None, lists and text-keyed maps)."""

    kind: JournalKind
    cmd: bytes | None = None
    kid: str | None = None
    final: bool = False
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """A stored record, with its chain fields ``prev_hash`` and ``hash``; ``body`` is the
    deterministic CBOR of the details (see :attr:`details`)."""

    seq: int
    ts_ms: int
    kind: str
    cmd: bytes | None
    kid: str | None
    final: bool
    body: bytes
    prev_hash: bytes
    hash: bytes

    @property
    def details(self) -> Mapping[str, object]:
        value = cbor2.loads(self.body)
        return MappingProxyType(value if isinstance(value, dict) else {})


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """The replay state a verdict spends: key ``kid``'s counter becomes ``ctr`` and command id
    ``cmd`` is remembered. Checked again inside the transaction (fail closed)."""

    kid: str
    ctr: int
    cmd: bytes


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """An accepted command without a final outcome: ``cmd``, issuing ``kid``, the ``accepted_seq``
    and ``accepted_ms`` of its accepted record, its ``details`` (action, meters, params, ...)
    and how many non-final ``outcomes`` were recorded."""

    cmd: bytes
    kid: str
    accepted_seq: int
    accepted_ms: int
    details: Mapping[str, object]
    outcomes: int


# --------------------------------------------------------------------------------------------
# The journal
# --------------------------------------------------------------------------------------------


class Journal:
    """The audit journal of one gateway. Create with :meth:`Journal.open`.

    One connection guarded by a lock, like the store: call from the event loop (each call is one
    short transaction) or from one worker thread.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, replay_window_s: int) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.path = path
        self.replay_window_s = replay_window_s

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        replay_window_s: int = DEFAULT_REPLAY_WINDOW_S,
        busy_timeout_s: float = 5.0,
    ) -> Journal:
        """Open (creating if needed) the journal at ``path``.

        Raises :class:`JournalError` naming the file and what to fix when it cannot be: a
        directory that cannot be created or written, a file that is not an audit journal. The
        journal is never moved aside or recreated here: it is the audit trail and holds the
        replay state, so a damaged one is the operator's to restore or retire."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                f"audit journal {path}: cannot create its directory ({exc.strerror}); "
                f"{_WRITABLE_HINT}"
            ) from exc
        try:
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
        except sqlite3.Error as exc:
            raise _open_error(exc, path) from exc
        try:
            _check_ownership(conn, path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"audit journal {path}: SQLite refused WAL mode (got {mode!r}); keep "
                    "data_dir on a local filesystem"
                )
            # FULL: the WAL is fsynced at each commit, so an accepted command and its spent
            # counter survive a power cut, not only a process crash.
            conn.execute("PRAGMA synchronous = FULL")
            _migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(exc, path) from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, replay_window_s)

    def close(self) -> None:
        """Close the database. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- writing

    def append(
        self,
        entries: Sequence[JournalEntry],
        *,
        now_ms: int,
        replay: ReplayMark | None = None,
    ) -> tuple[JournalRecord, ...]:
        """Append ``entries`` in order, and spend ``replay`` if given, in ONE transaction.

        Raises :class:`ReplayConflictError` (nothing written) if ``replay`` is no longer fresh,
        :class:`JournalError` if the database refuses the write (nothing written either).
        """
        if not entries:
            return ()
        prepared = [(entry, encode_details(entry.details)) for entry in entries]
        for entry, _ in prepared:
            if entry.kind not in KINDS:
                raise ValueError(f"journal kind {entry.kind!r} is not one of {sorted(KINDS)}")
        with self._transaction() as conn:
            if replay is not None:
                _check_replay(conn, replay)
            seq, prev = _head_row(conn)
            records = []
            for entry, body in prepared:
                seq += 1
                digest = record_hash(
                    prev, seq, now_ms, entry.kind, entry.cmd, entry.kid, entry.final, body
                )
                conn.execute(
                    "INSERT INTO journal (seq, ts_ms, kind, cmd, kid, final, body, prev_hash, "
                    "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        now_ms,
                        entry.kind,
                        entry.cmd,
                        entry.kid,
                        int(entry.final),
                        body,
                        prev,
                        digest,
                    ),
                )
                records.append(
                    JournalRecord(
                        seq,
                        now_ms,
                        entry.kind,
                        entry.cmd,
                        entry.kid,
                        entry.final,
                        body,
                        prev,
                        digest,
                    )
                )
                prev = digest
            if replay is not None:
                conn.execute(
                    "INSERT INTO key_counters (kid, ctr, journal_seq) VALUES (?, ?, ?) "
                    "ON CONFLICT (kid) DO UPDATE SET ctr = excluded.ctr, "
                    "journal_seq = excluded.journal_seq",
                    (replay.kid, replay.ctr, seq),
                )
                conn.execute(
                    "INSERT INTO seen_commands (cmd, kid, ctr, seen_ms, journal_seq) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (replay.cmd, replay.kid, replay.ctr, now_ms, seq),
                )
                conn.execute(
                    "DELETE FROM seen_commands WHERE seen_ms < ?",
                    (now_ms - self.replay_window_s * 1000,),
                )
            return tuple(records)

    def record_outcome(
        self,
        cmd: bytes,
        status: Literal["executed", "failed"],
        reason: str,
        *,
        now_ms: int,
        final: bool = True,
        details: Mapping[str, object] | None = None,
    ) -> JournalRecord:
        """Journal what acting on accepted command ``cmd`` did: ``executed`` or ``failed`` with
        a ``reason``. ``final=False`` for intermediate outcomes (a limit's rounds); the last one
        is final and takes the command off :meth:`pending`.

        ValueError if ``cmd`` was never accepted or already has a final outcome — either means
        the caller is about to report an action that should not have happened.
        """
        if status not in OUTCOME_KINDS:
            raise ValueError(f"outcome status {status!r} is not one of {OUTCOME_KINDS}")
        with self._reading() as conn:
            row = conn.execute(
                "SELECT kid FROM journal WHERE cmd = ? AND kind = 'accepted' LIMIT 1", (cmd,)
            ).fetchone()
            if row is None:
                raise ValueError(f"command {cmd.hex()} was never accepted; no outcome to record")
            done = conn.execute(
                "SELECT seq FROM journal WHERE cmd = ? AND kind IN ('executed', 'failed') "
                "AND final = 1 LIMIT 1",
                (cmd,),
            ).fetchone()
            if done is not None:
                raise ValueError(
                    f"command {cmd.hex()} already has its final outcome (record {done[0]})"
                )
            body = {"reason": reason, **(details or {})}
            return self.append(
                [JournalEntry(status, cmd=cmd, kid=row[0], final=final, details=body)],
                now_ms=now_ms,
            )[0]

    # ---------------------------------------------------------------- reading

    def head(self) -> ChainHead:
        """The newest record's seq and hash (seq 0 and the genesis hash when empty)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT seq, hash, ts_ms FROM journal ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return ChainHead(0, GENESIS_HASH, 0)
        return ChainHead(int(row[0]), bytes(row[1]), int(row[2]))

    def record_count(self) -> int:
        """How many records the journal holds (published with the chain head: equal to the
        head's seq while the chain is intact, so a consumer sees a mismatch at once)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0])

    def last_counter(self, kid: str) -> int | None:
        """The last counter spent by key ``kid`` (None if it never signed an accepted command)."""
        with self._reading() as conn:
            row = conn.execute("SELECT ctr FROM key_counters WHERE kid = ?", (kid,)).fetchone()
        return None if row is None else int(row[0])

    def seen(self, cmd: bytes) -> bool:
        """True if command id ``cmd`` was already spent (within the replay window)."""
        with self._reading() as conn:
            row = conn.execute("SELECT 1 FROM seen_commands WHERE cmd = ?", (cmd,)).fetchone()
        return row is not None

    def accepted_count(self, kid: str, since_ms: int) -> int:
        """How many commands key ``kid`` issued that were accepted at or after ``since_ms``."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT count(*) FROM journal WHERE kind = 'accepted' AND kid = ? AND ts_ms >= ?",
                (kid, since_ms),
            ).fetchone()
        return int(row[0])

    def accepted_action_count(self, action: str, since_ms: int) -> int:
        """How many ``action`` commands, from any key, were accepted at or after ``since_ms``
        (a gateway-wide rate limit: ``[commands] replay_per_minute``). Decodes the accepted
        records of the window, which the per-key rate limit keeps to a few per key."""
        with self._reading() as conn:
            bodies = conn.execute(
                "SELECT body FROM journal WHERE kind = 'accepted' AND ts_ms >= ?", (since_ms,)
            ).fetchall()
        return sum(1 for (body,) in bodies if cbor2.loads(body).get("action") == action)

    def pending(self) -> list[PendingCommand]:
        """Accepted commands without a final outcome, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                """SELECT a.seq, a.ts_ms, a.cmd, a.kid, a.body,
                          (SELECT count(*) FROM journal o
                            WHERE o.cmd = a.cmd AND o.kind IN ('executed', 'failed'))
                     FROM journal a
                    WHERE a.kind = 'accepted'
                      AND NOT EXISTS (SELECT 1 FROM journal f
                                       WHERE f.cmd = a.cmd AND f.kind IN ('executed', 'failed')
                                         AND f.final = 1)
                    ORDER BY a.seq"""
            ).fetchall()
        out = []
        for seq, ts_ms, cmd, kid, body, outcomes in rows:
            details = cbor2.loads(body)
            out.append(
                PendingCommand(
                    cmd=bytes(cmd),
                    kid=str(kid),
                    accepted_seq=int(seq),
                    accepted_ms=int(ts_ms),
                    details=MappingProxyType(details if isinstance(details, dict) else {}),
                    outcomes=int(outcomes),
                )
            )
        return out

    def records(self, after_seq: int = 0, limit: int | None = None) -> list[JournalRecord]:
        """Records with seq > ``after_seq``, in order (for export and inspection)."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM journal "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, -1 if limit is None else limit),
            ).fetchall()
        return [_record(row) for row in rows]

    def commands(self, cmd: bytes) -> list[JournalRecord]:
        """Every record of command ``cmd``, in order."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM journal "
                "WHERE cmd = ? ORDER BY seq",
                (cmd,),
            ).fetchall()
        return [_record(row) for row in rows]

    # ---------------------------------------------------------------- internals

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"audit journal {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise JournalError(f"audit journal {self.path}: cannot read: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise JournalError(f"audit journal {self.path}: cannot write: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise JournalError(
                    f"audit journal {self.path}: write failed, nothing recorded: {exc}"
                ) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


def _check_replay(conn: sqlite3.Connection, replay: ReplayMark) -> None:
    row = conn.execute("SELECT ctr FROM key_counters WHERE kid = ?", (replay.kid,)).fetchone()
    if row is not None and replay.ctr <= int(row[0]):
        raise ReplayConflictError(
            f"counter {replay.ctr} of key {replay.kid!r} is not above {row[0]}"
        )
    if conn.execute("SELECT 1 FROM seen_commands WHERE cmd = ?", (replay.cmd,)).fetchone():
        raise ReplayConflictError(f"command id {replay.cmd.hex()} was already seen")


def _head_row(conn: sqlite3.Connection) -> tuple[int, bytes]:
    row = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1]))


def _record(row: Sequence[object]) -> JournalRecord:
    seq, ts_ms, kind, cmd, kid, final, body, prev_hash, digest = row
    return JournalRecord(
        seq=cast(int, seq),
        ts_ms=cast(int, ts_ms),
        kind=str(kind),
        cmd=None if cmd is None else cast(bytes, cmd),
        kid=None if kid is None else str(kid),
        final=bool(final),
        body=cast(bytes, body),
        prev_hash=cast(bytes, prev_hash),
        hash=cast(bytes, digest),
    )


_WRITABLE_HINT = (
    "make the data_dir writable by the gateway user and check its filesystem is mounted "
    "read-write and not full"
)
_UNUSABLE_CODES: Final = frozenset({
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_AUTH,
})
_DAMAGE_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _open_error(exc: sqlite3.Error, path: Path) -> JournalError:
    """What went wrong opening the journal, and what the operator can do about it."""
    code = int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF
    if code in _DAMAGE_CODES:
        return JournalError(
            f"audit journal {path}: not a readable audit journal ({exc}); restore it from a "
            "backup, or move it aside to start a new one (with no replay history)"
        )
    if code in _UNUSABLE_CODES:
        return JournalError(f"audit journal {path}: cannot be opened for writing ({exc}); "
                            f"{_WRITABLE_HINT}")
    return JournalError(f"audit journal {path}: {exc}")


def _check_ownership(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > _LATEST:
        raise JournalError(
            f"audit journal {path} has schema version {version}, newer than this gateway "
            f"supports ({_LATEST}); run the newer gateway"
        )
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    has_tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] > 0
    if app_id != AUDIT_APPLICATION_ID and (version > 0 or has_tables):
        raise JournalError(
            f"{path} is not an audit journal (application_id {app_id:#x}); point the gateway "
            "at a file of its own"
        )


def _migrate(conn: sqlite3.Connection) -> None:
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, statements in _MIGRATIONS:
        if version <= found:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
