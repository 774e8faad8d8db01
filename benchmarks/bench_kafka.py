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
consumer group is not counted for anyone. The raw consumers fetch as much per
partition as Sabot's (``consumer_max_fetch_size``); both producers use
``acks=all``.
Each figure is the median of ``--repeat`` interleaved runs (the broker shares
the machine, so single runs are noisy); the CPU column is this process's CPU
time per message (or row) in that run. For reference, (f0) is a raw aiokafka consumer
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


class Clock:
    """Wall and CPU time of one measured stretch (CPU: this process only)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._wall0 = self._cpu0 = None

    @property
    def running(self) -> bool:
        return self._wall0 is not None

    def start(self) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def stop(self) -> "Clock":
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0
        return self


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
    count, clock = 0, Clock()
    try:
        while count < n:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                if not clock.running:
                    clock.start()
                count += len(records)
        return clock.stop()
    finally:
        await consumer.stop()


async def sabot_consume(bootstrap: str, topic: str, n: int, *, batches: bool,
                        codec: str = "raw", count_rows: bool = False) -> float:
    """(b), (c), (f): a Sabot agent that counts values, batches or rows."""
    app = sabot.App(_unique("bench"), broker=f"kafka://{bootstrap}", **APP_SETTINGS)
    state = {"count": 0}
    clock = Clock()
    done = asyncio.Event()

    if batches:
        @app.agent(app.topic(topic, value_serializer=codec))
        async def count_batches(stream):
            async for batch in stream.batches():
                if not clock.running:
                    clock.start()
                state["count"] += len(batch)
                if state["count"] >= n:
                    clock.stop()
                    done.set()
    else:
        @app.agent(app.topic(topic, value_serializer=codec))
        async def count_values(stream):
            count = 0
            async for _value in stream:
                if count == 0:
                    clock.start()
                count += 1
                if count >= n:
                    clock.stop()
                    done.set()

    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        await app.stop()
    return clock


async def raw_produce(bootstrap: str, topic: str, values) -> float:
    """(d) plain aiokafka: send without waiting, then flush."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        clock = Clock()
        clock.start()
        for value in values:
            await producer.send(topic, value)
        await producer.flush()
        return clock.stop()
    finally:
        await producer.stop()


async def sabot_produce(bootstrap: str, topic: str, values) -> float:
    """(e) Sabot: topic.send without waiting, then topic.flush()."""
    app = sabot.App(_unique("bench-send"), broker=f"kafka://{bootstrap}", **APP_SETTINGS)
    channel = app.topic(topic, value_serializer="raw")
    await app.start()
    try:
        clock = Clock()
        clock.start()
        for value in values:
            await channel.send(value=value)
        await channel.flush()
        return clock.stop()
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
        await preload(bootstrap, arrow, [arrow_message(0)] * arrow_messages)
        rows = arrow_messages * ROWS_PER_BATCH
        fetch = sabot.App("defaults").conf.consumer_max_fetch_size
        cases = {
            "a": (n, lambda: raw_consume(bootstrap, consume, n,
                                         max_partition_fetch_bytes=fetch)),
            "b": (n, lambda: sabot_consume(bootstrap, consume, n, batches=False)),
            "c": (n, lambda: sabot_consume(bootstrap, consume, n, batches=True)),
            "d": (n, lambda: raw_produce(bootstrap, out_d, payloads)),
            "e": (n, lambda: sabot_produce(bootstrap, out_e, payloads)),
            "f0": (rows, lambda: raw_consume(bootstrap, arrow, arrow_messages,
                                             max_partition_fetch_bytes=fetch)),
            "f": (rows, lambda: sabot_consume(bootstrap, arrow, rows, batches=True,
                                              codec="arrow")),
        }
        # Runs are interleaved so that a burst of load from elsewhere on the
        # machine hits every case alike; each case reports its median run
        # (a best-of would reward one lucky run).
        runs: dict = {key: [] for key in cases}
        for _ in range(repeat):
            for key, (count, measure) in cases.items():
                clock = await measure()
                runs[key].append((count / clock.wall, clock.cpu / count * 1e6))
    finally:
        broker.cleanup()
    report({key: sorted(r)[len(r) // 2] for key, r in runs.items()}, n, repeat)


def report(figures: dict, n: int, repeat: int) -> None:
    """Print the table (``figures``: case -> (rate, CPU us per item)) and the ratios."""
    mode = "cython" if sabot.fastpath_enabled() else "pure-python"
    print(f"\nSabot Kafka benchmark (fast path: {mode}, {n:,} messages of 100 B, "
          f"{PARTITIONS} partitions, median of {repeat} runs)")
    labels = {
        "a": "(a)  aiokafka getmany, count          msg/s",
        "b": "(b)  sabot agent, async for value     msg/s",
        "c": "(c)  sabot agent, stream.batches()    msg/s",
        "d": "(d)  aiokafka send + flush            msg/s",
        "e": "(e)  sabot topic.send + flush         msg/s",
        "f0": "(f0) aiokafka arrow messages, count  row/s",
        "f": f"(f)  sabot arrow, {ROWS_PER_BATCH // 1000}k-row batches     row/s",
    }
    print(f"  {'case':<43} {'rate':>14}   client CPU us/item")
    for key, label in labels.items():
        rate, cpu = figures[key]
        print(f"  {label}  {rate:>14,.0f}   {cpu:10.3f}")
    checks = [
        ("(b)/(a)", figures["b"][0] / figures["a"][0], 0.9),
        ("(c)/(a)", figures["c"][0] / figures["a"][0], 0.9),
        ("(e)/(d)", figures["e"][0] / figures["d"][0], 0.9),
        ("(f)/(f0)", figures["f"][0] / figures["f0"][0], 0.9),
        ("(f) / 10M rows/s", figures["f"][0] / 10_000_000, 1.0),
    ]
    print("ratios:")
    for name, ratio, target in checks:
        verdict = "ok" if ratio >= target else "BELOW TARGET"
        print(f"  {name:<18} {ratio:6.2f}  (target >= {target:g})  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--arrow-messages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.arrow_messages, args.repeat))


if __name__ == "__main__":
    main()
