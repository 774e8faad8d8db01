"""The live status page (``GET /``) in a real headless Chromium.

The app runs in this process with its web server; Chromium loads the page
once and the test reads what it shows through the DevTools protocol: the
agents by name, the pipeline drawing, and numbers that change while values
are processed, with no reload (the page polls ``status.json`` by itself).
"""
import asyncio

import sabot
from tests.helpers import until
from tests.web.browser import browser_page
from tests.web.test_views import serving

CELL = "document.querySelector('tr[data-agent=\"{agent}\"] .{field}')"


def text_of(agent, field):
    return f"({CELL.format(agent=agent, field=field)} || {{textContent: null}}).textContent"


def number(text):
    return float(text.replace(",", "")) if text else None


async def test_the_status_page_shows_agents_and_live_numbers(tmp_path):
    app = sabot.App("browser-status")
    words = app.channel(name="words")
    lengths = app.channel(name="lengths")
    counts = app.Table("word-counts", default=int)

    @app.agent(words, sink=[lengths], name="measure")
    async def measure(stream):
        async for word in stream:
            if word == "bad":
                raise ValueError("a bad word")
            counts[word] += 1
            yield len(word)

    @app.agent(lengths, name="total")
    async def total(stream):
        async for _ in stream:
            await asyncio.sleep(0)

    async with serving(app) as (_session, base), browser_page(tmp_path) as page:
        await page.navigate(base + "/")

        async def shown(expression, want):
            got = []

            async def check():
                got[:] = [await page.evaluate(expression)]
                return want(got[0])
            await until(check, 30, lambda: f"{expression} showed {got}", interval=0.1)
            return got[0]

        rows = await shown("Array.from(document.querySelectorAll('#agents tr[data-agent]'))"
                           ".map(r => r.dataset.agent)", lambda v: v == ["measure", "total"])
        assert rows == ["measure", "total"]
        assert await page.evaluate("document.getElementById('app').textContent") == "browser-status"
        drawing = await shown("(document.querySelector('#pipeline svg') || {}).textContent",
                              lambda v: bool(v))
        for name in ("words", "measure", "lengths", "total"):
            assert name in drawing
        assert await page.evaluate("document.querySelector('#tables tbody').textContent"
                                   ".includes('word-counts')")
        assert number(await page.evaluate(text_of("measure", "events-in"))) == 0

        # Values flow: the same page, not reloaded, shows them within a few polls.
        marker = await page.evaluate("window.sabotMarker = 'same page'")
        for i in range(200):
            await words.send(value=f"word{i % 7}")
        await words.send(value="bad")
        await shown(text_of("measure", "events-in"), lambda v: number(v) == 201)
        await shown(text_of("total", "events-in"), lambda v: number(v) == 200)
        await shown(text_of("measure", "errors"), lambda v: number(v) == 1)
        await shown("document.querySelector('#dead tbody').textContent",
                    lambda v: v is not None and "words" in v)
        assert await page.evaluate("window.sabotMarker") == marker == "same page"

        # A rate is measured while values keep coming, and falls back once they stop.
        async def feed():
            while True:
                for i in range(50):
                    await words.send(value="w")
                await asyncio.sleep(0.05)
        feeding = asyncio.ensure_future(feed())
        try:
            await shown(text_of("measure", "rate-in"), lambda v: (number(v) or 0) > 0)
        finally:
            feeding.cancel()
        await shown(text_of("measure", "rate-in"), lambda v: number(v) == 0)
