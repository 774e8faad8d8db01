"""Faust's records on Sabot: typed values, Faust's JSON, Arrow batches.

Run it: ``python examples/records.py worker -l info``.

``Order`` is a ``sabot.Record`` written as a Faust app writes it (the same
class body works under ``import faust``). The orders arrive as the JSON a
Faust producer sends, ``__faust`` namespace included; each becomes an
``Order`` (its lines ``Line`` records, its total a ``Decimal``, its time a
``datetime``), one that fails validation is refused with the field named.
One agent reads orders one at a time, another the same orders as Arrow
RecordBatches of ``Order.arrow_schema()`` and sums them with pyarrow.
On a Kafka or Redis topic, ``value_type=Order`` does the decoding (and sends
misfits to the dead-letter topic); in memory values travel as they are sent.
"""
import datetime
import decimal
import os
import time
from typing import List, Optional

import pyarrow.compute as pc

import sabot

app = sabot.App("records")
N_ORDERS = int(os.environ.get("SABOT_DEMO_ORDERS", "2000"))


class Line(sabot.Record, namespace="shop.Line"):
    sku: str
    qty: int


class Order(sabot.Record, namespace="shop.Order", validation=True, isodates=True,
            decimals=True):
    id: str
    total: decimal.Decimal = sabot.DecimalField(max_digits=12, max_decimal_places=2)
    placed: datetime.datetime = sabot.DatetimeField(required=True)
    lines: List[Line] = []
    note: Optional[str] = None


orders = app.channel(value_type=Order)
per_value = {"orders": 0, "items": 0}
per_batch = {"orders": 0, "total": decimal.Decimal(0)}


@app.agent(orders)
async def count_items(stream):
    """Attribute access on each record, nested ones too."""
    async for order in stream:
        per_value["orders"] += 1
        per_value["items"] += sum(line.qty for line in order.lines)


@app.agent(orders)
async def sum_totals(stream):
    """The same orders as Arrow RecordBatches: columnar sums."""
    async for batch in stream.batches():
        per_batch["orders"] += batch.num_rows
        per_batch["total"] += pc.sum(batch.column("total")).as_py() or 0


def faust_json(i):
    """What a Faust app with the same class writes for order ``i``."""
    lines = ",".join(f'{{"sku":"s{j}","qty":{j + 1},"__faust":{{"ns":"shop.Line"}}}}'
                     for j in range(i % 3))
    return (f'{{"id":"o{i}","total":"{i}.25","placed":"2024-05-06T07:08:{i % 60:02d}Z",'
            f'"lines":[{lines}],"note":null,"__faust":{{"ns":"shop.Order"}}}}').encode()


@app.task
async def feed():
    """Decode Faust's JSON into orders, send them, check both agents saw them all."""
    start = time.perf_counter()
    for i in range(N_ORDERS):
        await orders.send(value=Order.loads(faust_json(i), serializer="json"))
    try:
        Order.loads(b'{"id":"bad","total":"1.234","placed":"2024-01-01T00:00:00Z"}',
                    serializer="json")
    except sabot.ValidationError as exc:
        print(f"refused: field {exc.field!r}: {exc.reason}")
    await orders.close()
    await count_items.wait_done()
    await sum_totals.wait_done()
    elapsed = time.perf_counter() - start
    print(f"{per_value['orders']:,} orders ({per_value['items']:,} items) one at a time and "
          f"{per_batch['orders']:,} in RecordBatches (total {per_batch['total']}) "
          f"processed in {elapsed:.2f}s")
    app.request_stop()


if __name__ == "__main__":
    app.main()
