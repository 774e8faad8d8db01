"""``table_route`` and ``topic_route`` across two real ``sabot worker`` processes on tansu.

Two workers of one app share a four-partition topic and a table, each with its
own web port. Every worker announces its URL to the consumer group; a request
for any key on either worker is answered with the right value by the worker
holding the key's partition, forwarded there when it is the other one.
"""
import json
import os
import sys
import subprocess
import urllib.parse

import pytest
from aiokafka.partitioner import DefaultPartitioner

from tests.helpers import http_get, unique
from tests.scale.procs import ROOT, WorkerProc, create_kafka_topic, produce_kafka, wait, workers

pytestmark = pytest.mark.kafka


class RoutingWorker(WorkerProc):
    """A ``sabot worker`` of ``tests/scale/routing_app.py``."""

    def start(self) -> "RoutingWorker":
        args = [sys.executable, "-m", "sabot", "-A", "tests.scale.routing_app", "worker",
                "--web-port", str(self.port), "--worker-id", str(self.worker_id)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **self.env},
                                         stdout=log, stderr=subprocess.STDOUT)
        return self


def get_json(port, path):
    got = http_get(port, path)
    return (None, None) if got is None else (got[0], json.loads(got[1]))


def test_every_key_is_answered_by_its_owner_from_either_worker(kafka_broker, tmp_path):
    topic = unique("routing")
    create_kafka_topic(kafka_broker, topic, 4)
    procs = []
    for name in ("w0", "w1"):
        env = {"ROUTING_BROKER": f"kafka://{kafka_broker}", "ROUTING_TOPIC": topic,
               "ROUTING_APP_ID": topic, "ROUTING_DATADIR": str(tmp_path / name)}
        procs.append(RoutingWorker(env, str(tmp_path / f"{name}.log"), worker_id=name))
    urls = {f"http://127.0.0.1:{p.port}" for p in procs}

    def settled():
        held = []
        for p in procs:
            status, health = get_json(p.port, "/health")
            if status != 200 or set(health["worker"].get("urls", {})) != urls:
                return False
            held.append(sorted(health["worker"]["partitions"].get(topic, [])))
        return all(held) and sorted(sum(held, [])) == [0, 1, 2, 3] and held

    with workers(*procs):
        held = wait(settled, "both workers holding partitions and knowing both URLs", *procs,
                    timeout=90)
        health = get_json(procs[0].port, "/health")[1]["worker"]
        assert health["url"] == f"http://127.0.0.1:{procs[0].port}"
        owner_of = {p: name for name, ps in zip(("w0", "w1"), held) for p in ps}
        keys = [str(i) for i in range(24)]
        produce_kafka(kafka_broker, topic, range(len(keys)))
        partition_of = {k: DefaultPartitioner()(k.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
                        for k in keys}
        assert {owner_of[partition_of[k]] for k in keys} == {"w0", "w1"}

        last = []

        def every_key_right():
            # Polled: the totals arrive as the workers process, and a rebalance under
            # load may answer 503 for a moment.
            for k in keys:
                owner = owner_of[partition_of[k]]
                for p in procs:
                    got = get_json(p.port, f"/total/{urllib.parse.quote(k)}")
                    if got != (200, {"key": k, "total": int(k) + 1, "worker": owner}):
                        last[:] = [p.worker_id, k, got]
                        return False
                    got = get_json(p.port, f"/where/?key={urllib.parse.quote(k)}")
                    if got != (200, {"key": k, "worker": owner}):
                        last[:] = [p.worker_id, k, got]
                        return False
            return True
        try:
            wait(every_key_right, "every key's total and topic route from both workers",
                 *procs, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"last answer {last}\n{exc}") from None
