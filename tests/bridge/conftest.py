"""Fixtures for the bridge tests: registries, bridges, /dev/shm bookkeeping."""
import multiprocessing
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


def pid_running(pid):
    """True while ``pid`` runs: a zombie (dead, not yet reaped) does not."""
    if not pid_alive(pid):
        return False
    # A zombie still answers kill(0): it is dead but not reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _proc_children():
    """(pid, state, cmdline) of every process whose parent is us, from /proc."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        if ppid == me:
            out.append((int(entry), state, cmd))
    return out


def worker_children():
    """Our child processes other than multiprocessing's resource tracker
    (zombies included: an unreaped dead worker is a leak too)."""
    return [c for c in _proc_children() if "resource_tracker" not in c[2]]


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


@pytest.fixture
def clean_slate():
    """Asserts that the test leaves no worker child and no segment behind."""
    before_children = {c[0] for c in worker_children()}
    before_segments = shm_segments()
    yield
    leftover = [c for c in worker_children() if c[0] not in before_children]
    assert not leftover, f"child processes left behind: {leftover}"
    assert not [p for p in multiprocessing.active_children()
                if p.pid not in before_children], "multiprocessing children left"
    assert shm_segments() <= before_segments, (
        f"segments left in /dev/shm: {shm_segments() - before_segments}")
