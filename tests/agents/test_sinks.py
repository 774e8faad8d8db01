"""Sinks: where an agent's results go, and the input they hold unacknowledged
until the delivery is done (a delivery future, a downstream agent).
"""
import asyncio

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from tests.helpers import Acks, idle, odd_values, until

pytestmark = pytest.mark.usefixtures("quiet_sabot_logs")


@pytest.fixture
def app():
    return sabot.App("test-sinks", agent_restart_backoff=0.01)


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


async def test_agent_yielding_odd_values_hands_them_to_sinks_unchanged(app):
    values = odd_values(asyncio.get_running_loop())
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


# -- the input waits for the delivery ----------------------------------------

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
        # The agent is inside the sink's delivery: the value is not finished yet.
        await until(lambda: ("sink-start", 1) in order)
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
        b = acks.batch([1, 2], "b")
        await ch.publish(b)
        await ch.publish(acks.batch([3], "c"))
        # The agent handed 30 to both sinks and, in the same step, asked for
        # the next value: it has moved past both batches.
        await until(lambda: len(sink.futures) == 3 and len(other.futures) == 3)
        assert sink.values == [10, 20, 30]
        assert acks.calls == []
        for fut in sink.futures:
            fut.set_result(None)
        await idle()                            # the futures' callbacks have run
        assert acks.calls == []                     # `other` still pending
        other.futures[0].set_result(None)
        other.futures[2].set_result(None)
        await until(lambda: acks.calls, what="an acknowledgement")
        assert acks.calls == ["c"]
        other.futures[1].set_exception(RuntimeError("delivery failed"))
        await until(lambda: b.abandoned, what="the failed delivery to abandon its input")
        # A failed delivery abandons its input: "b" is never acknowledged,
        # so a transport would deliver it again after a restart.
        assert acks.calls == ["c"]
        assert acks.count("b") == 0 and acks.count("c") == 1
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
        # "b" handed over after the crash, and the batch moved past in that step
        await until(lambda: len(sink.futures) == 2)
        assert half.crash_count == 1
        assert acks.calls == []
        sink.futures[1].set_result(None)
        await idle()                            # the future's callback has run
        assert acks.calls == []
        sink.futures[0].set_result(None)
        await until(lambda: acks.calls, what="the acknowledgement")
        assert acks.calls == ["x"]
    finally:
        await app.stop()


# BUG 2 (both): with take(), a sink's unfinished delivery future holds only the
# batch of the chunk's *last* value. The earlier batches behind the chunk are
# released when the agent asks for the next chunk, so their on_done (a Kafka
# commit, a Redis XACK) fires before the output is delivered. Docs: "A sink
# whose send returns an unfinished delivery future keeps the input batch
# unacknowledged until that future completes"; take "holds the batches behind
# a list until the next list is asked for".
async def test_take_chunk_spanning_batches_waits_for_the_delivery_future(app):
    ch = app.channel()
    sink = FutureSink()
    done = []

    @app.agent(ch, sink=[sink])
    async def chunked(stream):
        async for chunk in stream.take(2):
            yield chunk
    await app.start()
    try:
        await ch.publish(Batch([1], on_done=lambda b: done.append("first")))
        await ch.publish(Batch([2], on_done=lambda b: done.append("second")))
        # The chunk went to the sink and the next chunk was asked for in one
        # step: take() let go of both batches.
        await until(lambda: sink.futures, what="the chunk at the sink")
        assert len(sink.futures) == 1
        # expected []; actual ['first']
        assert done == []
        sink.futures[0].set_result(None)
        await until(lambda: len(done) == 2, what="both batches acknowledged")
        assert sorted(done) == ["first", "second"]
    finally:
        await app.stop()


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
        await until(lambda: len(futures) == 2, what="the agent to deliver 2")
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
        # upstream sent both on and moved past its batch: only the links hold it
        await until(lambda: upstream.events_in == 2, what="upstream to finish its batch")
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
    await until(lambda: upstream.events_in >= 1, what="upstream to move past the batch")
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


def test_failed_deliveries_of_one_kind_log_one_line_per_interval(caplog, monkeypatch):
    # An aborted transaction fails every output in it: one line, not thousands.
    from sabot.agents import sinks
    clock = [100.0]
    monkeypatch.setattr(sinks.time, "monotonic", lambda: clock[0])
    log = sinks.FailureLog(interval=5.0)
    with caplog.at_level("ERROR", logger="sabot.agents"):
        for _ in range(1000):
            log.failed("UnknownError()")
        log.failed("TimeoutError()")            # another kind gets its own line
        assert [r.getMessage() for r in caplog.records] == [
            "delivery failed (UnknownError()): the input stays unacknowledged",
            "delivery failed (TimeoutError()): the input stays unacknowledged"]
        clock[0] += 5.0
        log.failed("UnknownError()")            # the next interval says what it left out
        assert caplog.records[-1].getMessage() == (
            "delivery failed (UnknownError()): the input stays unacknowledged "
            "(999 more failed the same way since the last line)")
        clock[0] += 5.0
        log.failed("UnknownError()")
        assert caplog.records[-1].getMessage().endswith("unacknowledged")


def test_failure_log_forgets_the_oldest_kinds():
    from sabot.agents import sinks
    log = sinks.FailureLog()
    for i in range(log.max_kinds + 10):
        log.failed(f"Error({i})")
    assert len(log._kinds) == log.max_kinds
