"""The gateway's one MQTT connection: connect, stay connected, notice when it is dead, reconnect.

What this module owns, and why it is built this way:

* **paho runs inside the daemon's asyncio loop.** The socket is registered with the loop
  (`add_reader`/`add_writer` driving `loop_read`/`loop_write`, a timer driving `loop_misc`), so
  every paho callback runs on the loop thread and nothing here needs a lock. The one blocking
  step paho has — `connect()` does DNS, the TCP handshake and the TLS handshake synchronously — is
  run on a dedicated worker thread so that an unreachable broker cannot stall meter polling for
  `connect_timeout_s` on every retry. While that thread runs, the loop thread does not touch the
  client; the socket is registered with the loop only after `connect()` has returned.
* **paho's in-memory queue is never a store.** Publishes are only accepted while the link is up,
  paho's queue is capped to the outbox pump's window, and whatever paho still holds when a
  connection drops is thrown away (`drop_out_messages`): the outbox pump re-sends those rows from
  SQLite, marked as history. Rows leave the outbox on PUBACK, never when `publish()` returns.
* **A silently dead link is noticed within ~1.5 × keepalive.** paho on its own needs up to
  2 × keepalive (it waits a full keepalive for a PINGRESP after waiting one to send the PINGREQ),
  and a frozen broker whose kernel still ACKs TCP segments looks perfectly healthy to `send()`.
  We record when bytes last arrived (our reader callback fires exactly then) and drop the
  connection once nothing has come back for 1.5 × keepalive. On a healthy link paho pings after
  one keepalive of silence, so the broker always answers well inside that bound.
* **Birth and death carry `bdseq`.** Before each connection attempt a new `bdseq` is taken from a
  persistent counter that never needs a store write and never fails for a full or failing disk
  (`gateway.store.bdseq`), and put into the last will (`{online: false, bdseq}`, retained); after the
  CONNACK the retained birth carries the same number, so a consumer can tell which session a will
  belongs to. A clean stop publishes a retained death and sends DISCONNECT, which tells the broker
  to discard the will.
* **Fallback brokers** (`[mqtt] fallback_hosts`): a failed attempt or a lost connection moves
  the next attempt to the next broker of the list (host:port first), after `reconnect_min_s`;
  the backoff grows only after a full round failed. The outbox does not notice which broker it
  talks to: unacknowledged rows are re-sent on the next connection whichever it is.
* **Commands survive short outages.** The session is persistent (MQTT 5: clean start off and a
  session expiry interval; MQTT 3.1.1: clean session off), so QoS 1 commands the broker queued
  while we were away are delivered on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config.mqtt import STATE_MESSAGE_SLOTS
from gateway.uplink.failure_log import FailureLog
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.paho_publish import FastPublishClient
from gateway.uplink.state_messages import StateMessages, wall_clock_ms

log = logging.getLogger(__name__)

_PAHO_PROTOCOLS: dict[str, MQTTProtocolVersion] = {
    "5": paho.MQTTv5,
    "3.1.1": paho.MQTTv311,
}


# ---------------------------------------------------------------------------------------------
# The link
# ---------------------------------------------------------------------------------------------


class LinkState(enum.Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"  # TCP/TLS connect running, or CONNECT sent and no CONNACK yet
    UP = "up"  # CONNACK received: publishing allowed
    WAITING = "waiting"  # connection lost or refused; backing off before the next attempt
    STOPPING = "stopping"


class PublishListener(Protocol):
    """What the outbox pump hears from the link. All calls happen on the event-loop thread."""

    def link_up(self) -> None: ...

    def link_down(self) -> None: ...

    def publish_done(self, mid: int, ok: bool, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class InboundCommand:
    """One message received on `P/G/cmd`. Fields: topic, payload (raw CBOR bytes),
    received_ms (gateway UTC ms), retained (the broker replayed a retained message)."""

    topic: str
    payload: bytes
    received_ms: int
    retained: bool


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """Snapshot for the health message."""

    state: str
    connected: bool
    bdseq: int | None
    connects: int
    connection_losses: int
    last_error: str | None
    last_error_ms: int | None
    commands_received: int
    commands_dropped: int


@dataclass(slots=True)
class _Counters:
    connects: int = 0
    connection_losses: int = 0
    commands_received: int = 0
    commands_dropped: int = 0
    last_error: str | None = None
    last_error_ms: int | None = None


@dataclass(slots=True)
class _Attempt:
    """Per-connection bookkeeping; replaced on every connection attempt."""

    bdseq: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    up_since: float | None = None
    sock: Any = None
    birth_mid: int | None = None
    death_mid: int | None = None
    death_acked: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str | None = None


class MqttLink:
    """One persistent MQTT session with the broker, run on the current asyncio loop.

    Usage (from a coroutine)::

        link = MqttLink(settings, state=GatewayStateMessages(...), next_bdseq=store.next_bdseq)
        await link.start()
        ...               # link.publish(...) while link.connected; link.commands is a Queue
        await link.stop()  # retained death, then a clean DISCONNECT (the will is not sent)
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        state: StateMessages,
        next_bdseq: Callable[[], int],
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._state_messages = state
        self._next_bdseq = next_bdseq
        self._clock_ms = clock_ms
        self._rng = rng or random.Random()
        self._state = LinkState.STOPPED
        self._counters = _Counters()
        # Connection failures repeat on every retry: one line per distinct error, then a summary
        # at most once a minute (gateway.uplink.failure_log); the same for everything else.
        self._link_failures = FailureLog(log, "MQTT")
        self._other_failures = FailureLog(log, "MQTT")
        self._listener: PublishListener | None = None
        self._attempt: _Attempt | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._manager: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._up = asyncio.Event()
        self._last_rx = time.monotonic()
        self._broker = 0  # index into settings.brokers of the current (or next) attempt
        self._client = self._make_client()
        self.commands: asyncio.Queue[InboundCommand] = asyncio.Queue(settings.command_queue_size)

    # -- construction --------------------------------------------------------------------------

    def _make_client(self) -> FastPublishClient:
        s = self.settings
        protocol = _PAHO_PROTOCOLS[s.protocol]
        kwargs: dict[str, Any] = {}
        if protocol != paho.MQTTv5:
            # MQTT 3.1.1 has no session expiry; clean_session=False keeps the session (and the
            # QoS 1 commands queued in it) until the broker's own expiry policy drops it.
            kwargs["clean_session"] = False
        client = FastPublishClient(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=protocol,
            # Never let paho reconnect on its own (it would do so synchronously on the loop
            # thread); reconnection is ours, with backoff and a fresh bdseq.
            reconnect_on_failure=False,
            **kwargs,
        )
        window = s.inflight_window + STATE_MESSAGE_SLOTS
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(window)
        client.connect_timeout = s.connect_timeout_s
        if s.username is not None or s.password is not None:
            client.username_pw_set(s.username, s.password)
        client.enable_logger(logging.getLogger(__name__ + ".paho"))
        # An exception escaping one of our callbacks must not tear paho's loop state apart
        # halfway through a packet; paho logs it (ERROR, logger gateway.uplink.mqtt_link.paho).
        client.suppress_exceptions = True
        if s.tls is not None:
            try:
                client.tls_set(
                    ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                    certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                    keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"[mqtt] tls: cannot load CA/certificate/key "
                    f"(ca_file={s.tls.ca_file}, cert_file={s.tls.cert_file}, "
                    f"key_file={s.tls.key_file}): {exc} — check the paths and that the key "
                    "matches the certificate and is not password protected"
                ) from exc
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    # -- public API ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._state is LinkState.UP

    @property
    def broker(self) -> tuple[str, int]:
        """(host, port) of the broker connected to, or tried next."""
        return self.settings.brokers[self._broker]

    @property
    def state(self) -> LinkState:
        return self._state

    def set_listener(self, listener: PublishListener | None) -> None:
        """Register the outbox pump (one listener; `None` detaches)."""
        self._listener = listener

    async def start(self) -> None:
        """Begin connecting in the background; returns at once. Use `wait_connected` to wait."""
        if self._manager is not None:
            raise RuntimeError("MqttLink.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-connect")
        self._manager = asyncio.create_task(self._run(), name="mqtt-link")
        self._ticker = asyncio.create_task(self._tick(), name="mqtt-link-timer")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the link is up (CONNACK received). Returns False on timeout."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        """Hand one message to the broker connection; returns its packet id (mid).

        Returns None, and accepts nothing, while the link is not up: a message paho accepted
        while disconnected would sit in paho's memory, which is exactly the store we refuse to
        have. Completion is reported through `PublishListener.publish_done(mid, ...)`.
        """
        if self._state is not LinkState.UP:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._record_error(f"publish to {topic} not accepted: {paho.error_string(info.rc)}")
            return None
        return info.mid

    def status(self) -> LinkStatus:
        c = self._counters
        return LinkStatus(
            state=self._state.value,
            connected=self.connected,
            bdseq=self._attempt.bdseq if self._attempt else None,
            connects=c.connects,
            connection_losses=c.connection_losses,
            last_error=c.last_error,
            last_error_ms=c.last_error_ms,
            commands_received=c.commands_received,
            commands_dropped=c.commands_dropped,
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Clean shutdown: retained death, wait for its PUBACK, DISCONNECT, close.

        `timeout` bounds each wait (the death PUBACK, then the socket close); a broker that
        does not answer gets its connection dropped, and then it publishes our will instead.
        """
        if self._manager is None or self._state is LinkState.STOPPED:
            return
        self._stop_requested.set()
        attempt = self._attempt
        if self._state is LinkState.UP and attempt is not None:
            self._state = LinkState.STOPPING
            death = self._state_messages.death(attempt.bdseq)
            info = self._client.publish(self.settings.state_topic, death, qos=1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                attempt.death_mid = info.mid
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first_of(attempt.death_acked, attempt.closed), timeout)
            if not attempt.closed.is_set():
                # MQTT 5 reason 0 / 3.1.1 DISCONNECT: the broker discards the will.
                self._client.disconnect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(attempt.closed.wait(), timeout)
        self._state = LinkState.STOPPING
        if attempt is not None and attempt.sock is not None and not attempt.closed.is_set():
            self._abort_connection("gateway stopping")  # CONNECT sent, no CONNACK yet
        # A connection attempt may still be in the worker thread; _connect_once closes whatever
        # it returns, so wait for the manager rather than touching the client from here.
        assert self._manager is not None
        try:
            await asyncio.wait_for(
                asyncio.shield(self._manager), self.settings.connect_timeout_s + timeout
            )
        except TimeoutError:
            log.error("MQTT: connection attempt did not finish while stopping; abandoning it")
            self._manager.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._manager
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._state = LinkState.STOPPED

    # -- connection management -----------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        # A connection must stay up this long before we forget earlier failures, so that a
        # broker which accepts and then drops us at once (duplicate client id, ACL) is retried
        # with growing delays rather than in a tight loop.
        stable_s = max(2.0 * self.settings.keepalive_s, self.settings.reconnect_min_s)
        while not self._stop_requested.is_set():
            attempt = await self._connect_once()
            if self._stop_requested.is_set():
                break
            if (
                attempt is not None
                and attempt.up_since is not None
                and (time.monotonic() - attempt.up_since >= stable_s)
            ):
                failures = 0
            s = self.settings
            # Next broker of the list; only a full round of them counts as one more failure.
            self._broker = (self._broker + 1) % len(s.brokers)
            delay = reconnect_delay(failures, s.reconnect_min_s, s.reconnect_max_s, self._rng)
            if self._broker == 0:
                failures += 1
            self._state = LinkState.WAITING
            log.debug("MQTT: next connection attempt in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)

    async def _connect_once(self) -> _Attempt | None:
        """One connection attempt; returns when that connection is over (or never started)."""
        s = self.settings
        assert self._loop is not None and self._executor is not None
        stale = self._client.socket()
        if stale is not None:  # pragma: no cover - every close path goes through paho
            # paho's connect() will close it on the worker thread; unregister it here first.
            self._loop.remove_reader(stale)
            self._loop.remove_writer(stale)
        try:
            # Never fails for a disk problem (gateway.store.bdseq): connecting needs no store.
            bdseq = self._next_bdseq()
            will = self._state_messages.will(bdseq)
        except Exception as exc:  # noqa: BLE001 - a bug here must not end the link task
            # Without a will matching the birth we must not connect; retry after backoff.
            self._record_error(f"cannot prepare the last will: {exc}", self._link_failures, exc)
            return None
        attempt = _Attempt(bdseq=bdseq)
        self._attempt = attempt
        self._state = LinkState.CONNECTING
        self._client.will_set(s.state_topic, will, qos=1, retain=True)
        kwargs: dict[str, Any] = {}
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            kwargs = {"clean_start": False, "properties": props}
        host, port = self.broker
        try:
            await self._loop.run_in_executor(
                self._executor,
                lambda: self._client.connect(host, port, s.keepalive_s, **kwargs),
            )
        except (OSError, ValueError) as exc:
            self._record_error(_explain_connect_error(s, exc, host, port), self._link_failures)
            return attempt
        if self._stop_requested.is_set():
            self._register_socket(attempt)
            self._abort_connection("gateway stopping")
            return attempt
        self._register_socket(attempt)
        await attempt.closed.wait()
        return attempt

    def _register_socket(self, attempt: _Attempt) -> None:
        assert self._loop is not None
        sock = self._client.socket()
        if sock is None:
            attempt.closed.set()
            return
        attempt.sock = sock
        attempt.started = time.monotonic()
        self._last_rx = attempt.started
        self._loop.add_reader(sock, self._on_readable)
        if self._client.want_write():
            self._loop.add_writer(sock, self._on_writable)

    def _abort_connection(self, reason: str) -> None:
        """Drop the connection without DISCONNECT (the broker will publish our will).

        Shutting the socket down makes paho read EOF and run its normal connection-lost path
        (close, on_disconnect), so paho's state stays consistent.
        """
        attempt = self._attempt
        sock = self._client.socket()
        # Only a socket the loop thread registered may be touched here: while a connect runs on
        # the worker thread, paho's socket belongs to that thread.
        if attempt is None or attempt.sock is None or sock is None or attempt.closed.is_set():
            return
        if attempt.close_reason is None:
            attempt.close_reason = reason
        with contextlib.suppress(OSError):
            cast(socket.socket, sock).shutdown(socket.SHUT_RDWR)
        for _ in range(100_000):  # bounded: each loop_read consumes a packet or reaches EOF
            if self._client.socket() is not sock:
                break
            self._client.loop_read()
        else:  # pragma: no cover - defensive; EOF always arrives after shutdown
            log.error("MQTT: socket did not close after shutdown; closing it directly")
            self._client.disconnect()

    async def _tick(self) -> None:
        """Our dead-link and CONNACK watchdogs, then paho's housekeeping (keepalive PINGREQ)."""
        s = self.settings
        while True:
            keepalive = max(self._client.keepalive, 1)  # MQTT 5 brokers may override it
            await asyncio.sleep(min(1.0, keepalive / 4))
            attempt = self._attempt
            if attempt is None or attempt.sock is None or attempt.closed.is_set():
                continue  # no connection, or a connect still running on the worker thread
            now = time.monotonic()
            # Checked before paho's own keepalive logic so that, when both are due on the same
            # tick, the reason recorded is the one that says what happened.
            if self._state is LinkState.CONNECTING:
                if now - attempt.started > s.connect_timeout_s:
                    self._abort_connection(
                        f"no CONNACK within {s.connect_timeout_s:g} s (connect_timeout_s)"
                    )
                    continue
            elif now - self._last_rx > 1.5 * keepalive:
                self._abort_connection(
                    f"nothing received from {_where(*self.broker)} for {now - self._last_rx:.1f} s "
                    f"(keepalive {keepalive} s): link presumed dead"
                )
                continue
            self._client.loop_misc()

    # -- loop-driven socket I/O ----------------------------------------------------------------

    def _on_readable(self) -> None:
        self._last_rx = time.monotonic()
        client = self._client
        rc = client.loop_read()
        # TLS, and the client's own read buffer (gateway/uplink/paho_client.py), can hold bytes
        # the selector cannot see; drain them now or they would wait for the next TCP segment.
        sock = client.socket()
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (
            client.buffered or (isinstance(sock, ssl.SSLSocket) and sock.pending())
        ):
            rc = self._client.loop_read()
            sock = self._client.socket()

    def _on_writable(self) -> None:
        self._client.loop_write()

    def _in_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Runs on the connect worker thread; the loop thread registers the socket once
        # connect() has returned (see _register_socket).
        pass

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._in_loop_thread() and self._loop is not None:
            self._loop.add_writer(sock, self._on_writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._in_loop_thread() and self._loop is not None:
            self._loop.remove_writer(sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if not self._in_loop_thread():  # pragma: no cover - see _connect_once (stale socket)
            return
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._connection_lost()

    # -- paho callbacks (event-loop thread) ----------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._in_loop_thread():  # pragma: no cover - see module docstring
            self._call_on_loop(self._on_connect, client, userdata, flags, reason, properties)
            return
        s = self.settings
        attempt = self._attempt
        if attempt is None:
            return
        if reason.is_failure:
            attempt.close_reason = (
                f"broker refused the connection: {reason} — check the client id, "
                "credentials/certificate and the broker's ACL for this gateway"
            )
            return  # paho closes the socket next and reports it through on_disconnect
        try:
            birth = self._state_messages.birth(attempt.bdseq)
        except Exception as exc:  # noqa: BLE001 - a bug here must not unwind through paho
            attempt.close_reason = f"cannot build the birth message: {exc}"
            self._link_failures.failed(attempt.close_reason, exc_info=exc)
            # Not from inside paho's read path: drop the connection on the next loop turn.
            assert self._loop is not None
            self._loop.call_soon(self._abort_connection, attempt.close_reason)
            return
        self._state = LinkState.UP
        attempt.up_since = time.monotonic()
        self._counters.connects += 1
        self._link_failures.recovered()
        log.info(
            "MQTT: connected to %s (MQTT %s, session present: %s, bdseq %d)",
            _where(*self.broker),
            s.protocol,
            flags.session_present,
            attempt.bdseq,
        )
        # The birth goes out before any outbox row: consumers see the session start first.
        info = client.publish(s.state_topic, birth, qos=1, retain=True)
        attempt.birth_mid = info.mid
        # Subscribing again on a resumed session is harmless and covers an expired one.
        client.subscribe(s.command_topic, qos=1)
        self._up.set()
        if self._listener is not None:
            self._tell_listener(self._listener.link_up)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._in_loop_thread():  # pragma: no cover
            self._call_on_loop(self._on_disconnect, client, userdata, flags, reason, properties)
            return
        attempt = self._attempt
        if self._stop_requested.is_set() and not reason.is_failure:
            return
        cause = attempt.close_reason if attempt is not None else None
        if cause is None:
            if flags.is_disconnect_packet_from_server:
                cause = f"broker closed the connection ({reason})"
            elif attempt is not None and attempt.up_since is None:
                cause = f"connection closed before any CONNACK ({reason})"
                if self.settings.tls is not None:
                    # TLS 1.3 finishes the client's side of the handshake before the broker
                    # checks the client certificate; a refusal then looks like this.
                    cause += (" — a broker that requires a client certificate does this when "
                              "[mqtt] tls has no cert_file/key_file or its CA does not trust them")
            else:
                cause = f"connection lost ({reason})"
        self._record_error(
            f"MQTT link to {_where(*self.broker)} down: {cause}",
            self._link_failures,
        )
        self._connection_lost()

    def _connection_lost(self) -> None:
        """Idempotent: called from on_disconnect and from the socket-close callback."""
        attempt = self._attempt
        if attempt is None or attempt.closed.is_set():
            return
        was_up = attempt.up_since is not None
        # Whatever paho still holds is not delivered; the outbox re-sends it from SQLite.
        self._client.drop_out_messages()
        self._up.clear()
        if self._state in (LinkState.UP, LinkState.CONNECTING):
            self._state = LinkState.WAITING
        if was_up and not self._stop_requested.is_set():
            self._counters.connection_losses += 1
        attempt.closed.set()
        if was_up and self._listener is not None:
            self._tell_listener(self._listener.link_down)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._in_loop_thread():  # pragma: no cover
            self._call_on_loop(self._on_publish, client, userdata, mid, reason, properties)
            return
        attempt = self._attempt
        if attempt is not None and mid in (attempt.birth_mid, attempt.death_mid):
            if reason.is_failure:
                self._record_error(
                    f"broker rejected the state message on {self.settings.state_topic}: "
                    f"{reason} — check the broker ACL"
                )
            if mid == attempt.death_mid:
                attempt.death_acked.set()
            return
        if self._listener is not None:
            # The reason's text is wanted only for a refusal (paho builds it by a list search).
            failed = reason.is_failure
            self._tell_listener(
                self._listener.publish_done, mid, not failed, str(reason) if failed else "Success"
            )

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if not self._in_loop_thread():  # pragma: no cover
            self._call_on_loop(self._on_message, client, userdata, msg)
            return
        if msg.topic != self.settings.command_topic:
            return
        command = InboundCommand(
            topic=msg.topic,
            payload=bytes(msg.payload),
            received_ms=self._clock_ms(),
            retained=bool(msg.retain),
        )
        try:
            self.commands.put_nowait(command)
        except asyncio.QueueFull:
            self._counters.commands_dropped += 1
            self._record_error(
                f"command queue full ({self.settings.command_queue_size}); dropped a command "
                "— the command handler is not keeping up"
            )
            return
        self._counters.commands_received += 1

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _tell_listener(fn: Callable[..., None], *args: Any) -> None:
        # We are inside paho's packet handling: a listener bug is logged with its traceback
        # here rather than unwinding through paho.
        try:
            fn(*args)
        except Exception:
            log.exception("MQTT: the publish listener failed")

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _record_error(
        self,
        message: str,
        failures: FailureLog | None = None,
        unexpected: BaseException | None = None,
    ) -> None:
        """Keep `message` for health and log it through `failures` (rate-limited; a traceback
        only for an `unexpected` exception, i.e. a bug)."""
        (failures or self._other_failures).failed(message, exc_info=unexpected)
        self._counters.last_error = message
        self._counters.last_error_ms = self._clock_ms()


def reconnect_delay(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before the next connection attempt after `failures` failed ones.

    Exponential (min_s * 2**failures, capped at max_s) with jitter drawn from the upper half of
    that, never below min_s: a fleet of gateways that lost the same broker does not come back in
    lock-step, yet each still retries promptly.
    """
    ceiling = min(max_s, min_s * (2.0 ** min(failures, 30)))
    return rng.uniform(max(min_s, ceiling / 2), ceiling)


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _explain_connect_error(s: LinkSettings, exc: BaseException, host: str, port: int) -> str:
    where = _where(host, port)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: broker {where} certificate rejected: {exc.verify_message} — check "
            "[mqtt] tls.ca_file and that [mqtt] host matches the certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {exc} — check the broker's TLS listener and [mqtt] tls"
    if isinstance(exc, ConnectionRefusedError):
        return f"broker {where} refused TCP connection — is the broker running on that port?"
    if isinstance(exc, TimeoutError):
        return (
            f"no answer from {where} within {s.connect_timeout_s:g} s — check [mqtt] host/port, "
            "routing and firewalls"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {host!r}: {exc} — check [mqtt] host and DNS"
    return f"cannot connect to {where}: {exc}"
