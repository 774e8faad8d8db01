"""Exactly-once on Kafka: one transactional producer per input partition; the
outputs and the input offsets commit together (sabot/channels/kafka_eos.py).

What tansu can show is tested: the outputs in committed transactions (read
from the log's markers, tests/eos/kafka_log.py) hold every input once,
after kill -9 of the worker at random moments too, and the group's offsets
are those of the transactions.
"""
import asyncio
import json
import logging
import os
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import sabot
from sabot.exceptions import ConfigurationError
from tests.eos.crash import kill_at_random_moments_then_finish
from tests.eos.kafka_log import create_topics, committed_values, log_end, markers, read_log
from tests.helpers import running, unique, until

pytestmark = pytest.mark.kafka

HERE = os.path.dirname(os.path.abspath(__file__))


async def produce(bootstrap, topic, n):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, json.dumps({"i": i}).encode(), key=b"%d" % i)
        await producer.flush()
    finally:
        await producer.stop()


async def offsets(bootstrap, group, topic, partitions=2):
    """(committed offsets of ``group``, end offsets) of ``topic``'s partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = [await consumer.committed(tp) for tp in tps]
        return committed, [await log_end(bootstrap, topic, p) for p in range(partitions)]
    finally:
        await consumer.stop()


def values_of(batches):
    return [json.loads(v)["i"] for v in committed_values(batches)]


async def test_outputs_and_offsets_commit_in_one_transaction_per_partition(kafka_broker):
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 2), (target, 1))
    app = sabot.App(unique("eos"), broker=f"kafka://{kafka_broker}",
                    processing_guarantee="exactly_once", broker_commit_interval=0.1)
    out = app.topic(target, value_serializer="json")

    @app.agent(app.topic(source, value_serializer="json"), sink=[out])
    async def double(values):
        async for value in values:
            yield {"i": value["i"] * 2}

    transport = next(t for t in app.transports if t.scheme == "kafka")
    async with running(app):
        await produce(kafka_broker, source, 300)
        await until(lambda: sum(transport._committed.values()) == 300, timeout=30,
                    what="every offset committed")
        ids = {transport.eos.transactional_id(tp) for tp in transport._committed}
        assert ids == {f"{app.id}-{source}-0", f"{app.id}-{source}-1"}
    batches = await read_log(kafka_broker, target)
    assert sorted(values_of(batches)) == [2 * i for i in range(300)]
    data = [b for b in batches if b["control"] is None]
    assert data and all(b["transactional"] for b in data)  # nothing outside a transaction
    commits, aborts = markers(batches)
    assert commits >= 2 and aborts == 0
    # Two producers (one per input partition) wrote them.
    assert len({b["producer_id"] for b in data}) == 2
    committed, ends = await offsets(kafka_broker, app.id, source)
    assert committed == ends


async def test_an_output_from_two_partitions_is_refused():
    from sabot.channels.kafka_eos import _partition_of

    class Source:
        def __init__(self, partition):
            self.positions = [("t", partition, 0)]

    assert _partition_of([Source(1), Source(1)]) == TopicPartition("t", 1)
    with pytest.raises(ConfigurationError, match="cannot be committed"):
        _partition_of([Source(0), Source(1)])


def test_outputs_exactly_once_across_kill_9_at_random_moments(kafka_broker, kafka_broker_server):
    source, target = unique("in"), unique("out")
    app_id = unique("eos-crash")
    n = 1000
    asyncio.run(create_topics(kafka_broker, (source, 2), (target, 1)))
    asyncio.run(produce(kafka_broker, source, n))
    cmd = [sys.executable, os.path.join(HERE, "kafka_eos_app.py"), kafka_broker, source,
           target, app_id]

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
    batches = asyncio.run(read_log(kafka_broker, target))
    values = values_of(batches)
    duplicated = sorted({i for i in values if values.count(i) > 1})
    assert not duplicated, f"committed twice: {duplicated[:20]}"
    assert sorted(values) == list(range(n))
    # The log holds more than what was committed: the killed workers' open
    # transactions (tansu would hand them to a read_committed consumer too).
    everything = [v for b in batches if b["control"] is None for _, v in b["records"]]
    assert len(everything) > n


async def test_a_transaction_that_cannot_commit_is_aborted_and_processed_again(kafka_broker,
                                                                                caplog):
    # Another producer takes the partition's transactional id (as a worker
    # taking the partition over would): the app's open transaction cannot
    # commit. tansu answers with an unknown error rather than
    # PRODUCER_FENCED, so this is the abort path: one line, the offsets stay,
    # the records are processed again into a new transaction.
    from sabot.channels import kafka_protocol
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 1), (target, 1))
    app = sabot.App(unique("eos"), broker=f"kafka://{kafka_broker}",
                    processing_guarantee="exactly_once", broker_commit_interval=0.1)
    gate = asyncio.Event()
    seen = []

    @app.agent(app.topic(source, value_serializer="json"),
               sink=[app.topic(target, value_serializer="json")])
    async def forward(values):
        async for value in values:
            seen.append(value["i"])
            if value["i"] == 10:
                await gate.wait()  # the transaction is open with outputs in it
            yield value

    transport = next(t for t in app.transports if t.scheme == "kafka")
    caplog.set_level(logging.ERROR, logger="sabot.channels.kafka")
    async with running(app):
        await produce(kafka_broker, source, 10)
        await until(lambda: sum(transport._committed.values()) == 10, timeout=30,
                    what="the first 10 committed")
        await produce(kafka_broker, source, 20)  # values 0..19 again, as 10..29
        await until(lambda: len(seen) >= 11, what="the agent to hold value 10")
        kafka_protocol.install()
        usurper = AIOKafkaProducer(bootstrap_servers=kafka_broker,
                                   transactional_id=f"{app.id}-{source}-0")
        await usurper.start()  # bumps the epoch: the app's transaction is dead
        try:
            gate.set()
            await until(lambda: "could not commit" in caplog.text, timeout=40,
                        what="the failed commit to be reported")
            await until(lambda: sum(transport._committed.values()) == 30, timeout=40,
                        what="every offset committed after the abort")
        finally:
            await usurper.stop()
    line = next(r.getMessage() for r in caplog.records if "could not commit" in r.getMessage())
    assert "\n" not in line and "offsets stay at 10" in line
    values = [json.loads(v)["i"] for v in committed_values(await read_log(kafka_broker, target))]
    assert sorted(values) == sorted(list(range(10)) + list(range(20)))
