"""Bytes per value on the wire, payload schema v1 against v2, from the real daemon's output.

    .venv/bin/python bench/bench_payload_size.py [--seconds S]

Set-up, all on 127.0.0.1: a private mosquitto; ``python -m hil_tests.sim`` with one DL/T 645
meter on a pseudo-terminal (9600 8E1) and one Modbus TCP meter; the daemon as a subprocess
polling both every 2 s (a fresh simulator for each run), once with ``[mqtt] payload_version = 1`` and once with ``2`` (a fresh
data_dir each). The Modbus meter is read through the 10-quantity profile of
``bench/bench_modbus_cpu.py`` (voltage and current a/b/c, total active power, import energy,
total PF, frequency); the DL/T 645 meter through the shipped ``dlt645-2007`` profile.

Then the encoders alone, in this process: CPU time (``time.process_time_ns``) to build the
10-value Modbus message, v1 (``build_reads``) against v2 (``build_reads_v2``), 40 interleaved
rounds of 2,000 messages each; and the encoder with the daemon's store: commits of 10 such
messages (``Store.commit_poll``, as the committer batches polls) into a fresh SQLite store, 20
interleaved rounds of 20 commits. Min, quartile and median, since other jobs share the cores.

A subscriber records every reads message (``P/G/reads/+``) with its exact size in bytes — the
MQTT payload, which is what a cellular link carries apart from the MQTT header and topic — and
decodes it (v2 through the aliases of the retained birth) to count its values. Bytes per value
= payload bytes / values, envelope included. The birth that carries the aliases is retained and
sent once per connection; its size is printed too.

    .venv/bin/python bench/bench_payload_size.py --encode-only   # the encoders alone

Exit status: 0 measured, 2 when it could not measure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_modbus_cpu import PROFILE_NAME, write_profile
from bench.daemon_rig import (
    GATEWAY_ID,
    HOST,
    TOPIC_PREFIX,
    Daemon,
    MeasurementError,
    config_text,
    fail,
    print_table,
    private_broker,
    start_simulator,
)
from gateway.acquisition.alias_tables import alias_table
from gateway.store import Store
from gateway.store.records import OutboxMessage
from protocols.payload import (
    AliasBook,
    Binding,
    Envelope,
    PayloadError,
    ReadRecord,
    build_reads,
    build_reads_v2,
    decode_message,
    parse_reads,
)
from protocols.profiles import parse_profile

DLT645_METER = "dlt-001"
MODBUS_METER = "mb-001"


class Recorder:
    """Every message under the gateway's topics, as received."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-payload-size")
        self._client.on_connect = lambda c, u, f, r, p: c.subscribe(f"{TOPIC_PREFIX}/{GATEWAY_ID}/#", 1)
        self._client.on_subscribe = lambda *a: self._ready.set()
        self._client.on_message = self._on_message
        self._client.connect(HOST, port)
        self._client.loop_start()
        if not self._ready.wait(10):
            raise MeasurementError("no SUBACK from the private broker")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def stop(self) -> list[tuple[str, bytes]]:
        self._client.loop_stop()
        self._client.disconnect()
        with self._lock:
            return list(self.messages)


def run_version(workdir: Path, broker_port: int, dlt_device: str, dlt_address: str,
                modbus_port: int, version: int, seconds: float) -> list[tuple[str, bytes]]:
    daemon = Daemon(workdir / f"v{version}")
    daemon.workdir.mkdir()
    (daemon.workdir / "profiles").symlink_to(workdir / "profiles")
    buses = [{"name": "rs485-1", "protocol": "dlt645", "port": dlt_device, "baudrate": 9600,
              "parity": "E", "timeout_ms": 500},
             {"name": "tcp-1", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": modbus_port,
              "timeout_ms": 1000}]
    meters = [{"id": DLT645_METER, "bus": "rs485-1", "address": dlt_address,
               "profile": "dlt645-2007", "poll_interval_s": 2},
              {"id": MODBUS_METER, "bus": "tcp-1", "address": 1, "profile": PROFILE_NAME,
               "poll_interval_s": 2}]
    text = config_text(broker_port, buses, meters, data_dir="var")
    text = text.replace(f'topic_prefix = "{TOPIC_PREFIX}"',
                        f'topic_prefix = "{TOPIC_PREFIX}"\npayload_version = {version}', 1)
    recorder = Recorder(broker_port)
    daemon.start(text)
    try:
        time.sleep(seconds)
        daemon.check_alive()
    finally:
        daemon.stop()
        messages = recorder.stop()
    if not any(f"/reads/{DLT645_METER}" in t for t, _ in messages) or not any(
            f"/reads/{MODBUS_METER}" in t for t, _ in messages):
        raise MeasurementError(f"payload v{version}: a meter published nothing; daemon log:\n"
                               + daemon.log_tail())
    return messages


def sizes(messages: list[tuple[str, bytes]]) -> tuple[dict[str, list[tuple[int, int]]], int]:
    """Per meter: (payload bytes, values) of each reads message; and the last birth's size."""
    book = AliasBook()
    birth = 0
    out: dict[str, list[tuple[int, int]]] = {}
    for topic, payload in messages:
        if topic.endswith("/state") and payload:
            message = decode_message(payload)
            if message.get("online") is True:
                book.learn(message)
                birth = len(payload)
    for topic, payload in messages:
        if "/reads/" not in topic:
            continue
        try:
            reads = parse_reads(payload, book)
        except PayloadError as exc:
            raise MeasurementError(f"undecodable reads message on {topic}: {exc}") from exc
        out.setdefault(reads.meter, []).append((len(payload), len(reads.reads)))
    return out, birth


def encoder_rows() -> list[tuple[str, str, str]]:
    """CPU per 10-value Modbus message, v1 against v2 (see the module docstring)."""
    from bench.bench_modbus_cpu import PROFILE

    table = alias_table(parse_profile(PROFILE, name=PROFILE_NAME))  # type: ignore[arg-type]
    values = {"voltage.a": 231.47, "voltage.b": 229.96, "voltage.c": 230.58, "current.a": 12.345,
              "current.b": 11.982, "current.c": 12.107, "power.active.total": 5.4321,
              "power.factor.total": 0.987, "frequency": 49.98}
    ts = time.time_ns() // 1_000_000
    reads = [ReadRecord.actual(e.q, values.get(e.q, Decimal("123456.78")), e.unit, ts - 200)
             for e in table.entries]
    env = Envelope(GATEWAY_ID, 2**63 + 12345, 123_456, ts)
    binding = Binding(5, MODBUS_METER, table)
    builders = {1: lambda: build_reads(env, MODBUS_METER, reads),
                2: lambda: build_reads_v2(env, binding, reads)}
    rounds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(40):
        for version, build in builders.items():
            start = time.process_time_ns()
            for _ in range(2000):
                build()
            rounds[version].append((time.process_time_ns() - start) / 2000 / 1000)
    rows = []
    for version, times in rounds.items():
        times.sort()
        rows.append((f"encoder CPU, 10-value Modbus message, v{version}",
                     f"min {times[0]:.2f} µs, quartile {times[10]:.2f} µs, median {times[20]:.2f} µs "
                     f"({len(builders[version]())} B)", ""))
    commits: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-payload-store-") as tmp, \
            Store.open(Path(tmp) / "gateway.sqlite") as store:
        bound = store.bind_aliases({MODBUS_METER: table})[MODBUS_METER]
        for _ in range(20):
            for version in (1, 2):
                batch = [OutboxMessage.for_reads(
                    topic=f"{TOPIC_PREFIX}/{GATEWAY_ID}/reads/{MODBUS_METER}", gw=GATEWAY_ID,
                    epoch=store.epoch, ts=ts, meter=MODBUS_METER, reads=reads,
                    binding=bound if version == 2 else None) for _ in range(10)]
                start = time.process_time_ns()
                for _ in range(20):
                    store.commit_poll(batch)
                commits[version].append((time.process_time_ns() - start) / 200 / 1000)
    for version, times in commits.items():
        times.sort()
        rows.append((f"encoder + SQLite commit CPU per message, v{version}",
                     f"min {times[0]:.1f} µs, quartile {times[5]:.1f} µs, median {times[10]:.1f} µs",
                     ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="run per version (default 30)")
    parser.add_argument("--encode-only", action="store_true", help="only the encoders' CPU")
    args = parser.parse_args()
    if args.encode_only:
        print_table("Reads message encoders, payload v1 against v2", encoder_rows())
        return 0
    rows: list[tuple[str, str, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-payload-") as tmp:
            workdir = Path(tmp)
            write_profile(workdir)
            with private_broker(workdir) as broker:
                result: dict[int, tuple[dict[str, list[tuple[int, int]]], int]] = {}
                for version in (1, 2):
                    # A simulator per run: the pty's line settings do not survive the first
                    # daemon closing it.
                    sim = start_simulator(["--dlt645-meters", "1", "--baud", "9600",
                                           "--modbus-tcp-meters", "1", "--modbus-port", "0"],
                                          workdir / f"sim-v{version}.log")
                    try:
                        assert sim.dlt645_device is not None and sim.modbus_port is not None
                        result[version] = sizes(run_version(
                            workdir, broker.port, sim.dlt645_device, sim.dlt645_addresses[0],
                            sim.modbus_port, version, args.seconds))
                    finally:
                        sim.stop()
    except MeasurementError as exc:
        return fail(str(exc))
    for meter, label in ((MODBUS_METER, "Modbus TCP, bench 10-quantity profile"),
                         (DLT645_METER, "DL/T 645-2007, dlt645-2007 profile")):
        for version in (1, 2):
            polls = result[version][0].get(meter, [])
            if not polls:
                return fail(f"no reads messages from {meter} with payload v{version}")
            values = statistics.mode(v for _, v in polls)
            full = [b for b, v in polls if v == values]
            mean = statistics.fmean(full)
            rows.append((f"{label}: v{version}, {values} values a poll",
                         f"{mean:.1f} B a message ({min(full)}..{max(full)}), "
                         f"{mean / values:.2f} B a value, {len(full)} messages",
                         "<= 8 B a value" if version == 2 else ""))
    for version in (1, 2):
        rows.append((f"birth (retained, once per connection), v{version}",
                     f"{result[version][1]} B", ""))
    rows += encoder_rows()
    print_table("Reads message size, payload v1 against v2 (real daemon, real broker)", rows,
                ["bytes = MQTT payload; values = records in the message (decoded, v2 through "
                 "the birth's aliases); polls with fewer values (a failed item) left out"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
