"""Real ``sabot worker`` processes: graceful stop, status, /metrics and /health.

Each test runs ``python -m sabot ... worker`` on ``tests/worker_app.py`` in a
subprocess and talks to it the way an operator would: signals and HTTP.
Against Kafka and Redis, a SIGTERM mid-stream must exit 0 within
``shutdown_timeout`` and a restart must process nothing twice.
"""
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

import sabot
from sabot.web import MetricsServer, WorkerMetrics
from sabot.monitor import WorkerMonitor
from tests.helpers import http_get, until, until_sync
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: worker_app.py's shutdown_timeout, plus the interpreter's start and exit.
SHUTDOWN_TIMEOUT = 5.0
EXIT_SLACK = 3.0


def start_worker(args, env, log_path):
    """``python -m sabot ARGS`` in the repository root, its stderr in ``log_path``."""
    full_env = {**os.environ, **env}
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "sabot", *args], cwd=ROOT, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


@contextlib.contextmanager
def worker(args, env, log_path):
    """A running worker process, killed on the way out if the test did not stop it."""
    proc = start_worker(args, env, log_path)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_gracefully(proc, log_path):
    """SIGTERM, then the exit code, which must come within shutdown_timeout."""
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(SHUTDOWN_TIMEOUT + EXIT_SLACK)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"no exit within shutdown_timeout:\n{read(log_path)}")
    return code, time.monotonic() - began


def read(path):
    return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""


def wait_for(predicate, proc, log_path, timeout=30.0, what="condition"):
    """``until_sync`` that fails at once, with the log, if the worker exits."""
    def check():
        result = predicate()
        if not result and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) waiting for {what}:\n"
                                 f"{read(log_path)}")
        return result
    return until_sync(check, timeout, what=lambda: f"{what}:\n{read(log_path)}", interval=0.05)


async def async_get(port, path):
    """``http_get`` from a coroutine (in a thread: the server runs on this loop)."""
    return await asyncio.get_running_loop().run_in_executor(None, http_get, port, path)


@contextlib.asynccontextmanager
async def serving(app):
    """Run ``app`` in this process with its metrics endpoint; yields the port."""
    server = MetricsServer(WorkerMetrics(WorkerMonitor(app)), 0, host="127.0.0.1")
    await app.start()
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()
        await app.stop()


def metric(text, name, **labels):
    """The value of one sample in Prometheus text (``None`` if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def ids_in(path):
    if not os.path.exists(path):
        return []
    return [int(x) for x in open(path, "rb").read().split()]


# -- memory:// -------------------------------------------------------------------

def test_sigterm_mid_stream_exits_0_and_metrics_are_served(tmp_path):
    port = free_port()
    log = tmp_path / "worker.log"
    with worker(["worker", "-A", "tests.worker_app", "--web-port", str(port)],
                {"SABOT_TEST_FEED": "1"}, log) as proc:
        status = wait_for(lambda: http_get(port, "/health"), proc, log, what="/health")
        assert status[0] == 200, status
        health = json.loads(status[1])
        assert (health["status"], health["agents"]) == ("ok", {"record": True})
        assert health["worker"] == {"worker_id": None, "pid": proc.pid, "partitions": {},
                                    "consumers": []}

        def scraped():
            got = http_get(port, "/metrics")
            if got and (metric(got[1], "sabot_dead_letters_total", channel="events") or 0) >= 1:
                return got[1]
        text = wait_for(scraped, proc, log, what="a dead letter in /metrics")
        assert metric(text, "sabot_agent_events_in_total", agent="record") > 1000
        assert metric(text, "sabot_agent_events_out_total", agent="record") > 1000
        assert metric(text, "sabot_agent_errors_total", agent="record") == 1
        assert metric(text, "sabot_agent_running", agent="record") == 1
        assert http_get(port, "/nope")[0] == 404
        wait_for(lambda: "status: 1 agents" in read(log), proc, log, what="a status line")
        # The delay histogram is observed at the status ticks (every second).
        assert "sabot_agent_delay_seconds_bucket" in http_get(port, "/metrics")[1]
        code, took = stop_gracefully(proc, log)
    out = read(log)
    assert code == 0, out
    assert took < SHUTDOWN_TIMEOUT
    assert "SIGTERM received: stopping gracefully" in out
    assert "record: " in out and "in/s" in out          # the status line
    assert "dead letters 1" in out
    assert "processed in" in out and "stopped after" in out
    assert "Traceback" not in out.split("SIGTERM received")[1]


def test_app_option_before_the_command_and_json_logs(tmp_path):
    log = tmp_path / "worker.log"
    proc = start_worker(["-A", "tests.worker_app", "worker", "--json-logs", "--concurrency", "2"],
                        {"SABOT_TEST_FEED": "1", "SABOT_TEST_STOP_AFTER": "3000"}, log)
    assert proc.wait(30) == 0, read(log)
    records = [json.loads(line) for line in read(log).splitlines() if line.startswith("{")]
    messages = " ".join(r["msg"] for r in records)
    assert "concurrency=2" in messages
    assert "record 3,000 in" in messages
    assert {"ts", "level", "logger", "pid", "msg"} <= records[0].keys()


def test_second_sigterm_exits_at_once(tmp_path):
    log = tmp_path / "worker.log"
    port = free_port()
    with worker(["worker", "-A", "tests.worker_app", "--web-port", str(port)],
                {"SABOT_TEST_STUBBORN": "1"}, log) as proc:
        wait_for(lambda: http_get(port, "/health"), proc, log, what="/health")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping (graceful" in read(log), proc, log, what="the graceful stop")
        # The stop reached the stubborn agent, which went on: it holds the stop.
        wait_for(lambda: "stubborn: ignoring the stop" in read(log), proc, log,
                 what="the stop to reach the stubborn agent")
        assert proc.poll() is None  # the stubborn agent holds the graceful stop
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 1
        assert time.monotonic() - began < 2
    assert "second SIGTERM: exiting now" in read(log)


def test_unreachable_broker_is_one_line_and_exit_1(tmp_path):
    log = tmp_path / "worker.log"
    proc = start_worker(["worker", "-A", "tests.worker_app", "-l", "warning"],
                        {"SABOT_TEST_BROKER": "kafka://127.0.0.1:1"}, log)
    assert proc.wait(30) == 1
    lines = read(log).strip().splitlines()
    assert len(lines) == 1, lines
    assert "worker could not start: cannot reach Kafka broker 127.0.0.1:1" in lines[0]


def test_web_port_in_use_is_one_line_and_exit_1(tmp_path):
    log = tmp_path / "worker.log"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_worker(["worker", "-A", "tests.worker_app", "-l", "warning",
                             "--web-port", str(port)], {}, log)
        assert proc.wait(30) == 1
    lines = read(log).strip().splitlines()
    assert len(lines) == 1 and f"cannot serve metrics on port {port}" in lines[0], lines


async def test_health_is_503_once_an_agent_stopped():
    app = sabot.App("health-test")

    @app.agent(app.channel(name="in"), name="quits")
    async def quits(stream):
        return  # an agent that ends at once

    @app.agent(app.channel(name="in2"), name="stays")
    async def stays(stream):
        async for _ in stream:
            pass

    async with serving(app) as port:
        await until(lambda: not quits.running, what="the agent that ends to end")
        status, body = await async_get(port, "/health")
    assert status == 503
    assert json.loads(body)["agents"] == {"quits": False, "stays": True}


# -- transports: SIGTERM mid-stream, restart, nothing twice --------------------

def _restart_case(tmp_path, env, produce, total, nothing_left=None):
    """SIGTERM a worker half way, restart it: every value once.

    ``nothing_left()`` is true once the broker has nothing it could deliver
    again (None: once every value is in, nothing more can come).
    """
    outfile = tmp_path / "processed.txt"
    # A small buffer keeps most values unfetched when the SIGTERM comes, so
    # the restart has work left (in-flight values are finished by the stop).
    env = {**env, "SABOT_TEST_OUTFILE": str(outfile), "SABOT_TEST_SLOW": "0.02",
           "SABOT_TEST_MAXSIZE": "100"}
    produce(total)
    port = free_port()
    log = tmp_path / "first.log"
    with worker(["worker", "-A", "tests.worker_app", "--web-port", str(port)], env, log) as first:
        wait_for(lambda: len(ids_in(outfile)) >= total // 10, first, log, timeout=60,
                 what="a tenth of the values")
        text = http_get(port, "/metrics")[1]
        # Counted per finished batch: a fetch still in the agent is not in yet.
        assert metric(text, "sabot_agent_events_in_total", agent="record") is not None
        assert metric(text, "sabot_consumer_lag", topic=env["SABOT_TEST_TOPIC"]) is not None
        code, _ = stop_gracefully(first, log)
    assert code == 0, read(log)
    before = ids_in(outfile)
    assert len(before) < total, "the first worker finished before it was stopped"

    log2 = tmp_path / "second.log"
    with worker(["worker", "-A", "tests.worker_app"], env, log2) as second:
        wait_for(lambda: len(set(ids_in(outfile))) >= total, second, log2, timeout=60,
                 what="every value after the restart")
        if nothing_left is not None:
            # anything that could come twice has come by now
            wait_for(nothing_left, second, log2, timeout=60, what="nothing left to deliver")
        code, _ = stop_gracefully(second, log2)
    assert code == 0, read(log2)
    done = ids_in(outfile)
    assert set(done) == set(range(total))
    twice = len(done) - len(set(done))
    # A graceful stop commits everything it processed: nothing comes twice.
    assert twice == 0, f"{twice} values processed twice"


@pytest.mark.slow
def test_kafka_sigterm_then_restart_processes_nothing_twice(kafka_broker, tmp_path):
    from aiokafka import AIOKafkaProducer
    topic = f"worker-{uuid.uuid4().hex[:8]}"

    def produce(total):
        async def go():
            producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, linger_ms=5)
            await producer.start()
            try:
                for i in range(total):
                    await producer.send(topic, json.dumps({"id": i}).encode(),
                                        key=str(i).encode())
                await producer.flush()
            finally:
                await producer.stop()
        asyncio.run(go())

    env = {"SABOT_TEST_BROKER": f"kafka://{kafka_broker}", "SABOT_TEST_TOPIC": topic,
           "SABOT_TEST_APP_ID": topic}
    # A partition is read in order from the committed offset: a value read
    # again comes before the partition's last value, so once every value is
    # in, nothing more can come.
    _restart_case(tmp_path, env, produce, 6000)


@pytest.mark.slow
def test_redis_sigterm_then_restart_processes_nothing_twice(redis_server, tmp_path):
    stream = f"worker-{uuid.uuid4().hex[:8]}"

    def produce(total):
        client = redis_server.client()
        pipe = client.pipeline(transaction=False)
        for i in range(total):
            pipe.xadd(stream, {"value": json.dumps({"id": i}).encode()})
        pipe.execute()

    env = {"SABOT_TEST_BROKER": redis_server.url, "SABOT_TEST_TOPIC": stream,
           "SABOT_TEST_APP_ID": stream}
    # An entry left pending (read, never acknowledged) would be claimed and
    # processed again, however late: once none is pending, none can come twice.
    client = redis_server.client()
    _restart_case(tmp_path, env, produce, 6000,
                  lambda: client.xpending(stream, stream)["pending"] == 0)


async def test_metrics_of_a_process_agent_include_the_bridge():
    from tests.bridge import agents_fixture
    app = sabot.App("bridge-metrics-test")
    out = []
    source = app.channel(name="numbers")
    app.agent(source, name="double", sink=[out.append], executor="process")(agents_fixture.double)
    async with serving(app) as port:
        await source.send_batch([1, 2, 3])
        await until(lambda: len(out) >= 3, 30, "results from the process agent")
        status, text = await async_get(port, "/metrics")
    assert status == 200
    assert metric(text, "sabot_bridge_executions_total", agent="double") >= 1
    assert metric(text, "sabot_bridge_transfers_total", agent="double") >= 1
    assert metric(text, "sabot_agent_events_out_total", agent="double") == 3


async def test_batch_latency_histogram_counts_every_batch():
    app = sabot.App("latency-histogram-test")
    source = app.channel(name="work")

    @app.agent(source, name="sleepy")
    async def sleepy(stream):
        async for batch in stream.batches():
            await asyncio.sleep(0.02)

    async with serving(app) as port:
        for i in range(3):
            await source.send_batch([i])
        await source.send(value="last")
        scraped = []

        async def three_batches_counted():
            scraped[:] = await async_get(port, "/metrics") or ()
            return scraped and (metric(scraped[1], "sabot_batch_latency_seconds_count",
                                       agent="sleepy") or 0) >= 3
        await until(three_batches_counted, 10, lambda: scraped[1:] or "/metrics", interval=0.05)
        status, text = scraped
    assert status == 200
    total = metric(text, "sabot_batch_latency_seconds_sum", agent="sleepy")
    assert total >= 3 * 0.02 * 0.9  # each batch took at least its 20 ms of work
