"""Fixtures for the bridge tests: registries, bridges, /dev/shm bookkeeping."""
import os

import pytest

from sabot.bridge import NativeBridge, ProcessBridge
from sabot.bridge.shm import segment_prefix

from .helpers import all_nodes_registry


def shm_segments():
    """Names of this test process's bridge segments now in /dev/shm.

    Only ours (named after our pid): other programs, and other test runs on
    the same machine, may use /dev/shm at the same time.
    """
    if not os.path.isdir("/dev/shm"):
        return set()
    prefix = segment_prefix(os.getpid())
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def pid_alive(pid):
    """True while a process with ``pid`` exists (and is not a zombie we reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def registry():
    return all_nodes_registry()


@pytest.fixture
def native_bridge(registry):
    return NativeBridge(registry)


@pytest.fixture
async def process_bridge(registry):
    before = shm_segments()
    bridge = ProcessBridge(registry)
    yield bridge
    pids = bridge.worker_pids()
    await bridge.close()
    assert not [p for p in pids if pid_alive(p)], "worker processes left running"
    assert shm_segments() <= before, "shared-memory segments left in /dev/shm"
