"""ValueDispatcher: the instances of an agent sharing the values of a channel.

``concurrency=N``: values handed out in order, one key at a time, N awaits
overlapping; a batch acknowledged once every one of its values is finished.
"""
import asyncio

import pytest

import sabot
from tests.helpers import Acks, until

pytestmark = pytest.mark.usefixtures("quiet_sabot_logs")


@pytest.fixture
def app():
    return sabot.App("test-value-dispatch", agent_restart_backoff=0.01)


async def test_keyed_values_end_when_the_channel_closes():
    """Instances waiting for a busy key, or for data, all see the end."""
    app = sabot.App("dispatch-end")
    ch = app.channel()
    seen = []

    @app.agent(ch, concurrency=8)
    async def keyed(stream):
        async for event in stream.events():
            await asyncio.sleep(0.001)
            seen.append((event.key, event.value))

    await app.start()
    try:
        for i in range(200):
            await ch.send(key=i % 3, value=i)
        await ch.close()
        await asyncio.wait_for(keyed.wait_done(), 10)
    finally:
        await app.stop()
    assert sorted(v for _, v in seen) == list(range(200))
    for key in range(3):
        values = [v for k, v in seen if k == key]
        assert values == sorted(values)


async def test_unhashable_keys_keep_their_order_by_repr():
    app = sabot.App("dispatch-unhashable")
    ch = app.channel()
    seen = []

    @app.agent(ch, concurrency=4)
    async def keyed(stream):
        async for event in stream.events():
            await asyncio.sleep(0)
            seen.append((event.key["k"], event.value))

    await app.start()
    try:
        for i in range(40):
            await ch.send(key={"k": i % 2}, value=i)
        await ch.close()
        await asyncio.wait_for(keyed.wait_done(), 10)
    finally:
        await app.stop()
    for key in (0, 1):
        values = [v for k, v in seen if k == key]
        assert values == sorted(values) and len(values) == 20


# -- sharing the values of a batch -------------------------------------------

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


# -- acknowledgement and crashes under concurrency ---------------------------

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
        await until(lambda: worker.events_in == 4, what="every value finished")
        assert sorted(acks.calls) == [0, 1, 2, 3]
        assert all(acks.count(i) == 1 for i in range(4))
        assert worker.events_in == 4
    finally:
        await app.stop()


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
        # A crashing value is counted (and skipped) before it is finished, and
        # a batch is acknowledged once all its values are: every crash is in.
        await until(lambda: len(acks.calls) == 10)
        assert sorted(seen) == list(range(30))
        assert sorted(acks.calls) == list(range(0, 30, 3))
        assert fragile.crash_count == 6
        assert fragile.running
    finally:
        await app.stop()
