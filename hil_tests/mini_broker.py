"""A small MQTT 3.1.1 broker in asyncio, for ``edge-gateway demo`` on machines without mosquitto.

It exists so that the demo runs on a fresh machine: the gateway needs *a* broker, and the test
suite and production use mosquitto. This one implements what the gateway and a consumer rely on,
and refuses the rest instead of half-doing it:

* CONNECT/CONNACK with clean and persistent sessions. A persistent session keeps its
  subscriptions, queues QoS 1 messages while its client is away (bounded: ``max_queued`` per
  client, newer messages are dropped and counted once it is full, as mosquitto's
  ``max_queued_messages`` does) and re-sends unacknowledged ones with DUP set on reconnect
  (MQTT-4.4.0-1). A client id already connected is taken over: the old connection is closed.
* PUBLISH at QoS 0 and 1 (PUBACK once routed). QoS 2 is refused by closing the connection, which
  is what a server that does not support it may do; the gateway never uses it.
* Retained messages, replayed with RETAIN set on subscribe; an empty retained payload clears the
  topic (and is still forwarded to current subscribers, MQTT-3.3.1-10/11).
* SUBSCRIBE/UNSUBSCRIBE with ``+`` and ``#``; granted QoS is at most 1. Topics starting with ``$``
  are not matched by a leading wildcard (MQTT-4.7.2-1). Overlapping subscriptions of one client
  get one copy at the highest granted QoS.
* Last will (QoS and retain) when a connection ends without DISCONNECT: end of stream, a socket
  error, a protocol violation, a takeover, or keepalive expiry — nothing received for 1.5 × the
  client's keepalive (MQTT-3.1.2-24).
* PINGREQ/PINGRESP, DISCONNECT (discards the will).

No authentication (anonymous only), no persistence to disk, no TLS, no bridging, no ``$SYS``. It
listens on loopback by default. Run it on its own with::

    python -m hil_tests.mini_broker --port 1883
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "MiniBroker",
    "MqttProtocolError",
    "topic_matches",
    "valid_topic_filter",
    "valid_topic_name",
]

log = logging.getLogger(__name__)

# Control packet types (MQTT 3.1.1 §2.2.1).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# CONNACK return codes (§3.2.2.3).
ACCEPTED = 0
UNACCEPTABLE_PROTOCOL = 1
IDENTIFIER_REJECTED = 2

SUBACK_FAILURE = 0x80
CONNECT_TIMEOUT_S = 10.0
#: Past this much unsent data to one client, QoS 0 messages to it are dropped (QoS 1 is bounded by
#: the in-flight window and the queue), so a stalled subscriber cannot grow the broker's memory.
MAX_WRITE_BUFFER = 1 << 20


class MqttProtocolError(Exception):
    """The client broke MQTT 3.1.1 (or asked for something this broker refuses); we disconnect."""


@dataclass(frozen=True, slots=True)
class Message:
    """An application message as published: ``topic``, ``payload``, ``qos``, ``retain``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One copy of a message for one session, at the QoS granted to it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


# ---------------------------------------------------------------------------------------------
# Topics


def valid_topic_name(topic: str) -> bool:
    """A topic a message may be published to: non-empty, no wildcards, no NUL (§4.7.3)."""
    return bool(topic) and not any(c in topic for c in "+#\0")


def valid_topic_filter(topic_filter: str) -> bool:
    """``+`` fills a whole level, ``#`` only the whole last level (§4.7.1)."""
    if not topic_filter or "\0" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (both assumed valid)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True  # also matches the parent level itself ("a/#" matches "a")
        if i >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


# ---------------------------------------------------------------------------------------------
# Wire format


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(packet_type: int, flags: int, body: bytes = b"") -> bytes:
    return bytes([packet_type << 4 | flags]) + _remaining_length(len(body)) + body


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _publish_packet(d: _Delivery, packet_id: int | None, *, dup: bool = False) -> bytes:
    flags = (0x08 if dup else 0) | d.qos << 1 | (0x01 if d.retain else 0)
    body = _utf8(d.topic) + (packet_id.to_bytes(2, "big") if packet_id is not None else b"")
    return _packet(PUBLISH, flags, body + d.payload)


class _Body:
    """Cursor over a packet body; running off the end is the client's protocol error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MqttProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        try:
            return self.binary().decode()
        except UnicodeDecodeError:
            raise MqttProtocolError("a string is not valid UTF-8") from None

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


async def _read_packet(reader: asyncio.StreamReader, max_bytes: int) -> tuple[int, int, bytes]:
    """(type, flags, body) of the next packet. EOF raises ``asyncio.IncompleteReadError``."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise MqttProtocolError("remaining length longer than 4 bytes")
    if length > max_bytes:
        raise MqttProtocolError(f"packet of {length} bytes exceeds the limit of {max_bytes}")
    return first >> 4, first & 0x0F, await reader.readexactly(length)


# ---------------------------------------------------------------------------------------------
# Sessions and connections


@dataclass(eq=False)
class _Connection:
    """One network connection; ``will`` is cleared by DISCONNECT."""

    writer: asyncio.StreamWriter
    client_id: str = ""
    will: Message | None = None
    closed: bool = False

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        self.closed = True
        self.writer.close()


@dataclass(eq=False)
class _Session:
    """What the broker remembers of a client id: subscriptions, QoS 1 messages awaiting PUBACK
    (``inflight`` by packet id) and those waiting for room in the window or for the client."""

    client_id: str
    clean: bool
    subscriptions: dict[str, int] = field(default_factory=dict)
    inflight: dict[int, _Delivery] = field(default_factory=dict)
    queue: deque[_Delivery] = field(default_factory=deque)
    connection: _Connection | None = None
    dropped: int = 0
    _ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))

    def next_packet_id(self) -> int:
        while True:
            packet_id = next(self._ids)
            if packet_id not in self.inflight:
                return packet_id

    def granted_qos(self, topic: str) -> int | None:
        """Highest QoS among this session's subscriptions matching ``topic`` (None: no match)."""
        granted = [qos for f, qos in self.subscriptions.items() if topic_matches(f, topic)]
        return max(granted) if granted else None


class MiniBroker:
    """The broker. ``await start()`` binds (``port=0`` picks a free port, see :attr:`port`);
    ``await stop()`` closes every connection. Usable as ``async with``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_queued: int = 1000,
        max_inflight: int = 20,
        max_packet_bytes: int = 1 << 20,
    ) -> None:
        if max_queued < 0 or max_inflight < 1:
            raise ValueError("max_queued must be >= 0 and max_inflight >= 1")
        self.host = host
        self._requested_port = port
        self.max_queued = max_queued
        self.max_inflight = max_inflight
        self.max_packet_bytes = max_packet_bytes
        self.sessions: dict[str, _Session] = {}
        self.retained: dict[str, Message] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()
        self._anonymous_ids = itertools.count(1)
        self._stopping = False

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("broker not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> MiniBroker:
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)
        log.info("mini broker: MQTT 3.1.1 on %s:%d", self.host, self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (no wills: the broker itself is going)."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MiniBroker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- one connection -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = _Connection(writer)
        self._connections.add(conn)
        peer = writer.get_extra_info("peername")
        orderly = False
        try:
            session, keepalive = await self._connect(reader, conn)
            if session is None:
                return
            limit = 1.5 * keepalive if keepalive else None
            while not conn.closed:
                try:
                    async with asyncio.timeout(limit):
                        packet_type, flags, body = await _read_packet(reader, self.max_packet_bytes)
                except TimeoutError:
                    log.info("mini broker: %s sent nothing for 1.5 x keepalive (%d s), "
                             "disconnecting", conn.client_id, keepalive)
                    return
                if packet_type == DISCONNECT:
                    conn.will = None
                    orderly = True
                    return
                self._handle(session, conn, packet_type, flags, body)
                await writer.drain()
        except MqttProtocolError as exc:
            log.warning("mini broker: client %s (%s): %s — disconnecting",
                        conn.client_id or "?", peer, exc)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the peer went away: its will (if any) goes out below
        finally:
            self._connections.discard(conn)
            self._handlers.discard(task)
            self._detach(conn)
            will, conn.will = conn.will, None
            conn.close()
            if will is not None and not self._stopping:
                self._route(will)
            if conn.client_id:
                log.info("mini broker: %s disconnected%s", conn.client_id,
                         "" if orderly else " (no DISCONNECT)")

    async def _connect(self, reader: asyncio.StreamReader,
                       conn: _Connection) -> tuple[_Session | None, int]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                packet_type, flags, data = await _read_packet(reader, self.max_packet_bytes)
        except TimeoutError:
            return None, 0
        if packet_type != CONNECT:
            raise MqttProtocolError("the first packet must be CONNECT")
        body = _Body(data)
        name, level = body.text(), body.u8()
        if name != "MQTT" or level != 4:
            conn.send(_packet(CONNACK, 0, bytes([0, UNACCEPTABLE_PROTOCOL])))
            raise MqttProtocolError(f"protocol {name!r} level {level}: this broker speaks MQTT "
                                    "3.1.1 only (level 4)")
        connect_flags, keepalive = body.u8(), body.u16()
        if connect_flags & 0x01:
            raise MqttProtocolError("reserved CONNECT flag set")
        clean = bool(connect_flags & 0x02)
        client_id = body.text()
        if connect_flags & 0x04:
            will_qos = connect_flags >> 3 & 0x03
            if will_qos > 2:
                raise MqttProtocolError("will QoS 3")
            will_topic, will_payload = body.text(), body.binary()
            if not valid_topic_name(will_topic):
                raise MqttProtocolError(f"invalid will topic {will_topic!r}")
            conn.will = Message(will_topic, will_payload, min(will_qos, 1),
                                bool(connect_flags & 0x20))
        if connect_flags & 0x80:
            body.text()  # user name: accepted, anonymous broker
        if connect_flags & 0x40:
            body.binary()  # password
        if not client_id:
            if not clean:
                conn.send(_packet(CONNACK, 0, bytes([0, IDENTIFIER_REJECTED])))
                raise MqttProtocolError("an empty client id needs a clean session")
            client_id = f"mini-broker-anonymous-{next(self._anonymous_ids)}"
        conn.client_id = client_id
        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            log.info("mini broker: %s connected again, closing its old connection", client_id)
            old = session.connection
            session.connection = None
            old.close()
        if session is not None and (clean or session.clean):
            session = None  # a clean start discards what was kept
        present = session is not None
        if session is None:
            session = _Session(client_id, clean)
            self.sessions[client_id] = session
        session.connection = conn
        conn.send(_packet(CONNACK, 0, bytes([1 if present else 0, ACCEPTED])))
        log.info("mini broker: %s connected (clean session: %s, keepalive %d s%s)", client_id,
                 clean, keepalive, ", session resumed" if present else "")
        for packet_id, delivery in session.inflight.items():
            conn.send(_publish_packet(delivery, packet_id, dup=True))
        self._flush(session)
        return session, keepalive

    def _detach(self, conn: _Connection) -> None:
        session = self.sessions.get(conn.client_id)
        if session is None or session.connection is not conn:
            return  # taken over by a newer connection, which owns the session now
        session.connection = None
        if session.clean:
            del self.sessions[conn.client_id]

    # -- packets ------------------------------------------------------------------------------

    def _handle(self, session: _Session, conn: _Connection, packet_type: int, flags: int,
                data: bytes) -> None:
        body = _Body(data)
        if packet_type == PUBLISH:
            qos = flags >> 1 & 0x03
            if qos == 2:
                raise MqttProtocolError("QoS 2 is not supported by this broker")
            if qos == 3:
                raise MqttProtocolError("PUBLISH with QoS 3")
            topic = body.text()
            if not valid_topic_name(topic):
                raise MqttProtocolError(f"invalid topic name {topic!r}")
            packet_id = body.u16() if qos else None
            self._route(Message(topic, body.rest(), qos, bool(flags & 0x01)))
            if packet_id is not None:
                conn.send(_packet(PUBACK, 0, packet_id.to_bytes(2, "big")))
        elif packet_type == PUBACK:
            session.inflight.pop(body.u16(), None)
            self._flush(session)
        elif packet_type == SUBSCRIBE:
            self._subscribe(session, conn, flags, body)
        elif packet_type == UNSUBSCRIBE:
            if flags != 0x02:
                raise MqttProtocolError("UNSUBSCRIBE flags must be 0010")
            packet_id = body.u16()
            while not body.done:
                session.subscriptions.pop(body.text(), None)
            conn.send(_packet(UNSUBACK, 0, packet_id.to_bytes(2, "big")))
        elif packet_type == PINGREQ:
            conn.send(_packet(PINGRESP, 0))
        elif packet_type in (PUBREC, PUBREL, PUBCOMP):
            raise MqttProtocolError("QoS 2 is not supported by this broker")
        else:
            raise MqttProtocolError(f"unexpected packet type {packet_type} from a client")

    def _subscribe(self, session: _Session, conn: _Connection, flags: int, body: _Body) -> None:
        if flags != 0x02:
            raise MqttProtocolError("SUBSCRIBE flags must be 0010")
        packet_id = body.u16()
        codes = bytearray()
        new_filters: list[tuple[str, int]] = []
        while not body.done:
            topic_filter, requested = body.text(), body.u8()
            if requested > 2:
                raise MqttProtocolError(f"requested QoS {requested} for {topic_filter!r}")
            if not valid_topic_filter(topic_filter):
                codes.append(SUBACK_FAILURE)
                continue
            granted = min(requested, 1)
            session.subscriptions[topic_filter] = granted
            new_filters.append((topic_filter, granted))
            codes.append(granted)
        if not codes:
            raise MqttProtocolError("SUBSCRIBE without a topic filter")
        conn.send(_packet(SUBACK, 0, packet_id.to_bytes(2, "big") + bytes(codes)))
        # Retained messages follow the SUBACK, flagged RETAIN (MQTT-3.3.1-8).
        for message in list(self.retained.values()):
            granted_here = [g for f, g in new_filters if topic_matches(f, message.topic)]
            if granted_here:
                self._deliver(session, _Delivery(message.topic, message.payload,
                                                 min(message.qos, max(granted_here)), True))

    # -- routing ------------------------------------------------------------------------------

    def _route(self, message: Message) -> None:
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)
        for session in list(self.sessions.values()):
            granted = session.granted_qos(message.topic)
            if granted is not None:
                self._deliver(session, _Delivery(message.topic, message.payload,
                                                 min(message.qos, granted), False))

    def _deliver(self, session: _Session, delivery: _Delivery) -> None:
        conn = session.connection
        if delivery.qos == 0:
            if conn is not None and conn.writer.transport.get_write_buffer_size() < MAX_WRITE_BUFFER:
                conn.send(_publish_packet(delivery, None))
            else:
                session.dropped += 1  # QoS 0 is not queued for absent or stalled clients
            return
        if len(session.queue) >= self.max_queued:
            session.dropped += 1
            if session.dropped == 1 or session.dropped % 1000 == 0:
                log.warning("mini broker: queue of %s full (%d messages), dropped %d so far",
                            session.client_id, self.max_queued, session.dropped)
            return
        session.queue.append(delivery)
        self._flush(session)

    def _flush(self, session: _Session) -> None:
        """Move queued QoS 1 messages into the in-flight window while the client is here."""
        conn = session.connection
        while conn is not None and session.queue and len(session.inflight) < self.max_inflight:
            delivery = session.queue.popleft()
            packet_id = session.next_packet_id()
            session.inflight[packet_id] = delivery
            conn.send(_publish_packet(delivery, packet_id))


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hil_tests.mini_broker",
        description="A small MQTT 3.1.1 broker (no auth, no persistence) for demos and tests. "
        "Prints 'mini-broker listening on HOST:PORT' once it accepts connections.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="TCP port, 0 = any free port (default 1883)")
    parser.add_argument("--max-queued", type=int, default=1000, metavar="N",
                        help="QoS 1 messages kept per client, beyond that they are dropped (default 1000)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections to stderr")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    broker = MiniBroker(args.host, args.port, max_queued=args.max_queued)
    try:
        await broker.start()
    except OSError as exc:
        print(f"mini-broker: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
              "choose another --port (0 = any free port)", file=sys.stderr)
        return 1
    print(f"mini-broker listening on {broker.host}:{broker.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_queued < 0:
        print("mini-broker: --max-queued cannot be negative", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
