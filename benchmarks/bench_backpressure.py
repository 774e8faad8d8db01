"""Backpressure in batches and bytes: peak memory of a slow agent fed 1 GB, one run.

A producer sends about 1 GB of 100,000-row RecordBatches (int64, float64 and
string columns, each batch new) as fast as it can to a consumer that takes
2 ms per batch. Each case runs in a fresh process; the figure is the peak
resident memory (ru_maxrss) above what the process held before producing.

(a) baseline: an unbounded asyncio.Queue (what a pipeline without
    backpressure does);
(b) baseline: asyncio.Queue(maxsize=4), bounded in items by hand;
(c) a Sabot agent on a default app.channel(), fed by send_batch;
(d) the same with executor="process", concurrency=2 (the batches cross to
    two child processes through shared memory; the children's memory is
    not counted).

Prints MB and the ratio to (a), and the rate in MB/s. Defaults only.

    python benchmarks/bench_backpressure.py [--gb 1.0]
"""
import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

ROWS = 100_000
DELAY = 0.002


def make_batch(k):
    import pyarrow as pa
    import pyarrow.compute as pc
    base = pa.array(range(ROWS), pa.int64())
    ints = pc.add(base, k * ROWS)
    return pa.RecordBatch.from_arrays(
        [ints, pc.multiply(pc.cast(ints, pa.float64()), 0.5), pc.cast(ints, pa.string())],
        names=["i", "x", "s"])


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def slow_agent(stream):
    async for batch in stream.batches():
        await asyncio.sleep(DELAY)
        yield batch.num_rows


async def run_case(case, total_bytes):
    first = make_batch(0)
    n = max(1, int(total_bytes // first.nbytes))
    consumed = 0
    done = asyncio.Event()
    start_rss = rss_mb()
    if case in ("queue", "bounded-queue"):
        queue = asyncio.Queue(maxsize=0 if case == "queue" else 4)

        async def consume():
            nonlocal consumed
            while consumed < n:
                batch = await queue.get()
                await asyncio.sleep(DELAY)
                consumed += batch.num_rows and 1
            done.set()
        task = asyncio.ensure_future(consume())
        began = time.perf_counter()
        for k in range(n):
            await queue.put(make_batch(k))
        await done.wait()
        await task
    else:
        import sabot
        app = sabot.App(f"bench-backpressure-{case}")
        channel = app.channel()

        def count(_):
            nonlocal consumed
            consumed += 1
            if consumed == n:
                done.set()
        options = {"executor": "process", "concurrency": 2} if case == "process" else {}
        app.agent(channel, sink=[count], **options)(slow_agent)
        await app.start()
        began = time.perf_counter()
        for k in range(n):
            await channel.send_batch(make_batch(k))
        await done.wait()
        elapsed = time.perf_counter() - began
        await app.stop()
        return {"peak_mb": rss_mb() - start_rss, "mb_per_s": n * first.nbytes / 2**20 / elapsed,
                "batches": n, "batch_mb": first.nbytes / 2**20}
    elapsed = time.perf_counter() - began
    return {"peak_mb": rss_mb() - start_rss, "mb_per_s": n * first.nbytes / 2**20 / elapsed,
            "batches": n, "batch_mb": first.nbytes / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = args.gb * 2**30
    if args.case:
        print(json.dumps(asyncio.run(run_case(args.case, total))))
        return
    cases = [("(a) asyncio.Queue(), unbounded", "queue"),
             ("(b) asyncio.Queue(maxsize=4)", "bounded-queue"),
             ("(c) agent on a default app.channel()", "agent"),
             ("(d) same, executor=process x2", "process")]
    figures = {}
    for _, case in cases:
        out = subprocess.check_output([sys.executable, __file__, "--gb", str(args.gb),
                                       "--case", case])
        figures[case] = json.loads(out.decode().strip().splitlines()[-1])
    first = figures["queue"]
    print(f"slow consumer ({DELAY * 1000:.0f} ms per batch) fed {first['batches']} batches of "
          f"{ROWS:,} rows ({first['batch_mb']:.1f} MB each, {args.gb:g} GB in all)")
    print(f"{'case':<40} {'peak RSS':>10} {'vs (a)':>8} {'MB/s':>8}")
    for name, case in cases:
        f = figures[case]
        print(f"{name:<40} {f['peak_mb']:>8.0f}MB {f['peak_mb'] / first['peak_mb']:>7.3f}x "
              f"{f['mb_per_s']:>8.0f}")


if __name__ == "__main__":
    main()
