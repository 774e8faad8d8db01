"""The worker-process side of ``ProcessBridge``: one node, served over a socket.

The parent spawns ``node_worker_main`` with its end of a socket pair. The
first frame is ``init`` (node id, type, factory import path, params): the
worker imports the factory, builds the node and answers ``ready`` with the
node's input and output keys. Then each ``exec`` frame is answered by one
``result`` or ``error`` frame, until ``stop`` or end of file (the parent is
gone). Everything on the socket is a frame of ``sabot.bridge.ipc``.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Dict, Optional

from ..nodes.node import run_node
from ..types import NodeExecutorT
from .arena import ShmArena
from .child import error_header, prepare_worker_process
from .framesock import FrameSocket
from .ipc import DEFAULT_INLINE_THRESHOLD, FrameReader, FrameWriter, pack_frame

__all__ = ["node_worker_main"]


class _NodeWorker:
    """State of one node worker: its socket, node and settings."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = FrameSocket(sock)
        self.arena = ShmArena()
        self.spin = 0.0
        self.node: Optional[NodeExecutorT] = None
        self.node_id = ""
        self.node_type = ""
        self.inline_threshold = DEFAULT_INLINE_THRESHOLD

    def send(self, buffers: Any) -> None:
        self.sock.send_blocking(buffers)

    def init(self, header: Dict[str, Any]) -> None:
        from ..nodes.registry import build_node, resolve_path
        self.node_id = header["node_id"]
        self.node_type = header["node_type"]
        self.inline_threshold = header.get("inline_threshold", self.inline_threshold)
        self.spin = header.get("spin_us", 0) / 1e6
        try:
            if "wasm" in header:  # a WASM node: its module's bytes, compiled here
                from .wasm_module import WasmModule
                node = self.node = WasmModule.from_header(header["wasm"]).node(self.node_id)
            else:
                factory = resolve_path(header["factory"])
                node = self.node = build_node(factory, header.get("params") or {},
                                              self.node_type)
        except Exception as exc:
            self.send(pack_frame(error_header(exc)))
            return
        self.send(pack_frame({
            "op": "ready", "pid": os.getpid(),
            "input_keys": list(node.input_keys or ()),
            "output_keys": list(node.output_keys or ()),
        }))

    async def execute(self, header: Dict[str, Any], body: Any) -> None:
        req_id = header.get("id")
        reader = FrameReader(header, body, self.arena)
        writer = FrameWriter(self.inline_threshold, self.arena)
        inputs = outputs = None
        try:
            if self.node is None:
                raise RuntimeError(f"node {self.node_id!r} was never built (its init failed)")
            inputs = {k: reader.value(d) for k, d in header["inputs"].items()}
            outputs = await run_node(self.node, inputs, header.get("params") or {})
            if not isinstance(outputs, dict):
                raise TypeError(f"execute() returned {type(outputs).__name__}, "
                                f"not a dict of outputs")
            answer = {"op": "result", "id": req_id,
                      "outputs": {str(k): writer.describe(v) for k, v in outputs.items()}}
        except Exception as exc:
            reader.discard_unread(header.get("inputs", {}).values())
            writer.discard()
            writer = FrameWriter(self.inline_threshold, self.arena)
            answer = error_header(exc, req_id)
        # Drop every hold on the input data before answering, so that the
        # answer can tell the parent its segments are free again.
        del inputs, outputs, reader
        self.send(writer.finish(answer))

    async def serve(self) -> None:
        # Waits block the loop on purpose: between requests nothing else may
        # run in a node worker, and a blocking wait is the quickest wake-up.
        while True:
            frames = self.sock.recv_blocking(self.spin)
            if not frames:
                return  # end of file: the parent is gone
            for header, body in frames:
                op = header.get("op")
                if op == "exec":
                    await self.execute(header, body)
                elif op == "init":
                    self.init(header)
                elif op == "stop":
                    return


def node_worker_main(sock: socket.socket) -> None:
    """Entry point of a node worker process (the target of ``Process``)."""
    prepare_worker_process()
    worker = _NodeWorker(sock)
    try:
        asyncio.run(worker.serve())
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent went away; nothing is left to answer
    finally:
        worker.arena.close()
        sock.close()
