"""Two workers rebalancing move their tables with nothing lost or counted twice (Kafka).

Worker A (a real process, its own LMDB datadir) counts a 4-partition topic
per key; worker B joins (the group splits the partitions: each recovers the
table partitions it gets from the changelog); A is then killed with
``kill -9`` so that B takes over A's partitions and recovers them too; B is
killed as well. Last, an in-process worker with an empty datadir recovers
every partition from the changelog alone and reads the input to its end:
its table must equal the counts of the input, key by key.
"""
import signal

import pytest

from tests.helpers import running, unique, until
from tests.tables.table_worker_app import build
from tests.tables.test_exact_state import kafka_lag, processed, start_worker
from tests.tables.test_recovery import expected_counts, inputs, produce_kafka

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def stop(worker):
    if worker.poll() is None:
        worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)


async def test_two_workers_rebalance_and_the_table_stays_exact(kafka_broker, tmp_path):
    topic, app_id = unique("rebal"), unique("rebal")
    values = inputs(8000, 61)
    await produce_kafka(kafka_broker, topic, values)
    broker = f"kafka://{kafka_broker}"
    outfile = tmp_path / "processed.txt"
    total = len(values)
    a = start_worker(broker, app_id, topic, str(tmp_path / "a"), outfile)
    b = None
    try:
        await until(lambda: len(processed(outfile)) >= total * 0.2 or a.poll() is not None,
                    timeout=90, what="worker A to process a fifth of the input")
        assert a.poll() is None, a.stderr.read().decode()
        b = start_worker(broker, app_id, topic, str(tmp_path / "b"), outfile)
        await until(lambda: len(processed(outfile)) >= total * 0.5 or b.poll() is not None,
                    timeout=90, what="both workers to process half of the input")
        assert b.poll() is None, b.stderr.read().decode()
        stop(a)  # B takes A's partitions over, recovering their tables from the changelog
        await until(lambda: len(processed(outfile)) >= total * 0.75 or b.poll() is not None,
                    timeout=90, what="worker B to go on with A's partitions")
        assert b.poll() is None, b.stderr.read().decode()
        stop(b)
    finally:
        for worker in (a, b):
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    assert len(processed(outfile)) < total, "the workers finished before the last kill"

    # A worker that never saw the data: everything comes from the changelog.
    app, counts = build(broker, app_id, topic, str(tmp_path / "c"))
    expected = expected_counts(values)
    async with running(app):
        await until(lambda: sum(counts[k] for k in expected) >= total, timeout=90,
                    what=lambda: f"{total} values counted, {sum(counts[k] for k in expected)} "
                                 f"so far")
        await until(kafka_lag(app), timeout=30, what="the whole input read")
        await app.tables.flush()
        assert {k: counts[k] for k in expected} == expected
        assert dict(counts.items()) == expected
