"""A script that sends N values without running a worker, then returns.

    python send_and_return.py BROKER_URL APP_ID TOPIC N [PID_TO_KILL]

Nothing is awaited but the sends themselves: what is still queued when
``asyncio.run`` ends must be delivered, or reported with a count. With
PID_TO_KILL, that process (the broker) is killed before returning, so
nothing can be delivered.
"""
import asyncio
import os
import signal
import sys


import sabot


async def main(url, app_id, topic_name, n, victim):
    app = sabot.App(app_id, broker=url, broker_connect_timeout=3.0)
    topic = app.topic(topic_name, value_serializer="json", partitions=1)
    first = await topic.send(value={"i": 0})
    await first  # the producer is up and the topic exists
    if victim:
        os.kill(victim, signal.SIGKILL)
    for i in range(1, n):
        await topic.send(value={"i": i})


if __name__ == "__main__":
    url, app_id, topic, n = sys.argv[1:5]
    victim = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    asyncio.run(main(url, app_id, topic, int(n), victim))
