"""Windowed tables from a real Kafka broker (tansu): event time from the message timestamps.

Out-of-order events over three partitions; the counts must equal the pyarrow
reference computed per partition, and every late event must be on the late
dead-letter topic of the source (``<topic>.dlq``) with its reason.
"""
import json

import pytest

from sabot.tables.windowed import LATE_REASON_HEADER
from tests.channels.test_kafka import make_app, read_all
from tests.helpers import running, unique, until
from tests.tables.test_windowed import by_start, make_table, out_of_order_events
from tests.tables.windowed_reference import windowed_counts

pytestmark = pytest.mark.kafka

PARTITIONS = 3


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
async def test_counts_from_kafka_equal_the_pyarrow_reference(kafka_broker, kind, tmp_path):
    events = out_of_order_events(1500, keys=12, seed=11)
    # Each key in one partition (as the default partitioner would do), chosen here
    # so that the reference knows each partition's order.
    placed = [(k, int(k[1:]) % PARTITIONS, round(t * 1000)) for k, t in events]
    size, step, grace = (5.0, 5.0, 1.0) if kind == "tumbling" else (10.0, 5.0, 0.5)
    app = make_app(kafka_broker, datadir=str(tmp_path))
    source = app.topic(unique("clicks"), value_serializer="json", partitions=PARTITIONS)
    name = unique("counts")
    table = make_table(app, name, partitions=PARTITIONS)
    options = dict(grace=grace, allowed_lateness=0.25, idle_timeout=None)
    windowed = (table.tumbling(size, **options) if kind == "tumbling"
                else table.hopping(size, step, **options))
    seen = []

    @app.agent(source)
    async def count(stream):
        async for value in stream:
            windowed[value["key"]] += 1
            seen.append(value)

    async with running(app):
        for key, partition, ms in placed:
            await source.send(key=key, value={"key": key, "ms": ms}, partition=partition,
                              timestamp_ms=ms)
        await source.flush()
        await until(lambda: len(seen) == len(events), timeout=60, what="every event processed")
        expected, late_count = windowed_counts([(k, p, ms / 1000) for k, p, ms in placed],
                                               size, step, grace=grace, lateness=0.25)
        assert late_count > 0
        assert by_start(table) == expected
        assert windowed.late_events == late_count
        await windowed.flush()
        late = await read_all(kafka_broker, f"{source.name}.dlq", late_count)
        assert len(late) == late_count
        for record in late:
            headers = dict(record.headers)
            assert headers[LATE_REASON_HEADER].startswith(b"late for table")
            assert float(headers["sabot-event-time"]) == json.loads(record.value)["ms"] / 1000


async def test_windows_recovered_by_a_new_worker_close_and_expire(kafka_broker, tmp_path):
    # A worker counts and stops; the next one recovers the windows from the
    # changelog (its LMDB store is new) and closes them with its own watermark.
    app_id, topic = unique("wrec"), unique("clicks")

    def worker():
        app = make_app(kafka_broker, app_id, datadir=str(tmp_path / "data"),
                       table_cleanup_interval=0.05)
        source = app.topic(topic, value_serializer="json", partitions=1)
        table = make_table(app, "counts", partitions=1)
        closed = []
        windowed = table.tumbling(10, expires=20, idle_timeout=None,
                                  on_window_close=lambda k, v: closed.append((k, v)))
        seen = []

        @app.agent(source)
        async def count(stream):
            async for value in stream:
                windowed[value["key"]] += 1
                seen.append(value)
        return app, source, table, closed, seen

    app, source, table, closed, seen = worker()
    async with running(app):
        for ms in (1000, 2000):
            await source.send(key="a", value={"key": "a"}, partition=0, timestamp_ms=ms)
        await source.flush()
        await until(lambda: len(seen) == 2, timeout=30)
    assert closed == []
    (tmp_path / "data").rename(tmp_path / "old-data")  # the store is lost: from the changelog

    app, source, table, closed, seen = worker()
    async with running(app):
        await until(lambda: table.held_partitions == [0], timeout=30, what="the partition")
        assert table["a", (0.0, 9.9)] == 2
        await source.send(key="a", value={"key": "a"}, partition=0, timestamp_ms=15_000)
        await source.flush()
        await until(lambda: closed, timeout=30, what="the recovered window closed")
        assert closed == [(("a", (0.0, 9.9)), 2)]
        await source.send(key="a", value={"key": "a"}, partition=0, timestamp_ms=45_000)
        await source.flush()
        await until(lambda: ("a", (0.0, 9.9)) not in table, timeout=30,
                    what="the recovered window expired")
        # At 45 the window of 15 has expired too (it ends before current(45 - 20) starts).
        assert ("a", (10.0, 19.9)) not in table and table["a", (40.0, 49.9)] == 1
