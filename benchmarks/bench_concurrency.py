"""Concurrency per value: an agent awaiting I/O per value, concurrency=200, one run.

Every value costs a 10 ms await (I/O), so 200 instances can at best finish
200 / 0.010 = 20,000 values a second. Measured side by side:

(a) baseline: 200 consumer tasks over one asyncio.Queue(maxsize=1000), each
    awaiting 10 ms per value (what Faust's concurrency does);
(b) a Sabot agent with concurrency=200 on a default app.channel(), fed by
    send_batch of 1,000 values;
(c) the same agent fed by one `send` per value.

Prints values/s, the ratio to the 20,000/s ideal and to (a). Defaults only.

    python benchmarks/bench_concurrency.py [--n 40000]
"""
import argparse
import asyncio
import time

CONCURRENCY = 200
AWAIT = 0.010
IDEAL = CONCURRENCY / AWAIT


async def bench_queue(n):
    queue = asyncio.Queue(maxsize=1000)
    done = 0
    finished = asyncio.Event()

    async def consume():
        nonlocal done
        while True:
            await queue.get()
            await asyncio.sleep(AWAIT)
            done += 1
            if done == n:
                finished.set()

    workers = [asyncio.ensure_future(consume()) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for i in range(n):
        await queue.put(i)
    await finished.wait()
    rate = n / (time.perf_counter() - start)
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return rate


async def bench_agent(n, mode):
    import sabot
    app = sabot.App(f"bench-concurrency-{mode}")
    channel = app.channel()
    done = 0
    finished = asyncio.Event()

    @app.agent(channel, concurrency=CONCURRENCY)
    async def io_bound(stream):
        nonlocal done
        async for _ in stream:
            await asyncio.sleep(AWAIT)
            done += 1
            if done == n:
                finished.set()

    await app.start()
    start = time.perf_counter()
    if mode == "batch":
        values = list(range(n))
        for i in range(0, n, 1000):
            await channel.send_batch(values[i:i + 1000])
    else:
        for i in range(n):
            await channel.send(value=i)
    await finished.wait()
    rate = n / (time.perf_counter() - start)
    await app.stop()
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000)
    args = parser.parse_args()
    import sabot
    queue = asyncio.run(bench_queue(args.n))
    batch = asyncio.run(bench_agent(args.n, "batch"))
    send = asyncio.run(bench_agent(args.n, "send"))
    print(f"concurrency={CONCURRENCY}, {AWAIT * 1000:.0f} ms await per value, {args.n:,} values "
          f"[{'cython' if sabot.fastpath_enabled() else 'pure'}]; ideal {IDEAL:,.0f}/s")
    print(f"{'case':<44} {'values/s':>10} {'vs ideal':>9} {'vs (a)':>8}")
    for name, rate in (("(a) 200 tasks over asyncio.Queue", queue),
                       ("(b) agent concurrency=200, send_batch x1000", batch),
                       ("(c) agent concurrency=200, send one by one", send)):
        print(f"{name:<44} {rate:>10,.0f} {rate / IDEAL:>8.2f}x {rate / queue:>7.2f}x")


if __name__ == "__main__":
    main()
