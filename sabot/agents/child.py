"""The child-process side of ``executor="process"``: the agent over the same Stream.

The child imports the agent function by module path and runs it as an
ordinary ``Agent`` (concurrency 1) over an in-memory channel of its own, so
the function gets the very ``Stream`` a native agent gets: values, events
with keys and headers, ``batches()``, ``filter``, ``map``, ``take(n,
within)``, ``enumerate``...

The conversation with the parent, one frame answered by one frame:

``batch`` (id, payload, envelope)
    published to the local channel. The answer comes when that batch is done
    (the agent moved past it) or when the agent waits for more input while
    still holding it (say, a ``take`` chunk that spans batches), whichever
    is first.
``poll``
    answered at once (the parent asks while it has no new input, so that a
    batch finished meanwhile is acknowledged without waiting for more).
``end``
    the parent's input ended: the local channel closes and the answer comes
    once the agent has drained it.

Every answer (``result``) carries what the agent yielded since the last
one, the ids of the batches it finished (acknowledged by the parent only
then, after forwarding the values), the failures (the agent raised on a
value: the value, its position, the error and the remote traceback; the
agent is restarted over the same stream, as a native one is, and the parent
applies ``on_error``), and whether the agent function has returned.
Nothing is pickled: data crosses as Arrow IPC, the rest as JSON.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
from typing import Any, Dict, List, Optional

from .._fastpath import Batch
from ..bridge.arena import ShmArena
from ..bridge.child import error_header, prepare_worker_process
from ..bridge.envelope import read_envelope
from ..bridge.framesock import FrameSocket
from ..bridge.ipc import DEFAULT_INLINE_THRESHOLD, Frame, FrameReader, FrameWriter, pack_frame
from ..channels.memory import MemoryChannel
from ..exceptions import ConversionError
from .agent import Agent, AgentFailure

__all__ = ["child_main", "resolve_agent_function"]

logger = logging.getLogger(__name__)


def resolve_agent_function(path: str) -> Any:
    """Import the agent function at ``path``, unwrapping an agent object.

    ``@app.agent`` rebinds the function's name to the agent, so the module
    attribute may be the agent; its ``fun`` is the coroutine function itself.
    """
    from ..nodes.registry import resolve_path
    obj = resolve_path(path)
    if isinstance(obj, Agent):
        obj = obj.fun
    if not (inspect.isasyncgenfunction(obj) or inspect.iscoroutinefunction(obj)):
        raise TypeError(f"{path} is not an async function or async generator")
    return obj


def _safe_position(position: Any) -> Any:
    # Positions are tuples of str and int (JSON turns them into lists); a
    # position of another kind crosses as its repr.
    try:
        json.dumps(position)
        return position
    except (TypeError, ValueError):
        return repr(position)


def _report(exc: BaseException, batch: Optional[int], value: Any,
            position: Any = None) -> Dict[str, Any]:
    """A failure as the parent reads it: the error (as ``error_header`` says
    it) with the parent's id of the batch, the failing value and its position."""
    header = error_header(exc)
    return {"batch": batch, "value": value, "position": _safe_position(position),
            "type": header["type"], "message": header["message"],
            "traceback": header["traceback"]}


class _Child:
    """One process agent's child: its socket, local channel, agent and news."""

    def __init__(self, sock: socket.socket) -> None:
        self.fsock = FrameSocket(sock)
        self.arena = ShmArena()
        self.loop = asyncio.get_running_loop()
        self.inbox: "asyncio.Queue[Optional[Frame]]" = asyncio.Queue()
        self.inline_threshold = DEFAULT_INLINE_THRESHOLD
        self.channel = MemoryChannel(None, "process-agent-input")
        self.agent: Optional[Agent] = None
        # News for the next answer.
        self.results: List[Any] = []
        self.failures: List[Dict[str, Any]] = []
        #: The parent's ids of the batches finished (a frame without one: None).
        self.done_ids: List[Optional[int]] = []
        self.ids: Dict[Batch, Optional[int]] = {}  # local batch -> the parent's id for it
        self.starved = False
        self.changed = asyncio.Event()
        self._watch: Optional["asyncio.Future[None]"] = None

    # -- socket --------------------------------------------------------------
    def _readable(self) -> None:
        for frame in self.fsock.recv_ready():
            self.inbox.put_nowait(frame)
        if self.fsock.eof:
            self.loop.remove_reader(self.fsock.fileno())
            self.inbox.put_nowait(None)

    def send(self, buffers: Any) -> None:
        self.fsock.send_blocking(buffers)

    # -- the agent's news ------------------------------------------------------
    def _on_wait(self) -> None:
        self.starved = True
        self.changed.set()

    def _batch_done(self, batch: Batch) -> None:
        req = self.ids.pop(batch, None)
        if req is not None:
            self.done_ids.append(req)
            self.changed.set()

    def _failed(self, failure: AgentFailure) -> None:
        batch_id = next((self.ids[b] for b in failure.sources if b in self.ids), None)
        self.failures.append(_report(failure.error, batch_id, failure.value, failure.position))
        self.changed.set()

    def _collect(self, value: Any) -> None:
        self.results.append(value)

    # -- answering ---------------------------------------------------------------
    def answer(self, req: Any) -> None:
        """Send the news since the last answer as the answer to ``req``."""
        values, self.results = self.results, []
        failures, self.failures = self.failures, []
        done, self.done_ids = self.done_ids, []
        writer = FrameWriter(self.inline_threshold, self.arena)
        described: List[Dict[str, Any]] = []
        for value in values:
            try:
                described.append(writer.describe(value))
            except ConversionError as exc:
                # A result that cannot cross: reported as a failure, the
                # rest still go.
                failures.append(_report(exc, None, repr(value)))
        for failure in failures:
            try:
                failure["value"] = writer.describe(failure["value"])
            except ConversionError:
                failure["value"] = {"k": "json", "v": repr(failure["value"])}
        agent = self.agent
        header = {"op": "result", "id": req, "values": described, "failures": failures,
                  "done": done, "ended": agent is None or not agent.running}
        self.send(writer.finish(header))

    # -- serving -------------------------------------------------------------------
    async def start(self) -> bool:
        """Wait for ``init``, import and start the agent; False when it cannot."""
        self.loop.add_reader(self.fsock.fileno(), self._readable)
        frame = await self.inbox.get()
        if frame is None:
            return False
        header, _ = frame
        self.inline_threshold = header.get("inline_threshold", self.inline_threshold)
        try:
            fun = resolve_agent_function(header["agent"])
            agent = Agent(fun, app=None, channel=self.channel, name=header.get("name"),
                          sink=[self._collect], on_error="skip")
            agent.on_failure = self._failed
            # The parent logs the failure, with this traceback.
            agent.failure_log_level = logging.DEBUG
            await agent.start()
        except Exception as exc:
            self.send(pack_frame(error_header(exc)))
            return False
        self.agent = agent
        subscriber = agent.subscriber
        assert subscriber is not None, "a started agent has its subscription"
        subscriber.on_wait = self._on_wait
        self._watch = asyncio.ensure_future(self._watch_end(agent))
        self.send(pack_frame({"op": "ready", "pid": os.getpid()}))
        return True

    async def _watch_end(self, agent: Agent) -> None:
        # The agent function returning is news too (the answer says "ended").
        await agent.wait_done()
        self.changed.set()

    def _read_batch(self, header: Dict[str, Any], body: Any) -> Batch:
        reader = FrameReader(header, body, self.arena)
        payload = reader.value(header["payload"])
        envelope: Dict[str, Any] = {}
        if "envelope" in header:
            envelope = read_envelope(reader.value(header["envelope"]))
        return Batch(payload, keys=envelope.get("keys"), headers=envelope.get("headers"),
                     timestamps=envelope.get("timestamps"), positions=envelope.get("positions"),
                     timestamp=header.get("timestamp"))

    async def _until(self, finished: Any) -> None:
        # Wait for news until ``finished()`` or the agent function returned.
        while not finished() and self.agent is not None and self.agent.running:
            self.changed.clear()
            await self.changed.wait()

    async def serve(self) -> None:
        """Answer the parent's frames until it says stop or goes away."""
        while True:
            frame = await self.inbox.get()
            if frame is None:
                return
            header, body = frame
            op = header.get("op")
            req: Optional[int] = header.get("id")
            if op == "stop":
                return
            if op == "poll":
                self.answer(req)
            elif op == "end":
                await self.channel.close()
                await self._until(lambda: False)
                self.answer(req)
            elif op == "batch":
                try:
                    batch = self._read_batch(header, body)
                except Exception as exc:  # a batch that cannot be read fails alone
                    self.failures.append(_report(exc, req, None))
                    self.done_ids.append(req)
                    self.answer(req)
                    continue
                self.ids[batch] = req
                batch.on_done = self._batch_done
                self.starved = False
                await self.channel.publish(batch)
                await self._until(lambda: batch not in self.ids or self.starved)
                self.answer(req)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.agent is not None:
            await self.agent.stop()


def child_main(sock: socket.socket) -> None:
    """Entry point of a process agent's child (the target of ``Process``)."""
    prepare_worker_process()
    arenas = []

    async def main() -> None:
        child = _Child(sock)
        arenas.append(child.arena)
        try:
            if await child.start():
                await child.serve()
        finally:
            await child.close()

    try:
        asyncio.run(main())
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        for arena in arenas:
            arena.close()
        sock.close()
