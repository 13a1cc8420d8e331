"""The typed gateway configuration: one frozen dataclass per TOML table.

Each field is one TOML key, declared with `setting(kind, doc=..., default=...)`; those
declarations are the only statement of what the file may contain (see fields.py). The larger
sections have their own modules: mqtt.py, reconcile.py, vee.py, load_control.py. Rules
that relate keys of one table live in that table's `table_problems()`; rules that relate
sections (a meter's address against its bus's protocol, areas against groups) live in
crosschecks.py.
"""

# setting() returns dataclasses.field(...) with the key's declaration in its metadata; ruff
# cannot see through the wrapper and would flag every field as a call in a default.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, get_args

from gateway.config.addresses import MeterAddress
from gateway.config.clock import ClockSection
from gateway.config.fields import Problems, setting
from gateway.config.health import HealthSection
from gateway.config.ids import HOST, ID_PATTERN, IDENT
from gateway.config.kinds import (
    Bool,
    Choice,
    FilePath,
    Int,
    ListOf,
    Number,
    Ref,
    Str,
    Table,
    TableList,
    Variant,
    Variants,
)
from gateway.config.load_control import EngineSettings
from gateway.config.mqtt import MqttSection
from gateway.config.operator_keys import Ed25519PublicKeyKind
from gateway.config.power import OutageSection, PowerSection
from gateway.config.profiles import ProfileKind, ProfileRef
from gateway.config.reconcile import ReconcileSection
from gateway.config.update import UpdateSection
from gateway.config.vee import VeeSection

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
EventLoop = Literal["auto", "uvloop", "asyncio"]
BusProtocol = Literal["dlt645", "modbus-rtu", "modbus-tcp"]
SerialProtocol = Literal["dlt645", "modbus-rtu"]
Parity = Literal["N", "E", "O"]
Sign = Literal["+", "-"]
Direction = Literal["import", "export"]
Role = Literal["VIEWER", "OPERATOR", "ENGINEER", "SECADM"]
MeterPhase = Literal["a", "b", "c", "abc"]

BAUDRATES: Final = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)



# --- [gateway] ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySection:
    """[gateway]: who this gateway is and where it keeps its data."""

    id: str = setting(
        IDENT,
        doc="Gateway id: the MQTT client id and the topic segment G in P/G/... .",
    )
    data_dir: Path = setting(
        FilePath("dir"),
        doc="Directory for the SQLite store (reads, outbox, alarms, audit); created if missing. "
        "Relative paths start at the config file's directory.",
    )
    health_interval_s: float = setting(
        Number(minimum=1, maximum=3600, unit="seconds"),
        default=30.0,
        doc="Seconds between health messages on P/G/health.",
    )
    clock_step_threshold_s: float = setting(
        Number(minimum=1, maximum=86400, unit="seconds"),
        default=300.0,
        doc="A jump of the wall clock against the monotonic clock larger than this is a clock "
        "step (NTP/RTC correction, an operator's date -s): logged once, raised as a clock.step "
        "alarm, theft windows spanning it are discarded and VEE does not estimate the intervals "
        "it jumped over (docs/reliability.md). Smaller differences are drift and ignored.",
    )
    log_level: LogLevel = setting(
        Choice(get_args(LogLevel)),
        default="INFO",
        doc="Lowest log level written to the journal.",
    )
    event_loop: EventLoop = setting(
        Choice(get_args(EventLoop)),
        default="auto",
        doc="The asyncio event loop: auto = uvloop when it is installed (a dependency on x86_64 "
        "and aarch64 Linux), else asyncio's own; uvloop = uvloop or refuse to start; asyncio = "
        "the standard loop. uvloop cuts the daemon's CPU per Modbus TCP poll by about a fifth "
        "(docs/performance.md). Read at start only: a SIGHUP reload keeps the running loop.",
    )


# --- [store] -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSection:
    """[store]: how long the SQLite store keeps delivered data and when disk space alarms."""

    retention_days: int = setting(
        Int(minimum=0, maximum=3650, unit="days"),
        default=7,
        doc="Days to keep rows the broker has acknowledged, counted from their commit and from "
        "their acknowledgement (0: delete once acknowledged); a consumer may ask for them again "
        "meanwhile (replay). Unacknowledged rows are never deleted by age.",
    )
    disk_alarm_free_mb: int = setting(
        Int(minimum=0, maximum=10**7, unit="MiB"),
        default=200,
        doc="Raise the disk alarm when free space on data_dir falls below this many MiB.",
    )
    disk_alarm_free_pct: float = setting(
        Number(minimum=0, maximum=99, unit="percent"),
        default=5.0,
        doc="Raise the disk alarm when free space falls below this share of the filesystem.",
    )
    commit_window_ms: int = setting(
        Int(minimum=0, maximum=1000, unit="ms"),
        default=50,
        doc="Gather poll results this long before one SQLite transaction (0: commit each batch "
        "at once). Many meters polled together then cost one fsync, not one each; a clean stop "
        "still commits and publishes everything gathered.",
    )
    spill_dir: Path | None = setting(
        FilePath("dir"),
        default=None,
        doc="Where messages held in memory (the store failing: disk full, filesystem read-only) "
        "are written at a stop, and committed from at the next start. Put it on another "
        "filesystem than data_dir, e.g. /run/edge-gateway (tmpfs: survives a service restart, "
        "not a power cut) or another partition. Unset: a stop with messages held logs an ERROR "
        "with their count and exits 1.",
    )
    ballast_mb: int = setting(
        Int(minimum=0, maximum=1024, unit="MiB"),
        default=4,
        doc="Reserve file laid in data_dir while there is room and deleted when the disk "
        "fills, so the store can still commit what is held and the disk alarm (0: none).",
    )
    disk_check_interval_s: float = setting(
        Number(minimum=1, maximum=3600, unit="seconds"),
        default=5.0,
        doc="How often free space is checked and the store is retried while it fails: often "
        "enough for the disk alarm to fire before a small partition fills.",
    )


# --- [[buses]] ---------------------------------------------------------------------------
# The link keys differ by protocol: serial buses have a device and line settings, Modbus TCP
# has a host and port. One table per shape keeps `port` a device path on one and a TCP port
# number on the other, each with its own type.


def _bus_name() -> Any:
    return setting(IDENT, doc="Bus name, unique; meters refer to it.")


def _timeout_ms() -> Any:
    return setting(
        Int(minimum=10, maximum=60000, unit="milliseconds"),
        default=500,
        doc="How long to wait for a reply before the attempt counts as failed.",
    )


def _turnaround_ms() -> Any:
    return setting(
        Int(minimum=0, maximum=10000, unit="milliseconds"),
        default=20,
        doc="Quiet time between a reply and the next request (RS-485 transceivers and slow "
        "meters need it to switch direction).",
    )


def _retries() -> Any:
    return setting(
        Int(minimum=0, maximum=10),
        default=1,
        doc="Extra attempts after a failed request before the read counts as failed.",
    )


def _comm_loss_after() -> Any:
    return setting(
        Int(minimum=1, maximum=1000),
        default=3,
        doc="Consecutive failed polls before a meter is declared lost (alarm raised).",
    )


def _queue_limit() -> Any:
    return setting(
        Int(minimum=1, maximum=100000),
        default=256,
        doc="Most transactions waiting for the bus; beyond it routine polls are skipped "
        "(and counted) so commands are never stuck behind a backlog.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialBusConfig:
    """[[buses]] with protocol "dlt645" or "modbus-rtu": an RS-485 line, one transaction at a time.

    baudrate and parity default by protocol: 2400 8E1 for DL/T 645 (the standard's default),
    9600 8N1 for Modbus RTU.
    """

    name: str = _bus_name()
    protocol: SerialProtocol = setting(
        Choice(get_args(SerialProtocol)), doc="Bus protocol: dlt645 | modbus-rtu | modbus-tcp."
    )
    port: str = setting(
        Str(),
        doc="Serial device (/dev/ttyUSB0) or pyserial URL (rfc2217://..., socket://...). "
        "Not checked for existence: USB adapters may appear after start.",
    )
    baudrate: int = setting(
        Int(choices=BAUDRATES, unit="bits per second"),
        doc="Line speed in bits per second.",
    )
    parity: Parity = setting(Choice(get_args(Parity)), doc='Parity: "N" none, "E" even, "O" odd.')
    stopbits: float = setting(
        Number(choices=(1, 1.5, 2)), default=1.0, doc="Stop bits: 1, 1.5 or 2."
    )
    bytesize: int = setting(Int(choices=(5, 6, 7, 8)), default=8, doc="Data bits per character.")
    timeout_ms: int = _timeout_ms()
    turnaround_ms: int = _turnaround_ms()
    retries: int = _retries()
    comm_loss_after: int = _comm_loss_after()
    queue_limit: int = _queue_limit()


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpBusConfig:
    """[[buses]] with protocol "modbus-tcp": a Modbus TCP device or serial gateway."""

    name: str = _bus_name()
    protocol: Literal["modbus-tcp"] = setting(
        Choice(("modbus-tcp",)), doc="Bus protocol: dlt645 | modbus-rtu | modbus-tcp."
    )
    host: str = setting(HOST, doc="Host name or IP address of the Modbus TCP device.")
    port: int = setting(
        Int(minimum=1, maximum=65535), default=502, doc="TCP port of the Modbus TCP device."
    )
    max_concurrency: int = setting(
        Int(minimum=1, maximum=64),
        default=8,
        doc="Most requests outstanding at once (many TCP-to-RS-485 gateways serialise anyway; "
        "set 1 for those).",
    )
    timeout_ms: int = _timeout_ms()
    turnaround_ms: int = _turnaround_ms()
    retries: int = _retries()
    comm_loss_after: int = _comm_loss_after()
    queue_limit: int = _queue_limit()


BusConfig = SerialBusConfig | TcpBusConfig

BUS_VARIANTS: Final = Variants(
    discriminator="protocol",
    options={
        "dlt645": Variant(
            SerialBusConfig, defaults={"baudrate": 2400, "parity": "E"}, schema_name="Dlt645Bus"
        ),
        "modbus-rtu": Variant(
            SerialBusConfig, defaults={"baudrate": 9600, "parity": "N"}, schema_name="ModbusRtuBus"
        ),
        "modbus-tcp": Variant(TcpBusConfig, schema_name="ModbusTcpBus"),
    },
)


# --- [[meters]] --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterConfig:
    """[[meters]]: one meter, the bus it hangs on and how it is read."""

    id: str = setting(IDENT, doc="Meter id, unique; the topic segment in P/G/reads/{meter}.")
    bus: str = setting(Ref("buses", key="name"), doc="Name of the [[buses]] entry it is on.")
    address: str | int = setting(
        MeterAddress(),
        doc='DL/T 645: the 12-digit address as a string ("000102030425"); '
        "Modbus: the unit id as an integer 1..247.",
    )
    profile: ProfileRef = setting(
        ProfileKind(),
        doc="Profile name (profiles/<name>.toml beside the config, then the shipped protocols/meter_profiles/) "
        "or a path to a profile file.",
    )
    poll_interval_s: float = setting(
        Number(minimum=0, maximum=86400, exclusive_minimum=True, unit="seconds"),
        default=60.0,
        doc="Seconds between polls.",
    )
    ct_ratio: Decimal = setting(
        Number(minimum=0, exclusive_minimum=True, exact=True),
        default=Decimal(1),
        doc="Current transformer ratio (e.g. 40 for 200/5 A); secondary readings are "
        "multiplied by ct_ratio * pt_ratio.",
    )
    pt_ratio: Decimal = setting(
        Number(minimum=0, exclusive_minimum=True, exact=True),
        default=Decimal(1),
        doc="Voltage transformer ratio (e.g. 100 for 10 kV/100 V).",
    )
    contract_kw: float | None = setting(
        Number(minimum=0, exclusive_minimum=True, unit="kW"),
        default=None,
        doc="Contracted demand in kW (optional); load control and alarms compare against it.",
    )
    protected: bool = setting(
        Bool(),
        default=False,
        doc="Never trip this meter's relay (life support, hospitals): trip commands targeting "
        "it are rejected.",
    )
    generating: bool = setting(
        Bool(),
        default=False,
        doc="The site generates (PV, wind): export energy is expected, not a theft indicator.",
    )
    meter_class: str = setting(
        Str(pattern=ID_PATTERN, hint="a class name of letters, digits, '.', '_' or '-'"),
        default="residential",
        doc="Customer class (residential, commercial, ...) used by VEE and theft rules.",
    )
    control_password_level: int = setting(
        Int(minimum=0, maximum=255),
        default=2,
        doc="DL/T 645 1CH control: password level PA of plaintext meters (02 in most utilities).",
    )
    control_password: str = setting(
        Str(pattern=r"^[0-9A-Fa-f]{6}$", hint="6 hex digits as written on the work order"),
        default="000000",
        doc="DL/T 645 1CH control: the meter's password (P2 P1 P0 as written, most significant "
        "first). ESAM meters do not use it: their ciphertext comes from the central system.",
    )
    operator_code: str = setting(
        Str(pattern=r"^[0-9A-Fa-f]{8}$", hint="8 hex digits"),
        default="00000000",
        doc="DL/T 645 operator code C0..C3 sent with writes and 1CH control frames.",
    )
    nominal_voltage_v: float | None = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="V"),
        default=None,
        doc="Nominal phase voltage Un as the gateway reports it (after pt_ratio), for the "
        "theft indicators; unset: [theft] nominal_voltage_v. Set it for 3x57.7 V meters.",
    )
    basic_current_a: float | None = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="A"),
        default=None,
        doc="Basic current Ib as the gateway reports it (after ct_ratio), for the theft "
        "indicators; unset: [theft] basic_current_a.",
    )
    customer: str | None = setting(
        Str(max_length=64),
        default=None,
        doc="Customer (account) id the CRM knows; outage alarms list it among the affected "
        "customers. Unset: the meter is listed, no customer.",
    )
    premise: str | None = setting(
        Str(max_length=128),
        default=None,
        doc="Premise (service point) id or address of the meter, for the CRM.",
    )
    phase: MeterPhase | None = setting(
        Choice(get_args(MeterPhase)),
        default=None,
        doc='The phase the meter is supplied from: "a", "b", "c", or "abc" for a '
        "three-phase meter.",
    )


# --- topology ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMember:
    """One term of a summation group: a meter's register, added or subtracted."""

    meter: str = setting(Ref("meters"), doc="Id of the [[meters]] entry.")
    sign: Sign = setting(
        Choice(get_args(Sign)), default="+", doc='"+" adds the register, "-" subtracts it.'
    )
    direction: Direction = setting(
        Choice(get_args(Direction)),
        default="import",
        doc='Which energy register: "import" (delivered to the customer) or "export".',
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupConfig:
    """[[groups]]: a summation group (总加组), a signed sum of meter registers."""

    id: str = setting(IDENT, doc="Group id, unique; the topic segment in P/G/groups/{group}.")
    members: tuple[GroupMember, ...] = setting(
        TableList(Table(GroupMember), label_key="meter", min_items=1),
        doc="Members as inline tables { meter, sign, direction }.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AreaConfig:
    """[[areas]]: a transformer area (台区), its master meter against a group of sub-meters."""

    id: str = setting(IDENT, doc="Area id, unique among areas and groups.")
    master: str = setting(Ref("meters"), doc="Id of the transformer-side master meter.")
    subs: str = setting(Ref("groups"), doc="Id of the group summing the customer sub-meters.")


# --- [theft] -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TheftSection:
    """[theft]: the theft and tamper indicators the daemon evaluates on every poll.

    Each indicator is a kernel of `edge_rules.theft` run over the last `window_samples`
    polls of each meter (docs/reconciliation.md); an alarm is raised while its condition holds
    at the latest poll and cleared on the first poll that shows it gone. Percentages are of
    the meter's Un (`nominal_voltage_v`) or Ib (`basic_current_a`). The defaults are the
    thresholds of issue 5 (DL/T 566 / Q/GDW 1354 practice).
    """

    enabled: bool = setting(
        Bool(),
        default=True,
        doc="Evaluate the indicators on polled values (alarms theft.* on P/G/alarms).",
    )
    nominal_voltage_v: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="V"),
        default=220.0,
        doc="Un of meters that do not set their own nominal_voltage_v.",
    )
    basic_current_a: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="A"),
        default=5.0,
        doc="Ib of meters that do not set their own basic_current_a.",
    )
    window_samples: int = setting(
        Int(minimum=2, maximum=256, unit="polls"),
        default=16,
        doc="Polls of each meter the indicators look back over (memory: 15 numbers each); "
        "with 60-s polls 16 covers 15 minutes. meter stopped can only see energy within it.",
    )
    evaluate_interval_s: float = setting(
        Number(minimum=0, maximum=3600, unit="seconds"),
        default=10.0,
        doc="Run the indicators at most this often, over every meter polled since (one call "
        "of the kernels costs about the same for 1 meter as for 30); alarms may come this "
        "much later than the poll that shows them. 0: after every committer batch.",
    )
    sustain_s: float = setting(
        Number(minimum=0, maximum=86400, unit="seconds"),
        default=60.0,
        doc="How long loss of voltage, phase break, loss of current, current imbalance and "
        "a reversed phase must hold (first to last qualifying poll) before the alarm.",
    )
    loss_of_voltage_pct: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=100, unit="percent of Un"),
        default=78.0,
        doc="Loss of voltage: a phase below this while its current flows; also the voltage "
        "above which a phase counts as live for phase break and loss of current.",
    )
    loss_of_voltage_current_pct: float = setting(
        Number(minimum=0, maximum=100, unit="percent of Ib"),
        default=0.5,
        doc="Loss of voltage: the current that must still flow (the meter's starting current).",
    )
    phase_break_pct: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=100, unit="percent of Un"),
        default=60.0,
        doc="Phase break: a phase below this with no current while another phase is live.",
    )
    loss_of_current_pct: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=100, unit="percent of Ib"),
        default=0.5,
        doc="Loss of current: a live phase below this current while another phase carries "
        "more than loss_of_current_other_pct (a shorted or opened CT).",
    )
    loss_of_current_other_pct: float = setting(
        Number(minimum=0, maximum=1000, unit="percent of Ib"),
        default=5.0,
        doc="Loss of current: the current another phase must carry meanwhile.",
    )
    imbalance_pct: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=100, unit="percent"),
        default=30.0,
        doc="Current imbalance: (max - min) / max of the phase currents above this.",
    )
    imbalance_min_load_pct: float = setting(
        Number(minimum=0, maximum=1000, unit="percent of Ib"),
        default=10.0,
        doc="Current imbalance is judged only while the largest phase carries more than this "
        "(light loads are naturally unbalanced).",
    )
    reverse_min_kwh: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="kWh"),
        default=0.02,
        doc="Reverse energy (meters not marked generating): export register advance within "
        "the window that raises the alarm.",
    )
    reverse_min_kw: float = setting(
        Number(minimum=0, maximum=10**6, unit="kW"),
        default=0.01,
        doc="Reverse energy: a phase's active power below minus this, held sustain_s, raises "
        "it too (a reversed CT on one phase).",
    )
    stopped_min_kwh: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="kWh"),
        default=0.1,
        doc="Meter stopped: the import register stood still while the active power says at "
        "least this much energy passed.",
    )
    fast_factor: float = setting(
        Number(minimum=1, maximum=10**6),
        default=10.0,
        doc="Meter running fast: the import register advanced more than this many times the "
        "energy the active power accounts for, over the window.",
    )
    fast_min_kwh: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=10**6, unit="kWh"),
        default=0.1,
        doc="Meter running fast: the smallest register advance within the window that can "
        "raise it (register steps of 0.01 kWh must not count as running fast).",
    )

    def table_problems(self) -> Problems:
        if self.phase_break_pct > self.loss_of_voltage_pct:
            yield (
                "phase_break_pct",
                f"must not exceed loss_of_voltage_pct ({self.loss_of_voltage_pct:g}): a broken "
                f"phase is one that lost its voltage, got {self.phase_break_pct:g}",
            )


# --- command authority -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorConfig:
    """[[operators]]: a key allowed to sign commands, and the roles it may claim."""

    kid: str = setting(IDENT, doc="Key id, unique; matches the COSE kid header (as UTF-8 bytes).")
    public_key: bytes = setting(
        Ed25519PublicKeyKind(),
        doc="Ed25519 public key: 64 hex digits, or a file with the raw 32 bytes, hex or PEM.",
    )
    roles: frozenset[Role] = setting(
        ListOf(Choice(get_args(Role)), min_items=1, unique=True, as_set=True),
        doc="Roles this key may claim: VIEWER, OPERATOR, ENGINEER, SECADM.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandsSection:
    """[commands]: limits the command verifier applies before anything reaches a relay."""

    clock_trusted: bool = setting(
        Bool(),
        default=False,
        doc="Trust the system clock without NTP sync (hardware RTC, test rigs); freshness "
        "(iat/exp) is only checked with trusted time.",
    )
    clock_max_error_ms: int = setting(
        Int(minimum=0, maximum=60000, unit="milliseconds"),
        default=500,
        doc="Without clock_trusted: the largest clock error the kernel may report (adjtimex "
        "maxerror) for the NTP-synchronised clock to count as trusted; 0 trusts only a kernel "
        "reporting no error at all.",
    )
    clock_sync_file: str = setting(
        Str(pattern="/.*", hint="an absolute path"),
        default="/run/systemd/timesync/synchronized",
        doc="Without clock_trusted, when the kernel's NTP state cannot be read (the systemd "
        "unit's ProtectClock=yes refuses adjtimex): the file the time-sync daemon touches on "
        "every synchronisation (systemd-timesyncd's by default).",
    )
    clock_sync_max_age_s: int = setting(
        Int(minimum=1, maximum=86400, unit="seconds"),
        default=4200,
        doc="How recently clock_sync_file must have been touched to count (two of "
        "timesyncd's longest poll intervals, 2048 s).",
    )
    max_age_s: int = setting(
        Int(minimum=1, maximum=86400, unit="seconds"),
        default=120,
        doc="Oldest command accepted, by its iat, when time is trusted.",
    )
    max_meters_per_command: int = setting(
        Int(minimum=1, maximum=100000),
        default=50,
        doc="Most meters one command may target; larger commands are rejected.",
    )
    two_person_threshold: int = setting(
        Int(minimum=1, maximum=100000),
        default=10,
        doc="A trip or limit affecting this many meters or more needs two operators' "
        "signatures (COSE_Sign).",
    )
    rate_limit_per_minute: int = setting(
        Int(minimum=1, maximum=10000),
        default=30,
        doc="Most commands one operator key may have accepted in any 60 s; more are rejected "
        "(rate_limited). Bounds the damage of a leaked key or a runaway script.",
    )
    unauthenticated_journal_per_minute: int = setting(
        Int(minimum=0, maximum=10000),
        default=60,
        doc="Most unauthenticated messages on the command topic (malformed, unknown key, bad "
        "signature) journaled per minute, each as one record of its SHA-256, size and reason; "
        "more are only counted (health: commands). Keeps whoever may publish on the topic from "
        "filling the disk; 0 journals none of them.",
    )
    replay_per_minute: int = setting(
        Int(minimum=0, maximum=600),
        default=6,
        doc="Most replay commands (a consumer asking for stored messages again) accepted in any "
        "60 s, from all keys together; more are rejected (rate_limited). Each one re-sends up "
        "to replay_max_messages on the uplink, which may be a metered cellular link; 0 accepts "
        "none.",
    )
    replay_max_messages: int = setting(
        Int(minimum=1, maximum=1_000_000, unit="messages"),
        default=10000,
        doc="Most messages one replay command may ask for (to_seq - from_seq + 1); a larger "
        "range is rejected (bad_params) and must be asked in parts. 10000 is a day of 100 "
        "meters polled every 15 minutes.",
    )
    gateway_key: Path | None = setting(
        FilePath("file"),
        default=None,
        doc="The gateway's own Ed25519 private key (PEM) for signing command results; when "
        "unset, one is created in data_dir at first start.",
    )
    meter_utc_offset_min: int = setting(
        Int(minimum=-720, maximum=840, unit="minutes"),
        default=480,
        doc="The meters' clock offset from UTC (China: +480). 1CH control frames carry a "
        "validity deadline in meter time.",
    )
    audit_head_interval_s: int = setting(
        Int(minimum=0, maximum=86400, unit="seconds"),
        default=900,
        doc="How often the audit journal's chain head (seq, hash, record count) is published, "
        "signed, on P/G/cmd/result when it moved since the last one, so the chain is anchored "
        "outside the gateway; 0 publishes it only at start.",
    )


# --- the document ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """A gateway configuration file."""

    gateway: GatewaySection = setting(Table(GatewaySection), doc="Gateway identity and data.")
    mqtt: MqttSection = setting(Table(MqttSection), doc="Broker connection.")
    store: StoreSection = setting(
        Table(StoreSection), default=StoreSection(), doc="Store retention and disk alarms."
    )
    buses: tuple[BusConfig, ...] = setting(
        TableList(BUS_VARIANTS, key="name"), default=(), doc="RS-485 lines and TCP devices."
    )
    meters: tuple[MeterConfig, ...] = setting(
        TableList(Table(MeterConfig), key="id"), default=(), doc="Meters to poll."
    )
    groups: tuple[GroupConfig, ...] = setting(
        TableList(Table(GroupConfig), key="id"), default=(), doc="Summation groups."
    )
    areas: tuple[AreaConfig, ...] = setting(
        TableList(Table(AreaConfig), key="id"), default=(), doc="Transformer areas."
    )
    reconcile: ReconcileSection = setting(
        Table(ReconcileSection),
        default=ReconcileSection(),
        doc="Daily line loss: band, guards, coverage gate, suspects (docs/reconciliation.md).",
    )
    theft: TheftSection = setting(
        Table(TheftSection),
        default=TheftSection(),
        doc="Theft and tamper indicators on polled values (docs/reconciliation.md).",
    )
    operators: tuple[OperatorConfig, ...] = setting(
        TableList(Table(OperatorConfig), key="kid"),
        default=(),
        doc="Keys allowed to sign commands; none means every command is rejected.",
    )
    commands: CommandsSection = setting(
        Table(CommandsSection), default=CommandsSection(), doc="Command verification limits."
    )
    vee: VeeSection = setting(
        Table(VeeSection),
        default=VeeSection(),
        doc="Validation and estimation (VEE): calendar, kernels, interval grid, estimation, "
        "backfill, meter classes and per-class rule overrides (docs/vee.md).",
    )
    load_control: EngineSettings = setting(
        Table(EngineSettings),
        default=EngineSettings(),
        doc="Load-control engine: rounds, delays, hysteresis, protect, prepaid "
        "(docs/load_control.md).",
    )
    power: PowerSection = setting(
        Table(PowerSection),
        default=PowerSection(),
        doc="The gateway's own power-fail input (docs/outages.md).",
    )
    outage: OutageSection = setting(
        Table(OutageSection),
        default=OutageSection(),
        doc="Outage classification: momentary against sustained (docs/outages.md).",
    )
    clock: ClockSection = setting(
        Table(ClockSection),
        default=ClockSection(),
        doc="Meter clocks: read cadence, clock.drift alarms, automatic time sync "
        "(docs/clock.md).",
    )
    update: UpdateSection = setting(
        Table(UpdateSection),
        default=UpdateSection(),
        doc="Signed update bundles: inbox directory and health deadline (docs/bundles.md).",
    )
    health: HealthSection = setting(
        Table(HealthSection),
        default=HealthSection(),
        doc="Health outside MQTT: a Prometheus textfile for node-exporter (docs/field_tools.md).",
    )
    # Derived by the loader, not read from the file.
    source_file: Path | None = field(default=None, compare=False)
    sha256: str = ""

    def bus(self, name: str) -> BusConfig:
        """The bus called `name` (KeyError if none)."""
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)

    def meter(self, meter_id: str) -> MeterConfig:
        """The meter with id `meter_id` (KeyError if none)."""
        for meter in self.meters:
            if meter.id == meter_id:
                return meter
        raise KeyError(meter_id)

    def group(self, group_id: str) -> GroupConfig:
        """The group with id `group_id` (KeyError if none)."""
        for group in self.groups:
            if group.id == group_id:
                return group
        raise KeyError(group_id)

    def meters_on(self, bus_name: str) -> tuple[MeterConfig, ...]:
        """The meters on one bus, in file order (the order they are polled in)."""
        return tuple(meter for meter in self.meters if meter.bus == bus_name)
