"""Planned outages: windows in which an outage is the utility's own work (docs/commands.md).

A signed ``planned_outage`` command (OPERATOR or ENGINEER) names an area (``{"group": area id}``)
or meters, and a window ``start``..``end`` (UTC seconds). An outage alarm whose loss starts
inside a window covering its area says ``planned: true``, so the CRM does not send a crew to a
job the utility scheduled. The same action with ``params = {"cancel": "<command id hex>"}``
removes a window.

Why not the existing ``cancel`` action: it belongs to the load-control engine (it drops group
limits and pending trips, its params are the engine's ``kind``) and needs the CONTROL right, so
an ENGINEER could not withdraw a window he planned himself.

The windows outlive a restart: ``data_dir/planned_outages.json``, written to a temporary name,
fsynced and renamed (a power cut while writing leaves the old file or the new one, never half
of one). Windows that ended are dropped at the next write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from gateway.control.errors import ControlError
from gateway.store.files import write_atomically

log = logging.getLogger(__name__)

ACTION: Final = "planned_outage"
#: The longest window: a week covers any maintenance job; a longer one is far more likely a
#: typo (milliseconds for seconds) and would mark every real fault in it as planned.
MAX_WINDOW_S: Final = 7 * 86_400
#: How far ahead a window may start: a year, for the same reason.
MAX_LEAD_S: Final = 366 * 86_400
MAX_NOTE_CHARS: Final = 200
FILE_NAME: Final = "planned_outages.json"


class PlannedOutageError(ControlError):
    """The planned-outage file cannot be written; the message names it."""


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    """One planned outage: the command that made it (``cmd``, hex), the area it names (None
    when it names meters), its meters, ``start``/``end`` (UTC seconds, end excluded), ``note``."""

    cmd: str
    area: str | None
    meters: tuple[str, ...]
    start: int
    end: int
    note: str = ""

    def covers(self, area: str, meters: Sequence[str], t_ms: int) -> bool:
        """Whether a loss of ``area`` (with ``meters``) starting at ``t_ms`` is this window's."""
        if not self.start * 1000 <= t_ms < self.end * 1000:
            return False
        return self.area == area or (bool(meters) and set(meters) <= set(self.meters))


def check_params(params: Mapping[str, object], now: float,
                 windows: Mapping[str, PlannedWindow]) -> str | None:
    """None when ``params`` are a valid window (or cancel one of ``windows``), else a sentence
    saying what is wrong. Runs with the verifier's interlocks, before anything is accepted."""
    if "cancel" in params:
        if set(params) != {"cancel"}:
            return "params.cancel stands alone: no start, end or note with it"
        cmd = params["cancel"]
        if not isinstance(cmd, str) or cmd.lower() not in windows:
            return f"params.cancel {cmd!r} names no planned outage of this gateway"
        return None
    unknown = sorted(set(params) - {"start", "end", "note"})
    if unknown:
        return f"unknown params {unknown}; allowed: end, note, start (or cancel alone)"
    times: dict[str, int] = {}
    for name in ("start", "end"):
        value = params.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"params.{name} must be UTC seconds (a non-negative integer), got {value!r}"
        times[name] = value
    start, end = times["start"], times["end"]
    if start >= end:
        return f"params.start ({start}) must be before params.end ({end})"
    if end - start > MAX_WINDOW_S:
        return (f"window of {end - start} s is longer than {MAX_WINDOW_S} s (7 days); split it, "
                "or check the times are seconds, not milliseconds")
    if end <= now:
        return f"window ended {now - end:.0f} s ago (end {end})"
    if start > now + MAX_LEAD_S:
        return f"start {start} is more than a year ahead; check the times are seconds"
    note = params.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        return f"params.note must be text of at most {MAX_NOTE_CHARS} characters"
    return None


class PlannedOutages:
    """The planned windows in force, persisted in ``path`` (None: in memory only, for tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.windows: dict[str, PlannedWindow] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            windows = [PlannedWindow(cmd=w["cmd"], area=w["area"], meters=tuple(w["meters"]),
                                     start=int(w["start"]), end=int(w["end"]),
                                     note=str(w.get("note", "")))
                       for w in data["windows"]]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Losing the windows only means outages in them are reported as unplanned.
            log.error("planned outages %s unreadable (%s); starting without any", path, exc)
            return
        self.windows = {w.cmd: w for w in windows}

    def covers(self, area: str, meters: Sequence[str], t_ms: int) -> bool:
        """Whether a loss of ``area`` (its ``meters``) that starts at ``t_ms`` (UTC ms) lies in a
        planned window naming that area or all of its meters."""
        return any(w.covers(area, meters, t_ms) for w in self.windows.values())

    def apply(self, cmd: bytes, area: str | None, meters: Sequence[str],
              params: Mapping[str, object], now: float) -> str:
        """Carry out an accepted ``planned_outage`` (its params already checked); returns the
        outcome sentence. Raises :class:`PlannedOutageError` when the file cannot be written
        (the window is then not in force either)."""
        before = dict(self.windows)
        if "cancel" in params:
            cancelled = self.windows.pop(str(params["cancel"]).lower(), None)
            outcome = (f"planned outage {cancelled.cmd} cancelled" if cancelled is not None
                       else f"planned outage {params['cancel']} was not in force")
        else:
            start, end = params["start"], params["end"]
            if not isinstance(start, int) or not isinstance(end, int):  # check_params said so
                raise TypeError("planned_outage params were not checked before apply")
            window = PlannedWindow(cmd=cmd.hex(), area=area, meters=tuple(meters), start=start,
                                   end=end, note=str(params.get("note", "")))
            self.windows[window.cmd] = window
            outcome = (f"planned outage of {area or ', '.join(meters)} from {window.start} to "
                       f"{window.end} (UTC s)")
        self.windows = {k: w for k, w in self.windows.items() if w.end > now}
        try:
            self._save()
        except OSError as exc:
            self.windows = before
            raise PlannedOutageError(f"planned outages {self.path}: cannot be written "
                                     f"({exc.strerror})") from exc
        return outcome

    def _save(self) -> None:
        if self.path is None:
            return
        text = json.dumps({"windows": [asdict(w) for w in self.windows.values()]})
        write_atomically(self.path, text.encode("utf-8"))
