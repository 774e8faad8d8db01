"""Redis Streams: Sabot against plain redis-py, reading and writing.

    python benchmarks/bench_redis.py [--entries 200000] [--size 100]

Starts its own redis-server (as the tests do: a free port, no persistence),
preloads ``--entries`` entries of ``--size`` bytes, then measures entries/s of

* read, raw: a redis-py loop of ``XREADGROUP COUNT 500`` plus ``XACK``;
* read, sabot: an agent over the same entries (its own consumer group), timed
  until every entry is processed and acknowledged;
* write, raw: ``XADD`` pipelined by hand, 1000 per round trip;
* write, sabot: ``channel.send_batch`` of the same values.

Both sides use redis.asyncio with hiredis. The target is sabot >= 0.9x raw.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis.asyncio as aioredis  # noqa: E402

import sabot  # noqa: E402
from tests.servers.redis import RedisServer  # noqa: E402

READ_COUNT = 500
PIPELINE = 1000


async def preload(client, stream: str, n: int, value: bytes) -> None:
    for start in range(0, n, PIPELINE):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(PIPELINE, n - start)):
            pipe.xadd(stream, {"value": value})
        await pipe.execute()


async def raw_read(client, stream: str, n: int) -> float:
    await client.xgroup_create(stream, "raw", id="0")
    seen = 0
    t0 = time.perf_counter()
    while seen < n:
        reply = await client.xreadgroup("raw", "bench", {stream: ">"}, count=READ_COUNT, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        for _entry_id, fields in entries:
            _ = fields[b"value"]
        seen += len(entries)
        await client.xack(stream, "raw", *[entry_id for entry_id, _ in entries])
    return time.perf_counter() - t0


async def sabot_read(url: str, stream: str, n: int) -> float:
    app = sabot.App("bench-sabot", redis_url=url)
    channel = app.redis_channel(stream, value_serializer="raw")
    seen = 0
    finished = asyncio.Event()

    @app.agent(channel, name="bench-reader")
    async def reader(values):
        nonlocal seen
        async for _value in values:
            seen += 1
            if seen == n:
                finished.set()

    check = aioredis.Redis.from_url(url)
    t0 = time.perf_counter()
    await app.start()
    await finished.wait()
    # Count the acknowledgements in: the raw loop's time includes its XACKs.
    while (await check.xpending(stream, app.id))["pending"]:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    await app.stop()
    await check.aclose()
    return elapsed


async def raw_write(client, stream: str, values: list) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(values), PIPELINE):
        pipe = client.pipeline(transaction=False)
        for value in values[start:start + PIPELINE]:
            pipe.xadd(stream, {"value": value})
        await pipe.execute()
    return time.perf_counter() - t0


async def sabot_write(url: str, stream: str, values: list) -> float:
    app = sabot.App("bench-writer", redis_url=url)
    channel = app.redis_channel(stream, value_serializer="raw")
    t0 = time.perf_counter()
    await (await channel.send_batch(values))
    elapsed = time.perf_counter() - t0
    await app.stop()
    return elapsed


async def run(url: str, n: int, size: int) -> list:
    client = aioredis.Redis.from_url(url)
    value = b"x" * size
    values = [value] * n
    await preload(client, "bench-in", n, value)
    rows = []
    t_raw = await raw_read(client, "bench-in", n)
    t_sabot = await sabot_read(url, "bench-in", n)
    rows.append(("read  XREADGROUP+XACK", n, t_raw, t_sabot))
    t_raw = await raw_write(client, "bench-out-raw", values)
    t_sabot = await sabot_write(url, "bench-out-sabot", values)
    assert await client.xlen("bench-out-raw") == await client.xlen("bench-out-sabot") == n
    rows.append(("write XADD pipelined", n, t_raw, t_sabot))
    await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="value size in bytes")
    args = parser.parse_args()
    with RedisServer() as server:
        rows = asyncio.run(run(server.url, args.entries, args.size))
    mode = "cython" if sabot.fastpath_enabled() else "pure-python"
    print(f"Redis Streams, {args.entries:,} entries of {args.size} B, sabot fast path: {mode}")
    print(f"{'operation':<24}{'raw redis-py/s':>16}{'sabot/s':>14}{'sabot/raw':>11}")
    for name, n, t_raw, t_sabot in rows:
        print(f"{name:<24}{n / t_raw:>16,.0f}{n / t_sabot:>14,.0f}{t_raw / t_sabot:>10.2f}x")


if __name__ == "__main__":
    main()
