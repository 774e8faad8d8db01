"""Exactly-once from a Redis stream to a Redis stream with a table: the
outputs, the table's changelog entries and the acknowledgement of the inputs
land in one atomic script (sabot/channels/redis_eos.py); the store applies
the changes only after it ran (sabot/tables/table.py).
"""
import asyncio
import collections
import json
import os
import sys

import pytest

import sabot
from sabot.tables.codec import decode, decode_record
from tests.channels.redis_streams import json_bytes, pending_count, preload
from tests.eos.redis_eos_table_app import KEYS, build
from tests.eos.crash import redis_kill_then_finish
from tests.eos.tables import stored
from tests.helpers import running, unique, until

pytestmark = pytest.mark.redis

HERE = os.path.dirname(os.path.abspath(__file__))


def expected_counts(values):
    return dict(collections.Counter(i % KEYS for i in values))


def changelog_entries(client, name):
    """``(key, value or None)`` of every entry of a Redis table changelog, in order."""
    out = []
    for _, fields in client.xrange(name, "-", "+") if client.exists(name) else []:
        key = decode(fields[b"key"])
        if b"sabot-tombstone" in fields:
            out.append((key, None))
        else:
            out.append((key, decode_record(fields[b"value"])[0]))
    return out


def last_values(entries):
    state = {}
    for key, value in entries:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


async def test_changelog_entries_land_with_the_outputs_and_the_acknowledgement(
        redis_server, stream, tmp_path):
    client = redis_server.client()
    target = unique("out")
    preload(client, stream, [json_bytes(i) for i in range(30)])
    app = sabot.App(unique("eos-table"), broker=redis_server.url,
                    processing_guarantee="exactly_once", datadir=str(tmp_path),
                    broker_commit_interval=0.1, broker_connect_timeout=3.0)
    counts = app.Table("counts", default=int)
    gate = asyncio.Event()

    @app.agent(app.redis_channel(stream), sink=[app.redis_channel(target)])
    async def count(values):
        async for value in values:
            counts[value["i"] % KEYS] += 1
            if value["i"] == 15:
                await gate.wait()  # holds the read (one XREADGROUP of all 30)
            yield value

    changelog = counts.changelog_topic_name
    async with running(app):
        # The flush loop stages the changes of the values processed so far
        # (every 0.1 s): held, neither in the changelog nor in the store.
        await until(lambda: counts._held, what="changes held for the commit")
        await asyncio.sleep(0.3)
        assert changelog_entries(client, changelog) == []
        assert client.xrange(target) == []
        assert pending_count(client, stream, app.id) == 30
        assert stored(counts) == {}
        gate.set()
        await until(lambda: pending_count(client, stream, app.id) == 0, what="every XACK")
        await until(lambda: not counts._held, what="the held changes applied")
        assert counts.as_dict() == expected_counts(range(30))
        assert stored(counts) == expected_counts(range(30))
    assert last_values(changelog_entries(client, changelog)) == expected_counts(range(30))
    assert sorted(json.loads(f[b"value"])["i"] for _, f in client.xrange(target)) == \
        list(range(30))


def test_table_exact_across_kill_9_at_random_moments(redis_server, stream, tmp_path):
    client = redis_server.client()
    target = unique("out")
    n = 1500
    preload(client, stream, [json_bytes(i) for i in range(n)])
    app_id = unique("eos-table-crash")
    datadir = str(tmp_path / "worker")
    cmd = [sys.executable, os.path.join(HERE, "redis_eos_table_app.py"), redis_server.url,
           stream, target, app_id, datadir]
    redis_kill_then_finish(client, cmd, stream, target, app_id)
    want = expected_counts(range(n))
    outputs = [json.loads(f[b"value"]) for _, f in client.xrange(target)]
    values = [o["i"] for o in outputs]
    assert sorted(values) == list(range(n))  # each once
    # The counts yielded are those of one pass: per key, 1..count, each once.
    per_key = collections.defaultdict(list)
    for o in outputs:
        per_key[o["key"]].append(o["count"])
    assert {k: sorted(v) for k, v in per_key.items()} == \
        {k: list(range(1, c + 1)) for k, c in want.items()}
    # The changelog: the exact counts, and no count of a key written twice
    # (each change once, with the acknowledgement of its input).
    entries = changelog_entries(client, f"{app_id}-counts-changelog")
    assert last_values(entries) == want
    for key in want:
        written_counts = [v for k, v in entries if k == key]
        assert written_counts == sorted(set(written_counts)), (key, written_counts)
    # The last worker's stores (kept across its lives) and a fresh worker's
    # recovery from the changelog alone give the exact counts.
    for where in (datadir, str(tmp_path / "fresh")):
        app = build(redis_server.url, stream, target, app_id, where)

        async def recover():
            async with running(app):
                return app.tables["counts"].as_dict()
        assert asyncio.run(recover()) == want, where
