"""Redis Streams: Sabot against plain redis-py, reading and writing.

    python benchmarks/bench_redis.py [--entries 200000] [--size 100] [--repeat 3]

Starts its own redis-server (as the tests do: a free port, no persistence),
preloads ``--entries`` entries of ``--size`` bytes, then measures entries/s of

* read, raw: a redis-py loop of ``XREADGROUP COUNT 500`` plus ``XACK``;
* read, sabot: an agent over the same entries (its own consumer group), timed
  until every entry is processed and acknowledged;
* write, raw: ``XADD`` pipelined by hand, 1000 per round trip;
* write, sabot: ``channel.send_batch`` of the same values.

Both sides use redis.asyncio with hiredis. Each figure is the best of
``--repeat`` runs (alternating raw and sabot, so a busy machine hurts both
alike). The target is sabot >= 0.9x raw.
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


async def raw_read(client, stream: str, n: int, group: str) -> float:
    await client.xgroup_create(stream, group, id="0")
    seen = 0
    t0 = time.perf_counter()
    while seen < n:
        reply = await client.xreadgroup(group, "bench", {stream: ">"}, count=READ_COUNT, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        for _entry_id, fields in entries:
            _ = fields[b"value"]
        seen += len(entries)
        await client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    return time.perf_counter() - t0


async def sabot_read(url: str, stream: str, n: int, group: str) -> float:
    app = sabot.App(group, redis_url=url)
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


async def run(url: str, n: int, size: int, repeat: int) -> list:
    client = aioredis.Redis.from_url(url)
    value = b"x" * size
    values = [value] * n
    await preload(client, "bench-in", n, value)
    reads, writes = [], []
    for i in range(repeat):
        reads.append((await raw_read(client, "bench-in", n, f"raw-{i}"),
                      await sabot_read(url, "bench-in", n, f"sabot-{i}")))
        writes.append((await raw_write(client, f"bench-out-raw-{i}", values),
                       await sabot_write(url, f"bench-out-sabot-{i}", values)))
        assert await client.xlen(f"bench-out-raw-{i}") == await client.xlen(f"bench-out-sabot-{i}") == n
        await client.delete(f"bench-out-raw-{i}", f"bench-out-sabot-{i}")
    await client.aclose()
    return [("read  XREADGROUP+XACK", n, min(r for r, _ in reads), min(s for _, s in reads)),
            ("write XADD pipelined", n, min(r for r, _ in writes), min(s for _, s in writes))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="value size in bytes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is shown)")
    args = parser.parse_args()
    with RedisServer() as server:
        rows = asyncio.run(run(server.url, args.entries, args.size, args.repeat))
    mode = "cython" if sabot.fastpath_enabled() else "pure-python"
    print(f"Redis Streams, {args.entries:,} entries of {args.size} B, "
          f"best of {args.repeat}, sabot fast path: {mode}")
    print(f"{'operation':<24}{'raw redis-py/s':>16}{'sabot/s':>14}{'sabot/raw':>11}")
    for name, n, t_raw, t_sabot in rows:
        print(f"{name:<24}{n / t_raw:>16,.0f}{n / t_sabot:>14,.0f}{t_raw / t_sabot:>10.2f}x")


if __name__ == "__main__":
    main()
