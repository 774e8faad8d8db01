"""The app the CLI and worker tests run (``sabot -A tests.worker_app worker``).

Configured by environment variables so that one module serves memory://,
Kafka and Redis runs:

- ``SABOT_TEST_BROKER`` (default ``memory://``), ``SABOT_TEST_REDIS_URL``;
- ``SABOT_TEST_APP_ID`` (the consumer group), ``SABOT_TEST_TOPIC``;
- ``SABOT_TEST_OUTFILE``: the agent appends the id of every value it
  processes, before the value is acknowledged;
- ``SABOT_TEST_FEED=1``: a task sends values without end (memory runs);
  ``SABOT_TEST_STOP_AFTER=N``: it sends N values, waits for them, and stops;
- ``SABOT_TEST_SLOW``: seconds the agent sleeps after every 50 values;
- ``SABOT_TEST_MAXSIZE``: ``stream_buffer_maxsize`` (how much a fetch may run ahead).

``SABOT_TEST_STUBBORN=1`` adds an agent that ignores the stop.
A value ``{"boom": true}`` makes the agent raise (it goes to the dead letters).
"""
import asyncio
import os
import sys

import sabot

BROKER = os.environ.get("SABOT_TEST_BROKER", "memory://")
TOPIC = os.environ.get("SABOT_TEST_TOPIC", "events")

app = sabot.App(
    os.environ.get("SABOT_TEST_APP_ID", "cli-test"),
    broker=BROKER,
    redis_url=os.environ.get("SABOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    status_interval=float(os.environ.get("SABOT_TEST_STATUS_INTERVAL", "1")),
    shutdown_timeout=5.0,
    stream_batch_size=100,
    stream_buffer_maxsize=int(os.environ.get("SABOT_TEST_MAXSIZE", "4096")),
    broker_commit_interval=0.2,
    broker_session_timeout=3.0,
    broker_heartbeat_interval=0.5,
    broker_connect_timeout=2.0,
)

events = app.topic(TOPIC, value_serializer="json")
results = app.topic(TOPIC + "-results", value_serializer="json")
frames = app.topic(TOPIC + "-frames", value_serializer="arrow")

_fd = None
if os.environ.get("SABOT_TEST_OUTFILE"):
    _fd = os.open(os.environ["SABOT_TEST_OUTFILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_SLOW = float(os.environ.get("SABOT_TEST_SLOW", "0"))


@app.agent(events, sink=[results], name="record")
async def record(stream):
    """Write each value's id to the outfile, raise on ``boom``, pass it on."""
    n = 0
    async for value in stream:
        if isinstance(value, dict) and value.get("boom"):
            raise ValueError("boom")
        if _fd is not None:
            os.write(_fd, b"%d\n" % value["id"])
        n += 1
        if _SLOW and n % 50 == 0:
            await asyncio.sleep(_SLOW)
        yield value


@app.task
async def feed():
    """With SABOT_TEST_FEED=1, send values until the worker stops (memory runs)."""
    if not os.environ.get("SABOT_TEST_FEED"):
        return
    stop_after = int(os.environ.get("SABOT_TEST_STOP_AFTER", "0"))
    i = 0
    while True:
        if stop_after and i == stop_after:
            while record.events_in < stop_after:
                await asyncio.sleep(0.01)
            app.request_stop()
            return
        await events.send(value={"id": i})
        i += 1
        if i % 100 == 0:
            await asyncio.sleep(0.001)
        if i == 1000 and not stop_after:  # one failure: an error and a dead letter to report
            await events.send(value={"boom": True})


if os.environ.get("SABOT_TEST_STUBBORN"):
    @app.agent(app.channel(name="stubborn-in"), name="stubborn")
    async def stubborn(stream):
        """Ignores the stop: only a second signal ends the worker."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            # Said, so that a test knows the stop reached it.
            print("stubborn: ignoring the stop", file=sys.stderr, flush=True)
            await asyncio.sleep(3600)
