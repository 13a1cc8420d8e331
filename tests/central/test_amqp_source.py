"""The AMQP source against a real 2-node RabbitMQ cluster (Debian's rabbitmq-server and its MQTT
plugin on loopback, tests/rabbit_cluster.py): a gateway publishing MQTT 3.1.1 to node A, a worker
consuming the mirrored queue with node B as its fallback; node A stopped mid-run → the worker
moves to B, the gateway's later messages (through B) arrive, every read stored once. A command
published through the source reaches the gateway's MQTT subscription. Skipped without the
server; slow (starting two nodes takes 20–40 s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from central.config import load_config
from central.sources.amqp import AmqpSource
from central.storage import open_database
from central.worker import Worker
from protocols.payload import Envelope, build_birth, build_reads
from tests.central.support import EPOCH, PREFIX, register
from tests.rabbit_cluster import available, rabbit_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="rabbitmq-server not installed"),
]
pika = pytest.importorskip("pika")


def _mqtt(port: int, client_id: str) -> tuple[object, list[tuple[str, bytes]]]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[str, bytes]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, clean_session=False)
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", port, 10)
    client.loop_start()
    return client, got


def _publish(client: object, gw: str, seqs: range) -> None:
    for seq in seqs:
        payload = build_reads(Envelope(gw, EPOCH, seq, 1_000 + seq), "m-1",
                              [register(seq * 900_000, f"{seq}.25")])
        info = client.publish(f"{PREFIX}/{gw}/reads/m-1", payload, qos=1)  # type: ignore[attr-defined]
        info.wait_for_publish(10)
        assert info.is_published()


def _until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_worker_fails_over_to_the_other_node_and_loses_nothing(tmp_path: Path) -> None:
    with rabbit_cluster(2) as (a, b):
        config_path = tmp_path / "central.toml"
        config_path.write_text(
            f"[source]\nkind = 'amqp'\n[amqp]\nurls = ['{a.amqp_url}', '{b.amqp_url}']\n"
            f"heartbeat_s = 5\n[database]\nurl = 'sqlite:///{tmp_path / 'c.sqlite'}'\n"
            "[ingest]\nbatch_wait_ms = 50\n")
        config = load_config(config_path)
        db = open_database(config.database_url)
        worker = Worker(config, "w1", db)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert _until(lambda: worker.source.connected, 30)

        gateway, commands = _mqtt(a.mqtt_port, "gw-1")
        gateway.subscribe(f"{PREFIX}/gw-1/cmd", qos=1)  # type: ignore[attr-defined]
        birth = build_birth(Envelope("gw-1", EPOCH, 0, 500), bdseq=1, version="t",
                            config_sha256="0" * 64, meters=["m-1"])
        gateway.publish(f"{PREFIX}/gw-1/state", birth, qos=1, retain=True)  # type: ignore[attr-defined]
        _publish(gateway, "gw-1", range(1, 21))

        def stored() -> int:
            return int(db.execute("SELECT count(*) FROM current_reads")[0][0])

        assert _until(lambda: stored() == 20, 30), stored()
        assert db.execute("SELECT count(*) FROM presence")[0][0] == 1  # the birth came through

        # A replay command from the consumer's side reaches the gateway's MQTT session.
        publisher = AmqpSource(config, "pub", threading.Event())
        publisher.start()
        assert publisher.publish(f"{PREFIX}/gw-1/cmd", b"replay-1")
        assert _until(lambda: (f"{PREFIX}/gw-1/cmd", b"replay-1") in commands, 10), commands
        publisher.close()

        gateway.disconnect()  # type: ignore[attr-defined]
        gateway.loop_stop()  # type: ignore[attr-defined]
        a.stop_app()
        gateway, commands = _mqtt(b.mqtt_port, "gw-1")  # the gateway fails over to B too
        _publish(gateway, "gw-1", range(21, 41))
        assert _until(lambda: stored() == 40, 60), stored()
        # its command subscription (a mirrored queue) survived the loss of node A
        publisher = AmqpSource(config, "pub2", threading.Event())
        publisher.start()
        assert publisher.publish(f"{PREFIX}/gw-1/cmd", b"replay-2")
        assert _until(lambda: (f"{PREFIX}/gw-1/cmd", b"replay-2") in commands, 10), commands
        publisher.close()
        gateway.disconnect()  # type: ignore[attr-defined]
        gateway.loop_stop()  # type: ignore[attr-defined]

        worker.stop()
        thread.join(10)
        values = [r[0] for r in db.execute("SELECT value FROM current_reads ORDER BY t_ms")]
        assert values == [f"{s}.25" for s in range(1, 41)]
        assert worker.stats.values == 40 and worker.stats.rejected == 0
        db.close()
