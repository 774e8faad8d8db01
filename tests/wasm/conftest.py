"""Fixtures for the WASM executor tests: a registry of the WAT nodes, a bridge."""
import pytest

from sabot.bridge.wasm import WasmBridge
from sabot.nodes import NodeRegistry

# clean_slate: a test with process nodes leaves no worker and no segment.
from tests.bridge.conftest import clean_slate  # noqa: F401

from . import wat

#: Small limits, so that the sandbox tests fail fast.
MEMORY_LIMIT = 8 * 1024 * 1024
FUEL = 50_000_000

NODES = {"sum": wat.SUM, "filter_positive": wat.FILTER_POSITIVE,
         "string_length": wat.STRING_LENGTH, "params_echo": wat.PARAMS_ECHO,
         "fail_on_13": wat.FAIL_ON_13, "loop": wat.LOOP, "bomb": wat.BOMB,
         "out_of_bounds": wat.OUT_OF_BOUNDS, "bad_pointer": wat.BAD_POINTER}


def wasm_registry():
    """Every WAT node of tests/wasm/wat.py, registered under its name."""
    registry = NodeRegistry()
    for name, text in NODES.items():
        registry.register(name, wasm=text, memory_limit=MEMORY_LIMIT, fuel=FUEL)
    return registry


@pytest.fixture
def registry():
    return wasm_registry()


@pytest.fixture
async def bridge(registry):
    bridge = WasmBridge(registry)
    yield bridge
    await bridge.close()
