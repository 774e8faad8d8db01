"""Faust's app signals and ``@app.service``."""
import mode
import pytest

import sabot
from sabot.exceptions import ConfigurationError
from sabot.worker import Worker
from tests.helpers import collector, running, unique, until


async def test_memory_app_signals_start_and_shutdown():
    app = sabot.App(unique("sig"))
    seen = []

    @app.on_rebalance_complete.connect
    async def complete(sender, **kwargs):
        seen.append(("complete", sender is app, app.rebalancing))

    @app.on_before_shutdown.connect
    async def shutdown(sender, **kwargs):
        seen.append(("shutdown", sender is app, None))

    @app.on_worker_init.connect
    def init(sender, **kwargs):
        seen.append(("init", sender is app, None))

    Worker(app, configure_logging=False)
    async with running(app):
        assert seen == [("init", True, None), ("complete", True, False)]
    assert seen[-1] == ("shutdown", True, None)


async def test_services_start_and_stop_with_the_app():
    app = sabot.App(unique("svc"))
    events = []

    @app.service
    class Background(mode.Service):
        async def on_start(self):
            events.append("start")

        async def on_stop(self):
            events.append("stop")

    assert Background.__name__ == "Background"  # the class is returned as it was
    async with running(app):
        assert events == ["start"]
    assert events == ["start", "stop"]
    with pytest.raises(ConfigurationError, match="not a mode.Service"):
        app.service(object)


@pytest.mark.kafka
async def test_kafka_assignment_signals(kafka_broker):
    app = sabot.App(unique("sig"), broker=f"kafka://{kafka_broker}", broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5)
    topic = app.topic(unique("t"), partitions=3)
    collector(app, topic)
    assigned, completed = [], []

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, partitions, **kwargs):
        assigned.append(partitions)

    @app.on_rebalance_complete.connect
    async def on_complete(sender, **kwargs):
        completed.append(app.rebalancing)

    async with running(app):
        await until(lambda: completed, timeout=30.0, what="the first assignment to complete")
    assert completed[0] is False
    # Partition numbers of every topic the worker reads (one worker: all of them).
    assert set().union(*assigned) == {0, 1, 2}
