"""A real Faust (faust-streaming) app, run as a worker by ``test_faust_worker_rpc.py``.

Its agents ``swap`` and ``shout`` answer asks on ``FAUST_RPC_FAUST_TOPIC``
(records, JSON) and ``FAUST_RPC_RAW_TOPIC`` (raw bytes); a timer asks
the Sabot app's agent on ``FAUST_RPC_SABOT_TOPIC`` (with Faust's own
``agent.ask``) until a reply comes, and prints it as ``FAUST-GOT ...``.

Run: ``python faust_rpc_worker.py worker --without-web`` with the
``FAUST_RPC_*`` variables set.
"""
import asyncio
import os

import faust

app = faust.App(os.environ["FAUST_RPC_ID"], broker=os.environ["FAUST_RPC_BROKER"],
                store="memory://", web_enabled=False, topic_partitions=1,
                # Subscribe the reply topic at start: made on the first ask, it
                # would cost a rebalance of a minute or more.
                reply_create_topic=True)


class FPoint(faust.Record, namespace="rpc_worker.Point"):
    x: int
    y: int


@app.agent(app.topic(os.environ["FAUST_RPC_FAUST_TOPIC"], value_type=FPoint))
async def swap(stream):
    async for point in stream:
        yield FPoint(x=point.y, y=point.x)


@app.agent(app.topic(os.environ["FAUST_RPC_RAW_TOPIC"], value_serializer="raw"))
async def shout(stream):
    # Not JSON: Sabot asks with Faust's Faust-Ag-* headers instead of an envelope.
    async for value in stream:
        yield value.decode().upper()


@app.agent(app.topic(os.environ["FAUST_RPC_SABOT_TOPIC"], value_type=FPoint))
async def sabot_side(stream):
    # The Sabot app's agent answers; this one only gives Faust its ask().
    async for _ in stream:
        pass


answered = False


@app.timer(1.0)
async def ask_sabot():
    global answered
    if answered:
        return
    try:
        reply = await asyncio.wait_for(sabot_side.ask(FPoint(x=3, y=4), key=b"fk"), 10.0)
    except asyncio.TimeoutError:
        print("FAUST-WAITING", flush=True)
        return
    answered = True
    print(f"FAUST-GOT {type(reply).__name__} {reply.x} {reply.y}", flush=True)


if __name__ == "__main__":
    app.main()
