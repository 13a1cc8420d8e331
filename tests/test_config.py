"""The gateway configuration layer: every mistake found, located and explained, all at once.

Configs are real files in tmp_path (profiles, keys and certificates included), loaded through
the public API exactly as `edge-gateway check-config` does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import (
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    MqttSection,
    SerialBusConfig,
    TcpBusConfig,
    config_json_schema,
    config_sha256,
    format_errors,
    load_config,
)
from gateway.config.fields import specs_of
from gateway.config.kinds import MapOf, Table, TableList, Variants
from gateway.config.load_control import EngineSettings
from gateway.config.reference import BEGIN_MARKER, END_MARKER, reference_markdown
from gateway.config.vee import VeeSection

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "example.toml"
MINIMAL = REPO / "configs" / "minimal.toml"
REFERENCE_DOC = REPO / "docs" / "configuration.md"

# A valid config touching every section; each mistake below is one small edit of it.
BASE = """\
[gateway]
id = "gw-test"
data_dir = "data"

[mqtt]
host = "127.0.0.1"
port = 1883

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/ttyUSB0"
baudrate = 2400

[[buses]]
name = "rs485-2"
protocol = "modbus-rtu"
port = "/dev/ttyUSB1"

[[buses]]
name = "tcp-1"
protocol = "modbus-tcp"
host = "127.0.0.1"

[[meters]]
id = "m-000"
bus = "rs485-1"
address = "000102030400"
profile = "dlt645-2007"

[[meters]]
id = "m-001"
bus = "rs485-1"
address = "000102030425"
profile = "dlt645-2007"
poll_interval_s = 30

[[meters]]
id = "m-002"
bus = "rs485-2"
address = 7
profile = "sdm630"

[[meters]]
id = "m-003"
bus = "tcp-1"
address = 1
profile = "sdm630"

[[groups]]
id = "subs"
members = [{ meter = "m-001" }, { meter = "m-002", sign = "+", direction = "import" }]

[[areas]]
id = "area-1"
master = "m-000"
subs = "subs"

[[operators]]
kid = "op-1"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
roles = ["OPERATOR"]

[commands]
clock_trusted = true
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config directory with the two profiles BASE names (existence is all the config
    layer checks; their contents belong to protocols.profiles)."""
    (tmp_path / "profiles").mkdir()
    for name in ("dlt645-2007", "sdm630"):
        (tmp_path / "profiles" / f"{name}.toml").write_text("# test profile\n")
    return tmp_path


def write(site: Path, text: str, name: str = "gateway.toml") -> Path:
    path = site / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.errors


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once in the base config"
    return text.replace(old, new)


# --- the shipped configs ----------------------------------------------------------------


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.gateway.id == "gw-0001"
    assert {bus.protocol for bus in config.buses} == {"dlt645", "modbus-rtu", "modbus-tcp"}
    assert config.sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    # Relative paths start at the config file's directory, not the working directory.
    assert config.gateway.data_dir == REPO / "var"


def test_minimal_loads_with_documented_defaults() -> None:
    config = load_config(MINIMAL)
    (bus,) = config.buses
    assert isinstance(bus, SerialBusConfig)
    assert (bus.baudrate, bus.parity, bus.stopbits, bus.bytesize) == (2400, "E", 1, 8)
    assert (bus.timeout_ms, bus.turnaround_ms, bus.retries) == (500, 20, 1)
    assert (bus.comm_loss_after, bus.queue_limit) == (3, 256)
    (meter,) = config.meters
    assert meter.poll_interval_s == 60
    assert (meter.ct_ratio, meter.pt_ratio) == (Decimal(1), Decimal(1))
    assert (meter.protected, meter.generating, meter.meter_class) == (False, False, "residential")
    assert meter.contract_kw is None
    mqtt = config.mqtt
    assert (mqtt.port, mqtt.topic_prefix, mqtt.protocol) == (1883, "mtr/v1", "5")
    assert (mqtt.keepalive_s, mqtt.session_expiry_s, mqtt.inflight_window) == (10, 3600, 64)
    assert config.store.retention_days == 7
    assert (config.store.disk_alarm_free_mb, config.store.disk_alarm_free_pct) == (200, 5)
    commands = config.commands
    assert (commands.clock_trusted, commands.max_age_s) == (False, 120)
    assert (commands.max_meters_per_command, commands.two_person_threshold) == (50, 10)
    assert config.gateway.health_interval_s == 30
    assert config.vee == VeeSection()
    assert config.load_control == EngineSettings()


def test_dataclass_defaults_match_loader_defaults(site: Path) -> None:
    """Code building a config directly gets the same defaults as the file loader."""
    config = load_config(write(site, BASE))
    assert config.mqtt == MqttSection(host="127.0.0.1")
    assert config.store == type(config.store)()
    assert config.commands == type(config.commands)(clock_trusted=True)


def test_loads_typed_values(site: Path) -> None:
    config = load_config(write(site, BASE))
    assert config.bus("rs485-2") == SerialBusConfig(
        name="rs485-2", protocol="modbus-rtu", port="/dev/ttyUSB1", baudrate=9600, parity="N"
    )
    tcp = config.bus("tcp-1")
    assert isinstance(tcp, TcpBusConfig)
    assert (tcp.port, tcp.max_concurrency) == (502, 8)
    assert config.meter("m-002").address == 7
    assert config.meter("m-001").address == "000102030425"
    assert config.meter("m-001").profile.path == site / "profiles" / "dlt645-2007.toml"
    assert [m.id for m in config.meters_on("rs485-1")] == ["m-000", "m-001"]
    assert config.group("subs").members[0].sign == "+"
    assert config.operators[0].public_key == bytes.fromhex(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert config.operators[0].roles == frozenset({"OPERATOR"})
    assert config.gateway.data_dir == site / "data"
    assert config.source_file == site / "gateway.toml"


def test_transformer_ratios_stay_exact(site: Path) -> None:
    text = replace_once(
        BASE, "poll_interval_s = 30", "poll_interval_s = 30\nct_ratio = 0.1\npt_ratio = 100"
    )
    meter = load_config(write(site, text)).meter("m-001")
    assert meter.ct_ratio == Decimal("0.1")
    assert meter.ct_ratio * meter.pt_ratio == Decimal("10.0")


def test_vee_and_load_control_tables_are_typed(site: Path) -> None:
    text = (
        BASE
        + '\n[vee]\nholidays = "none"\n[vee.classes.c]\ncontract_kw = 40\n'
        + '[[vee.rules]]\nname = "spike"\nclass = "c"\nfactor = 3.5\n'
        + '[load_control]\nsettle_s = 90\n[load_control.groups.subs]\nalarm_delay_s = 30\n'
    )
    config = load_config(write(site, text))
    assert config.vee.holidays == "none"
    assert config.vee.classes["c"].contract_kw == 40.0
    (rule,) = config.vee.rules
    assert (rule.name, rule.meter_class, rule.factor, rule.min_kwh) == ("spike", "c", 3.5, None)
    assert config.load_control.settle_s == 90.0
    assert config.load_control.groups["subs"].alarm_delay_s == (30.0,)


# --- one mistake, one located error ------------------------------------------------------

Edit = Callable[[str], str]

MISTAKES: list[tuple[str, Edit, str, str]] = [
    # (case id, edit of BASE, exact key path, text the message must contain)
    (
        "unknown top-level key",
        lambda t: t + "\n[metres]\nx = 1\n",
        "metres",
        'did you mean "meters"',
    ),
    (
        "unknown nested key",
        lambda t: replace_once(t, "port = 1883", "port = 1883\nkeepalive = 5"),
        "mqtt.keepalive",
        'unknown key; did you mean "keepalive_s"',
    ),
    (
        "unknown key in an array entry",
        lambda t: replace_once(t, "poll_interval_s = 30", "poll_intervall = 30"),
        'meters[1] (id "m-001").poll_intervall',
        "unknown key",
    ),
    (
        "wrong type",
        lambda t: replace_once(t, "port = 1883", 'port = "1883"'),
        "mqtt.port",
        'expected an integer between 1 and 65535, got string "1883"',
    ),
    (
        "missing required key",
        lambda t: replace_once(t, 'host = "127.0.0.1"\nport = 1883', "port = 1883"),
        "mqtt.host",
        "required key is missing",
    ),
    (
        "missing required table",
        lambda t: replace_once(t, '[gateway]\nid = "gw-test"\ndata_dir = "data"\n', ""),
        "gateway",
        "required table is missing",
    ),
    (
        "bad enum",
        lambda t: replace_once(t, "baudrate = 2400", 'baudrate = 2400\nparity = "X"'),
        'buses[0] (name "rs485-1").parity',
        'expected one of "N", "E", "O", got string "X"',
    ),
    (
        "enum in the wrong case",
        lambda t: replace_once(t, 'protocol = "dlt645"', 'protocol = "DLT645"'),
        'buses[0] (name "rs485-1").protocol',
        'did you mean "dlt645"?',
    ),
    (
        "mqtt protocol written as a number",
        lambda t: replace_once(t, "port = 1883", "port = 1883\nprotocol = 5"),
        "mqtt.protocol",
        'write it as a string: "5"',
    ),
    (
        "bad baudrate",
        lambda t: replace_once(t, "baudrate = 2400", "baudrate = 9601"),
        'buses[0] (name "rs485-1").baudrate',
        "expected one of 300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200",
    ),
    (
        "duplicate meter id",
        lambda t: replace_once(t, 'id = "m-003"', 'id = "m-002"'),
        'meters[3] (id "m-002").id',
        'duplicate id "m-002" (already used by meters[2] (id "m-002"))',
    ),
    (
        "duplicate bus name",
        lambda t: t + '\n[[buses]]\nname = "tcp-1"\nprotocol = "modbus-tcp"\nhost = "10.0.0.9"\n',
        'buses[3] (name "tcp-1").name',
        'duplicate name "tcp-1" (already used by buses[2] (name "tcp-1"))',
    ),
    (
        "meter on unknown bus",
        lambda t: replace_once(t, 'bus = "tcp-1"', 'bus = "tcp-9"'),
        'meters[3] (id "m-003").bus',
        'no [[buses]] entry has name "tcp-9" (did you mean "tcp-1"?)',
    ),
    (
        "group member unknown meter",
        lambda t: replace_once(t, '{ meter = "m-001" }', '{ meter = "m-999" }'),
        'groups[0] (id "subs").members[0] (meter "m-999").meter',
        'no [[meters]] entry has id "m-999"',
    ),
    (
        "bad dlt645 address",
        lambda t: replace_once(t, '"000102030425"', '"0001020304"'),
        'meters[1] (id "m-001").address',
        "expected a 12-digit DL/T 645 address string",
    ),
    (
        "dlt645 address written as a number",
        lambda t: replace_once(t, '"000102030425"', "102030425"),
        'meters[1] (id "m-001").address',
        'write it in quotes with its leading zeros: "000102030425"',
    ),
    (
        "dlt645 broadcast address",
        lambda t: replace_once(t, '"000102030425"', '"999999999999"'),
        'meters[1] (id "m-001").address',
        "broadcast address",
    ),
    (
        "modbus unit id out of range",
        lambda t: replace_once(t, "address = 7", "address = 248"),
        'meters[2] (id "m-002").address',
        'an integer between 1 and 247 (bus "rs485-2" is modbus-rtu), got integer 248',
    ),
    (
        "modbus unit id in quotes",
        lambda t: replace_once(t, "address = 7", 'address = "7"'),
        'meters[2] (id "m-002").address',
        "write it without quotes: 7",
    ),
    (
        "negative poll interval",
        lambda t: replace_once(t, "poll_interval_s = 30", "poll_interval_s = -5"),
        'meters[1] (id "m-001").poll_interval_s',
        "expected a number > 0 and <= 86400 (seconds), got integer -5",
    ),
    (
        "nan poll interval",
        lambda t: replace_once(t, "poll_interval_s = 30", "poll_interval_s = nan"),
        'meters[1] (id "m-001").poll_interval_s',
        "got float nan",
    ),
    (
        "area with unknown group",
        lambda t: replace_once(t, 'subs = "subs"', 'subs = "nope"'),
        'areas[0] (id "area-1").subs',
        'no [[groups]] entry has id "nope"',
    ),
    (
        "tls file missing",
        lambda t: replace_once(t, "port = 1883", 'port = 1883\ntls = { ca_file = "tls/ca.pem" }'),
        "mqtt.tls.ca_file",
        "tls/ca.pem does not exist",
    ),
    (
        "serial key on a tcp bus",
        lambda t: replace_once(
            t,
            'host = "127.0.0.1"\n\n[[meters]]',
            'host = "127.0.0.1"\nbaudrate = 9600\n\n[[meters]]',
        ),
        'buses[2] (name "tcp-1").baudrate',
        '"baudrate" is only used with protocol = "dlt645" | "modbus-rtu"',
    ),
    (
        "missing bus protocol",
        lambda t: replace_once(t, 'protocol = "modbus-tcp"\n', ""),
        'buses[2] (name "tcp-1").protocol',
        'required key is missing: expected one of "dlt645", "modbus-rtu", "modbus-tcp"',
    ),
    (
        "unknown role",
        lambda t: replace_once(t, 'roles = ["OPERATOR"]', 'roles = ["OPERATOR", "ADMIN"]'),
        'operators[0] (kid "op-1").roles[1]',
        'expected one of "VIEWER", "OPERATOR", "ENGINEER", "SECADM", got string "ADMIN"',
    ),
    (
        "no roles",
        lambda t: replace_once(t, 'roles = ["OPERATOR"]', "roles = []"),
        'operators[0] (kid "op-1").roles',
        "(at least 1)",
    ),
    (
        "short hex public key",
        lambda t: replace_once(t, "707511a", "70751"),
        'operators[0] (kid "op-1").public_key',
        "has 62 hex digits; an Ed25519 public key has 64",
    ),
    (
        "boolean written as a string",
        lambda t: replace_once(t, "clock_trusted = true", 'clock_trusted = "yes"'),
        "commands.clock_trusted",
        'expected true or false, got string "yes"',
    ),
    (
        "array of tables written as a table",
        lambda t: t.replace("[[operators]]", "[operators]"),
        "operators",
        "write each entry under its own [[operators]] header",
    ),
    (
        "wildcard in topic prefix",
        lambda t: replace_once(t, "port = 1883", 'port = 1883\ntopic_prefix = "mtr/+/v1"'),
        "mqtt.topic_prefix",
        "without wildcards",
    ),
    (
        "gateway id unusable as a topic segment",
        lambda t: replace_once(t, 'id = "gw-test"', 'id = "gw/test"'),
        "gateway.id",
        'got string "gw/test"',
    ),
    (
        "reconnect bounds reversed",
        lambda t: replace_once(t, "port = 1883", "port = 1883\nreconnect_min_s = 90"),
        "mqtt.reconnect_min_s",
        "must not exceed reconnect_max_s (60), got 90",
    ),
    (
        "duplicate address on one bus",
        lambda t: replace_once(t, '"000102030425"', '"000102030400"'),
        'meters[1] (id "m-001").address',
        'meter "m-000" already has address "000102030400" on bus "rs485-1"',
    ),
    (
        "two buses on one serial port",
        lambda t: replace_once(t, 'port = "/dev/ttyUSB1"', 'port = "/dev/ttyUSB0"'),
        'buses[1] (name "rs485-2").port',
        'bus "rs485-1" already uses /dev/ttyUSB0',
    ),
    (
        "area master counted in its own subs",
        lambda t: replace_once(t, 'master = "m-000"', 'master = "m-001"'),
        'areas[0] (id "area-1").master',
        "must not be one of the sub-meters",
    ),
    (
        "member counted twice",
        lambda t: replace_once(
            t, '{ meter = "m-001" }, ', '{ meter = "m-001" }, { meter = "m-001" }, '
        ),
        'groups[0] (id "subs").members[1] (meter "m-001").meter',
        "it would be counted twice",
    ),
    (
        "area id equal to a group id",
        lambda t: replace_once(t, 'id = "area-1"', 'id = "subs"'),
        'areas[0] (id "subs").id',
        "must differ",
    ),
    (
        "unknown profile",
        lambda t: replace_once(
            t, 'profile = "sdm630"\n\n[[meters]]', 'profile = "sdm360"\n\n[[meters]]'
        ),
        'meters[2] (id "m-002").profile',
        'no profile named "sdm360"',
    ),
    (
        "mqtt 3.1.1 password without username",
        lambda t: replace_once(
            t, "port = 1883", 'port = 1883\nprotocol = "3.1.1"\npassword = "pw"'
        ),
        "mqtt.password",
        "does not allow a password without a username",
    ),
    (
        "client certificate without key",
        lambda t: replace_once(
            t, "port = 1883", 'port = 1883\ntls = { cert_file = "gateway.toml" }'
        ),
        "mqtt.tls.key_file",
        "cert_file and key_file must be given together",
    ),
    (
        "reconcile guards crossed",
        lambda t: t + "\n[reconcile]\nlower_guard_pct = 12\n",
        "reconcile.lower_guard_pct",
        "must be below upper_guard_pct (10)",
    ),
    (
        "reconcile band needs more history than its window",
        lambda t: t + "\n[reconcile]\nwindow_days = 10\n",
        "reconcile.min_history_days",
        "must not exceed window_days (10), got 20",
    ),
    (
        "reconcile coverage gate beyond 100 %",
        lambda t: t + "\n[reconcile]\nmin_coverage_pct = 980\n",
        "reconcile.min_coverage_pct",
        "",
    ),
    (
        "reconcile unknown key",
        lambda t: t + "\n[reconcile]\nband_width = 6\n",
        "reconcile.band_width",
        "",
    ),
]


@pytest.mark.parametrize(
    ("edit", "key_path", "text"),
    [pytest.param(edit, path, text, id=case) for case, edit, path, text in MISTAKES],
)
def test_one_mistake_is_reported_at_its_key(
    site: Path, edit: Edit, key_path: str, text: str
) -> None:
    path = write(site, edit(BASE))
    errors = errors_of(path)
    matching = [e for e in errors if e.path == key_path]
    assert matching, f"no error at {key_path!r}; got:\n" + "\n".join(map(str, errors))
    assert any(text in e.message for e in matching), "\n".join(map(str, errors))
    assert all(e.file == path for e in errors)
    # One mistake, one message: no cascade of follow-on errors.
    assert len(errors) == 1, "\n".join(map(str, errors))


def test_reconcile_table_is_typed_with_documented_defaults(site: Path) -> None:
    defaults = load_config(write(site, BASE)).reconcile
    assert defaults == type(defaults)()
    assert (defaults.lower_guard_pct, defaults.upper_guard_pct) == (-1.0, 10.0)
    assert (defaults.band_k, defaults.window_days, defaults.min_coverage_pct) == (6.0, 60, 98.0)
    text = BASE + "\n[reconcile]\nband_k = 4.5\nwindow_days = 30\nload_dependent = false\n"
    tuned = load_config(write(site, text)).reconcile
    assert (tuned.band_k, tuned.window_days, tuned.load_dependent) == (4.5, 30, False)


def test_base_config_is_valid(site: Path) -> None:
    """The mistakes above are mistakes only because BASE itself is clean."""
    load_config(write(site, BASE))


def test_syntax_error_reports_line_and_column(site: Path) -> None:
    text = replace_once(BASE, "port = 1883", "port = = 1883")
    path = write(site, text)
    (issue,) = errors_of(path)
    line = text.splitlines().index("port = = 1883") + 1
    assert (issue.line, issue.column) == (line, 8)
    assert issue.path == ""
    assert str(issue).startswith(f"{path}:{line}:8: TOML syntax error: ")


def test_duplicate_toml_key_is_a_syntax_error(site: Path) -> None:
    path = write(site, replace_once(BASE, "port = 1883", "port = 1883\nport = 1884"))
    (issue,) = errors_of(path)
    assert issue.line is not None
    assert "TOML syntax error" in issue.message


def test_every_mistake_in_a_file_is_reported_at_once(site: Path) -> None:
    text = BASE
    text = replace_once(text, "port = 1883", 'port = "1883"\nkeepalive = 5')
    text = replace_once(text, "baudrate = 2400", "baudrate = 9601")
    text = replace_once(text, "address = 7", "address = 300")
    text = replace_once(text, 'bus = "tcp-1"', 'bus = "tcp-9"')
    text = replace_once(text, "poll_interval_s = 30", "poll_interval_s = 0")
    text = replace_once(text, 'subs = "subs"', 'subs = "none"')
    text = replace_once(text, 'roles = ["OPERATOR"]', 'roles = ["ROOT"]')
    path = write(site, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    paths = [issue.path for issue in caught.value.errors]
    assert paths == [
        "mqtt.keepalive",
        "mqtt.port",
        'buses[0] (name "rs485-1").baudrate',
        'meters[1] (id "m-001").poll_interval_s',
        'meters[2] (id "m-002").address',
        'meters[3] (id "m-003").bus',
        'areas[0] (id "area-1").subs',
        'operators[0] (kid "op-1").roles[0]',
    ]
    report = format_errors(caught.value)
    lines = report.splitlines()
    assert lines[-1] == f"8 errors in {path}"
    for line, issue in zip(lines, caught.value.errors, strict=False):
        assert line == f"{path}: {issue.path}: {issue.message}"


def test_a_broken_bus_does_not_cascade_to_its_meters(site: Path) -> None:
    """Meters on a bus that failed to validate are not also reported as on an unknown bus."""
    path = write(site, replace_once(BASE, "baudrate = 2400", "baudrate = 1"))
    (issue,) = errors_of(path)
    assert issue.path == 'buses[0] (name "rs485-1").baudrate'


# --- files the config points at ----------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = site / "tls"
    tls.mkdir()
    for name in ("ca.pem", "gw.pem", "gw.key"):
        (tls / name).write_text("-----BEGIN CERTIFICATE-----\n")
    (site / "custom").mkdir()
    (site / "custom" / "odd-meter.toml").write_text("# profile\n")
    text = replace_once(
        BASE,
        "port = 1883",
        'port = 8883\ntls = { ca_file = "tls/ca.pem", cert_file = "tls/gw.pem", key_file = "tls/gw.key" }',
    )
    text = replace_once(
        text, 'profile = "sdm630"\n\n[[meters]]', 'profile = "custom/odd-meter.toml"\n\n[[meters]]'
    )
    path = write(site, text)
    monkeypatch.chdir(site.parent)  # a different working directory must not matter
    config = load_config(Path(site.name) / path.name)
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.ca_file == site / "tls" / "ca.pem"
    assert config.mqtt.tls.key_file == site / "tls" / "gw.key"
    assert config.meter("m-002").profile.path == site / "custom" / "odd-meter.toml"
    assert config.meter("m-002").profile.name == "odd-meter"
    assert config.gateway.data_dir == site / "data"


def test_profiles_beside_the_config_shadow_the_built_in_ones(site: Path) -> None:
    config = load_config(write(site, BASE))
    assert config.meter("m-000").profile.path.parent == site / "profiles"


@pytest.mark.parametrize("encoding", ["pem", "raw", "hex"])
def test_operator_key_files_in_every_accepted_encoding(site: Path, encoding: str) -> None:
    public = Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    data = {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "raw": raw,
        "hex": raw.hex().encode() + b"\n",
    }[encoding]
    (site / "keys").mkdir()
    (site / "keys" / "op-1.pub").write_bytes(data)
    text = re.sub(r'public_key = "[0-9a-f]+"', 'public_key = "keys/op-1.pub"', BASE)
    config = load_config(write(site, text))
    assert config.operators[0].public_key == raw


def test_private_key_given_as_operator_key_is_rejected(site: Path) -> None:
    private = Ed25519PrivateKey.generate()
    (site / "op.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    text = re.sub(r'public_key = "[0-9a-f]+"', 'public_key = "op.pem"', BASE)
    (issue,) = errors_of(write(site, text))
    assert issue.path == 'operators[0] (kid "op-1").public_key'
    assert "PRIVATE key" in issue.message


def test_gateway_key_must_exist(site: Path) -> None:
    text = replace_once(
        BASE, "clock_trusted = true", 'clock_trusted = true\ngateway_key = "keys/gw.pem"'
    )
    (issue,) = errors_of(write(site, text))
    assert issue.path == "commands.gateway_key"
    assert str(site / "keys" / "gw.pem") in issue.message


def test_data_dir_that_is_a_file_is_rejected(site: Path) -> None:
    (site / "data").write_text("not a directory")
    (issue,) = errors_of(write(site, BASE))
    assert issue.path == "gateway.data_dir"
    assert "is not a directory" in issue.message


def test_missing_config_file(tmp_path: Path) -> None:
    (issue,) = errors_of(tmp_path / "absent.toml")
    assert "cannot read the config file" in issue.message
    assert str(issue).startswith(str(tmp_path / "absent.toml") + ": ")


def test_non_utf8_file(site: Path) -> None:
    path = site / "gateway.toml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    (issue,) = errors_of(path)
    assert "UTF-8" in issue.message
    assert issue.line == BASE.count("\n") + 1


def test_config_sha256_is_the_file_digest(site: Path) -> None:
    path = write(site, BASE)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert config_sha256(path) == digest
    assert load_config(path).sha256 == digest


# --- JSON Schema ------------------------------------------------------------------------
# jsonschema is not a dependency, so a small validator for exactly the keywords our schema
# emits checks that documents pass or fail. It refuses keywords it does not know, so a new
# kind of constraint cannot slip past these tests unchecked.

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default", "format"}
_ASSERTIONS = {
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "oneOf",
    "anyOf",
}
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    # TOML dates are strings of format "date" to JSON Schema tools (Taplo reads them so).
    "string": lambda v: isinstance(v, str | dt.date),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def schema_errors(
    schema: dict[str, Any], value: Any, root: dict[str, Any], at: str = ""
) -> list[str]:
    unknown = set(schema) - _ANNOTATIONS - _ASSERTIONS
    assert not unknown, f"validator does not implement {unknown}"
    errors: list[str] = []
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        errors += schema_errors(root["$defs"][name], value, root, at)
    if "type" in schema and not _JSON_TYPES[schema["type"]](value):
        return [*errors, f"{at}: not {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: not in enum")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: not const")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{at}: below minimum")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{at}: above maximum")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{at}: not above exclusiveMinimum")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{at}: too short")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{at}: too long")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{at}: pattern")
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{at}: too few items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{at}: too many items")
    if schema.get("uniqueItems") and len({json.dumps(v) for v in value}) != len(value):
        errors.append(f"{at}: duplicate items")
    if "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(schema["items"], item, root, f"{at}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{at}.{key}: required")
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(properties[key], item, root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}.{key}: additional property")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(
                    schema["additionalProperties"], item, root, f"{at}.{key}"
                )
    if "oneOf" in schema:
        passing = [s for s in schema["oneOf"] if not schema_errors(s, value, root, at)]
        if len(passing) != 1:
            errors.append(f"{at}: {len(passing)} of oneOf match")
    if "anyOf" in schema and all(schema_errors(s, value, root, at) for s in schema["anyOf"]):
        errors.append(f"{at}: no anyOf matches")
    return errors


def toml_file(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_schema_is_draft_2020_12_json() -> None:
    schema = config_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    json.dumps(schema)  # plain JSON, no Paths or Decimals
    assert config_json_schema() == schema and config_json_schema() is not schema


@pytest.mark.parametrize("path", [EXAMPLE, MINIMAL], ids=["example", "minimal"])
def test_schema_accepts_the_shipped_configs(path: Path) -> None:
    schema = config_json_schema()
    assert schema_errors(schema, toml_file(path), schema) == []


def test_schema_accepts_the_base_config() -> None:
    schema = config_json_schema()
    assert schema_errors(schema, tomllib.loads(BASE), schema) == []


SCHEMA_REJECTS = [
    "unknown top-level key",
    "unknown nested key",
    "unknown key in an array entry",
    "wrong type",
    "missing required key",
    "missing required table",
    "bad enum",
    "bad baudrate",
    "bad dlt645 address",
    "modbus unit id in quotes",
    "negative poll interval",
    "serial key on a tcp bus",
    "missing bus protocol",
    "unknown role",
    "no roles",
    "boolean written as a string",
    "wildcard in topic prefix",
    "gateway id unusable as a topic segment",
]


@pytest.mark.parametrize("case", SCHEMA_REJECTS)
def test_schema_rejects_what_the_loader_rejects(case: str) -> None:
    """Structural mistakes fail both ways: the schema and the loader share their declarations."""
    (edit,) = [edit for name, edit, _, _ in MISTAKES if name == case]
    schema = config_json_schema()
    assert schema_errors(schema, tomllib.loads(edit(BASE)), schema) != []


def _object_schemas(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append(node)
        for value in node.values():
            found += _object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            found += _object_schemas(value)
    return found


def test_schema_tables_are_closed_and_described() -> None:
    schema = config_json_schema()
    tables = _object_schemas(schema)
    assert len(tables) == 1 + len(schema["$defs"])
    for table in tables:
        assert table["additionalProperties"] is False, table["title"]
        assert table["description"], table["title"]
        for key, prop in table["properties"].items():
            assert prop["description"], f"{table['title']}.{key}"
    # No free tables: [vee] and [load_control] are declared like every other section.
    assert schema["properties"]["vee"]["$ref"] == "#/$defs/VeeSection"
    assert schema["properties"]["load_control"]["$ref"] == "#/$defs/EngineSettings"


def test_schema_has_every_declared_key_with_its_default() -> None:
    schema = config_json_schema()
    defs = schema["$defs"]
    assert set(schema["properties"]) == set(specs_of(GatewayConfig))
    assert defs["MqttSection"]["properties"]["keepalive_s"]["default"] == 10
    assert defs["Dlt645Bus"]["properties"]["parity"]["default"] == "E"
    assert defs["ModbusRtuBus"]["properties"]["parity"]["default"] == "N"
    assert defs["ModbusTcpBus"]["properties"]["port"]["default"] == 502
    assert defs["MeterConfig"]["required"] == ["id", "bus", "address", "profile"]


# --- documentation stays in step with the declarations ----------------------------------


def test_reference_in_docs_is_current() -> None:
    doc = REFERENCE_DOC.read_text(encoding="utf-8")
    start = doc.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = doc.index(END_MARKER)
    assert doc[start:end].strip() == reference_markdown().strip(), (
        "docs/configuration.md is stale: run "
        "`.venv/bin/python -m gateway.config.reference --write docs/configuration.md`"
    )


def _declared_keys() -> dict[str, set[str]]:
    """Section name -> every key it may hold (bus variants and nested tables merged in)."""
    sections: dict[str, set[str]] = {}
    for name, spec in specs_of(GatewayConfig).items():
        kind = spec.kind
        classes: list[type] = []
        if isinstance(kind, Table):
            classes = [kind.cls]
        elif isinstance(kind, TableList) and isinstance(kind.item, Variants):
            classes = [variant.cls for variant in kind.item.options.values()]
        elif isinstance(kind, TableList) and isinstance(kind.item, Table):
            classes = [kind.item.cls]
        keys: set[str] = set()
        while classes:
            cls = classes.pop()
            for key, sub in specs_of(cls).items():
                keys.add(key)
                if isinstance(sub.kind, Table):
                    classes.append(sub.kind.cls)
                elif (isinstance(sub.kind, MapOf) and isinstance(sub.kind.item, Table)) or (isinstance(sub.kind, TableList) and isinstance(sub.kind.item, Table)):
                    classes.append(sub.kind.item.cls)
        sections[name] = keys
    return sections


def test_example_documents_every_key() -> None:
    """Each key appears in its section of example.toml, set or commented out."""
    text = EXAMPLE.read_text(encoding="utf-8")
    blocks: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^\[\[?([a-z_]+)\]\]?", line)
        if header:
            current = header.group(1)
        blocks[current] = blocks.get(current, "") + line + "\n"
    for section, keys in _declared_keys().items():
        assert section in blocks, f"example.toml has no [{section}] section"
        for key in keys:
            as_key = rf"(^|[#{{,]\s*){key}\s*="
            as_table = rf"^#?\s*\[\[?{section}\.{key}[\].]"
            assert re.search(f"{as_key}|{as_table}", blocks[section], re.M), (
                f"example.toml does not show {section}.{key}"
            )


def test_malformed_collection_does_not_cascade_to_references(site: Path) -> None:
    """`[buses]` written as one table is one mistake, not one more per meter on it."""
    text = BASE.replace("[[buses]]", "[buses]", 1)
    text = text.replace("[[buses]]", "[more-buses]", 1)
    text = text.replace("[[buses]]", "[even-more-buses]", 1)
    errors = {e.path: e.message for e in errors_of(write(site, text))}
    assert set(errors) == {"buses", "more-buses", "even-more-buses"}
    assert "write each entry under its own [[buses]] header" in errors["buses"]
