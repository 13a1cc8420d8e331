"""The hold-up rule of gateway/analytics/outages.py with a fake clock (docs/outages.md,
"Hold-up: stopping before the battery runs out")."""

from __future__ import annotations

from gateway.analytics.outages import PowerWatch
from tests.test_outages import AREAS, T0_MS, FakeAlarms, drive


def _watch(hold_up_s: float, stop_margin_s: float, stops: list[str], *,
           min_duration_s: float = 60.0) -> PowerWatch:
    return PowerWatch(AREAS, FakeAlarms(), min_duration_s=min_duration_s, hold_up_s=hold_up_s,
                      stop_margin_s=stop_margin_s, request_stop=stops.append)


def _stop_time(hold_up_s: float, stop_margin_s: float, **kw: float) -> float | None:
    """When (seconds after the loss, on a 0.1 s fake clock) the watch asks to stop."""
    stops: list[str] = []
    watch = _watch(hold_up_s, stop_margin_s, stops, **kw)
    for i in range(round(hold_up_s * 10) + 50):
        t = i / 10
        watch.observe(True, 1000.0 + t, T0_MS + i * 100)
        if stops:
            assert len(stops) == 1
            return t
    return None


def test_stop_is_asked_once_at_hold_up_less_margin() -> None:
    stops: list[str] = []
    watch = _watch(90, 15, stops)
    drive(watch, 0.0, 200.0, 74.8)
    assert stops == []
    for i in range(749, 1200):  # keeps reading lost: asked once, not every 100 ms
        watch.observe(True, 1000.0 + i / 10, T0_MS + i * 100)
    assert len(stops) == 1
    assert "hold_up_s 90 s" in stops[0] and "stop_margin_s 15 s" in stops[0]
    assert _stop_time(90, 15) == 75.0


def test_mains_back_before_the_stop_asks_nothing() -> None:
    stops: list[str] = []
    watch = _watch(8, 4, stops, min_duration_s=2)
    drive(watch, 0.0, 3.9, 20.0)  # reported at 2 s, back at 3.9 s: the stop was due at 4 s
    assert stops == []
    assert watch.loss is None and [e[0] for e in watch.alarms.events] == [  # type: ignore[attr-defined]
        "raised", "raised", "cleared", "cleared"]


def test_stop_never_comes_before_the_outage_alarm() -> None:
    # A margin as long as the hold-up: the alarm still goes out first (reported after 3 s).
    assert _stop_time(10, 10) == 3.0
    stops: list[str] = []
    watch = _watch(10, 10, stops)
    drive(watch, 0.0, 100.0, 2.9)
    assert stops == [] and watch.alarms.events == []  # type: ignore[attr-defined]


def test_no_hook_no_stop() -> None:
    watch = PowerWatch(AREAS, FakeAlarms(), min_duration_s=60, hold_up_s=5)
    drive(watch, 0.0, 100.0, 30.0)  # nothing to call, nothing raised beyond the alarm
    assert watch.loss is not None and watch.loss.reported


def test_a_carried_over_loss_counts_its_hold_up_from_this_start() -> None:
    stops: list[str] = []
    watch = _watch(8, 4, stops)
    # The alarm was raised 60 s before this start (the last run): not an immediate stop.
    watch.resume(T0_MS - 60_000, 1000.0, T0_MS)
    drive(watch, 0.0, 100.0, 3.8)
    assert stops == []
    drive(watch, 0.0, 100.0, 4.1)
    assert len(stops) == 1
