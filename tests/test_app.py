"""App: settings, broker URLs, channels and topics, tasks and timers, app.main()."""
import asyncio
import os
import subprocess
import sys

import pytest

import sabot
from sabot import ConfigurationError
from sabot.channels import MemoryChannel
from tests.helpers import until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_documented_and_readable():
    app = sabot.App("a")
    assert app.conf.broker == "memory://"
    assert app.conf.stream_buffer_maxsize == 4096
    assert app.conf.stream_batch_size == 1000
    assert app.conf.stream_batch_linger == 0.05
    assert app.conf.redis_url.startswith("redis://")
    assert "stream_buffer_maxsize" in app.conf.describe()


def test_unknown_setting_is_named():
    with pytest.raises(ConfigurationError, match="'stream_buffer_max'.*stream_buffer_maxsize"):
        sabot.App("a", stream_buffer_max=10)


@pytest.mark.parametrize("name,value", [("stream_buffer_maxsize", 0),
                                        ("stream_batch_size", "big"),
                                        ("consumer_auto_offset_reset", "middle"),
                                        ("topic_allow_declare", "yes")])
def test_bad_setting_value_is_named(name, value):
    with pytest.raises(ConfigurationError, match=name):
        sabot.App("a", **{name: value})


@pytest.mark.parametrize("url", ["nats://x", "localhost:9092", ""])
def test_unknown_broker_scheme_is_a_clear_error(url):
    with pytest.raises(ConfigurationError, match="broker"):
        sabot.App("a", broker=url)


def test_secrets_are_not_in_repr():
    app = sabot.App("a", broker="redis://user:hunter2@localhost:6379/0",
                    sasl_password="s3cret", redis_url="redis://:pw@localhost/1")
    text = repr(app.conf) + repr(app)
    assert "hunter2" not in text and "s3cret" not in text and ":pw@" not in text


def test_app_id_must_be_a_string():
    with pytest.raises(ConfigurationError):
        sabot.App("")


def test_topics_on_memory_are_named_memory_channels():
    app = sabot.App("a")
    t = app.topic("orders", value_serializer="json", partitions=3)
    assert isinstance(t, MemoryChannel)
    assert app.topic("orders") is t
    assert t.dead_letter_channel() is app.topic("orders.dlq")


def test_agent_without_channel_gets_a_memory_channel_and_topic_name_works():
    app = sabot.App("a")

    @app.agent()
    async def a(stream):
        async for _ in stream:
            pass

    @app.agent("orders")
    async def b(stream):
        async for _ in stream:
            pass

    @app.agent(a)
    async def c(stream):
        async for _ in stream:
            pass
    assert isinstance(a.channel, MemoryChannel)
    assert b.channel is app.topic("orders")
    assert c.channel is a.channel


async def test_tasks_and_timers_run_and_stop():
    app = sabot.App("a")
    ticks, ran = [], []

    @app.task
    async def once():
        ran.append(True)

    @app.task
    async def with_app(the_app):
        ran.append(the_app is app)

    @app.timer(0.02)
    async def tick():
        ticks.append(1)

    before = asyncio.all_tasks()
    await app.start()
    await until(lambda: len(ticks) >= 3 and len(ran) == 2, what="both tasks and three ticks")
    await app.stop()
    count = len(ticks)
    # Stopped, the app leaves no task behind: nothing is left to tick.
    assert asyncio.all_tasks() - before == set()
    assert ran == [True, True]
    assert 3 <= count == len(ticks)


def test_timer_and_task_arguments_are_checked():
    app = sabot.App("a")
    with pytest.raises(ConfigurationError):
        app.timer(0)
    with pytest.raises(ConfigurationError):
        app.task(lambda: None)


async def test_a_task_that_raises_stops_the_worker_with_an_error():
    app = sabot.App("a")

    @app.task
    async def bad():
        raise RuntimeError("task failed")

    await app.start()
    await asyncio.wait_for(app.wait_for_stop_request(), 1)
    await app.stop()
    assert "task failed" in str(app.crash_reasons[0])


def test_app_main_runs_the_wordcount_worker_to_completion():
    env = dict(os.environ, SABOT_WORDCOUNT_REPEAT="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "wordcount.py"),
                           "worker", "-l", "warning"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "top words:" in proc.stdout
    assert "processed" in proc.stdout
