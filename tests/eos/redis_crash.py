"""The kill -9 loop of the Redis exactly-once crash tests (test_redis_eos*.py)."""
import os
import random
import signal
import subprocess
import time

from tests.channels.redis_streams import pending_count
from tests.helpers import until_sync


def written_to(client, target):
    """How many entries ``target`` holds (0 while it does not exist)."""
    return client.xlen(target) if client.exists(target) else 0


def all_done(client, stream, group):
    """Every entry of ``stream`` delivered to ``group`` and acknowledged."""
    groups = client.xinfo_groups(stream)
    return (bool(groups) and pending_count(client, stream, group) == 0
            and groups[0]["last-delivered-id"] == client.xinfo_stream(stream)["last-generated-id"])


def kill_at_random_moments_then_finish(client, cmd, stream, target, group, max_kills=5):
    """Run the worker ``cmd``, ``kill -9`` it once it wrote to ``target`` (up to
    ``max_kills`` times), then run one that finishes ``stream`` and stops."""
    rng = random.Random(os.getpid())
    kills = 0
    while kills < max_kills and not all_done(client, stream, group):
        before = written_to(client, target)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            until_sync(lambda: written_to(client, target) > before or proc.poll() is not None,
                       timeout=30, what="new outputs")
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(rng.uniform(0.0, 0.25))  # a random moment of the work
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
    assert kills >= 2, "the worker finished before it could be killed twice: slow it down"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        until_sync(lambda: all_done(client, stream, group), timeout=60,
                   what="every entry processed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
