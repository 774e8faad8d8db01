"""Helpers shared by the transport tests (Kafka, Redis): run apps, wait, collect."""
import asyncio
import contextlib
import time
import uuid

__all__ = ["unique", "running", "wait_until", "collector"]


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


async def wait_until(predicate, timeout=20.0, what="condition"):
    """Poll ``predicate()`` until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


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
