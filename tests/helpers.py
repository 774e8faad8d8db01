"""What the test files share: waiting for a state, reading iterators, running apps.

A test waits with ``until``: it polls a condition that proves the state the
test needs was reached, and fails naming what it waited for. A test does not
sleep and then assert that something did *not* happen: it waits until the
system reached the point where that thing would have happened (the reader took
the batch, the agent reached its gate, a value sent after it came through),
then asserts.
"""
import asyncio
import contextlib
import inspect
import time
import urllib.error
import urllib.request
import uuid

import pyarrow as pa

from sabot._fastpath import Batch

__all__ = ["until", "until_sync", "idle", "watch_waits", "drain", "unique", "running",
           "collector", "http_get", "BatchesSeen", "Acks", "odd_values", "SCHEMA"]

#: The schema of the channel tests' rows: a symbol and a price.
SCHEMA = pa.schema([("sym", pa.string()), ("px", pa.float64())])


def _describe(what):
    return what() if callable(what) else what


async def until(predicate, timeout=20.0, what="the condition", interval=0.005):
    """Poll ``predicate()`` until it returns something true, and return that.

    Fails the test after ``timeout`` seconds, naming ``what`` (a string, or a
    function called then, so the message can say where things stood). An
    exception raised by the predicate (an ``assert`` that a process still
    runs) ends the wait at once. The predicate may be a coroutine function
    (one that asks a server).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {_describe(what)}")
        await asyncio.sleep(interval)


def until_sync(predicate, timeout=20.0, what="the condition", interval=0.01):
    """``until`` for a test without an event loop (one that drives processes)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {_describe(what)}")
        time.sleep(interval)


async def idle(max_rounds=10_000):
    """Return once the event loop has nothing ready to run.

    Every task that what the test just did could wake (a batch released, a
    future's result set) has then taken all the steps it could and waits for
    something that has not happened: a check made after this is about what
    those steps did, not a guess about time. It reads the loop's queue of
    ready callbacks (``_ready``, CPython's asyncio has no public view of it);
    work that waits for a timer or for I/O is not waited for.
    """
    loop = asyncio.get_running_loop()
    for _ in range(max_rounds):
        await asyncio.sleep(0)
        if not loop._ready:
            return
    raise AssertionError("the event loop never went idle (a task keeps running)")


def watch_waits(it):
    """Count the times the reader of iterator ``it`` suspended for want of a batch.

    The subscriber calls ``on_wait`` in the step in which its reader finds
    nothing queued and suspends, so a count seen from another task is a
    reader that waits now (or has since been woken). Returns a list whose
    length is the count.
    """
    waits = []
    it.subscriber.on_wait = lambda: waits.append(1)
    return waits


async def drain(source, n, timeout=10.0):
    """The next ``n`` items of an async iterator (or of a stream's own iterator)."""
    it = source.__aiter__()

    async def take():
        return [await it.__anext__() for _ in range(n)]
    return await asyncio.wait_for(take(), timeout)


def unique(prefix):
    """``prefix-<random>``: names that tests sharing one server never reuse."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running(*apps):
    """Start ``apps`` in order; stop them in reverse order on the way out."""
    for app in apps:
        await app.start()
    try:
        yield apps
    finally:
        for app in reversed(apps):
            await app.stop()


def collector(app, channel, *, kind="values", name=None):
    """An agent on ``channel`` that appends what it reads to the returned list.

    ``kind`` is ``values`` (``async for value in stream``), ``events`` or
    ``raw_batches`` (``Batch`` objects with their positions).
    """
    out = []

    async def collect(stream):
        source = stream if kind == "values" else getattr(stream, kind)()
        async for item in source:
            out.append(item)

    app.agent(channel, name=name or unique("collect"))(collect)
    return out


def http_get(port, path):
    """``(status, body)`` of GET ``path`` on 127.0.0.1, or ``None`` when nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


class BatchesSeen(list):
    """The batches an agent held, in the order it first held them, each once.

    The agent calls ``note(stream)`` after taking a value (or a ``take``
    chunk). A transport acknowledges what it read (a Kafka commit, a Redis
    XACK) only once the batches carrying it are done, so while ``any_done()``
    is false nothing of them is acknowledged, nor on its way to be.
    """

    def note(self, stream):
        for batch in stream.sources():
            if not any(b is batch for b in self):
                self.append(batch)

    def any_done(self):
        return any(b.done for b in self)


class Acks:
    """Counts on_done calls per batch label."""

    def __init__(self):
        self.calls = []

    def batch(self, payload, label):
        return Batch(payload, on_done=lambda b: self.calls.append(label))

    def count(self, label):
        return self.calls.count(label)


def odd_values(loop):
    """Values an iterator must hand over as the very objects sent: exceptions,
    a future, None, empty containers, falsy values."""
    return [(1, 2), (), None, (None,), ValueError("as a value"),
            StopIteration(7), StopAsyncIteration(), GeneratorExit(),
            loop.create_future(), [1, [2]], {"k": (3,)}, b"", 0, False]
