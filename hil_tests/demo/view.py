"""What ``edge-gateway demo`` shows: the gateway as a consumer sees it, over MQTT.

The view deliberately reads nothing from the daemon's process or files: it subscribes to
``P/G/#`` like a head-end system would and decodes the CBOR payloads of DESIGN §4 with the
project's own decoder, so what is on screen is exactly what left the gateway.

:class:`DemoState` (in :mod:`firmware_tools.live_view`, shared with ``gwtool watch``) folds
messages into per-meter, per-bus and gateway figures. :class:`DemoObserver` is the paho
subscriber. :func:`render_rich` draws the live view for a terminal; :func:`render_plain` the
periodic text summary used when stdout is not a terminal.

The consumer's panels are the other side of the wire: what ``edge-central`` *stored*, as its
``status --detail`` reports it (:class:`~hil_tests.demo.consumer.CentralSnapshot`), drawn by
:func:`central_plain` and inside :func:`render_rich`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

# The folding of messages into a view is gwtool watch's (firmware_tools/live_view.py); the demo
# adds its rich drawing and its own subscriber. Re-exported for the demo's runner.
from firmware_tools.live_view import (
    DemoSnapshot,
    DemoState,
    MeterInfo,
    MeterView,
    age_text,
    clock_text,
    render_plain,
)
from hil_tests.demo.consumer import CentralSnapshot

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["DemoObserver", "DemoSnapshot", "DemoState", "MeterInfo", "central_plain",
           "render_plain", "render_rich"]


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


def render_rich(snap: DemoSnapshot, elapsed_s: float, footer: str, width: int,
                central: CentralSnapshot | None = None, central_note: str = "") -> RenderableType:
    """The live view: header, buses and gateway side by side, alarms, the consumer's store
    (``central``; ``central_note`` says why there is none), then the meters."""
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
        ("health age", age_text(snap.health_ms, now_ms)),
    ):
        gateway.add_row(label, str(value))

    alarms = Table(title=f"Alarms ({snap.alarms_total} events) and simulated incidents",
                   box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    for column in ("time", "state", "kind", "meter", "severity"):
        alarms.add_column(column)
    for alarm in snap.alarms:
        style = "red" if alarm.state == "raised" else "green"
        alarms.add_row(clock_text(alarm.ts_ms), Text(alarm.state, style=style), alarm.kind,
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
                age_text(m.read_ms, now_ms), str(m.messages) if m.messages else Text("0", style="dim"))
        return table

    half = (len(snap.meters) + 1) // 2
    meters: RenderableType
    if width >= 170 and len(snap.meters) > 8:
        meters = Columns([meter_table(snap.meters[:half]), meter_table(snap.meters[half:])])
    else:
        meters = meter_table(snap.meters)
    stored = (_central_rich(central, len(snap.meters), now_ms) if central is not None
              else Text(central_note, style="dim"))
    return Group(header, Columns([buses, gateway]), alarms, stored, meters,
                 Text(footer, style="dim"))


def _gap_text(gap: dict[str, Any]) -> str:
    span = f"seq {gap['from_seq']}-{gap['to_seq']}"
    if gap.get("filled_ms") is None:
        return f"{span} open since {clock_text(gap['detected_ms'])}"
    took = (int(gap["filled_ms"]) - int(gap["detected_ms"])) / 1000
    return (f"{span} detected {clock_text(gap['detected_ms'])}, filled {took:.1f} s later "
            f"({gap.get('requests', 0)} replay request(s))")


def _central_head(central: CentralSnapshot, meters: int) -> str:
    s = central.status or {}
    rate = "-" if central.values_per_s is None else f"{central.values_per_s:.1f}"
    open_gaps, filled = central.gap_counts()
    return (f"worker {central.worker}; last seq {s.get('last_seq', '-')} of {s.get('hwm', '-')}; "
            f"{s.get('values_stored', 0)} values from {len(s.get('values_by_meter') or {})}/"
            f"{meters} meters, {rate} values/s; gaps {open_gaps} open, {filled} filled; "
            f"{s.get('alarms_total', 0)} alarm events")


def central_plain(central: CentralSnapshot | None, meters: int, note: str = "") -> list[str]:
    """The consumer's lines of the text summary (``note`` instead when it is not running)."""
    if central is None:
        return [f"  central: {note}"] if note else []
    s = central.status or {}
    lines = [f"  central (edge-central, SQLite): {_central_head(central, meters)}"]
    lines += [f"  central gap {_gap_text(g)}" for g in s.get("gaps") or []]
    lines += [f"  central alarm {clock_text(a['ts_ms'])} {a['state']:<7} {a['kind']} "
              f"{a.get('meter') or ''} ({a['severity']})" for a in (s.get("alarms") or [])[:5]]
    lines.append(f"  central last birth {_clock(s.get('last_birth_ms'))}, last death "
                 f"{_clock(s.get('last_death_ms'))}")
    return lines


def _clock(ts_ms: int | None) -> str:
    return "-" if ts_ms is None else clock_text(ts_ms)


def _central_rich(central: CentralSnapshot, meters: int, now_ms: int) -> RenderableType:
    """Three tables side by side: the store's figures, its gaps, its newest alarm events."""
    from rich import box
    from rich.columns import Columns
    from rich.table import Table
    from rich.text import Text

    s = central.status or {}
    figures = Table(title="edge-central (SQLite)", box=None,
                    title_justify="left", show_header=False)
    figures.add_column("what")
    figures.add_column("value", justify="right")
    open_gaps, filled = central.gap_counts()
    worker_style = "green" if central.worker == "running" else "yellow"
    for label, value in (
        ("worker", Text(central.worker, style=worker_style)),
        ("last seq / hwm", f"{s.get('last_seq', '-')} / {s.get('hwm', '-')}"),
        ("values stored", str(s.get("values_stored", 0))),
        ("values/s", "-" if central.values_per_s is None else f"{central.values_per_s:.1f}"),
        ("meters stored", f"{len(s.get('values_by_meter') or {})}/{meters}"),
        ("gaps open / filled", Text(f"{open_gaps} / {filled}",
                                    style="red" if open_gaps else "green")),
        ("last birth", age_text(s.get("last_birth_ms"), now_ms)),
        ("last death", age_text(s.get("last_death_ms"), now_ms)),
        ("status age", "-" if central.status_age_s is None else f"{central.status_age_s:.0f} s"),
    ):
        figures.add_row(label, value)

    gaps = Table(title="Gaps (replayed by the gateway)", box=box.SIMPLE_HEAD, show_edge=False,
                 title_justify="left")
    for column in ("detected", "seqs", "filled", "requests"):
        gaps.add_column(column)
    for gap in (s.get("gaps") or [])[:5]:
        filled_ms = gap.get("filled_ms")
        gaps.add_row(clock_text(gap["detected_ms"]), f"{gap['from_seq']}-{gap['to_seq']}",
                     Text("open", style="red") if filled_ms is None
                     else Text(f"{(filled_ms - gap['detected_ms']) / 1000:.1f} s later",
                               style="green"), str(gap.get("requests", 0)))

    alarms = Table(title=f"Alarm events stored ({s.get('alarms_total', 0)})",
                   box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    for column in ("time", "state", "kind", "meter"):
        alarms.add_column(column)
    for alarm in (s.get("alarms") or [])[:5]:
        alarms.add_row(clock_text(alarm["ts_ms"]),
                       Text(alarm["state"], style="red" if alarm["state"] == "raised" else "green"),
                       alarm["kind"], alarm.get("meter") or "-")
    return Columns([figures, gaps, alarms])
