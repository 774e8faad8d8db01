"""Agent functions for the process-agent tests (importable by path)."""
from __future__ import annotations

import os
import signal


async def double(stream):
    """Yields each value times two."""
    async for value in stream:
        yield value * 2


async def batch_sums(stream):
    """Yields one dict per batch: the sum of column x and the worker pid."""
    async for batch in stream.batches():
        yield {"sum": sum(batch.column("x").to_pylist()), "pid": os.getpid()}


async def fails_on_negative(stream):
    """Raises on a negative value, doubles the rest."""
    async for value in stream:
        if value < 0:
            raise ValueError(f"negative value {value}")
        yield value * 2


async def kill_once(stream):
    """Echoes values; a dict with ``kill_marker`` SIGKILLs the process once."""
    async for value in stream:
        marker = value.get("kill_marker") if isinstance(value, dict) else None
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        yield value


async def pid_agent(stream):
    """Yields the pid of the process handling each value."""
    async for _ in stream:
        yield os.getpid()
