"""Registering a WASM node: compiled once, checked against the ABI and the sandbox.

A module that misses the ABI (an export, a signature, its memory) or that
imports what its capabilities do not grant is refused when it is
registered, and the error names the missing piece.
"""
import os

import pytest
import wasmtime

from sabot.bridge.wasm import WasmModule
from sabot.bridge.wasm_module import DEFAULT_FUEL, DEFAULT_MEMORY_LIMIT
from sabot.exceptions import RegistryError
from sabot.nodes import NodeRegistry

from . import wat

MINIMAL = wat.SUM
#: A sabot_run that hands its input back.
ECHO_RUN = '(func (export "sabot_run") (param i32 i32 i32) (result i32) (local.get 0))'


def register(text, **kwargs):
    reg = NodeRegistry()
    reg.register("node", wasm=text, **kwargs)
    return reg


def without(text, export):
    """``text`` with the export ``export`` no longer exported."""
    marker = f'(export "{export}")'
    assert marker in text
    return text.replace(marker, "", 1)


@pytest.mark.parametrize("export", ["sabot_alloc", "sabot_run"])
def test_a_missing_export_is_refused_by_name(export):
    with pytest.raises(RegistryError, match=f"missing export {export}"):
        register(without(MINIMAL, export))


def test_memory_that_is_not_exported_is_refused():
    with pytest.raises(RegistryError, match="no memory exported as 'memory'"):
        register(without(MINIMAL, "memory"))


def test_a_wrong_signature_is_refused_with_both_signatures():
    text = wat.module('(func (export "sabot_run") (param i64 i32 i32) (result i32) '
                      '(i32.const 0))')
    with pytest.raises(RegistryError, match=r"sabot_run has signature \(i64, i32, i32\) -> "
                                            r"\(i32\), the ABI needs \(i32, i32, i32\) -> "
                                            r"\(i32\)"):
        register(text)


def test_a_wrong_optional_export_is_refused_too():
    text = MINIMAL.replace('(func (export "sabot_error") (result i32)',
                           '(func (export "sabot_error") (result i64) (drop', 1)
    text = text.replace("(global.get $err))", "(global.get $err)) (i64.const 0))", 1)
    with pytest.raises(RegistryError, match=r"sabot_error has signature \(\) -> \(i64\)"):
        register(text)


def test_every_missing_piece_is_named_at_once():
    text = without(without(MINIMAL, "sabot_alloc"), "memory")
    with pytest.raises(RegistryError) as err:
        register(text)
    assert "sabot_alloc" in str(err.value) and "memory" in str(err.value)


def test_an_import_from_outside_wasi_is_refused():
    text = wat.module(ECHO_RUN,
                      imports='(import "env" "host_secret" (func (result i32)))')
    with pytest.raises(RegistryError, match="imports env.host_secret, which Sabot does not "
                                            "provide"):
        register(text)


def test_a_file_open_without_the_fs_capability_is_refused():
    with pytest.raises(RegistryError, match="path_open, which needs capability 'fs'"):
        register(wat.OPEN_FILE)
    # Another capability does not stand in for it.
    with pytest.raises(RegistryError, match="path_open"):
        register(wat.OPEN_FILE, capabilities=["clock", "stdio"])


@pytest.mark.parametrize("function,params,capability", [
    ("clock_time_get", "i32 i64 i32", "clock"), ("random_get", "i32 i32", "random"),
    ("environ_get", "i32 i32", "env")])
def test_each_wasi_function_needs_its_capability(function, params, capability):
    imports = (f'(import "wasi_snapshot_preview1" "{function}" '
               f'(func (param {params}) (result i32)))')
    text = wat.module(ECHO_RUN, imports=imports)
    with pytest.raises(RegistryError, match=f"needs capability '{capability}'"):
        register(text)
    grant = "env:HOME" if capability == "env" else capability
    assert "node" in register(text, capabilities=[grant])


def test_the_network_is_never_granted():
    text = wat.module(ECHO_RUN, imports='(import "wasi_snapshot_preview1" "sock_accept" '
                                  '(func (param i32 i32 i32) (result i32)))')
    with pytest.raises(RegistryError, match="network is never granted"):
        register(text)
    with pytest.raises(RegistryError, match="network is never granted"):
        register(MINIMAL, capabilities=["network"])


def test_unknown_capabilities_and_missing_directories_are_refused(tmp_path):
    with pytest.raises(RegistryError, match="unknown capability 'gpu'"):
        register(MINIMAL, capabilities=["gpu"])
    with pytest.raises(RegistryError, match="no directory"):
        register(MINIMAL, capabilities=[f"fs:{tmp_path / 'absent'}"])


def test_limits_must_be_positive_and_apply_to_modules_only():
    with pytest.raises(RegistryError, match="fuel must be a positive int"):
        register(MINIMAL, fuel=0)
    with pytest.raises(RegistryError, match="wasm= module only"):
        NodeRegistry().register("py", native=object, fuel=10)
    with pytest.raises(RegistryError, match="unknown argument"):
        register(MINIMAL, fuel_limit=10)


def test_a_module_whose_memory_exceeds_its_limit_cannot_register():
    text = MINIMAL.replace('(memory (export "memory") 2)', '(memory (export "memory") 64)')
    with pytest.raises(RegistryError, match="cannot be instantiated within its limits"):
        register(text, memory_limit=1024 * 1024)


def test_sources_path_bytes_and_text_give_the_same_module(tmp_path):
    binary = wasmtime.wat2wasm(MINIMAL)
    path = tmp_path / "sum.wasm"
    path.write_bytes(binary)
    from_path = WasmModule.load("a", str(path))
    from_bytes = WasmModule.load("b", bytes(binary))
    from_text = WasmModule.load("c", MINIMAL)
    from_text_bytes = WasmModule.load("d", MINIMAL.encode())
    assert from_path.wasm == from_bytes.wasm == from_text.wasm == from_text_bytes.wasm
    # Compiled once: the same bytes share one compiled module.
    assert from_path.module is from_bytes.module is from_text.module
    assert from_path.memory_limit == DEFAULT_MEMORY_LIMIT and from_path.fuel == DEFAULT_FUEL


def test_bad_sources_are_refused_clearly(tmp_path):
    with pytest.raises(RegistryError, match="cannot read"):
        WasmModule.load("n", str(tmp_path / "missing.wasm"))
    with pytest.raises(RegistryError, match="invalid WebAssembly text"):
        WasmModule.load("n", "(module (func $broken")
    with pytest.raises(RegistryError, match="neither a binary module"):
        WasmModule.load("n", b"\xff\xfe\x00garbage")
    with pytest.raises(RegistryError, match="does not compile"):
        WasmModule.load("n", b"\0asm\x01\x00\x00\x00\xff")
    with pytest.raises(RegistryError, match="takes a path, bytes or WebAssembly text"):
        WasmModule.load("n", 42)


def test_a_wasm_node_has_the_wasm_runtime_and_a_process_spec_of_its_bytes():
    reg = register(MINIMAL, capabilities=["clock"], fuel=1234)
    assert reg.runtimes("node") == ["wasm"]
    assert reg.runtimes("node", "process") == ["process"]
    spec = reg.process_spec("node")["wasm"]
    assert spec["capabilities"] == ["clock"] and spec["fuel"] == 1234
    again = WasmModule.from_header(spec)
    assert again.wasm == reg.wasm_module("node").wasm
    with pytest.raises(RegistryError, match="no wasm module"):
        reg2 = NodeRegistry()
        reg2.register("py", native=object)
        reg2.wasm_module("py")


def test_the_example_header_documents_the_same_abi():
    """sabot_node.h and wasm_abi.py describe one layout: same type codes."""
    from sabot.bridge.wasm_abi import TYPE_CODES
    header = open(os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                               "wasm_node", "sabot_node.h")).read()
    assert "SABOT_BOOL = 1" in header and max(TYPE_CODES.values()) == 13
    assert "SABOT_BINARY" in header


def test_fd_write_needs_stdio_or_a_directory(tmp_path):
    text = wat.module(ECHO_RUN, imports='(import "wasi_snapshot_preview1" "fd_write" '
                                        '(func (param i32 i32 i32 i32) (result i32)))')
    with pytest.raises(RegistryError, match="fd_write, which needs capability 'stdio\\|fs'"):
        register(text)
    assert "node" in register(text, capabilities=["stdio"])
    assert "node" in register(text, capabilities=[f"fs:{tmp_path}"])


def test_a_module_without_imports_gets_no_wasi_at_all():
    """Even with capabilities granted: WASI is linked only for a module that imports it."""
    module = WasmModule.load("n", MINIMAL, capabilities=["clock", "stdio"])
    assert module.uses_wasi is False
    assert WasmModule.load("o", wat.OPEN_FILE, capabilities=["fs:/tmp"]).uses_wasi
