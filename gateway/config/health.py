"""`[health]`: the health figures outside MQTT — a Prometheus textfile for node-exporter.

The health message on `P/G/health` needs the broker; a site's monitoring usually already runs
node-exporter on the box, whose textfile collector picks up `*.prom` files from a directory.
Writing that file costs the gateway no listening socket (the unit keeps `IPAddressDeny=` and
needs no new port opened) and no dependency; off by default.
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.fields import setting
from gateway.config.kinds import FilePath

#: The file written in `textfile_dir`: node-exporter reads every `*.prom` file there.
TEXTFILE_NAME = "edge_gateway.prom"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSection:
    """[health]: local health export (docs/field_tools.md)."""

    textfile_dir: Path | None = setting(
        FilePath("dir"),
        default=None,
        doc="Directory of node-exporter's textfile collector (--collector.textfile.directory, "
        "e.g. /var/lib/prometheus/node-exporter). Every [gateway] health_interval_s the daemon "
        "replaces edge_gateway.prom there (written aside, then renamed: the collector never "
        "reads half a file) with the health message's figures in the Prometheus text format, "
        "whether or not the broker is reachable. Under the systemd unit the directory must be "
        "writable (ReadWritePaths=). Unset: no file (the default).",
    )
