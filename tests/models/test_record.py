"""sabot.Record: fields, defaults, nesting, asdict/to_representation, options,
validation, dates and decimals, as Faust's Record behaves (read against
faust/models/record.py, base.py and fields.py)."""
import datetime
import decimal
from typing import Dict, List, Optional, Set

import pytest

import sabot
from sabot.models import MissingField, registry
from sabot.models.namespace import blessed
from sabot.models.json_layout import dumps

UTC = datetime.timezone.utc


class Point(sabot.Record, namespace="tests.models.Point"):
    x: int
    y: int = 0


class Line(sabot.Record, namespace="tests.models.Line"):
    start: Point
    end: Point
    points: List[Point] = []
    named: Dict[str, Point] = {}
    label: Optional[str] = None


class Order(sabot.Record, namespace="tests.models.Order"):
    id: str
    amount: decimal.Decimal
    placed: datetime.datetime
    note: str = ""


class StrictOrder(sabot.Record, validation=True, namespace="tests.models.StrictOrder"):
    id: str
    qty: int
    price: decimal.Decimal = sabot.DecimalField(max_digits=8, max_decimal_places=2)
    placed: Optional[datetime.datetime] = None


def test_fields_by_position_and_name_with_defaults():
    assert Point(1).x == 1 and Point(1).y == 0
    assert Point(1, 2) == Point(x=1, y=2)
    assert Point(1, 2) != Point(2, 1)
    with pytest.raises(TypeError):
        Point()  # x is required
    with pytest.raises(TypeError, match="unexpected"):
        Point(1, z=3)


def test_class_attributes_are_field_descriptors():
    assert isinstance(Point.x, sabot.IntegerField)
    assert isinstance(Order.amount, sabot.DecimalField)
    assert isinstance(Order.placed, sabot.DatetimeField)
    assert isinstance(Order.id, sabot.StringField)
    assert Point.x.required and not Point.y.required and Point.y.default == 0
    assert Point.x.getattr(Point(5)) == 5
    assert list(Point._options.fields) == ["x", "y"]
    assert Point._options.namespace == "tests.models.Point"
    assert registry["tests.models.Point"] is Point


def test_default_namespace_is_module_and_qualified_name():
    class Local(sabot.Record):
        a: int
    assert Local._options.namespace == f"{__name__}.test_default_namespace_is_module_and_" \
                                       f"qualified_name.<locals>.Local"


def test_asdict_keeps_nested_records_and_to_representation_adds_the_namespace():
    line = Line(Point(1, 2), Point(3, 4), points=[Point(5)])
    assert line.asdict() == {"start": Point(1, 2), "end": Point(3, 4), "points": [Point(5)],
                             "named": {}, "label": None}
    rep = line.to_representation()
    assert rep["__faust"] == {"ns": "tests.models.Line"}
    assert rep["start"] is line.start


def test_nested_records_are_built_from_data():
    data = {"start": {"x": 1}, "end": {"x": 3, "y": 4},
            "points": [{"x": 5}, {"x": 6, "y": 7}], "named": {"a": {"x": 8}}}
    line = Line.from_data(data)
    assert line.start == Point(1, 0) and line.end == Point(3, 4)
    assert line.points == [Point(5), Point(6, 7)]
    assert line.named == {"a": Point(8)}
    assert line.label is None


def test_round_trip_through_faust_json_layout():
    line = Line(Point(1, 2), Point(3, 4), points=[Point(5)], label="l")
    data = dumps(line)
    assert data.startswith(b'{"start":{"x":1,"y":2,"__faust":{"ns":"tests.models.Point"}}')
    assert data.endswith(b'"label":"l","__faust":{"ns":"tests.models.Line"}}')
    assert Line.loads(data) == line
    assert line.dumps(serializer="json") == data
    assert line.dumps() == line.to_representation()  # no serializer: the representation


def test_dates_and_decimals_stay_text_unless_the_model_asks_as_in_faust():
    data = {"id": "o1", "amount": "12.50", "placed": "2024-01-02T03:04:05Z"}
    plain = Order.from_data(data)
    assert plain.amount == "12.50" and plain.placed == "2024-01-02T03:04:05Z"

    class Parsed(sabot.Record, isodates=True, decimals=True):
        amount: decimal.Decimal
        placed: datetime.datetime
        when: List[datetime.datetime] = []
    parsed = Parsed.from_data({**data, "when": ["2024-01-01T00:00:00"]})
    assert parsed.amount == decimal.Decimal("12.50")
    assert parsed.placed == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.when == [datetime.datetime(2024, 1, 1)]
    written = dumps(Parsed(decimal.Decimal("1.5"), datetime.datetime(2024, 1, 2, tzinfo=UTC)))
    assert b'"amount":"1.5"' in written and b'"placed":"2024-01-02T00:00:00Z"' in written


def test_coerce_converts_on_creation_and_assignment():
    class C(sabot.Record, coerce=True):
        n: int
        f: float
        s: str
        t: datetime.datetime
        d: decimal.Decimal
    c = C.from_data({"n": "3", "f": "2.5", "s": 7, "t": "2024-01-01T00:00:00", "d": "1.1"})
    assert (c.n, c.f, c.s) == (3, 2.5, "7")
    assert c.t == datetime.datetime(2024, 1, 1) and c.d == decimal.Decimal("1.1")
    c.n = "9"
    assert c.n == 9
    assert C(n="1", f=1, s="x", t=datetime.datetime(2024, 1, 1), d=1).n == 1


def test_validation_true_checks_every_field():
    ok = StrictOrder.from_data({"id": "a", "qty": "2", "price": "9.99"})
    assert ok.qty == 2 and ok.price == decimal.Decimal("9.99") and ok.is_valid()
    with pytest.raises(sabot.ValidationError) as err:
        StrictOrder.from_data({"id": "", "qty": 1, "price": "1"})
    assert err.value.field == "id" and "blank" in err.value.reason
    with pytest.raises(sabot.ValidationError) as err:
        StrictOrder(id="a", qty=1, price=decimal.Decimal("1.234"))
    assert err.value.field == "price" and "decimal places" in err.value.reason
    with pytest.raises(sabot.ValidationError):
        StrictOrder(id="a", qty=1, price=decimal.Decimal("12345678.1"))  # 8 digits max
    with pytest.raises(ValueError):
        StrictOrder.from_data({"id": "a", "qty": "many", "price": "1"})
    with pytest.raises(ValueError):
        StrictOrder.from_data({"id": "a", "qty": 1, "price": "NaN"})


def test_field_options_are_checked():
    class Limits(sabot.Record, validation=True):
        n: int = sabot.IntegerField(min_value=1, max_value=10)
        s: str = sabot.StringField(max_length=3, trim_whitespace=True)
    assert Limits(n=5, s=" ab ").s == "ab"
    assert [e.field for e in Limits.from_data({"n": 5, "s": "ab"}).validate()] == []
    with pytest.raises(sabot.ValidationError, match="more than 10"):
        Limits(n=11, s="a")
    with pytest.raises(sabot.ValidationError, match="at least 1"):
        Limits(n=0, s="a")
    with pytest.raises(sabot.ValidationError, match="at most 3"):
        Limits(n=1, s="abcd")


def test_missing_required_field_is_named():
    with pytest.raises(MissingField) as err:
        Order.from_data({"id": "o", "placed": "x"})
    assert err.value.field == "amount" and isinstance(err.value, TypeError)
    with pytest.raises(TypeError, match="JSON object"):
        Order.from_data(["not", "a", "dict"])


def test_unknown_fields_are_kept_as_attributes_but_never_replace_methods():
    p = Point.from_data({"x": 1, "extra": 2, "asdict": 3, "_secret": 4, "__class__": 5})
    assert p.extra == 2
    assert p.asdict() == {"x": 1, "y": 0}
    assert "_secret" not in p.__dict__ and type(p) is Point


def test_input_and_output_names():
    class Renamed(sabot.Record):
        ts: float = sabot.FloatField(input_name="timestamp", output_name="time",
                                     required=True)
    r = Renamed.from_data({"timestamp": 1.5})
    assert r.ts == 1.5 and r.asdict() == {"time": 1.5}


def test_excluded_field_is_not_written():
    class Secretive(sabot.Record):
        a: int
        b: str = sabot.StringField(exclude=True, required=False, default="hidden")
    assert Secretive(1).asdict() == {"a": 1}


def test_subclass_adds_fields_and_has_its_own_namespace():
    class Point3(Point):
        z: int = 0
    assert list(Point3._options.fields) == ["x", "y", "z"]
    assert Point3(1, 2, 3).asdict() == {"x": 1, "y": 2, "z": 3}
    assert Point3._options.namespace != Point._options.namespace


def test_non_default_after_default_is_refused():
    with pytest.raises(TypeError, match="cannot follow"):
        class Bad(sabot.Record):
            a: int = 1
            b: int


def test_post_init_derive_hash_ordering_repr():
    class Sized(sabot.Record):
        w: int
        h: int

        def __post_init__(self):
            self.area = self.w * self.h
    s = Sized(2, 3)
    assert s.area == 6
    assert s.derive(h=4) == Sized(2, 4)
    assert hash(Sized(1, 2)) == hash(Sized(1, 2))
    assert sorted([Sized(2, 1), Sized(1, 5)]) == [Sized(1, 5), Sized(2, 1)]
    assert repr(Sized(1, 2)) == "<Sized: w=1, h=2>"
    assert {Sized(1, 1), Sized(1, 1)} == {Sized(1, 1)}


def test_abstract_record_and_polymorphic_fields():
    class Event(sabot.Record, abstract=True):
        pass

    class Click(Event, namespace="tests.models.Click"):
        at: int

    class Holder(sabot.Record):
        event: Event
        events: Set[str] = set()
    with pytest.raises(TypeError):
        Event()
    h = Holder.from_data({"event": {"at": 1, "__faust": {"ns": "tests.models.Click"}}})
    assert h.event == Click(1)
    with pytest.raises(KeyError, match="unknown __faust namespace"):
        Holder.from_data({"event": {"at": 1, "__faust": {"ns": "os.system"}}})


def test_namespace_picks_another_class_only_where_faust_lets_it():
    class Plain(sabot.Record, namespace="tests.models.Plain"):
        x: int

    class Blessed(sabot.Record, namespace="tests.models.Blessed", allow_blessed_key=True):
        x: int
    named_blessed = {"x": 1, "__faust": {"ns": "tests.models.Blessed"}}
    named_plain = {"x": 1, "__faust": {"ns": "tests.models.Plain"}}
    try:
        assert type(Plain.from_data(named_blessed)) is Blessed
        assert type(Blessed.from_data(named_plain)) is Blessed
        # An unknown name with a concrete type: the type asked for (a Faust
        # app of another module shares the topic).
        assert Plain.from_data({"x": 1, "__faust": {"ns": "elsewhere.Order"}}) == Plain(1)
    finally:
        # A class a namespace may pick turns whole-fetch parsing off in the
        # process: later tests should run with it on.
        registry.pop("tests.models.Blessed")
        blessed.discard("tests.models.Blessed")


def test_lazy_creation_resolves_forward_references():
    class Tree(sabot.Record, lazy_creation=True):
        value: int
        children: List["Tree"] = []
    Tree.make_final()
    t = Tree.from_data({"value": 1, "children": [{"value": 2}]})
    assert t.children == [Tree(2)]


def test_custom_coercions():
    class Money:
        def __init__(self, cents):
            self.cents = int(cents)

    class Priced(sabot.Record, coercions={Money: Money}):
        price: Money
    assert Priced.from_data({"price": "150"}).price.cents == 150


def test_faust_names_are_exported():
    for name in ("Record", "Model", "ModelOptions", "ValidationError", "FieldDescriptor",
                 "BooleanField", "IntegerField", "FloatField", "DecimalField", "StringField",
                 "BytesField", "DatetimeField", "CharField", "NumberField"):
        assert hasattr(sabot, name), name
    from sabot.models.fields import StringField
    assert StringField is sabot.StringField


def test_unknown_fields_are_kept_when_optional_fields_are_missing():
    p = Point.from_data({"x": 1, "extra": 2})  # y missing, one unknown: as many keys as fields
    assert p.extra == 2 and p.y == 0


def test_sabot_tail_prints_a_record_as_faust_writes_it():
    from sabot.cli import _printable
    assert _printable(Point(1, 2)) == '{"x":1,"y":2,"__faust":{"ns":"tests.models.Point"}}'


def test_sabot_send_checks_a_value_against_the_topics_record():
    import click

    from sabot.cli import parse_value
    app = sabot.App("send-check")
    topic = app.channel(name="points", value_type=Point)
    assert parse_value(topic, '{"x": 1}') == Point(1)
    with pytest.raises(click.ClickException, match="required field 'x' is missing"):
        parse_value(topic, '{"y": 1}')
