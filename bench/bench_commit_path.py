"""CPU per meter poll between the bus result and the outbox row: the committer's whole batch.

    .venv/bin/python -m bench.bench_commit_path [--meters 100] [--batch 5] [--rounds 100]
                                                [--profile FILE.prof] [--parts [--repeat 15]]

The set-up of the peer harness (../shared/bench/README.md, issue 18) without the wire: a store in
a temporary directory, the committer with VEE, payload v2 alias bindings and the theft monitor
subscribed to the validated feed, as :class:`gateway.app.runtime.Runtime` builds them; ``--meters``
Modbus meters of the harness profile (12 holding registers, 10 quantities). Each round is one
poll per meter, committed in batches of ``--batch`` polls, made as the Modbus bus makes them (the registers decoded by
:func:`protocols.modbus.register_map.decode_reply`), with the harness simulator's drift. Prints
the median process CPU time of :meth:`Committer.commit` per poll (µs) over a round; the fsync's
wait is not CPU time, and the theft evaluation each batch schedules runs outside it.

``--parts``: each part of what the committer does for a poll timed alone on one poll per
meter, ``--repeat`` times over the 100 polls, the fastest run kept, in µs per poll: the read
records (:meth:`Committer._records`), the outbox message (:meth:`Committer._reads_message`),
its payload (``build``: the v2 encoder), the store's insert of five such messages with prebuilt
payloads (one transaction of a 50 ms commit window, rolled back, so without the fsync), VEE's
per-poll part in batches of five polls near an interval boundary (every grid read is placed),
and the theft monitor's recording of a poll. To compare two trees, run this file by its path
from another directory with ``PYTHONPATH`` set to each tree, alternately, a few times (each
part the fastest of its runs: the noise of a shared machine mostly drops out).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.acquisition.factory import build_buses
from gateway.acquisition.modbus_bus import ModbusBus
from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.analytics.theft import TheftMonitor
from gateway.app.plan import Plan, build_plan
from gateway.pipeline.clock import ClockWatch
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.pipeline.vee_stage import VeeStage
from gateway.store import Store, wall_ms
from gateway.store.records import OutboxMessage
from protocols.modbus.register_map import DecodeProblem, decode_reply
from protocols.topics import GatewayTopics

PROFILE = """kind = "modbus"
vendor = "bench"
model = "peer harness meter"
max_registers_per_request = 125
max_gap = 0

[defaults]
function = "holding"
type = "uint16"
word_order = "big"

[[groups]]
name = "instantaneous"
registers = [
  { quantity = "voltage.a", address = 0, unit = "V", scale = "0.1" },
  { quantity = "voltage.b", address = 1, unit = "V", scale = "0.1" },
  { quantity = "voltage.c", address = 2, unit = "V", scale = "0.1" },
  { quantity = "current.a", address = 3, unit = "A", scale = "0.01" },
  { quantity = "current.b", address = 4, unit = "A", scale = "0.01" },
  { quantity = "current.c", address = 5, unit = "A", scale = "0.01" },
  { quantity = "power.active.total", address = 6, type = "int32", unit = "kW", scale = "0.00001" },
  { quantity = "power.factor.total", address = 10, type = "int16", unit = "", scale = "0.001" },
  { quantity = "frequency", address = 11, unit = "Hz", scale = "0.01" },
]

[[groups]]
name = "energy"
registers = [
  { quantity = "energy.active.import.total", address = 8, type = "uint32", unit = "kWh", \
scale = "0.01" },
]
"""


def config_text(data_dir: Path, profile: Path, meters: int) -> str:
    rows = [f'[gateway]\nid = "gw-bench"\ndata_dir = "{data_dir}"\n\n[mqtt]\nhost = "127.0.0.1"\n'
            'topic_prefix = "mtr/v1"\n\n[[buses]]\nname = "tcp-1"\nprotocol = "modbus-tcp"\n'
            'host = "127.0.0.1"\nport = 5020\n']
    for m in range(1, meters + 1):
        rows.append(f'[[meters]]\nid = "m-{m:03d}"\nbus = "tcp-1"\naddress = {m}\n'
                    f'profile = "{profile}"\npoll_interval_s = 1\n')
    return "\n".join(rows)


class Meter:
    """The harness simulator's meter (../shared/bench/peer_modbus.py ``MeterBlock``)."""

    def __init__(self, unit: int) -> None:
        r = self.rng = random.Random(1000 + unit)
        self.u = [r.uniform(222.0, 236.0) for _ in range(3)]
        self.i = [r.uniform(4.0, 16.0) for _ in range(3)]
        self.pf = r.uniform(0.90, 0.99)
        self.e_kwh = r.uniform(1000.0, 50000.0)

    def registers(self, dt: float) -> bytes:
        r = self.rng
        self.u = [min(253.0, max(207.0, x + r.uniform(-0.3, 0.3))) for x in self.u]
        self.i = [min(60.0, max(0.5, x * r.uniform(0.98, 1.02))) for x in self.i]
        self.pf = min(1.0, max(0.8, self.pf + r.uniform(-0.004, 0.004)))
        p_w = sum(u * i for u, i in zip(self.u, self.i, strict=True)) * self.pf
        self.e_kwh += p_w * dt / 3.6e6
        p10 = round(p_w * 10) & 0xFFFFFFFF
        e100 = int(self.e_kwh * 100) & 0xFFFFFFFF
        words = [round(x * 10) for x in self.u] + [round(x * 100) for x in self.i]
        words += [p10 >> 16, p10 & 0xFFFF, e100 >> 16, e100 & 0xFFFF,
                  round(self.pf * 1000) & 0xFFFF, round((50.0 + r.uniform(-0.05, 0.05)) * 100)]
        return struct.pack(">12H", *words)


def polls(bus: object, sims: list[Meter], t_ms: int) -> list[PollResult]:
    assert isinstance(bus, ModbusBus)
    batch: list[PollResult] = []
    for meter, sim in zip(bus.meters, sims, strict=True):
        data = sim.registers(1.0)
        values: list[PolledValue] = []
        for block in meter.blocks:
            words = data[block.start * 2:(block.start + block.count) * 2]
            for spec, value in decode_reply(block, words):
                assert type(value) is not DecodeProblem
                values.append(PolledValue(spec.quantity, value, spec.unit, t_ms))  # type: ignore[arg-type]
        batch.append(PollResult(meter.meter_id, bus.name, t_ms - 5, t_ms, True, tuple(values)))
    return batch


def rig(root: Path, meters: int) -> tuple[Plan, Store, PipelineServices,
                                          asyncio.Queue[object], object]:
    """The daemon's plan, store, pipeline services, result queue and bus for ``meters`` bench
    meters, in ``root``."""
    (root / "bench.toml").write_text(PROFILE)
    (root / "gateway.toml").write_text(config_text(root / "data", root / "bench.toml", meters))
    plan = build_plan(root / "gateway.toml")
    config = plan.config
    store = Store.open(root / "data" / "gateway.db")
    services = PipelineServices.open(store, GatewayTopics(config.mqtt.topic_prefix,
                                                          config.gateway.id))
    queue: asyncio.Queue[object] = asyncio.Queue()
    (bus,) = build_buses(config, queue)  # type: ignore[arg-type]
    return plan, store, services, queue, bus


async def measure(meters: int, batch: int, rounds: int, profile_out: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plan, store, services, queue, bus = rig(Path(tmp), meters)
        config = plan.config
        vee = VeeStage(plan.vee, [m.id for m in config.meters], wall_ms(), store)
        clock = ClockWatch(config.gateway.clock_step_threshold_s, services.alarms)
        committer = Committer(services, queue, vee=vee,  # type: ignore[arg-type]
                              aliases=store.bind_aliases(plan.aliases), clock=clock)
        theft = TheftMonitor(config, services.alarms, clock=clock)
        services.feed.subscribe("theft", theft.on_poll)
        sims = [Meter(m) for m in range(1, meters + 1)]
        t_ms = wall_ms()
        commit_us: list[float] = []
        profiler = None
        if profile_out:
            import cProfile

            profiler = cProfile.Profile()
        for k in range(rounds + 20):
            t_ms += 1000
            polled = polls(bus, sims, min(t_ms, wall_ms()))
            spent = 0.0
            for first in range(0, meters, batch):
                if profiler is not None and k >= 20:
                    profiler.enable()
                started = time.process_time()
                committer.commit(polled[first:first + batch])  # type: ignore[arg-type]
                spent += time.process_time() - started
                if profiler is not None:
                    profiler.disable()
                await asyncio.sleep(0.002)  # the theft evaluation it scheduled
            if k >= 20:
                commit_us.append(spent / meters * 1e6)
        store.close()
        if profiler is not None and profile_out:
            profiler.dump_stats(profile_out)
    print(f"meters {meters}, batches of {batch}, rounds {rounds}: commit CPU per poll median "
          f"{statistics.median(commit_us):.1f} µs (quartiles "
          f"{statistics.quantiles(commit_us, n=4)[0]:.1f} / "
          f"{statistics.quantiles(commit_us, n=4)[2]:.1f}); "
          f"stats {committer.stats}")


def fastest(run: Callable[[], object], polls_per_run: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / polls_per_run * 1e6


async def measure_parts(repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        plan, store, services, queue, bus = rig(Path(tmp), 100)
        config = plan.config
        meter_ids = [m.id for m in config.meters]
        clock = ClockWatch(config.gateway.clock_step_threshold_s, services.alarms)
        committer = Committer(services, queue,  # type: ignore[arg-type]
                              vee=VeeStage(plan.vee, meter_ids, wall_ms(), store),
                              aliases=store.bind_aliases(plan.aliases), clock=clock)
        theft = TheftMonitor(config, services.alarms, clock=clock)
        theft._scheduled = True  # record only: evaluations are not a poll's part
        sims = [Meter(m) for m in range(1, 101)]
        batch = polls(bus, sims, wall_ms())
        n = len(batch)
        records = [committer._records(p) for p in batch]
        messages = [committer._reads_message(p.meter_id, p.finished_ms, r)
                    for p, r in zip(batch, records, strict=True)]
        payloads = [m.build(1) for m in messages]
        prebuilt = [OutboxMessage(topic=m.topic, qos=1,
                                  build=OutboxMessage.prebuilt(topic=m.topic, qos=1,
                                                               payload=payload).build,
                                  meter=m.meter, reads=m.reads)
                    for m, payload in zip(messages, payloads, strict=True)]
        validated = [committer._validated(p, r) for p, r in zip(batch, records, strict=True)]
        conn = store._conn
        assert conn is not None

        def insert() -> None:
            for first in range(0, n, 5):
                conn.execute("BEGIN IMMEDIATE")
                store._insert_messages(conn, prebuilt[first:first + 5], 1)
                conn.execute("ROLLBACK")
                store._pending_marks.clear()

        # Polls from 50 s before a grid boundary on: within snap_seconds of it, so every grid
        # read goes to VEE's placing (the first run places them, the later ones find them
        # placed, as all but the first read of an interval do), and nothing comes due.
        now = wall_ms()
        boundary = now - now % 900_000
        vee_rounds = [[(p, committer._records(p))
                       for p in polls(bus, sims, boundary - 50_000 + 1000 * k)]
                      for k in range(20)]
        stage = VeeStage(plan.vee, meter_ids, boundary - 50_000, None)
        stage.apply(vee_rounds[0][:1], boundary - 50_000)  # opens the window

        def vee() -> None:
            for k, polled in enumerate(vee_rounds):
                for first in range(0, n, 5):
                    stage.apply(polled[first:first + 5], boundary - 50_000 + 1000 * k + 5)

        def record_polls() -> None:
            for poll in validated:
                theft.on_poll(poll)

        parts = {
            "records": (lambda: [committer._records(p) for p in batch], n),
            "reads_message": (lambda: [committer._reads_message(p.meter_id, p.finished_ms, r)
                                       for p, r in zip(batch, records, strict=True)], n),
            "payload (build)": (lambda: [m.build(1) for m in messages], n),
            "store insert, payload prebuilt": (insert, n),
            "VEE apply (near a boundary)": (vee, n * len(vee_rounds)),
            "theft on_poll": (record_polls, n),
        }
        times = {name: fastest(run, count, repeat) for name, (run, count) in parts.items()}
        store.close()
        return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--batch", type=int, default=5,
                        help="polls a commit (the daemon's 50 ms commit window gathers ~5)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--profile", metavar="FILE.prof")
    parser.add_argument("--parts", action="store_true",
                        help="time each part of the path alone instead (module docstring)")
    parser.add_argument("--repeat", type=int, default=15, help="runs of each part (--parts)")
    args = parser.parse_args(argv)
    if args.parts:
        for name, us in asyncio.run(measure_parts(args.repeat)).items():
            print(f"{name:32s} {us:7.2f} µs/poll")
        return 0
    asyncio.run(measure(args.meters, args.batch, args.rounds, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
