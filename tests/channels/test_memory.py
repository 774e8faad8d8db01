"""In-memory channels: fan-out, order, zero copy, weak subscribers, get/put, close, acks.

Backpressure is in test_backpressure.py, the iterators in test_iterators.py,
schema checks in tests/test_schema.py.
"""
import asyncio
import gc

import pyarrow as pa
import pytest

import sabot
from sabot import ChannelClosed, ConfigurationError
from sabot._fastpath import Batch
from tests.helpers import SCHEMA, Acks, drain, idle, until, watch_waits


@pytest.fixture
def app():
    return sabot.App("test-memory")


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
    await until(lambda: ch.subscriber_count == 1, what="the reader to subscribe")
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


# -- ordering and fan-out ----------------------------------------------------

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


# -- weakly held subscribers -------------------------------------------------

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
        waits = [watch_waits(it) for it in its]
        tasks = [asyncio.ensure_future(reader(i)) for i in range(3)]
        await until(lambda: all(waits), what="every reader to wait")
        done = []
        gc.disable()
        try:
            del holder
            loop.collect_now = True             # at the first wake() in the fan-out
            await ch.publish(Batch(["x"], on_done=lambda b: done.append(1)))
        finally:
            gc.enable()
        await idle()                        # every reader the fan-out woke has taken "x"
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
        waits = [watch_waits(it) for it in its]
        tasks = [asyncio.ensure_future(reader(i)) for i in range(3)]
        await until(lambda: all(waits), what="every reader to wait")
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


# -- what a batch carries ----------------------------------------------------

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


async def test_list_batch_is_moved_by_reference(app):
    ch = app.channel()
    stream_a, stream_b = ch.stream(), ch.stream()
    raw_a, raw_b = stream_a.raw_batches(), stream_b.raw_batches()
    values = [object(), object()]
    await ch.send_batch(values)
    (a,), (b,) = await drain(raw_a, 1), await drain(raw_b, 1)
    assert a is b and a.payload is values


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


# -- get ---------------------------------------------------------------------

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


async def test_get_on_a_closed_channel_raises_channel_closed(app):
    ch = app.channel()
    await ch.close()
    with pytest.raises(ChannelClosed):
        await ch.get(timeout=1)


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
    await until(short.done, what="the short get to time out")
    assert isinstance(short.exception(), asyncio.TimeoutError)
    assert not long.done()                        # actual (cython): cancelled
    await ch.send(value=42)
    assert await long == 42


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
    waits = watch_waits(it)
    task = asyncio.ensure_future(reader())
    await until(lambda: len(waits) == 1, what="the reader to wait")
    await ch.send(value=1)
    await until(lambda: len(waits) == 2, what="the reader to take 1 and wait again")
    await ch.close()
    await asyncio.wait_for(task, 1)
    assert got == [1]


async def test_a_sender_waiting_for_capacity_gets_channel_closed(app):
    ch = app.channel(maxsize=2)
    it = ch.__aiter__()
    await ch.send(value=1)
    waiting = asyncio.ensure_future(ch.send(value=2))
    waiting_batch = asyncio.ensure_future(ch.send_batch([3]))
    await until(lambda: ch.sent_count == 3, what="both sends in the channel")
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


# -- acknowledgement (on_done) -----------------------------------------------

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
