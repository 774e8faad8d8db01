"""examples/faust_withdrawals.py, a Faust-style app, against the real Kafka broker.

Its input comes from its own ``@app.command``; the worker counts it per
country through ``group_by`` into a table, answers RPC and serves a page.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import http_get, until_sync
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "faust_withdrawals.py")

pytestmark = pytest.mark.kafka


def test_faust_style_app_counts_what_its_command_produced(kafka_broker, tmp_path):
    env = {**os.environ, "SABOT_BROKER": f"kafka://{kafka_broker}", "PYTHONPATH": ROOT,
           "SABOT_DEMO_WITHDRAWALS": "100"}
    produced = subprocess.run([sys.executable, EXAMPLE, "produce", "--count", "200"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr
    assert "sent 200 withdrawals" in produced.stdout
    port = free_port()
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, EXAMPLE, "worker", "-l", "info",
                                 "--web-port", str(port)], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def counted():
            assert proc.poll() is None, log_path.read_text()
            got = http_get(port, "/countries/")
            if not got or got[0] != 200:
                return False
            return sum(json.loads(got[1])["countries"].values()) >= 300

        until_sync(counted, 90, lambda: f"not all counted:\n{log_path.read_text()}", interval=0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert "fee for 250.0: 2.5" in log
    assert "heartbeat service started" in log
    assert "Traceback" not in log
    # Exactly the 300 values: nothing counted twice on a clean run.
