"""CPU floor of the third-party work in one Modbus meter poll, measured alone.

    .venv/bin/python -m bench.third_party_floor --modbus-port P --broker-port B [--seconds S]

Every poll of ``bench/bench_modbus_cpu.py`` contains two pieces of work that are not the
gateway's own code: pymodbus's async TCP client reading one block of input registers, and
paho-mqtt publishing one QoS 1 message (MQTT 5) and handling its PUBACK. This script does only
those two, paced like the daemon (``--rate`` per second on a 1 s grid, 8 concurrent Modbus
clients, paho's network loop in its thread as in the paho baseline of ``bench_publish.py``), in a
process of its own (the Modbus clients configured as the daemon configures them), and prints JSON: CPU milliseconds per Modbus request and per MQTT message.
Their sum is what any Python gateway built on these two libraries pays per poll before doing
anything of its own — the part of the 0.4 ms goal that is not ours to spend. ``--event-loop``
runs the Modbus clients on the loop the daemon uses (uvloop by default), so the comparison is
like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from gateway.acquisition.modbus_responses import RESPONSE_CLASSES
from gateway.app import event_loop

BLOCK_START = 0x0000
BLOCK_COUNT = 74  # the bench profile's one merged read
PAYLOAD_BYTES = 480  # a reads message of 10 quantities, as the daemon builds it


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def modbus_floor(port: int, units: int, rate: float, seconds: float) -> dict[str, float]:
    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
               for _ in range(8)]
    for client in clients:
        for response_class in RESPONSE_CLASSES:  # as the daemon configures its clients
            client.register(response_class)
        if not await client.connect():
            raise SystemExit(f"cannot connect to the Modbus simulator on port {port}")
    queue: asyncio.Queue[int] = asyncio.Queue()
    done = 0

    async def worker(client: AsyncModbusTcpClient) -> None:
        nonlocal done
        while True:
            unit = await queue.get()
            response = await client.read_input_registers(BLOCK_START, count=BLOCK_COUNT,
                                                         device_id=unit)
            if response.isError() or len(response.registers) != BLOCK_COUNT:
                raise SystemExit(f"bad Modbus reply from unit {unit}: {response}")
            done += 1
            queue.task_done()

    tasks = [asyncio.create_task(worker(c)) for c in clients]
    per_tick = max(1, round(rate))
    start_cpu, start = _cpu(), time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for k in range(per_tick):
            queue.put_nowait(1 + (k % units))
        tick += 1
        await queue.join()
        await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
    cpu = _cpu() - start_cpu
    for task in tasks:
        task.cancel()
    for client in clients:
        client.close()
    return {"modbus_requests": done, "modbus_cpu_ms_per_request": 1000 * cpu / max(done, 1)}


def mqtt_floor(broker_port: int, rate: float, seconds: float) -> dict[str, float]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"floor-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    acked = 0
    lock = threading.Lock()

    def on_publish(_c: object, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        with lock:
            acked += 1

    client.on_publish = on_publish
    client.max_inflight_messages_set(64)
    client.connect("127.0.0.1", broker_port, keepalive=30)
    client.loop_start()
    payload = bytes(PAYLOAD_BYTES)
    per_tick = max(1, round(rate))
    sent = 0
    start_cpu, start = _cpu(), time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for _ in range(per_tick):
            client.publish(f"floor/{os.getpid()}/reads", payload, qos=1)
            sent += 1
        tick += 1
        time.sleep(max(0.0, start + tick - time.monotonic()))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if acked >= sent:
                break
        time.sleep(0.01)
    cpu = _cpu() - start_cpu
    client.loop_stop()
    client.disconnect()
    return {"mqtt_messages": acked, "mqtt_cpu_ms_per_message": 1000 * cpu / max(acked, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modbus-port", type=int, required=True)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0, help="operations per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the loop the Modbus clients run on: the one the daemon runs on")
    args = parser.parse_args()
    result = event_loop.run(lambda: modbus_floor(args.modbus_port, args.units, args.rate,
                                                 args.seconds), args.event_loop)  # type: ignore[arg-type]
    result["event_loop"] = args.event_loop  # type: ignore[assignment]
    result.update(mqtt_floor(args.broker_port, args.rate, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
