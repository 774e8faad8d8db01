"""Tables on the real brokers: counting, the changelog, recovery from the store and from the changelog.

Kafka tests talk to the session's tansu broker, Redis tests to a real
redis-server; the stores are LMDB (the default for broker apps) under the
test's own directory.
"""
import os
import shutil

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import sabot
from sabot.codecs import get_codec
from sabot.tables.codec import decode, decode_record
from sabot.tables.recovery import TableRecoveryError
from tests.helpers import running, unique, until
from tests.tables.table_worker_app import build

JSON = get_codec("json")


async def produce_kafka(bootstrap, topic, values, partitions=4):
    """Write ``values`` (dicts with ``key``) keyed by their key, like any client would."""
    admin_app = sabot.App(unique("admin"), broker=f"kafka://{bootstrap}")
    await admin_app.topic(topic, partitions=partitions).maybe_declare()
    await admin_app.transport.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, JSON.encode(value), key=value["key"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def produce_redis(server, stream, values):
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for value in values:
        pipe.xadd(stream, {"value": JSON.encode(value), "key": value["key"].encode()})
    pipe.execute()


def expected_counts(values):
    out = {}
    for value in values:
        out[value["key"]] = out.get(value["key"], 0) + 1
    return out


def inputs(n, keys):
    return [{"id": i, "key": f"k{i % keys}"} for i in range(n)]


async def count_all(app, counts, total):
    agent = app.agents["count"]
    await until(lambda: agent.events_in >= total, timeout=60,
                what=lambda: f"{total} values counted, {agent.events_in} so far")
    await app.tables.flush()


# -- Kafka -------------------------------------------------------------------------

async def test_counting_table_on_kafka_survives_restarts_with_and_without_its_store(
        kafka_broker, tmp_path):
    topic, app_id = unique("words"), unique("tbl")
    values = inputs(2000, 37)
    await produce_kafka(kafka_broker, topic, values)
    broker = f"kafka://{kafka_broker}"

    app, counts = build(broker, app_id, topic, str(tmp_path / "data"))
    async with running(app):
        await count_all(app, counts, len(values))
        assert dict(counts.items()) == expected_counts(values)
        assert sorted(counts.held_partitions) == [0, 1, 2, 3]

    # The changelog is a compacted topic of the source's partition count; each
    # entry's partition is its table partition, its value the record.
    changelog = f"{app_id}-counts-changelog"
    consumer = AIOKafkaConsumer(changelog, bootstrap_servers=kafka_broker,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        assert len(consumer.partitions_for_topic(changelog)) == 4
        records = []
        while len({decode(r.key) for r in records}) < 37:
            batch = await consumer.getmany(timeout_ms=2000)
            assert batch, "the changelog holds every key"
            for rs in batch.values():
                records.extend(rs)
    finally:
        await consumer.stop()
    latest = {decode(r.key): decode_record(r.value)[0] for r in records}
    assert latest == expected_counts(values)
    assert all(r.headers and dict(r.headers)["sabot-source"].startswith(topic.encode())
               for r in records)

    # Restart with the store intact: nothing replayed, same table.
    app, counts = build(broker, app_id, topic, str(tmp_path / "data"))
    async with running(app):
        await until(lambda: len(counts.held_partitions) == 4, what="the partitions recovered")
        assert dict(counts.items()) == expected_counts(values)
        assert sum(s.changes for s in counts.recovery_stats.values()) == 0

    # Restart with the store deleted: everything from the changelog.
    shutil.rmtree(tmp_path / "data")
    app, counts = build(broker, app_id, topic, str(tmp_path / "data"))
    async with running(app):
        await until(lambda: len(counts.held_partitions) == 4, what="the partitions recovered")
        assert dict(counts.items()) == expected_counts(values)
        assert sum(s.changes for s in counts.recovery_stats.values()) >= 37


async def test_recovery_reads_a_changelog_that_spans_many_fetches(kafka_broker, tmp_path):
    topic, app_id = unique("many"), unique("tbl")
    values = inputs(12_000, 12_000)  # every key once: 12,000 changelog entries
    await produce_kafka(kafka_broker, topic, values)
    broker = f"kafka://{kafka_broker}"
    app, counts = build(broker, app_id, topic, str(tmp_path / "data"))
    async with running(app):
        await count_all(app, counts, len(values))
    shutil.rmtree(tmp_path / "data")
    app, counts = build(broker, app_id, topic, str(tmp_path / "data"))
    app.conf.consumer_max_fetch_size = 16 * 1024  # a few hundred entries per broker fetch
    counts.recovery_buffer_size = 200  # and per read
    async with running(app):
        await until(lambda: len(counts.held_partitions) == 4, timeout=60,
                    what="the partitions recovered")
        stats = counts.recovery_stats.values()
        assert sum(s.changes for s in stats) == len(values)
        assert all(s.fetches >= 10 for s in stats), list(stats)
        assert len(counts) == len(values)
        assert counts["k11999"] == 1 and counts["k0"] == 1


# -- Redis --------------------------------------------------------------------------

async def test_counting_table_on_redis_and_a_corrupt_store_restored_from_the_changelog(
        redis_server, tmp_path):
    stream, app_id = unique("words"), unique("tbl")
    values = inputs(1500, 23)
    produce_redis(redis_server, stream, values)
    datadir = str(tmp_path / "data")

    app, counts = build(redis_server.url, app_id, stream, datadir)
    async with running(app):
        await count_all(app, counts, len(values))
        assert dict(counts.items()) == expected_counts(values)
    entries = redis_server.client().xlen(f"{app_id}-counts-changelog")
    assert entries >= 23  # at least one entry per key (one per key per flush)
    # Damage the store's files: it cannot be trusted, so it is rebuilt.
    data = os.path.join(datadir, app_id, "counts-0", "data.mdb")
    with open(data, "r+b") as f:
        f.write(os.urandom(16384))
    app, counts = build(redis_server.url, app_id, stream, datadir)
    async with running(app):
        assert counts.recovery_stats[0].wiped
        assert dict(counts.items()) == expected_counts(values)


async def test_an_undecodable_changelog_entry_stops_recovery_naming_table_and_partition(
        redis_server, tmp_path):
    stream, app_id = unique("words"), unique("tbl")
    redis_server.client().xadd(f"{app_id}-counts-changelog",
                               {"value": b"\xff not json", "key": b'"k"'})
    app, counts = build(redis_server.url, app_id, stream, str(tmp_path / "data"))
    with pytest.raises(TableRecoveryError, match="table 'counts' partition 0") as info:
        await app.start()
    await app.stop()
    assert info.value.table == "counts" and info.value.partition == 0


# -- a large store -------------------------------------------------------------------

@pytest.mark.slow
async def test_restart_with_an_intact_store_of_a_million_keys_replays_only_the_tail(tmp_path):
    from sabot.tables.changelog import ChangelogEntry
    from sabot.tables.codec import encode, encode_record
    n = 1_000_000
    app = sabot.App(unique("big"), store="lmdb://", datadir=str(tmp_path / "data"))
    table = app.Table("big", default=int)
    log = [ChangelogEntry(i, encode(f"user-{i}"), encode_record(i, "orders:0", i),
                          {"sabot-source": b"orders:0", "sabot-position": str(i).encode()})
           for i in range(n)]
    app.tables._memory_logs[table.changelog_topic_name] = {0: log}
    async with running(app):  # the first start restores the million keys from the changelog
        assert table.recovery_stats[0].changes == n
        assert table["user-999999"] == 999999
        # Two changes reach the changelog but not the store (a crash in between).
        log.append(ChangelogEntry(n, encode("user-5"), encode_record(-5, "orders:0", n), {}))
        log.append(ChangelogEntry(n + 1, encode("user-6"), None, {}))
        await app.restart()
        assert table.recovery_stats[0].changes == 2  # the tail only: the store was used
        assert len(table.store_for(0)) == n - 1
        assert table["user-5"] == -5 and "user-6" not in table and table["user-7"] == 7


async def test_no_entry_is_acknowledged_while_the_changelog_cannot_be_written(
        redis_server, tmp_path):
    stream, app_id = unique("words"), unique("tbl")
    client = redis_server.client()
    changelog = f"{app_id}-counts-changelog"
    values = inputs(300, 7)
    app, counts = build(redis_server.url, app_id, stream, str(tmp_path / "data"))

    def pending():
        return client.xpending(stream, app_id)["pending"]

    async with running(app):
        client.set(changelog, "not a stream")  # every XADD to it fails (WRONGTYPE)
        produce_redis(redis_server, stream, values)
        agent = app.agents["count"]
        await until(lambda: agent.events_in >= len(values), what="every value processed")
        with pytest.raises(Exception, match="WRONGTYPE"):
            await app.tables.flush()
        assert pending() == len(values)  # held: the table state behind them is not durable
        client.delete(changelog)
        await until(lambda: pending() == 0, what="the entries acknowledged once flushed")
        assert client.xlen(changelog) == 7
        assert dict(counts.items()) == expected_counts(values)


async def test_a_redis_changelog_is_snapshotted_and_trimmed_and_an_older_store_rebuilt(
        redis_server, tmp_path):
    stream, app_id = unique("ops"), unique("tbl")
    datadir = str(tmp_path / "data")
    client = redis_server.client()
    changelog = f"{app_id}-table-changelog"

    def make_app():
        app = sabot.App(app_id, broker=redis_server.url, datadir=datadir)
        table = app.Table("table", default=int)

        @app.agent(app.topic(stream, value_serializer="json"), name="apply")
        async def apply(ops):
            async for op in ops:
                if op["op"] == "del":
                    del table[op["key"]]
                else:
                    table[op["key"]] += 1
        return app, table

    def send(ops):
        for op in ops:
            client.xadd(stream, {"value": JSON.encode(op), "key": op["key"].encode()})

    async def settle(app, n):
        await until(lambda: app.agents["apply"].events_in >= n, what=f"{n} operations")
        await app.tables.flush()

    app, table = make_app()
    async with running(app):
        table.changelog.snapshot_min, table.changelog.snapshot_factor = 40, 2
        send([{"key": f"k{i}", "op": "add"} for i in range(10)])
        await settle(app, 10)
        old_store = tmp_path / "old-store"
        shutil.copytree(os.path.join(datadir, app_id, "table-0"), old_store)
        send([{"key": "k0", "op": "del"}])  # a deletion the old store never saw
        done = 11
        for _ in range(6):  # enough flushes of ten keys for a snapshot
            send([{"key": f"k{i}", "op": "add"} for i in range(1, 10)])
            done += 9
            await settle(app, done)
        expected = {f"k{i}": 7 for i in range(1, 10)}
        assert dict(table.items()) == expected
    assert client.xlen(changelog) < 40  # trimmed to the snapshot and what followed it

    # Restart with the store of before the deletion: its entries were
    # trimmed, so the store is rebuilt from the snapshot.
    shutil.rmtree(os.path.join(datadir, app_id, "table-0"))
    shutil.copytree(old_store, os.path.join(datadir, app_id, "table-0"))
    app, table = make_app()
    async with running(app):
        assert table.recovery_stats[0].wiped
        assert dict(table.items()) == expected and "k0" not in table


async def test_a_global_table_on_kafka_holds_every_partition_and_survives_a_restart(
        kafka_broker, tmp_path):
    topic, app_id = unique("views"), unique("glob")
    values = inputs(400, 13)
    await produce_kafka(kafka_broker, topic, values)

    def make_app():
        app = sabot.App(app_id, broker=f"kafka://{kafka_broker}", datadir=str(tmp_path / "d"),
                        broker_commit_interval=0.2, broker_session_timeout=3.0,
                        broker_heartbeat_interval=0.5)
        totals = app.GlobalTable("totals", default=int)

        @app.agent(app.topic(topic, value_serializer="json"), name="count")
        async def count(stream):
            async for value in stream:
                totals[value["id"] % 3] += 1  # any key: a global table
        return app, totals

    app, totals = make_app()
    async with running(app):
        assert totals.held_partitions == [0, 1, 2, 3]  # at start, before any assignment
        await count_all(app, totals, len(values))
        expected = {r: sum(1 for v in values if v["id"] % 3 == r) for r in range(3)}
        assert dict(totals.items()) == expected
        # Each key lives in one partition's store, whatever partitions wrote it.
        held = [sum(1 for _ in totals.store_for(p).keys()) for p in range(4)]
        assert sum(held) == 3
    app, totals = make_app()
    async with running(app):
        assert dict(totals.items()) == expected
