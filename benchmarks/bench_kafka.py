"""Kafka transport throughput: Sabot against plain aiokafka on the same broker.

    python benchmarks/bench_kafka.py [--messages 200000] [--arrow-messages 300]

Starts its own tansu broker (the test fixture's code), preloads MESSAGES
messages of 100 bytes into 4 partitions, then measures in one run:

  (a) a raw aiokafka consumer with ``getmany`` that only counts
  (b) a Sabot agent doing ``async for value in stream`` (raw codec)
  (c) a Sabot agent on ``stream.batches()`` (raw codec)
  (d) raw aiokafka ``send`` without waiting per message, then ``flush``
  (e) Sabot ``topic.send`` the same way, then ``topic.flush()``
  (f) rows/s of 10,000-row RecordBatches (int64, float64, string), one per
      message (arrow codec), through a Sabot agent on ``stream.batches()``

Consumers are timed from their first message to their last, so joining the
consumer group is not counted for anyone. Both producers use ``acks=all``.
Each figure is the best of ``--repeat`` runs (the broker shares the machine,
so single runs are noisy). For reference, (f0) is a raw aiokafka consumer
counting the rows of the same Arrow messages with Sabot's fetch size: the
ceiling that the broker and aiokafka set for (f).
Targets: (b) >= 0.9 x (a), (e) >= 0.9 x (d), (f) >= 10 million rows/s.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sabot  # noqa: E402
from sabot.codecs import get_codec  # noqa: E402
from tests.servers.kafka import start_broker  # noqa: E402

PARTITIONS = 4
ROWS_PER_BATCH = 10_000
# Short session timeout: tansu answers JoinGroup after half of it.
APP_SETTINGS = dict(broker_session_timeout=2.0, broker_heartbeat_interval=0.5,
                    broker_commit_interval=1.0)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def preload(bootstrap: str, topic: str, values) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=1 << 20, max_request_size=8 << 20)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, partition=i % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, n: int, **options) -> float:
    """(a) plain aiokafka: getmany and count."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=_unique("raw"),
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=2000, heartbeat_interval_ms=500, **options)
    await consumer.start()
    count, started = 0, None
    try:
        while count < n:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                if started is None:
                    started = time.perf_counter()
                count += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def sabot_consume(bootstrap: str, topic: str, n: int, *, batches: bool,
                        codec: str = "raw", count_rows: bool = False) -> float:
    """(b), (c), (f): a Sabot agent that counts values, batches or rows."""
    app = sabot.App(_unique("bench"), broker=f"kafka://{bootstrap}", **APP_SETTINGS)
    state = {"count": 0, "started": None, "ended": None}
    done = asyncio.Event()

    if batches:
        @app.agent(app.topic(topic, value_serializer=codec))
        async def count_batches(stream):
            async for batch in stream.batches():
                if state["started"] is None:
                    state["started"] = time.perf_counter()
                state["count"] += len(batch)
                if state["count"] >= n:
                    state["ended"] = time.perf_counter()
                    done.set()
    else:
        @app.agent(app.topic(topic, value_serializer=codec))
        async def count_values(stream):
            count = 0
            async for _value in stream:
                if count == 0:
                    state["started"] = time.perf_counter()
                count += 1
                if count >= n:
                    state["ended"] = time.perf_counter()
                    done.set()

    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        await app.stop()
    return state["ended"] - state["started"]


async def raw_produce(bootstrap: str, topic: str, values) -> float:
    """(d) plain aiokafka: send without waiting, then flush."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        started = time.perf_counter()
        for value in values:
            await producer.send(topic, value)
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def sabot_produce(bootstrap: str, topic: str, values) -> float:
    """(e) Sabot: topic.send without waiting, then topic.flush()."""
    app = sabot.App(_unique("bench-send"), broker=f"kafka://{bootstrap}", **APP_SETTINGS)
    channel = app.topic(topic, value_serializer="raw")
    await app.start()
    try:
        started = time.perf_counter()
        for value in values:
            await channel.send(value=value)
        await channel.flush()
        return time.perf_counter() - started
    finally:
        await app.stop()


def arrow_message(i: int) -> bytes:
    start = i * ROWS_PER_BATCH
    batch = pa.RecordBatch.from_pydict({
        "id": pa.array(range(start, start + ROWS_PER_BATCH), pa.int64()),
        "price": pa.array([float(x % 1000) / 10 for x in range(ROWS_PER_BATCH)], pa.float64()),
        "sym": pa.array([f"SYM{x % 500}" for x in range(ROWS_PER_BATCH)], pa.string()),
    })
    return get_codec("arrow").encode(batch)


async def best(repeat: int, count: int, measure) -> float:
    """The best rate (``count`` / seconds) of ``repeat`` runs of ``measure()``."""
    return max([count / await measure() for _ in range(repeat)])


async def run(n: int, arrow_messages: int, repeat: int) -> None:
    broker = start_broker()
    try:
        bootstrap = broker.bootstrap
        consume, arrow, out_d, out_e = (_unique(x) for x in ("consume", "arrow", "send-d", "send-e"))
        await create_topics(bootstrap, consume, arrow, out_d, out_e)
        payloads = [b"%099d" % i + b"\n" for i in range(n)]  # 100 bytes each
        print(f"broker {bootstrap}; preloading {n:,} x 100 B and "
              f"{arrow_messages} x {ROWS_PER_BATCH:,}-row RecordBatches ...", flush=True)
        await preload(bootstrap, consume, payloads)
        message = arrow_message(0)
        await preload(bootstrap, arrow, [message] * arrow_messages)

        results = {}
        results["a"] = await best(repeat, n, lambda: raw_consume(bootstrap, consume, n))
        results["b"] = await best(repeat, n, lambda: sabot_consume(bootstrap, consume, n,
                                                                   batches=False))
        results["c"] = await best(repeat, n, lambda: sabot_consume(bootstrap, consume, n,
                                                                   batches=True))
        results["d"] = await best(repeat, n, lambda: raw_produce(bootstrap, out_d, payloads))
        results["e"] = await best(repeat, n, lambda: sabot_produce(bootstrap, out_e, payloads))
        rows = arrow_messages * ROWS_PER_BATCH
        fetch = sabot.App("defaults").conf.consumer_max_fetch_size
        results["f0"] = ROWS_PER_BATCH * await best(
            repeat, arrow_messages, lambda: raw_consume(bootstrap, arrow, arrow_messages,
                                                        max_partition_fetch_bytes=fetch))
        results["f"] = await best(repeat, rows, lambda: sabot_consume(
            bootstrap, arrow, rows, batches=True, codec="arrow"))
    finally:
        broker.cleanup()

    print(f"\nSabot Kafka benchmark (fast path: {'cython' if sabot.fastpath_enabled() else 'pure-python'},"
          f" {n:,} messages of 100 B, {PARTITIONS} partitions, best of {repeat})")
    labels = {
        "a": "(a) aiokafka getmany, count           msg/s",
        "b": "(b) sabot agent, async for value     msg/s",
        "c": "(c) sabot agent, stream.batches()    msg/s",
        "d": "(d) aiokafka send + flush            msg/s",
        "e": "(e) sabot topic.send + flush         msg/s",
        "f0": f"(f0) aiokafka arrow messages, count  row/s",
        "f": f"(f) sabot arrow, {ROWS_PER_BATCH // 1000}k-row batches     row/s",
    }
    for key, label in labels.items():
        print(f"  {label}  {results[key]:>14,.0f}")
    checks = [
        ("(b)/(a)", results["b"] / results["a"], 0.9),
        ("(c)/(a)", results["c"] / results["a"], 0.9),
        ("(e)/(d)", results["e"] / results["d"], 0.9),
        ("(f)/(f0)", results["f"] / results["f0"], 0.9),
        ("(f) / 10M rows/s", results["f"] / 10_000_000, 1.0),
    ]
    print("ratios:")
    for name, ratio, target in checks:
        verdict = "ok" if ratio >= target else "BELOW TARGET"
        print(f"  {name:<18} {ratio:6.2f}  (target >= {target:g})  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--arrow-messages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.arrow_messages, args.repeat))


if __name__ == "__main__":
    main()
