"""Page-view counter: Faust's page_views example on Sabot, a table per page.

Run it: ``python examples/page_views.py worker -l info`` (memory://), or on
Kafka: ``SABOT_BROKER=kafka://127.0.0.1:9092 python examples/page_views.py
worker -l info``.

Views arrive keyed by the user who viewed (as a click stream is); the agent
re-keys them by page with ``group_by`` (a table is partitioned like the
stream that updates it, so it must be updated with the message key) and
counts them in ``page_views``, a table with a changelog (on the broker) and a
store (LMDB on Kafka and Redis, in memory on memory://). On Kafka or Redis,
a worker killed at any moment and restarted counts each view exactly once.
The feeder checks the table against the views it sent, prints the top pages
and stops.
"""
import asyncio
import collections
import os
import random
import time

import sabot

app = sabot.App("page_views", broker=os.environ.get("SABOT_BROKER", "memory://"))
N_VIEWS = int(os.environ.get("SABOT_DEMO_VIEWS", "20000"))
PAGES = [f"/page/{i}" for i in range(50)]


class PageView(sabot.Record):
    id: str
    user: str


page_view_topic = app.topic("page_views", value_type=PageView)
page_views = app.Table("page_views", default=int, help="Views per page.")


@app.agent(page_view_topic)
async def count_page_views(views):
    """Count each view under its page: re-keyed by page id first."""
    async for view in views.group_by(PageView.id):
        page_views[view.id] += 1


@app.task
async def feed():
    """Send the views (keyed by user), wait until all are counted, report."""
    rng = random.Random(7)
    sent = collections.Counter()
    start = time.perf_counter()
    for i in range(N_VIEWS):
        view = PageView(id=rng.choice(PAGES), user=f"user-{rng.randrange(1000)}")
        sent[view.id] += 1
        await page_view_topic.send(key=view.user, value=view)
    while sum(page_views[page] for page in PAGES) < N_VIEWS:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    counted = {page: page_views[page] for page in PAGES}
    assert counted == dict(sent), "the table differs from the views sent"
    print(f"{N_VIEWS:,} page views processed in {elapsed:.2f}s "
          f"({N_VIEWS / elapsed:,.0f} views/s); top pages:")
    for page, n in sorted(counted.items(), key=lambda item: -item[1])[:5]:
        print(f"  {page:<12} {n:>6,}")
    app.request_stop()


if __name__ == "__main__":
    app.main()
