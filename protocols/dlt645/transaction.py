"""One master/meter exchange as state machines: request → reply | follow-ups | refusal | timeout.

Two layers, both sans-IO:

* :class:`Transaction` — one *attempt*, at the level of decoded messages (below);
* :class:`Exchange` — the driver both I/O shells run (the daemon's asyncio bus task and ``gwtool``'s
  blocking link): fed bytes and the time, it says what to do next (:class:`Transmit`, :class:`Wait`)
  or how it ended (:class:`Answered`, :class:`Failed`), and owns the retry, timeout and stray-frame
  policy so that the two shells cannot drift apart again. See :class:`Exchange`.

Each layer keeps its states in one table: :data:`TRANSITIONS` for a transaction (keyed by state and
message event), :data:`EXCHANGE_TRANSITIONS` for the driver (keyed by phase and step). The exchange
starts a fresh :class:`Transaction` per attempt, sends its ``start()`` bytes, feeds it every decoded
frame and calls its ``timeout()`` when the deadline passes; the transaction says what to send next
(a follow-up request) and collects the replies. Tests and simulators may drive a transaction alone.

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
from .decoding import decode
from .encoding import encode
from .errors import (
    ExceptionReply,
    GarbledReply,
    LocalProtocolError,
    NoReply,
    ProtocolError,
    RemoteProtocolError,
    StrayReply,
    TransactionError,
    UnexpectedReply,
)
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
)
from .splitter import FrameSplitter

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


# -- the exchange driver ----------------------------------------------------------------------------


def char_time_s(baudrate: int, parity: str = "E", bytesize: int = 8, stopbits: int = 1) -> float:
    """Seconds one character takes on the wire: start bit, data bits, parity bit (unless ``N``), stop."""
    return (1 + bytesize + (0 if parity.upper() == "N" else 1) + stopbits) / baudrate


@dataclass(frozen=True, slots=True)
class ExchangePolicy:
    """How long to wait and how often to ask; the same numbers mean the same wire behaviour in both
    shells.

    Fields: ``reply_timeout_s`` (counted from the moment the request has *left the wire*: its bytes
    take ``char_time_s`` each, 4.6 ms at 2400 8E1, so a 20-byte request is ~92 ms of the budget
    otherwise), ``attempts`` (requests in all, ≥ 1), ``retry_backoff_s`` (pause before retry *n* is
    n × this: a meter that just garbled a reply is often mid-reset), ``turnaround_s`` (quiet time
    after a received frame before we transmit: DL/T 645-2007 §4.1.3 asks ≥ 20 ms), ``char_time_s``,
    ``link`` (how the line is named in errors, e.g. ``2400 8E1``).
    """

    reply_timeout_s: float = 0.5
    attempts: int = 2
    retry_backoff_s: float = 0.05
    turnaround_s: float = 0.020
    char_time_s: float = 11 / 2400
    link: str = "2400 8E1"

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise LocalProtocolError(f"an exchange needs at least 1 attempt, got {self.attempts}")
        if min(self.reply_timeout_s, self.retry_backoff_s, self.turnaround_s, self.char_time_s) < 0:
            raise LocalProtocolError("exchange times must not be negative")


@dataclass(frozen=True, slots=True)
class Transmit:
    """Put ``frame`` on the wire, not before ``not_before`` (monotonic seconds), then call
    :meth:`Exchange.sent`. Fields: ``frame``, ``not_before``, ``attempt`` (1-based), ``flush_input``
    (a new attempt: drop whatever the port buffered before it, it cannot be the answer),
    ``retry_after`` (why the previous attempt failed, when this is a retry)."""

    frame: bytes
    not_before: float
    attempt: int
    flush_input: bool
    retry_after: TransactionError | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send: feed what the port receives to :meth:`Exchange.receive` and call
    :meth:`Exchange.tick` once ``deadline`` (monotonic seconds) has passed. Field: ``deadline``."""

    deadline: float


@dataclass(frozen=True, slots=True)
class Answered:
    """The exchange is over and the meter answered (or, for a broadcast, the request left the wire).

    Fields: ``request``, ``replies`` (accepted replies in order, follow-ups included; empty for a
    broadcast), ``readings`` (of a read, decoded over the joined follow-ups), ``data`` (the joined
    value bytes), ``attempts`` (requests it took), ``ignored`` (frames heard that were not for us).
    """

    request: Message
    replies: tuple[Message, ...]
    readings: tuple[Reading, ...]
    data: bytes
    attempts: int
    ignored: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The exchange is over without an answer. Fields: ``request``, ``error`` (:class:`NoReply`,
    :class:`StrayReply`, :class:`GarbledReply` or the meter's :class:`ExceptionReply`), ``attempts``."""

    request: Message
    error: TransactionError | ExceptionReply
    attempts: int


Action = Transmit | Wait | Answered | Failed


class Phase(enum.Enum):
    IDLE = "idle"
    TRANSMIT = "transmit"  # a frame is ready; the shell has not said it left
    AWAIT_REPLY = "await_reply"  # reply timer running
    BACKOFF = "backoff"  # an attempt failed; the retry waits
    DRAIN = "drain"  # a broadcast is leaving the wire; nobody answers
    DONE = "done"
    FAILED = "failed"


class Step(enum.Enum):
    START = "start"
    SENT = "sent"
    SENT_BROADCAST = "sent_broadcast"
    NOTHING = "nothing"  # bytes or time that change nothing (partial frame, stray, echo, early tick)
    FOLLOW_UP = "follow_up"  # a reply with more_follows: ask for the next frame
    ANSWERED = "answered"
    REFUSED = "refused"  # the meter's abnormal reply: final, asking again gets the same answer
    ATTEMPT_FAILED = "attempt_failed"  # timeout or garbled reply, attempts left
    GAVE_UP = "gave_up"  # timeout or garbled reply, no attempts left
    RETRY_DUE = "retry_due"
    DRAINED = "drained"


#: (phase, step) → next phase, for :class:`Exchange`. A pair not listed is the *caller's* mistake
#: (``sent()`` with nothing to send, ``receive()`` before ``start()``): :class:`ExchangeMisuse` is
#: raised and nothing changes (h11's rule).
EXCHANGE_TRANSITIONS: Final[Mapping[tuple[Phase, Step], Phase]] = {
    (Phase.IDLE, Step.START): Phase.TRANSMIT,
    (Phase.TRANSMIT, Step.SENT): Phase.AWAIT_REPLY,
    (Phase.TRANSMIT, Step.SENT_BROADCAST): Phase.DRAIN,
    (Phase.TRANSMIT, Step.NOTHING): Phase.TRANSMIT,
    (Phase.AWAIT_REPLY, Step.NOTHING): Phase.AWAIT_REPLY,
    (Phase.AWAIT_REPLY, Step.FOLLOW_UP): Phase.TRANSMIT,
    (Phase.AWAIT_REPLY, Step.ANSWERED): Phase.DONE,
    (Phase.AWAIT_REPLY, Step.REFUSED): Phase.FAILED,
    (Phase.AWAIT_REPLY, Step.ATTEMPT_FAILED): Phase.BACKOFF,
    (Phase.AWAIT_REPLY, Step.GAVE_UP): Phase.FAILED,
    (Phase.BACKOFF, Step.NOTHING): Phase.BACKOFF,
    (Phase.BACKOFF, Step.RETRY_DUE): Phase.TRANSMIT,
    (Phase.DRAIN, Step.NOTHING): Phase.DRAIN,
    (Phase.DRAIN, Step.DRAINED): Phase.DONE,
    (Phase.DONE, Step.NOTHING): Phase.DONE,
    (Phase.FAILED, Step.NOTHING): Phase.FAILED,
}


class ExchangeMisuse(LocalProtocolError):
    """The shell called the driver out of order (a bug in the shell, not on the wire)."""


class Exchange:
    """One request to one meter, with retries, as a sans-IO driver.

    The shell loops: ``action = ex.start(now)``; on :class:`Transmit` it waits until ``not_before``,
    writes the frame and calls ``ex.sent(now)``; on :class:`Wait` it reads the port until the
    deadline, passing every chunk to ``ex.receive(chunk, now)`` and calling ``ex.tick(now)`` when the
    read times out; :class:`Answered` and :class:`Failed` end the exchange. All times are the shell's
    monotonic clock, in seconds; the driver reads no clock itself.

    Policy (one for the daemon and ``gwtool``; they used to differ):

    * **Timeouts.** The reply deadline is the moment the request has left the wire plus
      ``reply_timeout_s``. It is not extended by follow-ups' or strangers' frames, but each
      follow-up request gets its own full deadline.
    * **Retries.** A timeout or a garbled reply fails the *attempt*; the same request goes out again
      after ``retry_backoff_s`` × the failed attempt's number, until ``attempts`` are spent. A refusal
      (abnormal reply) is final at once: the meter understood us and would refuse again.
    * **Stray frames** — a checksum-valid frame that is not the addressee's reply: our own request
      echoed by a two-wire adapter, a late reply of the previous meter, another master's traffic.
      They are counted and the wait goes on; their addresses turn a final timeout into a
      :class:`StrayReply` ("… but 000000000007 answered — check the address").
    * **Undecodable frames** — checksum-valid but unusable. One that carries the addressee's address
      and the reply bit fails the attempt *now* as :class:`GarbledReply` (the daemon's old rule),
      anything else is a stray. The alternative (``gwtool``'s old rule: ignore all of them) waited
      out the whole timeout for a meter that had already answered and would not send again, and
      then reported "no reply" for a meter that did reply — a wrong diagnosis in the field.
    * **Noise** — bytes that form no valid frame are dropped by :class:`FrameSplitter`; if the deadline
      passes after some, the :class:`NoReply` says how many (a wrong baud rate looks exactly so).

    Counters: ``attempt``, ``ignored`` (stray frames), ``undecodable_frames``.
    """

    def __init__(self, request: Message, policy: ExchangePolicy, *, catalogue: Catalogue | None = None,
                 splitter: FrameSplitter | None = None, expects_reply: bool = True,
                 preamble: int = 4) -> None:
        self.request = request
        self.policy = policy
        self.catalogue = catalogue
        self.splitter = splitter if splitter is not None else FrameSplitter()
        self.expects_reply = expects_reply
        self.preamble = preamble
        self.phase = Phase.IDLE
        self.attempt = 0
        self.ignored = 0
        self.undecodable_frames = 0
        self._transaction = Transaction(request, expects_reply, catalogue)
        self._frame = b""
        self._deadline = 0.0
        self._last_rx = float("-inf")
        self._noise_mark = 0
        self._strays: list[str] = []
        self._action: Action = Wait(float("inf"))
        self._last_failure: TransactionError | None = None
        try:
            self._address_bytes = bytes.fromhex(request.address)[::-1]
        except ValueError:
            self._address_bytes = b""

    @property
    def action(self) -> Action:
        """What the shell should do now (the last answer given)."""
        return self._action

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    # -- inputs ---------------------------------------------------------------------------------------
    def start(self, now: float) -> Action:
        """The first request. Raises :class:`LocalProtocolError` for a request that cannot be encoded."""
        if self.phase is not Phase.IDLE:
            self._fire(Step.START)  # raises: start() twice
        frame = self._transaction.start(preamble=self.preamble)  # may raise; nothing changed yet
        self._fire(Step.START)
        self.attempt = 1
        self._frame = frame
        self._action = Transmit(frame, now, 1, True)
        return self._action

    def sent(self, now: float) -> Action:
        """The shell wrote the frame of the last :class:`Transmit` at ``now``."""
        broadcast = self._transaction.finished
        self._fire(Step.SENT_BROADCAST if broadcast else Step.SENT)
        assert isinstance(self._action, Transmit)
        wire = len(self._frame) * self.policy.char_time_s
        if self._action.flush_input:  # a new attempt: nothing heard before it counts
            self.splitter.clear()
            self._noise_mark = self._noise()
            self._strays.clear()
        if broadcast:
            self._deadline = now + wire + self.policy.turnaround_s
        else:
            self._deadline = now + wire + self.policy.reply_timeout_s
        self._action = Wait(self._deadline)
        return self._action

    def receive(self, data: bytes, now: float) -> Action:
        """Bytes the port received, read at ``now``. Outside the reply wait they are dropped."""
        if self.phase is not Phase.AWAIT_REPLY:
            self._fire(Step.NOTHING)
            return self._action
        if data:
            self._last_rx = now
        for raw in self.splitter.feed(data):
            if self._on_frame(raw, now):
                return self._action
        self._fire(Step.NOTHING)
        return self._action

    def tick(self, now: float) -> Action:
        """Time has passed; at or after a deadline this ends the wait."""
        if self.phase is Phase.AWAIT_REPLY and now >= self._deadline:
            self._transaction.timeout()
            others = tuple(self._strays)
            error: TransactionError
            if others:
                error = StrayReply(self.request.address, self.attempt, self.policy.link, others)
            else:
                error = NoReply(self.request.address, self.attempt, self.policy.link,
                                noise_bytes=self._noise() - self._noise_mark)
            self._attempt_failed(error, now)
        elif self.phase is Phase.BACKOFF and now >= self._deadline:
            self._fire(Step.RETRY_DUE)
            self.attempt += 1
            self._transaction = Transaction(self.request, self.expects_reply, self.catalogue)
            self._frame = self._transaction.start(preamble=self.preamble)
            self._action = Transmit(self._frame, max(now, self._last_rx + self.policy.turnaround_s),
                                    self.attempt, True, self._last_failure)
        elif self.phase is Phase.DRAIN and now >= self._deadline:
            self._fire(Step.DRAINED)
            self._answer()
        else:
            self._fire(Step.NOTHING)
        return self._action

    # -- internals ------------------------------------------------------------------------------------
    def _fire(self, step: Step) -> Phase:
        try:
            self.phase = EXCHANGE_TRANSITIONS[(self.phase, step)]
        except KeyError:
            raise ExchangeMisuse(f"{step.value} is not allowed in phase {self.phase.value}") from None
        return self.phase

    def _noise(self) -> int:
        """Bytes heard that made no frame; a partial frame still buffered at the deadline is noise too."""
        return self.splitter.garbage_bytes + self.splitter.buffered

    def _on_frame(self, raw: bytes, now: float) -> bool:
        """Handle one checksum-valid frame; True when it moved the exchange on."""
        tx = self._transaction
        try:
            message = decode(raw, self.catalogue)
        except RemoteProtocolError as exc:
            self.undecodable_frames += 1
            if raw[1:7] == self._address_bytes and raw[8] & 0x80:
                self._attempt_failed(self._garbled(exc), now)
                return True
            self.ignored += 1
            return False
        if (not _is_request(message) and not tx._from_addressee(message)
                and message.address not in self._strays):
            self._strays.append(message.address)
        before = tx.ignored
        try:
            follow = tx.receive(message)
        except ExceptionReply as exc:
            self._fire(Step.REFUSED)
            self._action = Failed(self.request, exc, self.attempt)
            return True
        except ProtocolError as exc:
            self._attempt_failed(self._garbled(exc), now)
            return True
        self.ignored += tx.ignored - before
        if follow is not None:
            self._fire(Step.FOLLOW_UP)
            self._frame = follow
            self._action = Transmit(follow, now + self.policy.turnaround_s, self.attempt, False)
            return True
        if tx.state is State.DONE:
            self._fire(Step.ANSWERED)
            self._answer()
            return True
        return False

    def _garbled(self, cause: ProtocolError) -> GarbledReply:
        return GarbledReply(self.request.address, self.attempt, self.policy.link, cause)

    def _attempt_failed(self, error: TransactionError, now: float) -> None:
        if self.attempt < self.policy.attempts:
            self._fire(Step.ATTEMPT_FAILED)
            self._last_failure = error
            self._deadline = now + self.policy.retry_backoff_s * self.attempt
            self._action = Wait(self._deadline)
        else:
            self._fire(Step.GAVE_UP)
            self._action = Failed(self.request, error, self.attempt)

    def _answer(self) -> None:
        tx = self._transaction
        self._action = Answered(self.request, tuple(tx.replies), tuple(tx.readings), bytes(tx.data),
                                self.attempt, self.ignored)
