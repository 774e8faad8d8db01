"""Exactly-once from a Redis stream to a Redis stream: the outputs are written
and the inputs acknowledged in one atomic script (sabot/channels/redis_eos.py).
"""
import asyncio
import json
import logging
import os
import sys

import pytest

import sabot
from sabot.exceptions import ConfigurationError
from tests.channels.redis_streams import json_bytes, pending_count, preload
from tests.eos.crash import redis_kill_then_finish
from tests.helpers import running, unique, until

pytestmark = pytest.mark.redis

HERE = os.path.dirname(os.path.abspath(__file__))


def out_values(client, stream):
    return [json.loads(fields[b"value"]) for _, fields in client.xrange(stream, "-", "+")]


def eos_app(server, **settings):
    settings.setdefault("broker_connect_timeout", 3.0)
    return sabot.App(unique("eos"), redis_url=server.url, processing_guarantee="exactly_once",
                     **settings)


async def test_outputs_appear_with_the_acknowledgement_of_their_inputs(redis_server, stream):
    client = redis_server.client()
    target = unique("out")
    preload(client, stream, [json_bytes(i) for i in range(30)])
    app = eos_app(redis_server)
    gate = asyncio.Event()
    seen = []
    out = app.redis_channel(target)

    @app.agent(app.redis_channel(stream), sink=[out])
    async def double(values):
        async for value in values:
            seen.append(value["i"])
            if value["i"] == 15:
                await gate.wait()  # holds the read (one XREADGROUP of all 30)
            yield {"i": value["i"] * 2}

    async with running(app):
        await until(lambda: len(seen) == 16, what="the agent to hold the read")
        await asyncio.sleep(0.3)
        # The read is unfinished: none of its outputs is written yet (not
        # even those of the values already processed), and every entry is
        # still pending.
        assert client.xrange(target) == []
        assert pending_count(client, stream, app.id) == 30
        gate.set()
        await until(lambda: pending_count(client, stream, app.id) == 0, what="every XACK")
    assert sorted(v["i"] for v in out_values(client, target)) == [2 * i for i in range(30)]


async def test_a_zombie_whose_entries_were_claimed_writes_nothing(redis_server, stream, caplog):
    client = redis_server.client()
    target = unique("out")
    preload(client, stream, [json_bytes(i) for i in range(5)])
    app = eos_app(redis_server, redis_claim_idle_ms=60_000)
    gate = asyncio.Event()
    seen = []

    @app.agent(app.redis_channel(stream), sink=[app.redis_channel(target)])
    async def slow(values):
        async for value in values:
            seen.append(value["i"])
            await gate.wait()
            yield value

    caplog.set_level(logging.WARNING, logger="sabot.channels.redis")
    async with running(app):
        await until(lambda: seen, what="the agent to hold the read")
        # Another worker takes the entries over (as XAUTOCLAIM does after claim_idle_ms).
        client.xautoclaim(stream, app.id, "other-worker", 0, "0-0", count=100)
        gate.set()
        await until(lambda: "no longer pending for consumer" in caplog.text,
                    what="the dropped outputs to be reported")
    assert client.xrange(target) == []
    assert pending_count(client, stream, app.id) == 5  # the claimant's to acknowledge


async def test_outputs_from_two_streams_at_once_are_refused(redis_server, stream):
    from sabot.channels import redis_eos
    app = eos_app(redis_server)
    channel = app.redis_channel(stream)
    other = app.redis_channel(unique("s"))
    transport = channel.transport
    for ch in (channel, other):
        transport.subscribe_channel(ch)

    class Source:
        def __init__(self, name):
            self.positions = [(name, "1-0")]

    with pytest.raises(ConfigurationError, match="cannot be committed"):
        redis_eos.staging_for(transport, [Source(stream), Source(other.name)])


def test_outputs_exactly_once_across_kill_9_at_random_moments(redis_server, stream):
    client = redis_server.client()
    target = unique("out")
    n = 1500
    preload(client, stream, [json_bytes(i) for i in range(n)])
    app_id = unique("eos-crash")
    cmd = [sys.executable, os.path.join(HERE, "redis_eos_app.py"), redis_server.url, stream,
           target, app_id]
    redis_kill_then_finish(client, cmd, stream, target, app_id)
    values = [v["i"] for v in out_values(client, target)]
    duplicated = sorted({i for i in values if values.count(i) > 1})
    assert not duplicated, f"written twice: {duplicated[:20]}"
    assert sorted(values) == list(range(n))
    # More than one worker life wrote outputs (the kills landed mid-stream).
    assert len({v["by"] for v in out_values(client, target)}) > 1
