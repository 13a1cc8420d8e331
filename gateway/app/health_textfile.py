"""The health snapshot as a Prometheus textfile for node-exporter's textfile collector.

Same figures as the ``P/G/health`` message (:class:`gateway.app.health.HealthReporter`), one
snapshot feeding both, so a dashboard and the head end never disagree. Written in the
Prometheus text exposition format 0.0.4 by hand: the format is a few lines of text, and a
gateway image gains no dependency and no listening port for it (docs/field_tools.md).

Every sample carries ``gateway="<id>"``. Monotonic counts since the daemon's start are
``counter`` (``_total``); everything else is a ``gauge``. The counters of the pipeline sections
(committer, outbox writer, pump, store, commands) are exported field by field under their
health-message names, so a field added there shows up here without a change to this module.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.health import TEXTFILE_NAME
from gateway.uplink.mqtt_link import LinkState

log = logging.getLogger(__name__)

PREFIX = "edge_gateway"
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")

#: Pipeline sections of the snapshot whose numeric fields are exported as they are.
GENERIC_SECTIONS = ("committer", "outbox_writer", "pump", "store", "commands")


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Families:
    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self.families: dict[str, _Family] = {}

    def add(self, name: str, kind: str, help_text: str, value: float | None,
            **labels: str) -> None:
        if value is None:
            return
        family = self.families.setdefault(name, _Family(name, kind, help_text))
        family.samples.append(({"gateway": self.gateway_id, **labels}, float(value)))

    def text(self) -> str:
        lines: list[str] = []
        for family in self.families.values():
            # Text format 0.0.4 names the family as its samples, ``_total`` included.
            lines.append(f"# HELP {family.name} {family.help}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in family.samples:
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                lines.append(f"{family.name}{{{label_text}}} {_number(value)}")
        return "\n".join(lines) + "\n"


def _flag(value: object) -> float:
    return 1.0 if value else 0.0


def _numeric_fields(section: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    for key, value in section.items():
        if isinstance(value, bool):
            yield key, _flag(value)
        elif isinstance(value, int | float):
            yield key, float(value)


def render(gateway_id: str, snapshot: Mapping[str, Any]) -> str:
    """The textfile for one health snapshot (:meth:`HealthReporter.snapshot`)."""
    f = _Families(gateway_id)
    p = PREFIX
    f.add(f"{p}_healthy", "gauge", "1 when the daemon reports itself healthy (systemd watchdog "
          "view), else 0.", _flag(snapshot.get("healthy")))
    f.add(f"{p}_uptime_seconds", "gauge", "Seconds since the daemon started.",
          snapshot.get("uptime_s"))
    f.add(f"{p}_resident_memory_bytes", "gauge", "Resident set size of the daemon.",
          snapshot.get("rss_bytes"))
    f.add(f"{p}_cpu_percent", "gauge", "CPU used since start, percent of one core.",
          snapshot.get("cpu_pct"))
    lag = snapshot.get("loop_lag_ms")
    f.add(f"{p}_loop_lag_seconds", "gauge", "Largest event-loop wake-up lag since the last "
          "snapshot.", None if lag is None else lag / 1000)
    f.add(f"{p}_outbox_depth", "gauge", "Messages in the outbox not yet acknowledged by the "
          "broker.", snapshot.get("outbox_depth"))
    f.add(f"{p}_oldest_unacked_age_seconds", "gauge", "Age of the oldest unacknowledged outbox "
          "message (0: none).", snapshot.get("oldest_unacked_age_s"))
    mqtt = snapshot.get("mqtt")
    if isinstance(mqtt, Mapping):
        f.add(f"{p}_mqtt_connected", "gauge", "1 while the MQTT link is up (connected).",
              _flag(mqtt.get("state") == LinkState.UP.value))
        f.add(f"{p}_mqtt_state", "gauge", "The MQTT link's state (1 on the current one).", 1.0,
              state=str(mqtt.get("state")))
        f.add(f"{p}_mqtt_connects_total", "counter", "MQTT connections made since start.",
              mqtt.get("connects"))
        f.add(f"{p}_mqtt_connection_losses_total", "counter", "MQTT connections lost since start.",
              mqtt.get("connection_losses"))
    _buses(f, snapshot.get("buses") or {})
    for task, state in (snapshot.get("tasks") or {}).items():
        f.add(f"{p}_task_running", "gauge", "1 while a supervised task runs, 0 once it failed.",
              _flag(state == "running"), task=str(task))
    for section in GENERIC_SECTIONS:
        values = snapshot.get(section)
        if not isinstance(values, Mapping):
            continue
        for key, value in _numeric_fields(values):
            name = _NAME_RE.sub("_", f"{p}_{section}_{key}")
            f.add(name, "gauge", f"Health message field {section}.{key}.", value)
    return f.text()


def _buses(f: _Families, buses: Mapping[str, Any]) -> None:
    p = PREFIX
    for bus, h in buses.items():
        f.add(f"{p}_bus_up", "gauge", "1 while the bus's line is open.",
              _flag(h.get("state") == "up"), bus=bus)
        f.add(f"{p}_bus_transactions_total", "counter", "Request/reply exchanges on the bus.",
              h.get("transactions"), bus=bus)
        f.add(f"{p}_bus_timeouts_total", "counter", "Exchanges without a usable reply.",
              h.get("timeouts"), bus=bus)
        f.add(f"{p}_bus_overruns_total", "counter", "Polls that started later than scheduled "
              "because the bus was busy.", h.get("overruns"), bus=bus)
        f.add(f"{p}_bus_success_ratio", "gauge", "Share of recent exchanges that succeeded.",
              h.get("success_ratio"), bus=bus)
        f.add(f"{p}_bus_comm_lost_meters", "gauge", "Meters on the bus in comm-lost state.",
              len(h.get("comm_lost") or ()), bus=bus)
        for meter, counts in (h.get("meters") or {}).items():
            polls, ok, failed, timeouts, retries, poll_ms = counts
            labels = {"bus": bus, "meter": meter}
            f.add(f"{p}_meter_polls_total", "counter", "Polls of the meter.", polls, **labels)
            f.add(f"{p}_meter_polls_ok_total", "counter", "Polls that gave values.", ok, **labels)
            f.add(f"{p}_meter_polls_failed_total", "counter", "Polls that gave no values.",
                  failed, **labels)
            f.add(f"{p}_meter_timeouts_total", "counter", "Exchanges with the meter that timed "
                  "out.", timeouts, **labels)
            f.add(f"{p}_meter_retries_total", "counter", "Exchanges asked again.", retries,
                  **labels)
            f.add(f"{p}_meter_last_poll_seconds", "gauge", "Duration of the meter's last poll.",
                  poll_ms / 1000, **labels)


class TextfileWriter:
    """Replaces ``<directory>/edge_gateway.prom`` atomically; a failure is logged once per
    change of error, never raised (monitoring must not stop the daemon)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / TEXTFILE_NAME
        self._last_error: str | None = None

    def write(self, text: str) -> bool:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc.strerror or exc}"
            if error != self._last_error:
                log.warning("cannot write the health textfile %s: %s (check [health] "
                            "textfile_dir and that the service may write there)", self.path, error)
            self._last_error = error
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False
        if self._last_error is not None:
            log.info("health textfile %s written again", self.path)
        self._last_error = None
        return True
