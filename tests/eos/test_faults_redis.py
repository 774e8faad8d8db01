"""Exactly-once from Redis to Redis under faults (issue 14): the server gone
at the moment a commit script is sent (sabot/channels/redis_eos.py).

The server is private (it is killed or frozen) and persists every write
(``appendonly yes``, ``appendfsync always``: what it acknowledged survives
kill -9). Two faults, at the same moment (the second commit of the run):

- ``kill``: kill -9 before the script reaches it, then a restart from the
  append-only file: the commit is retried with the same outputs;
- ``pause``: SIGSTOP with the script on its way, then SIGCONT: the script
  runs late, after Sabot gave up waiting for its reply, and the retry finds
  its entries acknowledged already and writes nothing twice.

Either way every input's output is in the output stream exactly once.
"""
import asyncio
import json
import logging
import os
import signal

import pytest

import sabot
from sabot.channels import redis_eos
from tests.channels.redis_streams import json_bytes, pending_count, preload
from tests.helpers import running, unique, until

pytestmark = pytest.mark.redis

N = 300


def all_done(client, stream, group):
    groups = client.xinfo_groups(stream)
    return (bool(groups) and pending_count(client, stream, group) == 0
            and groups[0]["last-delivered-id"] == client.xinfo_stream(stream)["last-generated-id"])


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_the_server_gone_mid_commit_loses_and_duplicates_nothing(
        redis_server_factory, monkeypatch, caplog, fault):
    server = redis_server_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    client = server.client()
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    stream, target = unique("in"), unique("out")
    preload(client, stream, [json_bytes(i) for i in range(N)])
    app = sabot.App(unique("eos-fault"), redis_url=server.url,
                    processing_guarantee="exactly_once", broker_connect_timeout=3.0,
                    stream_batch_size=50)

    @app.agent(app.redis_channel(stream, value_serializer="json"),
               sink=[app.redis_channel(target, value_serializer="json")])
    async def forward(values):
        async for value in values:
            if value["i"] % 10 == 0:
                await asyncio.sleep(0.005)  # several reads, several commits
            yield value

    runs = []
    run = redis_eos.Outbox._run

    async def run_with_fault(self, ids, outputs):
        runs.append(len(ids))
        if len(runs) == 2:  # the second commit: the server goes away now
            if fault == "kill":
                os.kill(server.proc.pid, signal.SIGKILL)
            else:
                os.kill(server.proc.pid, signal.SIGSTOP)
        return await run(self, ids, outputs)

    monkeypatch.setattr(redis_eos.Outbox, "_run", run_with_fault)
    caplog.set_level(logging.WARNING, logger="sabot")
    async with running(app):
        try:
            await until(lambda: len(runs) >= 3 and "lost the connection" in caplog.text,
                        timeout=90, what=lambda: f"the commit retried (runs {runs}) and the "
                        f"lost server reported ({caplog.text[-500:]!r})")
        finally:
            if fault == "kill":
                server.stop(kill=True)
                server.start()  # same port and directory: the append-only file is loaded
            else:
                os.kill(server.proc.pid, signal.SIGCONT)
        gone = [r.getMessage() for r in caplog.records]
        await until(lambda: all_done(client, stream, app.id), timeout=90,
                    what="every entry processed and acknowledged")
    lost = [line for line in gone if "lost the connection" in line]
    assert len(lost) == 1 and "\n" not in lost[0] and repr(stream) in lost[0], gone
    if fault == "pause":
        # The first script ran when the server woke up; its retry wrote nothing.
        dropped = [r.getMessage() for r in caplog.records if "no longer pending" in r.getMessage()]
        assert dropped and all("\n" not in line for line in dropped), dropped
    values = [json.loads(fields[b"value"])["i"] for _, fields in client.xrange(target)]
    duplicated = sorted({i for i in values if values.count(i) > 1})
    assert not duplicated, f"written twice: {duplicated[:20]}"
    assert sorted(values) == list(range(N))
