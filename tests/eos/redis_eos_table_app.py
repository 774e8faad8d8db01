"""A real worker process for the Redis exactly-once crash test with a table
(test_redis_eos_tables.py).

    python redis_eos_table_app.py REDIS_URL IN_STREAM OUT_STREAM APP_ID DATADIR

Counts the values of IN_STREAM by ``i % 7`` in a table (the broker is the
Redis server, so its changelog is a stream there; LMDB stores under
DATADIR, kept across the worker's lives) and yields each value with its
count to OUT_STREAM, exactly once, until it is killed.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402
from sabot.worker import Worker  # noqa: E402

KEYS = 7


def build(url: str, source: str, target: str, app_id: str, datadir: str) -> "sabot.App":
    app = sabot.App(app_id, broker=url, redis_claim_idle_ms=300,
                    processing_guarantee="exactly_once", worker_id="eos-worker",
                    stream_batch_size=50, datadir=datadir, broker_commit_interval=0.1)
    counts = app.Table("counts", default=int)
    out = app.redis_channel(target, value_serializer="json")

    @app.agent(app.redis_channel(source, value_serializer="json"), sink=[out], name="count")
    async def count(values):
        async for value in values:
            key = value["i"] % KEYS
            counts[key] += 1
            if value["i"] % 10 == 0:
                await asyncio.sleep(0.01)  # slow enough to be killed half way
            yield {"i": value["i"], "key": key, "count": counts[key], "by": os.getpid()}

    return app


if __name__ == "__main__":
    redis_url, in_stream, out_stream, the_id, datadir = sys.argv[1:6]
    sys.exit(Worker(build(redis_url, in_stream, out_stream, the_id, datadir),
                    loglevel="warning").execute())
