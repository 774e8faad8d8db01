"""A real worker process for the Kafka exactly-once crash test with a table
(test_kafka_eos_tables.py).

    python kafka_eos_table_app.py BOOTSTRAP IN_TOPIC OUT_TOPIC APP_ID DATADIR

Counts the records of IN_TOPIC (2 partitions) by key in a table (LMDB stores
under DATADIR, kept across the worker's lives) and yields each value with its
count to OUT_TOPIC, in the transactions of exactly-once, until it is killed.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402
from sabot.worker import Worker  # noqa: E402


def build(bootstrap: str, source: str, target: str, app_id: str, datadir: str) -> "sabot.App":
    app = sabot.App(app_id, broker=f"kafka://{bootstrap}", processing_guarantee="exactly_once",
                    broker_commit_interval=0.1, broker_session_timeout=2.0,
                    broker_heartbeat_interval=0.3, datadir=datadir)
    counts = app.Table("counts", default=int, partitions=2)

    @app.agent(app.topic(source, partitions=2, value_serializer="json"),
               sink=[app.topic(target, partitions=1, value_serializer="json")], name="count")
    async def count(stream):
        async for key, value in stream.items():
            key = key.decode()
            counts[key] += 1
            if value["i"] % 10 == 0:
                await asyncio.sleep(0.01)  # slow enough to be killed half way
            yield {"i": value["i"], "key": key, "count": counts[key], "by": os.getpid()}

    return app


if __name__ == "__main__":
    servers, in_topic, out_topic, the_id, datadir = sys.argv[1:6]
    sys.exit(Worker(build(servers, in_topic, out_topic, the_id, datadir),
                    loglevel=os.environ.get("EOS_TEST_LOGLEVEL", "warning")).execute())
