"""Many ``sabot worker`` processes of one app on one Kafka topic (real tansu, real processes).

Every worker is a member of the app's consumer group: the topic's four
partitions are split between them, every value is processed at least once,
a worker killed with ``kill -9`` has its partitions taken over, a rolling
restart loses nothing, and a worker frozen past the session timeout rejoins.
"""
import json
import os
import signal
import time

import pytest

from tests.helpers import http_get, unique
from tests.scale.procs import (Feeder, KafkaSender, WorkerProc, all_ids, create_kafka_topic,
                               processed, produce_kafka, wait, workers)

SESSION = 3.0


def env_for(kafka_broker, topic, outdir, **extra):
    env = {"SCALE_BROKER": f"kafka://{kafka_broker}", "SCALE_TOPIC": topic,
           "SCALE_APP_ID": topic, "SCALE_OUTDIR": str(outdir), "SCALE_SESSION": str(SESSION)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def split(procs, topic):
    """The partitions each worker holds, by its /health (None: not answering yet)."""
    out = []
    for p in procs:
        try:
            out.append(sorted(p.partitions(topic)))
        except (OSError, ValueError):
            out.append([])
    return out


def shared(procs, topic, partitions=4):
    """True once every worker holds some partitions and together they hold each once."""
    held = split(procs, topic)
    flat = sorted(x for h in held for x in h)
    return all(held) and flat == list(range(partitions))


@pytest.mark.parametrize("n", [2, 3])
def test_workers_share_the_partitions_and_process_every_value(kafka_broker, tmp_path, n):
    topic = unique("scale")
    create_kafka_topic(kafka_broker, topic)
    env = env_for(kafka_broker, topic, tmp_path, SCALE_SLOW=0.001)
    procs = [WorkerProc(env, str(tmp_path / f"w{i}.log"), worker_id=f"w{i}") for i in range(n)]
    with workers(*procs):
        wait(lambda: shared(procs, topic), f"{n} workers sharing 4 partitions", *procs)
        assert sorted(len(h) for h in split(procs, topic)) == ([2, 2] if n == 2 else [1, 1, 2])
        total = 2000
        produce_kafka(kafka_broker, topic, range(total))
        wait(lambda: all_ids(tmp_path) == set(range(total)), "every value processed", *procs)
        for p in procs:
            held = p.partitions(topic)
            status = json.loads(http_get(p.port, "/status.json")[1])
            assert status["worker"]["partitions"] == {topic: held}
            assert status["worker"]["worker_id"] == p.worker_id

            def lag_shown():
                text = http_get(p.port, "/metrics")[1]
                return all(f'sabot_consumer_partition_lag{{partition="{x}",topic="{topic}"}}'
                           in text for x in held)
            wait(lag_shown, "the lag of each partition held in /metrics", p)
        for p in procs:
            assert p.stop() == 0, p.log()
    files = processed(tmp_path)
    assert len([ids for ids in files.values() if ids]) == n, files.keys()
    # A graceful stop commits what it processed; nothing was rebalanced mid-stream.
    assert sum(len(ids) for ids in files.values()) == total


@pytest.mark.slow
def test_a_worker_killed_with_kill_9_is_taken_over(kafka_broker, tmp_path):
    topic = unique("scale")
    create_kafka_topic(kafka_broker, topic)
    env = env_for(kafka_broker, topic, tmp_path, SCALE_SLOW=0.002)
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    with workers(a, b):
        wait(lambda: shared([a, b], topic), "two workers sharing 4 partitions", a, b)
        total = 3000
        produce_kafka(kafka_broker, topic, range(total))

        def a_busy():
            return sum(len(ids) for name, ids in processed(tmp_path).items()
                       if name.startswith("a-")) >= 200
        wait(a_busy, "worker a processing", a, b)
        a.kill()  # SIGKILL: no revoke, no commit; b waits for the session timeout
        killed = time.monotonic()
        wait(lambda: split([b], topic) == [[0, 1, 2, 3]], "b holding every partition", b)
        taken_over = time.monotonic() - killed
        wait(lambda: all_ids(tmp_path) == set(range(total)), "every value processed", b)
        assert b.stop() == 0, b.log()
    # At least once: what a processed and did not commit came again at b.
    assert all_ids(tmp_path) == set(range(total))
    print(f"taken over {taken_over:.1f}s after kill -9 (session timeout {SESSION}s)")


@pytest.mark.slow
def test_a_rolling_restart_loses_nothing(kafka_broker, tmp_path):
    topic = unique("scale")
    create_kafka_topic(kafka_broker, topic)
    env = env_for(kafka_broker, topic, tmp_path)
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    sender = KafkaSender(kafka_broker, topic)
    with workers(a, b):
        wait(lambda: shared([a, b], topic), "two workers sharing 4 partitions", a, b)
        with Feeder(sender, chunk=20, interval=0.05) as feeder:
            for p in (a, b):
                assert p.stop() == 0, p.log()
                wait(lambda: split([q for q in (a, b) if q is not p], topic) == [[0, 1, 2, 3]],
                     "the other worker holding every partition", a if p is b else b)
                p.start()
                wait(lambda: shared([a, b], topic), "both workers sharing again", a, b)
            total = feeder.stop()
        sender.close()
        wait(lambda: all_ids(tmp_path) >= set(range(total)), "every value processed", a, b)
        for p in (a, b):
            assert p.stop() == 0, p.log()
    assert all_ids(tmp_path) == set(range(total))
    # Graceful: a leaving worker commits what it processed on revoke, and the
    # next owner starts there, so a join or a leave duplicates nothing (Faust #217).
    done = [i for ids in processed(tmp_path).values() for i in ids]
    assert len(done) == len(set(done)), f"{len(done) - len(set(done))} values processed twice"


@pytest.mark.slow
def test_a_worker_frozen_past_the_session_timeout_rejoins(kafka_broker, tmp_path):
    """SIGSTOP: cut off from the broker longer than the session timeout, then SIGCONT."""
    topic = unique("scale")
    create_kafka_topic(kafka_broker, topic)
    env = env_for(kafka_broker, topic, tmp_path)
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    sender = KafkaSender(kafka_broker, topic)
    with workers(a, b):
        wait(lambda: shared([a, b], topic), "two workers sharing 4 partitions", a, b)
        with Feeder(sender, chunk=20, interval=0.05) as feeder:
            a.signal(signal.SIGSTOP)
            try:
                wait(lambda: split([b], topic) == [[0, 1, 2, 3]],
                     "b holding every partition while a is frozen", b)
                time.sleep(1.0)
            finally:
                a.signal(signal.SIGCONT)
            wait(lambda: shared([a, b], topic), "a back in the group", a, b)

            def by_a():
                return sum(len(ids) for name, ids in processed(tmp_path).items()
                           if name.startswith("a-"))
            before = by_a()
            wait(lambda: by_a() > before + 50, "a processing again after it rejoined", a, b)
            total = feeder.stop()
        sender.close()
        wait(lambda: all_ids(tmp_path) >= set(range(total)), "every value processed", a, b)
        for p in (a, b):
            assert p.stop() == 0, p.log()
    assert all_ids(tmp_path) == set(range(total))


def last_counts(outdir):
    """The highest count each key reached, over every worker's ``.counts`` file."""
    out = {}
    for name in os.listdir(outdir):
        if name.endswith(".counts"):
            for line in open(os.path.join(outdir, name), encoding="utf-8"):
                key, n = line.split()
                out[key] = max(out.get(key, 0), int(n))
    return out


@pytest.mark.slow
def test_a_table_moves_with_its_partitions_to_the_worker_that_takes_over(kafka_broker, tmp_path):
    """kill -9 of one of two workers counting in a table: the other recovers its partitions."""
    topic = unique("scale")
    create_kafka_topic(kafka_broker, topic)
    outdir = tmp_path / "out"
    outdir.mkdir()
    env = env_for(kafka_broker, topic, outdir, SCALE_SLOW=0.002, SCALE_TABLE=1,
                  SCALE_DATADIR=tmp_path / "data")
    a = WorkerProc(env, str(tmp_path / "a.log"), worker_id="a")
    b = WorkerProc(env, str(tmp_path / "b.log"), worker_id="b")
    keys, per_key = 40, 50
    total = keys * per_key
    with workers(a, b):
        wait(lambda: shared([a, b], topic), "two workers sharing 4 partitions", a, b)
        produce_keyed(kafka_broker, topic, total, keys)

        def a_counted():
            return sum(1 for name in os.listdir(outdir)
                       if name.startswith("a-") and name.endswith(".counts")
                       and os.path.getsize(outdir / name) > 2000)
        wait(a_counted, "a counting", a, b)
        a.kill()
        wait(lambda: split([b], topic) == [[0, 1, 2, 3]], "b holding every partition", b)
        wait(lambda: all_ids(outdir) == set(range(total)), "every value processed", b)
        wait(lambda: len(last_counts(outdir)) == keys
             and min(last_counts(outdir).values()) >= per_key, "every key counted", b)
        assert b.stop() == 0, b.log()
    # b counted on from the state a had committed: each value counted once.
    assert last_counts(outdir) == {str(k): per_key for k in range(keys)}


def produce_keyed(broker, topic, total, keys):
    """Values 0 .. total-1, value i keyed by ``i % keys``."""
    import asyncio
    import json
    from aiokafka import AIOKafkaProducer

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        try:
            for i in range(total):
                await producer.send(topic, json.dumps({"id": i}).encode(),
                                    key=str(i % keys).encode())
            await producer.flush()
        finally:
            await producer.stop()
    asyncio.run(go())
