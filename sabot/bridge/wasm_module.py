"""A WASM node's registration: the module compiled once, checked, with its limits.

``WasmModule.load(node_type, source, ...)`` takes a path to a ``.wasm`` (or
``.wat``) file, the module's bytes, or WebAssembly text. It compiles the
module once (on one engine per process, so every store can instantiate it),
checks that it meets the ABI (``sabot.bridge.wasm_abi``) and that it imports
nothing the granted capabilities do not allow (``sabot.bridge.wasm_sandbox``),
and instantiates it once as a trial. Whatever is missing is named in the
``RegistryError``.

A ``WasmModule`` is a node factory like any other (``module(params)``
builds a ``WasmNode``), and it crosses to a process worker as its bytes in
the ``init`` header (``to_header``/``from_header``): never as a pickle.
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import wasmtime

from ..exceptions import RegistryError
from .wasm_sandbox import Capabilities

__all__ = ["WasmModule", "DEFAULT_MEMORY_LIMIT", "DEFAULT_FUEL", "REQUIRED_EXPORTS",
           "engine"]

#: Bytes of linear memory a node's instance may use (``memory_limit``).
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024
#: Instructions (roughly) a node may execute per call (``fuel``): summing
#: 10M int64 values takes about 140M.
DEFAULT_FUEL = 2_000_000_000

_I32 = "i32"
_Signature = Tuple[Tuple[str, ...], Tuple[str, ...]]
#: Function exports of the ABI: name -> (params, results).
REQUIRED_EXPORTS: Dict[str, _Signature] = {
    "sabot_alloc": ((_I32,), (_I32,)),
    "sabot_run": ((_I32, _I32, _I32), (_I32,)),
}
#: Optional: a pointer to a NUL-terminated message about the last failure.
OPTIONAL_EXPORTS: Dict[str, _Signature] = {"sabot_error": ((), (_I32,))}

_engine: Optional[wasmtime.Engine] = None
_engine_lock = threading.Lock()
_compiled: Dict[str, wasmtime.Module] = {}


def engine() -> wasmtime.Engine:
    """The process's one engine: fuel metering on (every store is metered)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            _engine = wasmtime.Engine(config)
        return _engine


def _signature(ty: wasmtime.FuncType) -> _Signature:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def _show(sig: _Signature) -> str:
    return f"({', '.join(sig[0])}) -> ({', '.join(sig[1])})"


def _wasm_bytes(node_type: str, source: Union[str, bytes, bytearray, "os.PathLike[str]"]) -> bytes:
    """The binary module ``source`` stands for (text is compiled with wat2wasm)."""
    text: Optional[str] = None
    if isinstance(source, (bytes, bytearray)):
        if bytes(source[:4]) == b"\0asm":
            return bytes(source)
        try:
            text = bytes(source).decode()
        except UnicodeDecodeError:
            raise RegistryError(f"WASM node {node_type!r}: bytes that are neither a binary "
                                f"module (no \\0asm header) nor WebAssembly text") from None
    elif isinstance(source, str) and source.lstrip().startswith("("):
        text = source
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise RegistryError(f"WASM node {node_type!r}: cannot read {path!r}: {exc}") from exc
        return _wasm_bytes(node_type, data)
    else:
        raise RegistryError(f"WASM node {node_type!r}: wasm= takes a path, bytes or "
                            f"WebAssembly text, not {type(source).__name__}")
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise RegistryError(f"WASM node {node_type!r}: invalid WebAssembly text: {exc}") from exc


def _compile(node_type: str, wasm: bytes) -> wasmtime.Module:
    """Compile once per process: the same bytes reuse the compiled module."""
    key = hashlib.sha256(wasm).hexdigest()
    module = _compiled.get(key)
    if module is None:
        try:
            module = wasmtime.Module(engine(), wasm)
        except wasmtime.WasmtimeError as exc:
            raise RegistryError(f"WASM node {node_type!r}: the module does not compile: "
                                f"{exc}") from exc
        _compiled[key] = module
    return module


def _check_exports(node_type: str, module: wasmtime.Module) -> None:
    exports = {e.name: e.type for e in module.exports}
    problems: List[str] = []
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        problems.append("no memory exported as 'memory'" if memory is None
                        else "its export 'memory' is not a memory")
    elif memory.is_64 or memory.is_shared:
        problems.append("its memory must be a 32-bit, unshared memory")
    wanted = dict(REQUIRED_EXPORTS)
    for name, sig in OPTIONAL_EXPORTS.items():
        if name in exports:
            wanted[name] = sig
    for name, sig in wanted.items():
        ty = exports.get(name)
        if ty is None:
            problems.append(f"missing export {name}: {_show(sig)}")
        elif not isinstance(ty, wasmtime.FuncType):
            problems.append(f"export {name} is not a function (the ABI needs {_show(sig)})")
        elif _signature(ty) != sig:
            problems.append(f"export {name} has signature {_show(_signature(ty))}, "
                            f"the ABI needs {_show(sig)}")
    if problems:
        raise RegistryError(f"WASM node {node_type!r} does not meet the Sabot ABI: "
                            + "; ".join(problems))


class WasmModule:
    """One registered WASM node type; see the module docstring."""

    def __init__(self, node_type: str, wasm: bytes, *, capabilities: Iterable[str] = (),
                 memory_limit: int = DEFAULT_MEMORY_LIMIT, fuel: int = DEFAULT_FUEL) -> None:
        for name, value in (("memory_limit", memory_limit), ("fuel", fuel)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RegistryError(f"WASM node {node_type!r}: {name} must be a positive "
                                    f"int, got {value!r}")
        self.node_type = node_type
        self.wasm = wasm
        self.memory_limit = memory_limit
        self.fuel = fuel
        self.capabilities = Capabilities.parse(node_type, capabilities)
        self.module = _compile(node_type, wasm)
        _check_exports(node_type, self.module)
        self.uses_wasi = self.capabilities.check_imports(node_type, self.module)
        self.linker = wasmtime.Linker(engine())
        if self.uses_wasi:
            self.linker.define_wasi()
        try:
            self.instantiate()
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise RegistryError(f"WASM node {node_type!r} cannot be instantiated within its "
                                f"limits (memory {memory_limit} bytes, fuel {fuel}): "
                                f"{exc}") from exc

    @classmethod
    def load(cls, node_type: str, source: Any, *, capabilities: Iterable[str] = (),
             memory_limit: int = DEFAULT_MEMORY_LIMIT, fuel: int = DEFAULT_FUEL) -> "WasmModule":
        """Build from a path, bytes or WebAssembly text (see the module docstring)."""
        return cls(node_type, _wasm_bytes(node_type, source), capabilities=capabilities,
                   memory_limit=memory_limit, fuel=fuel)

    def __repr__(self) -> str:
        return (f"<WasmModule {self.node_type} {len(self.wasm)} bytes "
                f"capabilities={list(self.capabilities.names)}>")

    def instantiate(self) -> Tuple[wasmtime.Store, wasmtime.Instance]:
        """A fresh store (with the memory limit) and instance of the module."""
        store = wasmtime.Store(engine())
        store.set_limits(memory_size=self.memory_limit)
        if self.uses_wasi:
            store.set_wasi(self.capabilities.wasi_config(self.node_type))
        store.set_fuel(self.fuel)  # a start function is metered too
        return store, self.linker.instantiate(store, self.module)

    def node(self, node_id: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        """A ``WasmNode`` running this module, reporting errors as ``node_id``."""
        from .wasm_node import WasmNode
        return WasmNode(self, node_id)

    def __call__(self, params: Mapping[str, Any]) -> Any:
        """The node factory contract: ``factory(params) -> node``."""
        return self.node(self.node_type, params)

    def to_header(self) -> Dict[str, Any]:
        """What a process worker needs to load the same module (JSON-able)."""
        return {"node_type": self.node_type,
                "module": base64.b64encode(self.wasm).decode("ascii"),
                "capabilities": list(self.capabilities.names),
                "memory_limit": self.memory_limit, "fuel": self.fuel}

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "WasmModule":
        """The module ``to_header`` described."""
        return cls(header["node_type"], base64.b64decode(header["module"]),
                   capabilities=header.get("capabilities") or (),
                   memory_limit=header["memory_limit"], fuel=header["fuel"])
