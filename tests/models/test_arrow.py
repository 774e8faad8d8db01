"""A Record class as an Arrow schema, and records as one RecordBatch."""
import datetime
import decimal
from typing import Any, Dict, List, Optional, Set, Tuple

import pyarrow as pa
import pytest

import sabot
from sabot.exceptions import SchemaError
from sabot.models.arrow import split_batch

UTC = datetime.timezone.utc


class Leg(sabot.Record, namespace="arrow.Leg"):
    venue: str
    qty: int = 0


class Fill(sabot.Record, namespace="arrow.Fill"):
    id: int
    px: float
    ok: bool
    sym: str
    raw: bytes
    at: datetime.datetime
    day: datetime.date
    amount: decimal.Decimal
    limit: decimal.Decimal = sabot.DecimalField(max_digits=10, max_decimal_places=2,
                                                required=False, default=None)
    leg: Optional[Leg] = None
    legs: List[Leg] = []
    tags: Set[str] = set()
    pair: Tuple[int, ...] = ()
    attrs: Dict[str, int] = {}
    note: Optional[str] = None


def test_schema_maps_every_field():
    schema = Fill.arrow_schema()
    assert schema == pa.schema([
        ("id", pa.int64()), ("px", pa.float64()), ("ok", pa.bool_()), ("sym", pa.string()),
        ("raw", pa.binary()), ("at", pa.timestamp("us", tz="UTC")), ("day", pa.date32()),
        ("amount", pa.decimal128(38, 18)), ("limit", pa.decimal128(10, 2)),
        ("leg", pa.struct([("venue", pa.string()), ("qty", pa.int64())])),
        ("legs", pa.list_(pa.struct([("venue", pa.string()), ("qty", pa.int64())]))),
        ("tags", pa.list_(pa.string())), ("pair", pa.list_(pa.int64())),
        ("attrs", pa.map_(pa.string(), pa.int64())), ("note", pa.string())])
    assert Fill.arrow_schema() is schema  # cached


def test_records_become_one_batch_nested_and_null_included():
    at = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [
        Fill(1, 1.5, True, "A", b"r", at, datetime.date(2024, 1, 2), decimal.Decimal("1.25"),
             limit=decimal.Decimal("9.99"), leg=Leg("X", 1), legs=[Leg("Y", 2), Leg("Z")],
             tags={"t"}, pair=(1, 2), attrs={"k": 1}, note="n"),
        # Text where the class keeps text (no isodates/decimals), naive time = UTC.
        Fill.from_data({"id": 2, "px": 2.0, "ok": False, "sym": "B", "raw": b"",
                        "at": "2024-01-02T03:04:05", "day": datetime.date(2024, 1, 3),
                        "amount": "2.5", "legs": [{"venue": "W"}]}),
    ]
    batch = Fill.to_batch(rows)
    assert batch.schema == Fill.arrow_schema()
    got = batch.to_pylist()
    assert got[0]["leg"] == {"venue": "X", "qty": 1}
    assert got[0]["legs"] == [{"venue": "Y", "qty": 2}, {"venue": "Z", "qty": 0}]
    assert got[0]["attrs"] == [("k", 1)] and got[0]["tags"] == ["t"]
    assert got[0]["amount"] == decimal.Decimal("1.25") and got[0]["limit"] == decimal.Decimal("9.99")
    assert got[1]["leg"] is None and got[1]["legs"] == [{"venue": "W", "qty": 0}]
    assert got[1]["at"] == at and got[1]["amount"] == decimal.Decimal("2.5")
    assert got[1]["note"] is None and got[1]["limit"] is None


def test_a_row_that_fits_no_column_is_named():
    class Loose(sabot.Record):
        n: int
        legs: List[Leg] = []
    rows = [Loose(1), Loose("x"), Loose(3, [Leg("a", "b")]), Loose(4, [Leg("c")])]
    with pytest.raises(SchemaError) as err:
        Loose.to_batch(rows)
    assert err.value.field in ("n", "legs")
    batch, bad = split_batch(Loose, rows)
    assert batch.column("n").to_pylist() == [1, 4]
    assert [i for i, _ in bad] == [1, 2]
    assert "'n'" in bad[0][1] and "'legs'" in bad[1][1]


def test_required_fields_of_a_validating_class_are_not_nullable():
    class Strict(sabot.Record, validation=True):
        a: int
        b: Optional[int] = None
    schema = Strict.arrow_schema()
    assert not schema.field("a").nullable and schema.field("b").nullable


def test_a_type_without_arrow_counterpart_is_named():
    class Untyped(sabot.Record):
        blob: Any
    with pytest.raises(SchemaError, match="blob"):
        Untyped.arrow_schema()


def test_dicts_and_excluded_fields():
    class Some(sabot.Record):
        a: int
        hidden: str = sabot.StringField(exclude=True, required=False, default="h")
    batch = Some.to_batch([{"a": 1}, Some(2)])
    assert batch.schema.names == ["a"] and batch.column("a").to_pylist() == [1, 2]
    with pytest.raises(SchemaError, match="tombstone"):
        Some.to_batch([None])


def test_a_class_that_holds_itself_has_no_schema_but_decodes():
    from sabot.models.codec import TypedCodec

    class Node(sabot.Record, lazy_creation=True, namespace="arrow.Node"):
        value: int
        children: List["Node"] = []
    Node.make_final()
    with pytest.raises(SchemaError, match="holds itself"):
        Node.arrow_schema()
    codec = TypedCodec("json", Node)  # the fetch parser steps aside
    values, failures = codec.decode_many([b'{"value":1,"children":[{"value":2}]}'])
    assert values == [Node(1, [Node(2)])] and not failures
