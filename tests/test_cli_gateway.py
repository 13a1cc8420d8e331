"""``edge-gateway`` command line: bad configs exit 2 naming the key; companions work."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
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

#: The sections that used to be free tables checked by their own parsers: an unknown key and a
#: wrongly typed value in each, (section text, key path the error must name).
SECTION_MISTAKES = [
    ("vee unknown key", "[vee]\nutc_ofset = '+08:00'\n", "vee.utc_ofset: unknown key"),
    ("vee nested unknown key", "[vee.estimation]\nlike_wekes = 4\n",
     "vee.estimation.like_wekes: unknown key"),
    ("vee rule parameter of another rule", "[[vee.rules]]\nname = 'spike'\nwarn_s = 5\n",
     "vee.rules[0].warn_s: unknown key"),
    ("vee wrong type", "[vee]\nnumba_min_meters = 'many'\n",
     'vee.numba_min_meters: expected an integer between 0 and 10000000, got string "many"'),
    ("vee rule parameter wrong type", "[[vee.rules]]\nname = 'spike'\nfactor = 'big'\n",
     "vee.rules[0].factor: expected a number"),
    ("load_control unknown key", "[load_control]\nsetle_s = 120\n",
     "load_control.setle_s: unknown key"),
    ("load_control wrong type", "[load_control]\nalarm_delay_s = 'soon'\n",
     'load_control.alarm_delay_s: expected a number between 0 and 2678400 (seconds), '
     'got string "soon"'),
    ("load_control group wrong type", "[load_control.groups.g]\nrounds = 'm-001'\n",
     "load_control.groups.g.rounds: expected an array"),
    ("reconcile unknown key", "[reconcile]\nband_kk = 6\n", "reconcile.band_kk: unknown key"),
    ("reconcile wrong type", "[reconcile]\nload_dependent = 'yes'\n",
     'reconcile.load_dependent: expected true or false, got string "yes"'),
]
MISTAKES += [(name, MINIMAL + "\n" + section, names) for name, section, names in SECTION_MISTAKES]


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


def _example_key_paths(table: dict[str, object], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every key path in a parsed TOML table, array-of-tables entries included."""
    paths = []
    for key, value in table.items():
        path = (*prefix, key)
        paths.append(path)
        if isinstance(value, dict):
            paths += _example_key_paths(value, path)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                paths += _example_key_paths(entry, path)
    return paths


def _schema_has(schema: dict, node: dict, path: tuple[str, ...], document: object) -> bool:
    """Whether the schema declares the key at `path`, following $ref, named-entry tables
    (additionalProperties), arrays of tables and the variant whose const matches the entry."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    if not path:
        return True
    if "oneOf" in node:
        return any(_schema_has(schema, option, path, document) for option in node["oneOf"])
    if node.get("type") == "array":
        entries = document if isinstance(document, list) else []
        return all(_schema_has(schema, node["items"], path, entry) for entry in entries)
    if not isinstance(document, dict):
        return False
    properties = node.get("properties", {})
    consts = {key: prop["const"] for key, prop in properties.items() if "const" in prop}
    if any(document.get(key) != value for key, value in consts.items()):
        return False  # another variant's entry
    head, rest = path[0], path[1:]
    if head in properties:
        return _schema_has(schema, properties[head], rest, document[head])
    extra = node.get("additionalProperties")
    return isinstance(extra, dict) and _schema_has(schema, extra, rest, document[head])


def test_config_schema_lists_every_key_of_vee_load_control_and_reconcile() -> None:
    """example.toml shows every key of these sections; config-schema must know each of them."""
    example = tomllib.loads((REPO / "configs" / "example.toml").read_text(encoding="utf-8"))
    schema = json.loads(_gateway("config-schema", cwd=REPO).stdout)
    paths = []
    for section in ("vee", "load_control", "reconcile"):
        paths += _example_key_paths({section: example[section]}, ())
    # the sections themselves, their sub-tables, named entries and rule parameters
    assert {"vee", "load_control", "reconcile"} <= {path[0] for path in paths}
    assert ("vee", "rules", "factor") in paths and ("load_control", "prepaid", "trip_delay_s") in paths
    missing = [".".join(path) for path in paths if not _schema_has(schema, schema, path, example)]
    assert missing == []
    # and the check can fail: a key the example does not have is not in the schema
    assert not _schema_has(schema, schema, ("vee", "estimation", "like_wekes"),
                           {"vee": {"estimation": {"like_wekes": 4}}})


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


def test_decode_payload_shows_v2_reads_resolved_with_the_birth_and_as_sent_without(
        tmp_path: Path) -> None:
    from tests.payload_examples import examples

    reads = tmp_path / "reads.cbor"
    reads.write_bytes(examples()["reads-message-v2"])
    birth = tmp_path / "birth.cbor"
    birth.write_bytes(examples()["state-birth"])
    resolved = _gateway("decode-payload", str(reads), "--birth", str(birth), cwd=REPO)
    assert resolved.returncode == 0, resolved.stderr
    out = json.loads(resolved.stdout)
    assert out["meter"] == "m-001" and out["id"] == "gw-0001:5f3a9c0e12b47d21:1042"
    assert out["reads"][0] == {"q": "energy.active.import.total", "val": "1206.42",
                               "unit": "kWh", "t": 1_767_225_600_000, "quality": "A"}
    assert out["reads"][2]["rev"] == 1 and out["reads"][2]["t"] == 1_767_225_600_000 - 900_000
    unresolved = _gateway("decode-payload", str(reads), cwd=REPO)
    assert unresolved.returncode == 0, unresolved.stderr
    out = json.loads(unresolved.stdout)
    assert out["aliases"] == "unresolved" and out["binding"] == 3
    assert out["reads"][:2] == [{"alias": 0, "mantissa": 120642}, {"alias": 1, "mantissa": 2297}]
    no_aliases = _gateway("decode-payload", str(reads), "--birth", str(reads), cwd=REPO)
    assert no_aliases.returncode == 0 and "declares no aliases" in no_aliases.stderr
    assert json.loads(no_aliases.stdout)["aliases"] == "unresolved"
    garbage = tmp_path / "garbage.cbor"
    garbage.write_bytes(b"\xa1\x00")
    bad = _gateway("decode-payload", str(reads), "--birth", str(garbage), cwd=REPO)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
