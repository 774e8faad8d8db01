"""``table_standby_replicas``: a worker keeps warm copies of the partitions other workers hold.

Two workers of one app (in this process, each with its own LMDB datadir)
share a 4-partition topic. Each keeps the other's table partitions warm;
when one stops, the other takes its partitions over and its recovery reads
only the changes made since the last standby refresh, not the changelog
from its start; the counts stay exact.
"""
import pytest

from tests.helpers import unique, until
from tests.tables.table_worker_app import build
from tests.tables.test_recovery import expected_counts, inputs, produce_kafka

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


async def test_a_takeover_reads_only_the_tail_when_standbys_are_kept(kafka_broker, tmp_path):
    topic, app_id = unique("standby"), unique("standby")
    broker = f"kafka://{kafka_broker}"
    first = inputs(4000, 41)
    await produce_kafka(kafka_broker, topic, first)
    a, a_counts = build(broker, app_id, topic, str(tmp_path / "a"))
    b, b_counts = build(broker, app_id, topic, str(tmp_path / "b"))
    for app in (a, b):
        app.conf.table_standby_replicas = 1
    expected = expected_counts(first)
    await a.start()
    try:
        await until(lambda: sum(a_counts[k] for k in expected) >= len(first), timeout=60,
                    what="worker A to count the first input")
        await b.start()
        # Both hold two partitions each and keep the other two warm.
        await until(lambda: len(a.tables.partitions) == 2 and len(b.tables.partitions) == 2,
                    timeout=60, what="the partitions split between the workers")
        await a.tables.flush()
        held_by_a = list(a.tables.partitions)
        standbys = b.tables.standbys
        assert standbys is not None
        await until(lambda: {p for _, p in standbys.partitions()} == set(held_by_a),
                    timeout=30, what="B to keep A's partitions warm")
        await standbys.refresh()
        assert standbys.applied > 0  # A's changes reached B's standby stores
        counts_table = b.tables["counts"]
        counts_table.recovery_stats.clear()
        await a.stop()  # B takes A's partitions over
        await until(lambda: sorted(b.tables.partitions) == [0, 1, 2, 3], timeout=60,
                    what="worker B to hold every partition")
        for partition in held_by_a:
            stats = counts_table.recovery_stats[partition]
            # Warm: nothing (or only a short tail) left to read at the takeover.
            assert stats.changes < 5, stats
        assert {k: b_counts[k] for k in expected} == expected
    finally:
        await b.stop()
        if a.started:
            await a.stop()
