"""Every example under examples/ runs as its README says, so none can rot.

An example either finishes by itself (exit 0) or runs as a worker until every
agent has processed something (read from its ``/metrics``), then gets SIGTERM
and must exit 0. Examples that need Kafka or Redis get the URL of the test
servers through the environment variables they document.
"""
import glob
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import http_get, until_sync
from tests.servers import free_port
from tests.test_worker import read

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "examples", "*.py")))


def wordcount_env(request):
    return {"SABOT_WORDCOUNT_REPEAT": "20"}


def kafka_fraud_env(request):
    broker = request.getfixturevalue("kafka_broker")
    return {"SABOT_BROKER": f"kafka://{broker}", "SABOT_DEMO_TRANSACTIONS": "200"}


def redis_pipeline_env(request):
    server = request.getfixturevalue("redis_server")
    return {"SABOT_REDIS_URL": server.url, "SABOT_DEMO_ORDERS": "200"}


#: example -> (environment, finishes by itself). A new example must be added here.
HOW_TO_RUN = {
    "arrow_windows.py": (lambda request: {"SABOT_DEMO_VIEWS": "50000"}, True),
    "wordcount.py": (wordcount_env, True),
    "kafka_fraud.py": (kafka_fraud_env, False),
    "redis_pipeline.py": (redis_pipeline_env, False),
    "process_offload.py": (lambda request: {}, True),
    "concurrent_lookups.py": (lambda request: {"SABOT_DEMO_ORDERS": "2000"}, True),
    "enrichment_join.py": (lambda request: {"SABOT_DEMO_ORDERS": "20000"}, True),
    "windowed_fraud.py": (lambda request: {"SABOT_DEMO_TRANSACTIONS": "2000"}, True),
    "web_views.py": (lambda request: {"SABOT_DEMO_SENTENCES": "200"}, False),
    "records.py": (lambda request: {"SABOT_DEMO_ORDERS": "500"}, True),
    "page_views.py": (lambda request: {"SABOT_DEMO_VIEWS": "5000"}, True),
    "faust_withdrawals.py": (lambda request: {**kafka_fraud_env(request),
                                              "SABOT_DEMO_WITHDRAWALS": "300"}, False),
}


def every_agent_worked(text):
    counts = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("sabot_agent_events_in_total{")]
    return bool(counts) and all(n > 0 for n in counts)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, request, tmp_path):
    assert example in HOW_TO_RUN, f"examples/{example} is not run by any test: add it to HOW_TO_RUN"
    make_env, finite = HOW_TO_RUN[example]
    env = {**os.environ, **make_env(request)}
    port = free_port()
    log_path = tmp_path / "example.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", example), "worker", "-l", "info",
             "--web-port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if finite:
            assert proc.wait(60) == 0, read(log_path)
            assert "processed in" in read(log_path)
            return
        def every_agent_worked_yet():
            assert proc.poll() is None, read(log_path)
            got = http_get(port, "/metrics")
            return got and every_agent_worked(got[1])
        until_sync(every_agent_worked_yet, 60, lambda: f"agents idle:\n{read(log_path)}",
                   interval=0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
