"""Watermarks per partition, their minimum, idleness on a clock the test moves."""
import pyarrow as pa

from sabot._fastpath import Batch
from sabot.windows.watermark import NO_WATERMARK, Watermarks, partition_of

S = 1_000_000  # microseconds per second


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_one_partition_is_its_largest_time_minus_lateness_and_never_goes_back():
    marks = Watermarks(lateness_us=2 * S, clock=Clock())
    assert marks.current() is None
    marks.observe(None, 50 * S)
    assert marks.current() == 48 * S
    marks.observe(None, 40 * S)  # out of order: no step back
    assert marks.current() == 48 * S
    assert marks.partition_watermark(None) == 48 * S


def test_the_minimum_over_partitions_holds_windows_open():
    marks = Watermarks(clock=Clock())
    marks.observe(("t", 0), 90 * S)
    marks.observe(("t", 1), 10 * S)
    assert marks.partitions == 2 and marks.current() == 10 * S
    marks.observe(("t", 1), 95 * S)
    assert marks.current() == 90 * S


def test_an_idle_partition_stops_holding_the_minimum_while_another_is_active():
    clock = Clock()
    marks = Watermarks(idle_timeout=5.0, clock=clock)
    marks.observe(0, 10 * S)
    marks.observe(1, 60 * S)
    assert marks.current() == 10 * S
    assert marks.seconds_until(70 * S) == 5.0  # when partition 0 turns idle
    clock.now += 4.0
    marks.observe(1, 61 * S)
    clock.now += 1.5  # partition 0 idle for 5.5 s, partition 1 for 1.5 s
    assert marks.current() == 61 * S


def test_when_every_partition_is_idle_event_time_follows_the_clock():
    clock = Clock()
    marks = Watermarks(idle_timeout=2.0, clock=clock)
    marks.observe(0, 10 * S)
    clock.now += 1.0
    assert marks.current() == 10 * S          # not idle yet
    assert marks.seconds_until(13 * S) == 1.0  # it turns idle in a second
    clock.now += 1.0
    assert marks.current() == 12 * S          # idle: 10 s + 2 s of clock
    assert marks.seconds_until(13 * S) == 1.0  # one more second of clock
    clock.now += 3.0
    assert marks.current() == 15 * S
    marks.observe(0, 11 * S)                  # an old event: no step back
    assert marks.current() == 15 * S


def test_without_idle_timeout_the_clock_never_moves_it():
    clock = Clock()
    marks = Watermarks(clock=clock)
    marks.observe(0, 10 * S)
    clock.now += 1000
    assert marks.current() == 10 * S
    assert marks.seconds_until(11 * S) is None


def test_each_row_finds_the_watermark_of_the_rows_before_it():
    marks = Watermarks(lateness_us=S, clock=Clock())
    fresh = marks.for_batch(0, pa.array([5 * S, 7 * S], pa.int64()), 7 * S)
    assert fresh.rows().to_pylist() == [NO_WATERMARK, 4 * S]  # nothing before row 0
    marks.observe(1, 20 * S)
    marks.observe(0, 2 * S)
    assert marks.current() == 1 * S
    times = pa.array([5 * S, 30 * S, 12 * S, 25 * S], pa.int64())
    batch = marks.for_batch(0, times, 30 * S)
    # Partition 0's largest time so far, at most partition 1's, minus the lateness.
    assert batch.rows().to_pylist() == [1 * S, 4 * S, 19 * S, 19 * S]
    assert batch.upper == 19 * S
    marks.observe(0, 30 * S)
    assert marks.current() == 19 * S
    # It never goes back: a partition first seen now finds the watermark as it is.
    late_comer = marks.for_batch(2, pa.array([1 * S], pa.int64()), 1 * S)
    assert late_comer.rows().to_pylist() == [19 * S] and late_comer.upper == 19 * S


def test_partitions_are_the_position_without_its_offset():
    assert partition_of(Batch([1], positions=[("orders", 3, 17)])) == ("orders", 3)
    assert partition_of(Batch([1], positions=[("stream", "1-0")])) == ("stream",)
    assert partition_of(Batch([1])) is None


def test_an_assigned_partition_holds_the_watermark_until_it_delivers():
    clock = Clock()
    marks = Watermarks(clock=clock, unseen_hold=10.0)
    marks.expect([("t", 0), ("t", 1)])
    marks.observe(("t", 0), 50 * S)
    assert marks.current() is None  # partition 1 has said nothing yet
    batch = marks.for_batch(("t", 0), pa.array([60 * S], pa.int64()), 60 * S)
    assert batch.rows().to_pylist() == [NO_WATERMARK]
    assert marks.seconds_until(60 * S) == 10.0  # when partition 1 stops holding
    marks.observe(("t", 1), 40 * S)
    assert marks.current() == 40 * S
    marks.forget([("t", 1)])  # revoked: no longer held by it
    assert marks.current() == 50 * S


def test_an_assigned_partition_that_stays_silent_holds_for_a_while_only():
    clock = Clock()
    marks = Watermarks(clock=clock, unseen_hold=10.0)
    marks.expect([0, 1])
    marks.observe(0, 50 * S)
    clock.now += 9.0
    marks.observe(0, 55 * S)
    assert marks.current() is None
    clock.now += 1.0  # partition 1 silent since its assignment 10 s ago
    assert marks.current() == 55 * S
    with_idle = Watermarks(idle_timeout=2.0, clock=clock)
    with_idle.expect([0, 1])
    with_idle.observe(0, 50 * S)
    clock.now += 2.0  # idle_timeout, when given, is the hold (both quiet now)
    assert with_idle.current() == 52 * S
