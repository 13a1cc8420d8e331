"""``edge-gateway`` command line: bad configs exit 2 naming the key; companions work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MINIMAL = (REPO / "configs" / "minimal.toml").read_text().replace('"../var"', '"var"')

#: (mistake, replacement applied to the minimal config, text the error must contain)
MISTAKES = [
    ("unknown top-level key", MINIMAL + "\n[gatewya]\nid = 'x'\n", "gatewya"),
    ("unknown key in a table", MINIMAL.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\nhots = 1'),
     "mqtt.hots"),
    ("wrong type", MINIMAL.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\nport = "1883"'),
     "mqtt.port"),
    ("missing gateway id", MINIMAL.replace('id = "gw-0001"\n', ""), "gateway.id"),
    ("bad protocol", MINIMAL.replace('protocol = "dlt645"', 'protocol = "dlt646"'), "protocol"),
    ("bad baud rate", MINIMAL.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaudrate = 2401'),
     "baudrate"),
    ("meter on unknown bus", MINIMAL.replace('bus = "rs485-1"', 'bus = "rs485-9"'), ".bus"),
    ("short address", MINIMAL.replace('"000102030425"', '"0001020304"'), ".address"),
    ("negative poll interval", MINIMAL + "poll_interval_s = -5\n", "poll_interval_s"),
    ("duplicate meter id", MINIMAL + '\n[[meters]]\nid = "m-001"\nbus = "rs485-1"\n'
     'address = "000102030426"\nprofile = "dlt645-2007"\n', "id"),
    ("unknown profile", MINIMAL.replace('profile = "dlt645-2007"', 'profile = "nosuch"'), "profile"),
    ("modbus profile on a DL/T 645 bus", MINIMAL.replace('profile = "dlt645-2007"', 'profile = "sdm630"'),
     "profile"),
    ("TOML syntax error", MINIMAL.replace('host = "127.0.0.1"', 'host = "127.0.0.1'), ":"),
]


def _gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.app.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("mistake", "text", "names"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_bad_config_exits_2_and_names_the_key(tmp_path: Path, mistake: str, text: str, names: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    for command in (["run", "--config", str(config)], ["check-config", str(config)]):
        result = _gateway(*command, cwd=REPO)
        assert result.returncode == 2, (mistake, result.stderr)
        assert names in result.stderr and str(config) in result.stderr, (mistake, result.stderr)
        assert "Traceback" not in result.stderr


def test_check_config_accepts_the_example() -> None:
    result = _gateway("check-config", str(REPO / "configs" / "example.toml"), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_config_schema_is_json() -> None:
    result = _gateway("config-schema", cwd=REPO)
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert "meters" in schema["properties"]


def test_decode_payload_prints_exact_decimals(tmp_path: Path) -> None:
    from decimal import Decimal

    from protocols.payload import Envelope, ReadRecord, build_reads

    data = build_reads(Envelope("gw-1", 0x1234, 7, 1_700_000_000_000), "m-1",
                       [ReadRecord("energy.active.import.total", Decimal("1206.42"), "kWh", 1_700_000_000_000)])
    path = tmp_path / "p.cbor"
    path.write_bytes(data)
    result = _gateway("decode-payload", str(path), cwd=REPO)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["reads"][0]["val"] == "1206.42"
    stdin = subprocess.run([sys.executable, "-m", "gateway.app.cli", "decode-payload", "-"], input=b"\x01\x02",
                           capture_output=True, timeout=60, cwd=REPO)
    assert stdin.returncode == 1 and b"not a gateway payload" in stdin.stderr
