"""``app.is_leader()`` and ``on_leader`` timers on real brokers: one leader, and a successor."""
import asyncio

import pytest

import sabot
from sabot.leader import RedisLeader, leader_topic_name
from tests.helpers import unique, until


def kafka_app(kafka_broker, app_id, **settings):
    # tansu answers a JoinGroup after half the session timeout: keep it short.
    return sabot.App(app_id, broker=f"kafka://{kafka_broker}", broker_session_timeout=3.0,
                     broker_heartbeat_interval=0.5, broker_commit_interval=0.2, **settings)


def leader_counting_app(make, app_id, runs):
    app = make(app_id)

    @app.timer(0.05, on_leader=True)
    async def lead():
        runs.append(app)

    return app


@pytest.mark.redis
async def test_redis_lock_elects_one_leader_and_a_successor_after_it_stops(redis_server):
    app_id = unique("lead")
    runs = []

    def make(app_id):
        return sabot.App(app_id, broker=redis_server.url, leader_lock_ttl=0.6)

    a, b = leader_counting_app(make, app_id, runs), leader_counting_app(make, app_id, runs)
    await a.start()
    await until(lambda: a.is_leader(), what="the first worker to lead")
    await b.start()
    try:
        await asyncio.sleep(0.5)  # b tries and fails while a renews
        assert a.is_leader() and not b.is_leader()
        assert runs and set(map(id, runs)) == {id(a)}
        await a.stop()  # releases the lock: b takes it at its next try
        await until(lambda: b.is_leader(), timeout=5.0, what="the second worker to take over")
        runs.clear()
        await until(lambda: runs, what="the on_leader timer on the new leader")
        assert set(map(id, runs)) == {id(b)}
    finally:
        await b.stop()


@pytest.mark.redis
async def test_redis_lock_of_a_dead_leader_runs_out(redis_server):
    app_id = unique("lead")
    a = sabot.App(app_id, broker=redis_server.url, leader_lock_ttl=0.5)
    b = sabot.App(app_id, broker=redis_server.url, leader_lock_ttl=0.5)
    first, second = RedisLeader(a), RedisLeader(b)
    assert await first.try_once()
    # `first` dies without releasing (no renewal, no stop): its lock runs out.
    assert not await second.try_once()
    await until(second.try_once, timeout=5.0, what="the lock to run out and pass on")
    assert second.is_leader()
    # The old holder's renewal fails: it must not extend the new leader's lock.
    assert not await first.try_once() and not first.is_leader()
    await second.stop()
    assert await first.try_once()  # released, so free again
    await first.stop()
    for app in (a, b):
        for transport in app.transports:
            await transport.stop()


@pytest.mark.kafka
async def test_kafka_leader_is_the_member_holding_the_leader_partition(kafka_broker):
    app_id = unique("lead")
    runs = []

    def make(app_id):
        return kafka_app(kafka_broker, app_id)

    a = leader_counting_app(make, app_id, runs)
    await a.start()
    try:
        await until(lambda: a.is_leader(), timeout=30.0, what="the only member to lead")
        assert leader_topic_name(app_id) in a.transport.topics
        b = leader_counting_app(make, app_id, runs)
        await b.start()
        try:
            await asyncio.sleep(4.0)  # the group rebalances with both members
            await until(lambda: a.is_leader() != b.is_leader(), timeout=30.0,
                        what="exactly one leader of two")
            leader, other = (a, b) if a.is_leader() else (b, a)
            await leader.stop()
            await until(lambda: other.is_leader(), timeout=30.0,
                        what="the other member to lead after the leader left")
            runs.clear()
            await until(lambda: runs, what="the on_leader timer on the new leader")
            assert set(map(id, runs)) == {id(other)}
        finally:
            await b.stop()
    finally:
        await a.stop()
