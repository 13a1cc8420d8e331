"""VEE rules: what each rule flags (through the kernels' public entry points) and how the
``[vee]`` table configures them (defaults, classes, effective dates, every error reported)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edge_rules import vee_kernels as vk
from edge_rules.calendar import day_number
from edge_rules.codes import Reason
from edge_rules.vee_rules import RULES, VeeConfig, reasons_of
from gateway.config import ConfigError
from gateway.config.vee import load_vee_rules, vee_config_from_table

NAN = float("nan")


def scan(
    reads: list[float],
    *,
    last: float = NAN,
    modulus: float = 1e6,
    limit: float = NAN,
    rebase: int = 4,
) -> vk.ScanResult:
    return vk.register_scan(
        np.array([reads]),
        np.array([last]),
        np.array([-1]),
        np.array([modulus]),
        np.array([limit]),
        rebase_reads=rebase,
    )


# ------------------------------------------------------------------ register rules


def test_wrap_near_ten_to_the_digits_is_a_rollover_anything_else_a_decrease() -> None:
    result = scan([999_990.0, 999_999.5, 3.0, 2.0, 4.0], modulus=1e6)
    assert result.flags[0].tolist() == [0, 0, vk.BIT_ROLLOVER, vk.BIT_DECREASE, 0]
    assert result.delta[0, 2] == pytest.approx(3.5)
    # the decreased read is not the baseline: the next read is compared with 3.0
    assert result.delta[0, 4] == pytest.approx(1.0) and result.span[0, 4] == 2
    # a 5-digit register wraps at 100,000: the same drop on a 6-digit register is a decrease
    assert scan([99_999.0, 1.0], modulus=1e5).flags[0, 1] == vk.BIT_ROLLOVER
    assert scan([99_999.0, 1.0], modulus=1e6).flags[0, 1] == vk.BIT_DECREASE


def test_impossible_delta_uses_elapsed_hours() -> None:
    limit = 10.0 * 0.25 * 1.2  # 10 kW contract, 15-minute intervals, 20 % headroom: 3 kWh
    result = scan([100.0, 103.5, NAN, 106.0, 109.0], limit=limit)
    assert result.flags[0, 1] == vk.BIT_IMPOSSIBLE  # 3.5 kWh in 15 min
    # after the rejected read and a gap, 6 kWh over three intervals (9 kWh allowed) is fine
    assert result.flags[0, 3] == 0 and result.span[0, 3] == 3
    assert result.flags[0, 4] == 0 and result.delta[0, 4] == pytest.approx(3.0)


def test_repeated_consistent_rejections_become_the_new_baseline() -> None:
    # a meter exchanged: the new register starts low and keeps counting
    result = scan([5000.0, 5001.0, 10.0, 10.5, 11.0, 11.4, 12.0], rebase=4)
    assert result.flags[0, 2:5].tolist() == [vk.BIT_DECREASE] * 3
    assert result.flags[0, 5] == vk.BIT_DECREASE | vk.BIT_REBASED
    assert result.flags[0, 6] == 0 and result.delta[0, 6] == pytest.approx(0.6)
    never = scan([5000.0, 10.0, 10.5, 11.0, 11.4, 12.0], rebase=0)
    assert (never.flags[0, 1:] == vk.BIT_DECREASE).all()


def test_scan_state_carries_into_the_next_window() -> None:
    first = scan([10.0, 11.0, NAN])
    assert first.state_value[0] == 11.0 and first.state_slot[0] == 1
    second = vk.register_scan(
        np.array([[10.5]]),
        first.state_value,
        first.state_slot - 3,
        np.array([1e6]),
        np.array([NAN]),
    )
    assert second.flags[0, 0] == vk.BIT_DECREASE


# ------------------------------------------------------------------ interval rules


def test_spike_is_judged_against_the_third_highest_interval() -> None:
    day = np.array([[0.2] * 20 + [1.0, 1.1, 3.3]])
    span = np.ones_like(day, dtype=np.int32)
    flags = vk.spike_flags(day, span, np.array([3.0]), np.array([0.5]))
    assert flags[0].tolist() == [0] * 22 + [vk.BIT_SPIKE]  # 3.3 ≥ 3 × 1.0 (third-highest)
    two_peaks = np.array([[0.2] * 20 + [3.3, 3.2, 1.0]])
    # two genuine peaks do not hide each other: both are ≥ 3 × the third-highest
    assert vk.spike_flags(two_peaks, span, np.array([3.0]), np.array([0.5]))[0, 20:22].all()
    small = np.array([[0.01] * 20 + [0.1]])  # 10× but only 0.09 kWh above: noise
    assert not vk.spike_flags(
        small, np.ones_like(small, np.int32), np.array([3.0]), np.array([0.5])
    ).any()


def test_stopped_needs_power_at_both_ends_and_reverse_needs_a_non_generating_meter() -> None:
    delta = np.array([[0.0, 0.0, 0.0, 0.4]])
    power = np.array([[0.05, 1.0, 1.0, 1.0]])
    before = np.array([[0.0, 0.05, 1.0, 1.0]])
    export = np.array([[NAN, 0.0, 0.3, NAN]])
    flags = vk.interval_flags(
        delta,
        power,
        before,
        export,
        np.array([0], np.uint8),
        np.array([0.1]),
        np.array([0.05]),
        np.array([0.05]),
    )
    assert flags[0].tolist() == [0, 0, vk.BIT_STOPPED | vk.BIT_REVERSE, 0]
    generating = vk.interval_flags(
        delta,
        power,
        before,
        export,
        np.array([1], np.uint8),
        np.array([0.1]),
        np.array([0.05]),
        np.array([0.05]),
    )
    assert generating[0].tolist() == [0, 0, vk.BIT_STOPPED, 0]


def test_history_band_needs_both_references_to_agree() -> None:
    band = vk.history_band(
        np.array([30.0, 30.0, 30.0, 2.0, 2.0, 10.5]),
        np.array([10.0, 10.0, 10.0, 10.0, 10.0, 10.0]),
        np.array([NAN, 25.0, 11.0, NAN, 1.5, NAN]),
        np.full(6, 2.5),
        np.full(6, 0.3),
        np.full(6, 2.0),
    )
    # high vs trailing; last year's same season was as high → not flagged; low; ordinary
    assert band.tolist() == [1, 0, 1, -1, 0, 0]


def test_multiplier_suspected_when_shape_stays_and_level_jumps_by_a_standard_ratio() -> None:
    reference = np.tile(np.concatenate([np.full(48, 1.0), np.full(48, 3.0)]), (3, 1))
    day = reference * np.array([[2.0], [1.3], [2.0]])
    day[2] = day[2][::-1]  # same energy, different shape: a new load, not a multiplier
    found = vk.multiplier_suspect(
        day, reference, np.array([0.5, 2.0]), np.full(3, 0.08), np.full(3, 0.12), np.full(3, 5.0)
    )
    assert found[0] == 2.0 and np.isnan(found[1]) and np.isnan(found[2])


# ------------------------------------------------------------------ sparse rules


def test_voltage_band_is_220_v_plus_7_minus_10_percent() -> None:
    p = VeeConfig().arrays(["default"], 0)
    assert p.voltage_low[0] == pytest.approx(198.0) and p.voltage_high[0] == pytest.approx(235.4)
    volts = np.array([197.9, 198.0, 220.0, 235.4, 235.5])
    flags = vk.band_flags(volts, np.zeros(5, np.int64), p.voltage_low, p.voltage_high)
    assert flags.tolist() == [1, 0, 0, 0, 1]


def test_clock_drift_levels() -> None:
    offsets = np.array([59.0, -61.0, 301.0, -901.0, NAN])
    levels = vk.drift_levels(
        offsets, np.zeros(5, np.int64), np.array([60.0]), np.array([300.0]), np.array([900.0])
    )
    assert levels.tolist() == [0, 1, 2, 3, 0]


def test_tariffs_add_up_within_one_lsb_per_register() -> None:
    total = np.array([100.03, 100.05, 100.0, 2.0])
    tariffs = np.array([[25.0, 25.0, 25.0, 25.0]] * 3 + [[999_999.0, 3.0, NAN, NAN]])
    flags = vk.tariff_sum_mismatch(total, tariffs, np.full(4, 0.01), np.full(4, 1e6))
    # 0.03 short with four tariffs is truncation; 0.05 is not; a total that wrapped while a
    # tariff has not yet is still consistent modulo 10^6
    assert flags.tolist() == [0, 1, 0, 0]


def test_ratio_change_flags_the_report_that_differs() -> None:
    flags, last = vk.ratio_changes(
        np.array([40.0, 40.0, 80.0, 30.0]), np.array([0, 0, 0, 1]), np.array([NAN, 30.0])
    )
    assert flags.tolist() == [0, 0, 1, 0] and last.tolist() == [80.0, 30.0]


def test_grade_turns_bits_and_severities_into_quality() -> None:
    flags = np.array(
        [[0, vk.BIT_SPIKE, vk.BIT_DECREASE, vk.BIT_MISSING, vk.BIT_MISSING, vk.BIT_ROLLOVER]],
        dtype=np.uint32,
    )
    estimated = np.array([[0, 0, 1, 1, 0, 0]], dtype=np.uint8)
    warn = np.array([vk.BIT_SPIKE | vk.BIT_MISSING | vk.BIT_PROLONGED])
    quality, published, run = vk.grade(
        flags, estimated, np.array([vk.BIT_DECREASE]), warn, np.array([0]), np.array([2])
    )
    assert quality[0].tolist() == [0, 0, 2, 1, 4, 0]  # A, A (warn), S, E, N, A
    assert published[0].tolist() == [
        0,
        vk.BIT_SPIKE,
        vk.BIT_DECREASE,
        vk.BIT_MISSING | vk.BIT_PROLONGED,
        vk.BIT_MISSING | vk.BIT_PROLONGED,
        0,
    ]
    assert run.tolist() == [0]
    # an info-only rule is counted, never published
    _, quiet, _ = vk.grade(
        flags,
        estimated,
        np.array([vk.BIT_DECREASE]),
        np.array([vk.BIT_MISSING]),
        np.array([0]),
        np.array([2]),
    )
    assert quiet[0, 1] == 0 and quiet[0, 3] == vk.BIT_MISSING


def test_reason_codes_are_nem12() -> None:
    assert reasons_of(vk.BIT_DECREASE) == (Reason.READ_LESS_THAN_PREVIOUS,) == (18,)
    assert reasons_of(vk.BIT_SPIKE | vk.BIT_HIGH) == (74,)
    assert reasons_of(vk.BIT_LOW | vk.BIT_STOPPED) == (68, 73)
    assert reasons_of(vk.BIT_MISSING) == (76,) and reasons_of(vk.BIT_CLOCK_FAIL) == (89,)
    assert reasons_of(vk.BIT_MULTIPLIER) == (100,) and reasons_of(vk.BIT_ROLLOVER) == ()


# ------------------------------------------------------------------ configuration


RULES_TOML = """
[vee]
utc_offset = "+08:00"
extra_holidays = [2025-07-01]

[vee.estimation]
linear_max_minutes = 60

[vee.classes.commercial]
contract_kw = 250
register_digits = 8
members = ["c-*"]

[vee.meters."c-007"]
contract_kw = 500

[[vee.rules]]
name = "spike"
effective = 2025-06-01
factor = 4.0

[[vee.rules]]
name = "spike"
class = "commercial"
effective = 2025-06-01
severity = "fail"

[[vee.rules]]
name = "spike"
class = "commercial"
effective = 2026-01-01
min_kwh = 2.0
"""


def test_rules_resolve_by_class_and_effective_date() -> None:
    config = vee_config_from_table(tomllib.loads(RULES_TOML)["vee"])
    before = day_number(dt.date(2025, 5, 31))
    june = day_number(dt.date(2025, 6, 1))
    later = day_number(dt.date(2026, 3, 1))
    assert config.rule("spike", "default", before).params["factor"] == 3.0  # documented default
    assert config.rule("spike", "default", june).params["factor"] == 4.0
    commercial = config.rule("spike", "commercial", june)
    assert commercial.severity == "fail" and commercial.params["factor"] == 4.0
    # a later entry overrides only what it sets
    assert config.rule("spike", "commercial", later).params == {"factor": 4.0, "min_kwh": 2.0}
    assert config.rule("spike", "commercial", later).severity == "fail"
    assert config.class_of("c-001") == "commercial" and config.class_of("m-1") == "default"
    arrays = config.arrays(["default", "commercial"], june)
    assert arrays.fail_mask[1] & vk.BIT_SPIKE and arrays.warn_mask[0] & vk.BIT_SPIKE
    assert arrays.modulus.tolist() == [1e6, 1e8]
    assert np.isnan(arrays.interval_limit_kwh[0])  # no contract: no impossible-delta rule
    assert arrays.interval_limit_kwh[1] == pytest.approx(250 * 0.25 * 1.2)
    assert config.estimation.linear_max_minutes == 60
    assert config.meters["c-007"].contract_kw == 500
    assert int(config.calendar.day_type(dt.date(2025, 7, 1))) == 3  # extra holiday


def test_every_config_error_is_reported_with_its_key_path() -> None:
    bad = tomllib.loads("""
[vee]
utc_offset = "+8"
colour = "blue"
[vee.classes.big]
contract_kw = -5
register_digits = 20
[[vee.rules]]
name = "spike"
severity = "fatal"
factor = "high"
[[vee.rules]]
name = "sparkle"
[[vee.rules]]
name = "history"
class = "nope"
weeks = 12
effective = "yesterday"
""")["vee"]
    with pytest.raises(ConfigError) as caught:
        vee_config_from_table(bad, Path("rules.toml"))
    text = "\n".join(str(issue) for issue in caught.value.errors)
    for expected in (
        "vee.utc_offset",
        "vee.colour: unknown key",
        "vee.classes.big.contract_kw",
        "vee.classes.big.register_digits",
        "vee.rules[0].severity",
        "vee.rules[0].factor",
        "vee.rules[1].name",
        "vee.rules[2].class",
        "vee.rules[2].weeks",
        "vee.rules[2].effective",
    ):
        assert expected in text, expected
    assert all(str(issue).startswith("rules.toml: ") for issue in caught.value.errors)


def test_load_reads_the_vee_table_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "gw"\n[vee]\n[[vee.rules]]\nname = "stopped"\nmin_kw = 0.2\n')
    config = load_vee_rules(path)
    assert config.rule("stopped", "default", 0).params["min_kw"] == 0.2
    path.write_text("[gateway]\n")
    with pytest.raises(ConfigError, match=r"no \[vee\] table"):
        load_vee_rules(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_vee_rules(tmp_path / "missing.toml")


def test_catalogue_has_every_rule_of_the_issue() -> None:
    assert set(RULES) == {
        "missing",
        "duplicate",
        "decrease",
        "impossible",
        "spike",
        "spike_read",
        "history",
        "stopped",
        "tariff_sum",
        "interval_sum",
        "clock_drift",
        "clock_fail",
        "multiplier",
        "reverse",
        "voltage",
        "prolonged_estimation",
    }
    for spec in RULES.values():
        assert spec.severity in ("info", "warn", "fail") and spec.doc
        for param in spec.params.values():
            assert param.low <= param.default <= param.high


def test_docs_list_every_rule_with_its_default_severity_and_code() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "vee.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines()
            if line.startswith("| `")}
    for name, spec in RULES.items():
        assert name in rows, f"docs/vee.md has no row for rule {name}"
        cells = [c.strip() for c in rows[name].split("|")]
        assert cells[3] == spec.severity, name
        for code in reasons_of(spec.bits):
            assert str(code) in cells[4], (name, code)
        for param, pspec in spec.params.items():
            assert f"`{param}` = {pspec.default:g}" in cells[5], (name, param)
