"""Word count on memory channels: lines -> words -> counts, then the top words.

Run it: ``python examples/wordcount.py worker -l info`` (this is ``make demo``).
It reads Sabot's own docs (and any files given in SABOT_WORDCOUNT_FILES),
streams every line through two agents and prints the ten most common words.
"""
import collections
import os
import pathlib
import re
import time

import sabot

app = sabot.App("wordcount")               # broker defaults to memory://

lines = app.channel(name="lines")
words = app.channel(name="words")
counts: collections.Counter = collections.Counter()
WORD = re.compile(r"[a-z][a-z']+")


@app.agent(lines, sink=[words])
async def split(stream):
    """One line in, its words out (to the `words` channel)."""
    async for line in stream:
        for word in WORD.findall(line.lower()):
            yield word


@app.agent(words)
async def count(stream):
    """Count words a batch at a time: a batch of a memory channel is a list."""
    async for batch in stream.batches():
        counts.update(batch)


def corpus():
    root = pathlib.Path(__file__).resolve().parent.parent
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    extra = os.environ.get("SABOT_WORDCOUNT_FILES")
    if extra:
        paths += [pathlib.Path(p) for p in extra.split(os.pathsep)]
    text = []
    for path in paths:
        if path.exists():
            text += path.read_text(encoding="utf-8").splitlines()
    return text


@app.task
async def feed():
    """Send the corpus (20 times over), close the channels in order, report."""
    text = corpus()
    repeat = int(os.environ.get("SABOT_WORDCOUNT_REPEAT", "20"))
    start = time.perf_counter()
    sent = 0
    for _ in range(repeat):
        for line in text:
            await lines.send(value=line)
            sent += 1
    await lines.close()          # end of input: `split` drains and finishes
    await split.wait_done()
    await words.close()          # then `count` drains and finishes
    await count.wait_done()
    elapsed = time.perf_counter() - start
    total = sum(counts.values())
    print(f"processed {sent:,} lines, {total:,} words in {elapsed:.2f}s "
          f"({total / elapsed:,.0f} words/s)")
    print("top words:")
    for word, n in counts.most_common(10):
        print(f"  {word:<12} {n:>8,}")
    app.request_stop()


if __name__ == "__main__":
    app.main()
