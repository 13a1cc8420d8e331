"""The subscription point: analytics and control receive each poll once it is validated,
graded by VEE and committed — never the raw bus result.

Why: group totals, load-control power, theft indicators and daily freezes used to be computed
from raw poll results before validation, so a value the pipeline rejects (a power reading outside
physical bounds, a register that went backwards) still moved a group total or a load-limit round.
Now the committer validates a batch once and hands every subscriber the same
:class:`ValidatedPoll` (the Home Assistant coordinator pattern: compute once, subscribe to it).

A subscriber that raises is not allowed to stop the committer (reads must still be stored and
published): it is unsubscribed, logged with its traceback, and reported to ``on_failure`` — the
daemon's supervisor, which marks that component failed in health and stops feeding the systemd
watchdog, so the process is restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from gateway.acquisition.poll_result import PolledValue
from protocols.payload import ReadRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ValidatedPoll:
    """One meter poll after validation and VEE.

    ``records`` are the graded read records as published. ``polled`` is the poll's values as
    read; only its text values (freeze times, clock; ``str`` or ``bool``) reach analytics, as
    read. ``flags`` are the meter's status flags (relay open, cover open, ...), ``ok`` whether
    the meter answered at all.

    :attr:`values` holds what analytics may use: every value the pipeline accepted (quality
    ``A``, ``E``, ``S``; the value VEE assigned, not necessarily the one read), then the text
    values. A rejected value (quality ``N``) is absent. It is built when asked for, not per
    poll: the theft monitor, the one subscriber on by default, reads ``records`` directly, and
    building a second copy of every value for every poll was ~5 % of the daemon's CPU at 100
    polls/s (py-spy, issue 18).
    """

    meter_id: str
    bus: str
    finished_ms: int
    ok: bool
    records: tuple[ReadRecord, ...] = ()
    polled: tuple[PolledValue, ...] = ()
    flags: Mapping[str, bool] = field(default_factory=dict)

    @property
    def values(self) -> tuple[PolledValue, ...]:
        """The accepted values, then the text values (class docstring)."""
        return accepted_values(self.records, self.texts())

    def texts(self) -> list[PolledValue]:
        """The poll's text values (``str`` or ``bool``), as read."""
        return [pv for pv in self.polled if type(pv.value) is str or type(pv.value) is bool]

    def value(self, quantity: str) -> PolledValue | None:
        """The accepted value of ``quantity`` in this poll, if any (the first in
        :attr:`values`)."""
        for r in self.records:
            if r.q == quantity and r.val is not None:
                return _new_tuple(PolledValue, _READ_FIELDS(r))
        for pv in self.texts():
            if pv.quantity == quantity:
                return pv
        return None


Subscriber = Callable[[ValidatedPoll], None]


class ValidatedFeed:
    """Named subscribers of validated polls."""

    def __init__(self, on_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self._subscribers: dict[str, Subscriber] = {}
        self.on_failure = on_failure

    def subscribe(self, name: str, subscriber: Subscriber) -> Callable[[], None]:
        """Deliver every validated poll to ``subscriber``; returns the unsubscribe callable."""
        if name in self._subscribers:
            raise ValueError(f"a subscriber named {name!r} exists already")
        self._subscribers[name] = subscriber

        def unsubscribe() -> None:
            if self._subscribers.get(name) is subscriber:
                del self._subscribers[name]

        return unsubscribe

    @property
    def wanted(self) -> bool:
        """Whether anyone listens (the committer skips building polls for nobody)."""
        return bool(self._subscribers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._subscribers)

    def publish(self, polls: Iterable[ValidatedPoll]) -> None:
        batch = tuple(polls)
        if not batch:
            return
        for name, subscriber in list(self._subscribers.items()):
            try:
                for poll in batch:
                    subscriber(poll)
            except Exception as exc:  # any subscriber bug: contained here, reported below
                del self._subscribers[name]
                log.error("%s failed on a validated poll and was stopped: %s: %s — reads are "
                          "still stored and published", name, type(exc).__name__, exc,
                          exc_info=exc)
                if self.on_failure is not None:
                    self.on_failure(name, exc)


def accepted_values(records: Iterable[ReadRecord],
                    texts: Iterable[PolledValue]) -> tuple[PolledValue, ...]:
    """The values analytics may use: graded records that kept a value, then the text values."""
    # tuple.__new__ on the four fields (one C attrgetter call): the same PolledValue as
    # PolledValue(r.q, r.val, r.unit, r.t), without the named tuple's Python-level __new__ —
    # ten per poll, a thousand a second at 100 meters.
    make, fields = _new_tuple, _READ_FIELDS
    out = [make(PolledValue, fields(r)) for r in records if r.val is not None]
    out.extend(texts)
    return tuple(out)


_new_tuple = tuple.__new__
#: A record's (q, val, unit, t): a PolledValue's fields, in its order.
_READ_FIELDS = attrgetter("q", "val", "unit", "t")
