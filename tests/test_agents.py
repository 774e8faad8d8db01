"""Agents: sinks, concurrency, crash and restart, on_error policies, test_context."""
import asyncio
import logging

import pyarrow as pa
import pytest

import sabot
from sabot import AgentError, ConfigurationError


@pytest.fixture
def app():
    return sabot.App("test-agents")


async def until(predicate, timeout=2.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_yielded_values_reach_every_sink(app):
    out_channel = app.channel()
    seen_by_callable = []
    results = out_channel.subscribe().values()

    @app.agent(app.channel(), sink=[out_channel, seen_by_callable.append])
    async def double(stream):
        async for value in stream:
            yield value * 2

    await app.start()
    try:
        await double.send_batch([1, 2, 3])
        assert [await results.__anext__() for _ in range(3)] == [2, 4, 6]
        await until(lambda: seen_by_callable == [2, 4, 6])
    finally:
        await app.stop()


async def test_agent_as_sink_of_another_agent(app):
    got = []

    @app.agent()
    async def second(stream):
        async for value in stream:
            got.append(value)

    @app.agent(sink=[second])
    async def first(stream):
        async for value in stream:
            yield value + 1

    await app.start()
    try:
        await first.send(value=1)
        await until(lambda: got == [2])
    finally:
        await app.stop()


async def test_yielded_record_batch_goes_to_sinks_without_copy(app):
    out = app.channel()
    batches = out.stream().batches()
    rb = pa.record_batch({"x": [1, 2]})

    @app.agent(sink=[out])
    async def passthrough(stream):
        async for batch in stream.batches():
            yield batch

    await app.start()
    try:
        await passthrough.send_batch(rb)
        assert await asyncio.wait_for(batches.__anext__(), 1) is rb
    finally:
        await app.stop()


async def test_concurrency_instances_share_the_input(app):
    seen = []
    running = set()

    @app.agent(app.channel(), concurrency=4)
    async def worker(stream):
        async for value in stream:
            running.add(asyncio.current_task())
            await asyncio.sleep(0.001)
            seen.append(value)

    await app.start()
    try:
        for i in range(40):
            await worker.send_batch([i * 10 + j for j in range(10)])
        await until(lambda: len(seen) == 400)
        assert sorted(seen) == list(range(400))  # each value exactly once
        assert len(running) == 4
    finally:
        await app.stop()


async def test_concurrency_overlaps_one_await_per_instance(app):
    """concurrency=N: N values of one batch are in progress at once (Faust's
    meaning), not one batch per instance."""
    in_progress = 0
    peak = 0
    gate = asyncio.Event()

    @app.agent(app.channel(), concurrency=50)
    async def io_bound(stream):
        nonlocal in_progress, peak
        async for _ in stream:
            in_progress += 1
            peak = max(peak, in_progress)
            await gate.wait()
            in_progress -= 1

    await app.start()
    try:
        await io_bound.send_batch(list(range(200)))  # one batch
        await until(lambda: peak == 50)
        assert in_progress == 50
        gate.set()
        await until(lambda: io_bound.events_in == 200)
    finally:
        await app.stop()


async def test_values_of_one_key_are_processed_in_order_one_at_a_time(app):
    import random
    rng = random.Random(7)
    busy = set()
    order = {}
    overlaps = []

    @app.agent(app.channel(), concurrency=16)
    async def keyed(stream):
        async for event in stream.events():
            key, seq = event.key, event.value
            if key in busy:
                overlaps.append(key)
            busy.add(key)
            await asyncio.sleep(rng.random() / 1000)
            order.setdefault(key, []).append(seq)
            busy.discard(key)

    await app.start()
    try:
        counters = {}
        for _ in range(400):
            key = f"k{rng.randrange(5)}"
            counters[key] = counters.get(key, -1) + 1
            await keyed.send(key=key, value=counters[key])
        await until(lambda: sum(map(len, order.values())) == 400, timeout=10)
        assert overlaps == []
        assert all(seqs == list(range(len(seqs))) for seqs in order.values())
    finally:
        await app.stop()


async def test_shared_values_acknowledge_a_batch_when_all_its_values_are_finished(app):
    from sabot._fastpath import Batch
    ch = app.channel()
    gates = {i: asyncio.Event() for i in range(4)}
    done, finished = [], []

    @app.agent(ch, concurrency=4)
    async def slow(stream):
        async for value in stream:
            await gates[value].wait()
            finished.append(value)  # the next __anext__ finishes it, in this step

    await app.start()
    try:
        await ch.publish(Batch([0, 1, 2, 3], on_done=lambda b: done.append(b)))
        for i in (3, 1, 0):
            gates[i].set()
        await until(lambda: len(finished) == 3)
        assert done == []  # value 2 is still in an instance
        gates[2].set()
        await until(lambda: done)
    finally:
        await app.stop()


async def test_shared_values_dead_letter_only_the_failing_value(app):
    ch = app.channel()
    seen = []
    dead = ch.dead_letter_channel().__aiter__()

    @app.agent(ch, concurrency=3, on_error="dead_letter")
    async def picky(stream):
        async for value in stream:
            await asyncio.sleep(0)
            if value == 5:
                raise ValueError("five")
            seen.append(value)

    await app.start()
    try:
        await ch.send_batch(list(range(10)))
        await until(lambda: len(seen) == 9)
        assert sorted(seen) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        assert await asyncio.wait_for(dead.__anext__(), 1) == 5
    finally:
        await app.stop()


async def test_crash_is_logged_counted_and_the_agent_restarts(app, caplog):
    seen = []

    @app.agent(app.channel(), on_error="skip")
    async def fragile(stream):
        async for value in stream:
            if value == "boom":
                raise ValueError("cannot handle boom")
            seen.append(value)

    await app.start()
    try:
        with caplog.at_level(logging.ERROR, logger="sabot.agents"):
            await fragile.send_batch(["a", "boom", "b"])
            await until(lambda: seen == ["a", "b"])
        assert fragile.crash_count == 1
        message = caplog.text
        assert "fragile" in message and "'boom'" in message and "cannot handle boom" in message
    finally:
        await app.stop()


async def test_dead_letter_policy_sends_the_failing_value_with_its_error(app):
    ch = app.channel(name="orders")
    dlq = ch.dead_letter_channel()
    dead = dlq.stream().events()

    @app.agent(ch)
    async def fragile(stream):
        async for value in stream:
            if value < 0:
                raise ValueError("negative")

    await app.start()
    try:
        await ch.send_batch([1, -5, 2])
        event = await asyncio.wait_for(dead.__anext__(), 2)
        assert dlq.name == "orders.dlq"
        assert event.value == -5
        assert b"negative" in event.headers["sabot-error"]
        assert event.headers["sabot-agent"].endswith(b"fragile")
    finally:
        await app.stop()


async def test_stop_policy_stops_the_agent_and_reports_the_crash(app):
    seen = []

    @app.agent(app.channel(), on_error="stop")
    async def strict(stream):
        async for value in stream:
            if value == 2:
                raise RuntimeError("stop here")
            seen.append(value)

    await app.start()
    try:
        await strict.send_batch([1, 2, 3])
        await asyncio.wait_for(app.wait_for_stop_request(), 2)
        assert seen == [1]
        assert isinstance(app.crash_reasons[0], AgentError)
        assert app.crash_reasons[0].value == 2
        assert not strict.running
    finally:
        await app.stop()


async def test_agent_that_crashes_before_reading_backs_off(app):
    @app.agent(app.channel(), on_error="skip")
    async def broken(stream):
        raise RuntimeError("bug at the top")
        yield  # pragma: no cover

    app.conf.agent_restart_backoff = 0.05
    await app.start()
    await asyncio.sleep(0.3)
    await app.stop()
    # Without back-off this would be thousands.
    assert 2 <= broken.crash_count <= 10


async def test_test_context_returns_what_the_agent_yields():
    app = sabot.App("ctx")

    @app.agent()
    async def shout(stream):
        async for value in stream:
            yield value.upper()
            yield value.upper() + "!"

    async with shout.test_context() as ctx:
        assert await ctx.put("hi") == ["HI", "HI!"]
        assert await ctx.put("yo") == ["YO", "YO!"]
        assert ctx.results == ["HI", "HI!", "YO", "YO!"]


async def test_test_context_for_an_agent_without_sink_or_yield():
    app = sabot.App("ctx2")
    totals = []

    @app.agent()
    async def add(stream):
        total = 0
        async for value in stream:
            total += value
            totals.append(total)

    async with add.test_context() as ctx:
        assert await ctx.put(2) == []
        assert await ctx.put(3) == []
        assert totals == [2, 5]


async def test_test_context_raises_the_agents_error():
    app = sabot.App("ctx3")

    @app.agent()
    async def picky(stream):
        async for value in stream:
            if value == "bad":
                raise ValueError("bad value")
            yield value

    async with picky.test_context() as ctx:
        with pytest.raises(ValueError, match="bad value"):
            await ctx.put("bad")
        assert await ctx.put("good") == ["good"]


async def test_test_context_with_a_batch():
    app = sabot.App("ctx4")

    @app.agent()
    async def sizes(stream):
        async for batch in stream.batches():
            yield len(batch)

    async with sizes.test_context() as ctx:
        assert await ctx.put_batch(pa.record_batch({"a": [1, 2, 3]})) == [3]


def test_agent_arguments_are_checked(app):
    async def fine(stream):
        async for _ in stream:
            pass

    def not_async(stream):
        return None

    with pytest.raises(ConfigurationError, match="async"):
        app.agent()(not_async)
    with pytest.raises(ConfigurationError, match="concurrency"):
        app.agent(concurrency=0)(fine)
    with pytest.raises(ConfigurationError, match="executor"):
        app.agent(executor="thread", name="x")(fine)
    with pytest.raises(ConfigurationError, match="on_error"):
        app.agent(on_error="ignore", name="y")(fine)
    app.agent(name="z")(fine)
    with pytest.raises(ConfigurationError, match="twice"):
        app.agent(name="z")(fine)


async def test_stopping_an_agent_mid_batch_does_not_acknowledge_it(app):
    from sabot._fastpath import Batch
    started = asyncio.Event()
    done = []

    @app.agent(app.channel())
    async def slow(stream):
        async for value in stream:
            started.set()
            await asyncio.sleep(10)

    await app.start()
    await slow.channel.publish(Batch([1, 2], on_done=done.append))
    await asyncio.wait_for(started.wait(), 1)
    await app.stop()
    assert done == []


async def test_stop_policy_leaves_the_failing_batch_unacknowledged(app):
    from sabot._fastpath import Batch
    done = []

    @app.agent(app.channel(), on_error="stop")
    async def strict(stream):
        async for value in stream:
            raise RuntimeError("no")

    await app.start()
    batch = Batch([1], on_done=done.append)
    await strict.channel.publish(batch)
    await asyncio.wait_for(app.wait_for_stop_request(), 1)
    await app.stop()
    assert done == [] and batch.abandoned


async def test_a_failed_sink_delivery_leaves_the_input_unacknowledged(app):
    from sabot._fastpath import Batch
    loop = asyncio.get_running_loop()
    futures = []

    class FailingSink:
        async def send(self, key=None, value=None, headers=None):
            fut = loop.create_future()
            futures.append(fut)
            return fut

    done = []

    @app.agent(app.channel(), sink=[FailingSink()])
    async def forward(stream):
        async for value in stream:
            yield value

    await app.start()
    try:
        batch = Batch([1], on_done=done.append)
        await forward.channel.publish(batch)
        await until(lambda: futures)
        futures[0].set_exception(ConnectionError("broker gone"))
        await forward.channel.send(value=2)  # the agent moves past the batch
        await asyncio.sleep(0.05)
        assert done == [] and batch.abandoned
    finally:
        await app.stop()


async def test_input_is_acknowledged_only_after_a_downstream_agent_finished(app):
    """kill -9 loses nothing across a chain of agents: the source offset waits
    for the last agent, not for the value to be queued in between."""
    from sabot._fastpath import Batch
    release = asyncio.Event()
    seen = []

    @app.agent(app.channel())
    async def downstream(stream):
        async for value in stream:
            await release.wait()
            seen.append(value)

    @app.agent(app.channel(), sink=[downstream])
    async def upstream(stream):
        async for value in stream:
            yield value * 10

    done = []
    await app.start()
    try:
        await upstream.channel.publish(Batch([1, 2], on_done=done.append))
        await asyncio.sleep(0.05)
        assert done == []  # queued downstream, not processed there yet
        release.set()
        await until(lambda: seen == [10, 20])
        await downstream.channel.send(value=0)  # downstream moves past its batch
        await until(lambda: len(done) == 1)
    finally:
        await app.stop()


async def test_a_downstream_agent_stopped_mid_value_leaves_the_input_unacknowledged(app):
    from sabot._fastpath import Batch
    started = asyncio.Event()
    middle = app.channel()

    @app.agent(middle)
    async def stuck(stream):
        async for value in stream:
            started.set()
            await asyncio.sleep(10)

    @app.agent(app.channel(), sink=[middle])
    async def upstream(stream):
        async for value in stream:
            yield value

    done = []
    await app.start()
    batch = Batch([1], on_done=done.append)
    await upstream.channel.publish(batch)
    await asyncio.wait_for(started.wait(), 1)
    await upstream.channel.send(value=2)  # upstream moves past: only the link holds it
    await asyncio.sleep(0.02)
    await app.stop()
    assert done == [] and batch.abandoned


async def test_memory_only_chains_pay_no_linking(app):
    out = app.channel()
    results = out.subscribe().values()

    @app.agent(app.channel(), sink=[out])
    async def double(stream):
        async for value in stream:
            yield value * 2

    await app.start()
    try:
        await double.send_batch([1, 2])
        assert [await results.__anext__() for _ in range(2)] == [2, 4]
        assert not results.current_batch.tracked
    finally:
        await app.stop()
