"""The ``sabot`` command line through click's runner: every command, every bad input.

The app is ``tests/worker_app.py``, configured by environment variables; it
is imported afresh for each test so that a test can point it at another
broker. Bad input must give one line naming the problem, a non-zero exit and
no traceback.
"""
import json
import logging
import sys
import uuid

import pytest
from click.testing import CliRunner

from sabot.cli import _State, cli

APP = "tests.worker_app"


def forget_test_apps():
    # Each command builds its app afresh, as a new `sabot` process would.
    for name in [m for m in sys.modules if m.startswith(("tests.worker_app", "tests.cli_bad_apps"))]:
        del sys.modules[name]


@pytest.fixture(autouse=True)
def fresh_app_module():
    """Forget imported test apps, and keep the worker's logging set-up out of pytest's."""
    forget_test_apps()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)
    forget_test_apps()


def run(*args, env=None):
    forget_test_apps()
    runner = CliRunner()
    return runner.invoke(cli, list(args), obj=_State(), env=env, catch_exceptions=False)


def assert_one_line_error(result, *fragments, code=1):
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    error_lines = [line for line in lines if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


# -- agents -----------------------------------------------------------------------

@pytest.mark.parametrize("order", ["before", "after"])
def test_agents_table_with_app_before_or_after_the_command(order):
    args = ["-A", APP, "agents"] if order == "before" else ["agents", "-A", APP]
    result = run(*args)
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    assert header.split() == ["agent", "input", "transport", "executor", "concurrency", "sinks"]
    assert row.split() == ["record", "events", "memory", "native", "1", "events-results"]


def test_app_from_environment_variable():
    result = run("agents", env={"SABOT_APP": APP})
    assert result.exit_code == 0 and "record" in result.output


# -- worker -----------------------------------------------------------------------

def test_worker_runs_a_finite_job_and_exits_0():
    result = run("-A", APP, "worker", "-l", "warning",
                 env={"SABOT_TEST_FEED": "1", "SABOT_TEST_STOP_AFTER": "2000"})
    assert result.exit_code == 0, result.output


def test_worker_with_unreachable_broker_exits_1():
    result = run("worker", "-A", APP, "-l", "warning",
                 env={"SABOT_TEST_BROKER": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 1


def test_worker_rejects_a_bad_loglevel_and_port():
    assert run("worker", "-A", APP, "-l", "loud").exit_code == 2
    assert run("worker", "-A", APP, "--web-port", "70000").exit_code == 2


# -- bad -A -----------------------------------------------------------------------

@pytest.mark.parametrize("spec, fragment", [
    ("no_such_module:app", "no module named 'no_such_module'"),
    ("tests.worker_app:nope", "module 'tests.worker_app' has no attribute 'nope'"),
    ("tests.worker_app:record", "'record' is an Agent, not a sabot.App"),
    ("tests.cli_bad_apps:app", "importing 'tests.cli_bad_apps' raised RuntimeError"),
])
@pytest.mark.parametrize("command", ["worker", "agents"])
def test_bad_app_spec_is_one_line(spec, fragment, command):
    assert_one_line_error(run("-A", spec, command), f"-A {spec}", fragment)


def test_missing_app_is_a_usage_error():
    result = run("agents")
    assert result.exit_code == 2
    assert "no app given" in result.output and "Traceback" not in result.output


def test_unknown_broker_scheme_is_one_line():
    result = run("-A", APP, "agents", env={"SABOT_TEST_BROKER": "nats://127.0.0.1:4222"})
    assert_one_line_error(result, "unknown scheme 'nats'", "kafka://")


# -- send -------------------------------------------------------------------------

def test_send_to_a_memory_topic_says_it_stays_in_this_process():
    result = run("-A", APP, "send", "events", '{"id": 1}', "--repeat", "3")
    assert result.exit_code == 0, result.output
    assert "sent 3 values to events [memory]" in result.output
    assert "reached only this `sabot send` process" in result.output


def test_send_to_an_unknown_topic_names_the_known_ones():
    assert_one_line_error(run("-A", APP, "send", "nope", "1"),
                          "unknown topic 'nope'", "events, events-frames, events-results")


def test_tail_of_a_memory_topic_is_refused():
    assert_one_line_error(run("-A", APP, "tail", "events"), "in-memory channel")


def test_send_to_an_unreachable_broker_is_one_line():
    result = run("-A", APP, "send", "events", "1",
                 env={"SABOT_TEST_BROKER": "redis://127.0.0.1:1/0"})
    assert_one_line_error(result, "cannot reach redis at redis://127.0.0.1:1/0")


def test_send_a_value_the_codec_refuses_is_one_line(redis_server):
    result = run("-A", APP, "send", "events-frames", "[1, 2]",
                 env={"SABOT_TEST_BROKER": redis_server.url})
    assert_one_line_error(result, "carries Arrow batches")


# -- send and tail through real brokers -------------------------------------------

def _roundtrip(env, topic):
    sent = run("-A", APP, "send", topic, '{"id": 7, "who": "ann"}', "--key", "k", "--repeat", "2",
               env=env)
    assert sent.exit_code == 0, sent.output
    assert "reached only" not in sent.output
    assert run("-A", APP, "send", topic, "plain words", env=env).exit_code == 0
    tailed = run("-A", APP, "tail", topic, "--from-beginning", "--limit", "3", env=env)
    assert tailed.exit_code == 0, tailed.output
    # Kafka keeps order per partition only: compare what arrived, not its order.
    lines = sorted(tailed.output.strip().splitlines())
    assert lines == sorted(['{"id": 7, "who": "ann"}'] * 2 + ["plain words"])  # a str prints as is


def test_send_and_tail_on_redis_do_not_touch_the_group(redis_server):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    env = {"SABOT_TEST_BROKER": redis_server.url, "SABOT_TEST_TOPIC": topic}
    _roundtrip(env, topic)
    client = redis_server.client()
    assert client.xlen(topic) == 3
    assert client.xinfo_groups(topic) == []  # tail read without a consumer group


def test_a_json_list_is_one_value_on_a_json_topic(redis_server):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    env = {"SABOT_TEST_BROKER": redis_server.url, "SABOT_TEST_TOPIC": topic}
    assert run("-A", APP, "send", topic, "[1, 2, 3]", env=env).exit_code == 0
    tailed = run("-A", APP, "tail", topic, "--from-beginning", "--limit", "1", env=env)
    assert tailed.output.strip() == "[1, 2, 3]"
    assert redis_server.client().xlen(topic) == 1


def test_send_and_tail_arrow_rows_on_redis(redis_server):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    env = {"SABOT_TEST_BROKER": redis_server.url, "SABOT_TEST_TOPIC": topic}
    sent = run("-A", APP, "send", topic + "-frames", '[{"a": 1}, {"a": 2}]', env=env)
    assert sent.exit_code == 0, sent.output
    tailed = run("-A", APP, "tail", topic + "-frames", "--from-beginning", "--limit", "2", env=env)
    assert [json.loads(x) for x in tailed.output.splitlines()] == [{"a": 1}, {"a": 2}]


def test_send_and_tail_on_kafka_commit_nothing(kafka_broker):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    env = {"SABOT_TEST_BROKER": f"kafka://{kafka_broker}", "SABOT_TEST_TOPIC": topic}
    _roundtrip(env, topic)
    import asyncio
    from aiokafka.admin import AIOKafkaAdminClient

    async def groups():
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
        await admin.start()
        try:
            return [g[0] for g in await admin.list_consumer_groups()]
        finally:
            await admin.close()
    assert "cli-test" not in asyncio.run(groups())  # the app's group was never joined


def test_tail_of_a_dead_letter_topic(redis_server):
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    env = {"SABOT_TEST_BROKER": redis_server.url, "SABOT_TEST_TOPIC": topic}
    redis_server.client().xadd(topic + ".dlq", {"value": b"not json", "sabot-error": b"x"})
    tailed = run("-A", APP, "tail", topic + ".dlq", "--from-beginning", "--limit", "1", env=env)
    assert tailed.exit_code == 0, tailed.output
    assert tailed.output.strip() == "not json"
