"""Fixtures of the exactly-once tests (the servers themselves are in tests/servers/)."""
import pytest

from tests.helpers import unique


@pytest.fixture
def stream():
    """A fresh Redis stream name per test (the session server is shared)."""
    return unique("s")
