"""``Stream``: what an agent iterates, and the stream operators.

A stream reads one subscription of a channel. Iterating it values-first
(``async for value in stream``) uses the fast-path ``ValueIterator``; the
iterator is created once per stream, so an agent that crashed and was
restarted over the same stream resumes after the failing value.

Operators (``filter``, ``map``, ``take``, ``enumerate``, ``echo``,
``through``) return derived streams that read through their parent; the
acknowledgement still follows the root subscription: a batch is released when
the root iterator moves past it (``take`` holds the batches of a chunk until
the chunk has been processed).
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, AsyncIterator, Callable, List, Optional

from .exceptions import ConfigurationError

__all__ = ["Stream"]


class _Empty:
    __slots__ = ()


_EMPTY = _Empty()


class Stream:
    """One subscription to a channel, iterated by value, event or batch."""

    def __init__(self, channel: Any, *, subscriber: Any = None,
                 source: Optional[Callable[[], AsyncIterator[Any]]] = None,
                 parent: Optional["Stream"] = None) -> None:
        self.channel = channel
        self._parent = parent
        if parent is not None:
            self._sub = parent._sub
        else:
            self._sub = subscriber if subscriber is not None else channel.subscribe()
        self._source = source
        self._values_it: Any = None
        self._events_it: Any = None
        self._batches_it: Any = None
        self._active: Any = None
        self._tasks: List["asyncio.Future[Any]"] = []

    def __repr__(self) -> str:
        kind = "derived " if self._parent is not None else ""
        return f"<{kind}Stream of {self.channel!r}>"

    # -- iteration -------------------------------------------------------------
    def __aiter__(self) -> Any:
        if self._values_it is None:
            if self._source is not None:
                self._values_it = self._source()
            else:
                self._values_it = self._sub.values()
        if self._parent is None:
            self._active = self._values_it
        return self._values_it

    def events(self) -> Any:
        """Iterate ``Event(key, value, headers, timestamp, position)``."""
        self._require_root("events")
        if self._events_it is None:
            self._events_it = self._sub.events()
        self._active = self._events_it
        return self._events_it

    def batches(self) -> Any:
        """Iterate whole batches (``Batch``: ``.payload`` is a list or a RecordBatch)."""
        self._require_root("batches")
        if self._batches_it is None:
            self._batches_it = _PayloadIterator(self._sub.batches())
        self._active = self._batches_it.inner
        return self._batches_it

    def raw_batches(self) -> Any:
        """Iterate ``Batch`` objects with their envelope (keys, positions, ...)."""
        self._require_root("raw_batches")
        if self._batches_it is None:
            self._batches_it = _PayloadIterator(self._sub.batches())
        self._active = self._batches_it.inner
        return self._batches_it.inner

    def _require_root(self, what: str) -> None:
        if self._parent is not None:
            raise TypeError(f"stream.{what}() reads the channel directly; "
                            f"call it before filter/map/take")

    # -- position of the last item, for acks and crash reports -------------
    def _root_stream(self) -> "Stream":
        stream = self
        while stream._parent is not None:
            stream = stream._parent
        return stream

    @property
    def current_batch(self) -> Any:
        """The batch the last value came from (still held, not yet acknowledged)."""
        active = self._root_stream()._active
        return active.current_batch if active is not None else None

    def current_value(self) -> Any:
        """The last value read from the channel (for crash reports)."""
        active = self._root_stream()._active
        return active.current_value() if active is not None else None

    def current_position(self) -> Any:
        """Transport position (offset or entry id) of the last value read."""
        active = self._root_stream()._active
        return active.current_position() if active is not None else None

    @property
    def subscriber(self) -> Any:
        return self._sub

    # -- operators -------------------------------------------------------------
    def _derive(self, gen: Callable[[], AsyncIterator[Any]]) -> "Stream":
        return Stream(self.channel, source=gen, parent=self)

    def filter(self, fun: Callable[[Any], Any]) -> "Stream":
        """Values for which ``fun(value)`` (sync or async) is true."""
        parent = self

        async def gen() -> AsyncIterator[Any]:
            async for value in parent:
                keep = fun(value)
                if inspect.isawaitable(keep):
                    keep = await keep
                if keep:
                    yield value
        return self._derive(gen)

    def map(self, fun: Callable[[Any], Any]) -> "Stream":
        """``fun(value)`` (sync or async) for every value."""
        parent = self

        async def gen() -> AsyncIterator[Any]:
            async for value in parent:
                out = fun(value)
                if inspect.isawaitable(out):
                    out = await out
                yield out
        return self._derive(gen)

    def enumerate(self, start: int = 0) -> "Stream":
        """``(index, value)`` pairs, counting from ``start``."""
        parent = self

        async def gen() -> AsyncIterator[Any]:
            i = start
            async for value in parent:
                yield i, value
                i += 1
        return self._derive(gen)

    def echo(self, *channels: Any) -> "Stream":
        """Send every value to each of ``channels`` too, then pass it on."""
        parent = self

        async def gen() -> AsyncIterator[Any]:
            async for value in parent:
                for channel in channels:
                    await channel.send(value=value)
                yield value
        return self._derive(gen)

    def take(self, n: int, within: Optional[float] = None) -> "Stream":
        """Lists of up to ``n`` values.

        A list is yielded as soon as it holds ``n`` values, or ``within``
        seconds after its first value arrived if fewer came; an empty list is
        never yielded, and a partial list is yielded when the stream ends. The
        batches behind a list stay unacknowledged until the next list is asked
        for.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(f"take(n): n must be a positive int, got {n!r}")
        if within is not None and not (isinstance(within, (int, float)) and within > 0):
            raise ConfigurationError(f"take(within=): must be a positive number of seconds, got {within!r}")
        parent = self
        root = self._root_stream()

        async def gen() -> AsyncIterator[List[Any]]:
            it = parent.__aiter__()
            poll = getattr(it, "poll", None)
            loop = asyncio.get_running_loop()
            held: List[Any] = []
            buf: List[Any] = []
            deadline = 0.0

            def hold() -> None:
                batch = root.current_batch
                if batch is not None and (not held or held[-1] is not batch):
                    batch.acquire()
                    held.append(batch)

            def add(value: Any) -> None:
                nonlocal deadline
                if not buf and within is not None:
                    deadline = loop.time() + within
                hold()
                buf.append(value)

            def release() -> None:
                for batch in held:
                    batch.release()
                held.clear()

            def abandon() -> None:
                # Closed or cancelled with a chunk in hand: not processed.
                for batch in held:
                    batch.abandon()
                held.clear()

            try:
                while True:
                    while poll is not None and len(buf) < n:
                        value = poll(_EMPTY)
                        if value is _EMPTY:
                            break
                        add(value)
                    if len(buf) >= n or (buf and within is not None and loop.time() >= deadline):
                        chunk, buf = buf, []
                        yield chunk
                        release()
                        continue
                    try:
                        if within is None or not buf:
                            value = await it.__anext__()
                        else:
                            value = await asyncio.wait_for(
                                _anext(it), max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        chunk, buf = buf, []
                        yield chunk
                        release()
                        continue
                    except StopAsyncIteration:
                        if buf:
                            chunk, buf = buf, []
                            yield chunk
                            release()
                        return
                    add(value)
            finally:
                abandon()
        return self._derive(gen)

    def through(self, target: Any) -> "Stream":
        """Forward values to a channel (or agent) and read that channel's stream.

        Given a ``Pipeline`` (anything with ``run_batch``), runs it on every
        batch instead and yields its results.
        """
        run_batch = getattr(target, "run_batch", None)
        if run_batch is not None:
            parent = self

            async def run() -> AsyncIterator[Any]:
                async for batch in parent.batches():
                    yield await run_batch(batch)
            return self._derive(run)
        channel = getattr(target, "channel", target)
        out = channel.stream()
        source = self

        async def forward() -> None:
            async for value in source:
                await channel.send(value=value)
        task = asyncio.ensure_future(forward())
        out._tasks.append(task)
        return out

    def close(self) -> None:
        """Unsubscribe and stop receiving; what is held is abandoned, not acked."""
        for task in self._tasks:
            task.cancel()
        if self._parent is None:
            self._sub.close()


async def _anext(it: Any) -> Any:
    return await it.__anext__()


class _PayloadIterator:
    """``stream.batches()``: yields each batch's payload (list or RecordBatch)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __aiter__(self) -> "_PayloadIterator":
        return self

    async def __anext__(self) -> Any:
        batch = await self.inner.__anext__()
        return batch.payload
