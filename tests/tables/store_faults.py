"""Fault drivers for the store tests: kill -9 mid-apply, a full disk.

The crash loop writes, in every apply ``i``: 500 keys ``a0000..a0499`` set to
``i``, the counter ``n`` set to ``i``, the key ``d<i>`` put and ``d<i-1>``
deleted, with changelog offset ``i`` and source positions ``src/0 = 10*i``
and ``redis = "<i>-0"``. A store whose data and offsets came from the same
apply passes ``check_crash_store``; any mix of two applies fails it.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from sabot.tables.stores import open_store

ROOT = str(Path(__file__).resolve().parents[2])

_CRASH_LOOP = textwrap.dedent("""
    import sys
    from sabot.tables.stores import open_store
    url, limit = sys.argv[1], int(sys.argv[2])
    store = open_store(url, table="crash", partition=0)
    offset = store.changelog_offset()
    i = 0 if offset is None else offset + 1
    print("ready", i, flush=True)
    end = i + limit if limit else None
    while end is None or i < end:
        changes = {b"a%04d" % j: b"%d" % i for j in range(500)}
        changes[b"n"] = b"%d" % i
        changes[b"d%d" % i] = b"1"
        if i:
            changes[b"d%d" % (i - 1)] = None
        store.apply(changes, changelog_offset=i,
                    source_positions={"src/0": 10 * i, "redis": "%d-0" % i})
        if i % 50 == 0:
            print("applied", i, flush=True)
        i += 1
    store.close()
""")


def crash_loop_script() -> str:
    """The child's source: ``python -c <script> <url> <applies, 0: for ever>``."""
    return _CRASH_LOOP


def check_crash_store(url: str) -> int:
    """Assert the store's data is exactly what its offsets say; return the offset."""
    store = open_store(url, table="crash", partition=0)
    try:
        offset = store.changelog_offset()
        assert isinstance(offset, int), offset
        expected = b"%d" % offset
        values = store.get_many([b"a%04d" % j for j in range(500)])
        assert values == [expected] * 500, (offset, sorted(set(map(repr, values))))
        assert store.get(b"n") == expected
        d_keys = [key for key in store.keys() if key.startswith(b"d")]
        assert d_keys == [b"d%d" % offset], (offset, d_keys)
        assert len(store) == 502
        assert store.source_positions() == {"src/0": 10 * offset, "redis": f"{offset}-0"}
        return offset
    finally:
        store.close()


def run_crash_rounds(url: str, rounds: int = 3) -> List[int]:
    """Kill the writing child with SIGKILL at a random moment, ``rounds`` times.

    After each kill the store must check out, and the next child resumes
    from its offset; the offsets must grow (each child wrote something).
    """
    offsets: List[int] = []
    rng = random.Random()
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", _CRASH_LOOP, url, "0"], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("ready"), line
            line = child.stdout.readline()  # it has applied at least once
            assert line.startswith("applied"), line
            time.sleep(rng.uniform(0.0, 0.25))
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
        offset = check_crash_store(url)
        assert not offsets or offset > offsets[-1], (offsets, offset)
        offsets.append(offset)
    return offsets


def check_full_disk_outcome(datadir: Any, outcome: Dict[str, Any], *,
                            full: bool = False) -> None:
    """After a write failed for want of room: a clear error, the last commit whole.

    ``full``: the disk itself was full, so the error must be ``StoreFull``
    (a file size limit leaves free space: LMDB's I/O error is a ``StoreError``).
    """
    assert outcome["type"] in (("StoreFull",) if full else ("StoreError", "StoreFull")), outcome
    assert outcome["table"] == "clicks" and outcome["partition"] == 4
    assert "table 'clicks' partition 4" in outcome["message"]
    assert "cannot write" in outcome["message"] or "cannot allocate" in outcome["message"]
    last = outcome["last"]
    assert last is not None
    store = open_store("lmdb://", table="clicks", partition=4, datadir=datadir)
    try:
        assert store.changelog_offset() == last and store.source_positions() == {"src": last}
        assert len(store) == (last + 1) * 100
        assert store.get(b"k%d-99" % last) == b"x" * 100
        assert store.get(b"k%d-0" % (last + 1)) is None
    finally:
        store.close()


def unshare_prefix() -> Optional[List[str]]:
    """A command prefix that runs in a private mount namespace, or ``None``.

    As root, ``unshare --mount``; as a user, a user namespace mapping them to
    root inside it (``unshare -rm``), where the kernel allows it.
    """
    if shutil.which("unshare") is None:
        return None
    if os.geteuid() == 0:
        prefix = ["unshare", "--mount", "--propagation", "private"]
    else:
        prefix = ["unshare", "--user", "--map-root-user", "--mount"]
    try:
        probe = subprocess.run(prefix + ["true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return prefix if probe.returncode == 0 else None


__all__ = ["ROOT", "crash_loop_script", "check_crash_store", "run_crash_rounds",
           "check_full_disk_outcome", "unshare_prefix"]
