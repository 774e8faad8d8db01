"""A real worker process for the Kafka exactly-once crash test (test_kafka_eos.py).

    python kafka_eos_app.py BOOTSTRAP IN_TOPIC OUT_TOPIC APP_ID

Reads IN_TOPIC (2 partitions) and yields every value, marked with its pid,
to OUT_TOPIC in the transactions of exactly-once, until it is killed.
``EOS_TEST_LOGLEVEL=info`` shows the worker's log (the test prints its end
when the worker does not finish).
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402
from sabot.worker import Worker  # noqa: E402


def build(bootstrap: str, source: str, target: str, app_id: str) -> "sabot.App":
    app = sabot.App(app_id, broker=f"kafka://{bootstrap}", processing_guarantee="exactly_once",
                    broker_commit_interval=0.1, broker_session_timeout=2.0,
                    broker_heartbeat_interval=0.3)
    out = app.topic(target, partitions=1, value_serializer="json")

    @app.agent(app.topic(source, partitions=2, value_serializer="json"), sink=[out], name="mark")
    async def mark(values):
        async for value in values:
            if value["i"] % 10 == 0:
                await asyncio.sleep(0.01)  # slow enough to be killed half way
            yield {"i": value["i"], "by": os.getpid()}

    return app


if __name__ == "__main__":
    servers, in_topic, out_topic, the_id = sys.argv[1:5]
    sys.exit(Worker(build(servers, in_topic, out_topic, the_id), loglevel=os.environ.get("EOS_TEST_LOGLEVEL", "warning")).execute())
