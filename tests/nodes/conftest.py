"""Fixtures for the node and pipeline tests."""
import pytest

# clean_slate: a pipeline with process nodes leaves no worker and no segment.
from tests.bridge.conftest import clean_slate  # noqa: F401
from tests.bridge.helpers import all_nodes_registry


@pytest.fixture
def registry():
    return all_nodes_registry()
