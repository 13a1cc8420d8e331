"""The ``replay`` command: a consumer that found a gap asks for stored messages again (issue 15).

The contract (docs/commands.md, "Replay"): ``action = "replay"``, ``targets = [<gateway id>]``
(the gateway itself: nothing on a meter is touched), ``params = {"epoch": uint, "from_seq": uint,
"to_seq": uint}`` — the store epoch and the inclusive seq range of the durable messages wanted,
as a consumer reads them from the messages' ``id`` (``gw:epoch-hex:seq``) and ``seq``. Any of
VIEWER, OPERATOR, ENGINEER may ask (:mod:`.keys`): it only re-sends what the asker can read
anyway.

The verifier checks the shape (:func:`check_targets`, :func:`check_params`: at most
``[commands] replay_max_messages`` per command) and the gateway-wide rate
(``replay_per_minute``); what the store holds is only known when it executes
(:func:`execute`): the rows are queued again in the outbox's replay lane
(:mod:`gateway.store.replay`) and published with ``hist`` on their own topics, or the command
fails naming the oldest seq still held.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from gateway.store import NotHeld, Store, StoreError
from protocols.commands.envelope import MeterTargets, Targets

ACTION: Final = "replay"
_PARAMS: Final = ("epoch", "from_seq", "to_seq")
_MAX_UINT64: Final = 2**64 - 1


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """What a replay asks for: ``epoch`` (the store's, an unsigned 64-bit number) and the seqs
    ``from_seq..to_seq``, inclusive."""

    epoch: int
    from_seq: int
    to_seq: int

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> ReplayRange:
        """The range in checked ``params`` (see :func:`check_params`)."""
        epoch, from_seq, to_seq = (params[name] for name in _PARAMS)
        assert isinstance(epoch, int) and isinstance(from_seq, int) and isinstance(to_seq, int)
        return cls(epoch, from_seq, to_seq)

    @property
    def messages(self) -> int:
        return self.to_seq - self.from_seq + 1

    def describe(self) -> str:
        return f"seq {self.from_seq}..{self.to_seq} of epoch {self.epoch:016x}"


def check_targets(targets: Targets, gateway_id: str) -> str | None:
    """None if ``targets`` names this gateway (``[gateway id]``), else what to send instead."""
    if isinstance(targets, MeterTargets) and targets.meters == (gateway_id,):
        return None
    return f"replay targets the gateway itself: targets = [{gateway_id!r}]"


def check_params(params: Mapping[str, object], max_messages: int) -> str | None:
    """None if ``params`` is a replay range within ``max_messages``, else what is wrong."""
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        return f"replay params {unknown} unknown; give exactly epoch, from_seq and to_seq"
    for name in _PARAMS:
        value = params.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_UINT64:
            return f"replay param {name!r} must be an unsigned integer, got {value!r}"
    wanted = ReplayRange.from_params(params)
    if wanted.from_seq < 1 or wanted.to_seq < wanted.from_seq:
        return (f"replay range from_seq {wanted.from_seq} .. to_seq {wanted.to_seq} is empty "
                "(seqs start at 1, the range is inclusive)")
    if wanted.messages > max_messages:
        return (f"replay of {wanted.messages} messages is over replay_max_messages = "
                f"{max_messages}; ask for the range in parts")
    return None


def execute(store: Store, wanted: ReplayRange) -> tuple[Literal["executed", "failed"], str]:
    """Queue ``wanted`` for re-publishing from ``store``: the result's status and reason."""
    try:
        if wanted.epoch != store.epoch:
            return "failed", (f"{wanted.describe()}: not this store's epoch ({store.epoch:016x}; "
                              f"the store was replaced and that epoch's messages are gone); "
                              f"{_held(store.held_from())}")
        outcome = store.requeue(wanted.from_seq, wanted.to_seq)
    except StoreError as exc:
        return "failed", f"{wanted.describe()}: the store cannot be used ({exc}); ask again later"
    if isinstance(outcome, NotHeld):
        return "failed", (f"{wanted.describe()} is not held whole: {_held(outcome.held_from)} "
                          f"(last seq {outcome.last_seq}; acknowledged messages are kept "
                          "[store] retention_days after their acknowledgement)")
    return "executed", (f"{wanted.describe()}: {wanted.messages} messages re-sent with hist "
                        f"({outcome.requeued} queued again, {outcome.pending} not yet "
                        "acknowledged and sent once)")


def _held(held_from: int | None) -> str:
    return "nothing held" if held_from is None else f"oldest held seq {held_from}"
