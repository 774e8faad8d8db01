"""NodeRegistry: factories per runtime, fallback order, errors."""
import pytest

from sabot.exceptions import RegistryError
from sabot.nodes import NodeRegistry
from sabot.nodes.registry import import_path, resolve_path
from tests.bridge import helpers


def test_register_by_class_or_path_and_create():
    reg = NodeRegistry()
    reg.register("a", native=helpers.Scale)
    reg.register("b", native="tests.bridge.helpers:Scale")
    assert isinstance(reg.create("a", {"factor": 3}), helpers.Scale)
    assert reg.create("b", {"factor": 3}).params == {"factor": 3}
    assert reg.node_types() == ["a", "b"] and "a" in reg and "zzz" not in reg


def test_registering_a_type_twice_is_an_error():
    reg = NodeRegistry()
    reg.register("a", native=helpers.Scale)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", process=helpers.Scale)


def test_unknown_type_and_missing_factory_are_errors():
    reg = NodeRegistry()
    with pytest.raises(RegistryError, match="unknown node type"):
        reg.create("nope")
    with pytest.raises(RegistryError, match="at least one factory"):
        reg.register("empty")
    with pytest.raises(RegistryError, match="not importable"):
        reg.register("closure", process=lambda params: None)


def test_runtimes_native_first_then_fallback():
    reg = NodeRegistry()
    reg.register("both", native=helpers.Scale, process="tests.bridge.helpers:Scale")
    reg.register("native_only", native=helpers.Scale)
    reg.register("process_only", process="tests.bridge.helpers:Scale")
    assert reg.runtimes("both") == ["native", "process"]
    assert reg.runtimes("native_only") == ["native"]
    assert reg.runtimes("process_only") == ["process"]
    # Any importable factory may be run in a process on request.
    assert reg.runtimes("native_only", "process") == ["process"]
    assert reg.factory_path("native_only") == "tests.bridge.helpers:Scale"
    with pytest.raises(RegistryError, match="no native factory"):
        reg.runtimes("process_only", "native")
    with pytest.raises(RegistryError, match="unknown runtime"):
        reg.runtimes("both", "gpu")
    # wasm is a runtime (tests/wasm), but only for a node registered with a module.
    with pytest.raises(RegistryError, match="no wasm factory"):
        reg.runtimes("both", "wasm")


def test_a_factory_must_build_something_that_executes():
    reg = NodeRegistry()
    reg.register("bad", native=helpers.not_a_node)
    with pytest.raises(RegistryError, match="no execute"):
        reg.create("bad")


def test_import_paths_round_trip():
    assert import_path(helpers.Scale) == "tests.bridge.helpers:Scale"
    assert resolve_path("tests.bridge.helpers:Scale") is helpers.Scale
    assert resolve_path("tests.bridge.helpers.Scale") is helpers.Scale
    with pytest.raises(RegistryError, match="cannot import"):
        resolve_path("tests.bridge.helpers:Nope")
