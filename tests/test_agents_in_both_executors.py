"""One Stream in every executor: the same agent, native and in a child process.

Every test runs twice, ``executor="native"`` and ``executor="process"``: the
operators (filter, map, take with and without ``within``, enumerate, events
with keys, headers, timestamps and positions, batches), the ``on_error``
policies and acknowledgement must behave the same. The agent functions live
at module level so that a child process can import them.
"""
import asyncio

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from tests.helpers import until

pytestmark = pytest.mark.parametrize("executor", ["native", "process"])


# -- agents (importable by path) --------------------------------------------------

async def evens_times_ten(stream):
    async for value in stream.filter(lambda v: v % 2 == 0).map(lambda v: v * 10):
        yield value


async def async_operators(stream):
    async def is_odd(v):
        await asyncio.sleep(0)
        return v % 2

    async for i, value in stream.filter(is_odd).enumerate(100):
        yield [i, value]


async def chunks_of_three(stream):
    async for chunk in stream.take(3):
        yield chunk


async def chunks_within(stream):
    async for chunk in stream.take(100, within=0.2):
        yield chunk


async def envelopes(stream):
    async for event in stream.events():
        yield {"key": event.key, "value": event.value, "headers": event.headers,
               "timestamp": event.timestamp, "position": event.position}


async def batch_sizes(stream):
    async for batch in stream.batches():
        yield {"rows": len(batch), "type": type(batch).__name__}


async def fails_on_three(stream):
    async for value in stream:
        if value == 3:
            raise ValueError("three is not allowed")
        yield value


# -- harness ---------------------------------------------------------------------------

def make(executor, fun, **options):
    app = sabot.App(f"both-{executor}-{fun.__name__}")
    channel = app.channel()
    out = []
    agent = app.agent(channel, executor=executor, sink=[out.append], **options)(fun)
    return app, channel, agent, out


# -- operators ---------------------------------------------------------------------------

async def test_filter_and_map(executor):
    app, channel, _, out = make(executor, evens_times_ten)
    async with app:
        await channel.send_batch(list(range(10)))
        await until(lambda: len(out) == 5, timeout=30)
    assert out == [0, 20, 40, 60, 80]


async def test_async_filter_and_enumerate(executor):
    app, channel, _, out = make(executor, async_operators)
    async with app:
        await channel.send_batch([1, 2, 3, 4, 5])
        await until(lambda: len(out) == 3, timeout=30)
    assert out == [[100, 1], [101, 3], [102, 5]]


async def test_take_spans_batches_and_acks_after_the_chunk(executor):
    app, channel, _, out = make(executor, chunks_of_three)
    acked = []
    async with app:
        for tag, values in enumerate([[1, 2], [3, 4], [5, 6]]):
            await channel.publish(Batch(values, on_done=lambda b, t=tag: acked.append(t)))
        await until(lambda: len(out) == 2, timeout=30)
        await until(lambda: len(acked) == 3, timeout=30)
    assert out == [[1, 2, 3], [4, 5, 6]]
    assert acked == [0, 1, 2]


async def test_take_within_yields_the_partial_chunk_and_acks_it(executor):
    app, channel, _, out = make(executor, chunks_within)
    acked = []
    async with app:
        await channel.publish(Batch([1, 2, 3], on_done=lambda b: acked.append(b)))
        await until(lambda: out and acked, timeout=10)
    assert out == [[1, 2, 3]]


async def test_events_carry_keys_headers_timestamps_and_positions(executor):
    app, channel, _, out = make(executor, envelopes)
    async with app:
        await channel.publish(Batch(
            ["a", "b"], keys=[b"k1", None], headers=[{"h": b"1"}, None],
            timestamps=[1.5, 2.5], positions=[("orders", 0, 7), ("orders", 0, 8)]))
        await channel.send(key="text-key", value="c", headers={"x": b"y"})
        await until(lambda: len(out) == 3, timeout=30)
    assert out[0] == {"key": b"k1", "value": "a", "headers": {"h": b"1"}, "timestamp": 1.5,
                      "position": ("orders", 0, 7)}
    assert out[1]["key"] is None and out[1]["headers"] is None
    assert out[1]["position"] == ("orders", 0, 8)
    assert out[2]["key"] == "text-key" and out[2]["headers"] == {"x": b"y"}


async def test_batches_come_as_they_were_sent(executor):
    app, channel, _, out = make(executor, batch_sizes)
    async with app:
        await channel.send_batch(pa.record_batch({"x": list(range(5))}))
        await channel.send_batch([1, 2])
        await until(lambda: len(out) == 2, timeout=30)
    assert out == [{"rows": 5, "type": "RecordBatch"}, {"rows": 2, "type": "list"}]


# -- errors ---------------------------------------------------------------------------

async def test_dead_letter_takes_only_the_failing_value(executor):
    app, channel, agent, out = make(executor, fails_on_three, on_error="dead_letter")
    dead = channel.dead_letter_channel().stream().events()
    acked = []
    async with app:
        await channel.publish(Batch([1, 2, 3, 4], on_done=lambda b: acked.append(b)))
        event = await asyncio.wait_for(dead.__anext__(), 30)
        await until(lambda: len(out) == 3 and acked, timeout=30)
    assert out == [1, 2, 4]
    assert event.value == 3
    assert b"three is not allowed" in event.headers["sabot-error"]
    assert agent.crash_count == 1


async def test_stop_leaves_the_batch_unacknowledged(executor):
    app, channel, agent, out = make(executor, fails_on_three, on_error="stop")
    acked = []
    async with app:
        await channel.publish(Batch([1, 2], on_done=lambda b: acked.append(1)))
        await channel.publish(Batch([3, 4], on_done=lambda b: acked.append(2)))
        await asyncio.wait_for(app.wait_for_stop_request(), 30)
    assert acked == [1]
    assert 4 not in out
    assert app.crash_reasons and "three" in str(app.crash_reasons[0])
