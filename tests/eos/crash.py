"""The kill -9 loop of the exactly-once crash tests (tests/eos/test_*_eos*.py)."""
import os
import random
import signal
import subprocess
import time

from tests.channels.redis_streams import pending_count
from tests.helpers import until_sync


def kill_at_random_moments_then_finish(cmd, written, all_done, *, max_kills=5, pause=0.25,
                                       timeout=30, finish_timeout=60, explain=None):
    """Run the worker ``cmd``; once ``written()`` grew, ``kill -9`` it at a random
    moment (up to ``max_kills`` times, until ``all_done()``); then run one
    that finishes and stops on SIGTERM. ``explain(stderr)`` adds to the
    failure when the last worker does not finish."""
    rng = random.Random(os.getpid())
    kills = 0
    while kills < max_kills and not all_done():
        before = written()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            until_sync(lambda: written() > before or proc.poll() is not None,
                       timeout=timeout, what="new outputs")
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(rng.uniform(0.0, pause))  # a random moment of the work
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
    assert kills >= 2, "the worker finished before it could be killed twice: slow it down"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            until_sync(all_done, timeout=finish_timeout, interval=0.2,
                       what="every input processed")
        except AssertionError as exc:
            if explain is None:
                raise
            proc.kill()
            raise AssertionError(f"{exc}; {explain(proc.stderr.read().decode()[-2000:])}") \
                from None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def redis_written(client, target):
    """How many entries ``target`` holds (0 while it does not exist)."""
    return client.xlen(target) if client.exists(target) else 0


def redis_all_done(client, stream, group):
    """Every entry of ``stream`` delivered to ``group`` and acknowledged."""
    groups = client.xinfo_groups(stream)
    return (bool(groups) and pending_count(client, stream, group) == 0
            and groups[0]["last-delivered-id"] == client.xinfo_stream(stream)["last-generated-id"])


def redis_kill_then_finish(client, cmd, stream, target, group):
    """``kill_at_random_moments_then_finish`` for a Redis stream worker."""
    kill_at_random_moments_then_finish(cmd, lambda: redis_written(client, target),
                                       lambda: redis_all_done(client, stream, group))
