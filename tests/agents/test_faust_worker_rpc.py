"""A real Faust worker and a Sabot app ask each other's agents over the tansu broker.

The Faust app (``faust_rpc_worker.py``, faust-streaming, its own process and
consumer group) answers Sabot's ``ask``/``join`` with its agents (a record
topic, where Sabot sends Faust's ``ReqRepRequest`` envelope, and a raw topic,
where it sends Faust's ``Faust-Ag-*`` headers), and asks
the Sabot app's agent with Faust's own ``agent.ask``: both replies travel in
Faust's wire format through the asking app's reply topic.
"""
import os
import subprocess
import sys

import pytest

import sabot
from tests.helpers import running, unique, until
from tests.servers import stop_process

# A Faust worker starts in about 30 s on an idle machine; the default 120 s
# per test is too close on a loaded one.
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

WORKER = os.path.join(os.path.dirname(__file__), "faust_rpc_worker.py")
WAIT = 180.0  # a Faust worker takes a while to join its group on a loaded machine


class Point(sabot.Record, namespace="rpc_worker.Point"):  # Faust's FPoint's namespace
    x: int
    y: int


def kafka_app(kafka_broker, name):
    return sabot.App(unique(name), broker=f"kafka://{kafka_broker}", broker_commit_interval=0.2,
                     broker_session_timeout=3.0, broker_heartbeat_interval=0.5)


def start_faust(kafka_broker, tmp_path, faust_topic, raw_topic, sabot_topic):
    env = dict(os.environ, FAUST_RPC_ID=unique("faust-rpc"),
               FAUST_RPC_BROKER=f"kafka://{kafka_broker}", FAUST_RPC_FAUST_TOPIC=faust_topic,
               FAUST_RPC_RAW_TOPIC=raw_topic, FAUST_RPC_SABOT_TOPIC=sabot_topic)
    log = open(tmp_path / "faust.log", "w")
    # Faust keeps its data directory in the working directory: tmp_path.
    proc = subprocess.Popen([sys.executable, WORKER, "worker", "--without-web", "-l", "info"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    return proc, log


async def test_faust_worker_and_sabot_app_ask_each_other(kafka_broker, tmp_path):
    server = kafka_app(kafka_broker, "rpc-server")
    sabot_topic = server.topic(unique("sabot-side"), partitions=1, value_type=Point)
    asked = []

    @server.agent(sabot_topic)
    async def scale(stream):
        async for event in stream.events():
            asked.append((event.key, event.value))
            yield Point(event.value.x * 10, event.value.y * 10)

    # The asking side of Faust's agent: an app that is not started, so its
    # agent object only sends (Faust's own agent reads the topic).
    client = kafka_app(kafka_broker, "rpc-client")
    faust_topic = client.topic(unique("faust-side"), partitions=1, value_type=Point)

    @client.agent(faust_topic)
    async def swap(stream):
        async for _ in stream:
            yield None

    raw_topic = client.topic(unique("faust-raw"), partitions=1, value_serializer="raw")

    @client.agent(raw_topic)
    async def shout(stream):
        async for _ in stream:
            yield None

    proc, log = start_faust(kafka_broker, tmp_path, faust_topic.name, raw_topic.name,
                            sabot_topic.name)
    faust_log = tmp_path / "faust.log"

    def faust_output():
        assert proc.poll() is None, f"the Faust worker exited: {faust_log.read_text()[-3000:]}"
        return faust_log.read_text()

    try:
        async with running(server):
            await client.transport.maybe_start()
            try:
                # Sabot asks Faust's agent.
                assert await swap.ask(Point(1, 2), timeout=WAIT) == Point(2, 1)
                assert await swap.join([Point(5, 6), Point(7, 8)], timeout=WAIT) == [
                    Point(6, 5), Point(8, 7)]
                # A raw topic: the request travels in Faust's headers.
                assert await shout.ask(b"abc", timeout=WAIT) == "ABC"
                # Faust asks Sabot's agent.
                await until(lambda: "FAUST-GOT" in faust_output(), timeout=WAIT,
                            what=lambda: f"Faust's ask answered: {faust_output()[-3000:]}")
            finally:
                await client.replies.stop()
                await client.transport.stop()
            assert not server.crash_reasons, server.crash_reasons
    finally:
        stop_process(proc)
        log.close()
    assert "FAUST-GOT FPoint 30 40" in faust_log.read_text()
    assert (b"fk", Point(3, 4)) in asked
