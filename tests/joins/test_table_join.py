"""``stream.join(table)``: left and inner joins against a Table and a GlobalTable.

Every joined output is checked against a reference computed with plain
Python over the same input: for each order, the table's value for its key
(or nulls, or nothing for an inner join). Tables are real ``app.Table`` /
``app.GlobalTable`` filled by an agent, as an application fills them.
"""
import random

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.models import Record
from sabot.exceptions import ConfigurationError, SchemaError
from sabot.joins.table_join import StreamTableJoin
from tests.helpers import running, unique, until

pytestmark = pytest.mark.usefixtures("quiet_sabot_logs")

TIERS = ("gold", "silver", "standard")
#: 40 customers in the table; orders name 60, so a third find nothing.
CUSTOMERS = {f"c{i}": {"tier": TIERS[i % 3], "limit": 100 * i} for i in range(40)}
ORDER_SCHEMA = pa.schema([("order", pa.int64()), ("customer", pa.string()),
                          ("amount", pa.float64())])


def order_rows(n, seed=7, start=0):
    rng = random.Random(seed)
    return [{"order": start + i,
             "customer": None if rng.random() < 0.05 else f"c{rng.randrange(60)}",
             "amount": round(rng.uniform(1, 500), 2)} for i in range(n)]


def reference(rows, table, how, fields=("tier", "limit")):
    """The join in plain Python: one dict lookup per row."""
    out = []
    for row in rows:
        value = table.get(row["customer"]) if row["customer"] is not None else None
        if value is None:
            if how == "inner":
                continue
            out.append({**row, **{f: None for f in fields}})
        else:
            out.append({**row, **value})
    return out


def join_app(kind="table", how="left", on="customer", **join_options):
    """An app whose ``load`` agent fills a table and whose ``enrich`` agent joins orders to it."""
    app = sabot.App(unique("join"), agent_restart_backoff=0.01)
    customers = app.channel(name="customers")
    table = (app.GlobalTable if kind == "global" else app.Table)(unique("customers"))
    orders = app.channel(name="orders")
    joined = []

    @app.agent(customers, name="load")
    async def load(stream):
        async for event in stream.events():
            table[event.key] = event.value

    @app.agent(orders, name="enrich")
    async def enrich(stream):
        async for batch in stream.join(table, on=on, how=how, **join_options):
            joined.append(batch)

    return app, customers, orders, table, joined


async def fill(customers, table, data=CUSTOMERS):
    for key, value in data.items():
        await customers.send(key=key, value=value)
    await until(lambda: len(table) == len(data), what="the table filled")


@pytest.mark.parametrize("kind", ["table", "global"])
@pytest.mark.parametrize("how", ["left", "inner"])
async def test_record_batch_join_equals_the_reference(kind, how):
    app, customers, orders, table, joined = join_app(kind, how)
    rows = order_rows(1000)
    async with running(app):
        await fill(customers, table)
        for i in range(0, len(rows), 250):
            await orders.send_batch(pa.RecordBatch.from_pylist(rows[i:i + 250], schema=ORDER_SCHEMA))
        expected = reference(rows, CUSTOMERS, how)
        await until(lambda: sum(b.num_rows for b in joined) >= len(expected), what="joined rows")
    assert all(isinstance(b, pa.RecordBatch) for b in joined)
    assert joined[0].schema.names == ["order", "customer", "amount", "tier", "limit"]
    assert pa.Table.from_batches(joined).to_pylist() == expected
    assert 0 < len(reference(rows, CUSTOMERS, "inner")) < len(rows)  # both cases present


@pytest.mark.parametrize("how", ["left", "inner"])
async def test_dict_values_join_equals_the_reference(how):
    app, customers, orders, table, joined = join_app("global", how)
    rows = order_rows(300, seed=3)
    async with running(app):
        await fill(customers, table)
        for row in rows:
            await orders.send(value=row)
        expected = reference(rows, CUSTOMERS, how)
        await until(lambda: sum(b.num_rows for b in joined) >= len(expected), what="joined rows")
    assert pa.Table.from_batches(joined).to_pylist() == expected


async def test_join_on_a_callable_and_on_the_message_key():
    app, customers, orders, table, joined = join_app(
        "table", "inner", on=lambda value: value["who"].lower())
    async with running(app):
        await fill(customers, table)
        await orders.send(value={"who": "C1", "amount": 5.0})
        await orders.send(value={"who": "C99", "amount": 6.0})
        await until(lambda: joined, what="a joined batch")
    assert pa.Table.from_batches(joined).to_pylist() == [
        {"who": "C1", "amount": 5.0, "tier": "silver", "limit": 100}]

    app, customers, orders, table, joined = join_app("table", "left", on=None)
    async with running(app):
        await fill(customers, table)
        await orders.send(key="c2", value={"amount": 1.0})
        await orders.send(key="nobody", value={"amount": 2.0})
        await until(lambda: sum(b.num_rows for b in joined) >= 2, what="joined rows")
    assert pa.Table.from_batches(joined).to_pylist() == [
        {"amount": 1.0, "tier": "standard", "limit": 200},
        {"amount": 2.0, "tier": None, "limit": None}]


async def test_scalar_values_become_one_column_named_after_the_table():
    app = sabot.App(unique("join"))
    counts = app.Table("visits")
    events, orders = app.channel(), app.channel()
    joined = []

    @app.agent(events)
    async def count(stream):
        async for event in stream.events():
            counts[event.key] = counts.get(event.key, 0) + 1

    @app.agent(orders)
    async def enrich(stream):
        async for batch in stream.join(counts, on="user", prefix="n_"):
            joined.append(batch)

    async with running(app):
        for user in ["a", "b", "a"]:
            await events.send(key=user, value=1)
        await until(lambda: counts.get("a") == 2, what="the counts")
        await orders.send_batch(pa.RecordBatch.from_pylist([{"user": "a"}, {"user": "z"}]))
        await until(lambda: joined, what="a joined batch")
    assert joined[0].to_pylist() == [{"user": "a", "n_visits": 2}, {"user": "z", "n_visits": None}]


async def test_missing_key_column_is_an_error_naming_it_and_the_batch_is_dead_lettered():
    app, customers, orders, table, joined = join_app("global", "left", on="customer_id")
    dead = orders.dead_letter_channel().stream()
    async with running(app):
        await fill(customers, table)
        await orders.send_batch(pa.RecordBatch.from_pylist(order_rows(3), schema=ORDER_SCHEMA))
        letter = await dead.events().__anext__()
    assert b"join key column 'customer_id' is missing" in letter.headers["sabot-error"]
    assert b"SchemaError" in letter.headers["sabot-error"]
    assert joined == []


def test_key_column_of_a_type_that_cannot_be_a_key_names_it():
    join = StreamTableJoin(_Lookup({}), on="price")
    with pytest.raises(SchemaError, match="join key column 'price' has type double") as info:
        join.join_batch(pa.RecordBatch.from_pylist([{"price": 1.5}]))
    assert info.value.field == "price"
    with pytest.raises(SchemaError, match="column 'customer' is missing"):
        StreamTableJoin(_Lookup({}), on="customer").join_batch(
            pa.RecordBatch.from_pylist([{"id": 1}]))


async def test_rows_whose_key_cannot_be_read_go_to_the_dead_letter_channel():
    app, customers, orders, table, joined = join_app("table", "left")
    dead = orders.dead_letter_channel().stream()
    async with running(app):
        await fill(customers, table)
        await orders.send_batch([
            {"order": 1, "customer": "c1"},
            {"order": 2},                                # no field: reason names it
            {"order": 3, "customer": ["c1"]},            # unhashable key
            "not a dict",
            {"order": 5, "customer": "c5"},
        ])
        await until(lambda: joined, what="a joined batch")
        letters = [await dead.events().__anext__() for _ in range(3)]
    assert pa.Table.from_batches(joined).to_pylist() == [
        {"order": 1, "customer": "c1", "tier": "silver", "limit": 100},
        {"order": 5, "customer": "c5", "tier": "standard", "limit": 500}]
    reasons = [letter.headers["sabot-error"].decode() for letter in letters]
    assert [letter.value for letter in letters] == [
        {"order": 2}, {"order": 3, "customer": ["c1"]}, "not a dict"]
    assert "no field 'customer'" in reasons[0]
    assert "customer" in reasons[1]
    assert "dict values" in reasons[2]
    assert all(letter.headers["sabot-join"].startswith(b"join:") for letter in letters)


def test_a_key_the_table_refuses_dead_letters_only_its_rows():
    class Picky:
        name = "picky"

        def get_many(self, keys):
            for key in keys:
                if key == "bad":
                    raise ValueError("key 'bad' is not allowed")
            return [{"v": 1} for _ in keys]

    result = StreamTableJoin(Picky(), on="k").join_batch(
        pa.RecordBatch.from_pylist([{"k": "ok"}, {"k": "bad"}, {"k": "ok"}]))
    assert result.batch.to_pylist() == [{"k": "ok", "v": 1}, {"k": "ok", "v": 1}]
    assert result.rejects == [(1, "table 'picky' cannot look up key 'bad': "
                                  "ValueError: key 'bad' is not allowed")]


def test_value_schema_fixes_the_added_columns_even_before_a_value_is_found():
    schema = pa.schema([("tier", pa.string()), ("limit", pa.int32())])
    join = StreamTableJoin(_Lookup({}), on="k", value_schema=schema)
    out = join.join_batch(pa.RecordBatch.from_pylist([{"k": "x"}])).batch
    assert out.schema == pa.schema([("k", pa.string()), ("tier", pa.string()),
                                    ("limit", pa.int32())])
    join = StreamTableJoin(_Lookup({"x": {"tier": "gold", "limit": "lots"}}), on="k",
                           value_schema=schema)
    result = join.join_batch(pa.RecordBatch.from_pylist([{"k": "x"}, {"k": "y"}]))
    assert result.batch.to_pylist() == [{"k": "y", "tier": None, "limit": None}]
    assert result.rejects[0][0] == 0 and "does not convert" in result.rejects[0][1]


def test_inferred_columns_stay_from_batch_to_batch():
    table = _Lookup({"a": {"x": 1}, "b": {"x": 2.5, "y": "new"}})
    join = StreamTableJoin(table, on="k")
    first = join.join_batch(pa.RecordBatch.from_pylist([{"k": "a"}])).batch
    second = join.join_batch(pa.RecordBatch.from_pylist([{"k": "b"}, {"k": "a"}])).batch
    third = join.join_batch(pa.RecordBatch.from_pylist([{"k": "zz"}])).batch
    assert first.to_pylist() == [{"k": "a", "x": 1}]
    assert second.to_pylist() == [{"k": "b", "x": 2.5, "y": "new"}, {"k": "a", "x": 1.0, "y": None}]
    assert third.schema.names == ["k", "x", "y"]


def test_a_column_on_both_sides_asks_for_a_prefix():
    join = StreamTableJoin(_Lookup({"a": {"k": 1}}), on="k")
    with pytest.raises(SchemaError, match="give prefix="):
        join.join_batch(pa.RecordBatch.from_pylist([{"k": "a"}]))
    out = StreamTableJoin(_Lookup({"a": {"k": 1}}), on="k", prefix="t_").join_batch(
        pa.RecordBatch.from_pylist([{"k": "a"}])).batch
    assert out.to_pylist() == [{"k": "a", "t_k": 1}]


def test_bad_arguments_are_refused_at_once():
    app = sabot.App(unique("join"))
    stream = app.channel().stream()
    with pytest.raises(ConfigurationError, match="joins a table"):
        stream.join({"a": 1}, on="k")
    with pytest.raises(ConfigurationError, match="how= must be one of left, inner"):
        stream.join(_Lookup({}), on="k", how="outer")
    with pytest.raises(ConfigurationError, match="on= must be"):
        stream.join(_Lookup({}), on=3)
    with pytest.raises(TypeError, match="before filter/map/take"):
        stream.map(str).join(_Lookup({}), on="k")

    class Withdrawal(Record):
        account: str

    # Faust's stream.join(*fields): never implemented by Faust; the error says what Sabot has.
    with pytest.raises(ConfigurationError, match="Faust never implemented.*join_within"):
        stream.join(Withdrawal.account)


class _Lookup:
    """The smallest LookupT: for the per-batch checks that need no app."""

    name = "lookup"

    def __init__(self, data):
        self.data = data

    def get_many(self, keys):
        return [self.data.get(k) for k in keys]


def test_record_values_become_columns():
    class Address(Record):
        city: str

    class Customer(Record):
        tier: str
        limit: int
        address: Address

    table = _Lookup({"c1": Customer(tier="gold", limit=5, address=Address(city="Oslo"))})
    result = StreamTableJoin(table, on="customer", how="inner").join_batch(
        [{"customer": "c1", "amount": 2.0}, {"customer": "c2", "amount": 3.0}])
    assert result.batch.to_pylist() == [
        {"customer": "c1", "amount": 2.0, "tier": "gold", "limit": 5,
         "address": {"city": "Oslo"}}]


async def test_the_source_batch_is_acknowledged_when_the_agent_moves_past_its_joined_batch():
    app = sabot.App(unique("join"))
    orders = app.channel()
    done = []
    stream = orders.stream()
    joined = stream.join(_Lookup({"a": {"v": 1}}), on="k").__aiter__()
    for label in ("first", "second"):
        await orders.publish(Batch(pa.RecordBatch.from_pylist([{"k": "a"}, {"k": "b"}]),
                                   on_done=lambda b, label=label: done.append(label)))
    first = await joined.__anext__()
    assert first.to_pylist() == [{"k": "a", "v": 1}, {"k": "b", "v": None}]
    assert stream.current_batch is not None and stream.current_batch.payload.num_rows == 2
    assert done == []  # held while the agent handles the joined batch
    await joined.__anext__()
    assert done == ["first"]


async def test_dict_values_take_the_channels_schema():
    schema = pa.schema([("k", pa.string()), ("n", pa.int32())])
    app = sabot.App(unique("join"))
    orders = app.channel(schema=schema)
    joined = orders.stream().join(_Lookup({"a": 1.5}), on="k", prefix="t_").__aiter__()
    await orders.publish(Batch([{"k": "a", "n": 3}, {"k": "b", "n": 4, "extra": 1}]))
    out = await joined.__anext__()
    assert out.schema == pa.schema([("k", pa.string()), ("n", pa.int32()),
                                    ("t_lookup", pa.float64())])
    assert out.to_pylist() == [{"k": "a", "n": 3, "t_lookup": 1.5},
                               {"k": "b", "n": 4, "t_lookup": None}]


async def test_a_set_table_joins_as_a_sorted_list_column():
    app = sabot.App(unique("join"))
    follows, orders = app.channel(), app.channel()
    table = app.SetGlobalTable(unique("follows"))
    joined = []

    @app.agent(follows)
    async def load(stream):
        async for event in stream.events():
            table[event.key].add(event.value)

    @app.agent(orders)
    async def enrich(stream):
        async for batch in stream.join(table, on="user", prefix="follows_"):
            joined.append(batch)

    async with running(app):
        for user, other in [("a", "z"), ("a", "b"), ("c", "a")]:
            await follows.send(key=user, value=other)
        await until(lambda: len(table) == 2 and len(table["a"]) == 2, what="the sets")
        await orders.send_batch(pa.RecordBatch.from_pylist([{"user": "a"}, {"user": "q"}]))
        await until(lambda: joined, what="a joined batch")
    assert [row[f"follows_{table.name}"] for row in joined[0].to_pylist()] == [["b", "z"], None]
