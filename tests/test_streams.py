"""Stream operators: take(n, within) timing, filter/map/enumerate/echo/through, acks."""
import asyncio
import time

import pyarrow as pa
import pytest

import sabot
from sabot import ConfigurationError
from sabot._fastpath import Batch


@pytest.fixture
def app():
    return sabot.App("test-streams")


async def collect(aiter, n, timeout=2):
    out = []

    async def run():
        async for item in aiter:
            out.append(item)
            if len(out) == n:
                return
    await asyncio.wait_for(run(), timeout)
    return out


async def test_take_yields_full_chunks_without_waiting_for_within(app):
    ch = app.channel()
    chunks = ch.stream().take(3, within=10)
    await ch.send_batch(list(range(7)))
    start = time.monotonic()
    got = await collect(chunks, 2)
    assert got == [[0, 1, 2], [3, 4, 5]]
    assert time.monotonic() - start < 1


async def test_take_within_flushes_a_partial_chunk_after_the_window(app):
    ch = app.channel()
    chunks = ch.stream().take(100, within=0.1)
    await ch.send_batch([1, 2])
    start = time.monotonic()
    got = await collect(chunks, 1)
    elapsed = time.monotonic() - start
    assert got == [[1, 2]]
    assert 0.08 <= elapsed < 1.0


async def test_take_within_never_yields_an_empty_chunk(app):
    ch = app.channel()
    chunks = ch.stream().take(5, within=0.02)
    task = asyncio.ensure_future(collect(chunks, 1, timeout=5))
    await asyncio.sleep(0.15)  # several windows pass with nothing sent
    assert not task.done()
    await ch.send(value="late")
    assert await task == [["late"]]


async def test_take_window_starts_at_the_first_value(app):
    ch = app.channel()
    chunks = ch.stream().take(10, within=0.2)
    task = asyncio.ensure_future(collect(chunks, 1, timeout=5))
    await asyncio.sleep(0.3)  # idle time before the first value does not count
    start = time.monotonic()
    await ch.send(value=1)
    await asyncio.sleep(0.05)
    await ch.send(value=2)
    assert await task == [[1, 2]]
    assert time.monotonic() - start >= 0.15


async def test_take_without_within_waits_for_n(app):
    ch = app.channel()
    chunks = ch.stream().take(2)
    task = asyncio.ensure_future(collect(chunks, 1))
    await ch.send(value=1)
    await asyncio.sleep(0.05)
    assert not task.done()
    await ch.send(value=2)
    assert await task == [[1, 2]]


async def test_take_flushes_the_rest_when_the_stream_ends(app):
    ch = app.channel()
    chunks = ch.stream().take(4, within=5)
    await ch.send_batch([1, 2, 3, 4, 5])
    await ch.close()
    out = [c async for c in chunks]
    assert out == [[1, 2, 3, 4], [5]]


async def test_take_of_one(app):
    ch = app.channel()
    chunks = ch.stream().take(1)
    await ch.send_batch(["a", "b"])
    assert await collect(chunks, 2) == [["a"], ["b"]]


@pytest.mark.parametrize("n,within", [(0, None), (-1, 1), (2, 0), (2, -1), (True, None)])
async def test_take_rejects_bad_arguments(app, n, within):
    with pytest.raises(ConfigurationError):
        app.channel().stream().take(n, within=within)


async def test_take_holds_the_batches_of_a_chunk_until_it_is_processed(app):
    ch = app.channel()
    chunks = ch.stream().take(2)
    done = []
    await ch.publish(Batch([1], on_done=done.append))
    await ch.publish(Batch([2, 3], on_done=done.append))
    it = chunks.__aiter__()
    assert await it.__anext__() == [1, 2]
    assert done == []  # the chunk is with the agent: nothing acknowledged
    task = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.01)
    assert len(done) == 1  # the first batch is finished once the next chunk is asked for
    task.cancel()


async def test_filter_map_enumerate(app):
    ch = app.channel()
    out = ch.stream().filter(lambda v: v % 2 == 0).map(lambda v: v * 10).enumerate(1)
    await ch.send_batch(list(range(6)))
    assert await collect(out, 3) == [(1, 0), (2, 20), (3, 40)]


async def test_async_filter_and_map(app):
    async def even(v):
        return v % 2 == 0

    async def double(v):
        return v * 2
    ch = app.channel()
    out = ch.stream().filter(even).map(double)
    await ch.send_batch([1, 2, 3, 4])
    assert await collect(out, 2) == [4, 8]


async def test_echo_copies_to_other_channels(app):
    src, copy = app.channel(), app.channel()
    copied = copy.subscribe().values()
    out = src.stream().echo(copy)
    await src.send_batch(["a", "b"])
    assert await collect(out, 2) == ["a", "b"]
    assert await collect(copied, 2) == ["a", "b"]


async def test_through_forwards_to_a_channel(app):
    src, dst = app.channel(), app.channel()
    out = src.stream().through(dst)
    await src.send_batch([1, 2, 3])
    assert await collect(out, 3) == [1, 2, 3]
    out.close()


async def test_batches_yields_payloads_and_events_yield_envelopes(app):
    ch = app.channel()
    batches = ch.stream().batches()
    rb = pa.record_batch({"a": [1]})
    await ch.send_batch(rb)
    await ch.send_batch([1, 2])
    assert await batches.__anext__() is rb
    assert await batches.__anext__() == [1, 2]


async def test_events_are_not_available_on_derived_streams(app):
    with pytest.raises(TypeError, match="before filter"):
        app.channel().stream().map(str).events()
