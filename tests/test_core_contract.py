"""An independent contract suite for the core in-memory API (issue 3).

Written from the public API and the docs (README, DESIGN, docs/*.md and the
docstrings), not from the other tests. Every test runs on the Cython fast path
and, with ``SABOT_PURE_PYTHON=1``, on the pure-Python twins.

Areas: ordering under interleaved send/send_batch/publish, fan-out with
subscribers joining and leaving, weakly held subscribers, values passing
through the iterators unchanged, cancellation around ``__anext__``,
backpressure, close, schema errors, the batch acknowledgement (``on_done``)
with several subscribers, concurrency, take(), delivery futures and crashes,
and ``agent.test_context()``.
"""
import asyncio
import gc
import logging

import pyarrow as pa
import pytest

import sabot
from sabot import AgentError, ChannelClosed, SchemaError
from sabot._fastpath import Batch

SCHEMA = pa.schema([("sym", pa.string()), ("px", pa.float64())])


@pytest.fixture
def app():
    return sabot.App("core-contract", agent_restart_backoff=0.01)


@pytest.fixture(autouse=True)
def _quiet_agent_logs():
    # Crash tests log tracebacks on purpose.
    logger = logging.getLogger("sabot")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


async def until(predicate, timeout=2.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def drain(it, n, timeout=2.0):
    """The next ``n`` items of an async iterator."""
    async def run():
        return [await it.__anext__() for _ in range(n)]
    return await asyncio.wait_for(run(), timeout)


async def settle(rounds=5):
    for _ in range(rounds):
        await asyncio.sleep(0)


class Acks:
    """Counts on_done calls per batch label."""

    def __init__(self):
        self.calls = []

    def batch(self, payload, label):
        return Batch(payload, on_done=lambda b: self.calls.append(label))

    def count(self, label):
        return self.calls.count(label)


# -- ordering and fan-out ------------------------------------------------------

async def test_interleaved_send_send_batch_publish_keep_order_for_every_subscriber(app):
    ch = app.channel()
    its = [ch.__aiter__() for _ in range(3)]
    expected = []
    n = 0
    for round_ in range(20):
        for _ in range(round_ % 4):
            await ch.send(value=n)
            expected.append(n)
            n += 1
        batch = list(range(n, n + round_ % 3 + 1))
        await ch.send_batch(batch)
        expected.extend(batch)
        n += len(batch)
        await ch.send(value=n)
        expected.append(n)
        n += 1
        await ch.publish(Batch([n, n + 1]))
        expected.extend([n, n + 1])
        n += 2
    for it in its:
        assert await drain(it, len(expected)) == expected
        assert it.poll("nothing") == "nothing"


async def test_interleaving_with_a_reader_that_takes_the_open_batch_midway(app):
    ch = app.channel()
    it = ch.__aiter__()
    other = ch.__aiter__()
    got = []
    for i in range(50):
        await ch.send(value=i)
        if i % 7 == 3:
            got.extend(await drain(it, len(range(len(got), i + 1))))
        if i % 11 == 5:
            await ch.send_batch([("batch", i)])
    got.extend(await drain(it, 50 + 5 - len(got)))
    expected = []
    for i in range(50):
        expected.append(i)
        if i % 11 == 5:
            expected.append(("batch", i))
    assert got == expected
    assert await drain(other, len(expected)) == expected


async def test_subscribers_joining_mid_stream_see_exactly_what_follows(app):
    ch = app.channel()
    first = ch.__aiter__()
    await ch.send(value=0)
    await ch.send(value=1)           # still in the open batch
    second = ch.__aiter__()          # joins mid-batch
    await ch.send(value=2)
    await ch.send_batch([3, 4])
    third = ch.__aiter__()
    await ch.send(value=5)
    assert await drain(first, 6) == [0, 1, 2, 3, 4, 5]
    assert await drain(second, 4) == [2, 3, 4, 5]
    assert await drain(third, 1) == [5]
    for it in (first, second, third):
        assert it.poll("nothing") == "nothing"


async def test_subscriber_leaving_mid_stream_does_not_disturb_the_others(app):
    ch = app.channel(maxsize=8)
    stay = ch.__aiter__()
    leave = ch.stream()
    leave_it = leave.__aiter__()
    assert ch.subscriber_count == 2
    await ch.send_batch([0, 1, 2])
    assert await drain(leave_it, 2) == [0, 1]
    leave.close()
    assert ch.subscriber_count == 1
    for i in range(3, 6):
        await ch.send(value=i)
    assert await drain(stay, 6) == list(range(6))
    # Gone for good: no more values for the closed stream, and it never blocks.
    for i in range(6, 40):
        await asyncio.wait_for(ch.send(value=i), 1)
        assert await drain(stay, 1) == [i]


async def test_fan_out_to_sixteen_agents_and_a_clone_iterator(app):
    ch = app.channel(maxsize=1000)
    seen = {i: [] for i in range(16)}
    for i in range(16):
        @app.agent(ch, name=f"fan-{i}")
        async def collect(stream, i=i):
            async for value in stream:
                seen[i].append(value)
    clone_it = ch.clone().__aiter__()
    await app.start()
    try:
        for k in range(0, 300, 3):
            await ch.send(value=k)
            await ch.send_batch([k + 1, k + 2])
        await until(lambda: all(len(v) == 300 for v in seen.values()))
        assert all(v == list(range(300)) for v in seen.values())
        assert await drain(clone_it, 300) == list(range(300))
    finally:
        await app.stop()


# -- weakly held subscribers -----------------------------------------------

async def test_a_dropped_iterator_unsubscribes_and_never_blocks_senders(app):
    ch = app.channel(maxsize=2)
    it = ch.__aiter__()
    await ch.send(value=1)
    assert ch.subscriber_count == 1
    del it
    gc.collect()
    assert ch.subscriber_count == 0
    for i in range(100):
        await asyncio.wait_for(ch.send(value=i), 1)


async def test_a_dropped_stream_unsubscribes(app):
    ch = app.channel(maxsize=2)
    stream = ch.stream()
    assert ch.subscriber_count == 1
    del stream
    gc.collect()
    assert ch.subscriber_count == 0
    await asyncio.wait_for(ch.send_batch(list(range(10))), 1)


async def test_dropping_the_lagging_subscriber_frees_a_waiting_sender(app):
    ch = app.channel(maxsize=3)
    keep = ch.__aiter__()
    lagging = ch.__aiter__()
    sender = asyncio.ensure_future(ch.send_batch([1, 2, 3, 4]))
    await settle()
    assert not sender.done()              # both lag by 4 >= maxsize
    assert await drain(keep, 4) == [1, 2, 3, 4]
    assert keep.poll("nothing") == "nothing"  # releases the batch
    await settle()
    assert not sender.done()              # the other still lags
    del lagging
    gc.collect()
    await asyncio.wait_for(sender, 1)
    assert ch.subscriber_count == 1


async def test_a_dropped_iterator_in_the_middle_of_a_batch_releases_it(app):
    ch = app.channel()
    acks = Acks()
    it = ch.__aiter__()
    await ch.publish(acks.batch([1, 2, 3], "b"))
    assert await drain(it, 1) == [1]
    assert acks.calls == []
    del it
    gc.collect()
    assert acks.calls == ["b"]


# -- values pass through unchanged ----------------------------------------------

def _odd_values(loop):
    return [(1, 2), (), None, (None,), ValueError("as a value"),
            StopIteration(7), StopAsyncIteration(), GeneratorExit(),
            loop.create_future(), [1, [2]], {"k": (3,)}, b"", 0, False]


async def test_odd_values_come_out_of_the_value_iterator_as_the_same_objects(app):
    ch = app.channel()
    it = ch.__aiter__()
    values = _odd_values(asyncio.get_running_loop())
    for value in values:                       # one at a time: the open batch
        await ch.send(value=value)
    await ch.send_batch(values)                # a whole list batch
    out = await drain(it, 2 * len(values))
    assert len(out) == 2 * len(values)
    assert all(a is b for a, b in zip(out, values + values))


async def test_odd_values_survive_the_waiting_path_of_the_iterator(app):
    ch = app.channel()
    it = ch.__aiter__()
    values = _odd_values(asyncio.get_running_loop())
    out = []

    async def reader():
        for _ in values:
            out.append(await it.__anext__())
    task = asyncio.ensure_future(reader())
    for value in values:
        await settle(2)                         # the reader is suspended each time
        await ch.send(value=value)
    await asyncio.wait_for(task, 1)
    assert all(a is b for a, b in zip(out, values)) and len(out) == len(values)


async def test_odd_values_in_async_for_and_events(app):
    ch = app.channel()
    stream = ch.stream()
    events = stream.events()
    values = _odd_values(asyncio.get_running_loop())
    for i, value in enumerate(values):
        await ch.send(key=(i, None), value=value, headers={"i": str(i).encode()})
    await ch.close()
    got = [event async for event in events]
    assert [e.value for e in got] == values
    assert all(e.value is v for e, v in zip(got, values))
    assert [e.key for e in got] == [(i, None) for i in range(len(values))]
    assert [e.headers for e in got] == [{"i": str(i).encode()} for i in range(len(values))]


async def test_agent_yielding_odd_values_hands_them_to_sinks_unchanged(app):
    values = _odd_values(asyncio.get_running_loop())
    got = []

    @app.agent(sink=[got.append])
    async def echo(stream):
        async for value in stream:
            yield value
    await app.start()
    try:
        await echo.send_batch(list(values))
        await until(lambda: len(got) == len(values))
        assert all(a is b for a, b in zip(got, values))
    finally:
        await app.stop()


# -- cancellation around __anext__ --------------------------------------------

@pytest.mark.parametrize("kind", ["values", "events", "raw_batches"])
async def test_cancelling_a_woken_anext_loses_nothing(app, kind):
    ch = app.channel()
    stream = ch.stream()
    it = {"values": stream.__aiter__, "events": stream.events,
          "raw_batches": stream.raw_batches}[kind]()
    for round_ in range(5):
        task = asyncio.ensure_future(it.__anext__())
        await settle()                     # suspended on an empty queue
        await ch.send(value=(round_, None))   # wakes it ...
        task.cancel()                      # ... and cancels it before it runs
        with pytest.raises(asyncio.CancelledError):
            await task
        item = await asyncio.wait_for(it.__anext__(), 1)
        value = {"values": lambda x: x, "events": lambda x: x.value,
                 "raw_batches": lambda x: x.payload[0]}[kind](item)
        assert value == (round_, None)


async def test_wait_for_timeouts_around_anext_never_lose_or_reorder_values(app):
    ch = app.channel(maxsize=64)
    it = ch.__aiter__()
    n = 600

    async def producer():
        for i in range(n):
            await ch.send(value=i)
            if i % 5 == 0:
                await asyncio.sleep(0.0005 if i % 15 == 0 else 0)
        await ch.close()
    prod = asyncio.ensure_future(producer())
    got, timeouts = [], 0
    while True:
        try:
            got.append(await asyncio.wait_for(it.__anext__(), 0.0002))
        except asyncio.TimeoutError:
            timeouts += 1
        except StopAsyncIteration:
            break
    await prod
    assert got == list(range(n))


async def test_get_timeout_then_the_value_is_still_delivered(app):
    ch = app.channel()
    await ch.put("first")
    assert await ch.get(timeout=1) == "first"
    with pytest.raises(asyncio.TimeoutError):
        await ch.get(timeout=0.01)
    await ch.send(value=None)
    await ch.send(value=("t", 1))
    assert await ch.get(timeout=1) is None
    assert await ch.get(timeout=1) == ("t", 1)


async def test_get_raises_channel_closed_only_after_draining(app):
    ch = app.channel()
    await ch.put(1)
    await ch.put(2)
    await ch.close()
    assert await ch.get(timeout=1) == 1
    assert await ch.get() == 2
    with pytest.raises(ChannelClosed):
        await ch.get(timeout=1)


async def test_a_cancelled_consumer_task_leaves_the_value_for_the_next_reader(app):
    ch = app.channel()
    it = ch.__aiter__()

    async def consume_one():
        async for value in it:
            return value
    task = asyncio.ensure_future(consume_one())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ch.send(value="kept")
    assert await drain(it, 1) == ["kept"]


# -- backpressure ----------------------------------------------------------

async def test_sender_waits_once_a_subscriber_lags_by_exactly_maxsize(app):
    ch = app.channel(maxsize=4)
    it = ch.__aiter__()
    sent = []

    async def producer():
        for i in range(12):
            await ch.send(value=i)
            sent.append(i)
    task = asyncio.ensure_future(producer())
    await asyncio.sleep(0.05)
    # values 0..3 are queued for the reader; the send that made the lag 4 waits
    assert sent == [0, 1, 2]
    assert it.subscriber.lag == 4
    assert await drain(it, 4) == [0, 1, 2, 3]
    await asyncio.sleep(0.05)
    # The reader took the batch and holds it: one more value may wait for it
    # (queued), and the sender waits again.
    assert sent == [0, 1, 2, 3]
    assert it.subscriber.lag == 5
    assert await drain(it, 1) == [4]     # moving past the first batch frees the sender
    await asyncio.sleep(0.05)
    assert sent[:5] == [0, 1, 2, 3, 4] and len(sent) < 12
    assert await drain(it, 7) == list(range(5, 12))
    assert it.poll("nothing") == "nothing"   # moves past the last batch
    await asyncio.wait_for(task, 1)
    assert sent == list(range(12))


async def test_lag_never_exceeds_maxsize_with_one_value_sends(app):
    ch = app.channel(maxsize=10)
    slow = ch.__aiter__()
    fast = ch.__aiter__()
    peak = 0

    async def producer():
        for i in range(300):
            await ch.send(value=i)
        await ch.close()

    async def reader(it, delay_every):
        nonlocal peak
        out = []
        async for value in it:
            peak = max(peak, it.subscriber.lag)
            out.append(value)
            if value % delay_every == 0:
                await asyncio.sleep(0)
        return out
    prod = asyncio.ensure_future(producer())
    got_slow, got_fast = await asyncio.wait_for(
        asyncio.gather(reader(slow, 3), reader(fast, 50)), 5)
    await prod
    assert got_slow == got_fast == list(range(300))
    # maxsize values, plus the one value that may wait while the reader holds
    # the full batch it took.
    assert peak <= 10 + 1


async def test_send_batch_larger_than_maxsize_waits_then_completes(app):
    ch = app.channel(maxsize=5)
    it = ch.__aiter__()
    task = asyncio.ensure_future(ch.send_batch(list(range(20))))
    await settle()
    assert not task.done()
    assert await drain(it, 20) == list(range(20))
    assert it.poll("nothing") == "nothing"
    await asyncio.wait_for(task, 1)


async def test_no_deadlock_schema_channel_small_maxsize_and_concurrent_agent(app):
    ch = app.channel(schema=SCHEMA, maxsize=7, batch_size=5, linger=0.005)
    seen = []

    @app.agent(ch, concurrency=3)
    async def consume(stream):
        async for row in stream:
            seen.append(row["px"])
            if len(seen) % 4 == 0:
                await asyncio.sleep(0)
    await app.start()
    try:
        async def produce():
            for i in range(203):
                await ch.send(value={"sym": "A", "px": float(i)})
            await ch.send_batch([{"sym": "B", "px": -1.0}] * 9)
            await ch.close()
        await asyncio.wait_for(produce(), 5)
        await consume.join(5)
        assert sorted(seen) == [-1.0] * 9 + [float(i) for i in range(203)]
    finally:
        await app.stop()


async def test_no_deadlock_when_a_schema_channel_batch_exceeds_maxsize(app):
    # batch_size > maxsize: one published batch is already "full".
    ch = app.channel(schema=SCHEMA, maxsize=3, batch_size=10, linger=0.005)
    it = ch.__aiter__()
    got = []

    async def reader():
        async for row in it:
            got.append(row["px"])
    task = asyncio.ensure_future(reader())
    for i in range(45):
        await asyncio.wait_for(ch.send(value={"sym": "x", "px": float(i)}), 2)
    await asyncio.wait_for(ch.close(), 2)
    await asyncio.wait_for(task, 2)
    assert got == [float(i) for i in range(45)]


async def test_concurrent_agent_instances_never_deadlock_the_sender(app):
    ch = app.channel(maxsize=3)
    seen = []

    @app.agent(ch, concurrency=4)
    async def slow(stream):
        async for value in stream:
            await asyncio.sleep(0.001)
            seen.append(value)
    await app.start()
    try:
        async def produce():
            for i in range(100):
                if i % 10 == 0:
                    await ch.send_batch([i])
                else:
                    await ch.send(value=i)
        await asyncio.wait_for(produce(), 5)
        await until(lambda: len(seen) == 100)
        assert sorted(seen) == list(range(100))
    finally:
        await app.stop()


# -- close -------------------------------------------------------------------

async def test_close_lets_readers_drain_then_stops_them(app):
    ch = app.channel()
    its = [ch.__aiter__() for _ in range(3)]
    await ch.send_batch([1, 2])
    await ch.send(value=3)
    await ch.close()
    assert ch.closed
    for it in its:
        assert [v async for v in it] == [1, 2, 3]
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()


async def test_close_wakes_a_reader_that_is_waiting(app):
    ch = app.channel()
    it = ch.__aiter__()
    got = []

    async def reader():
        async for value in it:
            got.append(value)
    task = asyncio.ensure_future(reader())
    await settle()
    await ch.send(value=1)
    await settle()
    await ch.close()
    await asyncio.wait_for(task, 1)
    assert got == [1]


async def test_a_sender_waiting_for_capacity_gets_channel_closed(app):
    ch = app.channel(maxsize=2)
    it = ch.__aiter__()
    await ch.send(value=1)
    waiting = asyncio.ensure_future(ch.send(value=2))
    waiting_batch = asyncio.ensure_future(ch.send_batch([3]))
    await settle()
    assert not waiting.done() and not waiting_batch.done()
    await ch.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(waiting_batch, 1)
    drained = [v async for v in it]
    assert drained[0] == 1


async def test_everything_refuses_a_closed_channel(app):
    ch = app.channel()
    schema_ch = app.channel(schema=SCHEMA)
    await ch.close()
    await schema_ch.close()
    with pytest.raises(ChannelClosed):
        await ch.send(value=1)
    with pytest.raises(ChannelClosed):
        await ch.send_batch([1])
    with pytest.raises(ChannelClosed):
        await ch.publish(Batch([1]))
    with pytest.raises(ChannelClosed):
        await schema_ch.send(value={"sym": "a", "px": 1.0})
    with pytest.raises(ChannelClosed):
        ch.subscribe()
    assert issubclass(ChannelClosed, RuntimeError)


async def test_close_of_a_schema_channel_flushes_gathered_rows_first(app):
    ch = app.channel(schema=SCHEMA, linger=60)
    stream = ch.stream()
    batches = stream.batches()
    await ch.send(value={"sym": "a", "px": 1.0})
    await ch.send(value={"sym": "b", "px": 2.0})
    await ch.close()
    got = [b async for b in batches]
    assert len(got) == 1
    assert isinstance(got[0], pa.RecordBatch)
    assert got[0].to_pylist() == [{"sym": "a", "px": 1.0}, {"sym": "b", "px": 2.0}]


async def test_agent_finishes_when_its_channel_closes_and_drains(app):
    seen = []

    @app.agent(concurrency=2)
    async def count(stream):
        async for value in stream:
            seen.append(value)
    await app.start()
    try:
        await count.send_batch(list(range(50)))
        for i in range(50, 60):
            await count.send(value=i)
        await count.channel.close()
        await count.join(2)
        assert not count.running
        assert sorted(seen) == list(range(60))
    finally:
        await app.stop()


# -- schemas -----------------------------------------------------------------

async def test_schema_error_names_field_expected_type_and_value(app):
    ch = app.channel(schema=SCHEMA)
    with pytest.raises(SchemaError) as info:
        await ch.send(value={"sym": "a", "px": "12.5"})
    err = info.value
    assert isinstance(err, TypeError)
    assert err.field == "px"
    assert err.expected == pa.float64()
    assert err.got == "12.5"
    assert "px" in str(err) and "double" in str(err)


@pytest.mark.parametrize("value, field", [
    ({"px": 1.0}, "sym"),                               # missing
    ({"sym": None, "px": 1.0}, "sym"),                  # None for a field
    ({"sym": "a", "px": 1.0, "qty": 3}, "qty"),         # not in the schema
    ({"sym": 5, "px": 1.0}, "sym"),                     # wrong type
    ({"sym": "a", "px": True}, "px"),                   # bool is not a number
])
async def test_schema_error_field_for_each_kind_of_mismatch(app, value, field):
    schema = pa.schema([pa.field("sym", pa.string(), nullable=False), ("px", pa.float64())])
    ch = app.channel(schema=schema)
    with pytest.raises(SchemaError) as info:
        await ch.send(value=value)
    assert info.value.field == field
    assert repr(field) in str(info.value)


async def test_schema_error_for_a_value_that_is_not_a_dict(app):
    ch = app.channel(schema=SCHEMA)
    for bad in ([("sym", "a")], "sym=a", None, 3):
        with pytest.raises(SchemaError) as info:
            await ch.send(value=bad)
        assert "sym" in str(info.value) and "px" in str(info.value)


async def test_record_batch_with_another_schema_is_rejected_naming_the_field(app):
    ch = app.channel(schema=SCHEMA)
    it = ch.__aiter__()
    wrong_type = pa.record_batch([pa.array(["a"]), pa.array([1], pa.int64())],
                                 names=["sym", "px"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(wrong_type)
    assert info.value.field == "px"
    assert info.value.expected == pa.float64() and info.value.got == pa.int64()
    missing = pa.record_batch([pa.array(["a"])], names=["sym"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(missing)
    assert info.value.field == "px"
    extra = pa.record_batch([pa.array(["a"]), pa.array([1.0]), pa.array([1])],
                            names=["sym", "px", "qty"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(extra)
    assert info.value.field == "qty"
    with pytest.raises(SchemaError):
        await ch.send_batch(pa.Table.from_batches([wrong_type]))
    assert it.poll("nothing") == "nothing"     # nothing got through


async def test_a_bad_row_in_a_list_rejects_the_whole_list(app):
    ch = app.channel(schema=SCHEMA)
    it = ch.__aiter__()
    rows = [{"sym": "a", "px": 1.0}, {"sym": "b", "px": "2"}, {"sym": "c", "px": 3.0}]
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(rows)
    assert info.value.field == "px"
    await ch.flush()
    assert it.poll("nothing") == "nothing"
    await ch.send_batch([rows[0], rows[2]])
    assert await drain(it, 2) == [rows[0], rows[2]]


async def test_a_rejected_send_does_not_spoil_the_rows_gathered_before_it(app):
    ch = app.channel(schema=SCHEMA, linger=60)
    it = ch.__aiter__()
    await ch.send(value={"sym": "a", "px": 1.0})
    with pytest.raises(SchemaError):
        await ch.send(value={"sym": "b", "px": "bad"})
    await ch.send(value={"sym": "c", "px": 3.0})
    await ch.flush()
    assert await drain(it, 2) == [{"sym": "a", "px": 1.0}, {"sym": "c", "px": 3.0}]


async def test_schema_channel_keeps_order_across_send_and_send_batch(app):
    ch = app.channel(schema=SCHEMA, batch_size=3, linger=60)
    stream = ch.stream()
    events = stream.events()
    expected = []
    for i in range(10):
        row = {"sym": f"s{i}", "px": float(i)}
        if i % 3 == 2:
            await ch.send_batch([row])
            expected.append((None, row))
        else:
            await ch.send(key=f"k{i}", value=row)
            expected.append((f"k{i}", row))
    rb = pa.RecordBatch.from_pylist([{"sym": "rb", "px": -1.0}], schema=SCHEMA)
    await ch.send(value={"sym": "last", "px": 99.0})
    await ch.send_batch(rb)
    expected += [(None, {"sym": "last", "px": 99.0}), (None, {"sym": "rb", "px": -1.0})]
    await ch.close()
    got = [(e.key, e.value) async for e in events]
    assert got == expected


async def test_record_batch_reaches_every_subscriber_as_the_same_object(app):
    ch = app.channel(schema=SCHEMA)
    streams = [ch.stream() for _ in range(3)]
    iters = [s.batches() for s in streams]
    rb = pa.RecordBatch.from_pylist([{"sym": "a", "px": 1.0}] * 4, schema=SCHEMA)
    await ch.send_batch(rb)
    got = [await drain(it, 1) for it in iters]
    assert all(g[0] is rb for g in got)


async def test_list_batch_is_moved_by_reference(app):
    ch = app.channel()
    stream_a, stream_b = ch.stream(), ch.stream()
    raw_a, raw_b = stream_a.raw_batches(), stream_b.raw_batches()
    values = [object(), object()]
    await ch.send_batch(values)
    (a,), (b,) = await drain(raw_a, 1), await drain(raw_b, 1)
    assert a is b and a.payload is values


# -- acknowledgement (on_done) ---------------------------------------------------

async def test_on_done_waits_for_the_slowest_subscriber_and_fires_once(app):
    ch = app.channel()
    acks = Acks()
    fast, mid, slow = (ch.__aiter__() for _ in range(3))
    await ch.publish(acks.batch([1, 2], "a"))
    await ch.publish(acks.batch([3], "b"))
    assert await drain(fast, 3) == [1, 2, 3]        # fast moved past "a"
    assert await drain(mid, 2) == [1, 2]            # mid still holds "a"
    assert acks.calls == []
    assert await drain(slow, 3) == [1, 2, 3]
    assert acks.calls == []
    assert await drain(mid, 1) == [3]
    assert acks.calls == ["a"]
    for it in (fast, mid, slow):
        assert it.poll("nothing") == "nothing"
    assert acks.calls == ["a", "b"]
    await ch.close()
    for it in (fast, mid, slow):
        assert [v async for v in it] == []
    assert acks.calls == ["a", "b"]


async def test_on_done_fires_at_once_without_subscribers(app):
    ch = app.channel()
    acks = Acks()
    await ch.publish(acks.batch([1], "x"))
    assert acks.calls == ["x"]


async def test_on_done_for_a_batch_published_before_a_subscriber_joined(app):
    ch = app.channel()
    acks = Acks()
    await ch.publish(acks.batch([1], "early"))
    it = ch.__aiter__()
    await ch.publish(acks.batch([2], "late"))
    assert await drain(it, 1) == [2]
    assert it.poll("nothing") == "nothing"
    assert acks.calls == ["early", "late"]


async def test_on_done_with_concurrent_instances_fires_once_per_batch(app):
    ch = app.channel()
    acks = Acks()
    gates = {i: asyncio.Event() for i in range(4)}
    started = []

    @app.agent(ch, concurrency=4)
    async def worker(stream):
        async for value in stream:
            started.append(value)
            await gates[value].wait()
    await app.start()
    try:
        for i in range(4):
            await ch.publish(acks.batch([i], i))
        await until(lambda: sorted(started) == [0, 1, 2, 3])
        assert acks.calls == []
        for i in (2, 0, 3, 1):
            gates[i].set()
            await until(lambda: i in acks.calls)
        await settle()
        assert sorted(acks.calls) == [0, 1, 2, 3]
        assert all(acks.count(i) == 1 for i in range(4))
        assert worker.events_in == 4
    finally:
        await app.stop()


async def test_on_done_waits_for_what_was_yielded_to_reach_every_sink(app):
    ch = app.channel()
    acks = Acks()
    order = []
    release_sink = asyncio.Event()

    async def slow_sink(value):
        order.append(("sink-start", value))
        await release_sink.wait()
        order.append(("sink-end", value))

    @app.agent(ch, sink=[slow_sink])
    async def passthrough(stream):
        async for value in stream:
            yield value
    await app.start()
    try:
        await ch.publish(acks.batch([1], "b"))
        await until(lambda: ("sink-start", 1) in order)
        await asyncio.sleep(0.02)
        assert acks.calls == []
        release_sink.set()
        await until(lambda: acks.calls == ["b"])
        assert order == [("sink-start", 1), ("sink-end", 1)]
    finally:
        await app.stop()


class FutureSink:
    """A transport-like sink: ``send`` returns an unfinished delivery future."""

    def __init__(self):
        self.futures = []
        self.values = []

    async def send(self, key=None, value=None, headers=None):
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        self.values.append(value)
        return fut


async def test_unfinished_delivery_future_holds_the_batch_until_it_completes(app):
    ch = app.channel()
    acks = Acks()
    sink = FutureSink()
    other = FutureSink()

    @app.agent(ch, sink=[sink, other])
    async def passthrough(stream):
        async for value in stream:
            yield value * 10
    await app.start()
    try:
        await ch.publish(acks.batch([1, 2], "b"))
        await ch.publish(acks.batch([3], "c"))
        await until(lambda: len(sink.futures) == 3 and len(other.futures) == 3)
        await asyncio.sleep(0.02)
        assert sink.values == [10, 20, 30]
        assert acks.calls == []
        for fut in sink.futures:
            fut.set_result(None)
        await settle()
        assert acks.calls == []                     # `other` still pending
        other.futures[0].set_result(None)
        other.futures[2].set_result(None)
        await settle()
        assert acks.calls == ["c"]
        other.futures[1].set_exception(RuntimeError("delivery failed"))
        await settle()
        # A failed delivery abandons its input: "b" is never acknowledged,
        # so a transport would deliver it again after a restart.
        assert acks.calls == ["c"]
        await asyncio.sleep(0.02)
        assert acks.count("b") == 0 and acks.count("c") == 1
    finally:
        await app.stop()


async def test_take_holds_every_batch_of_a_chunk_until_the_next_chunk(app):
    ch = app.channel()
    acks = Acks()
    chunks = []
    proceed = asyncio.Event()

    @app.agent(ch)
    async def chunked(stream):
        async for chunk in stream.take(3):
            chunks.append(chunk)
            await proceed.wait()
            proceed.clear()
    await app.start()
    try:
        await ch.publish(acks.batch([1, 2], "a"))
        await ch.publish(acks.batch([3], "b"))
        await ch.publish(acks.batch([4, 5, 6], "c"))
        await until(lambda: chunks == [[1, 2, 3]])
        await asyncio.sleep(0.02)
        assert acks.calls == []
        proceed.set()
        await until(lambda: len(chunks) == 2)
        await settle()
        assert sorted(acks.calls) == ["a", "b"]
        assert chunks[1] == [4, 5, 6]
        proceed.set()
        await until(lambda: "c" in acks.calls)
        assert all(acks.count(x) == 1 for x in "abc")
    finally:
        await app.stop()


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
async def test_crash_mid_batch_acks_the_batch_once_after_the_rest(app, policy):
    ch = app.channel()
    acks = Acks()
    seen = []

    @app.agent(ch, on_error=policy)
    async def fragile(stream):
        async for value in stream:
            seen.append(value)
            if value == 2:
                raise ValueError("two")
    dlq = ch.dead_letter_channel().__aiter__()
    await app.start()
    try:
        await ch.publish(acks.batch([1, 2, 3], "a"))
        await ch.publish(acks.batch([4], "b"))
        await until(lambda: seen == [1, 2, 3, 4])
        await settle()
        assert acks.calls == ["a", "b"]
        assert fragile.crash_count == 1
        assert isinstance(fragile.last_error, ValueError)
        assert fragile.running
        if policy == "dead_letter":
            dead = await drain(dlq, 1)
            assert dead == [2]
        else:
            assert dlq.poll("nothing") == "nothing"
        assert app.crash_reasons == []
    finally:
        await app.stop()
    assert acks.calls == ["a", "b"]


async def test_dead_letter_carries_error_and_source_in_headers(app):
    ch = app.channel(name="orders-in")
    dead_stream = ch.dead_letter_channel().stream()
    dead_events = dead_stream.events()
    assert ch.dead_letter_channel().name == "orders-in.dlq"

    @app.agent(ch)
    async def fragile(stream):
        async for value in stream:
            raise KeyError(value)
    await app.start()
    try:
        await ch.send(value={"id": 7})
        (event,) = await drain(dead_events, 1)
        assert event.value == {"id": 7}
        assert b"KeyError" in event.headers["sabot-error"]
        assert event.headers["sabot-source"] == b"orders-in"
        assert event.headers["sabot-agent"] == fragile.name.encode()
    finally:
        await app.stop()


async def test_stop_policy_never_acks_the_failing_batch(app):
    ch = app.channel()
    acks = Acks()
    seen = []

    @app.agent(ch, on_error="stop")
    async def fragile(stream):
        async for value in stream:
            seen.append(value)
            if value == 2:
                raise ValueError("two")
    await app.start()
    try:
        await ch.publish(acks.batch([1, 2, 3], "a"))
        await ch.publish(acks.batch([4], "b"))
        await until(lambda: app.crash_reasons != [])
        await asyncio.sleep(0.02)
        assert seen == [1, 2]
        assert not fragile.running
        (error,) = app.crash_reasons
        assert isinstance(error, AgentError)
        assert error.value == 2 and error.agent == fragile.name
        assert isinstance(error.__cause__, ValueError)
        assert acks.calls == []
    finally:
        await app.stop()
    assert acks.calls == []


async def test_async_generator_agent_crash_resumes_after_the_failing_value(app):
    ch = app.channel()
    out = []

    @app.agent(ch, sink=[out.append], on_error="skip")
    async def gen(stream):
        async for value in stream:
            if value % 4 == 3:
                raise RuntimeError(value)
            yield value
    await app.start()
    try:
        await ch.send_batch(list(range(12)))
        await until(lambda: gen.crash_count == 3 and len(out) == 9)
        assert out == [v for v in range(12) if v % 4 != 3]
    finally:
        await app.stop()


# -- stream operators over the acknowledgement --------------------------------

async def test_take_without_within_over_a_derived_stream(app):
    ch = app.channel()
    chunks = ch.stream().filter(lambda v: v % 2 == 0).map(lambda v: v // 2).take(3)
    await ch.send_batch(list(range(20)))
    await ch.close()
    got = [c async for c in chunks]
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


async def test_take_within_on_the_root_stream_keeps_going_after_a_partial_chunk(app):
    ch = app.channel()
    chunks = ch.stream().take(3, within=0.02)
    it = chunks.__aiter__()
    await ch.send(value=1)
    assert await drain(it, 1) == [[1]]
    await ch.send_batch([2, 3, 4, 5])
    assert await drain(it, 2) == [[2, 3, 4], [5]]
    await ch.send(value=6)
    await ch.close()
    assert [c async for c in it] == [[6]]


async def test_enumerate_and_echo_keep_order(app):
    ch = app.channel()
    copy = app.channel()
    copy_it = copy.__aiter__()
    pairs = ch.stream().echo(copy).enumerate(start=10)
    await ch.send_batch(["a", "b"])
    await ch.send(value="c")
    await ch.close()
    assert [p async for p in pairs] == [(10, "a"), (11, "b"), (12, "c")]
    assert await drain(copy_it, 3) == ["a", "b", "c"]


# -- agent.test_context ----------------------------------------------------------

async def test_test_context_for_a_plain_coroutine_agent_without_sink(app):
    seen = []

    @app.agent()
    async def record(stream):
        async for value in stream:
            seen.append(value)
    async with record.test_context() as ctx:
        assert await ctx.put(1) == []
        assert await ctx.put_batch([2, 3]) == []
        assert await ctx.put_batch([]) == []
        assert ctx.results == []
    assert seen == [1, 2, 3]


async def test_test_context_returns_only_what_was_yielded_for_each_put(app):
    @app.agent()
    async def fan(stream):
        async for value in stream:
            for i in range(value):
                yield (value, i)
    async with fan.test_context() as ctx:
        assert await ctx.put(0) == []
        assert await ctx.put(2) == [(2, 0), (2, 1)]
        assert await ctx.put_batch([1, 3]) == [(1, 0), (3, 0), (3, 1), (3, 2)]
        assert ctx.results == [(2, 0), (2, 1), (1, 0), (3, 0), (3, 1), (3, 2)]


async def test_test_context_odd_values_and_none(app):
    @app.agent()
    async def same(stream):
        async for value in stream:
            yield value
    values = _odd_values(asyncio.get_running_loop())
    async with same.test_context() as ctx:
        assert await ctx.put() == [None]
        for value in values:
            (out,) = await ctx.put(value)
            assert out is value


async def test_test_context_raises_the_agent_error_and_keeps_going(app):
    @app.agent(sink=[lambda v: None])
    async def picky(stream):
        async for value in stream:
            if value < 0:
                raise ValueError(f"negative {value}")
            yield value
    async with picky.test_context() as ctx:
        with pytest.raises(ValueError, match="negative -1"):
            await ctx.put(-1)
        assert ctx.crash_count == 1
        assert await ctx.put(2) == [2]
        with pytest.raises(ValueError):
            await ctx.put_batch([5, -2, 6])
        assert ctx.crash_count == 2
        assert await ctx.put(7) == [7]
        assert ctx.results[0] == 2 and ctx.results[-1] == 7
        assert 5 in ctx.results


async def test_test_context_does_not_touch_the_real_channel_or_sinks(app):
    real_sink = []

    @app.agent(sink=[real_sink.append])
    async def double(stream):
        async for value in stream:
            yield value * 2
    before = double.channel.subscriber_count
    async with double.test_context() as ctx:
        assert await ctx.put(4) == [8]
        assert double.channel.subscriber_count == before
    assert real_sink == []
    assert double.crash_count == 0


async def test_test_context_with_a_schema_channel(app):
    ch = app.channel(schema=SCHEMA)

    @app.agent(ch)
    async def prices(stream):
        async for row in stream:
            yield row["px"] * 2
    async with prices.test_context() as ctx:
        assert await ctx.put({"sym": "a", "px": 1.5}) == [3.0]
        rb = pa.RecordBatch.from_pylist([{"sym": "b", "px": 2.0}, {"sym": "c", "px": 4.0}],
                                        schema=SCHEMA)
        assert await ctx.put_batch(rb) == [4.0, 8.0]
        with pytest.raises(SchemaError) as info:
            await ctx.put({"sym": "a", "px": "x"})
        assert info.value.field == "px"
        assert await ctx.put_batch([{"sym": "d", "px": 0.5}]) == [1.0]


async def test_test_context_passes_key_and_headers(app):
    @app.agent()
    async def envelope(stream):
        async for event in stream.events():
            yield (event.key, event.value, event.headers)
    async with envelope.test_context() as ctx:
        assert await ctx.put("v", key=("k", 1), headers={"h": b"1"}) == [
            (("k", 1), "v", {"h": b"1"})]
        assert await ctx.put("w") == [(None, "w", None)]


async def test_test_context_with_batches_and_concurrency(app):
    @app.agent(concurrency=3)
    async def sizes(stream):
        async for batch in stream.batches():
            yield len(batch)
    async with sizes.test_context() as ctx:
        assert await asyncio.wait_for(ctx.put_batch([1, 2, 3]), 1) == [3]
        assert await asyncio.wait_for(ctx.put(1), 1) == [1]
        rb = pa.RecordBatch.from_pylist([{"a": 1}] * 5)
        assert await asyncio.wait_for(ctx.put_batch(rb), 1) == [5]


async def test_test_context_for_an_agent_that_returns_at_once(app):
    @app.agent()
    async def lazy(stream):
        return None
    async with lazy.test_context() as ctx:
        assert await asyncio.wait_for(ctx.put(1), 1) == []


async def test_test_context_can_be_used_twice_and_sequentially(app):
    @app.agent()
    async def inc(stream):
        async for value in stream:
            yield value + 1
    for _ in range(2):
        async with inc.test_context() as ctx:
            assert await ctx.put(1) == [2]
            assert ctx.results == [2]


# -- more edges ----------------------------------------------------------------

async def test_closing_a_stream_ends_the_loop_that_iterates_it(app):
    ch = app.channel()
    stream = ch.stream()
    got = []

    async def reader():
        async for value in stream:
            got.append(value)
    task = asyncio.ensure_future(reader())
    await ch.send(value=1)
    await settle()
    stream.close()
    await asyncio.wait_for(task, 1)
    assert got == [1]
    assert ch.subscriber_count == 0
    await asyncio.wait_for(ch.send_batch(list(range(10_000))), 1)


async def test_values_pass_unchanged_with_a_tracer_installed(app):
    # Under a tracer (coverage, debuggers) the interpreter drives awaitables
    # through __next__/send instead of the fast slot.
    import sys
    ch = app.channel()
    it = ch.__aiter__()
    values = _odd_values(asyncio.get_running_loop())
    out = []

    async def reader():
        async for value in it:
            out.append(value)
            if len(out) == 2 * len(values):
                return

    def tracer(frame, event, arg):
        return tracer
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        task = asyncio.ensure_future(reader())
        await ch.send_batch(list(values))
        await settle()
        for value in values:
            await settle(2)
            await ch.send(value=value)
        await asyncio.wait_for(task, 1)
    finally:
        sys.settrace(previous)
    assert len(out) == 2 * len(values)
    assert all(a is b for a, b in zip(out, values + values))


async def test_crash_in_one_of_several_instances_acks_each_batch_once(app):
    ch = app.channel()
    acks = Acks()
    seen = []

    @app.agent(ch, concurrency=3, on_error="skip")
    async def fragile(stream):
        async for value in stream:
            seen.append(value)
            await asyncio.sleep(0)
            if value % 5 == 1:
                raise ValueError(value)
    await app.start()
    try:
        for i in range(0, 30, 3):
            await ch.publish(acks.batch([i, i + 1, i + 2], i))
        await until(lambda: len(acks.calls) == 10)
        await asyncio.sleep(0.02)
        assert sorted(seen) == list(range(30))
        assert sorted(acks.calls) == list(range(0, 30, 3))
        assert fragile.crash_count == 6
        assert fragile.running
    finally:
        await app.stop()


async def test_delivery_future_still_holds_the_batch_after_a_skipped_crash(app):
    ch = app.channel()
    acks = Acks()
    sink = FutureSink()

    @app.agent(ch, sink=[sink], on_error="skip")
    async def half(stream):
        async for value in stream:
            if value == "boom":
                raise RuntimeError(value)
            yield value
    await app.start()
    try:
        await ch.publish(acks.batch(["a", "boom", "b"], "x"))
        await until(lambda: len(sink.futures) == 2)
        await asyncio.sleep(0.02)
        assert half.crash_count == 1
        assert acks.calls == []
        sink.futures[1].set_result(None)
        await settle()
        assert acks.calls == []
        sink.futures[0].set_result(None)
        await settle()
        assert acks.calls == ["x"]
    finally:
        await app.stop()


async def test_a_subscriber_joining_while_a_sender_waits_does_not_block_it_more(app):
    ch = app.channel(maxsize=2)
    old = ch.__aiter__()
    waiting = asyncio.ensure_future(ch.send_batch([1, 2]))
    await settle()
    assert not waiting.done()
    new = ch.__aiter__()
    assert await drain(old, 2) == [1, 2]
    assert old.poll("nothing") == "nothing"
    await asyncio.wait_for(waiting, 1)
    await ch.send(value=3)
    assert await drain(new, 1) == [3]
    assert await drain(old, 1) == [3]


async def test_send_batch_of_an_empty_record_batch_and_empty_list(app):
    ch = app.channel(schema=SCHEMA)
    stream = ch.stream()
    batches = stream.batches()
    await ch.send_batch([])
    empty = pa.RecordBatch.from_pylist([], schema=SCHEMA)
    await ch.send_batch(empty)
    await ch.send_batch([{"sym": "a", "px": 1.0}])
    await ch.close()
    got = [b async for b in batches]
    assert [b.num_rows for b in got] == [0, 1]
    assert got[0] is empty


async def test_closing_the_lagging_subscriber_frees_a_waiting_sender(app):
    ch = app.channel(maxsize=2)
    lagging = ch.stream()
    keep = ch.__aiter__()
    sender = asyncio.ensure_future(ch.send_batch([1, 2, 3]))
    await settle()
    assert not sender.done()
    assert await drain(keep, 3) == [1, 2, 3]
    assert keep.poll("nothing") == "nothing"
    await settle()
    assert not sender.done()
    lagging.close()
    await asyncio.wait_for(sender, 1)
    assert ch.subscriber_count == 1
    await asyncio.wait_for(ch.send(value=4), 1)
    assert await drain(keep, 1) == [4]


async def test_get_on_a_closed_channel_raises_channel_closed(app):
    ch = app.channel()
    await ch.close()
    with pytest.raises(ChannelClosed):
        await ch.get(timeout=1)


async def test_dead_letter_of_a_batches_agent_is_the_whole_batch(app):
    ch = app.channel()
    dead = ch.dead_letter_channel().__aiter__()
    acks = Acks()

    @app.agent(ch, on_error="dead_letter")
    async def whole(stream):
        async for batch in stream.batches():
            if 0 in batch:
                raise ValueError("zero in batch")
    await app.start()
    try:
        await ch.publish(acks.batch([1, 0, 2], "bad"))
        await ch.publish(acks.batch([3], "good"))
        assert await drain(dead, 1) == [[1, 0, 2]]
        await until(lambda: acks.calls == ["bad", "good"])
        assert whole.crash_count == 1
    finally:
        await app.stop()


async def test_keys_and_headers_stay_aligned_in_a_mixed_open_batch(app):
    ch = app.channel()
    events = ch.stream().events()
    await ch.send(value=1)
    await ch.send(key="k", value=2)
    await ch.send(value=3)
    await ch.send(value=4, headers={"h": b"1"})
    await ch.send_batch([5])
    await ch.send(key=0, value=6)
    await ch.close()
    got = [(e.key, e.value, e.headers) async for e in events]
    assert got == [(None, 1, None), ("k", 2, None), (None, 3, None),
                   (None, 4, {"h": b"1"}), (None, 5, None), (0, 6, None)]


async def test_send_batch_takes_any_iterable_of_rows(app):
    ch = app.channel(schema=SCHEMA)
    plain = app.channel()
    it, plain_it = ch.__aiter__(), plain.__aiter__()
    await ch.send_batch({"sym": s, "px": 1.0} for s in "ab")
    await plain.send_batch(x * 2 for x in range(3))
    await plain.send_batch((7, 8))
    assert await drain(it, 2) == [{"sym": "a", "px": 1.0}, {"sym": "b", "px": 1.0}]
    assert await drain(plain_it, 5) == [0, 2, 4, 7, 8]
    for bad in ("abc", b"abc", {"a": 1}, 5):
        with pytest.raises(TypeError):
            await plain.send_batch(bad)


async def test_async_for_walks_a_batch_without_letting_other_tasks_run(app):
    ch = app.channel()
    it = ch.__aiter__()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)
    tick_task = asyncio.ensure_future(ticker())
    try:
        await ch.send_batch(list(range(100)))
        await ch.send_batch(list(range(100, 200)))
        await ch.close()
        seen = []
        async for value in it:
            seen.append((value, ticks))
        assert [v for v, _ in seen] == list(range(200))
        # every value of one batch is read at the same tick
        assert len({t for v, t in seen if v < 100}) == 1
        assert len({t for v, t in seen if v >= 100}) == 1
    finally:
        tick_task.cancel()


async def test_concurrent_instances_share_the_values_of_a_batch_in_order(app):
    ch = app.channel()
    log = []

    @app.agent(ch, concurrency=3)
    async def worker(stream):
        async for value in stream:
            log.append((id(stream), value))
            await asyncio.sleep(0)        # let the other instances interleave
    await app.start()
    try:
        for b in range(6):
            await ch.send_batch([(b, i) for i in range(5)])
        await until(lambda: len(log) == 30)
        # Handed out in the order sent...
        assert [v for _, v in log] == [(b, i) for b in range(6) for i in range(5)]
        # ...and the values of one batch went to several instances.
        assert len({who for who, (b, _) in log if b == 0}) == 3
    finally:
        await app.stop()


async def test_test_context_with_take_within_returns_the_partial_chunk(app):
    @app.agent()
    async def pairs(stream):
        async for chunk in stream.take(2, within=0.02):
            yield chunk
    async with pairs.test_context() as ctx:
        assert await asyncio.wait_for(ctx.put(1), 1) == [[1]]
        assert await asyncio.wait_for(ctx.put_batch([2, 3, 4]), 1) == [[2, 3], [4]]


async def test_cancelling_the_task_of_a_lagging_reader_frees_the_sender(app):
    ch = app.channel(maxsize=3)

    async def stuck_reader(stream):
        async for _ in stream:
            await asyncio.sleep(60)
    reader = asyncio.ensure_future(stuck_reader(ch.stream()))
    await settle()
    await ch.send_batch([1, 2, 3, 4])  # the reader takes it and holds it
    await settle()
    # The next batch waits for the reader (queued), and so does its sender.
    sender = asyncio.ensure_future(ch.send_batch([5]))
    await settle()
    assert not sender.done()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    del reader
    gc.collect()
    await asyncio.wait_for(sender, 1)
    assert ch.subscriber_count == 0
