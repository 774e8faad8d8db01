"""Window types give Faust's numbers; the event clock's watermark and idleness.

Faust's pure-Python windows (``faust.windows._PyHoppingWindow``,
``_PySlidingWindow``) are the reference: the same ranges, current, earliest,
delta and stale for any timestamp, so a windowed table's keys are Faust's.
"""
import datetime
import random

import pytest
from faust.windows import _PyHoppingWindow, _PySlidingWindow

from sabot.exceptions import ConfigurationError
from sabot.tables.event_clock import EventClock
from sabot.tables.window_ranges import HoppingWindow, SlidingWindow, TumblingWindow


@pytest.mark.parametrize("size,step", [(10, 5), (10, 10), (60, 20), (10, 3), (7, 7), (5, 1)])
def test_hopping_and_tumbling_match_faust(size, step):
    faust = _PyHoppingWindow(size, step, expires=30)
    windows = [HoppingWindow(size, step, expires=30)]
    if size == step:
        windows.append(TumblingWindow(size, expires=30))
    rng = random.Random(size * 100 + step)
    for _ in range(2000):
        t = rng.uniform(0, 100_000)
        if rng.random() < 0.3:
            t = float(int(t))  # window boundaries exactly
        latest = t + rng.uniform(0, 100)
        for ours in windows:
            assert ours.ranges(t) == faust.ranges(t), t
            assert ours.current(t) == faust.current(t), t
            assert ours.earliest(t) == faust.earliest(t), t
            assert ours.delta(t, 13) == faust.delta(t, 13), t
            assert ours.stale(t, latest) == faust.stale(t, latest), (t, latest)


def test_sliding_matches_faust():
    ours, faust = SlidingWindow(5, 3, 10), _PySlidingWindow(5, 3, 10)
    rng = random.Random(3)
    for _ in range(500):
        t = rng.uniform(0, 1000)
        latest = t + rng.uniform(0, 30)
        assert ours.ranges(t) == faust.ranges(t)
        assert ours.current(t) == faust.current(t) == ours.earliest(t)
        assert ours.delta(t, 2) == faust.delta(t, 2)
        assert ours.stale(t, latest) == faust.stale(t, latest)


def test_a_window_is_one_key_whatever_the_timestamp_in_it():
    # Sub-second windows: Faust's integer range() fails; ours give one float per window.
    window = HoppingWindow(0.3, 0.1)
    starts = {r[0] for t in (0.31, 0.35, 0.37, 0.399) for r in window.ranges(t)}
    assert len(starts) == 3  # the windows starting near 0.1, 0.2 and 0.3, one float each
    assert window.current(0.35) in window.ranges(0.31)
    # Every timestamp is in at least one window, whatever the rounding.
    for i in range(10_000):
        t = i * 0.1
        assert len(window.ranges(t)) >= 1 and len(TumblingWindow(0.1).ranges(t)) == 1


def test_closes_at_is_the_true_end():
    assert TumblingWindow(10).closes_at((10.0, 19.9)) == 20.0
    assert HoppingWindow(10, 5).closes_at((5.0, 14.9)) == 15.0
    assert SlidingWindow(2, 3).closes_at((8.0, 13.0)) == 13.0


def test_timedelta_and_bad_sizes():
    assert TumblingWindow(datetime.timedelta(minutes=1)).size == 60.0
    for bad in (0, -1, "10", None, float("nan"), True):
        with pytest.raises(ConfigurationError):
            TumblingWindow(bad)
    with pytest.raises(ConfigurationError, match="larger than its size"):
        HoppingWindow(5, 10)


def test_watermark_is_max_event_time_minus_lateness_and_never_goes_back():
    clock = EventClock(allowed_lateness=2.0)
    assert clock.watermark(0) == -float("inf")
    assert clock.observe(0, 10.0) == 8.0
    assert clock.observe(0, 5.0) == 8.0      # out of order: no step back
    assert clock.observe(1, 100.0) == 98.0   # partitions are independent
    assert clock.watermark(0) == 8.0
    assert clock.max_event_time(0) == 10.0


def test_idle_partition_follows_the_wall_clock_after_idle_timeout():
    now = [1000.0]
    clock = EventClock(allowed_lateness=1.0, idle_timeout=5.0, monotonic=lambda: now[0])
    clock.observe(0, 50.0)
    clock.observe(1, 70.0)
    now[0] += 4.0
    assert clock.advance_idle() == []        # not idle yet
    clock.observe(1, 71.0)                   # partition 1 keeps talking
    now[0] += 2.0                            # partition 0 silent for 6 s, 1 for 2 s
    assert clock.advance_idle() == [0]
    assert clock.watermark(0) == 50.0 + 6.0 - 1.0
    assert clock.watermark(1) == 70.0
    assert EventClock(idle_timeout=None).advance_idle() == []
