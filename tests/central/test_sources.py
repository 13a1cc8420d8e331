"""The worker's source split: ``[source]``/``[amqp]`` config, RabbitMQ's topic mapping, and one
worker job whatever the source — fed here by an in-memory source that records when it is told
to acknowledge (after the commit, never before) and what the worker publishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.config import load_config
from central.errors import ConfigError, StorageError
from central.sources import Delivery
from central.sources.amqp import amqp_to_mqtt, binding_keys, mqtt_to_amqp
from central.storage import Database, open_database
from central.worker import Worker
from protocols.payload import Envelope, build_birth, build_reads
from tests.central.support import EPOCH, PREFIX, register


def test_source_config_errors_are_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    for text, expected in [
        ("[source]\nkind = 'kafka'\n", 'source.kind: expected "mqtt" or "amqp", got \'kafka\''),
        ("[source]\nkind = 'amqp'\n", 'source.kind = "amqp" needs an [amqp] table with urls'),
        ("[amqp]\nurls = ['amqp://h']\n", 'amqp: set, but source.kind is "mqtt"'),
        ("[source]\nkind = 'amqp'\n[amqp]\nurls = []\n", "amqp.urls: expected a non-empty array"),
        ("[source]\nkind = 'amqp'\n[amqp]\nurls = ['http://h']\n", "amqp.urls: expected"),
        ("[source]\nkind = 'amqp'\n[amqp]\nurls = ['amqp://h', 'amqp://h']\n", "listed twice"),
        ("[source]\nkind = 'amqp'\n[amqp]\nurls = ['amqp://h']\nqueue = 'amq.x'\n",
         "amqp.queue: expected a name not starting with 'amq.'"),
        ("[source]\nkind = 'amqp'\n[amqp]\nurls = ['amqp://h']\nprefetch = 3\n",
         "amqp.prefetch: unknown key"),
        ("[source]\nkynd = 'amqp'\n", "source.kynd: unknown key"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert str(path) in message and expected in message and "\n" not in message, message
    path.write_text("[source]\nkind = 'amqp'\n[amqp]\nurls = ['amqp://a:5672/%2F', "
                    "'amqps://b:5671/%2F']\nqueue = 'billing'\n")
    config = load_config(path)
    assert config.source == "amqp" and config.amqp is not None
    assert config.amqp.urls == ("amqp://a:5672/%2F", "amqps://b:5671/%2F")
    assert (config.amqp.queue, config.amqp.exchange) == ("billing", "amq.topic")
    path.write_text("")
    assert load_config(path).source == "mqtt" and load_config(path).amqp is None


def test_rabbitmq_topic_mapping_swaps_slash_and_dot() -> None:
    assert mqtt_to_amqp("mtr/v1/gw-1/reads/fast") == "mtr.v1.gw-1.reads.fast"
    assert mqtt_to_amqp("mtr/v1/gw.7/cmd") == "mtr.v1.gw/7.cmd"
    assert amqp_to_mqtt("mtr.v1.gw/7.cmd") == "mtr/v1/gw.7/cmd"
    assert binding_keys("mtr/v1") == ["mtr.v1.*.reads.*", "mtr.v1.*.groups.*", "mtr.v1.*.alarms",
                                      "mtr.v1.*.health", "mtr.v1.*.cmd.result", "mtr.v1.*.state"]


class _ListSource:
    """Hands out ``deliveries`` in batches; records each ack with the row count at that moment."""

    def __init__(self, deliveries: list[Delivery], db: Database) -> None:
        self.deliveries = deliveries
        self.db = db
        self.acks: list[tuple[list[object], int]] = []
        self.published: list[tuple[str, bytes]] = []
        self.worker: Worker | None = None
        self.handed = 0

    @property
    def connected(self) -> bool:
        return True

    def start(self) -> None:
        pass

    def take(self, max_n: int, wait_s: float) -> list[Delivery]:
        if not self.deliveries:
            assert self.worker is not None
            if self.handed == sum(len(tokens) for tokens, _ in self.acks):
                self.worker.stop()  # all handed out and acknowledged: the run ends
            return []
        batch, self.deliveries = self.deliveries[:max_n], self.deliveries[max_n:]
        self.handed += len(batch)
        return batch

    def ack(self, batch: list[Delivery]) -> None:
        rows = self.db.execute("SELECT count(*) FROM current_reads")[0][0]
        self.acks.append(([d.token for d in batch], rows))

    def publish(self, topic: str, payload: bytes) -> bool:
        self.published.append((topic, payload))
        return True

    def close(self) -> None:
        pass


def _deliveries(gw: str, seqs: range) -> list[Delivery]:
    birth = build_birth(Envelope(gw, EPOCH, 0, 500), bdseq=1, version="t",
                        config_sha256="0" * 64, meters=["m-1"])
    out = [Delivery(f"{PREFIX}/{gw}/state", birth, "birth")]
    for seq in seqs:
        payload = build_reads(Envelope(gw, EPOCH, seq, 1_000 + seq), "m-1",
                              [register(seq * 900_000, f"{seq}.5")])
        out.append(Delivery(f"{PREFIX}/{gw}/reads/m-1", payload, seq))
    return out


def test_worker_acks_a_batch_after_its_commit_whatever_the_source(tmp_path: Path) -> None:
    config_path = tmp_path / "central.toml"
    config_path.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'c.sqlite'}'\n"
                           "[ingest]\nbatch_max = 4\n")
    config = load_config(config_path)
    db = open_database(config.database_url)
    deliveries = _deliveries("gw-1", range(1, 11))
    # the same seqs again: a redelivery after a lost connection is stored once
    deliveries += _deliveries("gw-1", range(5, 8))
    source = _ListSource(deliveries, db)
    worker = source.worker = Worker(config, "w1", db, source=source)
    stats = worker.run()
    assert [tokens for tokens, _ in source.acks] == [
        ["birth", 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, "birth"], [5, 6, 7]]
    # acknowledged only once the batch's reads were committed
    assert [rows for _, rows in source.acks] == [3, 7, 10, 10]
    assert (stats.values, stats.duplicates) == (10, 3)
    values = [r[0] for r in db.execute("SELECT value FROM current_reads ORDER BY t_ms")]
    assert values == [f"{s}.5" for s in range(1, 11)]
    db.close()


def test_worker_acks_nothing_while_storage_fails(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = tmp_path / "central.toml"
    config_path.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'c.sqlite'}'\n")
    config = load_config(config_path)
    db = open_database(config.database_url)
    source = _ListSource(_deliveries("gw-1", range(1, 3)), db)
    worker = source.worker = Worker(config, "w1", db, source=source)
    calls = []

    def broken(*_a: object, **_k: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            worker.stop()  # the retry loop (every 2 s) ends when the worker stops
        raise StorageError("database unavailable")

    monkeypatch.setattr("central.worker.ingest", broken)
    worker.run()
    assert len(calls) == 2 and source.acks == []
    db.close()
