"""WasmNode: one node's instance of a WASM module, called once per batch.

The instance is made on the first call and reused by the next ones. A call
runs under the module's fuel (set afresh each call) and memory limit: a node
that loops forever runs out of fuel, one that grows without bound is refused
memory, and either (like any trap: out-of-bounds access, ``unreachable``)
fails that call with a ``NodeExecutionError`` naming the node. The instance
is then dropped, since its memory may be left half-written, and the next
call instantiates the module again: the node keeps serving.

A call blocks while the module runs; ``execute`` runs a large batch (or a
call that would wait for another one) in a thread, since wasmtime releases
the GIL while WebAssembly runs, and a small one inline where a thread would
cost more than the call.
"""
from __future__ import annotations

import asyncio
import ctypes
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

import pyarrow as pa
import wasmtime

from ..exceptions import NodeExecutionError
from ..types import NodeExecutorT
from .wasm_abi import AbiViolation, InputLayout, as_record_batch, read_batch, read_cstring
from .wasm_module import WasmModule

__all__ = ["WasmNode", "THREAD_THRESHOLD"]

#: Batches of at least this many bytes run in a thread, not on the event loop.
THREAD_THRESHOLD = 1 << 20


_i32 = wasmtime.Val.i32


class _Live:
    """A store, its instance and the exports a call uses."""

    __slots__ = ("store", "memory", "alloc", "run", "error")

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        exports = instance.exports(store)
        self.store = store
        self.memory: wasmtime.Memory = exports["memory"]  # type: ignore[assignment]
        self.alloc: wasmtime.Func = exports["sabot_alloc"]  # type: ignore[assignment]
        self.run: wasmtime.Func = exports["sabot_run"]  # type: ignore[assignment]
        self.error: Optional[wasmtime.Func] = exports.get("sabot_error")  # type: ignore[assignment]

    def memory_span(self) -> Tuple[int, int]:
        """(address in this process, size in bytes) of linear memory now.

        Read again after every call into the module: growing may move it.
        """
        pointer = ctypes.cast(self.memory.data_ptr(self.store), ctypes.c_void_p).value or 0
        return pointer, self.memory.data_len(self.store)


class WasmNode(NodeExecutorT):
    """A node running a ``WasmModule``; see the module docstring."""

    runtime = "wasm"
    input_keys = ("input",)
    output_keys = ("output",)

    def __init__(self, module: WasmModule, node_id: str) -> None:
        self.module = module
        self.node_id = node_id
        self._live: Optional[_Live] = None
        self._lock = threading.Lock()
        #: Instances made so far (1 + the calls that trapped, once called).
        self.instantiations = 0

    @property
    def node_type(self) -> str:
        """The registered type name."""
        return self.module.node_type

    def __repr__(self) -> str:
        return f"<WasmNode {self.node_id} ({self.node_type})>"

    def _fail(self, what: str, detail: str = "") -> NodeExecutionError:
        return NodeExecutionError(f"WASM node {self.node_id!r} ({self.node_type}) {what}",
                                  node_id=self.node_id, remote_traceback=detail)

    def _instance(self) -> _Live:
        if self._live is None:
            try:
                store, instance = self.module.instantiate()
            except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
                raise self._fail(f"could not be instantiated: {exc}") from exc
            self.instantiations += 1
            self._live = _Live(store, instance)
        return self._live

    async def execute(self, inputs: Mapping[str, Any],
                      params: Mapping[str, Any]) -> Dict[str, Any]:
        """``{"output": RecordBatch}``: the module's answer for ``inputs["input"]``."""
        batch = as_record_batch(inputs["input"])
        if batch.nbytes >= THREAD_THRESHOLD or self._lock.locked():
            return {"output": await asyncio.to_thread(self.call, batch, params)}
        return {"output": self.call(batch, params)}

    def call(self, batch: pa.RecordBatch, params: Mapping[str, Any]) -> pa.RecordBatch:
        """Run the module on ``batch`` (blocking); one call at a time per node."""
        layout = InputLayout(batch, params)
        with self._lock:
            live = self._instance()
            try:
                return self._call(live, layout)
            except wasmtime.Trap as exc:
                self._live = None
                raise self._fail(self._trap_reason(live, exc), exc.message) from exc
            except wasmtime.WasmtimeError as exc:  # proc_exit, a host error
                self._live = None
                raise self._fail(f"failed: {exc}") from exc
            except AbiViolation as exc:
                self._live = None
                raise self._fail(f"broke the ABI: {exc}") from exc

    def _call(self, live: _Live, layout: InputLayout) -> pa.RecordBatch:
        store = live.store
        store.set_fuel(self.module.fuel)
        # Val.i32 arguments: wasmtime-py converts a plain int by comparing
        # types first, a quarter of a call's cost.
        block = live.alloc(store, _i32(layout.size)) & 0xFFFFFFFF
        base, size = live.memory_span()
        if block == 0 or block + layout.size > size:
            raise self._fail(
                f"could not allocate {layout.size} bytes for its input (memory in use "
                f"{size} of {self.module.memory_limit} bytes allowed)")
        layout.write(base, block)
        out = live.run(store, _i32(block), _i32(block + layout.params_offset),
                       _i32(len(layout.params))) & 0xFFFFFFFF
        base, size = live.memory_span()
        if out == 0:
            message = ""
            if live.error is not None:
                message = read_cstring(base, size, live.error(store) & 0xFFFFFFFF)
            raise self._fail(f"reported a failure: {message or 'sabot_run returned 0'}")
        return read_batch(base, size, out)

    def _trap_reason(self, live: _Live, exc: wasmtime.Trap) -> str:
        if exc.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
            return (f"ran out of fuel: more than {self.module.fuel} instructions in one call "
                    f"(an endless loop?)")
        try:
            used = live.memory.data_len(live.store)
        except wasmtime.WasmtimeError:
            used = -1
        code = exc.trap_code
        what = (code.name.lower().replace("_", " ") if code is not None
                else exc.message.strip().splitlines()[-1])
        return (f"trapped: {what} (memory in use {used} of {self.module.memory_limit} "
                f"bytes allowed)")

    def close(self) -> None:
        """Drop the instance (the bridge's ``cleanup_node`` calls this)."""
        with self._lock:
            self._live = None

