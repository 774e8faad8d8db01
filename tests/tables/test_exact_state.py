"""Exact state after a crash: ``kill -9`` three times mid-stream, the table equals the input.

A real worker process (tests/tables/table_worker_app.py) counts the values of
a topic (Kafka) or a stream (Redis) per key in a table with an LMDB store;
the test kills it with SIGKILL at three points of the input, restarts it each
time, and finally runs the same app in-process to the end of the input. Input
replayed after each crash (read again from the last commit) must not be
counted twice, and nothing may be lost: the table equals the counts of the
input, key by key.
"""
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import running, unique, until
from tests.tables.table_worker_app import build
from tests.tables.test_recovery import expected_counts, inputs, produce_kafka, produce_redis

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.slow


def start_worker(broker, app_id, topic, datadir, outfile):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "table_worker_app.py"),
                             broker, app_id, topic, datadir, str(outfile)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def processed(outfile):
    if not outfile.exists():
        return set()
    return {int(x) for x in outfile.read_text().split()}


async def kill_three_times_then_finish(broker, app_id, topic, tmp_path, values, lag):
    datadir = str(tmp_path / "data")
    outfile = tmp_path / "processed.txt"
    total = len(values)
    for fraction in (0.2, 0.45, 0.7):
        worker = start_worker(broker, app_id, topic, datadir, outfile)
        try:
            await until(lambda: len(processed(outfile)) >= total * fraction
                        or worker.poll() is not None, timeout=90,
                        what=f"{fraction:.0%} of the input processed")
            assert worker.poll() is None, worker.stderr.read().decode()
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    assert len(processed(outfile)) < total, "the worker finished before the last kill"

    app, counts = build(broker, app_id, topic, datadir)
    expected = expected_counts(values)
    async with running(app):
        await until(lambda: sum(counts[k] for k in expected) >= total, timeout=90,
                    what=lambda: f"{total} values counted, "
                                 f"{sum(counts[k] for k in expected)} so far "
                                 f"({app.agents['count'].events_in} values read, "
                                 f"{counts.replays_skipped} replayed writes skipped)")
        await until(lag(app), timeout=30, what="the whole input read")
        await app.tables.flush()
        got = {k: counts[k] for k in expected}
        assert sum(got.values()) == total
        assert got == expected
        assert dict(counts.items()) == expected


def kafka_lag(app):
    async def caught_up():
        lag = await app.transport.lag()
        return bool(lag) and not any(lag.values()) and app.agents["count"].backlog == 0
    return caught_up


def redis_lag(app):
    async def caught_up():
        return app.agents["count"].backlog == 0 and not any((await app.transport.lag()).values())
    return caught_up


async def test_kill_9_three_times_on_kafka_leaves_the_table_equal_to_the_input(
        kafka_broker, tmp_path):
    topic, app_id = unique("exact"), unique("exact")
    values = inputs(8000, 61)
    await produce_kafka(kafka_broker, topic, values)
    await kill_three_times_then_finish(f"kafka://{kafka_broker}", app_id, topic, tmp_path,
                                       values, kafka_lag)


async def test_kill_9_three_times_on_redis_leaves_the_table_equal_to_the_input(
        redis_server, tmp_path):
    stream, app_id = unique("exact"), unique("exact")
    values = inputs(8000, 61)
    produce_redis(redis_server, stream, values)
    await kill_three_times_then_finish(redis_server.url, app_id, stream, tmp_path, values,
                                       redis_lag)
