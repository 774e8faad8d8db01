"""A real worker process for the Redis crash test (tests/channels/test_redis.py).

    python redis_worker_app.py REDIS_URL STREAM OUTFILE

Runs the app in a ``Worker`` until it is signalled. The agent appends the id
of every value it processes to OUTFILE (written before the entry can be
acknowledged), slowly enough that the test can SIGKILL it half way.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402
from sabot.worker import Worker  # noqa: E402


def build(url: str, stream: str, outfile: str) -> "sabot.App":
    app = sabot.App("redis-crash-test", redis_url=url, redis_claim_idle_ms=300)
    out = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.agent(app.redis_channel(stream, value_serializer="json"), name="record")
    async def record(entries):
        async for value in entries:
            os.write(out, b"%d\n" % value["id"])
            if value["id"] % 20 == 0:
                await asyncio.sleep(0.01)  # slow enough to be killed half way

    return app


if __name__ == "__main__":
    redis_url, stream_name, out_path = sys.argv[1:4]
    sys.exit(Worker(build(redis_url, stream_name, out_path), loglevel="warning").execute())
