"""In-memory throughput: Sabot agents versus a bare asyncio.Queue, one run.

(a) producer + consumer tasks over asyncio.Queue(maxsize=1000)
(b) a Sabot agent doing `async for value in stream`, fed by send_batch of 1,000-value lists
(c) the same agent fed by `await channel.send(value=v)` one value at a time
each for 1,000,000 integers; (b) and (c) on the Cython path and on the
pure-Python twin (a child process with SABOT_PURE_PYTHON=1), and (b) with 1, 4
and 16 subscribing agents. Prints a table and the ratios against (a).

    python benchmarks/bench_memory.py [--n 1000000] [--json]
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

N_DEFAULT = 1_000_000
BATCH = 1_000
REPEATS = 3


async def bench_queue(n):
    queue = asyncio.Queue(maxsize=1000)

    async def produce():
        for i in range(n):
            await queue.put(i)
        await queue.put(None)

    async def consume():
        count = 0
        while True:
            item = await queue.get()
            if item is None:
                return count
            count += 1

    start = time.perf_counter()
    _, count = await asyncio.gather(produce(), consume())
    assert count == n
    return n / (time.perf_counter() - start)


async def bench_agent(n, mode, subscribers=1):
    import sabot
    app = sabot.App(f"bench-{mode}-{subscribers}", stream_buffer_maxsize=4096)
    channel = app.channel()
    counts = [0] * subscribers
    finished = asyncio.Event()

    for k in range(subscribers):
        def make(k):
            @app.agent(channel, name=f"count{k}")
            async def count(stream):
                c = 0
                async for value in stream:
                    c += 1
                    if c == n:
                        counts[k] = c
                        if all(x == n for x in counts):
                            finished.set()
            return count
        make(k)

    await app.start()
    values = list(range(n))
    start = time.perf_counter()
    if mode == "batch":
        for i in range(0, n, BATCH):
            await channel.send_batch(values[i:i + BATCH])
    else:
        send = channel.send
        for v in values:
            await send(value=v)
    await finished.wait()
    rate = n / (time.perf_counter() - start)
    await app.stop()
    return rate


def best(fn, *args):
    return max(asyncio.run(fn(*args)) for _ in range(REPEATS))


def sabot_figures(n):
    import sabot
    return {
        "fastpath": sabot.fastpath_enabled(),
        "batch": best(bench_agent, n, "batch"),
        "send": best(bench_agent, n, "send"),
        "batch_subs": {str(s): best(bench_agent, n, "batch", s) for s in (1, 4, 16)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N_DEFAULT)
    parser.add_argument("--json", action="store_true", help="print figures as JSON (internal)")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(sabot_figures(args.n)))
        return
    env = dict(os.environ, SABOT_PURE_PYTHON="")
    fast = json.loads(subprocess.check_output(
        [sys.executable, __file__, "--json", "--n", str(args.n)], env=env))
    env["SABOT_PURE_PYTHON"] = "1"
    pure = json.loads(subprocess.check_output(
        [sys.executable, __file__, "--json", "--n", str(args.n)], env=env))
    queue = best(bench_queue, args.n)
    if not fast["fastpath"]:
        print("WARNING: the Cython extension is not built; 'cython' rows are the twin")
    rows = [
        ("(a) asyncio.Queue(maxsize=1000)", queue, None),
        ("(b) agent, send_batch x1000   [cython]", fast["batch"], 5.0),
        ("(b) agent, send_batch x1000   [pure]", pure["batch"], None),
        ("(c) agent, send one by one    [cython]", fast["send"], 2.0),
        ("(c) agent, send one by one    [pure]", pure["send"], None),
    ]
    # Fan-out rows count values sent; each one is delivered to every agent.
    for kind, figures in (("cython", fast), ("pure", pure)):
        for subs in ("1", "4", "16"):
            rate = figures["batch_subs"][subs]
            rows.append((f"(b) {subs:>2} agents (x{subs} deliveries) [{kind}]", rate, None))
    print(f"memory channel throughput, {args.n:,} integers, best of {REPEATS}")
    print(f"{'case':<42} {'values/s':>14} {'vs (a)':>8}  target")
    for name, rate, target in rows:
        ratio = rate / queue
        mark = "" if target is None else (f">= {target:.0f}x {'ok' if ratio >= target else 'MISSED'}")
        print(f"{name:<42} {rate:>14,.0f} {ratio:>7.2f}x  {mark}")
    for kind, figures in (("cython", fast), ("pure", pure)):
        print(f"fan-out deliveries/s [{kind}]: " + ", ".join(
            f"{s} agents {figures['batch_subs'][s] * int(s):,.0f}" for s in ("1", "4", "16")))
    print(f"cython vs pure: (b) {fast['batch'] / pure['batch']:.2f}x, (c) {fast['send'] / pure['send']:.2f}x")


if __name__ == "__main__":
    main()
