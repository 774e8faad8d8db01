"""Exactly-once on Kafka under faults (issue 14): the broker frozen while a
transaction commits, and a producer fenced by another one with its
transactional id (sabot/channels/kafka_eos.py).

The frozen broker is a private tansu (SIGSTOP of its process, then
SIGCONT): the session's broker is shared by other tests. The step timeout
of a transaction (``kafka_eos.TXN_STEP_TIMEOUT``, a module constant read
at each step) is shortened by monkeypatching, so the freeze outlasts it
without making the test slow.

What tansu answers a fenced producer (tansu 0.6, found by
``test_what_tansu_answers_a_fenced_producer``): a Produce and a
TxnOffsetCommit get error -1 (aiokafka's ``UnknownError``; the offsets step
surfaces as ``KafkaError('Unexpected error during batch delivery')`` and
leaves the producer in its fatal state), and EndTxn gets its connection
closed, which aiokafka retries until Sabot's step timeout. Its own log says
``ProducerFenced``; the client never sees ``PRODUCER_FENCED`` or
``INVALID_PRODUCER_EPOCH``. So Sabot cannot tell fencing from a broken
broker and takes the abort path.
"""
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, UnknownError

import sabot
from sabot.channels import kafka_eos, kafka_protocol
from tests.eos.kafka_log import create_topics, committed_values, log_end, read_log
from tests.helpers import running, unique, until, until_sync
from tests.servers.kafka import broker_for_test

pytestmark = pytest.mark.kafka

HERE = os.path.dirname(os.path.abspath(__file__))

#: The transaction step timeout in these tests (the module's is 10 s).
STEP = 2.0


@pytest.fixture
def private_broker():
    """A tansu broker of this test alone (it gets frozen)."""
    broker = broker_for_test()
    yield broker
    if broker.proc is not None:
        try:
            os.kill(broker.proc.pid, signal.SIGCONT)  # a failed test may leave it frozen
        except OSError:
            pass
    broker.cleanup()


async def produce(bootstrap, topic, values):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in values:
            await producer.send(topic, json.dumps({"i": i}).encode(), key=b"%d" % i)
        await producer.flush()
    finally:
        await producer.stop()


async def group_offset(bootstrap, group, tp):
    """The offset ``group`` committed for ``tp`` on the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


def exactly_once(app_id, broker):
    return sabot.App(app_id, broker=broker.url, processing_guarantee="exactly_once",
                     broker_commit_interval=0.1)


async def test_a_broker_frozen_mid_commit_leaves_the_offsets_and_loses_nothing(
        private_broker, monkeypatch, caplog):
    monkeypatch.setattr(kafka_eos, "TXN_STEP_TIMEOUT", STEP)
    bootstrap = private_broker.bootstrap
    source, target = unique("in"), unique("out")
    await create_topics(bootstrap, (source, 1), (target, 1))
    tp = TopicPartition(source, 0)
    app = exactly_once(unique("eos-freeze"), private_broker)
    release = asyncio.Event()  # value 10 waits for it, each time it is read
    seen = []

    @app.agent(app.topic(source, value_serializer="json"),
               sink=[app.topic(target, value_serializer="json")])
    async def forward(values):
        async for value in values:
            seen.append(value["i"])
            if value["i"] == 10:
                await release.wait()
            yield value

    transport = next(t for t in app.transports if t.scheme == "kafka")
    eos = transport.eos
    freeze = {"armed": False, "frozen": False, "done": False, "committed_after": None}
    commit_round = type(eos).commit_round

    async def commit_round_freezing(self):
        # The moment a commit is due with the outputs of 10..29 in the open
        # transaction (their batch finished): the broker stops answering.
        offsets = transport._offsets.get(tp)
        if freeze["armed"] and offsets is not None and offsets.committable == 30 \
                and not transport._inflight.count([tp]):
            freeze["armed"] = False
            release.clear()  # the records read again wait at 10 (see below)
            os.kill(private_broker.proc.pid, signal.SIGSTOP)
            freeze["frozen"] = True
            try:
                return await commit_round(self)
            finally:
                freeze["committed_after"] = transport._committed.get(tp)
                freeze["done"] = True
        return await commit_round(self)

    monkeypatch.setattr(type(eos), "commit_round", commit_round_freezing)
    caplog.set_level(logging.ERROR, logger="sabot.channels.kafka")
    async with running(app):
        release.set()
        await produce(bootstrap, source, range(10))
        await until(lambda: transport._committed.get(tp) == 10, timeout=60,
                    what="the first 10 committed")
        release.clear()
        await produce(bootstrap, source, range(10, 30))
        await until(lambda: seen[-1:] == [10], timeout=60, what="the agent to hold value 10")
        freeze["armed"] = True
        release.set()
        try:
            await until(lambda: freeze["done"], timeout=60 + 4 * STEP,
                        what="the commit attempted while the broker is frozen")
        finally:
            os.kill(private_broker.proc.pid, signal.SIGCONT)
        # While the broker was gone: the transaction was aborted, the
        # offsets were not moved.
        assert freeze["committed_after"] == 10
        assert eos.aborts == 1 and tp not in eos._producers
        # Read again from 10 (the agent holds it): the group's offset on the
        # broker is still the one committed before the freeze.
        await until(lambda: seen.count(10) >= 2, timeout=90,
                    what=lambda: f"value 10 read again after the resume (seen {seen[-5:]})")
        assert await group_offset(bootstrap, app.id, tp) == 10
        release.set()
        await until(lambda: transport._committed.get(tp) == 30, timeout=90,
                    what="every offset committed after the resume")
    lines = [r.getMessage() for r in caplog.records if "could not commit" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0] and f"{source}[0]" in lines[0] and "offsets stay at 10" in lines[0]
    assert "TimeoutError" in lines[0]
    values = [json.loads(v)["i"] for v in committed_values(await read_log(bootstrap, target))]
    assert sorted(values) == list(range(30))  # every input once: none lost, none twice
    assert await group_offset(bootstrap, app.id, tp) == 30


async def test_what_tansu_answers_a_fenced_producer(kafka_broker):
    # A second producer with the same transactional id fences the first
    # (InitProducerId bumps the epoch). What the first hears next is what
    # Sabot's commit sees when another worker took its partition.
    kafka_protocol.install()
    topic = unique("fence")
    await create_topics(kafka_broker, (topic, 1))
    tid = unique("tid")

    async def fenced_producer():
        first = AIOKafkaProducer(bootstrap_servers=kafka_broker, transactional_id=tid,
                                 acks="all")
        await first.start()
        await first.begin_transaction()
        await (await first.send(topic, b"a"))
        second = AIOKafkaProducer(bootstrap_servers=kafka_broker, transactional_id=tid,
                                  acks="all")
        await second.start()
        return first, second

    # A send: error -1.
    first, second = await fenced_producer()
    try:
        with pytest.raises(UnknownError):
            await asyncio.wait_for(await first.send(topic, b"b"), 30)
    finally:
        await first.stop()
        await second.stop()
    # The offsets step: error -1, reported as a broken sender; the producer
    # is dead (its commit cannot even be tried).
    first, second = await fenced_producer()
    try:
        with pytest.raises(KafkaError, match="Unexpected error during batch delivery"):
            await asyncio.wait_for(first.send_offsets_to_transaction(
                {TopicPartition(topic, 0): 1}, unique("g")), 30)
        assert first._txn_manager.state.name == "FATAL_ERROR"
    finally:
        await first.stop()
        await second.stop()
    # The commit itself: tansu drops the connection, aiokafka retries every
    # 100 ms; only a timeout ends it (Sabot's TXN_STEP_TIMEOUT).
    first, second = await fenced_producer()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(first.commit_transaction(), STEP)
    finally:
        await first.stop()
        await second.stop()


async def test_a_producer_fenced_again_and_again_stops_the_worker(kafka_broker, monkeypatch,
                                                                  caplog):
    # Another producer takes the partition's transactional id each time the
    # app opens a transaction (as a worker that owns the partition now
    # would). tansu never says PRODUCER_FENCED, so each time is an abort and
    # the records are processed again; a limit on aborts in a row without a
    # commit stops the worker instead of retrying forever.
    monkeypatch.setattr(kafka_eos, "TXN_STEP_TIMEOUT", STEP)
    kafka_protocol.install()
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 1), (target, 1))
    app = sabot.App(unique("eos-fenced"), broker=f"kafka://{kafka_broker}",
                    processing_guarantee="exactly_once", broker_commit_interval=0.1)
    holding = []  # one entry each time value 0's output is in an open transaction
    go = asyncio.Event()

    @app.agent(app.topic(source, value_serializer="json"),
               sink=[app.topic(target, value_serializer="json")])
    async def forward(values):
        async for value in values:
            yield value
            if value["i"] == 0:
                holding.append(1)
                await go.wait()
                go.clear()

    transport = next(t for t in app.transports if t.scheme == "kafka")
    limit = kafka_eos.MAX_ABORTS_IN_A_ROW
    caplog.set_level(logging.ERROR, logger="sabot.channels.kafka")
    async with running(app):
        await produce(kafka_broker, source, range(5))
        for n in range(limit):
            await until(lambda: len(holding) > n, timeout=60,
                        what=lambda: f"value 0 held for the {n + 1}th time "
                                     f"(aborts {transport.eos.aborts})")
            usurper = AIOKafkaProducer(bootstrap_servers=kafka_broker,
                                       transactional_id=f"{app.id}-{source}-0")
            await usurper.start()  # the app's producer is fenced
            await usurper.stop()
            go.set()
        await until(lambda: app.crash_reasons, timeout=60 + 4 * STEP,
                    what=lambda: f"the worker to stop (aborts {transport.eos.aborts})")
        assert transport.eos.aborts == limit and transport.eos.commits == 0
    error, = app.crash_reasons
    message = str(error)
    assert "\n" not in message and f"{source}[0]" in message
    assert f"could not commit {limit} times in a row" in message
    lines = [r.getMessage() for r in caplog.records]
    assert sum("could not commit (" in line for line in lines) == limit
    assert sum(message in line for line in lines) == 1
    # Nothing of it was committed: the records are there for the partition's owner.
    assert committed_values(await read_log(kafka_broker, target)) == []


def test_a_worker_cut_off_past_its_session_rejoins_without_a_gap(kafka_broker, tmp_path):
    # Worker A is frozen (SIGSTOP) for longer than its session timeout with
    # batches in its agents and transactions open; worker B (same app) takes
    # its partitions over and fences its producers. A wakes up (SIGCONT) a
    # zombie: its commits cannot succeed, its consumer rejoins the group.
    # It must neither start a producer for a partition (that would fence B's),
    # nor commit, nor send an output of a partition it no longer holds
    # outside a transaction (kafka_eos: a heartbeat confirms membership first).
    # Whatever the interleaving, every input's output is committed once and
    # both workers stop when asked (A's aborts are bounded).
    source, target = unique("in"), unique("out")
    app_id = unique("eos-zombie")
    n = 3000
    asyncio.run(create_topics(kafka_broker, (source, 2), (target, 1)))
    asyncio.run(produce(kafka_broker, source, range(n)))
    cmd = [sys.executable, os.path.join(HERE, "kafka_eos_app.py"), kafka_broker, source,
           target, app_id]
    tps = [TopicPartition(source, p) for p in range(2)]

    def outputs_by(pid):
        batches = asyncio.run(read_log(kafka_broker, target))
        return [v for b in batches if b["control"] is None for _, v in b["records"]
                if json.loads(v)["by"] == pid]

    def all_done():
        committed = [asyncio.run(group_offset(kafka_broker, app_id, tp)) for tp in tps]
        ends = [asyncio.run(log_end(kafka_broker, source, p)) for p in range(2)]
        return committed == ends

    logs = [open(tmp_path / f"worker-{name}.log", "w+") for name in "ab"]
    a = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logs[0])
    b = None
    try:
        until_sync(lambda: outputs_by(a.pid) or a.poll() is not None, timeout=90,
                   what="worker A's first outputs")
        assert a.poll() is None, log_text(logs[0])
        a.send_signal(signal.SIGSTOP)
        b = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logs[1])
        until_sync(lambda: outputs_by(b.pid) or b.poll() is not None, timeout=90,
                   what="worker B taking the partitions over")
        assert b.poll() is None, log_text(logs[1])
        a.send_signal(signal.SIGCONT)
        until_sync(all_done, timeout=120, interval=0.2,
                   what=lambda: f"every offset committed; A: {log_text(logs[0])[-1500:]}; "
                                f"B: {log_text(logs[1])[-1500:]}")
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        # A may have stopped itself (fenced too often); B stops cleanly.
        assert a.wait(60) in (0, 1), log_text(logs[0])
        assert b.wait(60) == 0, log_text(logs[1])
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    batches = asyncio.run(read_log(kafka_broker, target))
    values = [json.loads(v)["i"] for v in committed_values(batches)]
    duplicated = sorted({i for i in values if values.count(i) > 1})
    assert not duplicated, f"committed twice: {duplicated[:20]}"
    assert sorted(values) == list(range(n))
    a_log = log_text(logs[0])
    assert a_log.count("could not commit (") <= 2 * kafka_eos.MAX_ABORTS_IN_A_ROW, a_log[-3000:]


def log_text(fh):
    fh.flush()
    fh.seek(0)
    return fh.read()


async def test_outputs_of_an_abandoned_batch_made_after_its_abort_are_not_committed(
        kafka_broker, monkeypatch, caplog):
    # The app's producer is fenced while value 5 is in the agent: 5's output
    # fails, its batch is abandoned, and the next commit round aborts the
    # transaction and reads the partition again from 0. The agent still
    # works through the rest of that batch (10..19) after the abort: those
    # outputs must not land in the transaction the records read again go to.
    monkeypatch.setattr(kafka_eos, "TXN_STEP_TIMEOUT", STEP)
    kafka_protocol.install()
    source, target = unique("in"), unique("out")
    await create_topics(kafka_broker, (source, 1), (target, 1))
    app = sabot.App(unique("eos-stale"), broker=f"kafka://{kafka_broker}",
                    processing_guarantee="exactly_once", broker_commit_interval=0.1)
    at_5, at_10 = asyncio.Event(), asyncio.Event()
    seen = []

    @app.agent(app.topic(source, value_serializer="json"),
               sink=[app.topic(target, value_serializer="json")])
    async def forward(values):
        async for value in values:
            seen.append(value["i"])
            if value["i"] == 5 and seen.count(5) == 1:
                await at_5.wait()
            if value["i"] == 10 and seen.count(10) == 1:
                await at_10.wait()
            yield value

    transport = next(t for t in app.transports if t.scheme == "kafka")
    caplog.set_level(logging.ERROR, logger="sabot.channels.kafka")
    async with running(app):
        await produce(kafka_broker, source, range(20))
        await until(lambda: seen[-1:] == [5], timeout=60, what="the agent to hold value 5")
        usurper = AIOKafkaProducer(bootstrap_servers=kafka_broker,
                                   transactional_id=f"{app.id}-{source}-0")
        await usurper.start()  # the app's producer is fenced
        await usurper.stop()
        at_5.set()
        await until(lambda: transport.eos.aborts >= 1, timeout=60 + 4 * STEP,
                    what="the fenced transaction aborted")
        at_10.set()  # 10..19 of the abandoned batch now
        await until(lambda: transport._committed.get(TopicPartition(source, 0)) == 20,
                    timeout=90, what="every offset committed")
    values = [json.loads(v)["i"] for v in committed_values(await read_log(kafka_broker, target))]
    duplicated = sorted({i for i in values if values.count(i) > 1})
    assert not duplicated, f"committed twice: {duplicated}"
    assert sorted(values) == list(range(20))
