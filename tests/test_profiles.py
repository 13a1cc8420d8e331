"""Profile loading: the shipped Modbus maps match their published sources, and bad files are
rejected with every problem located."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from protocols.modbus.profile import (
    DataType,
    Measurement,
    ModbusProfile,
    RegisterFunction,
    RegisterSpec,
    WordOrder,
)
from protocols.profiles import (
    Dlt645Override,
    Dlt645Profile,
    Dlt645Read,
    ProfileError,
    builtin_profile_dir,
    canonical_unit,
    check_quantity_name,
    find_profile,
    load_named_profile,
    load_profile,
    parse_profile,
)

PROFILE_DIR = builtin_profile_dir()


def modbus(text: str, name: str = "test") -> ModbusProfile:
    profile = parse_profile(text, source=f"{name}.toml", name=name)
    assert isinstance(profile, ModbusProfile)
    return profile


def shipped(name: str) -> ModbusProfile:
    profile = load_named_profile(name)
    assert isinstance(profile, ModbusProfile)
    return profile


def messages(excinfo: pytest.ExceptionInfo[ProfileError]) -> list[str]:
    return [str(issue) for issue in excinfo.value.issues]


MINIMAL = """
kind = "modbus"
[defaults]
function = "input"
type = "float32"
[[groups]]
registers = [{ quantity = "voltage.a", address = 0x0000 }]
"""


# ---- shipped profiles -----------------------------------------------------------------------


def test_every_shipped_profile_loads() -> None:
    files = sorted(PROFILE_DIR.glob("*.toml"))
    assert {"sdm630", "dtsu666"} <= {f.stem for f in files}
    for file in files:
        profile = load_profile(file)
        assert profile.name == file.stem


@pytest.mark.parametrize(
    ("quantity", "address"),
    [
        # Eastron register number 3xxxx - 30001, from the published SDM630 input-register table.
        ("voltage.a", 0x0000),  # 30001
        ("voltage.c", 0x0004),  # 30005
        ("current.a", 0x0006),  # 30007
        ("power.active.a", 0x000C),  # 30013
        ("power.active.total", 0x0034),  # 30053
        ("power.factor.total", 0x003E),  # 30063
        ("frequency", 0x0046),  # 30071
        ("energy.active.import.total", 0x0048),  # 30073
        ("energy.active.export.total", 0x004A),  # 30075
        ("energy.active.combined.total", 0x0156),  # 30343
    ],
)
def test_sdm630_addresses_match_the_published_map(quantity: str, address: int) -> None:
    profile = shipped("sdm630")
    spec = profile.spec(quantity)
    assert (spec.function, spec.address, spec.data_type, spec.word_order) == (
        RegisterFunction.INPUT, address, DataType.FLOAT32, WordOrder.BIG)


def test_sdm630_converts_watts_to_kilowatts_and_keeps_energy_exact() -> None:
    profile = shipped("sdm630")
    assert profile.spec("power.active.total").scale == Decimal("0.001")
    assert profile.spec("power.active.total").unit == "kW"
    energy = profile.spec("energy.active.import.total")
    assert energy.measurement is Measurement.REGISTER
    assert energy.resolution == Decimal("0.01")
    assert profile.max_registers_per_request == 80


@pytest.mark.parametrize(
    ("quantity", "address", "data_type", "scale"),
    [
        ("ratio.ct", 0x0006, DataType.INT16, Decimal("1")),  # IrAt
        ("ratio.pt", 0x0007, DataType.INT16, Decimal("0.1")),  # UrAt x 0.1
        ("voltage.a", 0x2006, DataType.FLOAT32, Decimal("0.1")),
        ("current.a", 0x200C, DataType.FLOAT32, Decimal("0.001")),
        ("power.active.total", 0x2012, DataType.FLOAT32, Decimal("0.0001")),  # 0.1 W -> kW
        ("power.factor.total", 0x202A, DataType.FLOAT32, Decimal("0.001")),
        ("frequency", 0x2044, DataType.FLOAT32, Decimal("0.01")),
        ("energy.active.import.total", 0x401E, DataType.FLOAT32, Decimal("1")),
        ("energy.active.export.total", 0x4028, DataType.FLOAT32, Decimal("1")),
    ],
)
def test_dtsu666_registers_and_scales(quantity: str, address: int, data_type: DataType, scale: Decimal) -> None:
    spec = shipped("dtsu666").spec(quantity)
    assert (spec.function, spec.address, spec.data_type, spec.scale) == (
        RegisterFunction.HOLDING, address, data_type, scale)


def test_dtsu666_energy_base_switches_in_one_place(tmp_path: Path) -> None:
    """The documented switch to the 101EH map moves both energy registers and their scale."""
    text = (PROFILE_DIR / "dtsu666.toml").read_text()
    assert text.count("base = 0x401E") == 1
    switched = text.replace("base = 0x401E", "base = 0x101E").replace(
        'base = 0x101E\nscale = "1"', 'base = 0x101E\nscale = "0.01"')
    file = tmp_path / "dtsu666.toml"
    file.write_text(switched)
    profile = load_profile(file)
    assert isinstance(profile, ModbusProfile)
    assert profile.spec("energy.active.import.total").address == 0x101E
    assert profile.spec("energy.active.export.total").address == 0x1028
    assert profile.spec("energy.active.import.total").scale == Decimal("0.01")
    assert profile.spec("voltage.a").address == 0x2006  # other groups untouched


# ---- schema ---------------------------------------------------------------------------------


def test_minimal_profile_defaults() -> None:
    profile = modbus(MINIMAL)
    spec = profile.spec("voltage.a")
    assert spec == RegisterSpec("voltage.a", RegisterFunction.INPUT, 0, DataType.FLOAT32, WordOrder.BIG,
                                Decimal(1), "V", Measurement.INSTANTANEOUS, None)
    assert profile.max_registers_per_request == 125
    assert profile.max_gap == 0


def test_encoding_keys_cascade_defaults_group_register() -> None:
    profile = modbus("""
kind = "modbus"
[defaults]
function = "holding"
type = "uint16"
scale = 0.1
[[groups]]
function = "input"
type = "int32"
word_order = "little"
registers = [
  { quantity = "current.a", address = 10 },
  { quantity = "current.b", address = 12, type = "float32", scale = "0.001" },
]
[[groups]]
registers = [{ quantity = "frequency", address = 1 }]
""")
    a, b, f = profile.spec("current.a"), profile.spec("current.b"), profile.spec("frequency")
    assert (a.function, a.data_type, a.word_order, a.scale) == (
        RegisterFunction.INPUT, DataType.INT32, WordOrder.LITTLE, Decimal("0.1"))
    assert (b.data_type, b.scale) == (DataType.FLOAT32, Decimal("0.001"))
    assert (f.function, f.data_type, f.word_order, f.scale) == (
        RegisterFunction.HOLDING, DataType.UINT16, WordOrder.BIG, Decimal("0.1"))


def test_float_and_string_scales_are_the_same_decimal() -> None:
    as_float = modbus(MINIMAL.replace('type = "float32"', 'type = "float32"\nscale = 0.001'))
    as_text = modbus(MINIMAL.replace('type = "float32"', 'type = "float32"\nscale = "0.001"'))
    assert as_float.spec("voltage.a").scale == as_text.spec("voltage.a").scale == Decimal("0.001")


def test_group_base_with_offsets() -> None:
    profile = modbus("""
kind = "modbus"
[defaults]
function = "holding"
type = "float32"
[[groups]]
base = 0x401E
registers = [
  { quantity = "energy.active.import.total", offset = 0 },
  { quantity = "energy.active.export.total", offset = 0x0A },
]
""")
    assert [s.address for s in profile.registers] == [0x401E, 0x4028]
    assert all(s.measurement is Measurement.REGISTER and s.resolution == Decimal("0.01")
               for s in profile.registers)


# ---- errors ---------------------------------------------------------------------------------


def test_every_problem_is_reported_with_its_location() -> None:
    with pytest.raises(ProfileError) as excinfo:
        modbus("""
kind = "modbus"
colour = "blue"
[defaults]
function = "input"
type = "float32"
[[groups]]
registers = [
  { quantity = "power.active.total", address = 0x34, unit = "W" },
  { quantity = "voltage.a", adress = 0 },
  { quantity = "wattage.total", address = 4 },
  { quantity = "current.a", address = 6, resolution = "0.5" },
]
""", name="bad")
    found = messages(excinfo)
    assert any(m.startswith("bad.toml: colour: unknown key") for m in found)
    assert any(m.startswith("bad.toml: groups[0].registers[0].unit: power.active.total is published in 'kW', not 'W'")
               for m in found)
    assert any(m.startswith("bad.toml: groups[0].registers[1].address: is required") for m in found)
    assert any(m.startswith("bad.toml: groups[0].registers[1].adress: unknown key") for m in found)
    assert any("groups[0].registers[2].quantity" in m and "unknown family 'wattage'" in m for m in found)
    assert any("groups[0].registers[3].resolution" in m and "not a power of ten" in m for m in found)
    assert len(found) == 6


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        ('{ quantity = "voltage.a", address = 0 }, { quantity = "voltage.b", address = 1 }', "overlaps voltage.a"),
        ('{ quantity = "voltage.a", address = 0 }, { quantity = "voltage.a", address = 4 }', "appears twice"),
        ('{ quantity = "power.activ.total", address = 0 }', "not in the vocabulary"),
        ('{ quantity = "Voltage.A", address = 0 }', "dotted lower-case"),
        ('{ quantity = "voltage.a", address = 0xFFFF }', "runs past register 0xFFFF"),
        ('{ quantity = "voltage.a", address = 70000 }', "outside 0..65535"),
        ('{ quantity = "voltage.a", address = 0, offset = 2 }', "use address"),
        ('{ quantity = "voltage.a", address = 0, scale = 0 }', "must not be zero"),
        ('{ quantity = "voltage.a", address = 0, scale = "abc" }', "not a decimal number"),
        ('{ quantity = "voltage.a", address = 0, function = "coil" }', "is not one of 'input', 'holding'"),
        ('{ quantity = "voltage.a", address = true }', "expected an integer, got a boolean"),
    ],
)
def test_register_errors(registers: str, expected: str) -> None:
    text = f"""
kind = "modbus"
[defaults]
function = "input"
type = "float32"
[[groups]]
registers = [{registers}]
"""
    with pytest.raises(ProfileError) as excinfo:
        modbus(text)
    assert any(expected in m for m in messages(excinfo)), messages(excinfo)


def test_function_and_type_must_be_set_somewhere() -> None:
    with pytest.raises(ProfileError) as excinfo:
        modbus('kind = "modbus"\n[[groups]]\nregisters = [{ quantity = "frequency", address = 0 }]')
    found = messages(excinfo)
    assert any("registers[0].function: is not set for frequency" in m for m in found)
    assert any("registers[0].type: is not set for frequency" in m for m in found)


def test_group_with_base_needs_offsets() -> None:
    with pytest.raises(ProfileError) as excinfo:
        modbus(MINIMAL.replace("[[groups]]\n", "[[groups]]\nbase = 0x100\n"))
    assert any("give offset" in m for m in messages(excinfo))


def test_limits_are_checked() -> None:
    with pytest.raises(ProfileError) as excinfo:
        modbus(MINIMAL.replace('kind = "modbus"', 'kind = "modbus"\nmax_registers_per_request = 126\nmax_gap = -1'))
    found = messages(excinfo)
    assert any("max_registers_per_request: 126 is outside 1..125" in m for m in found)
    assert any("max_gap: -1 is outside 0..125" in m for m in found)


def test_bad_toml_and_bad_kind() -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile("kind = ", source="x.toml", name="x")
    with pytest.raises(ProfileError, match="'iec62056' is not one of 'modbus', 'dlt645'"):
        parse_profile('kind = "iec62056"', source="x.toml", name="x")
    with pytest.raises(ProfileError, match="kind: is required"):
        parse_profile("", source="x.toml", name="x")


def test_declared_name_must_match_file(tmp_path: Path) -> None:
    file = tmp_path / "meter-a.toml"
    file.write_text('name = "meter-b"\n' + MINIMAL)
    with pytest.raises(ProfileError, match="file is named 'meter-a'"):
        load_profile(file)


def test_find_profile_names_every_place_looked(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as excinfo:
        find_profile("no-such-meter", [tmp_path, tmp_path / "other"])
    text = str(excinfo.value)
    assert str(tmp_path / "no-such-meter.toml") in text and str(tmp_path / "other" / "no-such-meter.toml") in text
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "no-such-meter.toml").write_text(MINIMAL)
    assert find_profile("no-such-meter", [tmp_path, tmp_path / "other"]) == tmp_path / "other" / "no-such-meter.toml"
    with pytest.raises(ProfileError, match="not a profile name"):
        find_profile("../etc/passwd", [tmp_path])


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(binary)


# ---- vocabulary -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [("voltage.ab", "V"), ("current.n", "A"), ("power.active.total", "kW"), ("power.factor.a", ""),
     ("frequency", "Hz"), ("energy.active.import.t3", "kWh"), ("energy.reactive.q1.total", "kvarh"),
     ("demand.active.import.max.total", "kW"), ("ratio.ct", ""), ("status.run_word_1", None),
     ("x.thd.voltage.a", None)],
)
def test_canonical_units(quantity: str, unit: str | None) -> None:
    assert check_quantity_name(quantity) is None
    assert canonical_unit(quantity) == unit


# ---- DL/T 645 profiles ----------------------------------------------------------------------


DLT645 = """
kind = "dlt645"
description = "generic -2007 meter"
reads = [
  { di = "0001ff00", names = ["energy.active.import.total", "energy.active.import.t1",
                              "energy.active.import.t2", "energy.active.import.t3",
                              "energy.active.import.t4"] },
  { di = "02010100", name = "voltage.a" },
  { di = "04000102", optional = true },
]
overrides = [
  { di = "00010000", format = "bcd", bytes = 4, decimals = 2, signed = false, unit = "kWh", name = "energy.active.import.total" },
  { di = "02020100", format = "bcd", bytes = 3, decimals = 3, signed = true },
]
"""


def test_dlt645_profile_parses_into_typed_dataclasses() -> None:
    profile = parse_profile(DLT645, source="d.toml", name="dlt645-test")
    assert isinstance(profile, Dlt645Profile)
    assert profile.kind == "dlt645" and profile.version == "2007"
    assert profile.reads[0] == Dlt645Read("0001FF00", None, (
        "energy.active.import.total", "energy.active.import.t1", "energy.active.import.t2",
        "energy.active.import.t3", "energy.active.import.t4"), False)
    assert profile.reads[1] == Dlt645Read("02010100", "voltage.a")
    assert profile.reads[2].optional
    assert profile.overrides == (
        Dlt645Override("00010000", "bcd", 4, 2, False, "kWh", "energy.active.import.total"),
        Dlt645Override("02020100", "bcd", 3, 3, True, None, None),
    )
    assert profile.override_for("02020100") is profile.overrides[1]
    assert profile.override_for("00000000") is None


def test_dlt645_1997_is_inferred_from_four_digit_dis() -> None:
    profile = parse_profile('kind = "dlt645"\nreads = [{ di = "9010" }, { di = "B611" }]', name="old")
    assert isinstance(profile, Dlt645Profile)
    assert profile.version == "1997" and profile.reads[1].di == "B611"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('reads = [{ di = "0001FF0" }]', "is not a data identifier"),
        ('reads = [{ di = 10000 }]', "di: expected a string, got an integer"),
        ('reads = [{ di = "00010000" }, { di = "00010000" }]', "already read at reads[0]"),
        ('reads = [{ di = "00010000" }, { di = "9010" }]', "mixes 8-digit"),
        ('version = "1997"\nreads = [{ di = "00010000" }]', "-1997 DIs have 4 hex digits"),
        ('reads = [{ di = "00010000", name = "voltage.a", names = ["voltage.b"] }]', "not both"),
        ('reads = [{ di = "00010000", every = 5 }]', "reads[0].every: unknown key"),
        ('reads = [{ di = "00010000", optional = "yes" }]', "expected true or false"),
        ('reads = [{ di = "00010000" }]\noverrides = [{ di = "00010000", format = "bcd", bytes = "4" }]',
         "overrides[0].bytes: expected an integer, got a string"),
        ('reads = [{ di = "00010000" }]\noverrides = [{ di = "00010000", bytes = 4 }]', "format: is required"),
        ('reads = [{ di = "00010000" }]\noverrides = [{ di = "00010000", format = "bcd", bytes = 2, decimals = 5 }]',
         "cannot fit in 2 BCD byte(s)"),
        ('reads = [{ di = "00010000" }]\noverrides = [{ di = "00010000", format = "bcd", bytes = 4, unit = "Wh", '
         'name = "energy.active.import.total" }]', "published in 'kWh', not 'Wh'"),
        ('reads = [{ di = "00010000" }]\noverrides = [{ di = "00010000", format = "BCD!", bytes = 4 }]',
         "is not a format name"),
        ("reads = []", "must list at least one DI"),
        ("", "reads: is required"),
    ],
)
def test_dlt645_errors(body: str, expected: str) -> None:
    with pytest.raises(ProfileError) as excinfo:
        parse_profile('kind = "dlt645"\n' + body, source="d.toml", name="d")
    assert any(expected in m for m in messages(excinfo)), messages(excinfo)
