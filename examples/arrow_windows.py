"""Arrow windows: page views per page and minute, a whole batch at a time.

    python examples/arrow_windows.py

Makes SABOT_DEMO_VIEWS page views (default 200,000) as Arrow batches of
10,000 rows covering a few minutes of event time, a little out of order,
with a few views from an hour ago among them. An agent counts views per
page and minute with ``stream.window(tumbling(60), ...)`` and prints the
busiest page of each minute as that minute closes; the old views are late:
counted, and sent with the reason to the channel's dead-letter channel.
"""
import asyncio
import os
import random
import time

import pyarrow as pa
import pyarrow.compute as pc

import sabot
from sabot.windows import count, mean, tumbling

VIEWS = int(os.environ.get("SABOT_DEMO_VIEWS", "200000"))
PAGES = [f"/page/{i}" for i in range(500)]
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC

app = sabot.App("arrow-windows")
views = app.channel(name="page-views")
finished = asyncio.Event()


@app.agent(views)
async def busiest_page(stream):
    minutes = stream.window(tumbling(60), key="page", time="ts", grace=5).agg(
        views=count(), load_ms=mean("load_ms"))
    async for closed in minutes.final():
        for minute in sorted(set(closed.column("window_start").to_pylist())):
            rows = closed.filter(pc.equal(closed.column("window_start"), minute))
            top = rows.take([pc.index(rows.column("views"),
                                      pc.max(rows.column("views"))).as_py()]).to_pylist()[0]
            print(f"minute {minute - START:5.0f}s: {int(pc.sum(rows.column('views')).as_py())} "
                  f"views, busiest {top['page']} ({top['views']} views, "
                  f"{top['load_ms']:.0f} ms on average)")
    print(f"late views sent to {views.dead_letter_channel().name}: {minutes.late_count}")
    finished.set()


def make_batches(n, size=10_000, seed=1):
    rng = random.Random(seed)
    for start in range(0, n, size):
        rows = range(start, min(n, start + size))
        ts = [START + i * 0.002 - rng.random() * 3 for i in rows]
        for i in range(0, len(ts), 4999):  # now and then, a view an hour old
            ts[i] -= 3600
        yield pa.RecordBatch.from_pydict({
            "page": [rng.choice(PAGES) for _ in rows],
            "ts": ts,
            "load_ms": [rng.expovariate(1 / 80) for _ in rows],
        })


async def main():
    batches = list(make_batches(VIEWS))
    await app.start()
    try:
        start = time.perf_counter()
        for batch in batches:
            await views.send_batch(batch)
        await views.close()  # the stream ends: the last minutes are emitted
        await asyncio.wait_for(finished.wait(), 60)
        print(f"{VIEWS:,} views processed in {time.perf_counter() - start:.2f}s")
    finally:
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())
