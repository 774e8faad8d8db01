"""In-memory channels: fan-out, order, zero copy, weak subscribers, backpressure, schemas."""
import asyncio
import gc
import tracemalloc

import pyarrow as pa
import pytest

import sabot
from sabot import ChannelClosed, ConfigurationError, SchemaError


@pytest.fixture
def app():
    return sabot.App("test-memory")


async def drain(it, n):
    return [await it.__anext__() for _ in range(n)]


@pytest.mark.parametrize("subscribers", [1, 2, 16])
async def test_fan_out_every_subscriber_gets_every_value_in_order(app, subscribers):
    ch = app.channel()
    subs = [ch.subscribe().values() for _ in range(subscribers)]
    assert ch.subscriber_count == subscribers
    for i in range(50):
        await ch.send(value=i)
    await ch.send_batch(list(range(50, 120)))
    for i in range(120, 130):
        await ch.send(value=i)
    for it in subs:
        assert await drain(it, 130) == list(range(130))
        assert it.poll("none") == "none"  # exactly once: nothing more


async def test_record_batch_reaches_every_subscriber_as_the_same_object(app):
    ch = app.channel()
    streams = [ch.stream() for _ in range(3)]
    rb = pa.record_batch({"x": pa.array([1, 2, 3])})
    await ch.send_batch(rb)
    got = [await s.batches().__anext__() for s in streams]
    assert all(b is rb for b in got)


async def test_values_of_a_record_batch_are_rows(app):
    ch = app.channel()
    it = ch.subscribe().values()
    await ch.send_batch(pa.record_batch({"x": [1, 2], "y": ["a", "b"]}))
    assert await drain(it, 2) == [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]


async def test_dropped_subscriber_stops_receiving_and_does_not_block(app):
    ch = app.channel(maxsize=10)
    keep = ch.subscribe().values()
    dropped = ch.subscribe().values()
    await ch.send(value="first")
    assert await dropped.__anext__() == "first"
    del dropped
    gc.collect()
    assert ch.subscriber_count == 1
    for i in range(8):
        await asyncio.wait_for(ch.send(value=i), 1)
    assert await drain(keep, 9) == ["first"] + list(range(8))
    assert keep.poll("none") == "none"  # moved past everything: all released
    # Were the dropped reader still counted, it would lag by 9 already and
    # these sends would wait for it forever.
    for i in range(9):
        await asyncio.wait_for(ch.send(value=i), 1)


async def test_dropped_subscriber_releases_its_batches(app):
    ch = app.channel()
    done = []
    sub = ch.subscribe()
    batch = sabot._fastpath.Batch([1, 2], on_done=done.append)
    await ch.publish(batch)
    assert not done
    del sub
    gc.collect()
    assert done == [batch]


async def test_send_waits_when_a_subscriber_is_full(app):
    ch = app.channel(maxsize=5)
    it = ch.subscribe().values()
    for i in range(4):
        await ch.send(value=i)
    blocked = asyncio.ensure_future(ch.send(value=4))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "the fifth value must wait for the reader"
    # Reading releases the batch once the reader moves past it.
    assert await drain(it, 5) == [0, 1, 2, 3, 4]
    it.poll()  # move past the batch
    await asyncio.wait_for(blocked, 1)


async def test_backpressure_with_a_slow_agent_keeps_memory_flat(app):
    ch = app.channel(maxsize=100)
    seen = []

    @app.agent(ch)
    async def slow(stream):
        async for value in stream:
            seen.append(value)
            if len(seen) % 100 == 0:
                await asyncio.sleep(0.001)

    await app.start()
    try:
        tracemalloc.start()
        peak_lag = 0
        for i in range(20_000):
            await ch.send(value=b"x" * 100)
            peak_lag = max(peak_lag, ch._fanout.lag())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak_lag <= 100
        # 20,000 x 100 bytes would be ~3 MB if buffered; flat means far less.
        assert peak < 1_000_000, peak
    finally:
        await app.stop()
    assert len(seen) >= 19_900


def rows(n, start=0, text=""):
    return pa.record_batch({"i": pa.array(range(start, start + n), pa.int64()),
                            "s": pa.array([text] * n, pa.string())})


async def test_a_batch_bigger_than_maxsize_does_not_wait_to_be_consumed(app):
    """Bounds count batches: a 20,000-row batch on a default channel (maxsize
    4096 values) waits only until a reader has taken it, not until it is consumed."""
    ch = app.channel()
    batches = ch.subscribe().batches()
    first = asyncio.ensure_future(ch.send_batch(rows(20_000)))
    await asyncio.sleep(0)
    assert not first.done(), "queued and past maxsize: it waits for a reader"
    held = await asyncio.wait_for(batches.__anext__(), 1)
    await asyncio.wait_for(first, 1)  # taken: the sender goes on
    assert len(held.payload) == 20_000
    # One more batch may wait for the reader while it holds the first...
    second = asyncio.ensure_future(ch.send_batch(rows(20_000, 20_000)))
    await asyncio.sleep(0.01)
    assert not second.done(), "one batch queued past the bound: its sender waits"
    # ...and the reader moving on (releasing the first, taking the second) frees it.
    nxt = await asyncio.wait_for(batches.__anext__(), 1)
    await asyncio.wait_for(second, 1)
    assert nxt.payload.column("i")[0].as_py() == 20_000


async def test_n_readers_of_one_subscription_get_n_batches_in_flight(app):
    """What concurrency=N instances taking whole batches see: N held, one waiting."""
    ch = app.channel()
    sub = ch.subscribe()
    readers = [sub.batches() for _ in range(3)]
    sent = []

    async def producer():
        for k in range(6):
            await ch.send_batch(rows(10_000, k * 10_000))
            sent.append(k)
    task = asyncio.ensure_future(producer())
    held = []
    for reader in readers:
        held.append(await asyncio.wait_for(reader.__anext__(), 1))
    await asyncio.sleep(0.01)
    # Three taken and held, a fourth queued for them (its sender waits).
    assert sent == [0, 1, 2] and sub.pending == 1
    assert await asyncio.wait_for(readers[0].__anext__(), 1) is not None
    await asyncio.sleep(0.01)
    assert sent == [0, 1, 2, 3] and sub.pending == 1
    task.cancel()


async def test_a_bound_in_bytes_keeps_large_small_batches_flat(app):
    """Few rows, many bytes: the byte bound stops the sender where the value
    bound would not."""
    ch = app.channel(max_bytes=5 << 20)
    sub = ch.subscribe()
    reader = sub.batches()
    big = rows(10, text="x" * (100 << 10))  # about 1 MiB in 10 rows
    sent = 0

    async def producer():
        nonlocal sent
        while True:
            await ch.send_batch(big)
            sent += 1
    task = asyncio.ensure_future(producer())
    await asyncio.sleep(0.05)
    assert 4 <= sent <= 6, sent  # about 5 MiB lag, not 4096 values' worth
    assert sub.lag == sent * 10 or sub.lag == (sent + 1) * 10
    await asyncio.wait_for(reader.__anext__(), 1)
    await asyncio.wait_for(reader.__anext__(), 1)  # releases one: room again
    await asyncio.sleep(0.05)
    assert sent > 5
    task.cancel()


async def test_a_bound_in_batches(app):
    ch = app.channel(max_batches=3)
    sub = ch.subscribe()
    sent = []

    async def producer():
        for k in range(10):
            await ch.send_batch([k])
            sent.append(k)
    task = asyncio.ensure_future(producer())
    await asyncio.sleep(0.01)
    assert sent == [0, 1] and sub.lag == 3
    task.cancel()


def test_bounds_must_be_positive_ints(app):
    for bound in ("maxsize", "max_batches", "max_bytes"):
        with pytest.raises(ConfigurationError, match=bound):
            app.channel(**{bound: 0})
    assert app.channel().max_batches == app.conf.stream_buffer_maxsize
    assert app.channel().max_bytes == 64 << 20


async def test_schema_channel_gathers_dicts_into_record_batches(app):
    schema = pa.schema([("sym", pa.string()), ("px", pa.float64())])
    ch = app.channel(schema=schema, batch_size=3, linger=0.01)
    st = ch.stream()
    for i in range(4):
        await ch.send(value={"sym": "A", "px": float(i)})
    batches = st.batches()
    first = await asyncio.wait_for(batches.__anext__(), 1)
    assert isinstance(first, pa.RecordBatch) and first.num_rows == 3
    assert first.schema.equals(schema)
    second = await asyncio.wait_for(batches.__anext__(), 1)  # lingered
    assert second.num_rows == 1 and second.column("px")[0].as_py() == 3.0


async def test_schema_errors_name_field_and_type(app):
    schema = pa.schema([("sym", pa.string()), ("px", pa.float64())])
    ch = app.channel(schema=schema)
    with pytest.raises(SchemaError) as err:
        await ch.send(value={"sym": "A", "px": "high"})
    assert err.value.field == "px" and "double" in str(err.value)
    with pytest.raises(SchemaError, match="'sym'"):
        await ch.send(value={"px": 1.0, "sym": 7})
    with pytest.raises(SchemaError, match="'extra'"):
        await ch.send(value={"sym": "A", "px": 1.0, "extra": 1})
    with pytest.raises(SchemaError):
        await ch.send(value=[1, 2])
    other = pa.record_batch({"sym": ["A"], "px": pa.array([1], pa.int64())})
    with pytest.raises(SchemaError, match="px"):
        await ch.send_batch(other)
    with pytest.raises(SchemaError):
        await ch.send_batch([{"sym": "A", "px": None}, {"sym": 1, "px": 2.0}])


async def test_schema_must_be_an_arrow_schema(app):
    with pytest.raises(ConfigurationError, match="pyarrow.Schema"):
        app.channel(schema={"a": int})


async def test_get_and_put(app):
    ch = app.channel()
    await ch.put("a")
    await ch.put("b")
    assert await ch.get() == "a"
    assert await ch.get(timeout=1) == "b"
    with pytest.raises(asyncio.TimeoutError):
        await ch.get(timeout=0.01)
    await ch.put("c")  # nothing was lost to the timeout
    assert await ch.get(timeout=1) == "c"


async def test_async_for_over_channel_and_close(app):
    ch = app.channel()
    got = []

    async def reader():
        async for value in ch:
            got.append(value)

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0)
    await ch.send_batch([1, 2, 3])
    await ch.close()
    await asyncio.wait_for(task, 1)
    assert got == [1, 2, 3]
    with pytest.raises(ChannelClosed):
        await ch.send(value=4)


async def test_clone_shares_the_channel_and_derive_does_not(app):
    ch = app.channel(maxsize=7)
    clone = ch.clone()
    derived = ch.derive(name="other")
    a, b, c = ch.subscribe().values(), clone.subscribe().values(), derived.subscribe().values()
    assert ch.subscriber_count == 2 and derived.subscriber_count == 1
    await clone.send(value="x")
    assert await a.__anext__() == "x" and await b.__anext__() == "x"
    assert c.poll("none") == "none"
    assert derived.maxsize == 7 and derived.name == "other"


async def test_send_batch_rejects_non_sequences(app):
    ch = app.channel()
    with pytest.raises(TypeError):
        await ch.send_batch("abc")
    with pytest.raises(TypeError):
        await ch.send_batch(42)


async def test_events_carry_key_headers_and_timestamp(app):
    ch = app.channel()
    events = ch.stream().events()
    await ch.send(value=1)
    await ch.send(key="k", value=2, headers={"h": b"v"})
    e1, e2 = await drain(events, 2)
    assert (e1.key, e1.value, e1.headers) == (None, 1, None)
    assert (e2.key, e2.value, e2.headers) == ("k", 2, {"h": b"v"})
    assert e2.timestamp > 0 and e2.position is None


async def test_a_late_subscriber_sees_only_what_is_sent_after_it(app):
    ch = app.channel()
    first = ch.subscribe().values()
    await ch.send(value=1)
    late = ch.subscribe().values()
    await ch.send(value=2)
    assert await drain(first, 2) == [1, 2]
    assert await drain(late, 1) == [2]


async def test_batch_on_done_fires_after_every_subscriber_moved_past(app):
    ch = app.channel()
    its = [ch.subscribe().values() for _ in range(2)]
    done = []
    await ch.publish(sabot._fastpath.Batch([1, 2], on_done=done.append))
    await ch.send(value=3)
    for it in its:
        assert await drain(it, 2) == [1, 2]
    assert not done  # each holds it until it asks for more
    await its[0].__anext__()
    assert not done
    await its[1].__anext__()
    assert len(done) == 1


async def test_closing_a_subscriber_abandons_what_it_held(app):
    """Stopping mid-batch must not acknowledge: a transport would commit it."""
    ch = app.channel()
    done = []
    sub = ch.subscribe()
    it = sub.values()
    batch = sabot._fastpath.Batch([1, 2, 3], on_done=done.append)
    await ch.publish(batch)
    assert await it.__anext__() == 1
    sub.close()
    assert done == [] and batch.abandoned
    assert ch.subscriber_count == 0


async def test_a_batch_abandoned_by_one_subscriber_is_never_done(app):
    ch = app.channel()
    done = []
    a, b = ch.subscribe(), ch.subscribe()
    await ch.publish(sabot._fastpath.Batch([1], on_done=done.append))
    ita = a.values()
    assert await ita.__anext__() == 1
    b.close()
    ita.poll()  # a moves past it
    assert done == []
