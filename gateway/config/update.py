"""`[update]`: signed update bundles dropped into a watched directory (docs/bundles.md).

Off unless `inbox_dir` is set: a gateway takes new configuration and profiles only from
bundles signed by an ENGINEER key of its `[[operators]]`, and only if someone chose a place
for them.
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.fields import setting
from gateway.config.kinds import FilePath, Number


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSection:
    """[update]: where bundles arrive and how long a new configuration has to prove itself."""

    inbox_dir: Path | None = setting(
        FilePath("dir"),
        default=None,
        doc="Directory watched for signed bundles (*.bundle; copy under another name, then "
        "rename, so a half-copied file is never read). Each one is verified, applied or "
        "refused, journaled, and moved into processed/ below it. Unset: no bundles.",
    )
    scan_interval_s: float = setting(
        Number(minimum=0.1, maximum=3600, unit="seconds"),
        default=5.0,
        doc="How often inbox_dir is looked at.",
    )
    health_timeout_s: float = setting(
        Number(minimum=1, maximum=3600, unit="seconds"),
        default=120.0,
        doc="How long a configuration switched to by a bundle has to become healthy (every bus "
        "open with a successful poll, no failed task) before the previous configuration and "
        "profiles are put back by themselves.",
    )
