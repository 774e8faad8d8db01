"""A real worker process for the Redis exactly-once crash test (test_redis_eos.py).

    python redis_eos_app.py REDIS_URL IN_STREAM OUT_STREAM APP_ID

Reads IN_STREAM and yields every value, marked, to OUT_STREAM, exactly once
(``processing_guarantee="exactly_once"``), until it is killed. The consumer
name is stable (``worker_id``), so a restarted worker reads its own pending
entries first; another worker would claim them after 300 ms.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402
from sabot.worker import Worker  # noqa: E402


def build(url: str, source: str, target: str, app_id: str) -> "sabot.App":
    app = sabot.App(app_id, redis_url=url, redis_claim_idle_ms=300,
                    processing_guarantee="exactly_once", worker_id="eos-worker",
                    stream_batch_size=50)
    out = app.redis_channel(target, value_serializer="json")

    @app.agent(app.redis_channel(source, value_serializer="json"), sink=[out], name="mark")
    async def mark(values):
        async for value in values:
            if value["i"] % 10 == 0:
                await asyncio.sleep(0.01)  # slow enough to be killed half way
            yield {"i": value["i"], "by": os.getpid()}

    return app


if __name__ == "__main__":
    redis_url, in_stream, out_stream, the_id = sys.argv[1:5]
    sys.exit(Worker(build(redis_url, in_stream, out_stream, the_id), loglevel="warning").execute())
