"""The iterators of a subscription (values, events, batches): every value comes
out as the very object sent, whatever it is; cancellation and timeouts around
``__anext__`` lose nothing; a batch is walked without suspending.

Both twins (``sabot/_cython/channels.pyx`` and ``channels_py.py``) run these.
"""
import asyncio
import gc

import pytest

import sabot
from tests.helpers import drain, odd_values, until, watch_waits


@pytest.fixture
def app():
    return sabot.App("test-iterators")


# -- values pass through unchanged -------------------------------------------

async def test_odd_values_come_out_of_the_value_iterator_as_the_same_objects(app):
    ch = app.channel()
    it = ch.__aiter__()
    values = odd_values(asyncio.get_running_loop())
    for value in values:                       # one at a time: the open batch
        await ch.send(value=value)
    await ch.send_batch(values)                # a whole list batch
    out = await drain(it, 2 * len(values))
    assert len(out) == 2 * len(values)
    assert all(a is b for a, b in zip(out, values + values))


async def test_odd_values_survive_the_waiting_path_of_the_iterator(app):
    ch = app.channel()
    it = ch.__aiter__()
    values = odd_values(asyncio.get_running_loop())
    out = []

    async def reader():
        for _ in values:
            out.append(await it.__anext__())
    waits = watch_waits(it)
    task = asyncio.ensure_future(reader())
    for i, value in enumerate(values):
        # the reader is suspended each time
        await until(lambda: len(waits) == i + 1, what="the reader to wait")
        await ch.send(value=value)
    await asyncio.wait_for(task, 1)
    assert all(a is b for a, b in zip(out, values)) and len(out) == len(values)


async def test_values_pass_unchanged_with_a_tracer_installed(app):
    # Under a tracer (coverage, debuggers) the interpreter drives awaitables
    # through __next__/send instead of the fast slot.
    import sys
    ch = app.channel()
    it = ch.__aiter__()
    values = odd_values(asyncio.get_running_loop())
    out = []

    async def reader():
        async for value in it:
            out.append(value)
            if len(out) == 2 * len(values):
                return

    def tracer(frame, event, arg):
        return tracer
    waits = watch_waits(it)
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        task = asyncio.ensure_future(reader())
        await ch.send_batch(list(values))
        for i, value in enumerate(values):
            # the reader walked what it had and is suspended
            await until(lambda: len(waits) == i + 1, what="the reader to wait")
            await ch.send(value=value)
        await asyncio.wait_for(task, 1)
    finally:
        sys.settrace(previous)
    assert len(out) == 2 * len(values)
    assert all(a is b for a, b in zip(out, values + values))


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


# -- cancellation around __anext__ -------------------------------------------

@pytest.mark.parametrize("kind", ["values", "events", "raw_batches"])
async def test_cancelling_a_woken_anext_loses_nothing(app, kind):
    ch = app.channel()
    stream = ch.stream()
    it = {"values": stream.__aiter__, "events": stream.events,
          "raw_batches": stream.raw_batches}[kind]()
    waits = watch_waits(it)
    for round_ in range(5):
        task = asyncio.ensure_future(it.__anext__())
        await until(lambda: len(waits) == round_ + 1,   # suspended on an empty queue
                    what="the __anext__ to wait")
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


async def test_a_cancelled_consumer_task_leaves_the_value_for_the_next_reader(app):
    ch = app.channel()
    it = ch.__aiter__()

    async def consume_one():
        async for value in it:
            return value
    waits = watch_waits(it)
    task = asyncio.ensure_future(consume_one())
    await until(lambda: waits, what="the consumer to wait")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ch.send(value="kept")
    assert await drain(it, 1) == ["kept"]


def _live_futures():
    gc.collect()
    return sum(1 for o in gc.get_objects()
               if isinstance(o, asyncio.Future) and not isinstance(o, asyncio.Task))


# BUG 14 (both): every timed-out or cancelled wait on an empty channel leaves
# its waiter future in the subscriber's waiter list (Cython throw() cancels it,
# the pure twin's await is cancelled, neither removes it); the list is only
# emptied when a value arrives. A consumer polling an idle channel with
# get(timeout=...) or wait_for(__anext__) therefore grows memory without bound
# for as long as the channel stays idle (2000 timeouts -> 2000 live futures),
# and the next send then walks all of them.
async def test_timed_out_waits_do_not_accumulate_waiter_futures(app):
    ch = app.channel()
    await ch.put(0)
    assert await ch.get() == 0
    before = _live_futures()
    for _ in range(2000):
        with pytest.raises(asyncio.TimeoutError):
            await ch.get(timeout=0.00001)
    assert _live_futures() - before < 50               # was: 2001
