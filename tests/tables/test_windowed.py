"""Windowed tables on memory channels: counts, closing, idleness, late events, expiry.

The counts over out-of-order input are checked against a pyarrow reference
(``windowed_reference``); the reading methods (``value``, ``current``,
``delta``, ``now``) against Faust's own windowed table fed the same events.
Events carry their event time as the batch's timestamps (as a Kafka message
does), or in a field (``relative_to_field``).
"""
import asyncio
import random
import time
import warnings
import weakref

import pytest

import sabot
from sabot._fastpath import Batch
from sabot.exceptions import ConfigurationError, SabotCompatibilityWarning
from sabot.tables.windowed import LATE_REASON_HEADER
from tests.helpers import collector, drain, running, unique, until
from tests.tables.windowed_reference import windowed_counts


def make_table(app, name, **kwargs):
    return app.Table(name, default=int, **kwargs)


def out_of_order_events(n, keys=20, seed=7, spread=60.0, jitter=8.0):
    """``(key, event_time)`` in arrival order: rising time, some events up to ``jitter`` late."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = 1_000.0 + spread * i / n
        if rng.random() < 0.2:
            t -= rng.uniform(0, jitter)
        out.append((f"k{rng.randrange(keys)}", round(t, 3)))
    return out


async def feed(channel, events, batch_size=50, field=False):
    """Publish ``(key, time)`` events in batches; the time as batch timestamps or a field."""
    for i in range(0, len(events), batch_size):
        chunk = events[i:i + batch_size]
        values = [{"key": k, "ts": t} for k, t in chunk]
        if field:
            await channel.send_batch(values)
        else:
            await channel.publish(Batch(values, timestamps=[t for _, t in chunk]))


def by_start(table):
    """``{(key, window_start): value}`` of a windowed table's underlying table."""
    return {(k, rng[0]): v for (k, rng), v in table.items()}


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
@pytest.mark.parametrize("field", [False, True], ids=["timestamp", "field"])
async def test_counts_over_out_of_order_input_equal_the_pyarrow_reference(kind, field):
    events = out_of_order_events(3000)
    size, step, grace = (5.0, 5.0, 2.0) if kind == "tumbling" else (10.0, 5.0, 1.0)
    app = sabot.App(unique("win"))
    source = app.channel()
    table = make_table(app, "counts")
    options = dict(grace=grace, allowed_lateness=0.5, idle_timeout=None)
    windowed = (table.tumbling(size, **options) if kind == "tumbling"
                else table.hopping(size, step, **options))
    if field:
        windowed = windowed.relative_to_field("ts")
    # Late events go to the source's dead-letter channel unless late_channel= is given.
    late = collector(app, source.dead_letter_channel(), kind="events")
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value["key"]] += 1
            seen.append(value)

    async with running(app):
        await feed(source, events, field=field)
        await until(lambda: len(seen) == len(events), what="every event processed")
        expected, late_count = windowed_counts([(k, 0, t) for k, t in events], size, step,
                                               grace=grace, lateness=0.5)
        assert late_count > 0, "the input must have late events for this test to mean much"
        assert by_start(table) == expected
        assert windowed.late_events == late_count
        assert windowed.late_reasons == {"window closed": late_count}
        await windowed.flush()
        await until(lambda: len(late) == late_count, what="every late event on the late channel")
        for event in late:
            assert event.headers[LATE_REASON_HEADER].startswith(b"late for table 'counts'")
            assert float(event.headers["sabot-event-time"]) == event.value["ts"]


async def test_on_window_close_gets_the_key_and_the_aggregate():
    app = sabot.App(unique("win"))
    source = app.channel()
    closed = []
    table = make_table(app, "totals", on_window_close=lambda key, value: closed.append(
        (key, value)))
    windowed = table.tumbling(10, idle_timeout=None)
    seen = []

    @app.agent(source)
    async def total(stream):
        async for value in stream:
            windowed[value["key"]] += value["amount"]
            seen.append(value)

    events = [("a", 1.0, 5), ("a", 2.0, 7), ("b", 3.0, 1), ("a", 9.5, 2), ("b", 12.0, 4)]
    async with running(app):
        await source.publish(Batch([{"key": k, "amount": n} for k, _, n in events],
                                   timestamps=[t for _, t, _ in events]))
        await until(lambda: len(seen) == len(events))
        # The event at 12.0 moved the watermark past 10.0: window (0, 9.9) closed.
        assert sorted(closed) == [(("a", (0.0, 9.9)), 14), (("b", (0.0, 9.9)), 1)]
        assert windowed.windows_closed == 1
        # Each window closes once; its value stays readable until it expires.
        assert table["a", (0.0, 9.9)] == 14


async def test_an_async_close_callback_is_awaited_and_a_failing_one_is_logged(caplog):
    app = sabot.App(unique("win"))
    source = app.channel()
    closed = []

    async def on_close(key, value):
        await asyncio.sleep(0)
        if key[0] == "bad":
            raise ValueError("callback failed")
        closed.append((key, value))

    windowed = make_table(app, "c").tumbling(1, idle_timeout=None, on_window_close=on_close)
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async with running(app):
        await source.publish(Batch(["a", "bad", "a", "z"], timestamps=[0.1, 0.2, 0.3, 5.0]))
        await until(lambda: len(seen) == 4)
        await windowed.flush()
        assert closed == [(("a", (0.0, 0.9)), 2)]
        assert "callback failed" in caplog.text


async def test_an_idle_partition_closes_its_window_without_a_new_event():
    app = sabot.App(unique("win"))
    source = app.channel()
    closed = []
    windowed = make_table(app, "idle").tumbling(
        0.5, idle_timeout=0.2, on_window_close=lambda k, v: closed.append((k, v)))
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async with running(app):
        now = time.time()
        await source.publish(Batch(["x", "x"], timestamps=[now, now]))
        await until(lambda: len(seen) == 2)
        assert closed == []
        # No other event comes: the idle timer moves the watermark on.
        await until(lambda: closed, timeout=5.0, what="the window closed by idleness")
        ((key, value),) = closed
        assert key[0] == "x" and value == 2
        assert key[1][0] <= now < key[1][0] + 0.5
        assert windowed.watermark(0) >= key[1][0] + 0.5


async def test_expires_removes_old_windows_on_event_time():
    # Faust's table_cleanup_interval: how often expired windows are removed.
    app = sabot.App(unique("win"), table_cleanup_interval=0.02)
    source = app.channel()
    table = make_table(app, "exp")
    windowed = table.tumbling(10, expires=20, idle_timeout=None)
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async def send(*stamps):
        await source.publish(Batch(["k"] * len(stamps), timestamps=list(stamps)))
        await until(lambda: len(seen) == sum_sent[0] + len(stamps))
        sum_sent[0] += len(stamps)

    sum_sent = [0]
    async with running(app):
        await send(1.0, 11.0, 21.0)
        assert set(by_start(table)) == {("k", 0.0), ("k", 10.0), ("k", 20.0)}
        # Faust's stale: a window ending at 9.9 expires once current(latest - 20)
        # starts after it, latest = the watermark: 31 -> current(11) = (10, 19.9).
        await send(31.0)
        await until(lambda: set(by_start(table)) == {("k", 10.0), ("k", 20.0), ("k", 30.0)},
                    what="the window of 1.0 expired")
        await send(45.0)
        await until(lambda: set(by_start(table)) == {("k", 20.0), ("k", 30.0), ("k", 40.0)},
                    what="the window of 11.0 expired")
        assert windowed.state.windows_expired == 2


async def test_without_expires_windows_close_but_stay():
    app = sabot.App(unique("win"))
    source = app.channel()
    table = make_table(app, "keep")
    closed = []
    windowed = table.tumbling(10, idle_timeout=None,
                              on_window_close=lambda k, v: closed.append(k))
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async with running(app):
        await source.publish(Batch(["k"] * 3, timestamps=[1.0, 500.0, 1000.0]))
        await until(lambda: len(seen) == 3)
        assert closed == [("k", (0.0, 9.9)), ("k", (500.0, 509.9))]
        assert set(by_start(table)) == {("k", 0.0), ("k", 500.0), ("k", 1000.0)}


# -- Faust's reading methods, against Faust's own windowed table -------------------

class _FaustMessage:
    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value")


class _FaustEvent:
    __slots__ = ("message", "key", "value", "__weakref__")


def faust_readings(events, size, step, delta):
    """What Faust's windowed table answers after each event (in its own stream context)."""
    import faust
    from faust.streams import _current_event
    app = faust.App(unique("faust-ref"), broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("t", default=int, partitions=1).hopping(size, step)
    by_field = table.relative_to(lambda event: event.value["ts"])
    out = []
    for i, (key, stamp, ts) in enumerate(events):
        message = _FaustMessage()
        message.topic, message.partition, message.offset = "src", 0, i
        message.timestamp, message.key, message.value = stamp, key, {"ts": ts}
        event = _FaustEvent()
        event.message, event.key, event.value = message, key, message.value
        token = _current_event.set(weakref.ref(event))
        try:
            by_field[key] += 1
            ws = by_field[key]
            out.append((ws.value(), ws.current(), ws.delta(delta)))
        finally:
            _current_event.reset(token)
    return out


async def test_value_current_delta_read_the_windows_faust_reads():
    # ``value()`` follows the wrapper's time (here a field), ``current()`` and
    # ``delta()`` the event's own timestamp, as in Faust.
    rng = random.Random(5)
    events = []
    for i in range(300):
        stamp = 100.0 + i * 0.37
        events.append((f"k{rng.randrange(3)}", stamp, stamp + rng.choice([0.0, 3.0, -4.0])))
    expected = faust_readings(events, 10, 5, 6)

    app = sabot.App(unique("win"))
    source = app.channel()
    table = make_table(app, "t")
    # Faust never closes windows here (no expires): neither should a difference in
    # closing change the counts, so grace is large.
    by_field = table.hopping(10, 5, grace=1_000, idle_timeout=None).relative_to(
        lambda event: event.value["ts"])
    got = []

    @app.agent(source)
    async def read(stream):
        async for value in stream:
            key = value["key"]
            by_field[key] += 1
            ws = by_field[key]
            got.append((ws.value(), ws.current(), ws.delta(6)))

    async with running(app):
        await source.publish(Batch([{"key": k, "ts": ts} for k, _, ts in events],
                                   timestamps=[s for _, s, _ in events]))
        await until(lambda: len(got) == len(events))
    assert got == expected


async def test_now_reads_the_earliest_window_of_the_latest_time():
    app = sabot.App(unique("win"))
    source = app.channel()
    table = make_table(app, "n")
    windowed = table.hopping(10, 5, idle_timeout=None)
    got = []

    @app.agent(source)
    async def read(stream):
        async for value in stream:
            windowed[value] += 1
            got.append(windowed[value].now())

    async with running(app):
        await source.publish(Batch(["a", "a", "a"], timestamps=[1.0, 6.0, 12.0]))
        await until(lambda: len(got) == 3)
        # In a stream "now" is the partition's latest event time (Faust's
        # _relative_now), and now() its earliest window: at 12.0, (5, 14.9) holds 6 and 12.
        assert got == [1, 2, 2]
        # Outside a stream "now" is the system clock: no window there.
        assert windowed["a"].now() == 0
        assert table["a", (5.0, 14.9)] == 2
        assert windowed["a"][(5.0, 14.9)] == 2


async def test_relative_to_clones_share_the_windows_and_reject_bad_times():
    app = sabot.App(unique("win"))
    source = app.channel()
    table = make_table(app, "r")
    windowed = table.tumbling(10, idle_timeout=None)
    by_field = windowed.relative_to_field("ts")
    assert by_field.state is windowed.state
    assert windowed.relative_to_stream().state is windowed.state
    assert windowed.relative_to_now().state is windowed.state
    errors = []
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            try:
                by_field[value["key"]] += 1
            except (TypeError, ValueError, KeyError) as exc:
                errors.append(str(exc))
            seen.append(value)

    async with running(app):
        await source.send_batch([{"key": "a", "ts": "2026-01-01T00:00:05+00:00"},
                                 {"key": "a", "ts": 1767225609.0},
                                 {"key": "a", "ts": "yesterday"},
                                 {"key": "a", "ts": None},
                                 {"key": "a", "ts": float("nan")}])
        await until(lambda: len(seen) == 5)
        start = 1767225600.0  # 2026-01-01T00:00:00Z, a multiple of 10
        assert table["a", (start, start + 9.9)] == 2
    assert len(errors) == 3
    assert "ISO-8601" in errors[0] and "None" in errors[1] and "finite" in errors[2]
    assert all("table 'r'" in e for e in errors)


def test_bad_window_settings_are_clear_errors():
    app = sabot.App(unique("win"))
    table = make_table(app, "bad")
    with pytest.raises(ConfigurationError, match="grace"):
        table.tumbling(10, grace=-1)
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        table.tumbling(10, idle_timeout=0)
    with pytest.raises(ConfigurationError, match="Relative"):
        table.tumbling(10).relative_to(object())
    with pytest.raises(RuntimeError, match="outside of stream"):
        table.tumbling(10)["k"].current()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table.tumbling(10, key_index=True)
    assert any(issubclass(w.category, SabotCompatibilityWarning) and "key_index" in str(w.message)
               for w in caught)


async def test_late_events_go_to_late_channel_when_given():
    app = sabot.App(unique("win"))
    source = app.channel()
    late_channel = app.channel(name="late-clicks")
    late = collector(app, late_channel, kind="events")
    dead = collector(app, source.dead_letter_channel(), kind="events")
    windowed = make_table(app, "l").tumbling(10, grace=1, idle_timeout=None,
                                             late_channel=late_channel)
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async with running(app):
        # 12.0 closes (0, 9.9): its end 10 plus grace 1 is behind the watermark 12.
        await source.publish(Batch(["a", "a", "b", "a"], keys=["a", "a", "b", "a"],
                                   timestamps=[1.0, 12.0, 3.0, 10.5]))
        await until(lambda: len(seen) == 4)
        await until(lambda: len(late) == 1, what="the late event on the late channel")
        assert windowed.late_events == 1 and dead == []
        (event,) = late
        assert event.key == "b" and event.value == "b"
        assert event.headers["sabot-error"].startswith(b"late for table 'l': event time 3.0")
        assert event.headers["sabot-source"] == source.name.encode()
        assert event.headers["sabot-window"] == b"[0.0, 9.9]"
        assert windowed["a"][(10.0, 19.9)] == 2



@pytest.mark.parametrize("expires", [None, 30])
async def test_a_recovery_on_this_worker_does_not_close_a_window_twice(expires):
    # Recovery callbacks run after every assignment: windows this worker closed
    # stay closed (and still expire); open ones stay open.
    app = sabot.App(unique("win"), table_cleanup_interval=0.02)
    source = app.channel()
    closed = []
    table = make_table(app, "again")
    windowed = table.tumbling(10, expires=expires, idle_timeout=None,
                              on_window_close=lambda k, v: closed.append((k, v)))
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async def send(*stamps):
        await source.publish(Batch(["k"] * len(stamps), timestamps=list(stamps)))
        await until(lambda: len(seen) == sent[0] + len(stamps))
        sent[0] += len(stamps)

    sent = [0]
    async with running(app):
        await send(1.0, 12.0)
        await app.tables.flush()  # into the store, where a recovery finds them
        assert closed == [(("k", (0.0, 9.9)), 1)]
        await table.call_recover_callbacks()
        await send(25.0)
        assert closed == [(("k", (0.0, 9.9)), 1), (("k", (10.0, 19.9)), 1)]
        await send(60.0)
        expected = ({("k", 0.0), ("k", 10.0), ("k", 20.0), ("k", 60.0)}
                    if expires is None else {("k", 60.0)})
        await until(lambda: set(by_start(table)) == expected, what="the windows left")


async def test_a_window_set_pinned_to_an_event_and_what_a_windowed_table_refuses():
    from sabot.tables.context import current_event
    app = sabot.App(unique("win"))
    source = app.channel()
    windowed = make_table(app, "pin").tumbling(10, idle_timeout=None)
    got = []

    @app.agent(source)
    async def read(stream):
        first = None
        async for value in stream:
            windowed[value] += 1
            if first is None:
                first = current_event()
            # Pinned to the first event: its window, whatever the current event.
            got.append((windowed[value][first].value(), windowed[value].value()))

    async with running(app):
        await source.publish(Batch(["a", "a", "a"], timestamps=[1.0, 2.0, 15.0]))
        await until(lambda: len(got) == 3)
    assert got == [(1, 1), (2, 2), (2, 1)]
    for refused in (windowed.keys, windowed.items, windowed.values, lambda: len(windowed)):
        with pytest.raises(NotImplementedError, match="use_index"):
            refused()
    with pytest.raises(NotImplementedError, match="not implemented"):
        windowed["a"].keys()


async def test_sliding_windows_around_each_event_and_relative_to_now():
    app = sabot.App(unique("win"))
    source = app.channel()
    closed = []
    sliding = make_table(app, "s").sliding(2, 3, idle_timeout=None,
                                          on_window_close=lambda k, v: closed.append((k, v)))
    tumbling_table = make_table(app, "t")
    by_now = tumbling_table.tumbling(10, idle_timeout=None).relative_to_now()
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            sliding[value] += 1
            by_now[value] += 1
            seen.append(value)

    async with running(app):
        await source.publish(Batch(["k", "k", "k", "k"], timestamps=[10.0, 15.0, 14.0, 12.0]))
        await until(lambda: len(seen) == 4)
        # Faust's sliding window: (t - before, t + after) for each event.
        assert sliding["k"][(8.0, 13.0)] == 1 and sliding["k"][(13.0, 18.0)] == 1
        # 15 closed (8, 13): its end 13 is behind the watermark 15. 14's window
        # (12, 17) is open; 12's, (10, 15), closed at 15 already: late.
        assert closed == [(("k", (8.0, 13.0)), 1)]
        assert sliding["k"][(12.0, 17.0)] == 1 and ("k", (10.0, 15.0)) not in sliding.table
        assert sliding.late_events == 1
        # relative_to_now: in a stream, "now" is the partition's latest event time,
        # so the events at 14 and 12 count in the window of 15 (and 10 in its own).
        assert by_start(tumbling_table) == {("k", 10.0): 4}


async def test_a_late_events_input_is_held_until_the_late_event_is_stored():
    app = sabot.App(unique("win"))
    source = app.channel()
    # A late channel whose reader is not reading yet: a send waits until it has read.
    late_channel = app.channel(maxsize=1, name="late")
    late_reader = late_channel.stream()
    windowed = make_table(app, "held").tumbling(10, idle_timeout=None,
                                                late_channel=late_channel)
    done = []
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value] += 1
            seen.append(value)

    async with running(app):
        await source.publish(Batch(["a", "a"], timestamps=[15.0, 1.0],
                                   on_done=lambda b: done.append("late batch")))
        await source.publish(Batch(["a"], timestamps=[16.0],
                                   on_done=lambda b: done.append("next batch")))
        await until(lambda: len(seen) == 3 and windowed.late_events == 1)
        await until(lambda: done == ["next batch"] or "late batch" in done,
                    what="the next batch released")
        assert done == ["next batch"], "the late event's batch was released before it was stored"
        assert await drain(late_reader, 1) == ["a"]
        await until(lambda: "late batch" in done, what="the late batch released once stored")


class Click(sabot.Record):
    user: str
    ts: float


async def test_relative_to_a_record_field():
    app = sabot.App(unique("win"))
    source = app.channel()
    table = make_table(app, "clicks")
    windowed = table.tumbling(10, idle_timeout=None).relative_to_field(Click.ts)
    seen = []

    @app.agent(source)
    async def count(stream):
        async for click in stream:
            windowed[click.user] += 1
            seen.append(click)

    async with running(app):
        await source.send_batch([Click(user="a", ts=3.0), Click(user="a", ts=14.0),
                                 Click(user="b", ts=15.0)])
        await until(lambda: len(seen) == 3)
        assert by_start(table) == {("a", 0.0): 1, ("a", 10.0): 1, ("b", 10.0): 1}
