"""A real worker process for the Kafka crash test (tests/channels/test_kafka.py).

    python kafka_worker_app.py BOOTSTRAP TOPIC OUTFILE

Runs the app in a ``Worker`` until it is signalled; the agent appends the id of
every value it processes to OUTFILE (one line each, written before the value is
acknowledged), slowly enough that the test can kill it half way.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402
from sabot.worker import Worker  # noqa: E402


def build(bootstrap: str, topic: str, outfile: str) -> "sabot.App":
    app = sabot.App("crash-test", broker=f"kafka://{bootstrap}",
                    broker_commit_interval=0.2, broker_session_timeout=3.0,
                    broker_heartbeat_interval=0.5)
    fd = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.agent(app.topic(topic, value_serializer="json"), name="record")
    async def record(stream):
        n = 0
        async for value in stream:
            os.write(fd, b"%d\n" % value["id"])
            n += 1
            if n % 50 == 0:
                await asyncio.sleep(0.005)  # slow enough to be killed half way

    return app


if __name__ == "__main__":
    bootstrap, topic, outfile = sys.argv[1:4]
    sys.exit(Worker(build(bootstrap, topic, outfile), loglevel="warning").execute())
