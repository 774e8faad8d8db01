"""The worker-process side of an agent with ``executor="process"``.

The process imports the agent function by module path and runs it, once,
on its own event loop, over a ``WorkerStream`` fed with the batches the
parent sends. What the agent yields is collected for the batch it is
working on; when the agent asks for data beyond that batch, the batch is
finished and its results go back in one ``result`` frame. That is the
moment the parent may acknowledge the batch: at-least-once delivery holds
across the process boundary. An agent that raises fails the batch it was
on (``error`` frame) and is started again for the next one.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from typing import Any, AsyncIterator, List, Optional

import pyarrow as pa

from .arena import ShmArena
from .framesock import FrameSocket
from .ipc import DEFAULT_INLINE_THRESHOLD, Frame, FrameReader, FrameWriter, pack_frame
from .worker import error_header, prepare_worker_process

__all__ = ["WorkerStream", "agent_worker_main", "resolve_agent_function"]

logger = logging.getLogger(__name__)


def resolve_agent_function(path: str) -> Any:
    """Import the agent function at ``path``, unwrapping an agent object.

    ``@app.agent`` rebinds the function's name to the agent, so the module
    attribute may be the agent; its ``fun`` (or ``__wrapped__``) is the
    coroutine function itself.
    """
    from ..nodes.registry import resolve_path
    obj = resolve_path(path)
    for attr in ("fun", "_fun", "__wrapped__"):
        if inspect.isasyncgenfunction(obj) or inspect.iscoroutinefunction(obj):
            break
        obj = getattr(obj, attr, obj)
    if not (inspect.isasyncgenfunction(obj) or inspect.iscoroutinefunction(obj)):
        raise TypeError(f"{path} is not an async function or async generator")
    return obj


class WorkerStream:
    """What a process agent iterates: the batches the parent sends, or their values.

    ``async for value in stream`` yields the values (rows of an Arrow batch
    as dicts); ``stream.batches()`` yields each batch as it came (a
    ``pyarrow.RecordBatch`` or a list), without a copy.
    """

    def __init__(self, worker: "_AgentWorker") -> None:
        self._worker = worker

    async def batches(self) -> AsyncIterator[Any]:
        """Each batch, as sent: RecordBatch, Table or list of values."""
        while True:
            batch = await self._worker.next_batch()
            if batch is None:
                return
            yield batch

    async def _values(self) -> AsyncIterator[Any]:
        async for batch in self.batches():
            rows = batch.to_pylist() if isinstance(batch, (pa.RecordBatch, pa.Table)) else batch
            for value in rows:
                yield value

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._values()

    async def enumerate(self, start: int = 0) -> AsyncIterator[Any]:
        """``(index, value)`` pairs, counting from ``start``."""
        i = start
        async for value in self:
            yield i, value
            i += 1


class _AgentWorker:
    """One process agent: its socket, inbox, current batch and results."""

    def __init__(self, sock: socket.socket) -> None:
        self.fsock = FrameSocket(sock)
        self.arena = ShmArena()
        self.loop = asyncio.get_running_loop()
        self.inbox: "asyncio.Queue[Optional[Frame]]" = asyncio.Queue()
        self.inline_threshold = DEFAULT_INLINE_THRESHOLD
        self.fun: Any = None
        self.current: Optional[int] = None
        self.results: List[Any] = []

    def _readable(self) -> None:
        for frame in self.fsock.recv_ready():
            self.inbox.put_nowait(frame)
        if self.fsock.eof:
            self.loop.remove_reader(self.fsock.fileno())
            self.inbox.put_nowait(None)

    def send(self, buffers: Any) -> None:
        self.fsock.send_blocking(buffers)

    def finish_batch(self) -> None:
        """Send the results of the current batch: it is done."""
        if self.current is None:
            return
        writer = FrameWriter(self.inline_threshold, self.arena)
        try:
            frame = writer.finish({"op": "result", "id": self.current,
                                   "values": writer.describe_many(self.results)})
        except Exception as exc:
            writer.discard()
            frame = FrameWriter(arena=self.arena).finish(error_header(exc, self.current))
        self.current, self.results = None, []
        self.send(frame)

    def fail_batch(self, exc: BaseException) -> None:
        """Report ``exc`` for the current batch; its results are dropped."""
        if self.current is not None:
            self.send(FrameWriter(arena=self.arena).finish(error_header(exc, self.current)))
        self.current, self.results = None, []

    async def next_batch(self) -> Any:
        """Finish the current batch, wait for the next; None once stopped."""
        self.finish_batch()
        while True:
            frame = await self.inbox.get()
            if frame is None:
                return None
            header, body = frame
            if header.get("op") == "stop":
                return None
            if header.get("op") != "batch":
                continue
            self.current = header.get("id", 0)
            try:
                return FrameReader(header, body, self.arena).value(header["payload"])
            except Exception as exc:  # a batch that cannot be read fails alone
                self.fail_batch(exc)

    async def start(self) -> bool:
        """Wait for ``init``, import the agent; False when it cannot start."""
        self.loop.add_reader(self.fsock.fileno(), self._readable)
        frame = await self.inbox.get()
        if frame is None:
            return False
        header, _ = frame
        self.inline_threshold = header.get("inline_threshold", self.inline_threshold)
        try:
            self.fun = resolve_agent_function(header["agent"])
        except Exception as exc:
            self.send(pack_frame(error_header(exc)))
            return False
        self.send(pack_frame({"op": "ready", "pid": os.getpid()}))
        return True

    async def run(self) -> None:
        """Run the agent until the parent stops it, restarting it after errors."""
        if not await self.start():
            return
        while True:
            stream = WorkerStream(self)
            try:
                if inspect.isasyncgenfunction(self.fun):
                    async for value in self.fun(stream):
                        self.results.append(value)
                else:
                    await self.fun(stream)
                self.finish_batch()
                return
            except Exception as exc:
                logger.exception("process agent raised; restarting it")
                if self.current is None:
                    # It failed before taking a batch: fail the next one
                    # rather than restart in a loop.
                    if await self.next_batch() is None:
                        return
                self.fail_batch(exc)


def agent_worker_main(sock: socket.socket) -> None:
    """Entry point of a process-agent worker (the target of ``Process``)."""
    prepare_worker_process()

    arenas = []

    async def main() -> None:
        worker = _AgentWorker(sock)
        arenas.append(worker.arena)
        await worker.run()

    try:
        asyncio.run(main())
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        for arena in arenas:
            arena.close()
        sock.close()
