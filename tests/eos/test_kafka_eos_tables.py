"""Exactly-once on Kafka with a table: the outputs, the table's changelog
entries and the input offsets commit in one transaction per input partition,
and an aborted transaction leaves the table exact (sabot/channels/kafka_eos.py,
sabot/tables/table.py).

tansu returns no list of aborted transactions on fetch, so what a
read_committed reader would see is computed from the log's markers
(tests/eos/kafka_log.py); a fresh app recovering from the changelog on tansu
reads the aborted entries too, which is fine here only because the entries
written again after the abort come later and carry the same keys.
"""
import asyncio
import collections
import json
import os
import sys

import pytest
from aiokafka import AIOKafkaProducer

import sabot
from sabot.tables.codec import decode, decode_record
from tests.eos.crash import kill_at_random_moments_then_finish
from tests.eos.kafka_log import committed_records, markers, read_log
from tests.eos.test_kafka_eos import create_topics, offsets
from tests.eos.tables import stored
from tests.helpers import running, unique, until

pytestmark = pytest.mark.kafka

HERE = os.path.dirname(os.path.abspath(__file__))

KEYS = 7


async def produce_keyed(bootstrap, topic, values):
    """Send each ``i`` of ``values`` as ``{"i": i}`` with the key ``k<i % KEYS>``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in values:
            await producer.send(topic, json.dumps({"i": i}).encode(), key=b"k%d" % (i % KEYS))
        await producer.flush()
    finally:
        await producer.stop()


def expected_counts(values):
    return dict(collections.Counter(f"k{i % KEYS}" for i in values))


def counting_app(bootstrap, app_id, source, target, datadir, gate=None, seen=None):
    app = sabot.App(app_id, broker=f"kafka://{bootstrap}", processing_guarantee="exactly_once",
                    broker_commit_interval=0.1, datadir=str(datadir))
    counts = app.Table("counts", default=int, partitions=2)

    @app.agent(app.topic(source, value_serializer="json"),
               sink=[app.topic(target, value_serializer="json")])
    async def count(stream):
        async for key, value in stream.items():
            if seen is not None:
                seen.append(value["i"])
            key = key.decode()
            counts[key] += 1
            if gate is not None and value["i"] == 10:
                await gate.wait()  # the transaction is open with changes in it
            yield {"i": value["i"], "key": key, "count": counts[key]}

    return app, counts


async def changelog_state(bootstrap, topic, partitions=2):
    """key -> last committed value of a table changelog, and its log batches."""
    state, logs = {}, []
    for p in range(partitions):
        batches = await read_log(bootstrap, topic, p)
        logs.append(batches)
        for key, value in committed_records(batches):
            if value is None:
                state.pop(decode(key), None)
            else:
                state[decode(key)] = decode_record(value)[0]
    return state, logs


async def recovered(bootstrap, app_id, source, target, datadir):
    """A fresh app of the same id, empty stores: the table rebuilt from the changelog."""
    app, counts = counting_app(bootstrap, app_id, source, target, datadir)
    async with running(app):
        await until(lambda: counts.held_partitions == [0, 1], timeout=30,
                    what="both partitions recovered")
        return counts.as_dict()


async def test_changelog_entries_commit_with_the_outputs_and_offsets(kafka_broker, tmp_path):
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 2), (target, 1))
    app_id = unique("eos-table")
    app, counts = counting_app(kafka_broker, app_id, source, target, tmp_path / "a")
    transport = next(t for t in app.transports if t.scheme == "kafka")
    n = 300
    async with running(app):
        await produce_keyed(kafka_broker, source, range(n))
        await until(lambda: sum(transport._committed.values()) == n, timeout=30,
                    what="every offset committed")
        # Committed: applied to the stores, nothing held any more.
        assert counts.as_dict() == expected_counts(range(n))
        assert stored(counts) == expected_counts(range(n))
        assert not counts._held
    changelog, logs = await changelog_state(kafka_broker, counts.changelog_topic_name)
    assert changelog == expected_counts(range(n))
    out_batches = await read_log(kafka_broker, target)
    out_pids = {b["producer_id"] for b in out_batches if b["control"] is None}
    for p, batches in enumerate(logs):
        data = [b for b in batches if b["control"] is None]
        # Every entry in a transaction, of the producer that wrote the
        # outputs of input partition p: the same transactions.
        assert data and all(b["transactional"] for b in data)
        assert {b["producer_id"] for b in data} <= out_pids
        assert len({b["producer_id"] for b in data}) == 1
        assert markers(batches)[0] >= 1
    committed, ends = await offsets(kafka_broker, app_id, source)
    assert committed == ends
    outputs = [json.loads(v) for v in values_of_raw(out_batches)]
    assert sorted(o["i"] for o in outputs) == list(range(n))
    assert await recovered(kafka_broker, app_id, source, target,
                           tmp_path / "b") == expected_counts(range(n))


def values_of_raw(batches):
    return [value for _, value in committed_records(batches)]


async def test_an_aborted_transaction_leaves_the_table_exact(kafka_broker, tmp_path, caplog):
    # As in test_kafka_eos: another producer takes the partition's
    # transactional id while its transaction holds outputs and changelog
    # entries; the commit fails, the transaction is aborted and its records
    # are processed again. The table must count each record once.
    from sabot.channels import kafka_protocol
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 2), (target, 1))
    app_id = unique("eos-table")
    gate, seen = asyncio.Event(), []
    app, counts = counting_app(kafka_broker, app_id, source, target, tmp_path / "a",
                               gate=gate, seen=seen)
    transport = next(t for t in app.transports if t.scheme == "kafka")
    first, second = list(range(10)), list(range(10, 30))
    # Everything to partition 0 (the key picks the partition otherwise).
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker)

    async def send(values):
        await producer.start()
        try:
            for i in values:
                await producer.send(source, json.dumps({"i": i}).encode(),
                                    key=b"k%d" % (i % KEYS), partition=0)
            await producer.flush()
        finally:
            await producer.stop()

    async with running(app):
        await send(first)
        await until(lambda: sum(transport._committed.values()) == 10, timeout=30,
                    what="the first 10 committed")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker)
        await send(second)
        await until(lambda: 10 in seen, what="the agent to hold value 10")
        # The flush loop puts the changes made so far into the open transaction.
        await until(lambda: counts._held, what="changes held in the open transaction")
        kafka_protocol.install()
        usurper = AIOKafkaProducer(bootstrap_servers=kafka_broker,
                                   transactional_id=f"{app_id}-{source}-0")
        await usurper.start()  # bumps the epoch: the app's transaction is dead
        try:
            gate.set()
            await until(lambda: transport.eos.aborts >= 1, timeout=40,
                        what="the transaction to be aborted")
            await until(lambda: sum(transport._committed.values()) == 30, timeout=40,
                        what="every offset committed after the abort")
        finally:
            await usurper.stop()
        assert len(seen) > 30  # records were processed again
        want = expected_counts(first + second)
        assert counts.as_dict() == want
        assert stored(counts) == want
        assert not counts._held
    changelog, logs = await changelog_state(kafka_broker, counts.changelog_topic_name)
    assert changelog == want
    # The aborted transaction's entries are in the log (tansu shows them to
    # every reader), beyond the committed ones.
    everything = [v for b in logs[0] if b["control"] is None for _, v in b["records"]]
    assert len(everything) > len(committed_records(logs[0]))
    committed, ends = await offsets(kafka_broker, app_id, source)
    assert committed[0] == ends[0] == 30
    outputs = [json.loads(v) for v in values_of_raw(await read_log(kafka_broker, target))]
    assert sorted(o["i"] for o in outputs) == sorted(first + second)
    # The counts yielded are those of one pass over the input.
    final = {}
    for o in outputs:
        final[o["key"]] = max(final.get(o["key"], 0), o["count"])
    assert final == want
    assert await recovered(kafka_broker, app_id, source, target, tmp_path / "b") == want


def test_table_exact_across_kill_9_at_random_moments(kafka_broker, kafka_broker_server,
                                                     tmp_path):
    source, target = unique("in"), unique("out")
    app_id = unique("eos-table-crash")
    n = 1000
    asyncio.run(create_topics(kafka_broker, (source, 2), (target, 1)))
    asyncio.run(produce_keyed(kafka_broker, source, range(n)))
    datadir = str(tmp_path / "worker")
    cmd = [sys.executable, os.path.join(HERE, "kafka_eos_table_app.py"), kafka_broker, source,
           target, app_id, datadir]

    def written():
        return asyncio.run(offsets(kafka_broker, app_id, target, 1))[1][0]

    def all_done():
        committed, ends = asyncio.run(offsets(kafka_broker, app_id, source))
        return committed == ends

    def explain(log):
        return (f"group offsets and log ends {asyncio.run(offsets(kafka_broker, app_id, source))}; "
                f"worker: {log}; broker: {kafka_broker_server.log_tail()[-1000:]}")

    kill_at_random_moments_then_finish(cmd, written, all_done, max_kills=3, pause=0.3,
                                       timeout=60, explain=explain)
    want = expected_counts(range(n))
    outputs = [json.loads(v) for v in values_of_raw(asyncio.run(read_log(kafka_broker, target)))]
    assert sorted(o["i"] for o in outputs) == list(range(n))  # each once
    # Not asserted here: that the counts in the committed outputs are those of
    # one pass (1..count per key). A restarted worker recovers its table from
    # the changelog, and tansu shows it the entries of the killed worker's
    # aborted transaction too (no aborted-transactions list on fetch), so its
    # table may be ahead of the committed offsets: the records processed
    # again are skipped as replays (the state stays exact) and yield the later
    # count. On Apache Kafka the read_committed recovery stops at the open
    # transaction (docs/exactly-once.md).
    # What a read_committed reader of a complete broker would recover (the
    # log read with its markers), and the last worker's stores, kept across
    # its lives (applied at commits only, never ahead of the changelog).
    changelog, _ = asyncio.run(changelog_state(kafka_broker, f"{app_id}-counts-changelog"))
    assert changelog == want
    assert asyncio.run(recovered(kafka_broker, app_id, source, target, datadir)) == want
    # Not asserted: a fresh recovery (empty stores) here. After workers were
    # killed mid-transaction, tansu's read_committed fetches stop short of
    # the end (seen: counts of 13 of 143), while Sabot recovers read_committed
    # in this mode, as Apache Kafka needs (docs/exactly-once.md).


async def test_writes_of_a_batch_still_in_an_agent_after_its_abort_are_dropped(
        kafka_broker, tmp_path, monkeypatch):
    # As test_faults_kafka's stale-output test, with a table: the app's
    # producer is fenced while value 5 is in the agent; 5's output fails,
    # its batch is abandoned, the transaction aborted and the partition read
    # again from 0. The agent still works through the rest of that batch
    # (10..19, which only count) after the abort: its table writes must be
    # dropped, as its outputs are, or the records read again count twice.
    from sabot.channels import kafka_eos, kafka_protocol
    monkeypatch.setattr(kafka_eos, "TXN_STEP_TIMEOUT", 2.0)
    kafka_protocol.install()
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 1), (target, 1))
    app = sabot.App(unique("eos-stale-table"), broker=f"kafka://{kafka_broker}",
                    processing_guarantee="exactly_once", broker_commit_interval=0.1,
                    datadir=str(tmp_path))
    counts = app.Table("counts", default=int, partitions=1)
    at_5, at_10 = asyncio.Event(), asyncio.Event()
    seen = []

    @app.agent(app.topic(source, value_serializer="json"),
               sink=[app.topic(target, value_serializer="json")])
    async def count(stream):
        async for key, value in stream.items():
            seen.append(value["i"])
            counts[key.decode()] += 1
            if value["i"] == 5 and seen.count(5) == 1:
                await at_5.wait()
            if value["i"] == 10 and seen.count(10) == 1:
                await at_10.wait()
            if value["i"] < 10:  # 10..19 only count: no failed output aborts again
                yield value

    transport = next(t for t in app.transports if t.scheme == "kafka")
    async with running(app):
        await produce_keyed(kafka_broker, source, range(20))
        await until(lambda: seen[-1:] == [5], timeout=60, what="the agent to hold value 5")
        usurper = AIOKafkaProducer(bootstrap_servers=kafka_broker,
                                   transactional_id=f"{app.id}-{source}-0")
        await usurper.start()  # the app's producer is fenced
        await usurper.stop()
        at_5.set()
        await until(lambda: transport.eos.aborts >= 1, timeout=90,
                    what="the fenced transaction aborted")
        at_10.set()  # 10..19 of the abandoned batch now
        await until(lambda: sum(transport._committed.values()) == 20, timeout=90,
                    what="every offset committed")
        want = expected_counts(range(20))
        assert counts.as_dict() == want
        assert stored(counts) == want
