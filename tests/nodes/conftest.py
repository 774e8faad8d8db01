"""Fixtures for the node and pipeline tests."""
import pytest

from tests.bridge.helpers import all_nodes_registry


@pytest.fixture
def registry():
    return all_nodes_registry()
