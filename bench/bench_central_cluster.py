"""The central consumer past one broker: a 2-node RabbitMQ cluster losing a node mid-run.

    .venv/bin/python bench/bench_central_cluster.py [--gateways 200] [--meters 20]
        [--rate 500] [--seconds 40] [--stop-at 15] [--stop stop_app|kill] [--workers 2]
        [--publishers 4] [--storage postgresql|sqlite]

Run by hand, not in CI (two RabbitMQ nodes take ~20 s to start). Needs Debian's
``rabbitmq-server`` (3.10, with its MQTT plugin), ``pika`` (extra ``amqp``) and, for
``--storage postgresql``, initdb/pg_ctl; without rabbitmq-server it exits saying so.

What runs, all on this machine (tests/rabbit_cluster.py): nodes A and B clustered on loopback,
every queue mirrored on both (``ha-mode all``, ``ha-sync-mode automatic``). ``--workers``
``edge-central run`` processes with ``[source] kind = "amqp"``, worker i on node i mod 2 first
and the other node as fallback. A simulated fleet (the messages of bench_central_mqtt.py:
payload v2 reads of 10 values, after each gateway's retained birth) published at QoS 1 over MQTT
3.1.1 by ``--publishers`` connections, publisher i on node i mod 2 first, paced at ``--rate``
messages/s for ``--seconds``. Each publisher behaves like a gateway's outbox: a message counts
as delivered only when PUBACKed, and on a lost connection it reconnects to the other node and
re-sends every message not yet PUBACKed (so the consumer may receive some twice).

At ``--stop-at`` seconds node A is stopped (``rabbitmqctl stop_app``, or SIGKILL of its Erlang
VM with ``--stop kill``). Reported: values stored and expected (every value of every message,
checked exactly against what was published), duplicate deliveries the workers discarded, rows
missing, holes in the consumer's seq ranges (gaps a gateway would be asked to replay; these
simulated publishers cannot replay, so it must be 0), publishers' and workers' reconnect times,
and stored values/s before the stop, from the stop until everyone reconnected, and after.

``--daemons N`` runs N real gateway daemons instead of the simulated fleet (``edge-gateway run``
against simulated meters, tests/gateway_rig.py: 4 DL/T 645 meters on a pty and 2 Modbus TCP
meters each, polled every 2 s; ``[mqtt] protocol = "3.1.1"``, ``host`` node A,
``fallback_hosts`` node B) for ``--seconds``, node A stopped at ``--stop-at``; then each daemon
is stopped and the consumer's ``current_reads`` compared with what every simulated meter served
(tests/central/served.py), as the end-to-end tests do: missing, wrong, stored once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_central_mqtt import (
    VALUES_PER_MESSAGE,
    births,
    missing_messages,
    poll_message,
)
from central.storage import open_database
from tests.rabbit_cluster import RabbitNode, available, rabbit_cluster

REPO = Path(__file__).resolve().parent.parent


class Publisher(threading.Thread):
    """A paced MQTT 3.1.1 publisher with a gateway outbox's delivery rule (see module doc)."""

    def __init__(self, name: str, ports: list[int], messages: list[tuple[str, bytes]],
                 rate: float) -> None:
        super().__init__(name=name, daemon=True)
        self.ports, self.messages, self.rate = ports, messages, rate
        self.at = 0  # index into ports
        self.lock = threading.Lock()
        self.acked: set[int] = set()
        self.inflight: dict[int, int] = {}  # mid -> message index
        self.resend: list[int] = []
        self.down_at: float | None = None
        self.reconnects: list[float] = []  # seconds from losing the link to the next CONNACK
        self.resent = 0
        self.client: object | None = None
        self.lost = threading.Event()

    def _connect(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        while True:
            port = self.ports[self.at]
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{self.name}",
                                 protocol=mqtt.MQTTv311, clean_session=True)
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.on_publish = self._on_publish
            client.on_disconnect = self._on_disconnect
            try:
                client.connect("127.0.0.1", port, keepalive=10)
            except OSError:
                self.at = (self.at + 1) % len(self.ports)
                time.sleep(0.2)
                continue
            client.loop_start()
            deadline = time.monotonic() + 10
            while not client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not client.is_connected():
                client.loop_stop()
                self.at = (self.at + 1) % len(self.ports)
                continue
            self.lost.clear()
            old, self.client = self.client, client
            if old is not None:  # its network thread may sit in select() for up to 1 s
                threading.Thread(target=old.loop_stop, daemon=True).start()  # type: ignore[attr-defined]
            if self.down_at is not None:
                self.reconnects.append(time.monotonic() - self.down_at)
                self.down_at = None
            return

    def _on_disconnect(self, *_args: object) -> None:
        if not self.lost.is_set():
            self.down_at = time.monotonic()  # when the connection was seen lost
        self.lost.set()

    def _on_publish(self, _c: object, _u: object, mid: int, reason: object, _p: object) -> None:
        with self.lock:
            index = self.inflight.pop(mid, None)
            if index is not None and not getattr(reason, "is_failure", False):
                self.acked.add(index)

    def _send(self, index: int) -> None:
        topic, payload = self.messages[index]
        info = self.client.publish(topic, payload, qos=1)  # type: ignore[attr-defined]
        with self.lock:
            if info.rc == 0 and index not in self.acked:
                self.inflight[info.mid] = index
            elif info.rc != 0:
                self.resend.append(index)

    def run(self) -> None:
        self._connect()
        t0 = time.monotonic()
        sent = 0
        while sent < len(self.messages) or self.resend or self.inflight:
            if self.lost.is_set():
                with self.lock:  # not PUBACKed: send again, on the other node
                    self.resend = sorted(set(self.resend) | set(self.inflight.values()))
                    self.inflight.clear()
                self.resent += len(self.resend)
                self.at = (self.at + 1) % len(self.ports)
                self._connect()
            with self.lock:
                again, self.resend = self.resend, []
            for index in again:
                self._send(index)
            due = min(len(self.messages), int((time.monotonic() - t0) * self.rate))
            while sent < due and not self.lost.is_set():
                self._send(sent)
                sent += 1
            time.sleep(0.005)
        self.client.disconnect()  # type: ignore[attr-defined]
        self.client.loop_stop()  # type: ignore[attr-defined]


def start_worker(i: int, work: Path, urls: list[str], db_url: str) -> subprocess.Popen[bytes]:
    config = work / f"central-{i}.toml"
    config.write_text(
        "[source]\nkind = \"amqp\"\n[amqp]\nurls = [" + ", ".join(f'"{u}"' for u in urls)
        + f']\nheartbeat_s = 10\n[database]\nurl = "{db_url}"\n[ingest]\nbatch_max = 1000\n'
        "batch_wait_ms = 100\n[gaps]\ngrace_s = 600\nscan_interval_s = 30\n")
    log = open(work / f"worker-{i}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "central.cli", "run", "--config", str(config),
                             "--worker", f"w{i}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    log.close()
    return proc


@contextlib.contextmanager
def database(storage: str, work: Path) -> Iterator[str]:
    if storage == "sqlite":
        yield f"sqlite:///{work / 'central.sqlite'}"
        return
    from tests.central.pg_cluster import available as pg_available
    from tests.central.pg_cluster import postgres_cluster

    if not pg_available():
        sys.exit("bench_central_cluster: initdb/pg_ctl not installed; use --storage sqlite")
    with postgres_cluster() as url:
        yield url


def kill_node(node: RabbitNode) -> None:
    assert node.process is not None
    os.killpg(node.process.pid, signal.SIGKILL)
    node.process.wait(10)


def rate_between(marks: list[tuple[float, int]], t0: float, t1: float) -> float:
    inside = [m for m in marks if t0 <= m[0] <= t1]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return float("nan")
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--meters", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s, whole fleet")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--stop-at", type=float, default=15.0)
    parser.add_argument("--stop", choices=("stop_app", "kill"), default="stop_app")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--storage", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--daemons", type=int, default=0,
                        help="real gateway daemons instead of the simulated fleet")
    args = parser.parse_args()
    if not available():
        sys.exit("bench_central_cluster: rabbitmq-server is not installed "
                 "(apt-get install rabbitmq-server); nothing measured")

    total = int(args.rate * args.seconds)
    per_poll = args.gateways * args.meters
    messages = [poll_message(g, m, p * args.meters + m + 1, 1_767_225_600_000 + p * 900_000, p, 2)
                for p in range(-(-total // per_poll)) for g in range(args.gateways)
                for m in range(args.meters)][:total]
    if args.daemons:
        print(f"{args.daemons} gateway daemons (MQTT 3.1.1, fallback to node B); "
              f"{args.workers} AMQP workers; {args.storage}; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    else:
        print(f"fleet: {args.gateways} gateways x {args.meters} meters, {total:,} messages "
              f"({total * VALUES_PER_MESSAGE:,} values, payload v2) at {args.rate:.0f} msgs/s "
              f"over {args.publishers} MQTT 3.1.1 connections; {args.workers} AMQP workers; "
              f"{args.storage}; load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, database(args.storage, Path(tmp)) as db_url:
        work = Path(tmp)
        t_start = time.monotonic()
        with rabbit_cluster(2) as nodes:
            print(f"cluster of 2 up in {time.monotonic() - t_start:.0f} s", flush=True)
            a, b = nodes
            workers = [start_worker(i, work, [nodes[i % 2].amqp_url, nodes[(i + 1) % 2].amqp_url],
                                    db_url) for i in range(args.workers)]
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not all(
                        " connected (" in (work / f"worker-{i}.log").read_text()
                        for i in range(args.workers)):
                    time.sleep(0.2)
                if args.daemons:
                    run_daemons(args, nodes, db_url, work)
                else:
                    births(args.gateways, args.meters, a.mqtt_port, mqtt5=False)
                    time.sleep(2)
                    run(args, nodes, workers, messages, db_url, work)
            finally:
                for w in workers:
                    w.send_signal(signal.SIGTERM)
                for w in workers:
                    w.wait(60)
                for i in range(args.workers):
                    for line in (work / f"worker-{i}.log").read_text().splitlines():
                        if " stopped: " in line:
                            print(f"   w{i}", line.split(" stopped: ", 1)[1], flush=True)


def run(args: argparse.Namespace, nodes: list[RabbitNode], workers: list[subprocess.Popen[bytes]],
        messages: list[tuple[str, bytes]], db_url: str, work: Path) -> None:
    a, b = nodes
    db = open_database(db_url)
    ports = [a.mqtt_port, b.mqtt_port]
    pubs = [Publisher(f"p{i}", ports[i % 2:] + ports[:i % 2], messages[i::args.publishers],
                      args.rate / args.publishers) for i in range(args.publishers)]
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    for p in pubs:
        p.start()
    marks: list[tuple[float, int]] = []
    stopped_at = None
    total = len(messages) * VALUES_PER_MESSAGE
    while True:
        now = time.monotonic()
        marks.append((now - t0, int(db.scalar("SELECT count(*) FROM current_reads"))))
        if stopped_at is None and now - t0 >= args.stop_at:
            stopped_at = now - t0
            # in the background: stop_app takes seconds under load, and the sampling goes on
            threading.Thread(target=kill_node if args.stop == "kill" else RabbitNode.stop_app,
                             args=(a,), daemon=True).start()
            print(f"t={stopped_at:.1f} s: node A {'killed' if args.stop == 'kill' else 'stopped'}",
                  flush=True)
        if marks[-1][1] >= total and not any(p.is_alive() for p in pubs):
            break
        recent = [m for m in marks if m[0] >= marks[-1][0] - 60]
        if not any(p.is_alive() for p in pubs) and recent[0][1] == marks[-1][1] \
                and marks[-1][0] - recent[0][0] >= 59:
            break  # everything PUBACKed, nothing new for a minute: the rest is lost
        time.sleep(0.5)
    stored = marks[-1][1]
    # every stored value is the one published (bench_central_mqtt's values are a function of
    # gateway, meter and poll), and nothing published is missing
    wrong = int(db.scalar(
        "SELECT count(*) FROM current_reads WHERE quantity = 'energy.active.export.total' AND "
        "CAST(value AS TEXT) <> CAST(CAST(substr(meter, 3) AS INTEGER) AS TEXT) || '.5'"))
    holes = missing_messages(db_url)
    db.close()
    pub_reconnects = [r for p in pubs for r in p.reconnects]
    worker_reconnects = [float(x) for i in range(len(workers)) for x in re.findall(
        r"after ([0-9.]+) s without a broker", (work / f"worker-{i}.log").read_text())]
    assert stopped_at is not None
    everyone_back = stopped_at + max(pub_reconnects + worker_reconnects + [0.0])
    published_until = max(m[0] for m in marks if m[1] < total) if stored >= total else marks[-1][0]
    print(f"stored {stored:,} of {total:,} values; missing {total - stored:,}; wrong values "
          f"{wrong}; holes in the consumer's seq ranges {holes} (gaps a gateway would be asked "
          f"to replay); re-sent by publishers after the stop {sum(p.resent for p in pubs)} "
          "messages", flush=True)
    print(f"reconnect: publishers {', '.join(f'{r:.2f}' for r in pub_reconnects) or '-'} s; "
          f"workers {', '.join(f'{r:.2f}' for r in worker_reconnects) or '-'} s", flush=True)
    during_end = max(everyone_back, stopped_at + 5)
    print(f"everyone reconnected {everyone_back - stopped_at:.1f} s after the stop; stored "
          f"values/s: before {rate_between(marks, 2, stopped_at):,.0f} | during (the stop's "
          f"first {during_end - stopped_at:.0f} s) {rate_between(marks, stopped_at, during_end):,.0f}"
          f" | after {rate_between(marks, during_end, published_until):,.0f} (offered "
          f"{args.rate * VALUES_PER_MESSAGE:,.0f}) | load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}", flush=True)


def run_daemons(args: argparse.Namespace, nodes: list[RabbitNode], db_url: str,
                work: Path) -> None:
    """Real daemons failing over from node A to node B (see the module docstring)."""
    from tests.central.served import compare, served_reads
    from tests.gateway_rig import GatewayRig, gateway_rig

    a, b = nodes

    class _NodeA:  # what gateway_rig needs of a broker it does not own: where it listens
        host, port, running = "127.0.0.1", a.mqtt_port, False

    with contextlib.ExitStack() as stack:
        rigs: list[GatewayRig] = []
        for i in range(args.daemons):
            (work / f"gw{i}").mkdir()
            rig = stack.enter_context(gateway_rig(work / f"gw{i}", dlt645_buses=1,
                                                  meters_per_bus=4, modbus_meters=2,
                                                  broker=_NodeA()))  # type: ignore[arg-type]
            assert rig.config_path is not None
            rig.gateway_id = f"gw-rmq-{i}"
            rig.config_path.write_text(rig.config_path.read_text().replace(
                'id = "gw-test"', f'id = "{rig.gateway_id}"').replace(
                "keepalive_s = 5", f'keepalive_s = 5\nprotocol = "3.1.1"\n'
                f'fallback_hosts = ["127.0.0.1:{b.mqtt_port}"]'))
            rigs.append(rig)
        for rig in rigs:
            rig.start_daemon()
        t0 = time.monotonic()
        time.sleep(args.stop_at)
        stop_ms = time.time_ns() // 1_000_000
        if args.stop == "kill":
            kill_node(a)
        else:
            a.stop_app()
        print(f"t={time.monotonic() - t0:.1f} s: node A "
              f"{'killed' if args.stop == 'kill' else 'stopped'}", flush=True)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - t0)))
        stopped_ms = {}
        for rig in rigs:  # SIGTERM: the daemon stops polling and waits for its PUBACKs
            stop_at = time.time_ns() // 1_000_000
            rig.stop_daemon(60)
            stopped_ms[rig.gateway_id] = (stop_at, time.time_ns() // 1_000_000)
        db = open_database(db_url)
        try:
            last, since = -1, time.monotonic()
            while time.monotonic() - since < 15:  # settle: nothing new for 15 s
                n = int(db.scalar("SELECT count(*) FROM current_reads"))
                if n != last:
                    last, since = n, time.monotonic()
                time.sleep(1)
            for rig in rigs:
                rows = db.execute("SELECT meter, quantity, t_ms, CAST(value AS TEXT) FROM "
                                  "current_reads WHERE gw = ?", (rig.gateway_id,))
                stored = {(m, q, int(t)): v for m, q, t, v in rows}
                lo, hi = stopped_ms[rig.gateway_id]
                result = compare(served_reads(rig), stored,
                                 lambda s, lo=lo, hi=hi: lo - 5000 <= s.at_ms <= hi)
                log = rig.log_text()
                downs = re.findall(r"^(\S+ \S+) \S+ \S+: MQTT: MQTT link to (\S+) down", log,
                                   re.M)
                ups = re.findall(r"^(\S+ \S+) \S+ \S+: MQTT: connected to (\S+) ", log, re.M)
                print(f"{rig.gateway_id}: {result.describe()}; exact: {result.exact}", flush=True)
                print(f"   links lost {[d for d in downs]}; connected {[u for u in ups]}",
                      flush=True)
            gaps = db.execute("SELECT gw, from_seq, to_seq, filled_ms FROM gaps")
            print(f"gaps recorded: {gaps or 'none'}; node A stopped at {stop_ms} ms", flush=True)
        finally:
            db.close()


if __name__ == "__main__":
    main()
