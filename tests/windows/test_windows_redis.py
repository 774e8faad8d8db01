"""Arrow windows fed by a real Redis stream (tests/servers/redis.py): one partition
(the stream), RecordBatches under the arrow codec, a late row dead-lettered."""
import pyarrow as pa
import pytest

from sabot.windows import count, sum, tumbling
from tests.channels.redis_streams import make_app
from tests.helpers import running, unique, until
from tests.windows import reference as ref

pytestmark = pytest.mark.redis


async def test_windows_from_a_redis_stream(redis_server):
    app = make_app(redis_server)
    name = unique("clicks")
    channel = app.redis_channel(name, value_serializer="arrow")
    results, operators = [], []

    @app.agent(channel)
    async def windows(stream):
        op = stream.window(tumbling(10), key="user", time="ts").agg(
            n=count(), total=sum("amount"))
        operators.append(op)
        async for closed in op.final():
            results.append(closed)

    batches = ref.make_input(n=1200, keys=7, batch=200, jitter_ms=1, late_every=0)
    late_row = pa.RecordBatch.from_pylist([{"id": 99_999, "user": "u1", "ts": 1000.5,
                                            "amount": 5}])
    closer = pa.RecordBatch.from_pylist([{"id": -1, "user": "end", "ts": 5000.0, "amount": 0}])
    async with running(app):
        for batch in batches + [late_row, closer]:
            await channel.send(value=batch)
        expected = ref.tumbling_ref(batches, 10, set())
        await until(lambda: len(ref.as_rows(results)) >= len(expected),
                    what="every window of the input emitted")
        op = operators[0]
        await until(lambda: op.late_count == 1, what="the late row counted")
        client = redis_server.client()
        letters = await until(lambda: client.xrange(name + ".dlq"), what="the dead letter")
    assert ref.as_rows(results) == expected
    fields = letters[0][1]
    assert fields[b"sabot-error"].startswith(b"late: event time 1000.5 < watermark ")
