"""Stream-table joins on a real Kafka broker (tansu, see tests/servers/kafka.py).

The table is filled by an agent from a topic (its changelog on the broker,
its store on disk), the orders come from another topic, and the joined
batches go to a third one through the agent's sink. What reaches the sink
topic equals the plain-Python reference over the same input.
"""
import pyarrow as pa
import pytest

from sabot.codecs import get_codec
from tests.channels.test_kafka import make_app, read_all
from tests.helpers import running, unique, until
from tests.joins.test_table_join import CUSTOMERS, ORDER_SCHEMA, order_rows, reference

pytestmark = pytest.mark.kafka

PARTITIONS = 2


def kafka_join_app(kafka_broker, tmp_path, kind, orders_codec):
    app = make_app(kafka_broker, datadir=str(tmp_path / "data"))
    # key_type=str: Kafka keys are bytes unless typed, and the table's keys
    # must be what the join looks up.
    customers = app.topic(unique("customers"), key_type=str, value_serializer="json",
                          partitions=PARTITIONS)
    orders = app.topic(unique("orders"), key_type=str, value_serializer=orders_codec,
                       partitions=PARTITIONS)
    enriched = app.topic(unique("enriched"), value_serializer="arrow", partitions=1)
    table = (app.GlobalTable if kind == "global" else app.Table)(
        unique("customers"), partitions=PARTITIONS)
    joined = []

    @app.agent(customers, name="load")
    async def load(stream):
        async for event in stream.events():
            table[event.key] = event.value

    # The GlobalTable is joined on a column of Arrow orders; the partitioned
    # Table on the message key of JSON orders keyed (so partitioned) like it.
    on = "customer" if kind == "global" else None

    @app.agent(orders, name="enrich", sink=[enriched])
    async def enrich(stream):
        async for batch in stream.join(table, on=on, how="left"):
            joined.append(batch)
            yield batch

    return app, customers, orders, enriched, table, joined


@pytest.mark.parametrize("kind,orders_codec", [("global", "arrow"), ("table", "json")])
async def test_join_on_kafka_equals_the_reference(kafka_broker, tmp_path, kind, orders_codec):
    app, customers, orders, enriched, table, joined = kafka_join_app(
        kafka_broker, tmp_path, kind, orders_codec)
    rows = [r for r in order_rows(400, seed=11) if r["customer"] is not None]
    async with running(app):
        for key, value in CUSTOMERS.items():
            await customers.send(key=key, value=value)
        await customers.flush()
        await until(lambda: len(table) == len(CUSTOMERS), timeout=60, what="the table filled")
        if orders_codec == "arrow":
            for i in range(0, len(rows), 100):
                await orders.send_batch(pa.RecordBatch.from_pylist(rows[i:i + 100],
                                                                   schema=ORDER_SCHEMA))
        else:
            for row in rows:
                await orders.send(key=row["customer"], value=row)
        await orders.flush()
        await until(lambda: sum(b.num_rows for b in joined) >= len(rows), timeout=60,
                    what=lambda: f"{sum(b.num_rows for b in joined)} of {len(rows)} rows joined")
    arrow = get_codec("arrow")
    expected = reference(rows, CUSTOMERS, "left")
    key = (lambda r: r["order"])
    got = sorted(pa.Table.from_batches(joined).to_pylist(), key=key)
    assert got == sorted(expected, key=key)
    # Every joined batch reached the sink topic, as Arrow.
    sent = []
    for record in await read_all(kafka_broker, enriched.name, len(joined), timeout=30):
        sent.extend(arrow.decode(record.value).to_pylist())
    assert sorted(sent, key=key) == got


async def test_interval_join_on_kafka_message_keys_and_timestamps(kafka_broker, tmp_path):
    """Orders and payments on two topics, paired by message key within 5 s of Kafka time."""
    app = make_app(kafka_broker, datadir=str(tmp_path / "data"))
    orders = app.topic(unique("orders"), key_type=str, value_serializer="json", partitions=1)
    payments = app.topic(unique("payments"), key_type=str, value_serializer="json",
                         partitions=1)
    payment_stream = payments.stream()  # subscribed before the app starts
    pairs = []

    @app.agent(orders, name="match")
    async def match(stream):
        async for batch in stream.join_within(payment_stream, within=5.0, grace=30.0,
                                              prefix="payment_"):
            pairs.extend(batch.to_pylist())

    base = 1_700_000_000_000
    sent_orders = [(f"o{i % 40}", i, base + i * 1000) for i in range(200)]
    sent_payments = [(f"o{i % 40}", i, base + i * 1000 + 3000 * (i % 3)) for i in range(200)]
    expected = sorted((o, p) for ko, o, to in sent_orders for kp, p, tp in sent_payments
                      if ko == kp and abs(to - tp) <= 5000)
    async with running(app):
        for (ko, o, to), (kp, p, tp) in zip(sent_orders, sent_payments):
            await orders.send(key=ko, value={"order": o}, timestamp_ms=to)
            await payments.send(key=kp, value={"payment": p}, timestamp_ms=tp)
        await orders.flush()
        await payments.flush()
        # The last rows stay buffered until a watermark passes them: the pairs
        # they make are found when they arrive, so all are there by then.
        await until(lambda: len(pairs) >= len(expected), timeout=60,
                    what=lambda: f"{len(pairs)} of {len(expected)} pairs")
        # As a worker does on SIGTERM: the join gives up its buffered batches
        # (left uncommitted), so the stop does not wait for them.
        app.request_stop()
    assert sorted((row["order"], row["payment_payment"]) for row in pairs) == expected
