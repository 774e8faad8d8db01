"""ValueDispatcher: the instances of an agent sharing the values of a channel."""
import asyncio

import sabot


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
        await asyncio.wait_for(keyed.join(), 10)
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
        await asyncio.wait_for(keyed.join(), 10)
    finally:
        await app.stop()
    for key in (0, 1):
        values = [v for k, v in seen if k == key]
        assert values == sorted(values) and len(values) == 20
