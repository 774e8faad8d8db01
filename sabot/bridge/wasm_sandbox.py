"""What a WASM node may reach outside its memory: named capabilities.

A module gets nothing by default: no WASI at all, so no files, network,
clock, randomness or environment. Its registration may grant:

``"stdio"``
    WASI's ``fd_write``/``fd_read`` on the worker's stdout and stderr.
``"clock"``
    ``clock_time_get``, ``clock_res_get``, ``poll_oneoff``.
``"random"``
    ``random_get``.
``"env:NAME"``
    the host's environment variable ``NAME`` (and only it).
``"fs:/host/dir"`` / ``"fs-rw:/host/dir"``
    that directory, read-only / writable, at the same path inside the
    sandbox; nothing outside it.

The network is never granted. Each import of the module is checked when it
is registered: an import of a function outside WASI, or of a WASI function
whose capability was not granted, refuses the module and names both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import wasmtime

from ..exceptions import RegistryError

__all__ = ["Capabilities", "WASI_MODULES", "needed_capability"]

#: Import module names under which WASI preview 1 is provided.
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

_ALWAYS = {"proc_exit", "sched_yield", "args_get", "args_sizes_get"}
_BY_NAME = {
    "clock_time_get": "clock", "clock_res_get": "clock", "poll_oneoff": "clock",
    "random_get": "random",
    "environ_get": "env", "environ_sizes_get": "env",
}


def needed_capability(function: str) -> Optional[str]:
    """The capability a WASI function needs (``None``: none; ``"network"``: never given).

    ``fd_*`` functions need ``stdio`` or ``fs`` (either grants them),
    ``path_*`` need ``fs``.
    """
    if function in _ALWAYS:
        return None
    if function in _BY_NAME:
        return _BY_NAME[function]
    if function.startswith("sock_"):
        return "network"
    if function.startswith("fd_"):
        return "stdio|fs"
    if function.startswith("path_"):
        return "fs"
    return "unknown"


@dataclass(frozen=True)
class Capabilities:
    """The capabilities granted to one node type (see the module docstring)."""

    stdio: bool = False
    clock: bool = False
    random: bool = False
    env: Tuple[str, ...] = ()
    #: (host directory, writable)
    dirs: Tuple[Tuple[str, bool], ...] = ()
    names: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, node_type: str, granted: Iterable[str]) -> "Capabilities":
        """Parse the names given at registration; an unknown one is refused."""
        if isinstance(granted, str):
            granted = [granted]
        stdio = clock = random = False
        env: List[str] = []
        dirs: List[Tuple[str, bool]] = []
        names: List[str] = []
        for name in granted:
            if not isinstance(name, str):
                raise RegistryError(f"node type {node_type!r}: capability {name!r} is not a name")
            names.append(name)
            kind, _, arg = name.partition(":")
            if name == "stdio":
                stdio = True
            elif name == "clock":
                clock = True
            elif name == "random":
                random = True
            elif kind == "env" and arg:
                env.append(arg)
            elif kind in ("fs", "fs-rw") and arg:
                if not os.path.isdir(arg):
                    raise RegistryError(f"node type {node_type!r}: capability {name!r} names "
                                        f"{arg!r}, which is no directory")
                dirs.append((os.path.abspath(arg), kind == "fs-rw"))
            elif name == "network":
                raise RegistryError(f"node type {node_type!r}: the network is never granted "
                                    f"to a WASM node")
            else:
                raise RegistryError(
                    f"node type {node_type!r}: unknown capability {name!r} (known: stdio, "
                    f"clock, random, env:NAME, fs:/dir, fs-rw:/dir)")
        return cls(stdio, clock, random, tuple(env), tuple(dirs), tuple(names))

    def grants(self, needed: str) -> bool:
        """True when a function needing ``needed`` may be imported."""
        if needed == "stdio|fs":
            return self.stdio or bool(self.dirs)
        if needed == "fs":
            return bool(self.dirs)
        if needed == "env":
            return bool(self.env)
        return {"clock": self.clock, "random": self.random}.get(needed, False)

    def check_imports(self, node_type: str, module: wasmtime.Module) -> bool:
        """Refuse an import the sandbox does not allow; True when WASI is needed."""
        uses_wasi = False
        for imp in module.imports:
            where = f"{imp.module}.{imp.name}"
            if imp.module not in WASI_MODULES:
                raise RegistryError(
                    f"WASM node {node_type!r} imports {where}, which Sabot does not "
                    f"provide: a node may import only WASI functions, under granted "
                    f"capabilities")
            needed = needed_capability(imp.name or "")
            if needed == "unknown":
                raise RegistryError(f"WASM node {node_type!r} imports {where}, which is "
                                    f"no WASI preview 1 function Sabot knows")
            if needed is not None and not self.grants(needed):
                hint = ("the network is never granted" if needed == "network"
                        else f"grant capability {needed.replace('|', ' or ')!r} to allow it")
                raise RegistryError(f"WASM node {node_type!r} imports {where}, which needs "
                                    f"capability {needed!r}: {hint}")
            uses_wasi = True
        return uses_wasi

    def wasi_config(self, node_type: str) -> wasmtime.WasiConfig:
        """A fresh WASI configuration holding exactly what was granted."""
        config = wasmtime.WasiConfig()
        config.argv = [node_type]
        pairs: Dict[str, str] = {n: os.environ[n] for n in self.env if n in os.environ}
        config.env = list(pairs.items())
        if self.stdio:
            config.inherit_stdout()
            config.inherit_stderr()
        for path, writable in self.dirs:
            config.preopen_dir(path, path, writable)
        return config
