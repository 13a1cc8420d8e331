"""``edge-gateway demo`` end to end: real subprocesses, simulated meters on real ptys, a real
broker, the real daemon, and (with mosquitto) the real consumer, ``edge-central`` on SQLite.

Each demo run takes as long as its ``--duration`` (the first DL/T 645 poll cycle alone needs
~18 s of wire time at 2400 baud), so the runs are started together by one module fixture and the
tests then look at their results; that keeps this file around 30 s instead of a minute.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from central.storage import open_database
from central.storage.activity import gateway_activity
from central.storage.queries import gateway_status
from hil_tests.demo.brokers import BROKER_ENV, find_mosquitto
from hil_tests.demo.consumer import CentralSnapshot
from hil_tests.demo.run import GATEWAY_ID, demo_layout
from hil_tests.demo.view import DemoState, MeterInfo, render_rich

ROOT = Path(__file__).resolve().parent.parent
METERS = [m.id for bus in demo_layout() for m in bus.meters]


def demo_command() -> list[str]:
    script = Path(sys.executable).with_name("edge-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.app.cli"]


@dataclass
class DemoRun:
    proc: subprocess.Popen[str]
    data_dir: Path
    stdout: str = ""
    stderr: str = ""
    terminal: Terminal | None = None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def daemon_log(self) -> str:
        return (self.data_dir / "daemon.log").read_text(errors="replace")

    def final_summary(self) -> str:
        """The last plain summary block the demo printed."""
        blocks = re.split(r"^(?=\[demo )", self.stdout, flags=re.MULTILINE)
        assert len(blocks) > 1, f"no summary printed:\n{self.stdout}\n{self.stderr}"
        return blocks[-1]


class Terminal:
    """A pseudo-terminal standing in for the user's terminal (200 x 60), read on a thread."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)  # the child holds it now: EOF (EIO) arrives when the child exits
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def text(self) -> str:
        self._reader.join(10)
        os.close(self.master)
        raw = b"".join(self._chunks).decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)  # drop cursor and colour escapes


def start_demo(data_dir: Path, *args: str, env: dict[str, str] | None = None,
               tty: bool = False) -> DemoRun:
    full_env = dict(os.environ)
    full_env.pop(BROKER_ENV, None)  # the default run must take the default path
    full_env.update(env or {})
    terminal = Terminal() if tty else None
    if terminal is not None:
        full_env.update(TERM="xterm-256color", COLUMNS="200", LINES="60")
    proc = subprocess.Popen([*demo_command(), "demo", "--data-dir", str(data_dir), *args],
                            cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=terminal.slave if terminal else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if terminal is not None:
        terminal.start()
    return DemoRun(proc, data_dir, terminal=terminal)


def finish(run: DemoRun, timeout: float) -> DemoRun:
    try:
        stdout, run.stderr = run.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        stdout, run.stderr = run.proc.communicate()
        raise AssertionError(f"demo did not finish in {timeout} s:\n{stdout}\n{run.stderr}"
                             ) from None
    run.stdout = run.terminal.text() if run.terminal is not None else stdout
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DemoRun]]:
    base = tmp_path_factory.mktemp("demo")
    started = {
        "default": start_demo(base / "default", "--duration", "25"),
        "embedded": start_demo(base / "embedded", "--duration", "25",
                               env={BROKER_ENV: "embedded"}),
        "interrupted": start_demo(base / "interrupted"),  # no --duration: runs until SIGINT
        "terminal": start_demo(base / "terminal", "--duration", "25",
                               env={BROKER_ENV: "embedded"}, tty=True),
    }
    try:
        # Ctrl-C once the interrupted demo's daemon runs (four demos start at once on two
        # cores: a fixed 6 s sometimes came before the daemon had even started), then about
        # four seconds of polling: Modbus meters read, the DL/T 645 cycle not finished.
        interrupted = started["interrupted"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and " running: " not in _log_text(interrupted):
            time.sleep(0.2)
        time.sleep(4)
        interrupted.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        yield {name: finish(run, 75) for name, run in started.items()}
    finally:
        for run in started.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.communicate()


def _log_text(run: DemoRun) -> str:
    try:
        return run.daemon_log()
    except FileNotFoundError:
        return ""


def meters_with_readings(summary: str) -> dict[str, str]:
    """meter id -> its import register, from a summary's meter lines."""
    found = {}
    for match in re.finditer(r"^  (m-\d{3}) +\S+ +import (\d+\.\d+) kWh +power -?\d+\.\d+ kW "
                             r"+Ua \d+\.\d V +quality A ", summary, flags=re.MULTILINE):
        found[match.group(1)] = match.group(2)
    return found


def assert_clean_daemon_log(run: DemoRun) -> None:
    log = run.daemon_log()
    assert "gateway stopped cleanly" in log
    bad = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not bad, "\n".join(bad)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (left-over daemons or brokers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def test_layout_is_twenty_meters_on_four_buses() -> None:
    layout = demo_layout()
    assert len(METERS) == len(set(METERS)) == 20
    dlt645 = [b for b in layout if b.protocol == "dlt645"]
    assert len(dlt645) == 2 and all(len(b.meters) == 8 for b in dlt645)
    assert len({b.meters[0].address for b in dlt645}) == 2  # different address ranges
    assert sorted(m.profile for b in layout if b.protocol == "modbus-tcp" for m in b.meters) == [
        "dtsu666", "dtsu666", "sdm630", "sdm630"]


def test_demo_reads_every_meter_and_stops_cleanly(runs: dict[str, DemoRun]) -> None:
    run = runs["default"]
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    readings = meters_with_readings(run.final_summary())
    assert sorted(readings) == sorted(METERS), run.final_summary()
    assert "edge-gateway demo: OK — 20 meters read" in run.stdout
    assert_clean_daemon_log(run)
    config = (run.data_dir / "gateway.toml").read_text()
    if find_mosquitto():
        assert "mosquitto" in run.stdout.splitlines()[0]
        assert 'protocol = "5"' in config
    # The daemon's store really holds what was published.
    assert (run.data_dir / "var" / "gateway.sqlite").exists()
    assert not processes_mentioning(str(run.data_dir))


needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None,
                                     reason="edge-central needs MQTT 5 shared subscriptions")


@needs_mosquitto
def test_demo_chain_ends_in_the_consumer_database(runs: dict[str, DemoRun]) -> None:
    """Meters -> gateway -> mosquitto -> edge-central -> SQLite: the database the demo's worker
    wrote holds reads of every simulated meter, the gap its scenario provoked (the worker stopped
    with a session that expires at once) was found and filled by a replay, none is left open,
    and every alarm event the view saw over MQTT was stored."""
    run = runs["default"]
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    db = open_database(f"sqlite:///{run.data_dir / 'central.sqlite'}", create=False)
    try:
        (status,) = gateway_status(db)
        activity = gateway_activity(db, GATEWAY_ID)
        executed = db.scalar("SELECT count(*) FROM replay_requests WHERE status = 'executed'")
    finally:
        db.close()
    assert status.gw == GATEWAY_ID and status.last_death_ms is not None
    assert sorted(activity.values_by_meter) == sorted(METERS)
    assert all(n > 0 for n in activity.values_by_meter.values())
    assert activity.gaps and all(g.filled_ms is not None for g in activity.gaps), activity.gaps
    assert status.open_gaps == 0 and status.gaps_filled == len(activity.gaps) and executed >= 1
    assert status.last_seq == status.hwm
    seen = set(re.findall(r"^  alarm \S+ (\w+) +(\S+) (m-\d{3}) ", run.stdout, re.MULTILINE))
    stored = {(a.state, a.kind, a.meter) for a in activity.alarms}
    assert seen <= stored, (seen, stored)
    # ... and the view said so, from the consumer's own status.
    summary = run.final_summary()
    assert re.search(r"central \(edge-central, SQLite\): worker .+ 20/20 meters, [\d.]+ values/s; "
                     rf"gaps 0 open, {len(activity.gaps)} filled", summary), summary
    assert "filled" in summary.split("central gap ", 1)[1].splitlines()[0]
    assert "edge-central stored " in run.stdout
    # The live view's panels drawn from this very database (the terminal run uses the embedded
    # broker, without the consumer: three consumers at once overloaded two cores).
    line = {**status.as_json(status.last_death_ms or 0), **activity.as_json()}
    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    meters = [MeterInfo(m.id, b.name, m.kind) for b in demo_layout() for m in b.meters]
    console.print(render_rich(DemoState(GATEWAY_ID, "mtr/v1", meters).snapshot(), 30.0, "", 200,
                              CentralSnapshot("running", line, 12.5, 0.4)))
    screen = console.export_text()
    assert "edge-central (SQLite)" in screen and "Gaps (replayed by the gateway)" in screen
    assert re.search(r"meters stored +20/20", screen), screen
    assert re.search(rf"gaps open / filled +0 / {len(activity.gaps)}", screen), screen
    assert re.search(r"values/s +12\.5", screen), screen
    gap = activity.gaps[0]
    assert re.search(rf"{gap.from_seq}-{gap.to_seq} +[\d.]+ s later", screen), screen
    assert "Traceback" not in (run.data_dir / "central-worker.log").read_text()
    assert not (run.data_dir / "central-status.log").read_text().strip()


def test_demo_registers_move_between_polls(runs: dict[str, DemoRun]) -> None:
    """Modbus meters are polled every 5 s and the load model runs 60x: by the end of the run each
    import register has grown since the first summary."""
    run = runs["default"]
    blocks = re.split(r"^(?=\[demo )", run.stdout, flags=re.MULTILINE)[1:]
    first, last = meters_with_readings(blocks[0]), meters_with_readings(blocks[-1])
    for meter in ("m-301", "m-302", "m-401", "m-402"):
        assert float(last[meter]) > float(first[meter]), (meter, first[meter], last[meter])


def test_demo_with_the_embedded_broker(runs: dict[str, DemoRun]) -> None:
    run = runs["embedded"]
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert "embedded MQTT 3.1.1 broker" in run.stdout.splitlines()[0]
    assert 'protocol = "3.1.1"' in (run.data_dir / "gateway.toml").read_text()
    assert not (run.data_dir / "mosquitto.conf").exists()
    assert sorted(meters_with_readings(run.final_summary())) == sorted(METERS)
    assert_clean_daemon_log(run)
    assert "MQTT 3.1.1" in run.daemon_log()
    # No consumer: it needs MQTT 5 shared subscriptions. The view says why.
    assert "central: edge-central is not running: it needs MQTT 5" in run.final_summary()
    assert not (run.data_dir / "central.toml").exists()


def test_ctrl_c_stops_everything_and_reports_unread_meters(runs: dict[str, DemoRun]) -> None:
    run = runs["interrupted"]
    # Four seconds of polling is not a DL/T 645 poll cycle: the demo stops cleanly but says what
    # it missed.
    assert run.returncode == 1, f"{run.stdout}\n{run.stderr}"
    assert_clean_daemon_log(run)
    match = re.search(r"edge-gateway demo FAILED: no reads from (\d+) of 20 meters \(([^)]*)\)",
                      run.stderr)
    assert match, run.stderr
    missing = match.group(2).split(", ")
    assert int(match.group(1)) == len(missing)
    assert "m-108" in missing  # last on its line: ~16 s into the first cycle
    assert "m-301" not in missing  # Modbus TCP meters are read within the first second
    assert "Traceback" not in run.stderr + run.stdout
    assert not processes_mentioning(str(run.data_dir))  # nor the consumer's worker and watcher


def test_live_view_on_a_terminal(runs: dict[str, DemoRun]) -> None:
    run = runs["terminal"]
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr}"
    assert "[demo " not in run.stdout  # no plain summaries on a terminal: the live view instead
    last_frame = run.stdout.split("edge-gateway demo  gateway gw-demo")[-1]
    assert "offline (bdseq 1)" in last_frame  # the clean death the daemon published at stop
    assert "20/20 meters read" in last_frame
    for column in ("tx/s", "success", "overruns", "outbox depth", "import kWh", "Ua V", "age"):
        assert column in last_frame
    for bus in ("rs485-1", "rs485-2", "tcp-1", "tcp-2"):
        assert re.search(rf"{bus} +\d+\.\d\d +100\.0%", last_frame), f"{bus}\n{last_frame}"
    for meter in METERS:
        assert re.search(rf"{meter} +\S+ +.+? +\d+\.\d\d +-?\d+\.\d{{3}} +\d+\.\d +A ",
                         last_frame), meter
    assert "edge-gateway demo: OK — 20 meters read" in run.stdout
    assert_clean_daemon_log(run)
    assert "edge-central is not running: it needs MQTT 5" in last_frame


def test_unknown_broker_choice_is_refused(tmp_path: Path) -> None:
    run = finish(start_demo(tmp_path, "--duration", "5", env={BROKER_ENV: "rabbit"}), 30)
    assert run.returncode == 1
    assert f"{BROKER_ENV}='rabbit': expected auto, mosquitto or embedded" in run.stderr


def test_bad_duration_is_refused(tmp_path: Path) -> None:
    run = finish(start_demo(tmp_path, "--duration", "0"), 30)
    assert run.returncode == 2
    assert "--duration must be a positive number of seconds" in run.stderr


def test_view_folds_real_payloads_into_what_it_shows() -> None:
    """The view's decoding and both renderings, fed with payloads built by the project's own
    encoder (what the daemon publishes), including a null value and an undecodable message."""
    from decimal import Decimal

    from rich.console import Console

    from hil_tests.demo.view import DemoState, MeterInfo, render_plain, render_rich
    from protocols.payload import (
        AlarmEvent,
        Envelope,
        ReadRecord,
        build_alarm,
        build_birth,
        build_health,
        build_reads,
    )

    now = int(time.time() * 1000)
    env = Envelope("gw-demo", 7, 1, now)
    state = DemoState("gw-demo", "mtr/v1", [MeterInfo("m-1", "rs485-1", "DL/T 645-2007 3φ"),
                                            MeterInfo("m-2", "tcp-1", "Modbus SDM630")])
    state.on_message("mtr/v1/gw-demo/state", build_birth(env, bdseq=3, version="0.1.0",
                                                         config_sha256="ab" * 32, meters=["m-1"]))
    state.on_message("mtr/v1/gw-demo/reads/m-1", build_reads(env, "m-1", [
        ReadRecord("energy.active.import.total", Decimal("12345.67"), "kWh", now - 4000),
        ReadRecord("power.active.total", 2.5, "kW", now - 4000),
        ReadRecord("voltage.a", None, "V", now - 4000, quality="N", reasons=(74,)),
    ]))
    state.on_message("mtr/v1/gw-demo/health", build_health(env, {
        "outbox_depth": 3, "buses": {"rs485-1": {"transactions_per_s": 4.04, "success_ratio": 0.5,
                                                 "transactions": 80, "timeouts": 2,
                                                 "overruns": 1, "comm_lost": ["m-9"]}}}))
    state.on_message("mtr/v1/gw-demo/alarms", build_alarm(env, AlarmEvent(
        "comm_loss", "comm_loss/m-2", "raised", "major", meter="m-2")))
    state.on_message("mtr/v1/gw-demo/reads/m-2", b"\xff not cbor")
    state.on_message("mtr/v1/other-gw/reads/m-2", b"ignored: another gateway")

    snap = state.snapshot()
    m1, m2 = snap.meters
    assert (m1.energy_kwh, m1.power_kw, m1.voltage_a) == (Decimal("12345.67"), 2.5, None)
    assert m1.quality_label() == "N/A" and m1.messages == 1
    assert snap.missing() == ["m-2"] and snap.undecodable == 1 and snap.messages == 4
    assert (snap.online, snap.bdseq, snap.alarms_total) == (True, 3, 1)

    plain = render_plain(snap, 12.0)
    assert "gateway gw-demo online; 1/2 meters read" in plain
    assert "outbox 3" in plain
    assert re.search(r"m-1 +rs485-1 +import 12345\.67 kWh +power 2\.500 kW +Ua - +quality N/A "  # null: -
                     r"+age [45] s", plain), plain
    assert "m-2    tcp-1    no read yet" in plain
    assert re.search(r"bus rs485-1 +4\.04 tx/s +ok +50\.0% +transactions 80 +timeouts 2 +"
                     r"overruns 1 +comm lost: m-9", plain), plain
    assert "raised  comm_loss m-2 (major)" in plain

    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_rich(snap, 12.0, "footer text", 200))
    screen = console.export_text()
    assert "online (bdseq 3)" in screen and "1/2 meters read" in screen
    assert re.search(r"m-1 +rs485-1 +DL/T 645-2007 3φ +12345\.67 +2\.500 +- +N/A", screen), screen
    assert re.search(r"rs485-1 +4\.04 +50\.0% +80 +2 +1 +m-9", screen), screen
    assert "comm_loss" in screen and "footer text" in screen
