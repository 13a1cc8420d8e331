"""The outage rules of gateway/analytics/outages.py with a fake clock (docs/outages.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.analytics.outages import (
    OUTAGE_AREA,
    OUTAGE_MOMENTARY,
    PowerWatch,
    ServedArea,
    read_input,
    served_areas,
)
from gateway.config import load_config

T0_MS = 1_760_000_000_000
AREAS = (
    ServedArea("tq-1", ("m-0", "m-1", "m-2"), ("C-1", "C-2")),
    ServedArea("tq-2", ("m-3",), ()),
)


class FakeAlarms:
    """Records what the watch raises and clears, like the pipeline's Alarms (dedup by key)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, object], int]] = []
        self.active: set[str] = set()

    def raise_(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
               t_ms: int) -> bool:
        assert meter is None
        if key in self.active:
            return False
        self.active.add(key)
        self.events.append(("raised", kind, key, dict(details), t_ms))
        return True

    def clear(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
              t_ms: int) -> bool:
        if key not in self.active:
            return False
        self.active.discard(key)
        self.events.append(("cleared", kind, key, dict(details), t_ms))
        return True


def drive(watch: PowerWatch, lost_from: float, lost_until: float, end: float,
          step: float = 0.1) -> None:
    """Read the input every ``step`` s from t=0 to ``end``: mains lost in [lost_from,
    lost_until). The wall clock runs with the monotonic one, from T0_MS."""
    ticks = round(end / step)
    for i in range(ticks + 1):
        t = i * step
        watch.observe(lost_from <= t < lost_until, 1000.0 + t, T0_MS + round(t * 1000))


def make(min_duration_s: float = 60.0) -> tuple[PowerWatch, FakeAlarms]:
    alarms = FakeAlarms()
    return PowerWatch(AREAS, alarms, min_duration_s=min_duration_s, hold_up_s=90.0), alarms


def test_outage_is_raised_for_every_area_within_5_s_and_cleared_with_its_duration() -> None:
    watch, alarms = make(min_duration_s=60.0)
    drive(watch, lost_from=10.0, lost_until=100.0, end=110.0)
    raised = [e for e in alarms.events if e[0] == "raised"]
    assert [(e[1], e[2]) for e in raised] == [(OUTAGE_AREA, "outage.area/tq-1"),
                                              (OUTAGE_AREA, "outage.area/tq-2")]
    for _, _, _, details, t_ms in raised:
        assert details["start_ms"] == T0_MS + 10_000
        assert 0 < t_ms - (T0_MS + 10_000) <= 5_000  # reported within 5 s of the flip
        assert details["planned"] is False
    assert raised[0][3]["meters"] == ["m-0", "m-1", "m-2"]
    assert raised[0][3]["customers"] == ["C-1", "C-2"]
    assert raised[1][3]["customers"] == []
    cleared = [e for e in alarms.events if e[0] == "cleared"]
    assert len(cleared) == 2 and not alarms.active
    for _, kind, _, details, _ in cleared:
        assert kind == OUTAGE_AREA
        assert details["duration_s"] == pytest.approx(90.0, abs=0.11)
        assert details["end_ms"] == pytest.approx(T0_MS + 100_000, abs=110)
        assert details["momentary"] is False
    assert watch.losses == 1 and watch.momentary == 0


def test_dip_shorter_than_the_report_delay_raises_no_outage_and_leaves_one_record() -> None:
    watch, alarms = make(min_duration_s=60.0)
    drive(watch, lost_from=5.0, lost_until=6.5, end=10.0)
    assert not [e for e in alarms.events if e[1] == OUTAGE_AREA]
    records = [e for e in alarms.events if e[1] == OUTAGE_MOMENTARY]
    # one record per area: raised and cleared at once, with the same details
    assert [(e[0], e[2]) for e in records] == [
        ("raised", "outage.momentary/tq-1"), ("cleared", "outage.momentary/tq-1"),
        ("raised", "outage.momentary/tq-2"), ("cleared", "outage.momentary/tq-2")]
    details = records[0][3]
    assert details["momentary"] is True
    assert details["duration_s"] == pytest.approx(1.5, abs=0.11)
    assert not alarms.active and watch.momentary == 1


def test_reported_loss_shorter_than_min_duration_is_cleared_as_momentary() -> None:
    watch, alarms = make(min_duration_s=60.0)
    drive(watch, lost_from=0.0, lost_until=20.0, end=25.0)
    kinds = [(e[0], e[1]) for e in alarms.events]
    assert kinds == [("raised", OUTAGE_AREA)] * 2 + [("cleared", OUTAGE_AREA)] * 2
    assert all(e[3]["momentary"] is True for e in alarms.events if e[0] == "cleared")


def test_small_min_duration_reports_at_min_duration() -> None:
    """min_duration_s below REPORT_AFTER_S: a loss is reported as soon as it is an outage."""
    watch, alarms = make(min_duration_s=1.0)
    drive(watch, lost_from=0.0, lost_until=0.9, end=2.0)
    assert not [e for e in alarms.events if e[1] == OUTAGE_AREA]
    drive(watch, lost_from=0.0, lost_until=1.5, end=2.0)
    raised = [e for e in alarms.events if e[0] == "raised" and e[1] == OUTAGE_AREA]
    assert len(raised) == 2 and raised[0][4] - T0_MS == 1000


def test_an_alarm_left_raised_by_the_last_run_is_cleared_on_restore() -> None:
    watch, alarms = make()
    alarms.active = {"outage.area/tq-1", "outage.area/tq-2"}
    watch.resume(T0_MS - 300_000, 1000.0, T0_MS)
    drive(watch, lost_from=0.0, lost_until=0.0, end=0.0)
    cleared = [e for e in alarms.events if e[0] == "cleared"]
    assert len(cleared) == 2
    assert cleared[0][3]["duration_s"] == pytest.approx(300.0)
    assert cleared[0][3]["start_ms"] == T0_MS - 300_000


def test_input_file_compares_stripped_text(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("1\n")
    assert read_input(path, "1") is True
    path.write_text(" 0 ")
    assert read_input(path, "1") is False
    path.write_text("LOST")
    assert read_input(path, " LOST ") is True
    assert read_input(tmp_path / "missing", "1") is None


def test_served_areas_from_the_example_config() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "example.toml")
    (area,) = served_areas(config)
    assert area.id == "tq-0042"
    assert area.meters == ("m-000", "m-001", "m-002", "m-003")
    assert area.customers == ("C-0042-000", "C-1001")
    assert config.meter("m-001").phase == "a"
    assert config.outage.min_duration_s == 60 and config.power.fail_input is None


def test_meter_phase_is_one_of_a_b_c_abc(tmp_path: Path) -> None:
    from gateway.config import ConfigError

    example = Path(__file__).resolve().parents[1] / "configs" / "example.toml"
    text = example.read_text(encoding="utf-8")
    assert 'phase = "a"\n' in text
    bad = tmp_path / "gateway.toml"
    bad.write_text(text.replace('phase = "a"\n', 'phase = "d"\n'), encoding="utf-8")
    for name in ("profiles",):  # example.toml refers to nothing else beside it
        if (example.parent / name).exists():
            (tmp_path / name).symlink_to(example.parent / name)
    with pytest.raises(ConfigError, match="phase"):
        load_config(bad)
