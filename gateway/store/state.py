"""The daemon's own state kept beside the outbox: VEE blobs, alarms and daily history.

Split from :mod:`gateway.store.database`. Alarm events and daily results are committed in the
same transaction as the state change they announce (through the shared write path,
:mod:`gateway.store.core`), so a crash can neither publish a change twice nor lose it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from gateway.store.core import StoreCore, wall_ms
from gateway.store.core import check_message as _check_message
from gateway.store.records import AlarmState, DailyValue, OutboxMessage
from protocols.payload import QUALITIES


class StateStore(StoreCore):
    """VEE state, alarm and daily history methods of :class:`gateway.store.Store`."""

    def put_vee_state(self, name: str, data: bytes, *, now_ms: int | None = None) -> None:
        """Save (replace) the VEE blob ``name`` (gateway.pipeline.vee_stage: history and meter state)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO vee_state (name, saved_ms, data) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET saved_ms = excluded.saved_ms, "
                "data = excluded.data",
                (name, now_ms if now_ms is not None else wall_ms(), data),
            )

    def get_vee_state(self, name: str) -> bytes | None:
        """The VEE blob ``name`` as last saved, or None."""
        with self._reading() as conn:
            row = conn.execute("SELECT data FROM vee_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    # ---------------------------------------------------------------- alarms

    def raise_alarm(
        self,
        key: str,
        kind: str,
        details: Mapping[str, object],
        now_ms: int,
        *,
        event: OutboxMessage | None = None,
    ) -> bool:
        """Mark alarm ``key`` active; True when it was not active before. ``event`` (the alarm
        message) is committed in the same transaction, and only when the state changed, so an
        alarm is published exactly once per raise even across a crash. Re-raising an active
        alarm keeps its original time and details."""
        if event is not None:
            _check_message(event)
        text = _details_json(details)
        with self._transaction() as conn:
            row = conn.execute("SELECT cleared_ms FROM alarms WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] is None:
                return False
            conn.execute(
                "INSERT INTO alarms (key, kind, raised_ms, cleared_ms, details) "
                "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, "
                "raised_ms = excluded.raised_ms, cleared_ms = NULL, details = excluded.details",
                (key, kind, now_ms, text),
            )
            if event is not None:
                self._insert_messages(conn, [event], now_ms)
            return True

    def clear_alarm(self, key: str, now_ms: int, *, event: OutboxMessage | None = None) -> bool:
        """Mark alarm ``key`` cleared; True when it was active. ``event`` as in
        :meth:`raise_alarm`."""
        if event is not None:
            _check_message(event)
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE alarms SET cleared_ms = ? WHERE key = ? AND cleared_ms IS NULL",
                (now_ms, key),
            ).rowcount
            if changed and event is not None:
                self._insert_messages(conn, [event], now_ms)
            return changed > 0

    def active_alarms(self) -> list[AlarmState]:
        """Alarms currently raised, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key, kind, raised_ms, cleared_ms, details FROM alarms "
                "WHERE cleared_ms IS NULL ORDER BY raised_ms, key"
            ).fetchall()
        return [_alarm_state(row) for row in rows]

    def alarm(self, key: str) -> AlarmState | None:
        """The last known state of alarm ``key`` (active or cleared), or None."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT key, kind, raised_ms, cleared_ms, details FROM alarms WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else _alarm_state(row)

    # ---------------------------------------------------------------- daily history

    def put_daily(
        self,
        values: Iterable[DailyValue],
        *,
        messages: Sequence[OutboxMessage] = (),
        now_ms: int | None = None,
    ) -> list[int]:
        """Insert or replace daily values (a later freeze read or a VEE substitution wins).

        ``messages`` are committed in the same transaction (their seqs are returned): a daily
        result and the record that it was published are one atomic step, so a crash can
        neither publish a day twice nor forget to publish it."""
        rows = [_daily_row(value) for value in values]
        for message in messages:
            _check_message(message)
        created = now_ms if now_ms is not None else wall_ms()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO daily_history (meter, quantity, day, value, quality) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter, quantity, day) DO UPDATE SET "
                "value = excluded.value, quality = excluded.quality",
                rows,
            )
            return self._insert_messages(conn, messages, created) if messages else []

    def newest_daily(self, quantity: str) -> dt.date | None:
        """The newest day any meter has a value of ``quantity`` for (None when none has), so
        a caller can load just the recent days instead of the whole history."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT max(day) FROM daily_history WHERE quantity = ?", (quantity,)
            ).fetchone()
        return None if row is None or row[0] is None else dt.date.fromisoformat(row[0])

    def get_daily(
        self, meter: str, quantity: str, first: dt.date, last: dt.date
    ) -> list[DailyValue]:
        """Daily values of one quantity of one meter, ``first`` to ``last`` inclusive, by day."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT meter, quantity, day, value, quality FROM daily_history "
                "WHERE meter = ? AND quantity = ? AND day BETWEEN ? AND ? ORDER BY day",
                (meter, quantity, first.isoformat(), last.isoformat()),
            ).fetchall()
        return [
            DailyValue(
                meter=row[0],
                quantity=row[1],
                day=dt.date.fromisoformat(row[2]),
                value=None if row[3] is None else Decimal(row[3]),
                quality=row[4],
            )
            for row in rows
        ]


# -------------------------------------------------------------------- helpers


def _details_json(details: Mapping[str, object]) -> str:
    def encode(value: object) -> object:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, bytes):
            return value.hex()
        raise TypeError(f"alarm details: {type(value).__name__} is not storable")

    return json.dumps(dict(details), sort_keys=True, default=encode, allow_nan=False)


def _alarm_state(row: tuple[object, ...]) -> AlarmState:
    key, kind, raised, cleared, details = row
    return AlarmState(
        key=str(key),
        kind=str(kind),
        raised_ms=int(str(raised)),
        cleared_ms=None if cleared is None else int(str(cleared)),
        details=json.loads(str(details)),
    )


def _daily_row(value: DailyValue) -> tuple[object, ...]:
    if value.quality not in QUALITIES:
        raise ValueError(
            f"{value.meter} {value.quantity} {value.day}: bad quality {value.quality!r}"
        )
    if (value.value is None) != (value.quality == "N"):
        raise ValueError(
            f"{value.meter} {value.quantity} {value.day}: a null value goes with quality 'N' only"
        )
    if value.value is not None and not value.value.is_finite():
        raise ValueError(f"{value.meter} {value.quantity} {value.day}: value must be finite")
    text = None if value.value is None else str(value.value)
    return (value.meter, value.quantity, value.day.isoformat(), text, value.quality)
