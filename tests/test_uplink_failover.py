"""`[mqtt] fallback_hosts`: the gateway's uplink moves to the next broker when one goes away.

Two real mosquittos. The daemon's MQTT half (store → outbox pump → link) publishes polls at
10/s; broker A is stopped mid-stream → the link reconnects to B, the rows A had not
acknowledged are re-sent through B (marked `hist`), and every committed row reached a subscriber
of A or of B. Then A comes back and B stops → back to A, still nothing lost. Both on MQTT
3.1.1, the protocol RabbitMQ's plugin speaks. Plus the key's validation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.store import Store
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink
from gateway.uplink.outbox_pump import OutboxPump
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.payload import mark_hist
from tests.broker import MosquittoBroker, Observer, free_port
from tests.test_outbox_pump import (
    GW,
    METERS,
    PREFIX,
    Ledger,
    is_hist,
    produce,
    reads_received,
    run,
    seq_of,
    until,
)

_CONFIG = """
[gateway]
id = "gw-0042"
data_dir = "var"

[mqtt]
host = "broker-a.example"
port = 1883
{extra}

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/ttyUSB0"

[[meters]]
id = "m-001"
bus = "rs485-1"
address = "000102030425"
profile = "dlt645-2007"
"""


def test_fallback_hosts_are_checked_and_reach_the_link(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    for extra, expected in [
        ('fallback_hosts = ["broker-b"]', 'expected "host:port"'),
        ('fallback_hosts = ["broker-b:70000"]', "port 70000 of 'broker-b:70000' is not in"),
        ('fallback_hosts = ["broker-a.example:1883"]', "is host:port itself"),
        ('fallback_hosts = ["b:1883", "b:1883"]', "listed twice"),
        ('fallback_hosts = "b:1883"', "expected an array"),
    ]:
        path.write_text(_CONFIG.format(extra=extra))
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert "mqtt.fallback_hosts" in str(info.value) and expected in str(info.value), info.value
    path.write_text(_CONFIG.format(extra='fallback_hosts = ["broker-b:1884", "[fd00::7]:1883"]'))
    settings = LinkSettings.from_config(load_config(path))
    assert settings.brokers == (("broker-a.example", 1883), ("broker-b", 1884), ("fd00::7", 1883))


def test_stopped_broker_fails_over_to_the_next_and_back_losing_nothing(
        tmp_path: Path) -> None:
    a = MosquittoBroker(tmp_path / "a")
    b = MosquittoBroker(tmp_path / "b", port=free_port())
    a.start()
    b.start()
    store = Store.open(tmp_path / "gateway.db")
    settings = LinkSettings(
        host=a.host, port=a.port, client_id=GW, topic_prefix=PREFIX, protocol="3.1.1",
        keepalive_s=2, reconnect_min_s=0.2, reconnect_max_s=1.0, connect_timeout_s=2.0,
        inflight_window=16, fallbacks=((b.host, b.port),),
    )
    state = GatewayStateMessages(GW, "0.1.0-test", "cd" * 32, METERS,
                                 position=lambda: (store.epoch, store.last_seq))
    link = MqttLink(settings, state=state, next_bdseq=store.next_bdseq)
    pump = OutboxPump(store, link, window=16)

    async def main() -> None:
        with Observer(a, f"{PREFIX}/{GW}/#") as on_a, Observer(b, f"{PREFIX}/{GW}/#") as on_b:
            ledger = Ledger(store)
            await link.start()
            pump.start()
            stop = asyncio.Event()
            producer = None
            try:
                assert await link.wait_connected(5)
                assert link.broker == (a.host, a.port)
                producer = asyncio.create_task(produce(ledger, pump, stop, period=0.1))
                await asyncio.sleep(1.5)
                await asyncio.to_thread(a.stop)
                assert await until(lambda: link.connected and link.broker == (b.host, b.port), 5)
                await asyncio.sleep(1.5)
                await asyncio.to_thread(a.start)
                await asyncio.to_thread(b.stop)
                assert await until(lambda: link.connected and link.broker == (a.host, a.port), 5)
                await asyncio.sleep(1.0)
                stop.set()
                await producer
                assert await until(lambda: store.outbox_depth() == 0, 15)

                def seen() -> set[int]:
                    return {seq_of(p) for p in reads_received(on_a) + reads_received(on_b)}

                assert await until(lambda: seen() >= set(ledger.payloads), 10)
            finally:
                stop.set()
                await pump.stop(drain_timeout=5)
                await link.stop()
            received = reads_received(on_a) + reads_received(on_b)
            for payload in received:  # byte-exact, or exact plus the history mark
                stored = ledger.payloads[seq_of(payload)]
                assert payload in (stored, mark_hist(stored))
            assert {seq_of(p) for p in received} == set(ledger.payloads)
            for observer in (on_a, on_b):  # each broker saw each meter's rows in commit order
                live = [seq_of(p) for p in reads_received(observer) if not is_hist(p)]
                assert live == sorted(live)
            assert {seq_of(p) for p in reads_received(on_b)} and len(ledger.payloads) > 100
            # what a stopped broker had not acknowledged went out again, marked as history
            assert sum(1 for p in received if is_hist(p)) <= pump.status().resent
            assert link.status().connection_losses == 2

    try:
        run(main)
    finally:
        a.stop()
        b.stop()
        store.close()


def test_fallback_brokers_are_allowed_by_the_units_ip_filter(tmp_path: Path) -> None:
    from gateway.app.unit_network import peers

    path = tmp_path / "gateway.toml"
    path.write_text(_CONFIG.format(extra='fallback_hosts = ["192.0.2.7:1883"]'))
    found = peers(load_config(path), resolver=lambda host: ["192.0.2.1"],
                  resolv_conf=tmp_path / "none")
    assert [(p.role, p.addresses) for p in found] == [
        ("MQTT broker", ("192.0.2.1",)), ("MQTT fallback broker", ("192.0.2.7",))]
