"""NodeRegistry: node types mapped to factories, one per runtime (seed 003).

A factory is ``factory(params) -> NodeExecutorT`` (a node class taking its
params does). It is given as the object or as an import path
``"package.module:Name"``; a process worker imports it by that path, so a
factory meant for worker processes must live at module level.

Runtimes are tried in ``RUNTIMES`` order: native first, and the next one
when a node type has no factory for a runtime or its factory fails to build.

``wasm=`` registers a module compiled to WebAssembly instead of (or beside)
a Python factory: a path to a ``.wasm`` file, its bytes, or WebAssembly
text, with the ``capabilities`` it is granted and its ``memory_limit`` and
``fuel`` per call (``sabot.bridge.wasm_module``). It is compiled and checked
against the ABI here, so a module that does not meet it is refused now.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from ..exceptions import RegistryError
from ..types import NodeExecutorT

__all__ = ["RUNTIMES", "NodeRegistry", "import_path", "resolve_path"]

#: Known runtimes, in the order ``auto`` tries them.
RUNTIMES: Tuple[str, ...] = ("native", "wasm", "process")


def import_path(obj: Any) -> str:
    """``"module:qualname"`` of a module-level function or class.

    Raises ``RegistryError`` for lambdas, closures and nested functions,
    which another process cannot import.
    """
    if isinstance(obj, str):
        return obj
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise RegistryError(
            f"{obj!r} is not importable by module path (a lambda, closure or "
            f"nested function?); define it at module level so that a worker "
            f"process can import it")
    return f"{module}:{qualname}"


def resolve_path(path: str) -> Any:
    """Import ``"module:qualname"`` and return the object."""
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistryError(f"cannot import {path!r}: {exc}") from exc
    return obj


class NodeRegistry:
    """Factories for node types, per runtime; see the module docstring."""

    def __init__(self) -> None:
        self._factories: Dict[str, Dict[str, Any]] = {}

    def register(self, node_type: str, *, native: Any = None,
                 process: Any = None, wasm: Any = None,
                 capabilities: Iterable[str] = (), **wasm_limits: int) -> None:
        """Register ``node_type`` with a factory for one or more runtimes.

        ``wasm``: a WebAssembly module (path, bytes or text) granted
        ``capabilities``; ``memory_limit`` and ``fuel`` (keywords) bound each
        call. Registering the same type twice raises ``RegistryError``.
        """
        if node_type in self._factories:
            raise RegistryError(f"node type {node_type!r} is already registered")
        unknown = sorted(set(wasm_limits) - {"memory_limit", "fuel"})
        if unknown:
            raise RegistryError(f"node type {node_type!r}: unknown argument(s) {unknown}")
        if wasm is None and (capabilities or wasm_limits):
            raise RegistryError(f"node type {node_type!r}: capabilities, memory_limit and "
                                f"fuel apply to a wasm= module only")
        factories = {rt: f for rt, f in (("native", native), ("process", process))
                     if f is not None}
        if wasm is not None:
            # Imported here: wasmtime is an extra (sabot[wasm]), needed only
            # by those who register a module.
            from ..bridge.wasm_module import WasmModule
            factories["wasm"] = (wasm if isinstance(wasm, WasmModule) else WasmModule.load(
                node_type, wasm, capabilities=capabilities, **wasm_limits))
        if not factories:
            raise RegistryError(f"node type {node_type!r} needs at least one factory")
        if "process" in factories:
            import_path(factories["process"])  # fail now, not in the worker
        self._factories[node_type] = factories

    def __contains__(self, node_type: object) -> bool:
        return node_type in self._factories

    def node_types(self) -> List[str]:
        """Registered node type names."""
        return sorted(self._factories)

    def _entry(self, node_type: str) -> Dict[str, Any]:
        try:
            return self._factories[node_type]
        except KeyError:
            raise RegistryError(f"unknown node type {node_type!r}") from None

    def runtimes(self, node_type: str, hint: str = "auto") -> List[str]:
        """Runtimes to try for ``node_type``, best first.

        ``auto``: those with a registered factory, in ``RUNTIMES`` order. An
        explicit runtime is honoured alone; ``process`` may run any
        importable factory, even one registered only as native.
        """
        entry = self._entry(node_type)
        if hint == "auto":
            return [rt for rt in RUNTIMES if rt in entry]
        if hint not in RUNTIMES:
            raise RegistryError(f"unknown runtime {hint!r}; known: {RUNTIMES}")
        if hint not in entry and hint != "process":
            raise RegistryError(f"node type {node_type!r} has no {hint} factory")
        return [hint]

    def factory(self, node_type: str, runtime: str = "native") -> Callable[..., Any]:
        """The factory object for ``node_type`` in ``runtime`` (imported if a path)."""
        entry = self._entry(node_type)  # at least one factory: register() says so
        factory = (entry.get(runtime) or entry.get("native") or entry.get("process")
                   or entry["wasm"])
        return resolve_path(factory) if isinstance(factory, str) else factory

    def wasm_module(self, node_type: str) -> Any:
        """The ``WasmModule`` registered for ``node_type`` (``RegistryError`` if none)."""
        module = self._entry(node_type).get("wasm")
        if module is None:
            raise RegistryError(f"node type {node_type!r} has no wasm module")
        return module

    def process_spec(self, node_type: str) -> Dict[str, Any]:
        """What a process worker builds the node from, for its ``init`` header.

        A Python factory's import path (``{"factory": ...}``), or, for a node
        registered only as WebAssembly, the module itself (``{"wasm": ...}``:
        its bytes and limits, JSON-able; no pickle).
        """
        entry = self._entry(node_type)
        if "wasm" in entry and not ({"native", "process"} & set(entry)):
            return {"wasm": entry["wasm"].to_header()}
        return {"factory": self.factory_path(node_type, "process")}

    def factory_path(self, node_type: str, runtime: str = "process") -> str:
        """Import path of the factory a worker process should build."""
        entry = self._entry(node_type)
        return import_path(entry.get(runtime) or entry.get("native")
                           or entry.get("process"))

    def create(self, node_type: str, params: Optional[Mapping[str, Any]] = None,
               runtime: str = "native") -> NodeExecutorT:
        """Build a node of ``node_type`` for ``runtime`` with ``params``."""
        return build_node(self.factory(node_type, runtime), params or {}, node_type)


def build_node(factory: Callable[..., Any], params: Mapping[str, Any],
               node_type: str) -> NodeExecutorT:
    """Call ``factory(params)`` and check that the result is a node (``NodeExecutorT``)."""
    node = factory(dict(params))
    if not isinstance(node, NodeExecutorT):
        raise RegistryError(
            f"factory for node type {node_type!r} built {node!r}, which is no node: "
            f"no execute() of a sabot.types.NodeExecutorT")
    return node
