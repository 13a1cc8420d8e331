"""A simulated timeline for the load-control engine: real simulated DL/T 645 meters (the load model
and the meter firmware of hil_tests), real 1CH frames built and decoded by protocols/dlt645, the
actuation state machine verifying every frame from status word 3 — and a manual clock, so an hour
of shedding runs in a fraction of a second. Only the bus (a pty and its timing) is left out: the
request bytes go straight to the meter's ``handle``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.control.actuation import (
    EXPECTED_FLAGS,
    ActuationPolicy,
    Dlt645Credentials,
    Done,
    ReadStatus,
    RelayActuation,
    SendFrame,
    Wait,
    describe_refusal,
    dlt645_control_request,
    status_read_request,
    status_word3_flags,
)
from gateway.control.load_control import (
    ControlCommand,
    EngineSettings,
    LoadControlEngine,
    Output,
    PublishAlarm,
    SendControl,
    Topology,
)
from gateway.control.load_control.settings import GroupSpec, MeterSpec
from hil_tests.dlt645_sim import Dlt645Meter
from hil_tests.load_model import DEFAULT_START_EPOCH, LoadModel, ManualClock, SimMeter
from protocols.dlt645 import AckReply, ErrorReply, ReadReply, decode, encode, parse_frame
from protocols.dlt645.messages import ControlAction

#: 2025-01-01 19:00 local (UTC+8): the evening peak, where shedding happens.
EVENING: float = DEFAULT_START_EPOCH + 19 * 3600
INSTANT = ActuationPolicy(verify_delay_s=0.0, read_interval_s=0.0, verify_timeout_s=0.0,
                          retry_backoff_s=0.0)


@dataclass
class Rig:
    """Meters ``m0``.. of ``base_kw`` each in group ``g``; ``protected`` ids are configured
    protected. ``log`` holds (t, output) in order; ``frames`` (t, meter, action, verified)."""

    n_meters: int = 4
    base_kw: float = 10.0
    protected: Sequence[str] = ()
    settings: EngineSettings = field(default_factory=EngineSettings)
    seed: int = 7
    start: float = EVENING
    credentials: Dlt645Credentials = field(default_factory=Dlt645Credentials)

    def __post_init__(self) -> None:
        self.clock = ManualClock(0.0)
        self.model = LoadModel(seed=self.seed, clock=self.clock, start_epoch=self.start)
        self.ids = [f"m{i}" for i in range(self.n_meters)] + list(self.protected)
        self.sims: dict[str, SimMeter] = {}
        self.meters: dict[str, Dlt645Meter] = {}
        for i, meter_id in enumerate(self.ids):
            sim = self.model.meter(meter_id, base_kw=self.base_kw)
            self.sims[meter_id] = sim
            self.meters[meter_id] = Dlt645Meter(sim, f"{i + 1:012d}")
        specs = [MeterSpec(m, protected=m in self.protected, contract_kw=self.base_kw)
                 for m in self.ids]
        self.topology = Topology.build(specs, [GroupSpec("g", tuple(self.ids), tuple(self.ids))])
        self.engine = LoadControlEngine(self.topology, self.settings,
                                        rng=random.Random(self.seed))
        self.log: list[tuple[float, Output]] = []
        self.frames: list[tuple[float, str, ControlAction, bool]] = []
        self.dispatch(self.engine.power_up(self.now))

    # ---- time and power --------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.model.now()

    def group_kw(self) -> float:
        return sum(float(self.sims[m].sample().active_kw) for m in self.ids)

    def advance(self, seconds: float, step: float = 10.0) -> None:
        """Sample the group power every ``step`` seconds and tick the engine."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.clock.advance(min(step, end - self.now))
            t = self.now
            self.dispatch(self.engine.on_power("g", t, self.group_kw()))
            self.dispatch(self.engine.tick(t))

    def command(self, action: str, *, meters: Iterable[str] | None = None, group: str | None = None,
                params: dict[str, object] | None = None, cmd_id: bytes | None = None) -> bytes:
        cid = cmd_id or random.Random(len(self.log)).randbytes(16)
        targets = tuple(meters) if meters is not None else tuple(self.ids)
        self.dispatch(self.engine.on_command(
            ControlCommand(cid, action, targets, group, params or {}), self.now))
        return cid

    # ---- outputs -----------------------------------------------------------------------------

    def dispatch(self, outputs: list[Output]) -> None:
        for output in outputs:
            self.log.append((self.now, output))
            if isinstance(output, SendControl):
                self.actuate(output)

    def actuate(self, send: SendControl) -> None:
        """Run one SendControl through the actuation state machine against the meter."""
        meter = self.meters[send.meter]
        act = RelayActuation(send.meter, send.action, EXPECTED_FLAGS[send.action], INSTANT)
        t = self.now
        while True:
            step = act.next_step(t)
            if isinstance(step, Done):
                self.frames.append((self.now, send.meter, send.action, step.ok))
                self.dispatch(self.engine.on_actuation(send.request_id, self.now, step.ok,
                                                       step.reason))
                return
            if isinstance(step, Wait):
                t = step.until
            elif isinstance(step, SendFrame):
                request = dlt645_control_request(meter.address, send.action, send.valid_until,
                                                 self.credentials, 480)
                reply = self._exchange(meter, encode(request))
                if isinstance(reply, AckReply):
                    act.on_sent(t, True)
                elif isinstance(reply, ErrorReply):
                    act.on_sent(t, False, describe_refusal(send.meter, send.action, reply),
                                retryable=False)
                else:
                    act.on_sent(t, False, "no reply", retryable=True)
            elif isinstance(step, ReadStatus):
                reply = self._exchange(meter, encode(status_read_request(meter.address)))
                flags = status_word3_flags(reply) if isinstance(reply, ReadReply) else None
                act.on_status(t, flags, "" if flags else "no status reply")

    @staticmethod
    def _exchange(meter: Dlt645Meter, frame: bytes) -> object:
        response = meter.handle(parse_frame(frame))
        return None if response.frame is None else decode(response.frame)

    # ---- queries -------------------------------------------------------------------------------

    def sends(self, action: ControlAction | None = None) -> list[tuple[float, SendControl]]:
        return [(t, o) for t, o in self.log if isinstance(o, SendControl)
                and (action is None or o.action is action)]

    def alarms(self, kind: str, state: str = "raised") -> list[tuple[float, PublishAlarm]]:
        return [(t, o) for t, o in self.log if isinstance(o, PublishAlarm)
                and o.kind == kind and o.state == state]

    def relay_open(self, meter: str) -> bool:
        return self.sims[meter].sample().status.relay_open
