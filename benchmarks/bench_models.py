"""Record decoding: Sabot against Faust's own Record decoding, in one run.

The messages are written by Faust itself (faust-streaming's serializer
registry: its JSON layout with the ``__faust`` namespace), a fetch of them at
a time. Decoded into records of the same fields by:

(f) Faust: ``Registry.loads_value(Model, message)`` per message, what a
    Faust consumer does for a topic with ``value_type=Model``
(a) Sabot per message: ``TypedCodec.decode(message)``, the path for a fetch
    that the whole-fetch parser does not vouch for
(b) Sabot per fetch: ``TypedCodec.decode_many(messages)``, what a Kafka or
    Redis channel with ``value_type=Model`` runs on each fetch (Arrow's JSON
    reader parses the fetch, records are built from its columns)
(c) Sabot per fetch into a RecordBatch: (b) then ``Model.to_batch``, what
    ``stream.batches()`` of that channel hands the agent
(f2) Faust, then each record's nested fields read once: Faust builds nested
    records on first read, Sabot while decoding (a nested value that does
    not fit must be a dead letter, not an error inside the agent), so (f)
    leaves out work that (a) to (c) include; shown for the nested record

for a flat record (six numbers and strings) and a nested one (a decimal and
a datetime that the class asks to convert, a nested record, a list of
records, an optional field). Nothing is tuned: the defaults are what runs.
Best of ``--repeat`` interleaved runs; the ratios are against (f).

    python benchmarks/bench_models.py [--fetch 500,5000] [--repeat 15]
"""
import argparse
import datetime
import decimal
import gc
import time
from typing import List, Optional

import faust
from faust.serializers import Registry

import sabot
from sabot.models.codec import TypedCodec

UTC = datetime.timezone.utc
faust_registry = Registry(key_serializer="raw", value_serializer="json")


class FaustTrade(faust.Record, namespace="bench.Trade"):
    id: int
    sym: str
    qty: int
    px: float
    side: str
    ts: float


class Trade(sabot.Record, namespace="bench.Trade"):
    id: int
    sym: str
    qty: int
    px: float
    side: str
    ts: float


class FaustLine(faust.Record, namespace="bench.Line"):
    sku: str
    qty: int


class FaustOrder(faust.Record, namespace="bench.Order", isodates=True, decimals=True):
    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    ship_to: FaustLine
    lines: List[FaustLine]
    note: Optional[str] = None


class Line(sabot.Record, namespace="bench.Line"):
    sku: str
    qty: int


class Order(sabot.Record, namespace="bench.Order", isodates=True, decimals=True):
    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    ship_to: Line
    lines: List[Line]
    note: Optional[str] = None


def trades(n):
    return [faust_registry.dumps_value(FaustTrade, FaustTrade(
        i, f"SYM{i % 500:03d}", i % 100, 100 + i / 8, "buy" if i % 2 else "sell", 1.7e9 + i))
        for i in range(n)]


def orders(n):
    placed = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    return [faust_registry.dumps_value(FaustOrder, FaustOrder(
        f"o-{i}", decimal.Decimal(f"{i}.25"), placed + datetime.timedelta(seconds=i),
        FaustLine("ship", 1), [FaustLine(f"sku{j}", j) for j in range(i % 4)],
        note=None if i % 3 else "gift")) for i in range(n)]


def read_nested(order):
    """Read the nested fields once (Faust builds them then)."""
    return order.ship_to, order.lines


CASES = [("flat", FaustTrade, Trade, trades), ("nested", FaustOrder, Order, orders)]


def best_times(fns, repeat):
    """Best seconds per function over ``repeat`` interleaved runs (GC as usual)."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def check_same(faust_values, sabot_values):
    for f, s in zip(faust_values, sabot_values, strict=True):
        assert f.asdict().keys() == s.asdict().keys()
        for name in s.asdict():
            fv, sv = getattr(f, name), getattr(s, name)
            if isinstance(sv, list):
                assert [x.asdict() for x in fv] == [x.asdict() for x in sv]
            elif isinstance(sv, sabot.Record):
                assert fv.asdict() == sv.asdict()
            else:
                assert fv == sv, (name, fv, sv)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", default="500,5000", help="messages per fetch, comma-separated")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"Record decoding of messages Faust wrote, best of {args.repeat} interleaved runs "
          f"(faust-streaming {faust.__version__})")
    print(f"{'record':>7} {'fetch':>6}  {'(f) faust us/msg':>17} {'(a) per msg':>12} "
          f"{'(b) per fetch':>14} {'(c) RecordBatch':>16}  {'(a)/(f)':>8} {'(b)/(f)':>8} "
          f"{'(c)/(f)':>8}  {'(f2) faust+read':>16} {'(b)/(f2)':>9}")
    for label, faust_model, model, make in CASES:
        codec = TypedCodec("json", model)
        for n in (int(x) for x in args.fetch.split(",")):
            payloads = make(n)
            fetched, failures = codec.decode_many(payloads)
            assert not failures and len(fetched) == n
            check_same([faust_registry.loads_value(faust_model, p) for p in payloads], fetched)
            assert fetched == [codec.decode(p) for p in payloads]
            assert model.to_batch(fetched).num_rows == n
            fns = {
                "f": lambda: [faust_registry.loads_value(faust_model, p) for p in payloads],
                "a": lambda: [codec.decode(p) for p in payloads],
                "b": lambda: codec.decode_many(payloads),
                "c": lambda: model.to_batch(codec.decode_many(payloads)[0]),
            }
            if label == "nested":
                fns["f2"] = lambda: [read_nested(faust_registry.loads_value(faust_model, p))
                                     for p in payloads]
            t = best_times(fns, args.repeat)
            us = {k: v / n * 1e6 for k, v in t.items()}
            extra = (f"  {us['f2']:>16.2f} {t['f2'] / t['b']:>8.1f}x" if "f2" in t
                     else f"  {'-':>16} {'-':>9}")
            print(f"{label:>7} {n:>6,}  {us['f']:>17.2f} {us['a']:>12.2f} {us['b']:>14.2f} "
                  f"{us['c']:>16.2f}  {t['f'] / t['a']:>7.1f}x {t['f'] / t['b']:>7.1f}x "
                  f"{t['f'] / t['c']:>7.1f}x" + extra)


if __name__ == "__main__":
    main()
