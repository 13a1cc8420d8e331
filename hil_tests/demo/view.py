"""What ``edge-gateway demo`` shows: the gateway as a consumer sees it, over MQTT.

The view deliberately reads nothing from the daemon's process or files: it subscribes to
``P/G/#`` like a head-end system would and decodes the CBOR payloads of DESIGN §4 with the
project's own decoder, so what is on screen is exactly what left the gateway.

:class:`DemoState` folds messages into per-meter, per-bus and gateway figures (thread-safe: paho
delivers on its own thread, the screen is drawn from the demo's event loop).
:class:`DemoObserver` is the paho subscriber. :func:`render_rich` draws the live view for a
terminal; :func:`render_plain` the periodic text summary used when stdout is not a terminal.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocols.payload import AliasBook, PayloadError, decode_message, parse_reads

if TYPE_CHECKING:
    from rich.console import RenderableType

log = logging.getLogger(__name__)

ENERGY = "energy.active.import.total"
POWER = "power.active.total"
VOLTAGE_A = "voltage.a"
#: NEM12 qualities, worst first: a poll with any null value shows N even if the rest was actual.
_QUALITY_ORDER = "NFSEA"


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """A configured meter as the view labels it: ``id``, ``bus`` and a human ``kind``."""

    id: str
    bus: str
    kind: str


@dataclass
class MeterView:
    """The latest published figures of one meter."""

    info: MeterInfo
    messages: int = 0
    energy_kwh: Decimal | None = None
    power_kw: float | None = None
    voltage_a: float | None = None
    qualities: str = ""
    read_ms: int | None = None
    backlog: int = 0

    def quality_label(self) -> str:
        return "/".join(q for q in _QUALITY_ORDER if q in self.qualities) or "-"


@dataclass(frozen=True, slots=True)
class AlarmLine:
    ts_ms: int
    state: str
    kind: str
    severity: str
    meter: str | None


@dataclass
class DemoSnapshot:
    """A consistent copy of :class:`DemoState` for drawing."""

    gateway_id: str
    meters: list[MeterView]
    online: bool | None = None
    bdseq: int | None = None
    health: dict[str, Any] = field(default_factory=dict)
    health_ms: int | None = None
    alarms: list[AlarmLine] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)
    alarms_total: int = 0
    messages: int = 0
    undecodable: int = 0
    connected: bool = False

    @property
    def meters_read(self) -> int:
        return sum(1 for m in self.meters if m.messages)

    def missing(self) -> list[str]:
        return [m.info.id for m in self.meters if not m.messages]


class DemoState:
    """Everything the view knows, updated from MQTT messages (any thread)."""

    def __init__(self, gateway_id: str, topic_prefix: str, meters: Sequence[MeterInfo]) -> None:
        self.gateway_id = gateway_id
        self.base = f"{topic_prefix}/{gateway_id}/"
        self._lock = threading.Lock()
        self._meters = {m.id: MeterView(m) for m in meters}
        #: Payload v2 alias bindings, learned from every birth (P/G/state) seen.
        self._aliases = AliasBook()
        self._online: bool | None = None
        self._bdseq: int | None = None
        self._health: dict[str, Any] = {}
        self._health_ms: int | None = None
        # Few lines each: the whole view should fit a 50-line terminal.
        self._alarms: deque[AlarmLine] = deque(maxlen=5)
        self._notes: deque[tuple[float, str]] = deque(maxlen=2)
        self._alarms_total = 0
        self._messages = 0
        self._undecodable = 0
        self.connected = False

    def note(self, text: str) -> None:
        """Something the demo did to the simulated world (a cover opened …), shown with alarms."""
        with self._lock:
            self._notes.append((time.time(), text))

    def on_message(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.base):
            return
        kind = topic[len(self.base):]
        try:
            if kind.startswith("reads/"):
                self._on_reads(payload)
            elif kind == "health":
                message = decode_message(payload)
                stats = message.get("stats")
                with self._lock:
                    self._health = stats if isinstance(stats, dict) else {}
                    self._health_ms = _int(message.get("ts"))
            elif kind == "state":
                if not payload:
                    return  # a cleared retained state
                message = decode_message(payload)
                self._aliases.learn(message)
                with self._lock:
                    self._online = message.get("online") is True
                    self._bdseq = _int(message.get("bdseq"))
            elif kind == "alarms":
                self._on_alarm(decode_message(payload))
        except PayloadError as exc:
            log.warning("demo view: undecodable message on %s: %s", topic, exc)
            with self._lock:
                self._undecodable += 1
            return
        with self._lock:
            self._messages += 1

    def _on_reads(self, payload: bytes) -> None:
        reads = parse_reads(payload, self._aliases)
        values = {r.q: r for r in reads.reads}
        with self._lock:
            view = self._meters.get(reads.meter)
            if view is None:
                return
            view.messages += 1
            if reads.hist:
                view.backlog += 1
            view.qualities = "".join(sorted({r.quality for r in reads.reads}))
            view.read_ms = max(r.t for r in reads.reads)
            if (energy := values.get(ENERGY)) is not None and isinstance(energy.val, Decimal):
                view.energy_kwh = energy.val
            if (power := values.get(POWER)) is not None and power.val is not None:
                view.power_kw = float(power.val)
            if (voltage := values.get(VOLTAGE_A)) is not None and voltage.val is not None:
                view.voltage_a = float(voltage.val)

    def _on_alarm(self, message: dict[str, object]) -> None:
        meter = message.get("meter")
        line = AlarmLine(_int(message.get("ts")) or 0, str(message.get("state", "?")),
                         str(message.get("kind", "?")), str(message.get("severity", "?")),
                         meter if isinstance(meter, str) else None)
        with self._lock:
            self._alarms.append(line)
            self._alarms_total += 1

    def snapshot(self) -> DemoSnapshot:
        with self._lock:
            return DemoSnapshot(
                gateway_id=self.gateway_id,
                meters=[copy.copy(m) for m in self._meters.values()],
                online=self._online, bdseq=self._bdseq,
                health=copy.deepcopy(self._health), health_ms=self._health_ms,
                alarms=list(self._alarms), notes=list(self._notes),
                alarms_total=self._alarms_total, messages=self._messages,
                undecodable=self._undecodable, connected=self.connected)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class DemoObserver:
    """A paho MQTT 3.1.1 subscriber to ``P/G/#`` feeding a :class:`DemoState`.

    3.1.1 because every broker the demo may start speaks it; a clean session because the view
    only cares about what happens while it watches (the retained state arrives anyway).
    """

    def __init__(self, host: str, port: int, state: DemoState) -> None:
        self.state = state
        self.host, self.port = host, port
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="edge-gateway-demo-view",
                                  protocol=paho.MQTTv311, clean_session=True)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self.state.connected = True
            client.subscribe(self.state.base + "#", qos=1)

    def _on_disconnect(self, *args: Any) -> None:
        self.state.connected = False

    def _on_subscribe(self, *args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.state.on_message(msg.topic, bytes(msg.payload))

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"the demo view could not subscribe on {self.host}:{self.port}")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------------------------
# Formatting


def _fmt(value: float | Decimal | None, places: int, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value} {unit}" if isinstance(value, Decimal) else f"{value:.{places}f} {unit}"


def _age(read_ms: int | None, now_ms: int) -> str:
    return "-" if read_ms is None else f"{max(0, now_ms - read_ms) / 1000:.0f} s"


def _clock(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


def _bus_line(name: str, bus: dict[str, Any]) -> str:
    lost = bus.get("comm_lost") or []
    return (f"  bus {name:<9} {float(bus.get('transactions_per_s', 0)):5.2f} tx/s  "
            f"ok {100 * float(bus.get('success_ratio', 1)):5.1f}%  "
            f"transactions {bus.get('transactions', 0)}  timeouts {bus.get('timeouts', 0)}  "
            f"overruns {bus.get('overruns', 0)}" + (f"  comm lost: {', '.join(lost)}" if lost else ""))


def render_plain(snap: DemoSnapshot, elapsed_s: float) -> str:
    """The text summary printed when stdout is not a terminal (and once at the end)."""
    now_ms = time.time_ns() // 1_000_000
    online = {True: "online", False: "OFFLINE", None: "not seen yet"}[snap.online]
    health = snap.health
    outbox = health.get("outbox_depth", "-") if health else "-"
    lines = [f"[demo {elapsed_s:5.0f} s] gateway {snap.gateway_id} {online}; "
             f"{snap.meters_read}/{len(snap.meters)} meters read; {snap.messages} messages; "
             f"outbox {outbox}; {snap.alarms_total} alarm events"]
    for name, bus in (health.get("buses") or {}).items():
        lines.append(_bus_line(name, bus))
    for m in snap.meters:
        if not m.messages:
            lines.append(f"  {m.info.id:<6} {m.info.bus:<8} no read yet")
            continue
        lines.append(f"  {m.info.id:<6} {m.info.bus:<8} import {_fmt(m.energy_kwh, 2, 'kWh')}  "
                     f"power {_fmt(m.power_kw, 3, 'kW')}  Ua {_fmt(m.voltage_a, 1, 'V')}  "
                     f"quality {m.quality_label()}  age {_age(m.read_ms, now_ms)}  "
                     f"polls {m.messages}")
    for alarm in snap.alarms:
        lines.append(f"  alarm {_clock(alarm.ts_ms)} {alarm.state:<7} {alarm.kind} "
                     f"{alarm.meter or ''} ({alarm.severity})")
    return "\n".join(lines)


def render_rich(snap: DemoSnapshot, elapsed_s: float, footer: str, width: int) -> RenderableType:
    """The live view: header, buses and gateway side by side, alarms, then the meters."""
    from rich import box
    from rich.columns import Columns
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now_ms = time.time_ns() // 1_000_000
    health = snap.health
    if snap.online is None:
        state = Text("waiting for the gateway's birth message", style="yellow")
    elif snap.online:
        state = Text(f"online (bdseq {snap.bdseq})", style="bold green")
    else:
        state = Text(f"offline (bdseq {snap.bdseq})", style="bold red")
    header = Text.assemble(("edge-gateway demo", "bold"), f"  gateway {snap.gateway_id} ", state,
                           f"  ·  {snap.meters_read}/{len(snap.meters)} meters read  ·  "
                           f"{snap.messages} messages  ·  {elapsed_s:.0f} s")

    buses = Table(title="Buses", box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    for column in ("bus", "tx/s", "success", "transactions", "timeouts", "overruns", "comm lost"):
        buses.add_column(column, justify="left" if column in ("bus", "comm lost") else "right")
    for name, bus in (health.get("buses") or {}).items():
        ratio = float(bus.get("success_ratio", 1))
        buses.add_row(name, f"{float(bus.get('transactions_per_s', 0)):.2f}",
                      Text(f"{100 * ratio:.1f}%", style="green" if ratio >= 0.99 else "yellow"),
                      str(bus.get("transactions", 0)), str(bus.get("timeouts", 0)),
                      str(bus.get("overruns", 0)), ", ".join(bus.get("comm_lost") or []) or "-")

    gateway = Table(title="Gateway", box=None, title_justify="left", show_header=False)
    gateway.add_column("what")
    gateway.add_column("value", justify="right")
    pump = health.get("pump") or {}
    mqtt = health.get("mqtt") or {}
    for label, value in (
        ("outbox depth", health.get("outbox_depth", "-")),
        ("oldest unacked", f"{health.get('oldest_unacked_age_s', 0)} s" if health else "-"),
        ("published / acked", f"{pump.get('published', '-')} / {pump.get('acked', '-')}"),
        ("MQTT link", mqtt.get("state", "-")),
        ("CPU / RSS", f"{health.get('cpu_pct', '-')} % / "
                      f"{int(health.get('rss_bytes') or 0) // (1 << 20)} MiB" if health else "-"),
        ("health age", _age(snap.health_ms, now_ms)),
    ):
        gateway.add_row(label, str(value))

    alarms = Table(title=f"Alarms ({snap.alarms_total} events) and simulated incidents",
                   box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    for column in ("time", "state", "kind", "meter", "severity"):
        alarms.add_column(column)
    for alarm in snap.alarms:
        style = "red" if alarm.state == "raised" else "green"
        alarms.add_row(_clock(alarm.ts_ms), Text(alarm.state, style=style), alarm.kind,
                       alarm.meter or "-", alarm.severity)
    for ts, text in snap.notes:
        alarms.add_row(time.strftime("%H:%M:%S", time.localtime(ts)), Text("sim", style="cyan"),
                       Text(text, style="cyan"), "", "")

    def meter_table(rows: Sequence[MeterView]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for column in ("meter", "bus", "kind"):
            table.add_column(column)
        for column in ("import kWh", "P kW", "Ua V", "q", "age", "polls"):
            table.add_column(column, justify="right")
        for m in rows:
            quality = m.quality_label()
            table.add_row(
                m.info.id, m.info.bus, m.info.kind,
                str(m.energy_kwh) if m.energy_kwh is not None else "-",
                f"{m.power_kw:.3f}" if m.power_kw is not None else "-",
                f"{m.voltage_a:.1f}" if m.voltage_a is not None else "-",
                Text(quality, style="green" if quality == "A" else "yellow"),
                _age(m.read_ms, now_ms), str(m.messages) if m.messages else Text("0", style="dim"))
        return table

    half = (len(snap.meters) + 1) // 2
    meters: RenderableType
    if width >= 170 and len(snap.meters) > 8:
        meters = Columns([meter_table(snap.meters[:half]), meter_table(snap.meters[half:])])
    else:
        meters = meter_table(snap.meters)
    return Group(header, Columns([buses, gateway]), alarms, meters, Text(footer, style="dim"))
