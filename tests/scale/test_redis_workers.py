"""Many ``sabot worker`` processes of one app on one Redis stream (real redis-server, real processes).

The workers read in one consumer group, each under its own stable consumer
name (``--worker-id``): every entry is processed at least once, the entries
a worker killed with ``kill -9`` left pending are claimed by the others after
``redis_claim_idle_ms``, a worker restarted under the same name reads its own
pending entries first, and a rolling restart loses nothing.
"""
import json

import pytest

from tests.helpers import unique
from tests.scale.procs import Feeder, WorkerProc, all_ids, processed, produce_redis, wait, workers


def env_for(redis_server, stream, outdir, **extra):
    env = {"SCALE_BROKER": redis_server.url, "SCALE_TOPIC": stream, "SCALE_APP_ID": stream,
           "SCALE_OUTDIR": str(outdir)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def consumers(redis_server, stream):
    """Consumer name -> pending entries, as the server sees the group."""
    client = redis_server.client()
    return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]: c["pending"]
            for c in client.xinfo_consumers(stream, stream)}


def pending(redis_server, stream):
    return redis_server.client().xpending(stream, stream)["pending"]


def ready(procs):
    """Every worker answers /health."""
    try:
        return all(p.health() is not None for p in procs)
    except (OSError, ValueError):
        return False


@pytest.mark.parametrize("n", [2, 3])
def test_workers_share_the_stream_and_process_every_entry(redis_server, tmp_path, n):
    stream = unique("scale")
    env = env_for(redis_server, stream, tmp_path, SCALE_SLOW=0.001)
    procs = [WorkerProc(env, str(tmp_path / f"w{i}.log"), worker_id=f"w{i}") for i in range(n)]
    with workers(*procs):
        wait(lambda: ready(procs), "every worker serving /health", *procs)
        for i, p in enumerate(procs):
            assert p.health()["worker"]["consumers"] == [{"transport": "redis", "consumer": f"w{i}"}]
        total = 2000
        produce_redis(redis_server, stream, range(total))
        wait(lambda: all_ids(tmp_path) == set(range(total)), "every entry processed", *procs)
        wait(lambda: pending(redis_server, stream) == 0, "every entry acknowledged", *procs)
        for p in procs:
            assert p.stop() == 0, p.log()
    files = processed(tmp_path)
    assert len([ids for ids in files.values() if ids]) == n, files.keys()
    assert sum(len(ids) for ids in files.values()) == total  # nobody died: none twice
    assert set(consumers(redis_server, stream)) == {f"w{i}" for i in range(n)}


def test_a_worker_killed_with_kill_9_is_claimed_by_the_other(redis_server, tmp_path):
    stream = unique("scale")
    env = env_for(redis_server, stream, tmp_path, SCALE_SLOW=0.002, SCALE_CLAIM_MS=1000)
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    with workers(a, b):
        wait(lambda: ready([a, b]), "both workers serving /health", a, b)
        total = 3000
        produce_redis(redis_server, stream, range(total))
        wait(lambda: consumers(redis_server, stream).get("a", 0) > 0, "a holding entries", a, b)
        a.kill()
        assert consumers(redis_server, stream)["a"] > 0  # left pending by the kill
        wait(lambda: all_ids(tmp_path) == set(range(total)), "every entry processed", b)
        wait(lambda: pending(redis_server, stream) == 0, "every entry acknowledged", b)
        assert consumers(redis_server, stream)["a"] == 0  # b claimed them
        assert b.stop() == 0, b.log()


def test_a_restarted_worker_reads_its_own_pending_entries_first(redis_server, tmp_path):
    stream = unique("scale")
    # Nobody claims within the test: what a left pending only a itself can read again.
    env = env_for(redis_server, stream, tmp_path, SCALE_SLOW=0.002, SCALE_CLAIM_MS=600000)
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    with workers(a, b):
        wait(lambda: ready([a, b]), "both workers serving /health", a, b)
        total = 3000
        produce_redis(redis_server, stream, range(total))
        wait(lambda: consumers(redis_server, stream).get("a", 0) > 0, "a holding entries", a, b)
        a.kill()
        left = consumers(redis_server, stream)["a"]
        assert left > 0
        a.start()  # the same --worker-id: the same consumer name
        wait(lambda: all_ids(tmp_path) == set(range(total)), "every entry processed", a, b)
        wait(lambda: pending(redis_server, stream) == 0, "every entry acknowledged", a, b)
        assert set(consumers(redis_server, stream)) == {"a", "b"}  # no third consumer
        for p in (a, b):
            assert p.stop() == 0, p.log()


def test_a_rolling_restart_loses_nothing(redis_server, tmp_path):
    stream = unique("scale")
    env = env_for(redis_server, stream, tmp_path)
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    client = redis_server.client()

    def send(ids):
        pipe = client.pipeline(transaction=False)
        for i in ids:
            pipe.xadd(stream, {"value": json.dumps({"id": i}).encode()})
        pipe.execute()

    with workers(a, b):
        wait(lambda: ready([a, b]), "both workers serving /health", a, b)
        with Feeder(send, chunk=20, interval=0.05) as feeder:
            for p in (a, b):
                seen = len(all_ids(tmp_path))
                assert p.stop() == 0, p.log()
                p.start()
                wait(lambda: ready([p]), "the restarted worker serving /health", p)
                wait(lambda: len(all_ids(tmp_path)) > seen + 100, "values flowing again", a, b)
            total = feeder.stop()
        wait(lambda: all_ids(tmp_path) >= set(range(total)), "every entry processed", a, b)
        wait(lambda: pending(redis_server, stream) == 0, "every entry acknowledged", a, b)
        for p in (a, b):
            assert p.stop() == 0, p.log()
    assert all_ids(tmp_path) == set(range(total))
    # Graceful: a stopping worker acknowledges what it read; nothing twice.
    done = [i for ids in processed(tmp_path).values() for i in ids]
    assert len(done) == len(set(done)), f"{len(done) - len(set(done))} entries processed twice"
