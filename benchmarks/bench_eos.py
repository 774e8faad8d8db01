"""Exactly-once against at-least-once, on Kafka and from Redis to Redis.

    python benchmarks/bench_eos.py [--values 20000] [--repeat 2]

Starts its own tansu broker and redis-server. One app in this process, an
agent that yields every value to an output topic (stream), over a
preloaded input of ``--values`` small JSON values (2 partitions on Kafka).
Throughput is values per second from the moment the worker holds its
input (Kafka: partitions assigned) until every input offset is committed
(Redis: every entry acknowledged), with ``processing_guarantee``
``at_least_once`` and ``exactly_once``, at a 100 ms commit interval and at
Sabot's default (2 s; Redis acknowledges as batches finish, without an
interval). Each figure is the best of ``--repeat`` runs, the two modes
alternating. Target: exactly-once >= 0.8x at-least-once at 100 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

import sabot  # noqa: E402
from tests.helpers import unique  # noqa: E402
from tests.servers.kafka import start_broker  # noqa: E402
from tests.servers.redis import RedisServer  # noqa: E402


async def _kafka_input(bootstrap: str, topic: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, json.dumps({"i": i}).encode(), key=b"%d" % i)
        await producer.flush()
    finally:
        await producer.stop()


async def kafka_run(bootstrap: str, n: int, guarantee: str, interval: float) -> float:
    source, target = unique("bin"), unique("bout")
    await _kafka_input(bootstrap, source, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = sabot.App(unique("beos"), broker=f"kafka://{bootstrap}",
                        processing_guarantee=guarantee, broker_commit_interval=interval)
    out = app.topic(target, partitions=1, value_serializer="json")

    @app.agent(app.topic(source, value_serializer="json"), sink=[out])
    async def forward(values: Any) -> Any:
        async for value in values:
            yield value

    transport = next(t for t in app.transports if t.scheme == "kafka")
    await app.start()
    try:
        while transport.consumer is None or len(transport.consumer.assignment()) < 2:
            await asyncio.sleep(0.002)
        t0 = time.perf_counter()
        while sum(transport._committed.values()) < n:
            await asyncio.sleep(0.002)
        return n / (time.perf_counter() - t0)
    finally:
        await app.stop()


async def redis_run(url: str, n: int, guarantee: str) -> float:
    import redis.asyncio as aioredis
    source, target = unique("bin"), unique("bout")
    client = aioredis.Redis.from_url(url)
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            pipe.xadd(source, {"value": json.dumps({"i": i}).encode()})
        await pipe.execute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = sabot.App(unique("beos"), redis_url=url, processing_guarantee=guarantee)
    out = app.redis_channel(target, value_serializer="json")

    @app.agent(app.redis_channel(source, value_serializer="json"), sink=[out])
    async def forward(values: Any) -> Any:
        async for value in values:
            yield value

    await app.start()
    try:
        t0 = time.perf_counter()
        while True:
            groups = await client.xinfo_groups(source)
            if groups and groups[0]["pending"] == 0 and \
                    groups[0]["last-delivered-id"] == (await client.xinfo_stream(source))[
                        "last-generated-id"]:
                break
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        assert await client.xlen(target) == n
        return n / elapsed
    finally:
        await app.stop()
        await client.aclose()


def best(results: Dict[str, List[float]], key: str, value: float) -> None:
    results.setdefault(key, []).append(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    n = args.values
    results: Dict[str, List[float]] = {}
    broker = start_broker()
    redis_server = RedisServer().start()
    try:
        for _ in range(args.repeat):
            for interval in (0.1, 2.0):
                for guarantee in ("at_least_once", "exactly_once"):
                    rate = asyncio.run(kafka_run(broker.bootstrap, n, guarantee, interval))
                    best(results, f"kafka {guarantee} @ {interval:g}s", rate)
            for guarantee in ("at_least_once", "exactly_once"):
                best(results, f"redis {guarantee}", asyncio.run(redis_run(redis_server.url, n,
                                                                          guarantee)))
    finally:
        broker.cleanup()
        redis_server.stop()
    top = {key: max(values) for key, values in results.items()}
    print(f"exactly-once against at-least-once, {n} values, best of {args.repeat}:")
    rows: List[Tuple[str, str, str]] = [
        ("kafka, commit interval 100 ms", "kafka at_least_once @ 0.1s", "kafka exactly_once @ 0.1s"),
        ("kafka, commit interval 2 s (default)", "kafka at_least_once @ 2s",
         "kafka exactly_once @ 2s"),
        ("redis to redis", "redis at_least_once", "redis exactly_once"),
    ]
    for label, alo, eos in rows:
        ratio = top[eos] / top[alo]
        print(f"  {label:38s} at-least-once {top[alo]:9,.0f}/s  exactly-once {top[eos]:9,.0f}/s"
              f"  {ratio:4.2f}x{'  (target >= 0.8x)' if '100 ms' in label else ''}")


if __name__ == "__main__":
    main()
