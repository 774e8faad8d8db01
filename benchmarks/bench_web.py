"""The web server's cost to the agents, and what it answers per second.

(a) an agent summing N values sent with send_batch, no web server;
(b) the same with the worker's web server up, four status pages open (each
    polling /status.json every second, as the page does) and Prometheus
    scraping /metrics every second;
(c) requests per second of /status.json, /metrics and a JSON @app.page view,
    from 8 concurrent clients in this process (client and server share the
    one loop and core, so the figure is a floor).

(a) and (b) alternate, three runs each; the medians and their ratio are
printed. Defaults only: the server and page are what a user gets.

    python benchmarks/bench_web.py [--n 10000000] [--requests 2000]
"""
import argparse
import asyncio
import statistics
import sys
import time
import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp  # noqa: E402

import sabot  # noqa: E402
from sabot.monitor import WorkerMonitor  # noqa: E402
from sabot.web import WebServer, WorkerMetrics  # noqa: E402

BATCH = 1000


def make_app(name):
    app = sabot.App(name)
    numbers = app.channel(name="numbers")
    total = {"sum": 0, "n": 0}

    @app.agent(numbers, name="summer")
    async def summer(stream):
        async for value in stream:
            total["sum"] += value
            total["n"] += 1

    @app.page("/total")
    async def show_total(self, request):
        return self.json(total)

    return app, numbers, total


async def agent_rate(n, with_web):
    app, numbers, total = make_app(f"bench-web-{with_web}")
    await app.start()
    server = pollers = None
    if with_web:
        server = WebServer(WorkerMetrics(WorkerMonitor(app)), 0)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        session = aiohttp.ClientSession()

        async def poll(path):
            while True:
                async with session.get(base + path) as resp:
                    await resp.read()
                await asyncio.sleep(1.0)
        pollers = [asyncio.ensure_future(poll("/status.json")) for _ in range(4)]
        pollers.append(asyncio.ensure_future(poll("/metrics")))
    try:
        values = list(range(BATCH))
        start = time.perf_counter()
        for _ in range(n // BATCH):
            await numbers.send_batch(values)
        while total["n"] < n:
            await asyncio.sleep(0.001)
        return n / (time.perf_counter() - start)
    finally:
        if pollers:
            for p in pollers:
                p.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            await session.close()
        if server is not None:
            await server.stop()
        await app.stop()


async def request_rate(requests):
    app, numbers, _ = make_app("bench-web-requests")
    await app.start()
    server = WebServer(WorkerMetrics(WorkerMonitor(app)), 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    out = {}
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/total", "/status.json", "/metrics"):
                left = requests

                async def client():
                    nonlocal left
                    while left > 0:
                        left -= 1
                        async with session.get(base + path) as resp:
                            assert resp.status == 200
                            await resp.read()
                start = time.perf_counter()
                await asyncio.gather(*[client() for _ in range(8)])
                out[path] = requests / (time.perf_counter() - start)
    finally:
        await server.stop()
        await app.stop()
    return out


async def main(n, requests):
    without, with_web = [], []
    for _ in range(3):
        without.append(await agent_rate(n, False))
        with_web.append(await agent_rate(n, True))
    a, b = statistics.median(without), statistics.median(with_web)
    print(f"agent, no web server:              {a:>12,.0f} values/s  (runs: "
          + ", ".join(f"{r:,.0f}" for r in without) + ")")
    print(f"agent, 4 status pages + /metrics:  {b:>12,.0f} values/s  (runs: "
          + ", ".join(f"{r:,.0f}" for r in with_web) + ")")
    print(f"ratio with/without:                {b / a:>12.3f}")
    for path, rate in (await request_rate(requests)).items():
        print(f"GET {path:<14} 8 clients:       {rate:>12,.0f} requests/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.requests))
