"""A real worker process for the table crash tests (tests/tables/test_exact_state.py).

    python table_worker_app.py BROKER_URL APP_ID TOPIC DATADIR OUTFILE

Counts the values of TOPIC per key in a table (``counts[key] += 1``); every
value's id is appended to OUTFILE as it is processed, so the test can see
how far it got and kill it there. Runs until killed.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sabot  # noqa: E402


def build(broker: str, app_id: str, topic: str, datadir: str, outfile: str = ""):
    """The app and its counting table."""
    app = sabot.App(app_id, broker=broker, datadir=datadir, broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5,
                    redis_claim_idle_ms=300)
    counts = app.Table("counts", default=int)
    fd = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if outfile else None

    @app.agent(app.topic(topic, value_serializer="json"), name="count")
    async def count(stream):
        n = 0
        async for value in stream:
            counts[value["key"]] += 1
            if fd is not None:
                os.write(fd, b"%d\n" % value["id"])
            n += 1
            if n % 10 == 0:
                await asyncio.sleep(0.002)  # slow enough to be killed half way

    return app, counts


async def main(app: "sabot.App") -> None:
    """Run the app until it is asked to stop (the tests kill it first)."""
    await app.start()
    try:
        await app.wait_for_stop_request()
    finally:
        await app.stop()


if __name__ == "__main__":
    broker, app_id, topic, datadir, outfile = sys.argv[1:6]
    import logging
    logging.basicConfig(level=logging.INFO)
    app, _ = build(broker, app_id, topic, datadir, outfile)
    asyncio.run(main(app))
