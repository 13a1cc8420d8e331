"""Summation-group totals published on ``P/G/groups/{group}`` (DESIGN §4), computed with the
``edge_rules.groups`` kernel over the members' latest reads.

Each period the latest ``power.active.total`` of every member meter (signed: + import) is gathered;
a member not read within three of its poll intervals counts as missing. The total is
:func:`edge_rules.groups.group_power`, the same total load control compares with its limits
(each member counts the part of its power that flows in its configured direction). A total is ``A`` only when
every member contributed an actual read; otherwise it is published with quality ``N`` and no value
(a partial sum would look like a load drop), with ``coverage`` and the ``missing`` members so the
operator sees why. Totals are durable outbox messages like reads.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from edge_rules.groups import build_layout, group_power, latest_power
from gateway.config import GatewayConfig
from gateway.pipeline.feed import ValidatedPoll
from gateway.pipeline.outbox import OutboxWriter
from gateway.store.records import OutboxMessage
from protocols.payload import Envelope, GroupTotal, build_group
from protocols.topics import QOS_DEFAULT, GatewayTopics


class GroupPublisher:
    def __init__(self, config: GatewayConfig, writer: OutboxWriter, topics: GatewayTopics) -> None:
        self.config = config
        self.writer = writer
        self.store = writer.store
        self.topics = topics
        ratios = {m.id: float(m.ct_ratio * m.pt_ratio) for m in config.meters}
        self.layout = build_layout(config.groups, ratios)
        self.meter_ids = sorted({member.meter for g in config.groups for member in g.members})
        self.interval = {m.id: m.poll_interval_s for m in config.meters}
        self.period_s = max(5.0, max((self.interval[m] for m in self.meter_ids), default=60.0))
        self.power: dict[str, tuple[float, float]] = {}  # meter → (kW, wall seconds)
        self.published = 0

    def on_poll(self, result: ValidatedPoll) -> None:
        for v in result.values:
            if v.quantity == "power.active.total" and isinstance(v.value, Decimal | float | int):
                self.power[result.meter_id] = (float(v.value), v.t_ms / 1000)

    def compute(self, now: float) -> list[tuple[str, GroupTotal]]:
        column = latest_power(self.power, self.meter_ids, self.interval, now)
        totals = group_power(self.layout, self.meter_ids, column)
        coverage = totals.coverage()
        t_ms = int(now * 1000)
        out = []
        for g, group_id in enumerate(self.layout.group_ids):
            full = bool(coverage[g, 0] >= 1.0)
            value = float(totals.total[g, 0])
            out.append((group_id, GroupTotal(
                q="power.active.total", val=value if full else None, unit="kW", t=t_ms,
                quality="A" if full else "N", coverage=float(coverage[g, 0]),
                missing=totals.missing(g, 0))))
        return out

    def publish(self, now: float) -> int:
        results = self.compute(now)
        messages = []
        for group_id, total in results:
            def build(seq: int, group_id: str = group_id, total: GroupTotal = total) -> bytes:
                env = Envelope(self.config.gateway.id, self.store.epoch, seq, total.t)
                return build_group(env, group_id, totals=[total])
            messages.append(OutboxMessage(topic=self.topics.groups(group_id), qos=QOS_DEFAULT,
                                          build=build))
        if messages:
            self.writer.write(messages)
            self.published += len(messages)
        return len(messages)

    async def run(self) -> None:
        # First totals after every member had a chance to be polled once.
        await asyncio.sleep(self.period_s)
        while True:
            self.publish(time.time())
            await asyncio.sleep(self.period_s)
