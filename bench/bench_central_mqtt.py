"""Ingest through a real broker: a simulated fleet publishing into ``edge-central`` workers.

    .venv/bin/python bench/bench_central_mqtt.py [--gateways 1000] [--meters 100] [--polls 1]
        [--workers 1,2] [--publishers 4] [--publisher raw|paho] [--latency-rate 500]
        [--latency-s 20] [--payload-version 2] [--pg-durable]

For each worker count: a fresh mosquitto (no persistence, unlimited queues and in-flight
window, as a consumer's broker should be set up: docs/central.md), a fresh PostgreSQL database
(one throwaway cluster: fsync, synchronous_commit and full_page_writes off unless
``--pg-durable``) and N ``edge-central run`` worker processes on one shared subscription. Then
two phases:

``--broker-inflight`` sets mosquitto's ``max_inflight_messages`` (default 2000: the workers' receive
maximum, two batches of 1,000; at 1000 each worker idled between batches). Measured: it
does not stop mosquitto 2.0.11 sending a shared subscriber past its receive maximum; the
worker's bounded inbox is what bounds its memory (docs/performance.md).

* **throughput** — every gateway's polls (reads messages of 10 values: 2 exact registers, 8
  floats, a Modbus poll; schema ``--payload-version``, default 2, the daemon's default) built
  beforehand and published at QoS 1 as fast as ``--publishers`` connections can — for v2 after
  each gateway's retained birth declaring its meters' alias bindings, as a gateway does; the
  stored rate is the count of ``current_reads`` rows over time, taken between 10 % and 90 % of
  the total (the sustained part, without start-up and tail);
* **latency** — a paced stream of ``--latency-rate`` messages/s for ``--latency-s`` seconds,
  each read stamped with its publish time: ``received_ms − t_ms`` of the stored rows (when the
  worker's transaction stored it), p50 and p99.

The fleet stands in for gateways that in reality are other machines, so it should not take the
cores the consumer is measured on: ``--publisher raw`` (the default) encodes every MQTT 5
PUBLISH packet, packet id included, before the clock starts and writes them on plain sockets,
counting the broker's PUBACKs (bench/mqtt_fleet.py) — real MQTT through the real broker, at
~1 % of the box's CPU. ``--publisher paho`` is the former one ``publish()`` call per message.

Also the workers' peak RSS (VmHWM), the CPU seconds each component used over the sustained
part (from /proc: the bench process with its publisher threads, mosquitto, each worker, every
PostgreSQL process; values per CPU-second are the per-core figures docs/central.md sizes
from), and what the workers' PostgreSQL backends were doing (pg_stat_activity, 5 looks a
second). Everything — publishers, broker, workers, PostgreSQL — runs on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mqtt_fleet import prebuild, publish_prebuilt
from central.storage import open_database
from protocols.payload import (
    AliasEntry,
    AliasTable,
    Binding,
    Envelope,
    ReadRecord,
    build_birth,
    build_reads,
    build_reads_v2,
)
from tests.broker import free_port

REPO = Path(__file__).resolve().parent.parent
PREFIX = "mtr/v1"
QUANTITIES = ("voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c",
              "power.active.total", "frequency")
VALUES_PER_MESSAGE = 10
EPOCH0 = 0xABCD_0000_0000_0000
#: The Modbus profile's alias table: registers at their resolution, instantaneous values at 0.01.
TABLE = AliasTable((AliasEntry("energy.active.import.total", "kWh", -2, True),
                    AliasEntry("energy.active.export.total", "kWh", -1, True),
                    *(AliasEntry(q, "V", -2, False) for q in QUANTITIES)))


def binding(m: int) -> Binding:
    return Binding(m + 1, f"m-{m:03d}", TABLE)


def poll_message(g: int, m: int, seq: int, t: int, p: int, version: int) -> tuple[str, bytes]:
    gw = f"gw-{g:04d}"
    records = [ReadRecord("energy.active.import.total", Decimal(f"{1000 + m}.{p % 100:02d}"),
                          "kWh", t),
               ReadRecord("energy.active.export.total", Decimal(f"{m}.5"), "kWh", t)]
    records += [ReadRecord(q, round(230.0 + i + m / 100, 2), "V", t)
                for i, q in enumerate(QUANTITIES)]
    env = Envelope(gw, EPOCH0 + g, seq, t)
    payload = (build_reads_v2(env, binding(m), records) if version == 2
               else build_reads(env, f"m-{m:03d}", records))
    return f"{PREFIX}/{gw}/reads/m-{m:03d}", payload


def birth_message(g: int, meters: int) -> tuple[str, bytes]:
    """Gateway ``g``'s retained birth declaring its meters' bindings (what a v2 gateway
    publishes on connecting, before any reads)."""
    gw = f"gw-{g:04d}"
    payload = build_birth(Envelope(gw, EPOCH0 + g, 0, 1_767_225_500_000), bdseq=1,
                          version="bench", config_sha256="0" * 64,
                          meters=[f"m-{m:03d}" for m in range(meters)],
                          bindings=[binding(m) for m in range(meters)])
    return f"{PREFIX}/{gw}/state", payload


def births(gateways: int, meters: int, port: int, *, mqtt5: bool = True) -> None:
    """Publish every gateway's birth, retained (MQTT 3.1.1 with ``mqtt5=False``, for brokers
    that speak no MQTT 5 such as RabbitMQ 3.10)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-births",
                         protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(*birth_message(g, meters), qos=1, retain=True)
             for g in range(gateways)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


@contextlib.contextmanager
def mosquitto(workdir: Path, inflight: int) -> Iterator[tuple[int, int]]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nallow_anonymous true\npersistence false\n"
                    f"max_queued_messages 0\nmax_inflight_messages {inflight}\nmax_queued_bytes 0\n"
                    f"log_dest file {workdir / 'mosquitto.log'}\nlistener {port} 127.0.0.1\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)])
    try:
        time.sleep(0.5)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def start_workers(n: int, config: Path,
                  profile_dir: Path | None = None) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = open(config.parent / f"worker-{i}.log", "ab")  # noqa: SIM115 - handed to the child
        profile = (["-m", "cProfile", "-o", str(profile_dir / f"{config.parent.name}-w{i}.prof")]
                   if profile_dir else [])
        procs.append(subprocess.Popen([sys.executable, *profile, "-m", "central.cli", "run",
                                       "--config",
                                       str(config), "--worker", f"w{i}"], cwd=REPO, stdout=log,
                                      stderr=subprocess.STDOUT))
        log.close()
    return procs


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def publish(port: int, messages: list[tuple[str, bytes]], connections: int) -> float:
    """Publish ``messages`` at QoS 1 over ``connections`` clients; seconds until all PUBACKed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def run(part: list[tuple[str, bytes]], name: str) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        infos = [client.publish(topic, payload, qos=1) for topic, payload in part]
        for info in infos:
            info.wait_for_publish(600)
        client.disconnect()
        client.loop_stop()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(messages[i::connections], f"fleet-{i}"))
               for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def publish_raw(port: int, lanes: list[list[bytes]]) -> float:
    """Publish prebuilt packets (bench/mqtt_fleet.py), one connection per lane; seconds until
    every PUBACK arrived."""
    seconds, acked = publish_prebuilt(port, lanes)
    assert acked == sum(len(lane) for lane in lanes), acked
    return seconds


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids(postmaster: int) -> list[int]:
    """The postmaster and every process it forked (backends, writer, WAL writer, ...)."""
    out = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                out.append(int(entry.name))
    return out


class CpuMeter:
    """CPU seconds per component at each sample: the bench process (the publishers' threads
    and this poll), mosquitto, each worker, PostgreSQL (every process of the cluster except the
    backend serving this poll, counted apart)."""

    def __init__(self, components: dict[str, list[int]], postmaster: int, poll_backend: int):
        self.components, self.postmaster, self.poll_backend = components, postmaster, poll_backend

    def sample(self) -> dict[str, float]:
        out = {name: sum(cpu_s(p) for p in pids) for name, pids in self.components.items()}
        pg = [p for p in postgres_pids(self.postmaster) if p != self.poll_backend]
        out["postgresql"] = sum(cpu_s(p) for p in pg)
        out["count poll (pg)"] = cpu_s(self.poll_backend)
        return out


def throughput(url: str, port: int, messages: list[tuple[str, bytes]],
               send: Callable[[], float],
               cpu: Callable[[Any], CpuMeter]) -> tuple[float, float, int, dict[str, float]]:
    """(stored values/s over the 10..90 % part, publish seconds, messages the broker
    acknowledged to the fleet but never delivered: holes in the consumer's seq ranges once
    nothing more arrives for 30 s, CPU seconds per component over the same 10..90 % part)."""
    total = len(messages) * VALUES_PER_MESSAGE
    marks: list[tuple[float, int, dict[str, float]]] = []
    published: list[float] = []
    db = open_database(url)
    backend = int(db.scalar("SELECT pg_backend_pid()"))
    waits: dict[str, int] = {}
    meter = cpu(backend)
    pub = threading.Thread(target=lambda: published.append(send()))
    pub.start()
    while True:
        n = int(db.scalar("SELECT count(*) FROM current_reads"))
        marks.append((time.monotonic(), n, meter.sample()))
        for _ in range(5):  # what the workers' backends are doing, 5 looks a second
            for (what,) in db.execute(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, state) FROM "
                    "pg_stat_activity WHERE backend_type = 'client backend' AND pid <> "
                    "pg_backend_pid()"):
                waits[str(what)] = waits.get(str(what), 0) + 1
            time.sleep(0.2)
        if n >= total:
            break
        stalled = [m for m in marks if m[0] >= marks[-1][0] - 30]
        if published and stalled[0][1] == n and marks[-1][0] - marks[0][0] > 30:
            break  # everything acknowledged, nothing new for 30 s: the rest is lost
    pub.join()
    db.close()
    lo = next(m for m in marks if m[1] >= total * 0.1)
    hi = next(m for m in marks if m[1] >= min(total * 0.9, marks[-1][1]))
    used = {k: hi[2][k] - lo[2][k] for k in hi[2]} | {"values": hi[1] - lo[1]}
    looks = sum(waits.values()) or 1
    print("   workers' PostgreSQL backends, sampled 5 times a second: " + ", ".join(
        f"{k} {v / looks:.0%}" for k, v in sorted(waits.items(), key=lambda kv: -kv[1])[:6]),
        flush=True)
    return (hi[1] - lo[1]) / (hi[0] - lo[0]), published[0], missing_messages(url), used


def postmaster(backend: int) -> int:
    """The postmaster's pid: the parent of any backend."""
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def missing_messages(url: str) -> int:
    """Seqs below each stream's highest that the consumer never stored (its holes)."""
    db = open_database(url)
    try:
        return int(db.scalar("SELECT coalesce(sum(m), 0) FROM (SELECT max(hi) - "
                             "sum(hi - lo + 1) AS m FROM seq_ranges GROUP BY gw, epoch) x"))
    finally:
        db.close()


def latency(url: str, port: int, gateways: int, meters: int, rate: float,
            seconds: float, version: int) -> tuple[float, float, int]:
    """Paced publishing at ``rate`` messages/s, each stamped when built: (p50, p99) in ms of
    received_ms − t_ms over the rows stored, and how many messages."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-paced",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start_ms = time.time_ns() // 1_000_000
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0) * rate)
        while sent < due:
            g, m = sent % gateways, (sent // gateways) % meters
            topic, payload = poll_message(g, m, 1_000_000 + sent, time.time_ns() // 1_000_000,
                                          sent, version)
            client.publish(topic, payload, qos=1)
            sent += 1
        time.sleep(0.002)
    client.disconnect()
    client.loop_stop()
    db = open_database(url)
    try:
        query = ("SELECT count(*) FROM current_reads WHERE t_ms >= ?", (start_ms,))
        want = sent * VALUES_PER_MESSAGE
        end = time.monotonic() + 120
        while time.monotonic() < end and int(db.scalar(*query)) < want:
            time.sleep(0.5)
        rows = sorted(int(r) - int(t) for r, t in db.execute(
            "SELECT received_ms, t_ms FROM current_reads WHERE t_ms >= ?", (start_ms,)))
    finally:
        db.close()
    return rows[len(rows) // 2], rows[min(len(rows) - 1, int(len(rows) * 0.99))], sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--polls", type=int, default=1)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--publisher", choices=("raw", "paho"), default="raw",
                        help="raw: prebuilt PUBLISH packets on sockets (bench/mqtt_fleet.py); "
                             "paho: one paho publish() call per message")
    parser.add_argument("--latency-rate", type=float, default=500.0)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--broker-inflight", type=int, default=None,
                        help="mosquitto max_inflight_messages (0: unlimited); default: "
                             "3 x --batch-max, the workers' receive maximum")
    parser.add_argument("--payload-version", type=int, choices=(1, 2), default=2)
    parser.add_argument("--batch-max", type=int, default=1000,
                        help="the workers' [ingest] batch_max (messages per transaction)")
    parser.add_argument("--pg-durable", action="store_true",
                        help="PostgreSQL with fsync, synchronous_commit and full_page_writes "
                             "on (its defaults, as in production); default: all three off")
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="run each worker under cProfile, writing DIR/w<N>-w<i>.prof")
    args = parser.parse_args()

    from tests.central.pg_cluster import available, postgres_cluster
    from tests.central.support import fresh_pg

    if not available():
        sys.exit("bench_central_mqtt: initdb/pg_ctl not installed")
    t_build = time.perf_counter()
    messages = [poll_message(g, m, p * args.meters + m + 1, 1_767_225_600_000 + p * 900_000, p,
                             args.payload_version)
                for p in range(args.polls) for g in range(args.gateways)
                for m in range(args.meters)]
    print(f"fleet: {args.gateways} gateways x {args.meters} meters x {args.polls} polls = "
          f"{len(messages):,} messages (payload v{args.payload_version}, "
          f"{sum(len(p) for _t, p in messages) / len(messages):.0f} B each), "
          f"{len(messages) * VALUES_PER_MESSAGE:,} values "
          f"(built in {time.perf_counter() - t_build:.1f} s); load average "
          f"{os.getloadavg()[0]:.1f}")
    lanes = prebuild(messages, args.publishers) if args.publisher == "raw" else []
    print(f"PostgreSQL: fsync, synchronous_commit, full_page_writes "
          f"{'on (durable)' if args.pg_durable else 'off (throwaway)'}; publisher "
          f"{args.publisher}")
    with postgres_cluster(durable=args.pg_durable) as server, tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.workers.split(",")):
            work = Path(tmp) / f"w{n}"
            work.mkdir()
            url = fresh_pg(server)
            inflight = 3 * args.batch_max if args.broker_inflight is None else args.broker_inflight
            with mosquitto(work, inflight) as (port, broker_pid):
                config = work / "central.toml"
                config.write_text(
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nshare_group = "bench"\n'
                    f'[database]\nurl = "{url}"\n[ingest]\nbatch_max = {args.batch_max}\n'
                    'batch_wait_ms = 100\n[gaps]\ngrace_s = 600\nscan_interval_s = 30\n')
                workers = start_workers(n, config, args.profile_dir)
                try:
                    time.sleep(3)
                    if args.payload_version == 2:
                        births(args.gateways, args.meters, port)
                        time.sleep(2)
                    load0 = os.getloadavg()[0]
                    send = ((lambda: publish_raw(port, lanes)) if args.publisher == "raw"
                            else (lambda: publish(port, messages, args.publishers)))
                    components = {"bench (publishers)": [os.getpid()], "mosquitto": [broker_pid]}
                    components |= {f"worker {i}": [w.pid] for i, w in enumerate(workers)}
                    rate, pub_s, lost, used = throughput(
                        url, port, messages, send,
                        lambda backend, parts=components: CpuMeter(parts, postmaster(backend),
                                                                   backend))
                    p50, p99, sent = latency(url, port, args.gateways, args.meters,
                                             args.latency_rate, args.latency_s,
                                             args.payload_version)
                    rss = [peak_rss_mb(w.pid) for w in workers]
                    print(f"workers {n}: stored {rate:9,.0f} values/s sustained "
                          f"(published in {pub_s:.1f} s; {lost} messages acknowledged to the "
                          f"fleet, never delivered) | latency at "
                          f"{args.latency_rate:.0f} msgs/s ({sent} msgs): p50 {p50} ms, "
                          f"p99 {p99} ms | peak RSS per worker "
                          f"{', '.join(f'{r:.0f}' for r in rss)} MiB | load average "
                          f"{load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
                    values = used.pop("values")
                    span = sum(used.values())
                    print("   CPU over the sustained part (10..90 %), per component: "
                          + "; ".join(f"{k} {v:.1f} s" for k, v in used.items())
                          + f"; total {span:.1f} CPU-s", flush=True)
                    print("   values per CPU-second (the per-core figures): "
                          + "; ".join(f"{k} {values / v:,.0f}" for k, v in used.items() if v > 0)
                          + f"; whole box {values / span:,.0f}" if span else "", flush=True)

                finally:
                    for w in workers:
                        w.send_signal(signal.SIGTERM)
                    for w in workers:
                        w.wait(60)
                    for i in range(n):  # each worker's counters (parked: reads before births)
                        for line in (work / f"worker-{i}.log").read_text().splitlines():
                            if " stopped: " in line:
                                print("  ", line.split(" stopped: ", 1)[1], flush=True)


if __name__ == "__main__":
    main()
