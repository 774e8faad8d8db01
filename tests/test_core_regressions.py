"""Regression tests for bugs the second (contract) test suite found in the core.

Each test names the bug it guards against; all run on both the Cython path and
the pure-Python twin.
"""
import asyncio
import gc

import pyarrow as pa
import pytest

import sabot
from sabot import SchemaError
from sabot._fastpath import Batch



@pytest.fixture
def app():
    return sabot.App("core-bugs", agent_restart_backoff=0.01)


class FutureSink:
    def __init__(self):
        self.futures = []

    async def send(self, key=None, value=None, headers=None):
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


# BUG 1 (both): take(n, within) over a derived stream ends the stream for good
# after the first partial chunk. take() wraps the parent's __anext__ in
# asyncio.wait_for; when the parent is an async generator (filter/map/...), the
# timeout's cancellation is thrown into that generator, which finishes it; the
# next __anext__ raises StopAsyncIteration and take() returns. The docs'
# own example (agents-and-streams.md: filter().map().take(3, within=0.1))
# hits it.
async def test_take_within_over_filter_keeps_going_after_a_partial_chunk(app):
    ch = app.channel()
    it = ch.stream().filter(lambda v: True).take(3, within=0.02).__aiter__()
    await ch.send(value=1)
    assert await asyncio.wait_for(it.__anext__(), 1) == [1]
    await ch.send_batch([2, 3, 4])
    # expected [2, 3, 4]; actual: StopAsyncIteration (the stream has ended)
    assert await asyncio.wait_for(it.__anext__(), 1) == [2, 3, 4]


# BUG 1, consequence in an agent (both): the agent function returns as if its
# input had closed, but its subscription stays, so the sender blocks forever
# once maxsize values are queued: a deadlock.
async def test_agent_with_filter_take_within_does_not_stop_and_block_the_sender(app):
    ch = app.channel(maxsize=4)
    chunks = []

    @app.agent(ch)
    async def odd_tens(stream):
        async for chunk in stream.filter(lambda v: v % 2).map(lambda v: v * 10).take(3, within=0.02):
            chunks.append(chunk)
    await app.start()
    try:
        await ch.send_batch([1, 2, 3, 4, 5, 6, 7])
        await asyncio.sleep(0.1)
        assert chunks == [[10, 30, 50], [70]]
        # expected: these are processed; actual: odd_tens has finished
        # (running is False) and the 4th send waits forever.
        await asyncio.wait_for(ch.send_batch([9, 11, 13]), 1)
        for i in range(20):
            await asyncio.wait_for(ch.send(value=i), 1)
        assert odd_tens.running
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
        await asyncio.sleep(0.05)
        assert len(sink.futures) == 1
        # expected []; actual ['first']
        assert done == []
        sink.futures[0].set_result(None)
        await asyncio.sleep(0.01)
        assert sorted(done) == ["first", "second"]
    finally:
        await app.stop()


# BUG 3 (both): an int that is out of range for the field's integer type (or
# negative for an unsigned one) passes the per-row check at send(); the
# conversion fails later, at flush, with a SchemaError that names no field,
# raised to whoever flushes (a later sender, close(), or only a log line from
# the linger task) -- and every good row gathered with it is dropped.
async def test_out_of_range_int_is_rejected_at_send_naming_the_field(app):
    ch = app.channel(schema=pa.schema([("x", pa.int8())]), linger=60)
    it = ch.__aiter__()
    await ch.send(value={"x": 5})
    with pytest.raises(SchemaError) as info:     # was: no error here
        await ch.send(value={"x": 1000})
    assert info.value.field == "x"
    await ch.flush()
    assert it.poll("nothing") == {"x": 5}        # the good row is still there


async def test_out_of_range_int_does_not_lose_the_good_rows(app):
    ch = app.channel(schema=pa.schema([("x", pa.uint8())]), linger=60)
    it = ch.__aiter__()
    await ch.send(value={"x": 5})
    try:
        await ch.send(value={"x": -1})
    except SchemaError:
        pass
    try:
        await ch.flush()                          # was: SchemaError, field=None
    except SchemaError:
        pass
    assert it.poll("nothing") == {"x": 5}         # was: "nothing" (row lost)


# BUG 4 (cython only): two tasks calling channel.get(timeout=...) at the same
# time share the channel's own ValueIterator; in Cython __anext__ returns the
# iterator itself and throw() cancels its *current* waiter future, which is the
# other caller's. So one caller's timeout cancels the other's get: it raises
# CancelledError although nobody cancelled it. Pure Python: the second get
# returns the value. (Same with any two tasks awaiting one iterator's __anext__.)
async def test_one_get_timing_out_does_not_cancel_another_get(app):
    ch = app.channel()
    await ch.put(0)
    assert await ch.get() == 0
    short = asyncio.ensure_future(ch.get(timeout=0.02))
    long = asyncio.ensure_future(ch.get(timeout=2))
    await asyncio.sleep(0.05)
    assert isinstance(short.exception(), asyncio.TimeoutError)
    assert not long.done()                        # actual (cython): cancelled
    await ch.send(value=42)
    assert await long == 42


# BUG 5 (both): an agent that uses take() and crashes under on_error="skip" or
# "dead_letter" never acknowledges the batches of the failing chunk: the old
# take() generator is finalized and *abandons* what it held. Docs: skip =
# "dropped", agent "restarted from the next value" (a plain `async for` agent
# does ack in that case). On Kafka the committed offset can then never move
# past that batch until a restart, which redelivers everything after it.
# Also, dead_letter sends only the chunk's last value (2) to the DLQ; 1 is
# silently lost.
@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
async def test_take_agent_crash_under_skip_still_acks_the_chunk(app, policy):
    ch = app.channel()
    done = []
    chunks = []

    @app.agent(ch, on_error=policy)
    async def chunked(stream):
        async for chunk in stream.take(2):
            chunks.append(chunk)
            if 2 in chunk:
                raise ValueError("bad chunk")
    dlq = ch.dead_letter_channel().__aiter__()
    await app.start()
    try:
        await ch.publish(Batch([1], on_done=lambda b: done.append("a")))
        await ch.publish(Batch([2], on_done=lambda b: done.append("b")))
        await ch.publish(Batch([3, 4], on_done=lambda b: done.append("c")))
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0.05)
        assert chunks == [[1, 2], [3, 4]]
        assert sorted(done) == ["a", "b", "c"]     # was: ["c"]
        if policy == "dead_letter":
            dead = []
            while (v := dlq.poll("none")) != "none":
                dead.append(v)
            assert dead in ([[1, 2]], [1, 2])     # was: [2]
    finally:
        await app.stop()


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

    async def produce():
        nonlocal sent
        for i in range(200):
            await ch.send(value={"x": i})
            sent += 1
            await asyncio.sleep(0.002)
    task = asyncio.ensure_future(produce())
    await asyncio.sleep(0.8)
    task.cancel()
    # expected: the sender is held near maxsize; actual: sent == 200, lag 200
    assert stalled.subscriber.lag <= 5 + 5
    assert sent < 200


# BUG 7 (both): close() of a schema'd channel with gathered rows waits for
# capacity while flushing them; with a subscriber that is not reading it never
# returns and the channel never closes (a plain channel closes at once in the
# same situation). Any sender waiting on that channel is not released either.
async def test_close_of_schema_channel_returns_with_a_stalled_reader(app):
    ch = app.channel(schema=pa.schema([("x", pa.int64())]), maxsize=2, linger=60)
    stalled = ch.__aiter__()
    await ch.send(value={"x": 1})
    await ch.send(value={"x": 2})
    await asyncio.wait_for(ch.close(), 1)         # was: TimeoutError
    assert ch.closed
    assert [v async for v in stalled] == [{"x": 1}, {"x": 2}]


# BUG 8 (both): on_error="stop" with concurrency=N stops only the instance that
# crashed; the other instances keep taking and processing (and acking) values
# after the failing one, and agent.running stays True. Docs: "stop: the agent
# is stopped; the app crashes".
async def test_stop_policy_stops_every_instance(app):
    ch = app.channel()
    seen = []

    @app.agent(ch, concurrency=2, on_error="stop")
    async def fragile(stream):
        async for value in stream:
            seen.append(value)
            if value == 0:
                raise ValueError("zero")
            await asyncio.sleep(0.001)
    await app.start()
    try:
        for i in range(10):
            await ch.send_batch([i])
        await asyncio.sleep(0.1)
        assert app.crash_reasons
        assert not fragile.running                 # was: True
        assert len(seen) <= 2                      # was: all 10 processed
    finally:
        await app.stop()


class ArrayLike:
    """Compares like a numpy array: == gives an object with no truth value."""

    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        class Ambiguous:
            def __bool__(self):
                raise ValueError("The truth value of an array is ambiguous")
        return Ambiguous()

    __hash__ = object.__hash__


# BUG 9 (both): Agent._run_instance decides whether a restart made progress by
# comparing (current_batch, current_value()) with ==. When two values of one
# batch crash the agent and the values are array-like (numpy arrays, pandas
# objects: == returns something without a truth value), the comparison raises
# outside the try: the instance task dies with that ValueError, silently --
# no log, no crash_count, no app crash, running becomes False, and the rest
# of the batch is never processed (nor acked). Identity (`is`) would do.
async def test_agent_survives_two_crashes_on_array_like_values_in_one_batch(app):
    ch = app.channel()
    seen = []

    @app.agent(ch, on_error="skip")
    async def fragile(stream):
        async for value in stream:
            seen.append(value.n)
            if value.n in (1, 2):
                raise RuntimeError(value.n)
    await app.start()
    try:
        await ch.send_batch([ArrayLike(i) for i in range(5)])
        await asyncio.sleep(0.1)
        assert seen == [0, 1, 2, 3, 4]             # was: [0, 1, 2]
        assert fragile.running                     # was: False
    finally:
        await app.stop()


class _GCLoop(asyncio.SelectorEventLoop):
    """Runs a garbage collection at the next call_soon, as an allocation may."""

    collect_now = False

    def call_soon(self, *args, **kwargs):
        if self.collect_now:
            self.collect_now = False
            gc.collect()
        return super().call_soon(*args, **kwargs)


class _Cycle:
    pass


# BUG 10 (both): FanOut._push iterates self._states while waking waiting
# readers (fut.set_result -> loop.call_soon allocates); a garbage collection at
# that moment runs the weakref callback of a subscriber that was only kept by
# a reference cycle, and _drop removes it from the very list being iterated.
# The next live subscriber is skipped: it never receives the batch, and the
# batch's on_done never fires (refs were acquired for every subscriber). The
# same loop shape is in FanOut.close() (a skipped reader is never woken and
# hangs). Here the collection is made deterministic with a loop whose
# call_soon collects; in production any gen-0 collection there does it.
def test_a_subscriber_collected_during_fan_out_does_not_make_another_miss_the_batch():
    loop = _GCLoop()

    async def main():
        app = sabot.App("gc-during-fan-out")
        ch = app.channel()
        holder = _Cycle()
        holder.me = holder
        holder.it = ch.__aiter__()              # first subscriber, held by a cycle
        its = [ch.__aiter__() for _ in range(3)]
        got = {i: [] for i in range(3)}

        async def reader(i):
            async for value in its[i]:
                got[i].append(value)
        tasks = [asyncio.ensure_future(reader(i)) for i in range(3)]
        await asyncio.sleep(0.01)               # every reader waits
        done = []
        gc.disable()
        try:
            del holder
            loop.collect_now = True             # at the first wake() in the fan-out
            await ch.publish(Batch(["x"], on_done=lambda b: done.append(1)))
        finally:
            gc.enable()
        await asyncio.sleep(0.05)
        for it in its:
            it.poll()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return got, done
    try:
        got, done = loop.run_until_complete(main())
    finally:
        loop.close()
    assert got == {0: ["x"], 1: ["x"], 2: ["x"]}    # was: {0: ['x'], 1: [], 2: ['x']}
    assert done == [1]                               # was: []


# BUG 10, close() variant (both): the skipped reader is never woken and waits
# forever although the channel is closed.
def test_a_subscriber_collected_during_close_does_not_leave_a_reader_hanging():
    loop = _GCLoop()

    async def main():
        app = sabot.App("gc-during-close")
        ch = app.channel()
        holder = _Cycle()
        holder.me = holder
        holder.it = ch.__aiter__()
        its = [ch.__aiter__() for _ in range(3)]

        async def reader(i):
            return [v async for v in its[i]]
        tasks = [asyncio.ensure_future(reader(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        gc.disable()
        try:
            del holder
            loop.collect_now = True
            await ch.close()
        finally:
            gc.enable()
        done, pending = await asyncio.wait(tasks, timeout=0.5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(pending)
    try:
        pending = loop.run_until_complete(main())
    finally:
        loop.close()
    assert pending == 0                              # was: 1 reader still waiting


# BUG 11 (both): AgentTestContext.put_batch(iterable) on an agent whose channel
# has a schema iterates the values once to check them and then builds the
# RecordBatch from the same, now exhausted, iterator: a generator becomes an
# empty batch and put_batch returns [] without the agent seeing anything.
# (channel.send_batch takes the same generator correctly: it makes a list.)
async def test_test_context_put_batch_of_a_generator_on_a_schema_agent(app):
    ch = app.channel(schema=pa.schema([("x", pa.int64())]))

    @app.agent(ch)
    async def xs(stream):
        async for row in stream:
            yield row["x"]
    async with xs.test_context() as ctx:
        assert await ctx.put_batch({"x": i} for i in range(3)) == [0, 1, 2]   # was: []


# BUG 12 (both): values that take() has buffered for an unfinished chunk are
# lost when the stream below it raises (here filter's predicate on 5): the
# take() generator dies with its buffer, the agent is restarted with a new
# take(), and 4 -- read, never processed -- is neither processed, nor dead-
# lettered (only 5 is), nor is its batch ever acknowledged (on_done never
# fires, so on a broker the whole batch, 1..9, would be redelivered later).
async def test_take_does_not_lose_its_buffer_when_the_parent_raises(app):
    ch = app.channel()
    chunks = []
    done = []

    def not_five(v):
        if v == 5:
            raise ValueError("five")
        return True

    @app.agent(ch, on_error="dead_letter")
    async def chunked(stream):
        async for chunk in stream.filter(not_five).take(3):
            chunks.append(chunk)
    dlq = ch.dead_letter_channel().__aiter__()
    await app.start()
    try:
        await ch.publish(Batch(list(range(1, 10)), on_done=lambda b: done.append(1)))
        await ch.close()
        await chunked.join(1)
        dead = []
        while (v := dlq.poll("none")) != "none":
            dead.append(v)
        processed = [v for chunk in chunks for v in chunk]
        # was: processed [1, 2, 3, 6, 7, 8, 9], dead [5], done []
        assert sorted(processed + dead) == list(range(1, 10))
        assert done == [1]
    finally:
        await app.stop()


# BUG 13 (both, minor): AgentTestContext.put_batch(RecordBatch) skips the
# schema check that the agent's real channel applies, so a test feeds the
# agent a batch production would reject. channel.send_batch of the same
# batch raises SchemaError (field 'x' missing).
async def test_test_context_put_batch_checks_a_record_batch_schema(app):
    ch = app.channel(schema=pa.schema([("x", pa.int64())]))

    @app.agent(ch)
    async def rows(stream):
        async for row in stream:
            yield row
    wrong = pa.record_batch([pa.array(["a"])], names=["y"])
    with pytest.raises(SchemaError):
        await ch.send_batch(wrong)
    async with rows.test_context() as ctx:
        with pytest.raises(SchemaError):            # was: returns [{'y': 'a'}]
            await ctx.put_batch(wrong)


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


# BUG 15: a nullability-only mismatch named no field. Now a batch whose
# nullable column holds no nulls is accepted (re-labelled, no copy), and one
# with nulls in a non-nullable field is rejected naming the field.
async def test_nullability_mismatch_is_accepted_without_nulls_and_named_with_them(app):
    schema = pa.schema([pa.field("sym", pa.string(), nullable=False), ("px", pa.float64())])
    ch = app.channel(schema=schema)
    batches = ch.stream().batches()
    rb = pa.record_batch([pa.array(["a"]), pa.array([1.0])], names=["sym", "px"])
    await ch.send_batch(rb)
    got = await batches.__anext__()
    assert got.schema.equals(schema) and got.column(0).to_pylist() == ["a"]
    with_null = pa.record_batch([pa.array([None], pa.string()), pa.array([1.0])], names=["sym", "px"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(with_null)
    assert info.value.field == "sym"


# BUG 1, root cause (both): iterators of derived streams (filter, map,
# enumerate, echo, take) are async generators, so one cancelled __anext__ (an
# asyncio.wait_for timeout) finishes them: the stream ends, and a value the
# operator had already pulled (here 1, inside an async map function) is lost
# with the rest of the batch (2). The root iterators are cancellation-safe.
async def test_a_timeout_around_a_derived_stream_anext_loses_nothing(app):
    ch = app.channel()

    async def slow(v):
        await asyncio.sleep(0.05)
        return v
    it = ch.stream().map(slow).__aiter__()
    await ch.send_batch([1, 2])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(it.__anext__(), 0.01)
    # was: StopAsyncIteration
    assert await asyncio.wait_for(it.__anext__(), 1) == 1
    assert await asyncio.wait_for(it.__anext__(), 1) == 2
