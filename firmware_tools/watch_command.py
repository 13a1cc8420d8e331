"""``gwtool watch --broker HOST[:PORT] --gateway ID``: a read-only live view of one gateway on a
real broker — state, health (buses, outbox, link), each meter's latest reads, recent alarms.

It subscribes to ``P/G/#`` and never publishes, so it is safe on a production broker with an
account whose ACL only allows reading. The folding of messages is the demo's
(:mod:`firmware_tools.live_view`); the output is plain text every ``--interval`` seconds, so it
works over ssh, in a log and without rich (which the production install does not carry).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import ssl
import threading
import time
from typing import Any

from .errors import ToolError
from .live_view import DemoState, render_plain
from .modbus_link import parse_host

MQTT_PORT, MQTTS_PORT = 1883, 8883


def _client(args: argparse.Namespace, state: DemoState, subscribed: threading.Event,
            refused: list[str]) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"gwtool-watch-{secrets.token_hex(4)}",
                         protocol=paho.MQTTv311, clean_session=True)
    if args.username is not None:
        client.username_pw_set(args.username, args.password)
    if args.cafile is not None or args.cert is not None:
        if (args.cert is None) != (args.key is None):
            raise ToolError("--cert and --key go together (the client certificate and its key)")
        try:
            client.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ToolError(f"cannot load the TLS files (--cafile/--cert/--key): {exc}") from None
    client.reconnect_delay_set(1, 10)

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
            return
        state.connected = True
        c.subscribe(state.base + "#", qos=1)

    def on_disconnect(*_args: Any) -> None:
        state.connected = False

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_message = lambda c, u, msg: state.on_message(msg.topic, bytes(msg.payload))
    return client


def cmd_watch(args: argparse.Namespace) -> int:
    default_port = MQTTS_PORT if args.cafile or args.cert else MQTT_PORT
    host, port = parse_host(args.broker, "--broker", default_port)
    if args.interval <= 0 or args.duration < 0:
        raise ToolError("--interval must be positive and --duration not negative")
    state = DemoState(args.gateway, args.topic_prefix.rstrip("/"), [], discover=True)
    subscribed = threading.Event()
    refused: list[str] = []
    client = _client(args, state, subscribed, refused)
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise ToolError(f"cannot connect to the broker at {host}:{port}: {exc} — check host, port "
                        "and TLS options") from None
    client.loop_start()
    try:
        deadline = time.monotonic() + args.timeout
        while not subscribed.is_set() and not refused and time.monotonic() < deadline:
            time.sleep(0.05)
        if refused:
            raise ToolError(f"broker {host}:{port} refused the connection: {refused[0]}")
        if not subscribed.is_set():
            raise ToolError(f"no answer from the broker at {host}:{port} within {args.timeout:g} s "
                            "(TLS on a plain port, or the other way round?)")
        print(f"watching {state.base}# on {host}:{port} (read-only; Ctrl-C to stop)", flush=True)
        started = time.monotonic()
        end = started + args.duration if args.duration else None
        while True:
            wake = min(time.monotonic() + args.interval, end) if end else \
                time.monotonic() + args.interval
            time.sleep(max(0.0, wake - time.monotonic()))
            snapshot = state.snapshot()
            link = "" if snapshot.connected else " (broker connection lost: reconnecting)"
            print(render_plain(snapshot, time.monotonic() - started, label="watch") + link,
                  flush=True)
            if end is not None and time.monotonic() >= end:
                return 0
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()


def register(sub: Any) -> None:
    p = sub.add_parser("watch", help="read-only live view of a gateway on a real broker")
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]",
                   help="the broker (port 1883, or 8883 with TLS options)")
    p.add_argument("--gateway", required=True, help="gateway id (the G in P/G/...)")
    p.add_argument("--topic-prefix", default="mtr/v1", help="the P in P/G/... (default mtr/v1)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between views")
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--cafile", help="CA bundle of the broker's certificate (turns TLS on)")
    p.add_argument("--cert", help="client certificate (PEM) for a broker that requires one")
    p.add_argument("--key", help="private key (PEM) of --cert")
    p.set_defaults(func=cmd_watch)
