"""Backpressure: a sender waits while a subscriber lags past a bound in values,
batches or bytes with a batch still queued for it; what frees it.
"""
import asyncio
import gc
import tracemalloc

import pyarrow as pa
import pytest

import sabot
from sabot import ConfigurationError
from tests.helpers import SCHEMA, drain, idle, until


@pytest.fixture
def app():
    return sabot.App("test-backpressure")


async def test_send_waits_when_a_subscriber_is_full(app):
    ch = app.channel(maxsize=5)
    it = ch.subscribe().values()
    for i in range(4):
        await ch.send(value=i)
    blocked = asyncio.ensure_future(ch.send(value=4))
    # In the channel: the send either returned in that same step or waits.
    await until(lambda: ch.sent_count == 5, what="the fifth value in the channel")
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
    await until(lambda: ch.sent_count == 20_000, what="the batch published")
    assert not first.done(), "queued and past maxsize: it waits for a reader"
    held = await asyncio.wait_for(batches.__anext__(), 1)
    await asyncio.wait_for(first, 1)  # taken: the sender goes on
    assert len(held.payload) == 20_000
    # One more batch may wait for the reader while it holds the first...
    second = asyncio.ensure_future(ch.send_batch(rows(20_000, 20_000)))
    await until(lambda: ch.sent_count == 40_000, what="the second batch published")
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
    # A send publishes and decides to wait in one step: once the fourth batch
    # is in, the producer went on in that step (a fifth would be in too) or waits.
    await until(lambda: ch.sent_count >= 40_000, what="the fourth batch published")
    # Three taken and held, a fourth queued for them (its sender waits).
    assert sent == [0, 1, 2] and sub.pending == 1
    assert await asyncio.wait_for(readers[0].__anext__(), 1) is not None
    await until(lambda: ch.sent_count >= 50_000, what="the fifth batch published")
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
    # A batch in the channel whose send has not returned: the producer waits.
    await until(lambda: ch.sent_count == (sent + 1) * 10, what="the producer to wait")
    assert 4 <= sent <= 6, sent  # about 5 MiB lag, not 4096 values' worth
    assert sub.lag == sent * 10 or sub.lag == (sent + 1) * 10
    await asyncio.wait_for(reader.__anext__(), 1)
    await asyncio.wait_for(reader.__anext__(), 1)  # releases one: room again
    await until(lambda: sent > 5, what="the producer to go on")
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
    # A batch in the channel whose send has not returned: the producer waits.
    await until(lambda: ch.sent_count == len(sent) + 1, what="the producer to wait")
    assert sent == [0, 1] and sub.lag == 3
    task.cancel()


def test_bounds_must_be_positive_ints(app):
    for bound in ("maxsize", "max_batches", "max_bytes"):
        with pytest.raises(ConfigurationError, match=bound):
            app.channel(**{bound: 0})
    assert app.channel().max_batches == app.conf.stream_buffer_maxsize
    assert app.channel().max_bytes == 64 << 20


# -- who waits, and how long -------------------------------------------------

async def test_sender_waits_once_a_subscriber_lags_by_exactly_maxsize(app):
    ch = app.channel(maxsize=4)
    it = ch.__aiter__()
    sent = []

    async def producer():
        for i in range(12):
            await ch.send(value=i)
            sent.append(i)
    task = asyncio.ensure_future(producer())
    # A value in the channel whose send has not returned: the producer waits.
    await until(lambda: ch.sent_count == len(sent) + 1, what="the producer to wait")
    # values 0..3 are queued for the reader; the send that made the lag 4 waits
    assert sent == [0, 1, 2]
    assert it.subscriber.lag == 4
    assert await drain(it, 4) == [0, 1, 2, 3]
    # Freed, the producer sends 4 and, in the same step, waits or goes on to 5.
    await until(lambda: ch.sent_count >= 5, what="value 4 in the channel")
    # The reader took the batch and holds it: one more value may wait for it
    # (queued), and the sender waits again.
    assert sent == [0, 1, 2, 3]
    assert it.subscriber.lag == 5
    assert await drain(it, 1) == [4]     # moving past the first batch frees the sender
    await until(lambda: len(sent) >= 5 and ch.sent_count in (len(sent) + 1, 12),
                what="the producer to wait again, or to finish")
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
    await until(lambda: ch.sent_count == 20, what="the batch published")
    assert not task.done()
    assert await drain(it, 20) == list(range(20))
    assert it.poll("nothing") == "nothing"
    await asyncio.wait_for(task, 1)


async def test_a_subscriber_joining_while_a_sender_waits_does_not_block_it_more(app):
    ch = app.channel(maxsize=2)
    old = ch.__aiter__()
    waiting = asyncio.ensure_future(ch.send_batch([1, 2]))
    await until(lambda: ch.sent_count == 2, what="the batch published")
    assert not waiting.done()
    new = ch.__aiter__()
    assert await drain(old, 2) == [1, 2]
    assert old.poll("nothing") == "nothing"
    await asyncio.wait_for(waiting, 1)
    await ch.send(value=3)
    assert await drain(new, 1) == [3]
    assert await drain(old, 1) == [3]


# BUG 6 (both): a schema'd channel gives no backpressure to a sender whose rows
# are flushed by the linger timer. The flush runs in a background task, which
# publishes and then waits; the sender itself never waits, and each linger
# period publishes another batch. With a stalled subscriber and maxsize=5, 200
# sends all complete and the subscriber lags by 200 (memory grows without
# bound). Docs: "When a subscriber lags by maxsize values, senders wait".
async def test_schema_channel_sender_waits_when_a_subscriber_lags(app):
    ch = app.channel(schema=pa.schema([("x", pa.int64())]), maxsize=5, linger=0.001)
    stalled = ch.__aiter__()
    sent = 0
    sending = False

    async def produce():
        nonlocal sent, sending
        for i in range(200):
            sending = True
            await ch.send(value={"x": i})
            sending = False
            sent += 1
            await asyncio.sleep(0.002)  # paces the sends: the linger timer flushes between them
    task = asyncio.ensure_future(produce())
    # A send on a memory channel suspends only to wait for capacity: seen from
    # here, one in progress is held by the stalled reader.
    await until(lambda: sending or task.done(), what="the sender to wait")
    task.cancel()
    # expected: the sender is held near maxsize; actual: sent == 200, lag 200
    assert stalled.subscriber.lag <= 5 + 5
    assert sent < 200


# -- what frees a waiting sender ---------------------------------------------

async def test_dropping_the_lagging_subscriber_frees_a_waiting_sender(app):
    ch = app.channel(maxsize=3)
    keep = ch.__aiter__()
    lagging = ch.__aiter__()
    sender = asyncio.ensure_future(ch.send_batch([1, 2, 3, 4]))
    await until(lambda: ch.sent_count == 4, what="the batch published")
    assert not sender.done()              # both lag by 4 >= maxsize
    assert await drain(keep, 4) == [1, 2, 3, 4]
    assert keep.poll("nothing") == "nothing"  # releases the batch
    await idle()                      # a sender that release woke has sent by now
    assert not sender.done()              # the other still lags
    del lagging
    gc.collect()
    await asyncio.wait_for(sender, 1)
    assert ch.subscriber_count == 1


async def test_closing_the_lagging_subscriber_frees_a_waiting_sender(app):
    ch = app.channel(maxsize=2)
    lagging = ch.stream()
    keep = ch.__aiter__()
    sender = asyncio.ensure_future(ch.send_batch([1, 2, 3]))
    await until(lambda: ch.sent_count == 3, what="the batch published")
    assert not sender.done()
    assert await drain(keep, 3) == [1, 2, 3]
    assert keep.poll("nothing") == "nothing"
    await idle()                      # a sender that release woke has sent by now
    assert not sender.done()
    lagging.close()
    await asyncio.wait_for(sender, 1)
    assert ch.subscriber_count == 1
    await asyncio.wait_for(ch.send(value=4), 1)
    assert await drain(keep, 1) == [4]


async def test_cancelling_the_task_of_a_lagging_reader_frees_the_sender(app):
    ch = app.channel(maxsize=3)

    taken = []

    async def stuck_reader(stream):
        async for value in stream:
            taken.append(value)
            await asyncio.sleep(60)  # holds the batch until cancelled
    reader = asyncio.ensure_future(stuck_reader(ch.stream()))
    await ch.send_batch([1, 2, 3, 4])  # the reader takes it and holds it
    await until(lambda: taken == [1], what="the reader to take the batch")
    # The next batch waits for the reader (queued), and so does its sender.
    sender = asyncio.ensure_future(ch.send_batch([5]))
    await until(lambda: ch.sent_count == 5, what="the next batch published")
    assert not sender.done()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    del reader
    gc.collect()
    await asyncio.wait_for(sender, 1)
    assert ch.subscriber_count == 0


# -- no deadlock -------------------------------------------------------------

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
        await consume.wait_done(5)
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
