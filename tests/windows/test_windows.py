"""Arrow windows on a memory channel: results equal a pyarrow reference, late rows
are counted and delivered, idle partitions close windows, partitions' watermarks.

Each test feeds out-of-order batches (with rows a minute late) through
``stream.window(...).agg(n=count(), total=sum("amount")).final()`` and
compares every emitted window with ``tests/windows/reference.py``, and the
late rows' ids with those the documented rule picks.
"""
import asyncio
import time

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.exceptions import ConfigurationError
from sabot.windows import (count, hopping, max, mean, min, session, sliding, sum, tumbling)
from tests.helpers import drain, until
from tests.windows import reference as ref


def _subscribe_dead_letters(channel):
    """The values and headers that reach ``channel``'s dead-letter channel."""
    letters = []
    sub = channel.dead_letter_channel().subscribe()

    def poll():
        while True:
            batch = sub.take()
            if batch is None:
                return letters
            for i in range(len(batch)):
                event = batch.event(i)
                letters.append((event.value, event.headers))
            sub.done(batch)
    return poll


async def _run(spec, batches, *, grace=0.0, **agg):
    """Feed ``batches`` through a window and end the stream; (windows, operator, letters)."""
    app = sabot.App("windows-test")
    channel = app.channel()
    stream = channel.stream()
    letters = _subscribe_dead_letters(channel)
    op = stream.window(spec, key="user", time="ts", grace=grace).agg(
        **(agg or {"n": count(), "total": sum("amount")}))
    results = []

    async def consume():
        async for closed in op.final():
            results.append(closed)

    task = asyncio.ensure_future(consume())
    for batch in batches:
        await channel.send_batch(batch)
    await channel.close()
    await asyncio.wait_for(task, 30)
    return results, op, letters()


def _late_ids(letters):
    return {value["id"] for value, headers in letters}


WINDOW_CASES = [
    ("tumbling", tumbling(10), lambda t: (t // 10_000 + 1) * 10_000,
     lambda b, late: ref.tumbling_ref(b, 10, late)),
    ("tumbling-fractional", tumbling(2.5), lambda t: (t // 2_500 + 1) * 2_500,
     lambda b, late: ref.tumbling_ref(b, 2.5, late)),
    ("hopping", hopping(10, 2.5), lambda t: ((t - 10_000) // 2_500 + 1) * 2_500 + 10_000,
     lambda b, late: ref.hopping_ref(b, 10, 2.5, late)),
    ("hopping-gcd", hopping(6, 4), lambda t: ((t - 6_000) // 4_000 + 1) * 4_000 + 6_000,
     lambda b, late: ref.hopping_ref(b, 6, 4, late)),
    ("sliding", sliding(10, resolution=1), lambda t: (t // 1_000 + 1) * 1_000,
     lambda b, late: ref.sliding_ref(b, 10, 1, late)),
]


@pytest.mark.parametrize("name,spec,first_end,expected", WINDOW_CASES,
                         ids=[c[0] for c in WINDOW_CASES])
@pytest.mark.parametrize("grace", [0.0, 3.0])
async def test_time_windows_equal_the_reference(name, spec, first_end, expected, grace):
    batches = ref.make_input()
    late = ref.late_rows(batches, first_end, grace)
    assert len(late) > 20  # the input really has late rows
    results, op, letters = await _run(spec, batches, grace=grace)
    assert ref.as_rows(results) == expected(batches, late)
    assert op.late_count == len(late)
    assert _late_ids(letters) == late
    for value, headers in letters:
        reason = headers["sabot-error"].decode()
        seconds = f"{value['ts']:.6f}".rstrip("0").rstrip(".")
        assert reason.startswith(f"late: event time {seconds} < watermark ")
        assert f"for {spec.kind} window [" in reason


@pytest.mark.parametrize("spec,expected", [
    (tumbling(10), lambda b, late: ref.tumbling_ref(b, 10, late)),
    (hopping(10, 2.5), lambda b, late: ref.hopping_ref(b, 10, 2.5, late)),
], ids=["tumbling", "hopping"])
async def test_partials_aggregated_and_compacted_often(monkeypatch, spec, expected):
    # Tiny thresholds: rows are aggregated every few batches (one pane or
    # several) and the partials compacted again and again; same windows.
    from sabot.windows import panes
    monkeypatch.setattr(panes, "_ROWS_AT", 150)
    monkeypatch.setattr(panes, "_COMPACT_AT", 40)
    batches = ref.make_input(n=2000, batch=50)
    first_end = {"tumbling": lambda t: (t // 10_000 + 1) * 10_000,
                 "hopping": lambda t: ((t - 10_000) // 2_500 + 1) * 2_500 + 10_000}[spec.kind]
    late = ref.late_rows(batches, first_end)
    results, op, letters = await _run(spec, batches)
    assert ref.as_rows(results) == expected(batches, late)
    assert _late_ids(letters) == late


async def test_batch_boundaries_do_not_change_the_windows():
    # Lateness is decided row by row, so the same rows cut into other
    # batches give the same windows and the same late rows.
    batches = ref.make_input(n=1500)
    table = pa.Table.from_batches(batches)
    recut = table.to_batches(max_chunksize=7)
    whole, op1, late1 = await _run(hopping(10, 5), batches)
    small, op2, late2 = await _run(hopping(10, 5), recut)
    assert ref.as_rows(whole) == ref.as_rows(small)
    assert _late_ids(late1) == _late_ids(late2) and op1.late_count == op2.late_count > 0


async def test_session_windows_equal_the_reference():
    batches = ref.make_input(n=2000, keys=40, jitter_ms=3000)
    late = ref.late_rows(batches, None, 1.0)
    assert late
    results, op, letters = await _run(session(2), batches, grace=1.0)
    assert ref.as_rows(results) == ref.session_ref(batches, 2, late)
    assert op.late_count == len(late) and _late_ids(letters) == late
    assert all(h["sabot-error"].startswith(b"late: event time ") for _, h in letters)


async def test_session_merges_an_out_of_order_bridge():
    # Two sessions of "a" 4 s apart (gap 3); an event between them, in the next
    # batch, merges them into one.
    first = pa.RecordBatch.from_pylist([
        {"user": "a", "ts": 100.0, "amount": 1}, {"user": "a", "ts": 104.0, "amount": 2},
        {"user": "b", "ts": 104.5, "amount": 7}])
    bridge = pa.RecordBatch.from_pylist([{"user": "a", "ts": 102.0, "amount": 4}])
    results, op, _ = await _run(session(3), [first, bridge], grace=5)
    assert ref.as_rows(results) == [("a", 100.0, 107.0, 3, 7), ("b", 104.5, 107.5, 1, 7)]


async def test_count_windows_equal_the_reference():
    batches = ref.make_input(n=1500, keys=9, batch=64)
    results, op, letters = await _run(count(7), batches)
    assert ref.as_rows(results) == ref.count_ref(batches, 7)
    assert op.late_count == 0 and letters == []


async def test_count_windows_close_on_the_nth_event_without_watermark():
    app = sabot.App("count-test")
    channel = app.channel()
    it = channel.stream().window(count(3), key="user", time="ts").agg(n=count()).final()
    await channel.send_batch(pa.RecordBatch.from_pylist(
        [{"user": "a", "ts": float(i)} for i in range(5)]))
    closed = await drain(it, 1)
    assert closed[0].to_pylist() == [
        {"user": "a", "window_start": 0.0, "window_end": 2.0, "n": 3}]


async def test_more_aggregations_and_fractional_times():
    rows = [{"user": "a", "ts": 0.25, "amount": 4.0}, {"user": "a", "ts": 0.75, "amount": None},
            {"user": "a", "ts": 0.5, "amount": 1.0}, {"user": "b", "ts": 1.25, "amount": 3.0}]
    results, op, _ = await _run(tumbling(1), [pa.RecordBatch.from_pylist(rows)],
                                n=count(), filled=count("amount"), lo=min("amount"),
                                hi=max("amount"), avg=mean("amount"), total=sum("amount"))
    got = pa.Table.from_batches(results).to_pylist()
    assert got == [
        {"user": "a", "window_start": 0.0, "window_end": 1.0, "n": 3, "filled": 2,
         "lo": 1.0, "hi": 4.0, "avg": 2.5, "total": 5.0},
        {"user": "b", "window_start": 1.0, "window_end": 2.0, "n": 1, "filled": 1,
         "lo": 3.0, "hi": 3.0, "avg": 3.0, "total": 3.0}]


async def test_timestamp_column_windows_are_timestamps():
    import datetime
    utc = datetime.timezone.utc
    base = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=utc)
    rows = pa.RecordBatch.from_pydict({
        "user": ["a", "b", "a"],
        "ts": pa.array([base, base + datetime.timedelta(seconds=5),
                        base + datetime.timedelta(seconds=61)], pa.timestamp("ms", "UTC")),
        "amount": [1, 2, 3]})
    results, _, _ = await _run(tumbling(60), [rows])
    table = pa.Table.from_batches(results)
    assert table.schema.field("window_start").type == pa.timestamp("ms", "UTC")
    assert table.to_pylist()[0]["window_start"] == base
    assert [(r["user"], r["n"]) for r in table.to_pylist()] == [("a", 1), ("b", 1), ("a", 1)]


async def test_current_yields_updated_windows_per_batch():
    app = sabot.App("current-test")
    channel = app.channel()
    op = channel.stream().window(hopping(10, 5), key="user", time="ts").agg(
        n=count(), total=sum("amount"))
    it = op.current()
    await channel.send_batch(pa.RecordBatch.from_pylist(
        [{"user": "a", "ts": 11.0, "amount": 1}, {"user": "b", "ts": 12.0, "amount": 2}]))
    first = (await drain(it, 1))[0].to_pylist()
    assert [(r["user"], r["window_start"], r["n"]) for r in first] == [
        ("a", 5.0, 1), ("b", 5.0, 1), ("a", 10.0, 1), ("b", 10.0, 1)]
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 13.0, "amount": 5}]))
    second = (await drain(it, 1))[0].to_pylist()
    assert [(r["user"], r["window_start"], r["n"], r["total"]) for r in second] == [
        ("a", 5.0, 2, 6), ("a", 10.0, 2, 6)]


async def test_late_rows_go_to_a_late_channel_when_given():
    app = sabot.App("late-test")
    channel = app.channel()
    late_channel = app.channel()
    late_sub = late_channel.subscribe()
    op = channel.stream().window(tumbling(10), key="user", time="ts",
                                 late=late_channel).agg(n=count())
    it = op.final()
    await channel.send_batch(pa.RecordBatch.from_pylist(
        [{"user": "a", "ts": 5.0}, {"user": "a", "ts": 25.0}]))
    assert (await drain(it, 1))[0].to_pylist() == [
        {"user": "a", "window_start": 0.0, "window_end": 10.0, "n": 1}]
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 3.0}]))
    await channel.close()
    rest = [b async for b in it]
    assert [r["window_start"] for b in rest for r in b.to_pylist()] == [20.0]
    assert op.late_count == 1
    batch = late_sub.take()
    event = batch.event(0)
    assert event.value == {"user": "a", "ts": 3.0}
    assert event.headers["sabot-error"] == (
        b"late: event time 3 < watermark 25 for tumbling window [0, 10) "
        b"(closed at its end plus grace 0)")


async def test_idle_timeout_closes_windows_without_new_events():
    app = sabot.App("idle-test")
    channel = app.channel()
    op = channel.stream().window(tumbling(1), key="user", time="ts",
                                 idle_timeout=0.2).agg(n=count())
    it = op.final()
    await channel.send_batch(pa.RecordBatch.from_pylist(
        [{"user": "a", "ts": 100.1}, {"user": "a", "ts": 100.2}]))
    sent = time.monotonic()
    # Nothing else is sent: the window [100, 101) closes once the idle
    # partition's watermark (100.2 + seconds since) passes 101.
    closed = await asyncio.wait_for(it.__anext__(), 10)
    assert time.monotonic() - sent >= 0.75  # event time 0.8 s on, after 0.2 s idle
    assert closed.to_pylist() == [{"user": "a", "window_start": 100.0, "window_end": 101.0,
                                   "n": 2}]


async def test_without_idle_timeout_the_last_window_waits_for_an_event():
    app = sabot.App("not-idle-test")
    channel = app.channel()
    op = channel.stream().window(tumbling(1), key="user", time="ts").agg(n=count())
    it = op.final()
    pending = asyncio.ensure_future(it.__anext__())
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 100.1}]))
    await until(lambda: op.rows_in == 1, what="the row folded in")
    assert not pending.done()
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 101.5}]))
    closed = await asyncio.wait_for(pending, 10)
    assert closed.to_pylist()[0]["n"] == 1


def _partition_batch(partition, offset, rows):
    record_batch = pa.RecordBatch.from_pylist(rows)
    return Batch(record_batch, positions=[("t", partition, offset + i) for i in range(len(rows))])


async def test_watermark_is_the_minimum_over_partitions():
    app = sabot.App("partitions-test")
    channel = app.channel()
    op = channel.stream().window(tumbling(10), key="user", time="ts").agg(n=count())
    it = op.final()
    pending = asyncio.ensure_future(it.__anext__())
    await channel.publish(_partition_batch(1, 0, [{"user": "b", "ts": 6.0}]))
    await channel.publish(_partition_batch(0, 0, [{"user": "a", "ts": 5.0},
                                                  {"user": "a", "ts": 55.0}]))
    await until(lambda: op.rows_in == 3, what="both partitions read")
    # Partition 1 is at 6: nothing can close although partition 0 is at 55.
    assert op.watermark == 6.0 and not pending.done()
    await channel.publish(_partition_batch(1, 1, [{"user": "b", "ts": 31.0}]))
    closed = await asyncio.wait_for(pending, 10)
    assert op.watermark == 31.0
    assert [(r["user"], r["window_start"]) for r in closed.to_pylist()] == [
        ("a", 0.0), ("b", 0.0)]
    # An event of partition 1 for a closed window is late, whatever partition 0 says.
    pending = asyncio.ensure_future(it.__anext__())
    await channel.publish(_partition_batch(1, 2, [{"user": "b", "ts": 9.0}]))
    await until(lambda: op.late_count == 1, what="the late row counted")
    pending.cancel()


async def test_idle_partition_stops_holding_the_watermark_back():
    app = sabot.App("idle-partition-test")
    channel = app.channel()
    op = channel.stream().window(tumbling(10), key="user", time="ts",
                                 idle_timeout=0.3).agg(n=count())
    it = op.final()
    await channel.publish(_partition_batch(1, 0, [{"user": "b", "ts": 6.0}]))
    await channel.publish(_partition_batch(0, 0, [{"user": "a", "ts": 5.0}]))
    # Partition 0 keeps moving; partition 1 falls silent and, once idle, no
    # longer holds the minimum: the window [0, 10) closes.
    pending = asyncio.ensure_future(it.__anext__())
    for i in range(1, 200):
        await channel.publish(_partition_batch(0, i, [{"user": "a", "ts": 30.0}]))
        if pending.done():
            break
        await asyncio.sleep(0.05)
    closed = await asyncio.wait_for(pending, 10)
    assert [(r["user"], r["window_start"], r["n"]) for r in closed.to_pylist()] == [
        ("a", 0.0, 1), ("b", 0.0, 1)]
    assert op.watermark == 30.0


async def test_rows_that_cannot_be_windowed_go_to_the_dead_letter_channel():
    app = sabot.App("invalid-test")
    channel = app.channel()
    letters = _subscribe_dead_letters(channel)
    op = channel.stream().window(tumbling(10), key="user", time="ts").agg(
        n=count(), total=sum("amount"))
    it = op.final()
    await channel.send_batch([
        {"user": "a", "ts": 1.0, "amount": 1},
        {"user": "a", "ts": None, "amount": 2},
        {"user": "a", "ts": "yesterday", "amount": 3},
        "not a mapping",
        {"user": "a", "ts": 2.0, "amount": 4},
    ])
    await channel.close()
    windows = [b async for b in it]
    assert ref.as_rows(windows) == [("a", 0.0, 10.0, 2, 5)]
    assert op.invalid_count == 3
    reasons = sorted(h["sabot-error"].decode() for _, h in letters())
    assert reasons == ["window: no event time (column 'ts' is null)",
                       "window: the value is a str, not a mapping",
                       "window: ts is a str, earlier values are float"]


async def test_message_key_and_timestamp_by_default():
    app = sabot.App("envelope-test")
    channel = app.channel()
    op = channel.stream().window(tumbling(10)).agg(n=count())
    it = op.final()
    batch = Batch([{"x": 1}, {"x": 2}, {"x": 3}], keys=[b"k1", b"k2", b"k1"],
                  timestamps=[1.0, 2.0, 3.0])
    await channel.publish(batch)
    await channel.close()
    rows = [r for b in [x async for x in it] for r in b.to_pylist()]
    assert rows == [{"key": b"k1", "window_start": 0.0, "window_end": 10.0, "n": 2},
                    {"key": b"k2", "window_start": 0.0, "window_end": 10.0, "n": 1}]


async def test_a_batch_is_released_once_folded_in():
    app = sabot.App("ack-test")
    channel = app.channel()
    op = channel.stream().window(tumbling(10), key="user", time="ts").agg(n=count())
    it = op.final()
    done = []
    # What the window state held when the batch was released (acknowledged).
    first = Batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 1.0}]),
                  on_done=lambda b: done.append((op.rows_in, op.open_rows)))
    pending = asyncio.ensure_future(it.__anext__())
    await channel.publish(first)
    # Folded into the state, and the operator waits for the next batch: released.
    await until(lambda: done, what="the batch released")
    assert done == [(1, 1)]
    pending.cancel()


def test_bad_specs_and_arguments_are_refused():
    with pytest.raises(ConfigurationError, match="must be positive"):
        tumbling(0)
    with pytest.raises(ConfigurationError, match="step is longer"):
        hopping(5, 10)
    with pytest.raises(ConfigurationError, match="whole number of resolution"):
        sliding(10, resolution=3)
    with pytest.raises(ConfigurationError, match="positive int"):
        count(0)
    with pytest.raises(ConfigurationError, match="windows"):
        hopping(100, 0.001)
    app = sabot.App("bad-args")
    stream = app.channel().stream()
    with pytest.raises(ConfigurationError, match="grace, lateness and idle_timeout"):
        stream.window(count(5), grace=1)
    with pytest.raises(ConfigurationError, match="output column"):
        stream.window(tumbling(1), key="user").agg(user=count())
    with pytest.raises(ConfigurationError, match="aggregation"):
        stream.window(tumbling(1)).agg(n="count")
    with pytest.raises(ConfigurationError, match="column name"):
        stream.window(tumbling(1), key=3)
    with pytest.raises(TypeError, match="reads the channel directly"):
        stream.map(lambda v: v).window(tumbling(1))


async def test_current_of_sessions_and_count_windows():
    app = sabot.App("current-more")
    sessions_in, counts_in = app.channel(), app.channel()
    sessions = sessions_in.stream().window(session(5), key="user", time="ts", grace=10).agg(
        n=count()).current()
    counts = counts_in.stream().window(count(2), key="user", time="ts").agg(
        n=count()).current()
    first = pa.RecordBatch.from_pylist([{"user": "a", "ts": 10.0}, {"user": "a", "ts": 20.0}])
    bridge = pa.RecordBatch.from_pylist([{"user": "a", "ts": 14.0}, {"user": "a", "ts": 18.0}])
    for channel in (sessions_in, counts_in):
        await channel.send_batch(first)
    got = [(r["window_start"], r["window_end"], r["n"])
           for r in (await drain(sessions, 1))[0].to_pylist()]
    assert got == [(10.0, 15.0, 1), (20.0, 25.0, 1)]
    got = [(r["window_start"], r["n"]) for r in (await drain(counts, 1))[0].to_pylist()]
    assert got == [(10.0, 2)]  # complete, reported as updated
    for channel in (sessions_in, counts_in):
        await channel.send_batch(bridge)
    # 14 and 18 bridge the two sessions into one of four events.
    got = [(r["window_start"], r["window_end"], r["n"])
           for r in (await drain(sessions, 1))[0].to_pylist()]
    assert got == [(10.0, 25.0, 4)]
    got = [(r["window_start"], r["window_end"], r["n"])
           for r in (await drain(counts, 1))[0].to_pylist()]
    assert got == [(14.0, 18.0, 2)]


async def test_sliding_windows_exist_only_where_there_are_events():
    rows = [{"user": "a", "ts": 100.5, "amount": 1}, {"user": "a", "ts": 103.2, "amount": 2},
            {"user": "a", "ts": 190.0, "amount": 4}]
    results, _, _ = await _run(sliding(5), [pa.RecordBatch.from_pylist(rows)])
    assert ref.as_rows(results) == [("a", 96.0, 101.0, 1, 1), ("a", 99.0, 104.0, 2, 3),
                                    ("a", 186.0, 191.0, 1, 4)]


async def test_whole_numbers_then_fractions_widen_and_other_types_are_refused():
    app = sabot.App("types-test")
    channel = app.channel()
    letters = _subscribe_dead_letters(channel)
    op = channel.stream().window(tumbling(10), key="user", time="ts").agg(
        n=count(), total=sum("amount"), top=max("amount"))
    it = op.final()
    await channel.send_batch([{"user": "a", "ts": 1.0, "amount": 2}])
    await channel.send_batch([{"user": "a", "ts": 2.0, "amount": 0.5}])
    await channel.send_batch([{"user": 7, "ts": 3.0, "amount": 1}])  # a key of another type
    await channel.close()
    rows = [r for b in [x async for x in it] for r in b.to_pylist()]
    assert rows == [{"user": "a", "window_start": 0.0, "window_end": 10.0, "n": 2,
                     "total": 2.5, "top": 2.0}]
    assert op.invalid_count == 1
    assert [h["sabot-error"] for _, h in letters()] == [
        b"window: column 'user' is int64, earlier batches had string"]


async def test_a_late_row_the_late_channel_refuses_goes_to_the_dead_letter_channel():
    app = sabot.App("late-refused")
    channel = app.channel()
    letters = _subscribe_dead_letters(channel)
    strict = app.channel(schema=pa.schema([("other", pa.int64())]))
    op = channel.stream().window(tumbling(10), key="user", time="ts", late=strict).agg(
        n=count())
    it = op.final()
    await channel.send_batch([{"user": "a", "ts": 25.0}])
    await channel.send_batch([{"user": "a", "ts": 3.0}])
    await channel.close()
    assert [r["n"] for b in [x async for x in it] for r in b.to_pylist()] == [1]
    assert op.late_count == 1
    ((value, headers),) = letters()
    assert value == {"user": "a", "ts": 3.0}
    reason = headers["sabot-error"].decode()
    assert reason.startswith("late: event time 3 < watermark 25 for tumbling window [0, 10)")
    assert "the late channel" in reason and "refused it: SchemaError" in reason


async def test_an_agent_with_several_instances_cannot_window():
    app = sabot.App("concurrency-test")
    channel = app.channel()
    errors = []

    @app.agent(channel, concurrency=2)
    async def windowed(stream):
        try:
            stream.window(tumbling(10), key="user", time="ts")
        except ConfigurationError as exc:
            errors.append(str(exc))
        async for _ in stream:
            pass

    await app.start()
    try:
        await until(lambda: len(errors) == 2, what="both instances refused")
    finally:
        await app.stop()
    assert "concurrency=1" in errors[0]


async def test_current_of_sliding_windows():
    app = sabot.App("current-sliding")
    channel = app.channel()
    it = channel.stream().window(sliding(5), key="user", time="ts", grace=10).agg(
        n=count()).current()
    await channel.send_batch(pa.RecordBatch.from_pylist(
        [{"user": "a", "ts": 100.5}, {"user": "a", "ts": 103.2}]))
    got = [(r["window_start"], r["window_end"], r["n"]) for r in (await drain(it, 1))[0].to_pylist()]
    assert got == [(96.0, 101.0, 1), (99.0, 104.0, 2)]
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 104.5}]))
    got = [(r["window_start"], r["window_end"], r["n"]) for r in (await drain(it, 1))[0].to_pylist()]
    assert got == [(100.0, 105.0, 3)]


async def test_nested_keys_are_refused_not_crashed_on():
    app = sabot.App("nested-test")
    channel = app.channel()
    letters = _subscribe_dead_letters(channel)
    op = channel.stream().window(tumbling(10), key="user", time="ts").agg(n=count())
    it = op.final()
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": ["a", "b"], "ts": 1.0}]))
    await channel.send_batch(pa.RecordBatch.from_pylist([{"user": "a", "ts": 2.0}]))
    await channel.close()
    assert [r["n"] for b in [x async for x in it] for r in b.to_pylist()] == [1]
    assert [h["sabot-error"] for _, h in letters()] == [
        b"window: column 'user' is list<item: string>: nested values cannot be grouped "
        b"or aggregated"]
