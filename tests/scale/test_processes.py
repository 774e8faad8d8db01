"""``sabot worker --processes N`` and its supervisor, with real processes.

The Kafka cases run the scale app in two children of one parent: both are
members of the group and consume, a child killed with ``kill -9`` is started
again and nothing is lost, and one SIGTERM to the parent stops them all
gracefully with exit code 0. The supervisor cases run it over small Python
children: a child that crashes in a loop is backed off and reported, and a
second signal kills children that ignore the first.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import unique, until_sync
from tests.scale.procs import (ROOT, WorkerProc, all_ids, create_kafka_topic, processed,
                               produce_kafka, wait, workers)
from tests.scale.test_kafka_workers import SESSION


def child_health(parent, index):
    try:
        return parent.health(index)
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_two_processes_share_the_partitions_and_a_killed_child_comes_back(kafka_broker, tmp_path):
    topic = unique("procs")
    create_kafka_topic(kafka_broker, topic)
    env = {"SCALE_BROKER": f"kafka://{kafka_broker}", "SCALE_TOPIC": topic,
           "SCALE_APP_ID": topic, "SCALE_OUTDIR": str(tmp_path), "SCALE_SESSION": str(SESSION),
           "SCALE_SLOW": "0.002"}
    parent = WorkerProc(env, str(tmp_path / "parent.log"), worker_id="node", processes=2)

    def held():
        out = []
        for i in range(2):
            health = child_health(parent, i)
            out.append(sorted(health["worker"]["partitions"].get(topic, [])) if health else [])
        return out

    def shared():
        h = held()
        return all(h) and sorted(x for p in h for x in p) == [0, 1, 2, 3]

    with workers(parent):
        wait(shared, "two children sharing 4 partitions", parent)
        ids = [child_health(parent, i)["worker"]["worker_id"] for i in range(2)]
        assert ids == ["node-0", "node-1"]
        total = 3000
        produce_kafka(kafka_broker, topic, range(total))

        def both_consume():
            files = processed(tmp_path)
            return all(any(n.startswith(f"node-{i}-") and v for n, v in files.items())
                       for i in range(2))
        wait(both_consume, "both children consuming", parent)
        victim = child_health(parent, 0)["worker"]["pid"]
        os.kill(victim, signal.SIGKILL)

        def restarted():
            health = child_health(parent, 0)
            return health is not None and health["worker"]["pid"] != victim
        wait(restarted, "child 0 started again", parent)
        assert "worker 0 (pid %d) ended with killed by SIGKILL" % victim in parent.log()
        wait(lambda: all_ids(tmp_path) == set(range(total)), "every value processed", parent)
        children = [child_health(parent, i)["worker"]["pid"] for i in range(2)]
        began = time.monotonic()
        assert parent.stop() == 0, parent.log()
        stopped_in = time.monotonic() - began
    for pid in children:  # reaped by the parent: gone
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    log = parent.log()
    assert log.count("stopping (graceful") == 2, log  # each child stopped gracefully
    assert "all 2 worker processes stopped" in log
    assert all_ids(tmp_path) == set(range(total))
    print(f"--processes 2 stopped in {stopped_in:.1f}s")


SUPERVISE = textwrap.dedent("""
    import logging, sys
    from sabot.supervisor import Supervisor
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    child = sys.argv[1]
    sup = Supervisor(lambda i: [sys.executable, "-c", child], 2, backoff_initial=0.2,
                     backoff_max=1.6, stable_after=5.0, stop_timeout=10.0)
    sys.exit(sup.run())
""")


def supervise(child_code, log_path):
    log = open(log_path, "wb")
    try:
        return subprocess.Popen([sys.executable, "-c", SUPERVISE, child_code], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def test_a_child_crashing_in_a_loop_is_backed_off_and_reported(tmp_path):
    log = tmp_path / "sup.log"
    proc = supervise("import sys; sys.exit(3)", log)
    try:
        until_sync(lambda: log.read_text().count("crashes in a loop") >= 2, 20,
                   what=lambda: log.read_text())
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text  # the children failed
    starts = text.count("worker 0 started")
    # Backed off (0.2, 0.4, 0.8, 1.6, 1.6 s ...), not restarted in a tight loop.
    assert 3 <= starts <= 10, text
    assert "worker 0 crashes in a loop: 3 exits in a row" in text
    assert "ended with exit code 3" in text


def test_a_second_signal_kills_children_that_ignore_the_first(tmp_path):
    log = tmp_path / "sup.log"
    stubborn = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    proc = supervise(stubborn, log)
    try:
        until_sync(lambda: log.read_text().count("ready") == 2, 20, what=lambda: log.read_text())
        proc.send_signal(signal.SIGTERM)
        until_sync(lambda: "stopping 2 worker processes gracefully" in log.read_text(), 10,
                   what=lambda: log.read_text())
        time.sleep(0.5)
        assert proc.poll() is None  # the children ignore the stop; the parent waits
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text
    assert "second SIGTERM: killing the worker processes" in text
    assert "worker 0 ended with killed by SIGKILL" in text


def test_processes_setting_is_checked():
    import sabot
    from sabot.exceptions import ConfigurationError

    assert sabot.App(unique("p"), worker_processes=3).conf.worker_processes == 3
    with pytest.raises(ConfigurationError, match="worker_processes"):
        sabot.App(unique("p"), worker_processes=0)
    with pytest.raises(ConfigurationError, match="worker_id"):
        sabot.App(unique("p"), worker_id="")


def test_children_stop_when_the_parent_is_killed(redis_server, tmp_path):
    stream = unique("procs")
    env = {"SCALE_BROKER": redis_server.url, "SCALE_TOPIC": stream, "SCALE_APP_ID": stream,
           "SCALE_OUTDIR": str(tmp_path)}
    parent = WorkerProc(env, str(tmp_path / "parent.log"), worker_id="node", processes=2)
    with workers(parent):
        wait(lambda: all(child_health(parent, i) for i in range(2)), "both children up", parent)
        children = [child_health(parent, i)["worker"]["pid"] for i in range(2)]
        parent.kill()

        def gone():
            return not any(os.path.exists(f"/proc/{pid}") for pid in children)
        until_sync(gone, 20, what=lambda: parent.log())
    assert parent.log().count("supervisor (pid %d) is gone: stopping" % parent.pid) == 2


def test_an_empty_worker_id_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "sabot", "-A", "tests.scale.scale_app", "worker",
                           "--worker-id", " "], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--worker-id" in proc.stderr and "worker_id" in proc.stderr


def test_children_ended_by_the_forwarded_signal_itself_stopped_cleanly(tmp_path):
    """A child stopped before it handles signals (still importing) dies of SIGTERM: exit 0."""
    log = tmp_path / "sup.log"
    proc = supervise("import time; print('ready', flush=True); time.sleep(60)", log)
    try:
        until_sync(lambda: log.read_text().count("ready") == 2, 20, what=lambda: log.read_text())
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log.read_text()
    assert "all 2 worker processes stopped" in log.read_text()
