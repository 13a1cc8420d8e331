"""One master/meter exchange as a state machine: request → reply | follow-ups | refusal | timeout.

Everything that affects the state lives in :data:`TRANSITIONS`, keyed by (state, event). The caller
(the gateway's bus task, or ``gwtool read``) owns the wire and the clock: it sends
:meth:`Transaction.start`'s bytes, feeds every decoded frame to :meth:`Transaction.receive`, and calls
:meth:`Transaction.timeout` when its timer fires. The machine says what to send next.

Why frames are *ignored* rather than rejected: on a multi-drop RS-485 line the master hears its own
request echoed by many adapters, and a late reply from the previous meter can still arrive. Neither
is an error of the meter we are talking to; they are counted (``ignored``) and the wait goes on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .catalogue import Catalogue, catalogue_for
from .errors import ExceptionReply, ProtocolError, RemoteProtocolError, UnexpectedReply
from .frame import FUNCTION_TABLE, Version
from .items import Reading
from .messages import (
    AckReply,
    ErrorReply,
    Message,
    ReadAddressReply,
    ReadFollowupReply,
    ReadFollowupRequest,
    ReadReply,
    ReadRequest,
    TimeSyncRequest,
    encode,
)

MAX_FOLLOWUPS: Final = 32


class State(enum.Enum):
    IDLE = "idle"
    AWAITING_REPLY = "awaiting_reply"
    AWAITING_FOLLOWUP = "awaiting_followup"
    DONE = "done"
    FAILED = "failed"


class Event(enum.Enum):
    START = "start"
    FINAL_REPLY = "final_reply"  # answers the request, no more frames
    PARTIAL_REPLY = "partial_reply"  # answers it, more_follows set
    REFUSAL = "refusal"  # abnormal reply
    STRAY = "stray"  # echo of a request, or another meter's frame
    TIMEOUT = "timeout"


#: (state, event) → next state. A pair not listed is a protocol error (the machine fails closed).
TRANSITIONS: Final[Mapping[tuple[State, Event], State]] = {
    (State.IDLE, Event.START): State.AWAITING_REPLY,
    (State.AWAITING_REPLY, Event.FINAL_REPLY): State.DONE,
    (State.AWAITING_REPLY, Event.PARTIAL_REPLY): State.AWAITING_FOLLOWUP,
    (State.AWAITING_REPLY, Event.REFUSAL): State.FAILED,
    (State.AWAITING_REPLY, Event.STRAY): State.AWAITING_REPLY,
    (State.AWAITING_REPLY, Event.TIMEOUT): State.FAILED,
    (State.AWAITING_FOLLOWUP, Event.FINAL_REPLY): State.DONE,
    (State.AWAITING_FOLLOWUP, Event.PARTIAL_REPLY): State.AWAITING_FOLLOWUP,
    (State.AWAITING_FOLLOWUP, Event.REFUSAL): State.FAILED,
    (State.AWAITING_FOLLOWUP, Event.STRAY): State.AWAITING_FOLLOWUP,
    (State.AWAITING_FOLLOWUP, Event.TIMEOUT): State.FAILED,
    (State.DONE, Event.STRAY): State.DONE,
    (State.FAILED, Event.STRAY): State.FAILED,
}


class TransactionError(RemoteProtocolError):
    """The exchange cannot continue (timeout, or an event the state does not allow)."""


@dataclass
class Transaction:
    """A request and what came back for it.

    Fields after completion: ``state``, ``replies`` (every accepted reply, in order), ``readings``
    (for reads: all readings of the reply and its follow-ups), ``data`` (concatenated value bytes),
    ``ignored`` (stray frames seen), ``error`` (the exception when FAILED).
    """

    request: Message
    expects_reply: bool = True
    catalogue: Catalogue | None = None
    state: State = State.IDLE
    replies: list[Message] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ignored: int = 0
    error: Exception | None = None
    _followups: int = 0

    def _fire(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            self.state = State.FAILED
            raise TransactionError(f"event {event.value} is not allowed in state {self.state.value}") from None
        return self.state

    @property
    def finished(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def start(self, *, preamble: int = 4) -> bytes:
        """The request frame to send (with FE wake-up bytes, as most meters expect)."""
        self._fire(Event.START)
        if not self.expects_reply or isinstance(self.request, TimeSyncRequest):
            self.state = State.DONE  # broadcast: nobody answers
        return encode(self.request, preamble=preamble)

    def _from_addressee(self, message: Message) -> bool:
        req_address = self.request.address
        if "A" in req_address:  # wildcard request: any single meter may answer
            return True
        return message.address == req_address

    def _answers_request(self, message: Message) -> bool:
        req = self.request
        if getattr(message, "version", None) != getattr(req, "version", Version.V2007):
            return False
        if isinstance(message, ErrorReply | AckReply):
            return message.function == _function_name(req)
        if isinstance(req, ReadRequest | ReadFollowupRequest):
            return isinstance(message, ReadReply | ReadFollowupReply) and message.di == req.di
        return _function_name(message) == _function_name(req)

    def receive(self, message: Message) -> bytes | None:
        """Feed one decoded frame. Returns the next frame to send (a follow-up request) or ``None``.

        Raises :class:`ExceptionReply` when the meter refuses, :class:`UnexpectedReply` when a reply
        from the addressed meter answers something else.
        """
        if _is_request(message) or self.finished or not self._from_addressee(message):
            self.ignored += 1
            self._fire(Event.STRAY)
            return None
        if not self._answers_request(message):
            self.state = State.FAILED
            self.error = UnexpectedReply(
                f"meter {message.address} answered {type(message).__name__} "
                f"to {type(self.request).__name__}"
            )
            raise self.error
        if isinstance(message, ErrorReply):
            self._fire(Event.REFUSAL)
            self.error = ExceptionReply(message.address, message.function, message.error_word,
                                        message.errors)
            raise self.error
        handler = _REPLY_HANDLERS.get(type(message), _accept_plain)
        return handler(self, message)

    def timeout(self) -> None:
        """The caller's reply timer fired."""
        if self.finished:
            return
        self._fire(Event.TIMEOUT)
        self.error = TransactionError("no reply before the timeout")


def _is_request(message: Message) -> bool:
    return type(message).__name__.endswith("Request")


def _function_name(message: Message) -> str:
    """The function a message belongs to, from its encoded control byte (one source of truth)."""
    code = encode(message)[8] & 0x1F
    return FUNCTION_TABLE[code][1]


def _accept_plain(t: Transaction, message: Message) -> bytes | None:
    t.replies.append(message)
    t._fire(Event.FINAL_REPLY)
    return None


def _accept_read(t: Transaction, message: Message) -> bytes | None:
    assert isinstance(message, ReadReply | ReadFollowupReply)
    t.replies.append(message)
    t.data += message.data
    if not message.more_follows:
        if len(t.replies) == 1:
            t.readings.extend(message.readings)
        else:  # decode the joined data of all frames: items may straddle frame boundaries
            catalogue = t.catalogue or catalogue_for(message.version)
            try:
                t.readings.extend(catalogue.decode(message.di, bytes(t.data)))
            except ProtocolError:
                t.state = State.FAILED
                raise
        t._fire(Event.FINAL_REPLY)
        return None
    t._followups += 1
    if t._followups > MAX_FOLLOWUPS:
        t.state = State.FAILED
        t.error = TransactionError(f"meter {message.address} sent more than {MAX_FOLLOWUPS} follow-ups")
        raise t.error
    t._fire(Event.PARTIAL_REPLY)
    follow = ReadFollowupRequest(message.address, message.di, t._followups, message.version)
    return encode(follow, preamble=4)


_REPLY_HANDLERS: Final[Mapping[type, Callable[[Transaction, Message], bytes | None]]] = {
    ReadReply: _accept_read,
    ReadFollowupReply: _accept_read,
    ReadAddressReply: _accept_plain,
}
