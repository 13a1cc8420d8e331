"""One simulated RS-485 line on a pseudo-terminal: several DL/T 645 meters multi-dropped on it.

The simulator holds the pty *master*; clients (the gateway, ``gwtool``, a test with pyserial) open the
*slave* path (``/dev/pts/N``) as if it were a USB-RS485 adapter. A pty moves bytes instantly, so the
line re-creates the timing of a real 8E1 line itself:

* **Characters take 11 bit times** (start + 8 data + even parity + stop): a character lasts
  ``11 / baud`` seconds — 4.583 ms at 2400 baud.
* **The request has a wire time too.** The client's ``write()`` lands in the pty at once; on a real
  line the last request byte would arrive ``len × 11 / baud`` later. Every received byte is therefore
  time-stamped as ``max(previous byte's end, moment read) + 11 / baud`` (at the *client's* configured
  speed, read from the pty's termios), and a frame counts as received at its last byte's end.
* **Response delay.** A meter starts answering ``Td`` after the end of the request (DL/T 645-2007
  §3 allows 20 ms ≤ Td ≤ 500 ms).
* **Replies are paced**, not burst: byte ``k`` of a reply is written to the pty at
  ``start + k × 11 / baud`` (in chunks of at most ~4 ms of line time), so a reader sees a slow line.
* **Half duplex.** A request whose wire time overlaps a reply being transmitted is a collision: the
  meters never hear it (``LineStats.collisions``). Replies from several meters that answer the same
  wildcard request collide too: the line carries the bitwise AND of their bytes (RS-485 receivers of
  overdriven lines typically see the dominant zeros), which is garbage — see :func:`collide`.
* **Speed.** A meter only understands a request sent at its own baud rate: a client configured for
  another speed would, on a real line, deliver framing errors. With ``check_client_baud`` (default)
  such requests are ignored and counted in ``MeterStats.wrong_baud``. (Linux ptys ignore parity, so
  8E1 vs 8N1 cannot be checked.)

All timing runs on ``time.perf_counter`` against absolute deadlines (no accumulated sleeps), in one
daemon thread per line that waits in ``select`` on the master and a wake-up pipe.

Fault injection is per meter and changeable while the line runs (:meth:`Dlt645Line.set_faults`): see
:class:`Faults`. Nothing here knows what a meter *means*; that is :mod:`hil_tests.dlt645_sim`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import random
import select
import termios
import threading
import time
import tty
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from protocols.dlt645 import FrameSplitter, ProtocolError, RawFrame, build_frame, parse_frame
from protocols.dlt645.catalogue import ERROR_WORD_1997, ERROR_WORD_2007
from protocols.dlt645.frame import BROADCAST_ADDRESS, HEADER_LENGTH, PREAMBLE, Function

#: 8E1: start bit, 8 data bits, even parity, stop bit.
BITS_PER_CHARACTER: Final = 11
#: DL/T 645-2007 response delay window Td.
MIN_RESPONSE_DELAY_MS: Final = 20
MAX_RESPONSE_DELAY_MS: Final = 500
#: Pacing granularity: write at most this much line time per chunk (never less than one byte).
CHUNK_LINE_TIME_S: Final = 0.004
#: Speeds a DL/T 645 meter can be set to (the 17H baud word has one bit per speed).
DLT645_BAUDRATES: Final = (600, 1200, 2400, 4800, 9600, 19200)

log = logging.getLogger(__name__)

#: 1CH, relay control (DL/T 645-2007 §7.10): the frames a rejected command must never cause.
_CONTROL_FUNCTION: Final = Function.CONTROL

_TERMIOS_SPEEDS: Final[Mapping[int, int]] = {
    getattr(termios, f"B{rate}"): rate
    for rate in (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
                 38400, 57600, 115200, 230400)
    if hasattr(termios, f"B{rate}")
}


def character_time(baudrate: int) -> float:
    """Seconds one 8E1 character occupies the line."""
    return BITS_PER_CHARACTER / baudrate


def wire_time(length: int, baudrate: int) -> float:
    """Seconds ``length`` characters occupy the line at ``baudrate`` (8E1)."""
    return length * BITS_PER_CHARACTER / baudrate


# ---------------------------------------------------------------------------------------------------
# What the line needs from a meter (implemented by hil_tests.dlt645_sim.Dlt645Meter).


@dataclass(frozen=True, slots=True)
class MeterResponse:
    """A meter's answer to one request: ``frame`` to send (None = stay silent) and ``new_baudrate``
    to switch to once the reply has left the line (17H change baud)."""

    frame: bytes | None = None
    new_baudrate: int | None = None


class LineMeter(Protocol):
    """A meter as the line sees it: an address, an edition, and a request → response function."""

    @property
    def address(self) -> str: ...

    @property
    def edition(self) -> int: ...

    def handle(self, frame: RawFrame) -> MeterResponse:
        """Answer one checksum-valid frame that addresses this meter. Called when the frame's last
        byte has left the wire; the meter's own (simulated) clock says what time that is."""
        ...

    def refusal(self, frame: RawFrame, error: str) -> bytes | None:
        """An abnormal reply to ``frame`` carrying error ``error`` (a name of the error word)."""
        ...


def address_matches(meter_address: str, request_address: str) -> bool:
    """True when a request address reaches this meter: equal, AA wildcard bytes, or 99..99 broadcast.

    DL/T 645-2007 §4.1.2: ``AA`` in any byte matches every value of that byte (so ``AAAAAAAAAAAA``
    reaches every meter on the line, and ``AAAAAAAAAA25`` every meter ending in 25).
    """
    if request_address == BROADCAST_ADDRESS:
        return True
    return all(
        r == m or r == "AA"
        for r, m in zip(
            (request_address[i : i + 2] for i in range(0, 12, 2)),
            (meter_address[i : i + 2] for i in range(0, 12, 2)),
            strict=True,
        )
    )


# ---------------------------------------------------------------------------------------------------
# Faults


_ERROR_NAMES: Final = frozenset(n for n in (*ERROR_WORD_2007, *ERROR_WORD_1997) if n)


@dataclass(frozen=True, slots=True)
class Faults:
    """What to do wrong, per meter. The defaults are a healthy meter.

    Fields:

    * ``no_reply`` — stay silent (the request is still seen and acted on).
    * ``late_s`` — extra seconds added to the response delay (set it beyond the client's timeout).
    * ``corrupt_checksum`` — send the reply with its CS byte off by one.
    * ``noise_before`` / ``noise_inside`` — that many random bytes before the frame (before its FE
      preamble) / spliced into the middle of its data field, as a relay switching nearby would.
    * ``truncate`` — drop that many bytes from the end of the reply (2 drops CS and 16H).
    * ``wrong_address`` — reply (with a correct checksum) as this other address.
    * ``error`` — answer with an abnormal reply carrying this error word bit instead, e.g.
      ``no_data`` or ``password_error`` (names of the -2007 / -1997 error word).
    * ``preamble`` — FE wake-up bytes in front of every reply (0..16).
    * ``count`` — apply to the next ``count`` replies only, then revert to healthy (None = until
      changed).

    Faults act on replies only; a meter still *acts* on the request (a trip with ``no_reply`` set
    still opens the relay — exactly the case a gateway must handle by reading the status back).
    """

    no_reply: bool = False
    late_s: float = 0.0
    corrupt_checksum: bool = False
    noise_before: int = 0
    noise_inside: int = 0
    truncate: int = 0
    wrong_address: str | None = None
    error: str | None = None
    preamble: int = 0
    count: int | None = None

    def __post_init__(self) -> None:
        if self.late_s < 0:
            raise ValueError(f"late_s must be >= 0 seconds, got {self.late_s}")
        for name in ("noise_before", "noise_inside", "truncate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 bytes, got {getattr(self, name)}")
        if not 0 <= self.preamble <= 16:
            raise ValueError(f"preamble must be 0..16 FE bytes, got {self.preamble}")
        if self.error is not None and self.error not in _ERROR_NAMES:
            raise ValueError(
                f"error must be one of {sorted(_ERROR_NAMES)} (DL/T 645 error word bits), "
                f"got {self.error!r}"
            )
        if self.wrong_address is not None and (
            len(self.wrong_address) != 12 or not self.wrong_address.isdigit()
        ):
            raise ValueError(f"wrong_address must be 12 digits, got {self.wrong_address!r}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1 (or None for 'until changed'), got {self.count}")

    @property
    def healthy(self) -> bool:
        return replace(self, count=None) == Faults()


HEALTHY: Final = Faults()


def mangle_reply(frame: bytes, faults: Faults, rng: random.Random) -> bytes:
    """Apply the byte-level faults to one reply frame (no preamble in ``frame``); pure but for ``rng``.

    Order: wrong address (re-built, so its checksum is right), corrupt checksum, noise inside,
    truncation, then FE preamble and noise in front.
    """
    out = bytearray(frame)
    if faults.wrong_address is not None:
        raw = parse_frame(frame)
        out = bytearray(build_frame(faults.wrong_address, raw.control, raw.data))
    if faults.corrupt_checksum:
        out[-2] = (out[-2] + 1) & 0xFF
    if faults.noise_inside:
        middle = HEADER_LENGTH + (len(out) - HEADER_LENGTH - 2) // 2
        out[middle:middle] = rng.randbytes(faults.noise_inside)
    if faults.truncate:
        del out[max(0, len(out) - faults.truncate) :]
    return rng.randbytes(faults.noise_before) + bytes([PREAMBLE]) * faults.preamble + bytes(out)


def collide(transmissions: Sequence[bytes]) -> bytes:
    """What the line carries when several meters answer at once: the bytewise AND of their bytes.

    A model, not physics: on a real RS-485 line the drivers fight and the receiver sees bit errors,
    mostly in the direction of the stronger driver. AND keeps it deterministic. Should the result
    happen to be a checksum-valid frame (possible when the replies differ only in a few bits), its
    checksum byte is inverted: a collision must never look like a good reply.
    """
    length = max(len(t) for t in transmissions)
    padded = [t.ljust(length, b"\xff") for t in transmissions]  # idle line reads as 1s
    merged = bytearray(padded[0])
    for t in padded[1:]:
        for i, b in enumerate(t):
            merged[i] &= b
    probe = FrameSplitter()
    if probe.feed(bytes(merged)):
        end = merged.rfind(0x16)
        merged[end - 1] ^= 0xFF
    return bytes(merged)


# ---------------------------------------------------------------------------------------------------
# Statistics


@dataclass
class MeterStats:
    """Per meter: ``requests_seen`` (frames that addressed it, broadcasts included),
    ``replies_sent`` (frames it put on the line, faulty ones included), ``faults_applied`` (replies
    altered or suppressed by :class:`Faults`), ``wrong_baud`` (requests sent at another speed),
    ``last_request_real_time`` (perf_counter at the end of the last request it heard),
    ``control_frames`` (1CH relay-control requests that addressed it, whether or not it could
    hear or obey them: the proof that a rejected command put nothing on the bus) and
    ``control_frame_starts`` (perf_counter at which each of those frames' first byte — the 68H
    after the FE preamble — started on the modelled wire, oldest first)."""

    requests_seen: int = 0
    replies_sent: int = 0
    faults_applied: int = 0
    wrong_baud: int = 0
    last_request_real_time: float | None = None
    control_frames: int = 0
    control_frame_starts: list[float] = field(default_factory=list)


@dataclass
class LineStats:
    """Per line: ``bytes_received`` from the client, ``bytes_sent`` to it, ``frames`` parsed,
    ``garbage_bytes`` and ``checksum_errors`` in what the client sent, ``collisions`` (requests
    sent while a reply was on the line, plus multi-meter replies), ``unaddressed`` (frames no meter
    on the line answers to), ``overrun_bytes`` (reply bytes dropped because the client was not
    reading and the pty buffer was full — a real UART would overrun too), ``meter_errors``
    (exceptions raised by a simulated meter's code: bugs, logged with their traceback)."""

    bytes_received: int = 0
    bytes_sent: int = 0
    frames: int = 0
    garbage_bytes: int = 0
    checksum_errors: int = 0
    collisions: int = 0
    unaddressed: int = 0
    overrun_bytes: int = 0
    meter_errors: int = 0


# ---------------------------------------------------------------------------------------------------
# The line


@dataclass
class _Port:
    """The line's view of one meter: its current speed, delay, faults and counters."""

    meter: LineMeter
    baudrate: int
    response_delay_s: float
    faults: Faults = HEALTHY
    stats: MeterStats = field(default_factory=MeterStats)


@dataclass
class _Transmission:
    data: bytes
    baudrate: int
    start: float = 0.0
    sent: int = 0
    switch: tuple[_Port, int] | None = None  # (port, new baud) once the last byte has gone


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A request frame whose last byte has (in line time) just left the wire."""

    frame: bytes
    client_baud: int
    first_byte_start: float


@dataclass(order=True)
class _Event:
    due: float
    seq: int
    payload: _Arrival | _Transmission = field(compare=False)


class Dlt645Line:
    """N meters on one pty. Start with :meth:`start`; the slave path is :attr:`device`.

    ``baudrate`` and ``response_delay_ms`` are the starting values of every meter; per-meter values
    change with :meth:`set_response_delay` and the meters' own 17H baud changes.
    """

    def __init__(
        self,
        meters: Sequence[LineMeter],
        *,
        baudrate: int = 2400,
        response_delay_ms: float = 20,
        seed: int = 0,
        check_client_baud: bool = True,
    ) -> None:
        if not meters:
            raise ValueError("a line needs at least one meter")
        if baudrate not in DLT645_BAUDRATES:
            raise ValueError(f"baudrate must be one of {DLT645_BAUDRATES} (DL/T 645), got {baudrate}")
        _check_delay(response_delay_ms)
        addresses = [m.address for m in meters]
        duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
        if duplicates:
            raise ValueError(f"two meters on one line share address {', '.join(duplicates)}")
        self.baudrate = baudrate
        self.check_client_baud = check_client_baud
        self._ports = {
            m.address: _Port(m, baudrate, response_delay_ms / 1000.0) for m in meters
        }
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._stats = LineStats()
        self._splitter = FrameSplitter()
        self._rx_end = 0.0  # when the last received byte finishes on the wire
        self._tx_busy_until = 0.0
        self._events: list[_Event] = []
        self._seq = itertools.count()
        self._active: _Transmission | None = None
        self._queued: list[_Transmission] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master = -1
        self._slave = -1
        self._wake_r = -1
        self._wake_w = -1
        self._cut = False
        self.device = ""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Dlt645Line:
        """Open the pty and start the line thread. Returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("line already started")
        self._master, self._slave = os.openpty()
        # The slave stays open here so the master never sees EIO between client sessions, and raw
        # so that nothing echoes our replies back or rewrites bytes before a client sets it up.
        tty.setraw(self._slave)
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = _speed_constant(self.baudrate)
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.device = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._run, name=f"dlt645-line {self.device}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the pty (clients then see the device vanish). Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake()
            thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1

    def __enter__(self) -> Dlt645Line:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control (any thread) -------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        return list(self._ports)

    def meter(self, address: str) -> LineMeter:
        return self._port(address).meter

    def set_faults(self, address: str, faults: Faults | None = None, **knobs: object) -> None:
        """Set the faults of one meter: a :class:`Faults`, or keyword knobs (``no_reply=True``).
        ``set_faults(addr)`` with nothing makes the meter healthy again."""
        new = faults if faults is not None else Faults(**knobs)  # type: ignore[arg-type]
        with self._lock:
            self._port(address).faults = new

    def set_cut(self, cut: bool = True) -> None:
        """Cut (``True``) or mend (``False``) the RS-485 pair between the client and every meter
        of the line: while cut, requests reach no meter and nothing answers, but the pty stays
        open — a severed pair or a dead adapter that still enumerates, not an unplugged one."""
        with self._lock:
            self._cut = cut

    @property
    def cut(self) -> bool:
        with self._lock:
            return self._cut

    def faults(self, address: str) -> Faults:
        with self._lock:
            return self._port(address).faults

    def set_response_delay(self, address: str, response_delay_ms: float) -> None:
        _check_delay(response_delay_ms)
        with self._lock:
            self._port(address).response_delay_s = response_delay_ms / 1000.0

    def baudrate_of(self, address: str) -> int:
        """The speed the meter currently talks at (changes after a 17H request)."""
        with self._lock:
            return self._port(address).baudrate

    @property
    def stats(self) -> dict[str, MeterStats]:
        """A copy of every meter's counters, by address."""
        with self._lock:
            return {a: replace(p.stats, control_frame_starts=list(p.stats.control_frame_starts))
                    for a, p in self._ports.items()}

    @property
    def line_stats(self) -> LineStats:
        with self._lock:
            s = replace(self._stats)
        s.garbage_bytes = self._splitter.garbage_bytes
        s.checksum_errors = self._splitter.checksum_errors
        return s

    def _port(self, address: str) -> _Port:
        try:
            return self._ports[address]
        except KeyError:
            raise KeyError(
                f"no meter {address} on this line; it carries {', '.join(self._ports)}"
            ) from None

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    # -- the line thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            deadline = self._next_deadline()
            timeout = 0.5 if deadline is None else min(0.5, max(0.0, deadline - now))
            try:
                readable, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return  # closed under us
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 64)
            if self._master in readable:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    return
                if data:
                    self._receive(data, time.perf_counter())
            self._run_due(time.perf_counter())

    def _client_baudrate(self) -> int | None:
        """The speed the client configured on the slave side (visible through the master's termios)."""
        try:
            speed = termios.tcgetattr(self._master)[4]
        except termios.error:
            return None
        return _TERMIOS_SPEEDS.get(speed)

    def _receive(self, data: bytes, now: float) -> None:
        client_baud = self._client_baudrate() or self.baudrate
        char = character_time(client_baud)
        with self._lock:
            if self._cut:
                return  # the pair is cut: the bytes never reach a meter
            self._stats.bytes_received += len(data)
            for i in range(len(data)):
                byte_start = max(self._rx_end, now)
                self._rx_end = byte_start + char
                for frame in self._splitter.feed(data[i : i + 1]):
                    self._stats.frames += 1
                    first_byte_start = self._rx_end - wire_time(len(frame), client_baud)
                    self._push(self._rx_end, _Arrival(frame, client_baud, first_byte_start))

    def _push(self, due: float, payload: _Arrival | _Transmission) -> None:
        heapq.heappush(self._events, _Event(due, next(self._seq), payload))

    def _next_deadline(self) -> float | None:
        with self._lock:
            times = [self._events[0].due] if self._events else []
            if self._active is not None:
                t = self._active
                chunk = max(1, int(CHUNK_LINE_TIME_S / character_time(t.baudrate)))
                times.append(t.start + wire_time(min(len(t.data), t.sent + chunk), t.baudrate))
            return min(times) if times else None

    def _run_due(self, now: float) -> None:
        with self._lock:
            while self._events and self._events[0].due <= now:
                event = heapq.heappop(self._events)
                payload = event.payload
                if isinstance(payload, _Arrival):
                    self._arrive(payload, event.due)
                else:
                    payload.start = event.due
                    self._queued.append(payload)
            self._pump(now)

    def _arrive(self, arrival: _Arrival, end: float) -> None:
        raw = parse_frame(arrival.frame)
        if raw.control.reply:
            return  # another meter's reply (e.g. a client replaying traffic): meters ignore it
        ports = [p for a, p in self._ports.items() if address_matches(a, raw.address)]
        if raw.control.function == _CONTROL_FUNCTION:
            # Counted before the collision check: a control frame that nobody could hear was
            # still put on the bus, and tests assert that rejected commands put none there.
            for port in ports:
                port.stats.control_frames += 1
                port.stats.control_frame_starts.append(arrival.first_byte_start)
        if arrival.first_byte_start < self._tx_busy_until:
            self._stats.collisions += 1  # we were talking: nobody could hear the request
            return
        client_baud = arrival.client_baud
        if not ports:
            self._stats.unaddressed += 1
            return
        replies: list[tuple[float, _Port, bytes, int | None]] = []
        for port in ports:
            port.stats.requests_seen += 1
            port.stats.last_request_real_time = end
            if self.check_client_baud and client_baud != port.baudrate:
                port.stats.wrong_baud += 1
                continue
            try:
                response = port.meter.handle(raw)
            except ProtocolError:
                continue  # a frame the meter cannot make sense of: real meters stay silent
            except Exception:
                # A bug in a simulated meter must not kill the line thread for every other meter.
                log.exception("simulated meter %s failed on frame %s", port.meter.address,
                              arrival.frame.hex(" ").upper())
                self._stats.meter_errors += 1
                continue
            if response.frame is None:
                continue
            sent = self._apply_faults(port, raw, response.frame)
            if sent is None:
                if response.new_baudrate is not None:
                    port.baudrate = response.new_baudrate
                continue
            data, late = sent
            replies.append((end + port.response_delay_s + late, port, data, response.new_baudrate))
        if not replies:
            return
        if len(replies) > 1:
            self._stats.collisions += 1
            due = max(r[0] for r in replies)
            for _, port, _, new_baud in replies:
                port.stats.replies_sent += 1
                if new_baud is not None:
                    port.baudrate = new_baud
            garbage = collide([r[2] for r in replies])
            self._push(due, _Transmission(garbage, replies[0][1].baudrate))
            return
        due, port, data, new_baud = replies[0]
        port.stats.replies_sent += 1
        switch = (port, new_baud) if new_baud is not None else None
        self._push(due, _Transmission(data, port.baudrate, switch=switch))

    def _apply_faults(
        self, port: _Port, raw: RawFrame, frame: bytes
    ) -> tuple[bytes, float] | None:
        faults = port.faults
        if faults.healthy:
            return frame, 0.0
        port.stats.faults_applied += 1
        if faults.count is not None:
            port.faults = HEALTHY if faults.count <= 1 else replace(faults, count=faults.count - 1)
        if faults.no_reply:
            return None
        if faults.error is not None:
            refusal = port.meter.refusal(raw, faults.error)
            if refusal is not None:
                frame = refusal
        return mangle_reply(frame, faults, self._rng), faults.late_s

    def _pump(self, now: float) -> None:
        """Start queued transmissions when the line is free; write every byte that is due."""
        while True:
            if self._active is None:
                if not self._queued:
                    return
                t = self._queued.pop(0)
                # Absolute schedule: a thread that woke late catches up instead of shifting the reply.
                t.start = max(t.start, self._tx_busy_until)
                self._tx_busy_until = t.start + wire_time(len(t.data), t.baudrate)
                self._active = t
            t = self._active
            due = min(len(t.data), int((now - t.start) / character_time(t.baudrate) + 1e-9))
            if due > t.sent:
                chunk = t.data[t.sent : due]
                try:
                    written = os.write(self._master, chunk)
                except (BlockingIOError, InterruptedError):
                    written = 0
                except OSError:
                    written = 0
                self._stats.bytes_sent += written
                self._stats.overrun_bytes += len(chunk) - written
                t.sent = due
            if t.sent < len(t.data):
                return
            if t.switch is not None:
                port, baud = t.switch
                port.baudrate = baud
            self._active = None


def _check_delay(response_delay_ms: float) -> None:
    if not MIN_RESPONSE_DELAY_MS <= response_delay_ms <= MAX_RESPONSE_DELAY_MS:
        raise ValueError(
            f"response delay must be {MIN_RESPONSE_DELAY_MS}..{MAX_RESPONSE_DELAY_MS} ms "
            f"(DL/T 645 Td), got {response_delay_ms}; use Faults(late_s=...) for a late meter"
        )


def _speed_constant(baudrate: int) -> int:
    for constant, rate in _TERMIOS_SPEEDS.items():
        if rate == baudrate:
            return constant
    raise ValueError(f"no termios speed constant for {baudrate} baud")
