"""``stream.group_by``: values re-keyed through a repartition topic, on memory, Kafka and Redis."""
import collections

import pytest

import sabot
from sabot.exceptions import ConfigurationError
from sabot.group_by import repartition_topic_name
from tests.helpers import running, unique, until

VALUES = [{"user": f"u{i % 7}", "n": i} for i in range(200)]


def grouping_app(app, source, seen):
    @app.agent(source, name="by_user")
    async def by_user(stream):
        async for value in stream.group_by("user"):
            event = sabot.current_event()
            seen.append((event.key, event.partition, event.topic, value))
    return by_user


def _text(key):
    return key.decode() if isinstance(key, bytes) else key


async def check_grouped(seen, source_name, app):
    assert sorted(v["n"] for _, _, _, v in seen) == list(range(len(VALUES)))
    # Keys come back as sent in memory, as bytes from a broker (Faust's raw keys).
    assert all(_text(key) == value["user"] for key, _, _, value in seen)
    # Every value of one key came from one partition of the repartition topic.
    partitions = collections.defaultdict(set)
    for key, partition, topic, _ in seen:
        partitions[_text(key)].add(partition)
        assert topic == repartition_topic_name("by_user", source_name, "user")
    assert all(len(p) == 1 for p in partitions.values())


async def test_group_by_on_memory_rekeys_every_value():
    app = sabot.App(unique("gb"))
    source = app.topic("clicks")
    seen = []
    grouping_app(app, source, seen)
    async with running(app):
        for value in VALUES:
            await source.send(key="other", value=value)
        await until(lambda: len(seen) == len(VALUES), what="every value regrouped")
    await check_grouped(seen, "clicks", app)


@pytest.mark.kafka
async def test_group_by_on_kafka_puts_each_key_on_one_partition(kafka_broker):
    app = sabot.App(unique("gb"), broker=f"kafka://{kafka_broker}", broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5)
    source = app.topic(unique("clicks"), partitions=3)
    seen = []
    grouping_app(app, source, seen)
    async with running(app):
        for value in VALUES:
            await source.send(key=str(value["n"]), value=value)
        await until(lambda: len(seen) >= len(VALUES), timeout=60.0, what="every value regrouped")
    await check_grouped(seen, source.name, app)
    assert len({p for _, p, _, _ in seen}) > 1  # the keys spread over the topic's partitions


@pytest.mark.redis
async def test_group_by_on_redis(redis_server):
    app = sabot.App(unique("gb"), broker=redis_server.url)
    source = app.topic(unique("clicks"))
    seen = []
    grouping_app(app, source, seen)
    async with running(app):
        for value in VALUES:
            await source.send(value=value)
        await until(lambda: len(seen) >= len(VALUES), timeout=30.0, what="every value regrouped")
    await check_grouped(seen, source.name, app)


async def test_group_by_feeds_a_table_keyed_by_the_new_key():
    app = sabot.App(unique("gb"))
    source = app.topic("clicks")
    counts = app.Table("per-user", default=int)
    done = []

    @app.agent(source)
    async def count(stream):
        async for value in stream.group_by("user"):
            counts[value["user"]] += 1
            done.append(1)

    async with running(app):
        for value in VALUES:
            await source.send(key="not-the-user", value=value)
        await until(lambda: len(done) == len(VALUES), what="every value counted")
        expected = collections.Counter(v["user"] for v in VALUES)
        assert {k: counts[k] for k in expected} == dict(expected)


async def test_a_key_that_cannot_be_computed_is_dead_lettered():
    app = sabot.App(unique("gb"))
    source = app.topic("clicks")
    seen = []

    @app.agent(source)
    async def by_user(stream):
        async for value in stream.group_by(lambda v: v["user"].upper(), name="upper"):
            seen.append(value)

    dead = []
    dlq = source.dead_letter_channel()

    @app.agent(dlq)
    async def dead_letters(stream):
        async for event in stream.events():
            dead.append(event)

    async with running(app):
        await source.send(value={"user": "a"})
        await source.send(value={"name": "no user"})
        await source.send(value={"user": "b"})
        await until(lambda: len(seen) == 2 and len(dead) == 1, what="two grouped, one dead letter")
    assert [v["user"] for v in seen] == ["a", "b"]
    reason = dead[0].headers["sabot-error"]
    reason = reason.decode() if isinstance(reason, bytes) else reason
    assert "group_by 'upper'" in reason and "KeyError" in reason


def test_group_by_arguments_are_checked():
    app = sabot.App(unique("gb"))
    stream = app.channel().stream()
    with pytest.raises(ConfigurationError, match="needs name="):
        stream.group_by(lambda v: v)
    with pytest.raises(ConfigurationError, match="field name, a Record field or a callable"):
        stream.group_by(42)


async def test_group_by_with_concurrency_is_refused_as_in_faust():
    app = sabot.App(unique("gb"))
    errors = []

    @app.agent(concurrency=2)
    async def parallel(stream):
        try:
            stream.group_by("user")
        except ConfigurationError as exc:
            errors.append(exc)
        async for _ in stream:
            pass

    async with running(app):
        await until(lambda: len(errors) == 2, what="both instances refused")
    assert "concurrency" in str(errors[0])


async def test_items_gives_keys_and_values():
    app = sabot.App(unique("gb"))
    channel = app.channel()
    pairs = []

    @app.agent(channel)
    async def read(stream):
        async for key, value in stream.items():
            pairs.append((key, value))

    async with running(app):
        await channel.send(key="k1", value=1)
        await channel.send(key="k2", value=2)
        await until(lambda: len(pairs) == 2, what="two pairs")
    assert pairs == [("k1", 1), ("k2", 2)]


@pytest.mark.kafka
async def test_group_by_on_kafka_feeds_a_table(kafka_broker):
    app = sabot.App(unique("gb"), broker=f"kafka://{kafka_broker}", broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5, store="memory://")
    source = app.topic(unique("clicks"), partitions=3)
    counts = app.Table(unique("per-user"), default=int)
    done = []

    @app.agent(source)
    async def count(stream):
        async for value in stream.group_by("user"):
            counts[value["user"]] += 1
            done.append(1)

    async with running(app):
        for value in VALUES:
            await source.send(key=str(value["n"]), value=value)
        await until(lambda: len(done) >= len(VALUES), timeout=60.0, what="every value counted")
        expected = collections.Counter(v["user"] for v in VALUES)
        assert {k: counts[k] for k in expected} == dict(expected)
