"""What the daemon benchmarks share: simulators and the daemon as real processes, /proc sampling,
a health listener, and one way to print a result table.

Why processes and /proc: the figures these benchmarks defend (RSS, CPU share of one core, CPU per
poll) are figures *of the daemon process*. Simulators run in their own processes
(``python -m hil_tests.sim``) so their CPU never lands in the daemon's account, and the daemon is
measured from outside through ``/proc/PID/stat`` (utime + stime of all its threads) and
``/proc/PID/status`` (VmRSS) — the same numbers ``top`` and systemd see.

Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from protocols.payload import PayloadError, decode_message  # noqa: E402
from tests.broker import MosquittoBroker  # noqa: E402

GATEWAY_ID = "gw-bench"
TOPIC_PREFIX = "mtr/v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


class MeasurementError(RuntimeError):
    """The benchmark could not measure what it set out to (a component did not start, no data)."""


def fail(message: str) -> int:
    """Report a benchmark that could not measure; the exit code says so to scripts."""
    print(f"cannot measure: {message}", file=sys.stderr)
    return 2


# -- the machine -------------------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


_machine_at_start: str | None = None


def note_start() -> str:
    """Remember the machine line as it is now (load average before the benchmark adds its own)."""
    global _machine_at_start
    _machine_at_start = machine_line()
    return _machine_at_start


def machine_line() -> str:
    """One line naming the machine and the moment: nproc, CPU model, load, date (UTC)."""
    if _machine_at_start is not None:
        return _machine_at_start
    load = os.getloadavg()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: nproc={os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; {now}")


def command_line() -> str:
    """The command that produced these figures, as a reader would type it."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return " ".join([".venv/bin/python", str(script), *sys.argv[1:]])


# -- /proc -------------------------------------------------------------------------------------------

def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a whole process (every thread), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise MeasurementError(f"process {pid} is gone ({exc.strerror})") from exc
    fields = text[text.rindex(")") + 2:].split()  # comm may contain spaces and parentheses
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a whole process (every thread), in seconds."""
    user, system = proc_cpu_split(pid)
    return user + system


def proc_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError as exc:
        raise MeasurementError(f"process {pid} is gone ({exc.strerror})") from exc
    raise MeasurementError(f"/proc/{pid}/status has no VmRSS line")


_IMPORT_PROBE = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0
print('python', rss())
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name, rss())
"""


def import_rss_kib(modules: Sequence[str]) -> list[tuple[str, int]]:
    """RSS of a fresh interpreter after importing ``modules`` one after another (cumulative):
    the part of the daemon's RSS that is there before it has done anything."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *modules], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise MeasurementError(f"importing {' '.join(modules)} failed: {out.stderr.strip()[-400:]}")
    return [(name, int(kib)) for name, kib in (line.split() for line in out.stdout.splitlines())]


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the sampler started
    rss_kib: int
    cpu_s: float


@dataclass
class Sampler:
    """Samples one process's RSS and CPU every ``every_s`` seconds on a thread."""

    pid: int
    every_s: float
    samples: list[Sample] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: str | None = None

    def start(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> Sample:
        s = Sample(time.monotonic() - self.t0, proc_rss_kib(self.pid), proc_cpu_s(self.pid))
        self.samples.append(s)
        return s

    def _run(self) -> None:
        k = 1
        while not self._stop.wait(max(0.0, self.t0 + k * self.every_s - time.monotonic())):
            try:
                self.sample()
            except MeasurementError as exc:
                self.error = str(exc)
                return
            k += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        raise MeasurementError("need at least two samples for a slope")
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    return 60.0 * sxy / sxx if sxx else 0.0


# -- simulators --------------------------------------------------------------------------------------

@dataclass
class Simulator:
    """One ``python -m hil_tests.sim`` process and the buses it announced."""

    process: subprocess.Popen[str]
    dlt645_device: str | None = None
    dlt645_addresses: list[str] = field(default_factory=list)
    modbus_port: int | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_simulator(args: Sequence[str], log_path: Path, timeout: float = 30.0) -> Simulator:
    """Start a simulator and wait for its announcement lines (one per simulated bus)."""
    expected = int("--dlt645-meters" in args) + int("--modbus-tcp-meters" in args)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "hil_tests.sim", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    sim = Simulator(proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            sim.stop()
            raise MeasurementError(f"simulator {' '.join(args)} did not start; see {log_path}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        words = proc.stdout.readline().split()
        if words[:1] == ["dlt645"]:
            first, last = words[3].split("..")
            sim.dlt645_device = words[1]
            sim.dlt645_addresses = [f"{n:012d}" for n in range(int(first), int(last) + 1)]
            seen += 1
        elif words[:1] == ["modbus-tcp"]:
            sim.modbus_port = int(words[1].rsplit(":", 1)[1])
            seen += 1
    return sim


# -- the daemon --------------------------------------------------------------------------------------

def config_text(broker_port: int, buses: Sequence[dict[str, Any]], meters: Sequence[dict[str, Any]],
                *, health_interval_s: float = 30, log_level: str = "WARNING",
                data_dir: str = "var") -> str:
    lines = ["[gateway]", f'id = "{GATEWAY_ID}"', f'data_dir = "{data_dir}"',
             f"health_interval_s = {health_interval_s}", f'log_level = "{log_level}"', "",
             "[mqtt]", f'host = "{HOST}"', f"port = {broker_port}", f'topic_prefix = "{TOPIC_PREFIX}"',
             ""]
    for table, items in (("buses", buses), ("meters", meters)):
        for item in items:
            lines.append(f"[[{table}]]")
            lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
            lines.append("")
    return "\n".join(lines)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return f'"{value}"'


@dataclass
class Daemon:
    """``python -m gateway.app.cli run --config FILE`` as a subprocess, its output in ``daemon.log``."""

    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    def start(self, config: str, *, python_args: Sequence[str] = ()) -> int:
        """Write ``config`` beside the daemon's log and start it; ``python_args`` go before
        ``-m gateway.app.cli`` (``-m cProfile -o FILE`` to profile it)."""
        path = self.workdir / "gateway.toml"
        path.write_text(config)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, *python_args, "-m", "gateway.app.cli", "run", "--config", str(path)],
            cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        return self.process.pid

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise MeasurementError(f"the daemon exited (code {code}); its log:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# -- the broker side ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class HealthReport:
    received: float  # time.monotonic() when it arrived
    daemon_cpu_s: float | None  # /proc CPU of the daemon read when it arrived
    stats: dict[str, Any]


class GatewayListener:
    """Subscribes to the gateway's health and reads topics; keeps every health report (with the
    daemon's CPU read from /proc the moment it arrived) and counts reads messages."""

    def __init__(self, broker_port: int, daemon_pid: int | None = None) -> None:
        self.pid = daemon_pid
        self.health: list[HealthReport] = []
        self.reads_messages = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._port = broker_port
        base = f"{TOPIC_PREFIX}/{GATEWAY_ID}"
        self._health_topic = f"{base}/health"
        self._reads_prefix = f"{base}/reads/"
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-listener-{os.getpid()}",
                                   protocol=paho.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(self._health_topic, 0), (f"{self._reads_prefix}+", 0)])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.startswith(self._reads_prefix):
            with self._lock:
                self.reads_messages += 1
            return
        received = time.monotonic()
        cpu = None
        if self.pid is not None:
            with contextlib.suppress(MeasurementError):
                cpu = proc_cpu_s(self.pid)
        try:
            message = decode_message(bytes(msg.payload))
        except PayloadError:
            return
        stats = message.get("stats")
        if isinstance(stats, dict):
            with self._lock:
                self.health.append(HealthReport(received, cpu, stats))

    def start(self, timeout: float = 10.0) -> GatewayListener:
        self._client.connect(HOST, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise MeasurementError("the benchmark's listener got no SUBACK from the broker")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def latest(self) -> HealthReport | None:
        with self._lock:
            return self.health[-1] if self.health else None

    def wait_health(self, predicate: Any, timeout: float, daemon: Daemon | None = None) -> HealthReport:
        """Wait for a health report whose stats satisfy ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon is not None:
                daemon.check_alive()
            with self._lock:
                for report in reversed(self.health):
                    if predicate(report.stats):
                        return report
            time.sleep(0.05)
        raise MeasurementError(f"no matching health message within {timeout:.0f} s")

    def wait_next_health(self, after: float, timeout: float, daemon: Daemon | None = None) -> HealthReport:
        """The first health report received after monotonic time ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon is not None:
                daemon.check_alive()
            with self._lock:
                for report in self.health:
                    if report.received > after:
                        return report
            time.sleep(0.05)
        raise MeasurementError(f"no health message within {timeout:.0f} s")


@contextlib.contextmanager
def private_broker(workdir: Path) -> Iterator[MosquittoBroker]:
    """A private mosquitto on a free loopback port (tests.broker), killed on exit."""
    broker = MosquittoBroker(workdir / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


# -- output ------------------------------------------------------------------------------------------

def print_table(title: str, rows: Sequence[tuple[str, str, str]], notes: Sequence[str] = ()) -> None:
    """One table: figure | value | goal (and verdict)."""
    headers = ("figure", "value", "goal")
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(3)]
    rule = "-+-".join("-" * w for w in widths)
    print()
    print(title)
    print(machine_line())
    print(f"command: {command_line()}")
    print(rule)
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(rule)
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(rule)
    for note in notes:
        print(note)


def verdict(ok: bool, goal: str) -> str:
    return f"{goal} — {'met' if ok else 'MISSED'}"
