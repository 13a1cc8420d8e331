"""Poll schedules: no creep, overruns counted instead of queued, failing meters backed off."""

from __future__ import annotations

from gateway.acquisition.schedule import PollSchedule


def test_grid_does_not_creep_with_poll_duration() -> None:
    s = PollSchedule(interval_s=60, anchor=0.0)
    t = 0.0
    starts = []
    for _ in range(1440 * 3):  # three days of 60 s polls that each take 0.7 s
        t = max(t, s.next_due)
        starts.append(s.next_due)
        s.start_poll(t)
        t += 0.7
        s.finish_poll(t, ok=True)
    assert starts[-1] == (1440 * 3 - 1) * 60  # still exactly on the grid
    assert s.overruns == 0


def test_aligned_to_wall_clock_multiples() -> None:
    s = PollSchedule.aligned(60, mono_now=1000.0, wall_now=60 * 28_333_333 + 15.0)
    assert s.next_due == 985.0  # slot 0 is the wall-clock minute that just passed: due now
    s.start_poll(1000.0)
    s.finish_poll(1000.5, ok=True)
    assert s.next_due == 1045.0  # next wall-clock minute


def test_missed_slots_are_counted_not_queued() -> None:
    s = PollSchedule(interval_s=1, anchor=0.0, started=True)
    s.start_poll(5.5)  # served 5.5 s late: slots 1..5 passed unserved
    assert s.overruns == 5
    s.finish_poll(5.6, ok=True)
    assert s.next_due == 6.0  # the next slot after now, not slot 1


def test_failing_meter_backs_off_and_returns_when_it_answers() -> None:
    s = PollSchedule(interval_s=10, anchor=0.0, backoff_after=3, max_backoff_s=80)
    t = 0.0
    gaps = []
    for _ in range(8):
        t = s.next_due
        s.start_poll(t)
        s.finish_poll(t + 0.5, ok=False)
        gaps.append(s.next_due - t)
    assert gaps[:2] == [10, 10]
    assert gaps[2:] == [20, 40, 80, 80, 80, 80]  # doubles, capped
    assert s.skipped_for_backoff > 0
    t = s.next_due
    s.start_poll(t)
    s.finish_poll(t + 0.5, ok=True)
    assert s.next_due - t == 10


def test_first_poll_after_start_is_not_an_overrun() -> None:
    s = PollSchedule.aligned(20.0, mono_now=1000.0, wall_now=1_700_000_007.0)
    s.start_poll(1013.5)  # slot 0 was 7 s before start; served 13.5 s after start
    assert s.overruns == 0
