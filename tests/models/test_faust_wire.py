"""Faust's JSON layout both ways, against faust-streaming itself (in .venv).

Faust encodes with its own Record and serializer registry, Sabot decodes
into its class; Sabot encodes, Faust decodes. The classes share a namespace
(the migration case where the model moved into a Sabot app under the same
name) or not (a concrete type reads whatever namespace the writer used, as
in Faust).
"""
import datetime
import decimal
from typing import Dict, List, Optional

import faust
import pytest
from faust.serializers import Registry

import sabot
from sabot.exceptions import DecodeError
from sabot.models.codec import TypedCodec

UTC = datetime.timezone.utc
faust_registry = Registry(key_serializer="raw", value_serializer="json")


class FItem(faust.Record, namespace="shop.Item"):
    sku: str
    qty: int


class FOrder(faust.Record, namespace="shop.Order", isodates=True, decimals=True):
    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    items: List[FItem]
    tags: Dict[str, int]
    note: Optional[str] = None
    paid: bool = False
    ratio: float = 0.5


class SItem(sabot.Record, namespace="shop.Item"):
    sku: str
    qty: int


class SOrder(sabot.Record, namespace="shop.Order", isodates=True, decimals=True):
    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    items: List[SItem]
    tags: Dict[str, int]
    note: Optional[str] = None
    paid: bool = False
    ratio: float = 0.5


class SOrderElsewhere(sabot.Record, isodates=True, decimals=True):
    """The same fields under Sabot's default namespace (another module's)."""

    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    items: List[SItem]
    tags: Dict[str, int]
    note: Optional[str] = None
    paid: bool = False
    ratio: float = 0.5


PLACED = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def faust_order():
    return FOrder(id="o-1", total=decimal.Decimal("1234.50"), placed=PLACED,
                  items=[FItem("a", 1), FItem("b", 2)], tags={"x": 1}, note="n\u00e9",
                  paid=True, ratio=0.25)


def sabot_order():
    return SOrder(id="o-1", total=decimal.Decimal("1234.50"), placed=PLACED,
                  items=[SItem("a", 1), SItem("b", 2)], tags={"x": 1}, note="n\u00e9",
                  paid=True, ratio=0.25)


def same(s, f):
    """A Sabot order and a Faust order hold the same values."""
    assert (s.id, s.total, s.placed, s.tags, s.note, s.paid, s.ratio) == \
           (f.id, f.total, f.placed, f.tags, f.note, f.paid, f.ratio)
    assert [(i.sku, i.qty) for i in s.items] == [(i.sku, i.qty) for i in f.items]


def test_sabot_writes_the_bytes_faust_writes():
    faust_bytes = faust_registry.dumps_value(FOrder, faust_order())
    sabot_bytes = TypedCodec("json", SOrder).encode(sabot_order())
    assert sabot_bytes == faust_bytes
    assert sabot_order().dumps(serializer="json") == faust_order().dumps(serializer="json")


def test_sabot_reads_what_faust_wrote():
    data = faust_registry.dumps_value(FOrder, faust_order())
    got = TypedCodec("json", SOrder).decode(data)
    assert type(got) is SOrder and all(type(i) is SItem for i in got.items)
    same(got, faust_order())
    assert got == sabot_order()


def test_faust_reads_what_sabot_wrote():
    data = TypedCodec("json", SOrder).encode(sabot_order())
    got = faust_registry.loads_value(FOrder, data)
    assert type(got) is FOrder and all(type(i) is FItem for i in got.items)
    same(sabot_order(), got)
    # And with no type at all: Faust picks the class by the __faust namespace.
    assert type(faust_registry.loads_value(None, data)) is FOrder


def test_another_namespace_still_reads_into_the_asked_type_both_ways():
    data = faust_registry.dumps_value(FOrder, faust_order())
    got = TypedCodec("json", SOrderElsewhere).decode(data)
    assert type(got) is SOrderElsewhere
    same(got, faust_order())
    back = faust_registry.loads_value(FOrder, TypedCodec("json", SOrderElsewhere).encode(got))
    same(got, back)


def test_without_isodates_both_keep_the_text():
    class FPlain(faust.Record, namespace="shop.Plain"):
        at: datetime.datetime
        amount: decimal.Decimal

    class SPlain(sabot.Record, namespace="shop.Plain"):
        at: datetime.datetime
        amount: decimal.Decimal
    data = faust_registry.dumps_value(FPlain, FPlain(PLACED, decimal.Decimal("2.5")))
    f = faust_registry.loads_value(FPlain, data)
    s = TypedCodec("json", SPlain).decode(data)
    assert (s.at, s.amount) == (f.at, f.amount) == ("2024-05-06T07:08:09.123456Z", "2.5")


def test_dates_naive_and_offset_and_plain_values_match_faust():
    class FWhen(faust.Record, namespace="shop.When"):
        a: datetime.datetime
        b: datetime.datetime
        c: datetime.date
        d: bytes

    class SWhen(sabot.Record, namespace="shop.When"):
        a: datetime.datetime
        b: datetime.datetime
        c: datetime.date
        d: str
    tz = datetime.timezone(datetime.timedelta(hours=2))
    f = FWhen(datetime.datetime(2024, 1, 1, 12), datetime.datetime(2024, 1, 1, tzinfo=tz),
              datetime.date(2024, 2, 3), b"x")
    s = SWhen(datetime.datetime(2024, 1, 1, 12), datetime.datetime(2024, 1, 1, tzinfo=tz),
              datetime.date(2024, 2, 3), "x")
    faust_bytes = faust_registry.dumps_value(FWhen, f)
    sabot_bytes = TypedCodec("json", SWhen).encode(s)
    # Faust writes bytes as their repr ("b'x'"); Sabot writes text. The rest is equal.
    assert sabot_bytes == faust_bytes.replace(b'"b\'x\'"', b'"x"')


def test_validation_refuses_what_faust_refuses():
    class FStrict(faust.Record, namespace="shop.Strict", validation=True):
        qty: int
        name: str

    class SStrict(sabot.Record, namespace="shop.Strict", validation=True):
        qty: int
        name: str
    for bad in (b'{"qty":"many","name":"a"}', b'{"qty":1,"name":""}', b'{"qty":1}'):
        with pytest.raises(Exception):
            faust_registry.loads_value(FStrict, bad)
        with pytest.raises(DecodeError):
            TypedCodec("json", SStrict).decode(bad)
    good = b'{"qty":"3","name":"a","__faust":{"ns":"shop.Strict"}}'
    assert TypedCodec("json", SStrict).decode(good).qty == \
        faust_registry.loads_value(FStrict, good).qty == 3


def test_scalar_types_as_faust_prepares_them():
    for typ, data, serializer in ((int, b"42", "raw"), (float, b"1.5", "raw"),
                                  (str, b"text", "raw"), (bytes, b"raw", "raw"),
                                  (decimal.Decimal, b"9.75", "raw"), (int, b"7", "json")):
        assert TypedCodec(serializer, typ).decode(data) == \
            faust_registry.loads_key(typ, data, serializer=serializer)
