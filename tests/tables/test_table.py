"""Tables on memory://: Faust's dict API, the current event, the key check, bad input.

The table is updated from real agents over real channels; nothing is mocked.
"""
import asyncio

import pytest

import sabot
from sabot.exceptions import ConfigurationError, SabotCompatibilityWarning
from sabot.tables.codec import TableValueError, decode, decode_record, encode
from sabot.tables.table import TableKeyError
from tests.helpers import drain, running, until


@pytest.fixture
def app():
    return sabot.App("tables-test")


def counting_agent(app, table, channel, key=lambda v: v):
    @app.agent(channel)
    async def count(stream):
        async for value in stream:
            table[key(value)] += 1
    return count


async def test_counting_table_equals_the_input(app):
    counts = app.Table("counts", default=int)
    words = app.channel(name="words")
    counting_agent(app, counts, words)
    sent = ["a", "b", "a", "c", "a", "b"]
    async with running(app):
        for w in sent:
            await words.send(key=w, value=w)
        await until(lambda: sum(counts.values()) == len(sent), what="every word counted")
        assert dict(counts.items()) == {"a": 3, "b": 2, "c": 1}
        assert counts["a"] == 3 and counts["zzz"] == 0  # a missing key is default()
        assert "zzz" not in counts and "a" in counts and len(counts) == 3


async def test_missing_key_without_default_raises_key_error(app):
    table = app.Table("plain")
    with pytest.raises(KeyError):
        table["nope"]
    assert table.get("nope") is None
    assert table.get_many(["nope"]) == [None]


async def test_write_outside_an_agent_is_refused_as_in_faust(app):
    table = app.Table("t", default=int)
    with pytest.raises(RuntimeError, match="outside of agent/stream"):
        table["k"] = 1
    assert sabot.current_event() is None


async def test_current_event_names_the_value_in_hand(app):
    ch = app.channel(name="events-in")
    seen = []

    @app.agent(ch)
    async def watch(stream):
        async for value in stream:
            seen.append(sabot.current_event())

    async with running(app):
        await ch.send(key="k1", value={"n": 1}, headers={"h": b"1"})
        await until(lambda: seen, what="the event")
    event = seen[0]
    assert event.key == "k1" and event.value == {"n": 1} and event.headers == {"h": b"1"}
    assert event.partition == 0 and event.channel is ch and event.topic == "events-in"
    assert event.message.partition == 0  # Faust's event.message


async def test_tuple_keys_and_rich_values_round_trip_through_the_changelog(app):
    table = app.Table("rich")
    ch = app.channel(name="rich-in")
    values = {("a", (0.0, 9.9)): [1, {"x": b"\x00"}], ("b", (10.0, 19.9)): (1, "two")}

    @app.agent(ch)
    async def store(stream):
        async for key in stream:
            table[key] = values[key]

    async with running(app):
        for key in values:
            await ch.send(key=key, value=key)
        await until(lambda: len(table) == 2, what="both keys")
        await app.tables.flush()
    # A new app object over the same changelog recovers the same keys and values.
    log = app.tables._memory_logs["tables-test-rich-changelog"][0]
    recovered = {decode(e.key): decode_record(e.value)[0] for e in log}
    assert recovered == values
    assert all(type(k) is tuple and type(k[1]) is tuple for k in recovered)


async def test_a_restarted_app_recovers_its_table_from_the_changelog(app):
    counts = app.Table("counts", default=int)
    words = app.channel(name="words")
    counting_agent(app, counts, words)
    async with running(app):
        for w in "abcab":
            await words.send(key=w, value=w)
        await until(lambda: sum(counts.values()) == 5, what="five words")
        # stop() flushes; the memory store is gone, the changelog is kept by the app.
        await app.restart()
        assert dict(counts.items()) == {"a": 2, "b": 2, "c": 1}
        assert counts.held_partitions == [0]


async def test_updating_with_a_key_that_is_not_the_message_key_is_an_error(app):
    counts = app.Table("by-user", default=int)
    orders = app.channel(name="orders")
    dead = orders.dead_letter_channel().stream().events()
    counting_agent(app, counts, orders, key=lambda order: order["user"])
    async with running(app):
        await orders.send(key="order-1", value={"user": "alice"})
        letter = await asyncio.wait_for(dead.__anext__(), 5)
        assert len(counts) == 0
    reason = letter.headers["sabot-error"].decode()
    assert "TableKeyError" in reason and "'alice'" in reason and "'order-1'" in reason
    assert "group_by" in reason


async def test_a_global_table_takes_any_key(app):
    totals = app.GlobalTable("totals", default=int)
    orders = app.channel(name="orders")
    counting_agent(app, totals, orders, key=lambda order: order["user"])
    async with running(app):
        await orders.send(key="order-1", value={"user": "alice"})
        await until(lambda: totals["alice"] == 1, what="the global count")


@pytest.mark.parametrize("key, why", [
    (["unhashable"], "unhashable"),
    ({1, 2}, "unhashable"),
    (object(), "cannot be stored"),
])
async def test_a_key_the_table_cannot_hold_is_dead_lettered_with_the_reason(app, key, why):
    table = app.GlobalTable("g", default=int)
    ch = app.channel(name="bad-keys")
    dead = ch.dead_letter_channel().stream().events()

    @app.agent(ch)
    async def write(stream):
        async for value in stream:
            table[key if value == "bad" else value] += 1

    async with running(app):
        await ch.send_batch(["ok", "bad", "ok2"])
        letter = await asyncio.wait_for(dead.__anext__(), 5)
        await until(lambda: table["ok2"] == 1, what="the value after the bad one")
        assert dict(table.items()) == {"ok": 1, "ok2": 1}
    assert letter.value == "bad"
    assert why in letter.headers["sabot-error"].decode()


async def test_a_value_the_table_cannot_hold_is_dead_lettered(app):
    table = app.GlobalTable("g")
    ch = app.channel(name="bad-values")
    dead = ch.dead_letter_channel().stream().events()

    @app.agent(ch)
    async def write(stream):
        async for value in stream:
            table[value] = {1: "int key"} if value == "bad" else value

    async with running(app):
        await ch.send_batch(["bad", "fine"])
        letter = await asyncio.wait_for(dead.__anext__(), 5)
        await until(lambda: "fine" in table, what="the good value")
        assert "bad" not in table
    assert "TableValueError" in letter.headers["sabot-error"].decode()


async def test_key_and_value_types_are_checked(app):
    table = app.GlobalTable("typed", key_type=str, value_type=int)
    ch = app.channel(name="typed-in")
    dead = ch.dead_letter_channel().stream().events()

    @app.agent(ch)
    async def write(stream):
        async for key, value in stream:
            table[key] = value

    async with running(app):
        await ch.send_batch([("a", 1), ("b", "two"), (3, 3), ("c", 3)])
        letters = await drain(dead, 2)
        await until(lambda: "c" in table, what="the last value")
        assert dict(table.items()) == {"a": 1, "c": 3}
    assert [e.value for e in letters] == [("b", "two"), (3, 3)]


async def test_set_table_members_are_added_and_discarded(app):
    tags = app.SetTable("tags")
    ch = app.channel(name="tags-in")

    @app.agent(ch)
    async def tag(stream):
        async for key, op, member in stream:
            if op == "add":
                tags[key].add(member)
            else:
                tags[key].discard(member)

    async with running(app):
        for item in [("k", "add", "x"), ("k", "add", ("y", 1)), ("k", "del", "x")]:
            await ch.send(key="k", value=item)
        await until(lambda: tags["k"] == {("y", 1)}, what="the set")
        await app.restart()  # recovered from the changelog: still a set
        assert tags["k"] == {("y", 1)}


async def test_delete_writes_a_tombstone(app):
    table = app.Table("t", default=int)
    ch = app.channel(name="t-in")

    @app.agent(ch)
    async def write(stream):
        async for key, op in stream:
            if op == "set":
                table[key] = 1
            else:
                del table[key]

    async with running(app):
        await ch.send(key="k", value=("k", "set"))
        await until(lambda: "k" in table, what="the key")
        await app.tables.flush()
        await ch.send(key="k", value=("k", "del"))
        await until(lambda: "k" not in table, what="the deletion")
        await app.restart()
        log = app.tables._memory_logs["tables-test-t-changelog"][0]
        assert [e.value is None for e in log] == [False, True]
        assert "k" not in table and len(table) == 0


def test_table_options_are_checked_and_faust_only_ones_warned():
    app = sabot.App("opts")
    with pytest.raises(ConfigurationError, match="default must be callable"):
        app.Table("a", default=0)
    with pytest.raises(ConfigurationError, match="unknown option"):
        app.Table("b", bogus=1)
    with pytest.warns(SabotCompatibilityWarning, match="standby_buffer_size"):
        app.Table("c", standby_buffer_size=10)
    with pytest.raises(ConfigurationError, match="recovery_buffer_size"):
        app.Table("e", recovery_buffer_size=0)
    app.Table("d")
    with pytest.raises(ConfigurationError, match="defined twice"):
        app.Table("d")


def test_codec_refuses_what_would_not_round_trip():
    for value in ({1: "a"}, {1, object()}, object()):
        with pytest.raises(TableValueError):
            encode(value)
    for value in ("s", 1, 1.5, None, True, b"\xff", ("t", (1, 2)), [1, [2]], {"a": (1,)},
                  {"a", ("b", 1)}, frozenset([1]), {"s": {b"x"}}):  # sets, as Faust's tables hold
        assert decode(encode(value)) == value
        assert type(decode(encode(value))) is type(value)


async def test_table_key_error_is_a_sabot_error():
    assert issubclass(TableKeyError, sabot.SabotError)


async def test_a_table_works_in_an_agents_test_context():
    app = sabot.App("tables-ctx", broker="kafka://127.0.0.1:1")  # never reached
    counts = app.Table("counts", default=int)

    @app.agent()
    async def count(stream):
        async for word in stream:
            counts[word] += 1
            yield counts[word]

    async with count.test_context() as ctx:
        assert await ctx.put("a", key="a") == [1]
        assert await ctx.put("a", key="a") == [2]
    assert counts.held_partitions == [0]
    assert counts.store_for(0).url == "memory://"


def test_store_defaults_follow_the_broker_and_the_store_setting():
    memory = sabot.App("m")
    kafka = sabot.App("k", broker="kafka://127.0.0.1:1")
    redis = sabot.App("r", broker="redis://127.0.0.1:1/0")
    chosen = sabot.App("c", broker="kafka://127.0.0.1:1", store="rocksdb://")
    for app, url in ((memory, "memory://"), (kafka, "lmdb://"), (redis, "lmdb://"),
                     (chosen, "rocksdb://")):
        assert app.tables.store_url(app.Table("t")) == url
    assert memory.tables.store_url(memory.Table("u", store="lmdb://")) == "lmdb://"
    assert kafka.tables.datadir() == "k-data"
    assert sabot.App("d", datadir="/var/lib/x").tables.datadir() == "/var/lib/x"


async def test_standby_replicas_on_memory_are_accepted_with_a_warning_naming_them():
    app = sabot.App("standby", table_standby_replicas=1)
    app.Table("t")
    with pytest.warns(SabotCompatibilityWarning, match="table_standby_replicas"):
        await app.start()
    await app.stop()
